"""The Triton selective-scan kernels (``gmamba_zoo.ops.triton_scan``) against a float64 oracle.

Without a GPU the kernels run in Triton's interpreter, which ``TRITON_INTERPRET=1`` turns on for kernels decorated
after it is set: Triton reads it when ``@triton.jit`` runs, i.e. when the kernel module is imported. Within one
pytest process another test may have imported that module (or set up Triton) already, so the interpreter checks run
in a child process: this file run as a script, with the variable set before anything imports Triton. The child
runs every case once and prints its errors as JSON; each case is then one test here. On a machine with CUDA the same
cases also run in this process on the GPU.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __name__ == '__main__':  # the child process: before torch (which may import triton) and the kernels
    os.environ['TRITON_INTERPRET'] = '1'

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
GRADS = tuple('d' + name for name in ARGS)

# name: shapes, chunking (block_l/block_d None = the kernels' choice), optional inputs (D, z, delta_bias), softplus,
# decay ('slow'; 'fast' pushes dt*A past the -80 floor; 'signed' lets dt be negative), input dtype, layout.
CASES = {
    'chunks_tiles_dblocks': dict(b=2, d=5, n=3, L=13, chunk=8, block_l=4, block_d=2, opt='Dzb', softplus=True),
    'plain_signed_dt': dict(b=1, d=3, n=4, L=10, chunk=4, block_l=2, opt='', softplus=False, decay='signed'),
    'L1_gate_only': dict(b=2, d=5, n=2, L=1, chunk=8, opt='z', softplus=True),
    'N1_skip_bias': dict(b=1, d=5, n=1, L=9, chunk=4, block_l=2, opt='Db', softplus=False),
    'fast_decay_floor': dict(b=2, d=4, n=5, L=16, chunk=8, block_l=4, opt='Dzb', softplus=False, decay='fast'),
    'odd_chunk_default_blocks': dict(b=1, d=7, n=6, L=13, chunk=6, opt='b', softplus=True),
    'strided_inputs': dict(b=2, d=5, n=3, L=11, chunk=4, block_l=4, opt='Dzb', softplus=True, layout='strided'),
    'float16': dict(b=1, d=5, n=3, L=11, chunk=8, block_l=4, opt='Dzb', softplus=True, dtype='float16'),
    'bfloat16': dict(b=1, d=5, n=3, L=11, chunk=8, block_l=4, opt='Dzb', softplus=True, dtype='bfloat16'),
}

TOL = 1e-5
# The output is rounded to the input dtype (half an ulp: 2^-11 for float16, 2^-8 for bfloat16); the gradients are
# float32 computed from the same (rounded) inputs as the oracle's, so they keep the float32 tolerance.
OUT_TOL = {'float32': TOL, 'float16': 1e-3, 'bfloat16': 8e-3}


def make_case(cfg: dict, device: str = 'cpu'):
    """Inputs (rounded to the case's dtype, laid out as the case says) and the output gradient of one case."""
    b, d, n, L = cfg['b'], cfg['d'], cfg['n'], cfg['L']
    decay, dtype = cfg.get('decay', 'slow'), getattr(torch, cfg.get('dtype', 'float32'))
    g = torch.Generator().manual_seed(b * 1000 + d * 100 + n * 10 + L)
    r = lambda *s: torch.randn(*s, generator=g)
    uni = lambda *s: torch.rand(*s, generator=g)
    if decay == 'fast':  # dt up to 10, |A| up to 21: dt*A reaches -210
        delta, A = uni(b, d, L) * 10.0, -(uni(d, n) * 20.0 + 1.0)
    elif decay == 'signed':
        delta, A = r(b, d, L) * 0.3, -(uni(d, n) + 0.1)
    else:
        delta = r(b, d, L) * 0.5 - 1.0 if cfg['softplus'] else uni(b, d, L) * 0.5
        A = -(uni(d, n) + 0.1)
    ins = dict(u=r(b, d, L), delta=delta, A=A, B=r(b, n, L), C=r(b, n, L), D=r(d), z=r(b, d, L),
               delta_bias=r(d) * 0.2)
    for key, name in (('D', 'D'), ('z', 'z'), ('b', 'delta_bias')):
        if key not in cfg['opt']:
            ins[name] = None
    dout = r(b, d, L)
    if cfg.get('layout') == 'strided':  # transposed storage, every-other-element views
        def strided(t):
            if t.dim() == 3:
                return t.transpose(1, 2).contiguous().transpose(1, 2)
            if t.dim() == 2:
                return t.t().contiguous().t()
            return torch.stack([t, t], 1)[:, 0]
        ins = {k: None if v is None else strided(v) for k, v in ins.items()}
        ins['delta'] = torch.stack([ins['delta'], ins['delta']], -1)[..., 0]
        dout = strided(dout)
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return {k: cast(v) for k, v in ins.items()}, cast(dout)


def oracle(ins: dict, dout, softplus: bool, chunk: int):
    """Output, checkpoints and gradients from a float64 step loop and autograd (the -80 log-decay floor included)."""
    x = {k: None if v is None else v.detach().double().requires_grad_() for k, v in ins.items()}
    u, delta, A, B, C, D, z, bias = (x[k] for k in ARGS)
    dt = delta + bias[:, None] if bias is not None else delta
    if softplus:
        dt = dt.clamp_min(0) + torch.log1p(torch.exp(-dt.abs()))
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys, states = [], [h]
    for t in range(u.shape[2]):
        decay = torch.exp((dt[:, :, t, None] * A).clamp_min(-80.0))
        h = decay * h + (dt[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
        states.append(h)
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    ckpt = torch.stack(states[::chunk] + ([states[-1]] if (len(states) - 1) % chunk else []))
    leaves = [x[k] for k in ARGS if x[k] is not None]
    grads = iter(torch.autograd.grad(y, leaves, dout.double()))
    return y.detach(), ckpt.detach(), [None if x[k] is None else next(grads) for k in ARGS]


def rel(got, want) -> float:
    """Max abs error over max abs reference."""
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def run_case(cfg: dict, device: str = 'cpu') -> dict:
    """Errors of one case: {'out', 'ckpt', 'du', ...: max abs err / max abs ref} (None for an absent gradient)."""
    from gmamba_zoo.ops import triton_scan as ts

    ins, dout = make_case(cfg, device)
    blocks = dict(block_l=cfg.get('block_l'), block_d=cfg.get('block_d'))
    args = [ins[k] for k in ARGS]
    out, ckpt = ts.scan_fwd(*args, cfg['softplus'], cfg['chunk'], **blocks)
    grads = ts.scan_bwd(dout, *args, ckpt, cfg['softplus'], cfg['chunk'], **blocks)
    y, ckpt_ref, grads_ref = oracle(ins, dout, cfg['softplus'], cfg['chunk'])
    assert out.dtype == ins['u'].dtype and ckpt.dtype == torch.float32 and ckpt.shape == ckpt_ref.shape
    errs = {'out': rel(out, y), 'ckpt': rel(ckpt, ckpt_ref)}
    for name, got, want, inp in zip(GRADS, grads, grads_ref, args):
        assert (got is None) == (inp is None), name
        if got is not None:
            assert got.dtype == torch.float32 and got.shape == inp.shape, name
        errs[name] = None if got is None else rel(got, want)
    return errs


def check(errs: dict, cfg: dict) -> None:
    out_tol = OUT_TOL[cfg.get('dtype', 'float32')]
    bad = {k: e for k, e in errs.items() if e is not None and e > (out_tol if k == 'out' else TOL)}
    assert not bad, f'relative errors above tolerance: {bad} (all: {errs})'


@pytest.fixture(scope='module')
def interpreter_results():
    """Every case's errors, computed once in a child process with the Triton interpreter on."""
    pytest.importorskip('triton')
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f'interpreter run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('case', list(CASES))
def test_interpreter_matches_float64_oracle(case, interpreter_results):
    res = interpreter_results[case]
    assert 'error' not in res, res.get('error')
    check(res['errs'], CASES[case])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('case', list(CASES))
def test_cuda_matches_float64_oracle(case):
    pytest.importorskip('triton')
    check(run_case(CASES[case], 'cuda'), CASES[case])


def test_cpu_tensors_need_the_interpreter():
    pytest.importorskip('triton')
    from gmamba_zoo.ops import triton_scan as ts
    if ts.interpreted():
        pytest.skip('the kernels were imported with TRITON_INTERPRET=1')
    ins, _ = make_case(CASES['L1_gate_only'])
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
        ts.scan_fwd(*(ins[k] for k in ARGS), True)


def test_bad_blocks_and_ckpt_are_rejected():
    pytest.importorskip('triton')
    from gmamba_zoo.ops import triton_scan as ts
    with pytest.raises(ValueError, match='block_l'):
        ts._blocks(5, 3, 8, 4096, 3, None)
    with pytest.raises(ValueError, match='block_l'):
        ts._blocks(5, 3, 8, 4096, 16, None)
    assert ts._blocks(5, 3, 6, 4096, None, None) == (8, 4, 2)  # the largest power of two dividing the chunk
    assert ts._blocks(384, 16, 64, 4096, None, None) == (8, 16, 32)


def _main() -> None:
    """Child-process entry: run every case in the interpreter, print {case: {'errs': ...} or {'error': ...}}."""
    torch.set_num_threads(1)
    from gmamba_zoo.ops import triton_scan as ts
    assert ts.interpreted(), 'TRITON_INTERPRET=1 did not reach the kernels'
    results = {}
    for name, cfg in CASES.items():
        t0 = time.perf_counter()
        try:
            results[name] = {'errs': run_case(cfg)}
        except Exception as e:  # report per case, keep going
            results[name] = {'error': f'{type(e).__name__}: {e}'}
        results[name]['seconds'] = round(time.perf_counter() - t0, 2)
        print(name, results[name], file=sys.stderr)
    print(json.dumps(results))


if __name__ == '__main__':
    _main()

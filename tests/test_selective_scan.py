"""The selective scan against a sequential-loop oracle, its backends, its custom op and its errors."""
import os
import warnings

import pytest
import torch

from gmamba_zoo.ops import selective_scan as ss
from gmamba_zoo.ops import (
    get_scan_backend, resolve_scan_backend, scan_backend, selective_scan_fn, selective_scan_ref, set_scan_backend,
)

ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make_inputs(b=2, d=6, n=4, L=37, decay='slow', optional=True, dtype=torch.float32):
    """Scan inputs; ``decay='fast'`` puts delta*|A| up to ~50, ``'slow'`` keeps it near 1e-3."""
    g = torch.Generator().manual_seed(L * 31 + d)
    r = lambda *s: torch.randn(*s, generator=g)
    if decay == 'fast':
        delta = torch.rand(b, d, L, generator=g) * 5.0  # with softplus off: dt in [0, 5]
        A = -torch.rand(d, n, generator=g) * 10.0  # |A| up to 10 -> dt*|A| up to 50
    else:
        delta = torch.rand(b, d, L, generator=g) * 1e-2
        A = -torch.rand(d, n, generator=g) * 0.1 - 1e-3
    ins = dict(u=r(b, d, L), delta=delta, A=A, B=r(b, n, L), C=r(b, n, L))
    if optional:
        ins.update(D=r(d), z=r(b, d, L), delta_bias=torch.rand(d, generator=g) * 0.1)  # >= 0: dt stays >= 0
    return {k: v.to(dtype).requires_grad_() for k, v in ins.items()}


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check_against_oracle(ins, softplus, chunk_size, tol=1e-4, backend=None):
    out = selective_scan_fn(**ins, delta_softplus=softplus, chunk_size=chunk_size, backend=backend)
    ref = selective_scan_ref(**ins, delta_softplus=softplus)
    assert rel_err(out, ref) < tol
    dy = torch.randn_like(ref)
    names = list(ins)
    got = torch.autograd.grad(out, [ins[k] for k in names], dy)
    want = torch.autograd.grad(ref, [ins[k] for k in names], dy)
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert rel_err(a, b) < tol, f'gradient of {name}: rel err {rel_err(a, b):.2e}'


@pytest.fixture(autouse=True)
def _torch_backend(request):
    """The module's plain test functions check the PyTorch backend (the kernels have their own files and the class
    below); the backend-selection classes see the default."""
    if request.cls is not None:
        yield
        return
    with scan_backend('torch'):
        yield


@pytest.fixture(params=['numba', 'python'])
def recurrence(request, monkeypatch):
    """Runs a test with each CPU loop of the PyTorch scan: numba's compiled one and the Python step loop."""
    if request.param == 'numba':
        pytest.importorskip('numba')
    monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, request.param)
    assert ss.cpu_recurrence() == request.param
    return request.param


@pytest.mark.parametrize('L,chunk', [(37, 8), (64, 16), (1, 64), (130, 64)])
@pytest.mark.parametrize('decay', ['slow', 'fast'])
def test_matches_loop_oracle(L, chunk, decay, recurrence):
    check_against_oracle(make_inputs(L=L, decay=decay), softplus=(decay == 'slow'), chunk_size=chunk)


def test_cpu_recurrences_agree(monkeypatch):
    pytest.importorskip('numba')
    ins = make_inputs(b=3, d=40, n=8, L=301)
    got = {}
    for name in ('numba', 'python'):
        monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, name)
        out = selective_scan_fn(**ins, delta_softplus=True, chunk_size=64)
        got[name] = (out, *torch.autograd.grad(out, list(ins.values()), torch.ones_like(out)))
    for name, a, b in zip(('out',) + ARGS, got['numba'], got['python']):
        assert rel_err(a, b) < 1e-6, name


def test_large_steps_use_pytorch_ops(monkeypatch):
    pytest.importorskip('numba')
    monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, 'numba')
    assert ss._loops_for(torch.device('cpu'), ss._COMPILED_MAX_STEP) is not None
    assert ss._loops_for(torch.device('cpu'), ss._COMPILED_MAX_STEP + 1) is None
    assert ss._loops_for(torch.device('meta'), 1) is None
    monkeypatch.setattr(ss, '_COMPILED_MAX_STEP', 8)  # these inputs' steps (2 * 4 * 6) now count as large
    check_against_oracle(make_inputs(L=40), softplus=True, chunk_size=16)


def test_cpu_recurrence_choice(monkeypatch):
    monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, 'fortran')
    with pytest.raises(ValueError, match='GMAMBA_ZOO_CPU_RECURRENCE must be one of'):
        ss.cpu_recurrence()
    monkeypatch.setattr(ss, '_numba_loops', ss._OptionalModule('no_such_module_numba'))
    monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, 'auto')
    assert ss.cpu_recurrence() == 'python'
    check_against_oracle(make_inputs(L=20), softplus=True, chunk_size=8)  # falls back to the Python loop
    monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, 'numba')
    with pytest.raises(RuntimeError, match=r"numba is not importable .*gmamba-zoo\[cpu\]"):
        ss.cpu_recurrence()


def test_fast_decay_reaches_fifty():
    ins = make_inputs(decay='fast', L=50)
    dt = ins['delta'] + ins['delta_bias'][:, None]
    assert (dt[..., None] * -ins['A'][None, :, None, :]).max() > 40
    check_against_oracle(ins, softplus=False, chunk_size=16)


def test_without_optional_inputs():
    check_against_oracle(make_inputs(L=45, optional=False), softplus=True, chunk_size=16)


def test_strided_inputs():
    """Views (as the mixer passes them: transposes of [B, L, D] tensors) give the same result."""
    ins = make_inputs(L=29)
    ins = {k: (v.detach().transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() == 3 else v.detach())
           .requires_grad_() for k, v in ins.items()}
    assert not ins['u'].is_contiguous()
    check_against_oracle(ins, softplus=True, chunk_size=8)


def test_chunk_size_does_not_change_results():
    ins = {k: v.detach() for k, v in make_inputs(L=100).items()}
    outs = [selective_scan_fn(**ins, delta_softplus=True, chunk_size=c) for c in (1, 7, 64, 1000)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-6)


def test_last_state():
    ins = {k: v.detach() for k, v in make_inputs(L=21).items()}
    out, last = selective_scan_fn(**ins, delta_softplus=True, return_last_state=True, chunk_size=8)
    ref, ref_last = selective_scan_ref(**ins, delta_softplus=True, return_last_state=True)
    assert last.shape == (2, 6, 4)
    assert rel_err(last, ref_last) < 1e-5 and rel_err(out, ref) < 1e-5


@pytest.mark.parametrize('dtype,tol', [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_half_precision_inputs(dtype, tol):
    ins = make_inputs(L=40, dtype=dtype)
    out = selective_scan_fn(**ins, delta_softplus=True)
    assert out.dtype == dtype
    ref = selective_scan_ref(**{k: v.detach().float() for k, v in ins.items()}, delta_softplus=True)
    assert rel_err(out.float(), ref) < tol
    grads = torch.autograd.grad(out.float().sum(), list(ins.values()))
    assert all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)


def test_numerically_stable_for_extreme_decay():
    ins = make_inputs(L=33, decay='fast')
    with torch.no_grad():
        ins['A'].mul_(100)  # dt*|A| up to 5000: decays underflow to zero
    out = selective_scan_fn(**ins)
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), list(ins.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    # with the state forgotten at every step, y_t = (dt_t u_t <B_t, C_t> + D u_t) * silu(z_t)
    i = {k: v.detach() for k, v in ins.items()}
    dt = i['delta'] + i['delta_bias'][:, None]
    expect = dt * i['u'] * (i['B'] * i['C']).sum(1, keepdim=True) + i['D'][:, None] * i['u']
    expect = expect * torch.nn.functional.silu(i['z'])
    mask = (dt[..., None] * -i['A'][None, :, None, :]).amin(-1) > 100  # every decay below exp(-100)
    assert mask.float().mean() > 0.5
    torch.testing.assert_close(out.detach()[mask], expect[mask], rtol=1e-4, atol=1e-5)


class TestBackends:
    def teardown_method(self):
        set_scan_backend(None)

    def test_default_on_cpu_is_numba_when_it_imports(self, monkeypatch):
        monkeypatch.delenv(ss.ENV_BACKEND, raising=False)
        assert get_scan_backend() == 'auto'
        assert resolve_scan_backend('cpu') == ('numba' if ss._numba_kernel.get() is not None else 'torch')

    def test_auto_passes_over_a_missing_package_once_with_a_reason(self, monkeypatch):
        monkeypatch.setattr(ss, '_KERNELS', dict(ss._KERNELS, numba=(ss._OptionalModule('numba_missing_xyz'), 'numba')))
        monkeypatch.setattr(ss, '_warned', set())
        with pytest.warns(RuntimeWarning, match="'numba' needs numba.*numba_missing_xyz"):
            assert resolve_scan_backend('cpu') == 'torch'
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert resolve_scan_backend('cpu') == 'torch'
        with pytest.raises(RuntimeError, match="'numba' needs numba"):
            resolve_scan_backend('cpu', 'numba')

    def test_auto_on_cuda_prefers_mamba_ssm_then_triton(self, monkeypatch):
        monkeypatch.setattr(ss, '_warned', set())
        kernels = dict(ss._KERNELS, cuda=(ss._OptionalModule('selective_scan_cuda_missing'), 'mamba-ssm'))
        monkeypatch.setattr(ss, '_KERNELS', kernels)
        if ss._triton_kernel.get() is not None:
            with pytest.warns(RuntimeWarning, match="'cuda' needs mamba-ssm"):
                assert resolve_scan_backend('cuda') == 'triton'
        kernels['triton'] = (ss._OptionalModule('triton_missing_xyz'), 'triton')
        with pytest.warns(RuntimeWarning, match="'triton' needs triton"):
            assert resolve_scan_backend('cuda') == 'torch'

    @pytest.mark.parametrize('name,device,match', [
        ('numba', 'cuda', 'needs CPU tensors'), ('cuda', 'cpu', 'needs CUDA tensors'),
        ('triton', 'mps', 'needs CUDA tensors')])
    def test_named_backend_on_the_wrong_device_says_why(self, name, device, match):
        with pytest.raises(RuntimeError, match=match):
            resolve_scan_backend(device, name)

    def test_triton_on_cpu_needs_the_interpreter(self, monkeypatch):
        monkeypatch.delenv('TRITON_INTERPRET', raising=False)
        with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
            resolve_scan_backend('cpu', 'triton')

    def test_precedence(self, monkeypatch):
        monkeypatch.setenv(ss.ENV_BACKEND, 'torch')
        assert get_scan_backend() == 'torch'
        set_scan_backend('auto')
        assert get_scan_backend() == 'auto'
        with scan_backend('cuda'):
            assert get_scan_backend() == 'cuda'
            with scan_backend('torch'):
                assert get_scan_backend() == 'torch'
            assert get_scan_backend() == 'cuda'
        assert get_scan_backend() == 'auto'

    def test_bad_names(self, monkeypatch):
        with pytest.raises(ValueError, match='auto'):
            set_scan_backend('gpu')
        monkeypatch.setenv(ss.ENV_BACKEND, 'gpu')
        with pytest.raises(ValueError, match="'gpu'"):
            get_scan_backend()

    def test_explicit_cuda_on_cpu_tensors_raises(self):
        ins = {k: v.detach() for k, v in make_inputs(L=4).items()}
        with pytest.raises(RuntimeError, match='CUDA tensors'):
            selective_scan_fn(**ins, backend='cuda')

class TestCustomOp:
    def test_opcheck(self):
        ins = make_inputs(b=1, d=3, n=2, L=11)
        args = tuple(ins[k] for k in ARGS) + (True, 4, 'torch')
        torch.library.opcheck(torch.ops.gmamba_zoo.selective_scan.default, args)

    @pytest.mark.filterwarnings('ignore:.*torch.jit.trace. is deprecated')
    def test_one_node_in_jit_trace(self):
        ins = {k: v.detach() for k, v in make_inputs(L=9).items()}
        f = lambda u, dt, z: selective_scan_fn(u, dt, ins['A'], ins['B'], ins['C'], ins['D'], z, ins['delta_bias'], True)
        graph = torch.jit.trace(f, (ins['u'], ins['delta'], ins['z'])).graph
        kinds = [n.kind() for n in graph.nodes()]
        assert kinds.count('gmamba_zoo::selective_scan') == 1
        assert not any(k.startswith('prim::PythonOp') for k in kinds)

    def test_torch_export_sees_one_op(self):
        ins = {k: v.detach() for k, v in make_inputs(L=12).items()}

        class Scan(torch.nn.Module):
            def forward(self, u, delta):
                return selective_scan_fn(u, delta, ins['A'], ins['B'], ins['C'], ins['D'], None, ins['delta_bias'], True)

        ep = torch.export.export(Scan(), (ins['u'], ins['delta']))
        targets = [str(n.target) for n in ep.graph.nodes if n.op == 'call_function']
        assert sum('gmamba_zoo.selective_scan' in t for t in targets) == 1
        torch.testing.assert_close(ep.module()(ins['u'], ins['delta']), Scan()(ins['u'], ins['delta']))

    def test_torch_compile_fullgraph(self):
        ins = make_inputs(L=20)
        f = torch.compile(lambda **kw: selective_scan_fn(**kw, delta_softplus=True, chunk_size=8),
                          backend='aot_eager', fullgraph=True)
        out = f(**ins)
        ref = selective_scan_ref(**ins, delta_softplus=True)
        assert rel_err(out, ref) < 1e-4
        g1 = torch.autograd.grad(out.sum(), ins['delta'])[0]
        g2 = torch.autograd.grad(ref.sum(), ins['delta'])[0]
        assert rel_err(g1, g2) < 1e-4


class TestErrors:
    def base(self):
        return {k: v.detach() for k, v in make_inputs(L=8).items()}

    @pytest.mark.parametrize('name,shape,match', [
        ('u', (2, 6), r'\[batch, dim, length\]'),
        ('delta', (2, 6, 7), 'delta must have the shape of u'),
        ('A', (5, 4), r'A must be \[dim=6'),
        ('B', (2, 4, 7), r'B must be input-dependent, \[batch=2, d_state=4, length=8\]'),
        ('C', (2, 3, 4, 8), 'several groups are not supported'),
        ('D', (5,), r'D must be \[dim=6\]'),
        ('z', (2, 6, 9), 'z must have the shape of u'),
    ])
    def test_shapes(self, name, shape, match):
        ins = self.base()
        ins[name] = torch.randn(*shape)
        with pytest.raises(ValueError, match=match):
            selective_scan_fn(**ins)

    def test_integer_dtype(self):
        ins = self.base()
        ins['u'] = ins['u'].long()
        with pytest.raises(TypeError, match='u must be a floating-point tensor'):
            selective_scan_fn(**ins)

    def test_bad_chunk(self):
        with pytest.raises(ValueError, match='chunk_size'):
            selective_scan_fn(**self.base(), chunk_size=0)


_FIRST_CALL_THREADS = r'''
import sys, threading, torch
from gmamba_zoo.ops import selective_scan_fn, selective_scan_ref
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
ins = [dict(u=torch.randn(2, 64, 300, generator=g), delta=torch.rand(2, 64, 300, generator=g),
            A=-torch.rand(64, 16, generator=g), B=torch.randn(2, 16, 300, generator=g),
            C=torch.randn(2, 16, 300, generator=g), D=torch.randn(64, generator=g)) for _ in range(6)]
out, barrier = [None] * 6, threading.Barrier(6)
def first_scan(i):
    barrier.wait()
    try:
        out[i] = selective_scan_fn(**ins[i], delta_softplus=True)
    except Exception as e:
        out[i] = e
threads = [threading.Thread(target=first_scan, args=(i,)) for i in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
for i, y in enumerate(out):
    if isinstance(y, Exception):
        sys.exit(f'thread {i}: {y!r}')
    ref = selective_scan_ref(**ins[i], delta_softplus=True)
    err = float((y - ref).abs().max() / ref.abs().max())
    if err > 1e-5:
        sys.exit(f'thread {i}: relative error {err:.3g}')
print('ok')
'''


@pytest.mark.slow
@pytest.mark.parametrize('choice', ['numba', 'auto'])
def test_first_scans_from_several_threads_at_once(choice):
    """Threads making their first scan together in a fresh process (the lazy numba import races) all get the oracle's
    values, and none an error."""
    import subprocess
    import sys
    if choice == 'numba':
        pytest.importorskip('numba')
    env = dict(os.environ, **{ss.ENV_CPU_RECURRENCE: choice})
    res = subprocess.run([sys.executable, '-c', _FIRST_CALL_THREADS], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == 'ok', res.stderr[-2000:]


class TestKernelBackendsThroughTheOp:
    """The fused kernels behind ``selective_scan_fn`` and the custom op against the float64 oracle (values and the
    gradients of all 8 inputs within 1e-5), last state, the fake implementation's shapes (opcheck). The kernels' own exhaustive oracle tests are in test_numba_scan.py and
    test_triton_scan.py."""

    @pytest.fixture(autouse=True)
    def _numba(self):
        pytest.importorskip('numba')

    @pytest.mark.parametrize('L,chunk', [(37, 8), (1, None)])
    def test_numba_matches_the_oracle(self, L, chunk):
        check_against_oracle(make_inputs(L=L, d=5, n=3, dtype=torch.float64), True, chunk, backend='numba', tol=1e-5)

    def test_numba_last_state_and_opcheck(self):
        ins = make_inputs(b=1, d=3, n=2, L=11)
        out, last = selective_scan_fn(**ins, delta_softplus=True, return_last_state=True, backend='numba')
        ref, ref_last = selective_scan_ref(**ins, delta_softplus=True, return_last_state=True)
        assert last.shape == ref_last.shape and rel_err(last, ref_last) < 1e-5 and rel_err(out, ref) < 1e-5
        args = tuple(ins[k] for k in ARGS) + (True, 4, 'numba')
        torch.library.opcheck(torch.ops.gmamba_zoo.selective_scan.default, args)

    def test_triton_through_the_op_under_the_interpreter(self):
        pytest.importorskip('triton')
        import subprocess
        import sys
        code = (
            'import torch, sys\n'
            'sys.path.insert(0, sys.argv[1])\n'
            'from test_selective_scan import make_inputs, check_against_oracle, ARGS, rel_err\n'
            'from gmamba_zoo.ops import selective_scan_fn, selective_scan_ref\n'
            'check_against_oracle(make_inputs(L=19, d=5, n=3, dtype=torch.float64), True, 8, backend="triton", tol=1e-5)\n'
            'ins = make_inputs(b=1, d=3, n=2, L=11)\n'
            'out, last = selective_scan_fn(**ins, delta_softplus=True, return_last_state=True, backend="triton")\n'
            'ref, ref_last = selective_scan_ref(**ins, delta_softplus=True, return_last_state=True)\n'
            'assert rel_err(last, ref_last) < 1e-5 and rel_err(out, ref) < 1e-5\n'
            'torch.library.opcheck(torch.ops.gmamba_zoo.selective_scan.default,\n'
            '                      tuple(ins[k] for k in ARGS) + (True, 4, "triton"))\n'
            'print("ok")\n')
        env = dict(os.environ, TRITON_INTERPRET='1')
        res = subprocess.run([sys.executable, '-c', code, os.path.dirname(__file__)], env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0 and res.stdout.strip().endswith('ok'), res.stderr[-3000:]

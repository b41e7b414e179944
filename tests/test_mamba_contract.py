"""mamba-ssm as a contract: our ``cuda`` scan backend calls ``selective_scan_cuda`` as mamba-ssm's own wrapper does.

Nothing here needs a GPU or compiles anything. mamba-ssm's real Python wrapper (``selective_scan_interface.py``,
from its source distribution on PyPI, pinned in :data:`MAMBA_SSM_VERSIONS`) and our ``selective_scan_fn(...,
backend='cuda')`` both run on CPU tensors against a stand-in for the compiled extension (tests/_mamba_standin.py)
that enforces the extension's argument checks and computes with the float64 oracle. Every call the two make to the
extension, their outputs, last states and every gradient must be identical, and must match the oracle.

The sdist is downloaded once into ``$GMAMBA_ZOO_CI_CACHE`` (else ``~/.cache/gmamba-zoo-ci``); without an index the
tests that need it skip, except under CI (``CI=true``), where they fail. The tests of the dtypes our backend hands
the kernel, of the op's fake implementation and of the stand-in's own checks need no download. See
docs/mamba-contract.md.
"""
import inspect
import itertools
import os
import re
import types
from typing import Dict, List

import pytest
import torch

from _mamba_standin import (
    CHUNK, KERNEL_CPP_PATH, MambaSourceUnavailable, SelectiveScanCudaStandIn, fetch_mamba_source,
    load_wrapper,
)
from gmamba_zoo.layers.gamba import MambaMixer
from gmamba_zoo.layers.gssm import GSSMMixer
from gmamba_zoo.ops import selective_scan as ss
from gmamba_zoo.ops import selective_scan_fn, selective_scan_ref

# mamba-ssm releases the contract is checked against: the newest 2.2.x and the newest release on PyPI (as of
# 2026-12-06; docs/mamba-contract.md lists the same). Update both together.
MAMBA_SSM_VERSIONS = ('2.2.6.post3', '2.3.2.post1')

ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
# relative error (2-norm) allowed against the float64 oracle: the rounding of results stored in the input dtype
TOL = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float64: 1e-6}

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module', params=MAMBA_SSM_VERSIONS)
def mamba(request) -> types.SimpleNamespace:
    """mamba-ssm ``version``'s wrapper module, bound to a fresh stand-in kernel, and its kernel source folder."""
    version = request.param
    kernel = SelectiveScanCudaStandIn()
    try:
        src = fetch_mamba_source(version)
        name = '_mamba_ssm_' + re.sub(r'\W', '_', version) + '_selective_scan_interface'
        wrapper = load_wrapper(src / 'selective_scan_interface.py', kernel, name=name)
    except MambaSourceUnavailable as e:
        msg = f'mamba-ssm {version} source unavailable: {e}'
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{msg}\nCI must run the mamba-ssm contract (it needs pip, an index and einops).')
        pytest.skip(msg)
    return types.SimpleNamespace(version=version, wrapper=wrapper, kernel=kernel, src=src)


class _Loaded:
    """An already-imported optional module, as ``selective_scan._OptionalModule`` hands it out."""

    def __init__(self, module):
        self.module, self.error, self.probed = module, None, True

    def get(self):
        return self.module


def _route_cuda_backend(monkeypatch, kernel: SelectiveScanCudaStandIn) -> SelectiveScanCudaStandIn:
    """Our ``cuda`` backend with ``kernel`` as its extension, on CPU tensors (production code unchanged)."""
    why_not = ss._why_not
    monkeypatch.setattr(ss, '_why_not', lambda name, device: None if name == 'cuda' else why_not(name, device))
    monkeypatch.setattr(ss, '_cuda_kernel', _Loaded(kernel))
    kernel.calls.clear()
    return kernel


@pytest.fixture
def kernel(mamba, monkeypatch) -> SelectiveScanCudaStandIn:
    """Our ``cuda`` backend routed to the stand-in the wrapper of ``mamba`` calls."""
    return _route_cuda_backend(monkeypatch, mamba.kernel)


@pytest.fixture
def standin(monkeypatch) -> SelectiveScanCudaStandIn:
    """Our ``cuda`` backend routed to a stand-in of its own (no mamba-ssm source needed)."""
    return _route_cuda_backend(monkeypatch, SelectiveScanCudaStandIn())


def make_leaves(dtype, has_D, has_z, has_bias, b=2, d=4, n=3, L=13, weight_dtype=torch.float32, seed=0):
    """Leaf tensors as the mixers make them: u, delta, z, B, C are [B, L, *] token tensors in ``dtype``
    (autocast's), A, D and delta_bias are ``weight_dtype`` (the mixers pass them as float32)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    leaves = dict(u=r(b, L, d), delta=torch.rand(b, L, d, generator=g) * 0.5, A=-torch.rand(d, n, generator=g) - 0.5,
                  B=r(b, L, n), C=r(b, L, n))
    if has_D:
        leaves['D'] = r(d)
    if has_z:
        leaves['z'] = r(b, L, d)
    if has_bias:
        leaves['delta_bias'] = torch.rand(d, generator=g) * 0.1
    weights = ('A', 'D', 'delta_bias')
    return {k: v.to(weight_dtype if k in weights else dtype).requires_grad_() for k, v in leaves.items()}


def scan_args(leaves: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The scan's [B, D, L] / [B, N, L] arguments: transposed views of the token leaves (stride along L is not 1)."""
    return {k: (v.transpose(1, 2) if v.dim() == 3 else v) for k, v in leaves.items()}


def run(fn, leaves, softplus, dout_seed=1, **kwargs):
    """(out, last state, gradients of every leaf) of ``fn`` with a fixed random output gradient."""
    out, last = fn(**scan_args(leaves), delta_softplus=softplus, return_last_state=True, **kwargs)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(dout_seed)).to(out.dtype)
    grads = torch.autograd.grad(out, list(leaves.values()), dout)
    return out, last, dict(zip(leaves, grads))


def calls_of(kernel: SelectiveScanCudaStandIn, fn, *args, **kwargs):
    kernel.calls.clear()
    result = fn(*args, **kwargs)
    calls, kernel.calls[:] = list(kernel.calls), []
    return result, calls


def assert_same_calls(ours: List[tuple], theirs: List[tuple]) -> None:
    """The same kernel entry points, in the same order, with the same arguments: dtypes, shapes and values."""
    assert [c[0] for c in ours] == [c[0] for c in theirs]
    for (entry, a), (_, b) in zip(ours, theirs):
        for name in a:
            x, y = a[name], b[name]
            where = f'{entry}({name}=...)'
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                assert x == y if not (x is None or y is None) else x is y, f'{where}: ours {x!r}, theirs {y!r}'
                continue
            assert (x.dtype, x.shape) == (y.dtype, y.shape), f'{where}: ours {x.dtype} {tuple(x.shape)}, ' \
                                                              f'theirs {y.dtype} {tuple(y.shape)}'
            assert torch.equal(x, y), f'{where}: same dtype and shape, different values'


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def oracle(leaves, softplus):
    """(out, last state, gradients) of the float64 reference on float64 copies of the leaves."""
    f64 = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    return run(selective_scan_ref, f64, softplus)


def assert_near_oracle(got, want, dtype) -> None:
    out, last, grads = got
    ref_out, ref_last, ref_grads = want
    assert rel_err(out, ref_out) < TOL[dtype], f'out: rel err {rel_err(out, ref_out):.2e}'
    assert last.dtype == torch.float32 and rel_err(last, ref_last) < 1e-6, 'last state'
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) < TOL[dtype], f'd{name}: rel err {rel_err(g, ref_grads[name]):.2e}'


OPTIONAL = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('has_D,has_z,has_bias,softplus', OPTIONAL,
                         ids=['-'.join(n for n, on in zip(('D', 'z', 'bias', 'softplus'), o) if on) or 'bare'
                              for o in OPTIONAL])
def test_cuda_backend_calls_the_kernel_as_mamba_ssm_does(mamba, kernel, dtype, has_D, has_z, has_bias, softplus):
    leaves = make_leaves(dtype, has_D, has_z, has_bias)
    theirs, their_calls = calls_of(kernel, run, mamba.wrapper.selective_scan_fn, leaves, softplus)
    ours, our_calls = calls_of(kernel, run, selective_scan_fn, leaves, softplus, backend='cuda')
    assert [c[0] for c in our_calls] == ['fwd', 'bwd']
    assert_same_calls(our_calls, their_calls)
    (out, last, grads), (their_out, their_last, their_grads) = ours, theirs
    assert out.dtype == their_out.dtype == dtype and torch.equal(out, their_out)
    assert torch.equal(last, their_last)
    assert set(grads) == set(leaves)
    for name, g in grads.items():
        assert g.dtype == leaves[name].dtype and torch.equal(g, their_grads[name]), f'd{name}'
    assert_near_oracle(ours, oracle(leaves, softplus), dtype)


@pytest.mark.slow  # the oracle's Python loop over 2051 steps, several times per path
@pytest.mark.parametrize('mamba', MAMBA_SSM_VERSIONS[-1:], indirect=True)
def test_more_than_one_kernel_chunk(mamba, kernel):
    """L > 2048: the checkpoint x has two chunks and the last state is the second chunk's."""
    leaves = make_leaves(torch.float32, True, True, True, b=1, d=2, n=2, L=CHUNK + 3)
    theirs, their_calls = calls_of(kernel, run, mamba.wrapper.selective_scan_fn, leaves, True)
    ours, our_calls = calls_of(kernel, run, selective_scan_fn, leaves, True, backend='cuda')
    assert our_calls[0][1]['u'].shape[-1] == CHUNK + 3 and our_calls[1][1]['x'].shape[2] == 2
    assert_same_calls(our_calls, their_calls)
    assert torch.equal(ours[1], theirs[1])
    assert_near_oracle(ours, oracle(leaves, True), torch.float32)


@pytest.mark.parametrize('case', ['float64', 'bf16-weights', 'mixed-inputs'])
def test_cuda_backend_takes_the_dtypes_selective_scan_fn_takes(standin, case):
    """selective_scan_fn computes in float32 whatever the input dtypes, in every backend; the kernel takes one input
    type (float32, float16 or bfloat16) for u, delta, B, C and z and float32 A, D and delta_bias. The cuda backend
    must hand it those and give results and gradients in the dtypes of the arguments, as the reference does."""
    if case == 'float64':  # e.g. model.double() on a GPU with mamba-ssm installed: 'auto' picks 'cuda'
        leaves = make_leaves(torch.float64, True, True, True, weight_dtype=torch.float64)
    elif case == 'bf16-weights':
        leaves = make_leaves(torch.float32, True, True, True, weight_dtype=torch.bfloat16)
    else:  # bfloat16 activations, float32 B and C
        leaves = make_leaves(torch.bfloat16, True, True, True)
        leaves['B'] = leaves['B'].detach().float().requires_grad_()
        leaves['C'] = leaves['C'].detach().float().requires_grad_()
    (out, last, grads), calls = calls_of(standin, run, selective_scan_fn, leaves, True, backend='cuda')
    ref_out, ref_last, ref_grads = run(selective_scan_ref, leaves, True)  # float32 (float64 for float64 u) autograd
    assert [c[0] for c in calls] == ['fwd', 'bwd']
    assert out.dtype == ref_out.dtype == leaves['u'].dtype and rel_err(out, ref_out) < TOL[out.dtype] + 1e-5
    assert last.dtype == torch.float32 and rel_err(last, ref_last) < 1e-5
    for name, g in grads.items():
        assert g.dtype == leaves[name].dtype, f'd{name}: {g.dtype}'
        assert rel_err(g, ref_grads[name]) < TOL[g.dtype] + 1e-5, f'd{name}: rel err {rel_err(g, ref_grads[name])}'


# ----------------------------------------------------------------------------------------------------------------
# The stand-in itself: its checks are live, and it has the kernel's signature and results
# ----------------------------------------------------------------------------------------------------------------

def _fwd_args(dtype=torch.float16, b=2, d=4, n=3, L=13):
    leaves = {k: v.detach() for k, v in make_leaves(dtype, True, True, True, b=b, d=d, n=n, L=L).items()}
    a = {k: v.transpose(1, 2).contiguous() if v.dim() == 3 else v for k, v in leaves.items()}
    a['B'], a['C'] = a['B'].unsqueeze(1), a['C'].unsqueeze(1)
    return dict(u=a['u'], delta=a['delta'], A=a['A'], B=a['B'], C=a['C'], D_=a['D'], z_=a['z'],
                delta_bias_=a['delta_bias'], delta_softplus=True)


FWD_MISUSE = {
    'u float64': lambda a: a.update(u=a['u'].double()),
    'delta dtype': lambda a: a.update(delta=a['delta'].float()),
    'A float16': lambda a: a.update(A=a['A'].half()),
    'B [B, N, L]': lambda a: a.update(B=a['B'].squeeze(1)),
    'C dtype': lambda a: a.update(C=a['C'].float()),
    'D float16': lambda a: a.update(D_=a['D_'].half()),
    'delta_bias shape': lambda a: a.update(delta_bias_=a['delta_bias_'][:-1]),
    'z dtype': lambda a: a.update(z_=a['z_'].float()),
    'u stride': lambda a: a.update(u=a['u'].transpose(1, 2).contiguous().transpose(1, 2)),
    'B and z swapped': lambda a: a.update(B=a['z_'], z_=a['B']),
    'softplus not a bool': lambda a: a.update(delta_softplus=1),
}


@pytest.mark.parametrize('misuse', FWD_MISUSE)
def test_stand_in_fwd_refuses_what_the_kernel_refuses(misuse):
    kernel = SelectiveScanCudaStandIn()
    args = _fwd_args()
    kernel.fwd(**args)
    FWD_MISUSE[misuse](args)
    with pytest.raises((RuntimeError, TypeError)):
        kernel.fwd(**args)


BWD_MISUSE = {
    'no out with z': lambda a: a.update(out_=None),
    'dout dtype': lambda a: a.update(dout=a['dout'].float()),
    'x float16': lambda a: a.update(x_=a['x_'].half()),
    'x shape': lambda a: a.update(x_=a['x_'][..., :-2].contiguous()),
    'x not contiguous': lambda a: a.update(x_=a['x_'].transpose(0, 1).contiguous().transpose(0, 1)),
    'x of other inputs': lambda a: a.update(x_=a['x_'] * 1.5),
    'recompute_out_z not a bool': lambda a: a.update(recompute_out_z=None),
}


@pytest.mark.parametrize('misuse', BWD_MISUSE)
def test_stand_in_bwd_refuses_what_the_kernel_refuses(misuse):
    kernel = SelectiveScanCudaStandIn()
    args = _fwd_args()
    out_z, x, out = kernel.fwd(**args)[::-1]
    del args['delta_softplus']
    args.update(dout=torch.randn_like(out), x_=x, out_=out, dz_=None, delta_softplus=True, recompute_out_z=False)
    grads = kernel.bwd(**args)
    assert [None if g is None else g.dtype for g in grads] == [torch.float16] * 2 + [torch.float32] + \
        [torch.float16] * 2 + [torch.float32] * 2 + [torch.float16]
    BWD_MISUSE[misuse](args)
    with pytest.raises((RuntimeError, TypeError)):
        kernel.bwd(**args)


def _cpp_params(cpp: str, fn: str) -> List[str]:
    """Parameter names of C++ function ``fn`` (last identifier of each declaration)."""
    decl = re.search(rf'\b{fn}\s*\(([^)]*)\)\s*{{', cpp)
    assert decl, f'{fn} not found in {KERNEL_CPP_PATH}'
    return [re.findall(r'\w+', p)[-1] for p in decl.group(1).split(',')]


def test_stand_in_has_the_kernels_signature_and_results(mamba):
    """The stand-in was written from selective_scan.cpp; a release that changes the bindings, their parameters or
    what they return fails here, so the stand-in gets reviewed."""
    cpp = (mamba.src / 'selective_scan.cpp').read_text()
    for entry in ('fwd', 'bwd'):
        assert re.search(rf'm\.def\("{entry}",\s*&selective_scan_{entry}\b', cpp), entry
        params = list(inspect.signature(getattr(SelectiveScanCudaStandIn(), entry)).parameters)
        assert params == _cpp_params(cpp, f'selective_scan_{entry}'), entry
    squash = lambda s: re.sub(r'\s+', '', s)
    code = squash(cpp)
    for expected in ('result={out,x};', 'if(has_z){result.push_back(out_z);}',
                     'result={du,ddelta,dA,dB.to(B.dtype()),dC.to(C.dtype()),dD,ddelta_bias};',
                     'if(has_z){result.push_back(dz);}', 'if(recompute_out_z){result.push_back(out_z);}',
                     f'constintn_chunks=(seqlen+{CHUNK}-1)/{CHUNK};',
                     'x=torch::empty({batch_size,dim,n_chunks,dstate*2},u.options().dtype(weight_type));'):
        assert squash(expected) in code, expected


@pytest.mark.parametrize('dtype,weight_dtype', [(torch.bfloat16, torch.float32), (torch.float64, torch.float64)],
                         ids=['bf16', 'float64'])
def test_cuda_backend_fake_matches_the_kernel(standin, dtype, weight_dtype):
    """torch.compile/export see the op's fake implementation: its outputs' shapes and dtypes (the checkpoint x, the
    pre-gate output in the kernel's input type) must be those the kernel path returns."""
    leaves = make_leaves(dtype, True, True, True, weight_dtype=weight_dtype, L=7)
    a = scan_args(leaves)
    args = tuple(a[k] for k in ARGS) + (True, 64, 'cuda')
    torch.library.opcheck(torch.ops.gmamba_zoo.selective_scan.default, args)


@pytest.mark.parametrize('autocast_dtype', [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('mixer', ['GSSMMixer', 'MambaMixer'])
def test_mixers_under_autocast_pass_the_kernels_checks(standin, mixer, autocast_dtype):
    """The models' own calls (gmamba_zoo/layers/ssm.py) under autocast: the cuda backend hands the kernel activations
    in autocast's dtype and float32 A, D and delta_bias without a cast, and agrees with the torch backend."""
    torch.manual_seed(0)
    layer = GSSMMixer(8) if mixer == 'GSSMMixer' else MambaMixer(8, d_state=4)
    x = torch.randn((1, 4, 5, 8) if mixer == 'GSSMMixer' else (1, 20, 8))
    results = {}
    for backend in ('cuda', 'torch'):
        layer.zero_grad()
        with ss.scan_backend(backend), torch.autocast('cpu', dtype=autocast_dtype):
            y = layer(x)
        y.float().square().sum().backward()
        results[backend] = [y.float()] + [p.grad.float() for p in layer.parameters()]
    fwd = [args for entry, args in standin.calls if entry == 'fwd']
    assert len(fwd) == 1 and [e for e, _ in standin.calls] == ['fwd', 'bwd']
    assert {k: v.dtype for k, v in fwd[0].items() if isinstance(v, torch.Tensor)} == dict(
        u=autocast_dtype, delta=autocast_dtype, A=torch.float32, B=autocast_dtype, C=autocast_dtype, D=torch.float32,
        delta_bias=torch.float32, **({'z': autocast_dtype} if mixer == 'MambaMixer' else {}))
    for a, b in zip(*results.values()):
        assert rel_err(a, b) < 1e-2, rel_err(a, b)

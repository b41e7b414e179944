"""The fused numba CPU scan (:mod:`gmamba_zoo.ops.numba_scan`) against a float64 sequential-loop oracle.

Every call passes the kernels arguments of the same types (absent optionals become neutral arrays), so the whole
file compiles each kernel once; numba's disk cache makes later runs start warm.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('numba')
from gmamba_zoo.ops import numba_scan as ns  # noqa: E402

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
TOL = 1e-5


def oracle(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False):
    """The scan as a plain loop over time in the inputs' dtype (float64 here); returns (out, states h_1 .. h_L)."""
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = F.softplus(dt) if softplus else dt
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys, hs = [], []
    for t in range(u.shape[2]):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
        hs.append(h)
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, hs


def make_inputs(b=2, d=5, n=4, L=37, optional=NAMES[5:], decay='slow', seed=0):
    """float64 scan inputs; ``decay='fast'`` puts dt * |A| up to ~100 (softplus off), beyond the -80 floor."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    if decay == 'fast':
        delta = torch.rand(b, d, L, generator=g, dtype=torch.float64) * 5.0
        A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 20.0
    else:
        delta = r(b, d, L) * 0.5 - 1.0
        A = -torch.rand(d, n, generator=g, dtype=torch.float64) - 0.1
    ins = dict(u=r(b, d, L), delta=delta, A=A, B=r(b, n, L), C=r(b, n, L), D=r(d), z=r(b, d, L),
               delta_bias=torch.rand(d, generator=g, dtype=torch.float64) * 0.5)
    return {k: (v if k in NAMES[:5] or k in optional else None) for k, v in ins.items()}


def rel_err(got, want):
    """max |got - want| / max |want|."""
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def check(ins, softplus, chunk, out_tol=TOL, cast=None):
    """Forward, checkpoints and every gradient of the numba scan against autograd through the float64 oracle.

    ``cast`` (a dtype) rounds the inputs to it first; the oracle then runs on the rounded values.
    """
    if cast is not None:
        ins = {k: None if v is None else v.to(cast) for k, v in ins.items()}
    ref_ins = {k: None if v is None else v.double().requires_grad_() for k, v in ins.items()}
    want, states = oracle(**ref_ins, softplus=softplus)
    dout = torch.randn(want.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    present = [k for k in NAMES if ref_ins[k] is not None]
    want_grads = dict(zip(present, torch.autograd.grad(want, [ref_ins[k] for k in present], dout)))

    args = [ins[k] for k in NAMES]
    out, ckpt = ns.scan_fwd(*args, softplus, chunk)
    assert out.dtype == ins['u'].dtype and out.shape == want.shape
    assert rel_err(out, want.detach()) < out_tol
    L = want.shape[-1]
    assert ckpt.dtype == torch.float32 and ckpt.shape == (-(-L // chunk) + 1, *states[0].shape)
    assert ckpt[0].abs().max() == 0
    for k in range(1, ckpt.shape[0]):
        assert rel_err(ckpt[k], states[min(k * chunk, L) - 1].detach()) < TOL, f'ckpt[{k}]'

    grads = ns.scan_bwd(dout.float(), *args, ckpt, softplus, chunk)
    for name, grad in zip(NAMES, grads):
        if ins[name] is None:
            assert grad is None, name
            continue
        assert grad.dtype == torch.float32 and grad.shape == ins[name].shape, name
        err = rel_err(grad, want_grads[name])
        assert err < TOL, f'gradient of {name}: rel err {err:.2e}'


@pytest.mark.parametrize('softplus', [True, False])
@pytest.mark.parametrize('optional', [NAMES[5:], (), ('z',), ('D', 'delta_bias')], ids=['all', 'none', 'z', 'D+bias'])
def test_against_oracle(optional, softplus):
    check(make_inputs(optional=optional), softplus, chunk=8)  # L = 37: the last chunk is partial


@pytest.mark.parametrize('shape,chunk', [
    ((2, 5, 4, 1), 64),  # L = 1
    ((1, 1, 1, 23), 5),  # one pair, N = 1
    ((2, 3, 20, 48), 16),  # N over one SIMD block, L a multiple of the chunk
    ((3, 7, 16, 70), 64),
])
def test_shapes(shape, chunk):
    b, d, n, L = shape
    check(make_inputs(b, d, n, L, seed=L), softplus=True, chunk=chunk)


def test_fast_decay():
    check(make_inputs(decay='fast'), softplus=False, chunk=16)


def test_non_contiguous_inputs():
    ins = make_inputs(b=2, d=5, n=4, L=29)
    views = {}
    for k, v in ins.items():  # the same values, as transposed views of differently laid out storage
        if v.dim() == 3:
            views[k] = v.transpose(1, 2).contiguous().transpose(1, 2)
        elif v.dim() == 2:
            views[k] = v.t().contiguous().t()
        else:
            views[k] = torch.stack([v, v], 1)[:, 0]
        assert not views[k].is_contiguous()
    check(views, softplus=True, chunk=8)


@pytest.mark.parametrize('dtype,out_tol', [(torch.bfloat16, 8e-3), (torch.float16, 1e-3)])
def test_low_precision_inputs(dtype, out_tol):
    check(make_inputs(L=21), softplus=True, chunk=8, out_tol=out_tol, cast=dtype)


@pytest.mark.parametrize('threads', [1, 2])
def test_threads(threads):
    """The result does not depend on how the pairs are split among threads, and PyTorch's thread count survives
    (numba's OpenMP pool can share PyTorch's runtime)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ins = make_inputs(b=3, d=5, n=4, L=40)
        check(ins, softplus=True, chunk=16)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_bad_shapes():
    args = [make_inputs()[k] for k in NAMES]
    with pytest.raises(ValueError, match='B must be'):
        ns.scan_fwd(*args[:3], args[3][:, :, :-1], *args[4:], True)
    out, ckpt = ns.scan_fwd(*args, True, 8)
    with pytest.raises(ValueError, match='ckpt'):
        ns.scan_bwd(out, *args, ckpt, True, 16)


@pytest.mark.slow
def test_unwritable_cache_only_costs_time(tmp_path):
    """Where numba finds no writable cache directory at all, the module still imports and computes (and warns).

    A directory cannot be created under a regular file, even by root (who ignores permission bits), so every
    location numba tries sits under one: NUMBA_CACHE_DIR, the user's cache directory, and ``__pycache__`` beside a
    copy of the module (in a package with the guarded decorator it imports).
    """
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    copy = tmp_path / 'copy'
    (copy / 'nscopy').mkdir(parents=True)
    (copy / 'nscopy' / '__init__.py').write_text('')
    shutil.copy(ns.__file__, copy / 'nscopy' / 'numba_scan.py')
    shutil.copy(Path(ns.__file__).with_name('_numba_jit.py'), copy / 'nscopy' / '_numba_jit.py')
    (copy / 'nscopy' / '__pycache__').write_text('')
    env = dict(os.environ, NUMBA_CACHE_DIR=str(blocker / 'numba'), XDG_CACHE_HOME=str(blocker / 'xdg'),
               HOME=str(blocker / 'home'))
    code = (
        'import sys, torch\n'
        f'sys.path.insert(0, {str(copy)!r})\n'
        'import nscopy.numba_scan as m\n'
        'g = torch.Generator().manual_seed(0)\n'
        'u, dl, B, C = (torch.randn(s, generator=g) for s in ((1, 2, 3), (1, 2, 3), (1, 4, 3), (1, 4, 3)))\n'
        'A = -torch.rand(2, 4, generator=g)\n'
        'out, ckpt = m.scan_fwd(u, dl, A, B, C, None, None, None, False)\n'
        'h, ys = torch.zeros(1, 2, 4), []\n'
        'for t in range(3):\n'
        '    h = torch.exp(dl[..., t, None] * A) * h + (dl[..., t] * u[..., t])[..., None] * B[:, None, :, t]\n'
        '    ys.append((h * C[:, None, :, t]).sum(-1))\n'
        'assert torch.allclose(out, torch.stack(ys, -1), atol=1e-5), (out, ys)\n'
        'print("ok")\n')
    res = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and 'ok' in res.stdout, res.stderr
    assert 'cannot cache' in res.stderr

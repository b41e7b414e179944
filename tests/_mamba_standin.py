"""mamba-ssm's selective-scan contract, offline: its real Python wrapper and a checked stand-in for its CUDA extension.

Used by tests/test_mamba_contract.py; nothing here is compiled and nothing needs a GPU.

* :func:`fetch_mamba_source` downloads mamba-ssm's source distribution from the package index with pip (without
  building it) into a cache outside the clone and extracts two files: the Python wrapper
  ``mamba_ssm/ops/selective_scan_interface.py`` and the extension's argument checks ``csrc/selective_scan/
  selective_scan.cpp`` (read by a test, never run).
* :func:`load_wrapper` imports that wrapper by path, with ``sys.modules`` stand-ins for what it imports that cannot
  load here (the compiled ``selective_scan_cuda``, ``causal_conv1d``, mamba-ssm's own Triton/amp helpers); the
  previous ``sys.modules`` entries are restored afterwards.
* :class:`SelectiveScanCudaStandIn` has ``fwd`` and ``bwd`` with the extension's signatures, raises where the
  extension's ``TORCH_CHECK``s would (input/weight dtypes, shapes, the [B, G, N, L] layout of input-dependent B and C,
  a unit stride along L, the checkpoint ``x`` [B, D, ceil(L / 2048), 2N], ...) and returns what the extension returns,
  in its dtypes and shapes. The numbers come from the float64 oracle ``selective_scan_ref`` (gradients by autograd).
  ``is_cuda`` checks become "on u's device", so it runs on CPU tensors.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from gmamba_zoo.ops.selective_scan import selective_scan_ref

# files taken from the sdist, by their path inside it (below its top folder ``mamba_ssm-VERSION/``)
WRAPPER_PATH = 'mamba_ssm/ops/selective_scan_interface.py'
KERNEL_CPP_PATH = 'csrc/selective_scan/selective_scan.cpp'
CHUNK = 2048  # the extension keeps one state every 2048 steps: x has ceil(L / 2048) chunks
MAX_DSTATE = 256
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class MambaSourceUnavailable(RuntimeError):
    """mamba-ssm's source could not be downloaded or imported here (no index, no pip, no einops, ...)."""


def cache_root() -> Path:
    """``$GMAMBA_ZOO_CI_CACHE`` (CI's cache, outside the clone), else ``~/.cache/gmamba-zoo-ci``."""
    return Path(os.environ.get('GMAMBA_ZOO_CI_CACHE') or Path.home() / '.cache' / 'gmamba-zoo-ci')


def fetch_mamba_source(version: str, timeout: float = 600.0) -> Path:
    """The folder holding ``selective_scan_interface.py`` and ``selective_scan.cpp`` of mamba-ssm ``version``.

    Downloaded once with ``pip download --no-binary :all:`` (``MAMBA_SKIP_CUDA_BUILD=TRUE``: mamba-ssm's setup.py
    would otherwise fetch a prebuilt wheel from outside the index) into ``cache_root()/mamba-ssm-sdist/VERSION``.

    Raises:
        MambaSourceUnavailable: pip failed (no index reachable, no such version, ...) or the sdist lacks a file.
    """
    dest = cache_root() / 'mamba-ssm-sdist' / version
    names = (Path(WRAPPER_PATH).name, Path(KERNEL_CPP_PATH).name)
    if all((dest / n).is_file() for n in names):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f'.{version}-') as tmp:
        env = dict(os.environ, MAMBA_SKIP_CUDA_BUILD='TRUE', PIP_DISABLE_PIP_VERSION_CHECK='1')
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-build-isolation', '--no-binary', ':all:',
               f'mamba-ssm=={version}', '-d', tmp]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MambaSourceUnavailable(f'`{" ".join(cmd)}` did not finish: {e}') from e
        sdists = sorted(Path(tmp).glob('mamba_ssm-*.tar.gz'))
        if proc.returncode != 0 or not sdists:
            tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise MambaSourceUnavailable(f'`{" ".join(cmd)}` failed (exit {proc.returncode}):\n{tail}')
        staged = Path(tmp) / 'files'
        staged.mkdir()
        with tarfile.open(sdists[0]) as tar:
            for rel in (WRAPPER_PATH, KERNEL_CPP_PATH):
                # the member under the sdist's one top folder; read, never extracted by its own path
                member = next((m for m in tar.getmembers() if m.isfile() and m.name.split('/', 1)[-1] == rel), None)
                if member is None:
                    raise MambaSourceUnavailable(f'{sdists[0].name} has no {rel}.')
                (staged / Path(rel).name).write_bytes(tar.extractfile(member).read())
        if dest.exists():  # a partial folder from an interrupted run
            shutil.rmtree(dest)
        os.replace(staged, dest)
    return dest


# ----------------------------------------------------------------------------------------------------------------
# Importing the wrapper
# ----------------------------------------------------------------------------------------------------------------

def _package(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package: its submodules come from sys.modules
    return module


def _amp_decorator(fn=None, **_kwargs):
    """Stand-in for mamba_ssm.utils.torch's custom_fwd/custom_bwd (used on MambaInnerFn only, not the scan)."""
    return fn if fn is not None else (lambda f: f)


def _not_here(*_args, **_kwargs):
    raise NotImplementedError('stand-in: mamba-ssm\'s Triton layer norm is not part of the scan contract.')


@contextlib.contextmanager
def _stand_in_modules(kernel: types.ModuleType) -> Iterator[None]:
    """``sys.modules`` entries for the wrapper's imports, the previous entries put back on exit."""
    utils_torch = types.ModuleType('mamba_ssm.utils.torch')
    utils_torch.custom_fwd = utils_torch.custom_bwd = _amp_decorator
    layer_norm = types.ModuleType('mamba_ssm.ops.triton.layer_norm')
    layer_norm._layer_norm_fwd = _not_here
    stand_ins: Dict[str, Optional[types.ModuleType]] = {
        'selective_scan_cuda': kernel,
        'mamba_ssm': _package('mamba_ssm'), 'mamba_ssm.utils': _package('mamba_ssm.utils'),
        'mamba_ssm.utils.torch': utils_torch, 'mamba_ssm.ops': _package('mamba_ssm.ops'),
        'mamba_ssm.ops.triton': _package('mamba_ssm.ops.triton'), 'mamba_ssm.ops.triton.layer_norm': layer_norm,
        # None in sys.modules makes the import raise ImportError: the wrapper's own fallback (causal_conv1d_fn = None)
        'causal_conv1d': None, 'causal_conv1d.cpp_functions': None,
    }
    missing = object()
    saved = {name: sys.modules.get(name, missing) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, prev in saved.items():
            if prev is missing:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = prev


def load_wrapper(path: Path, kernel: types.ModuleType, name: str) -> types.ModuleType:
    """Import mamba-ssm's ``selective_scan_interface.py`` at ``path`` as module ``name`` (not kept in sys.modules),
    its ``selective_scan_cuda`` bound to ``kernel``.

    Raises:
        MambaSourceUnavailable: it imports something that is neither installed nor stood in (e.g. einops).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with _stand_in_modules(kernel):
        try:
            spec.loader.exec_module(module)
        except ImportError as e:
            raise MambaSourceUnavailable(f'{path} does not import here: {type(e).__name__}: {e}') from e
    if module.selective_scan_cuda is not kernel:
        raise AssertionError(f'{path} did not bind selective_scan_cuda to the stand-in.')
    return module


# ----------------------------------------------------------------------------------------------------------------
# The extension's stand-in
# ----------------------------------------------------------------------------------------------------------------

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise RuntimeError(f'selective_scan_cuda stand-in: {msg}')  # TORCH_CHECK raises RuntimeError


def _check_tensor(t, name: str, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, Tensor):  # pybind11's tensor caster refuses anything else
        raise TypeError(f'selective_scan_cuda stand-in: {name} must be a Tensor'
                        f'{" or None" if optional else ""}, got {type(t).__name__}.')


def _check_bool(v, name: str) -> None:
    if not isinstance(v, bool):  # pybind11's bool caster: True/False only
        raise TypeError(f'selective_scan_cuda stand-in: {name} must be a bool, got {type(v).__name__}.')


def _check_shape(t: Tensor, name: str, *shape: int) -> None:
    _check(tuple(t.shape) == tuple(shape), f'{name} must have shape {tuple(shape)}, got {tuple(t.shape)}.')


def _check_unit_stride(t: Tensor, name: str) -> None:
    _check(t.stride(-1) == 1 or t.size(-1) == 1, f'{name} must have stride 1 along its last dimension.')


def _check_optional_input(t: Optional[Tensor], name: str, dtype: torch.dtype, device: torch.device,
                          *shape: int) -> None:
    if t is None:
        return
    _check(t.dtype == dtype, f'{name} must be {dtype}, got {t.dtype}.')
    _check(t.device == device, f'{name} is on {t.device}, u on {device}.')
    _check_unit_stride(t, name)
    _check_shape(t, name, *shape)


def _check_common(u, delta, A, B, C, D, z, delta_bias) -> Dict[str, int]:
    """The checks selective_scan_fwd and selective_scan_bwd share; returns the sizes."""
    for t, name in ((u, 'u'), (delta, 'delta'), (A, 'A'), (B, 'B'), (C, 'C')):
        _check_tensor(t, name)
    for t, name in ((D, 'D'), (z, 'z'), (delta_bias, 'delta_bias')):
        _check_tensor(t, name, optional=True)
    itype, wtype = u.dtype, A.dtype
    _check(itype in INPUT_DTYPES, f'u (the input type) must be float32, float16 or bfloat16, got {itype}.')
    if wtype == torch.complex64:
        raise NotImplementedError('stand-in: complex A (weight type complex64) is not covered.')
    _check(wtype == torch.float32, f'A (the weight type) must be float32 or complex64, got {wtype}.')
    variable_b, variable_c = B.dim() >= 3, C.dim() >= 3
    if not (variable_b and variable_c):
        raise NotImplementedError('stand-in: only input-dependent B and C ([B, G, N, L]) are covered.')
    _check(delta.dtype == itype, f'delta must have the input type {itype}, got {delta.dtype}.')
    _check(B.dtype == itype, f'input-dependent B must have the input type {itype}, got {B.dtype}.')
    _check(C.dtype == itype, f'input-dependent C must have the input type {itype}, got {C.dtype}.')
    for t, name in ((delta, 'delta'), (A, 'A'), (B, 'B'), (C, 'C')):
        _check(t.device == u.device, f'{name} is on {t.device}, u on {u.device}.')  # the is_cuda checks
    _check_unit_stride(u, 'u')
    _check_unit_stride(delta, 'delta')
    _check(u.dim() == 3, f'u must be [batch, dim, seqlen], got shape {tuple(u.shape)}.')
    b, d, L = u.shape
    n, groups = A.size(1), B.size(1)
    _check(n <= MAX_DSTATE, 'selective_scan only supports state dimension <= 256')
    _check_shape(u, 'u', b, d, L)
    _check_shape(delta, 'delta', b, d, L)
    _check_shape(A, 'A', d, n)
    _check_shape(B, 'B', b, groups, n, L)
    _check_unit_stride(B, 'B')
    _check_shape(C, 'C', b, groups, n, L)
    _check_unit_stride(C, 'C')
    if groups != 1:
        raise NotImplementedError('stand-in: only one group of B and C is covered.')
    _check_optional_input(D, 'D', torch.float32, u.device, d)
    _check_optional_input(delta_bias, 'delta_bias', torch.float32, u.device, d)
    _check_optional_input(z, 'z', itype, u.device, b, d, L)
    return dict(b=b, d=d, L=L, n=n, n_chunks=-(-L // CHUNK))


def _f64(t: Optional[Tensor], grad: bool = False) -> Optional[Tensor]:
    return None if t is None else t.detach().to(torch.float64).contiguous().requires_grad_(grad)


def _ungated_scan(u, delta, A, B, C, D, delta_bias, softplus: bool, L: Optional[int] = None, **kw):
    """The oracle's scan (no gate) over the first ``L`` steps; B, C as [B, 1, N, L]."""
    if L is not None:
        u, delta, B, C = u[..., :L], delta[..., :L], B[..., :L], C[..., :L]
    return selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, softplus, **kw)


def _checkpoint(u, delta, A, B, C, D, delta_bias, softplus: bool, n_chunks: int, last: Tensor) -> Tensor:
    """The extension's x: per chunk c and state n, the running prefix (product of the decays up to the chunk's end,
    state at the chunk's end) interleaved along the last dim; float32 [B, D, n_chunks, 2N]. ``last``: the state after
    the last step (the scan's), the earlier chunks' states are recomputed."""
    dt = delta + delta_bias[:, None] if delta_bias is not None else delta
    dt = F.softplus(dt) if softplus else dt
    log_decay = torch.cumsum(dt, dim=-1)  # [B, D, L]; the decay product is exp(A * sum dt)
    cols = []
    for c in range(n_chunks):
        end = min((c + 1) * CHUNK, u.shape[-1])
        h = last if c == n_chunks - 1 else _ungated_scan(u, delta, A, B, C, D, delta_bias, softplus, L=end,
                                                           return_last_state=True)[1]
        prod = torch.exp(log_decay[..., end - 1, None] * A)  # [B, D, N]
        cols.append(torch.stack([prod, h], dim=-1).flatten(-2))  # [B, D, 2N]: (prod, state) pairs
    return torch.stack(cols, dim=2).float()


class SelectiveScanCudaStandIn(types.ModuleType):
    """A module standing in for ``selective_scan_cuda``; ``calls`` logs ('fwd' | 'bwd', kwargs) of every call."""

    def __init__(self, name: str = 'selective_scan_cuda'):
        super().__init__(name)
        self.calls: List[tuple] = []

    def fwd(self, u, delta, A, B, C, D_, z_, delta_bias_, delta_softplus) -> List[Tensor]:
        """selective_scan_fwd: [out, x] (+ [out_z] when z is given)."""
        _check_bool(delta_softplus, 'delta_softplus')
        s = _check_common(u, delta, A, B, C, D_, z_, delta_bias_)
        self.calls.append(('fwd', dict(u=u, delta=delta, A=A, B=B, C=C, D=D_, z=z_, delta_bias=delta_bias_,
                                       delta_softplus=delta_softplus)))
        ins = [_f64(t) for t in (u, delta, A, B, C, D_, delta_bias_)]
        with torch.no_grad():
            y, last = _ungated_scan(*ins, delta_softplus, return_last_state=True)
            x = _checkpoint(*ins, delta_softplus, s['n_chunks'], last)
        result = [y.to(u.dtype), x]  # out = empty_like(delta): the input type
        if z_ is not None:
            result.append((y * F.silu(_f64(z_))).to(u.dtype))
        return result

    def bwd(self, u, delta, A, B, C, D_, z_, delta_bias_, dout, x_, out_, dz_, delta_softplus,
            recompute_out_z) -> List[Optional[Tensor]]:
        """selective_scan_bwd: [du, ddelta, dA, dB, dC, dD, ddelta_bias] (+ [dz] with z, + [out_z] if recomputed).

        dD and ddelta_bias are None (an undefined tensor) when D or delta_bias is absent. dz is computed, as by the
        kernel, from ``out_`` (the pre-gate output the caller saved), so a wrong ``out_`` gives a wrong dz.
        """
        _check_bool(delta_softplus, 'delta_softplus')
        _check_bool(recompute_out_z, 'recompute_out_z')
        s = _check_common(u, delta, A, B, C, D_, z_, delta_bias_)
        _check_tensor(dout, 'dout')
        for t, name in ((x_, 'x'), (out_, 'out'), (dz_, 'dz')):
            _check_tensor(t, name, optional=True)
        b, d, L, n, n_chunks = s['b'], s['d'], s['L'], s['n'], s['n_chunks']
        _check(dout.dtype == u.dtype, f'dout must have the input type {u.dtype}, got {dout.dtype}.')
        _check(dout.device == u.device, f'dout is on {dout.device}, u on {u.device}.')
        _check_unit_stride(dout, 'dout')
        _check_shape(dout, 'dout', b, d, L)
        if z_ is not None:
            _check(out_ is not None, 'out (the pre-gate output) must be given when z is.')
            _check_optional_input(out_, 'out', u.dtype, u.device, b, d, L)
            _check_optional_input(dz_, 'dz', u.dtype, u.device, b, d, L)
        if n_chunks > 1:
            _check(x_ is not None, 'x must be given when the sequence has more than one chunk.')
        if x_ is not None:
            _check(x_.dtype == A.dtype, f'x must have the weight type {A.dtype}, got {x_.dtype}.')
            _check(x_.device == u.device, f'x is on {x_.device}, u on {u.device}.')
            _check(x_.is_contiguous(), 'x must be contiguous.')
            _check_shape(x_, 'x', b, d, n_chunks, 2 * n)
        self.calls.append(('bwd', dict(u=u, delta=delta, A=A, B=B, C=C, D=D_, z=z_, delta_bias=delta_bias_,
                                       dout=dout, x=x_, out=out_, dz=dz_, delta_softplus=delta_softplus,
                                       recompute_out_z=recompute_out_z)))
        ins = [_f64(t, grad=True) for t in (u, delta, A, B, C, D_, delta_bias_)]
        # Called from a custom op's backward, this thread has autograd's dispatch keys excluded (and grad mode off):
        # the oracle's gradients are taken in a fresh thread, where neither applies.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            y, last, grads = pool.submit(self._oracle_vjp, ins, dout, z_, delta_softplus).result()
        if x_ is not None:
            # The kernel restarts chunk c > 0 from x[:, :, c - 1]; the stand-in recomputes every state instead, so
            # it insists that x is the forward's checkpoint for these inputs (else its gradients would be right
            # where the kernel's are wrong).
            with torch.no_grad():
                want = _checkpoint(*[None if t is None else t.detach() for t in ins], delta_softplus, n_chunks, last)
            _check(torch.allclose(x_, want, rtol=1e-5, atol=1e-6), 'x is not the forward\'s checkpoint for these '
                   'inputs.')
        dz = out_z = None
        if z_ is not None:
            zf, sig = _f64(z_), torch.sigmoid(_f64(z_))
            dz = _f64(dout) * _f64(out_) * sig * (1 + zf * (1 - sig))  # d silu(z) / dz times the saved pre-gate out
            if recompute_out_z:
                out_z = (y * zf * sig).to(u.dtype)
        du, ddelta, dA, dB, dC, dD, dbias = grads
        result = [du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                  None if D_ is None else dD.to(D_.dtype), None if delta_bias_ is None else dbias.to(delta_bias_.dtype)]
        if z_ is not None:
            if dz_ is not None:
                dz_.copy_(dz)
                result.append(dz_)
            else:
                result.append(dz.to(z_.dtype))
        if recompute_out_z:
            result.append(out_z)  # undefined (None) without z
        return result


    @staticmethod
    def _oracle_vjp(ins: List[Optional[Tensor]], dout: Tensor, z: Optional[Tensor], softplus: bool):
        """The ungated float64 output, the last state and the gradients of ``ins`` (None for None) for output
        gradient ``dout`` (times silu(z) when gated, as the kernel does)."""
        with torch.enable_grad():
            y, last = _ungated_scan(*ins, softplus, return_last_state=True)
        g = _f64(dout) if z is None else _f64(dout) * F.silu(_f64(z))
        it = iter(torch.autograd.grad(y, [t for t in ins if t is not None], g))
        return y.detach(), last.detach(), [None if t is None else next(it) for t in ins]


"""Selective scan (Mamba S6): a pure-PyTorch chunked scan, fused numba (CPU) and Triton (GPU) kernels, mamba-ssm.

The recurrence, with inputs shaped as in ``mamba_ssm.selective_scan_fn``::

    delta = softplus(delta + delta_bias)                      # when delta_softplus
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t  # h: [B, D, N]
    y_t   = <h_t, C_t> + D * u_t
    y     = y * silu(z)                                       # when z is given

Four backends sit behind one ``torch.library`` custom op (``gmamba_zoo::selective_scan``), so
``torch.compile``, ``torch.export`` and fvcore's tracer each see a single node whichever runs:

* ``"torch"``: works on every device; the fallback and the reference. The sequence is cut into chunks of
  ``chunk_size`` steps. Forward keeps only the state at each chunk boundary; backward recomputes the states of one
  chunk at a time from its boundary state and runs the adjoint (reverse) recurrence over it, so the whole
  [L, B, D, N] state tensor is never materialised. Work inside a chunk is time-major in preallocated buffers reused
  for every chunk. The step loop is one in-place ``addcmul_`` per time step, or, when numba is installed, one
  compiled call per chunk doing the same arithmetic (:func:`cpu_recurrence` says which;
  ``GMAMBA_ZOO_CPU_RECURRENCE`` chooses). The recurrence is evaluated directly (no log-space cumulative sums, no
  division by a decay), so it is stable for any decay rate.
* ``"numba"``: a fused CPU kernel (:mod:`gmamba_zoo.ops.numba_scan`): one compiled, parallel call over the whole
  sequence, each (batch, channel) pair's state in registers; it keeps one state every :data:`KERNEL_CHUNK_SIZE` steps
  for the backward.
* ``"triton"``: the same design as a Triton GPU kernel (:mod:`gmamba_zoo.ops.triton_scan`), forward and backward,
  for users without a mamba-ssm build; on CPU tensors only under Triton's interpreter (``TRITON_INTERPRET=1``).
* ``"cuda"``: the ``selective_scan_cuda`` kernel of the ``mamba-ssm`` package, for CUDA tensors.

While ``torch.onnx.export`` traces, :func:`selective_scan_fn` bypasses the op and runs the loop-free decomposition of
:mod:`gmamba_zoo.ops.parallel_scan` (standard ONNX operators, any batch and length; see docs/export.md).

Arithmetic is float32 whatever the input dtypes in every backend. Selection, strongest first: the ``backend=``
argument, the :func:`scan_backend` context manager (or :func:`set_scan_backend`), the ``GMAMBA_ZOO_SCAN_BACKEND``
environment variable, then ``"auto"``: cuda > triton > torch for CUDA tensors, numba > torch on CPU.
A backend ``"auto"`` passes over for a fixable reason (a missing package, a Triton older than :data:`MIN_TRITON`) is
named once in a warning; a backend asked for by name that cannot run raises an error that says why. Before ``"auto"``
first picks Triton on a GPU it launches both Triton kernels once on tiny inputs there: if that fails (a Triton or
driver mismatch: a compile error, too little shared memory, ...) it warns once with the error and uses the PyTorch
scan on that GPU for the rest of the process (docs/gpu.md).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
import warnings
from typing import Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .parallel_scan import selective_scan_parallel

__all__ = [
    'selective_scan_fn', 'selective_scan_ref', 'autocast_off', 'scan_backend', 'set_scan_backend', 'get_scan_backend',
    'resolve_scan_backend', 'cuda_kernel_available', 'auto_chunk_size', 'cpu_recurrence', 'SCAN_BACKENDS',
    'DEFAULT_CHUNK_SIZE', 'KERNEL_CHUNK_SIZE', 'CPU_RECURRENCES', 'MIN_TRITON',
]

SCAN_BACKENDS = ('auto', 'torch', 'numba', 'triton', 'cuda')
ENV_BACKEND = 'GMAMBA_ZOO_SCAN_BACKEND'
DEFAULT_CHUNK_SIZE = None  # torch: chosen from the step size by auto_chunk_size; numba/triton: KERNEL_CHUNK_SIZE
KERNEL_CHUNK_SIZE = 64  # steps between the states the numba and Triton kernels save for their backward
# The oldest Triton release our kernels compile with (scripts/compile_triton_kernels.py; docs/gpu.md): 2.3 has no
# multi-operand tl.associative_scan and no tl.flip.
MIN_TRITON = '3.0.0'

_state = threading.local()
_global_backend: Optional[str] = None


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context with autocast disabled on ``device_type``, for float32 islands (a no-op where autocast does not exist,
    e.g. the meta device)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _check_backend_name(name: str) -> str:
    if name not in SCAN_BACKENDS:
        raise ValueError(f"Unknown scan backend {name!r}; expected one of {SCAN_BACKENDS}.")
    return name


def set_scan_backend(name: Optional[str]) -> None:
    """Set the process-wide scan backend (``'auto'``, ``'torch'`` or ``'cuda'``); ``None`` restores the default."""
    global _global_backend
    _global_backend = None if name is None else _check_backend_name(name)


def get_scan_backend() -> str:
    """The backend requested by the context manager, :func:`set_scan_backend` or the env var (else ``'auto'``)."""
    name = getattr(_state, 'backend', None) or _global_backend or os.environ.get(ENV_BACKEND) or 'auto'
    return _check_backend_name(name)


@contextlib.contextmanager
def scan_backend(name: str) -> Iterator[None]:
    """Context manager selecting the scan backend for the current thread.

    Example:
        >>> with scan_backend('torch'):
        ...     y = model(x)  # pure-PyTorch scan even on CUDA
    """
    prev = getattr(_state, 'backend', None)
    _state.backend = _check_backend_name(name)
    try:
        yield
    finally:
        _state.backend = prev


class _OptionalModule:
    """A module imported on first use, once; ``error`` says why it could not be (ImportError, a broken CUDA build,
    numba refusing this NumPy version, ...), and ``not_installed`` whether that is a package that is not installed
    (rather than one that is but fails, e.g. numba finding no writable cache directory)."""

    def __init__(self, name: str):
        self.name, self.module, self.error, self.probed = name, None, None, False
        self.not_installed = False
        self._lock = threading.Lock()

    def get(self):
        if not self.probed:
            # Threads making their first scan together must all wait for the one import: ``probed`` is set only once
            # ``module``/``error`` hold its outcome, else a second thread reads "probed, no module" mid-import.
            with self._lock:
                if not self.probed:
                    try:
                        self.module = importlib.import_module(self.name)
                    except Exception as e:
                        self.module, self.error = None, f'{type(e).__name__}: {e}'
                        missing = getattr(e, 'name', None) if isinstance(e, ModuleNotFoundError) else None
                        self.not_installed = bool(missing) and not missing.startswith('gmamba_zoo')
                    self.probed = True
        return self.module


_cuda_kernel = _OptionalModule('selective_scan_cuda')  # mamba-ssm's compiled extension
_numba_kernel = _OptionalModule('gmamba_zoo.ops.numba_scan')
_triton_kernel = _OptionalModule('gmamba_zoo.ops.triton_scan')
# backend -> (its module, the package a user installs for it)
_KERNELS = {'cuda': (_cuda_kernel, 'mamba-ssm (`pip install gmamba-zoo[cuda]`)'),
            'numba': (_numba_kernel, 'numba (`pip install numba`)'),
            'triton': (_triton_kernel, 'triton (it ships with the CUDA build of torch)')}
_AUTO_ORDER = {'cuda': ('cuda', 'triton'), 'cpu': ('numba',)}  # tried in this order before 'torch'
_warned: set = set()


def cuda_kernel_available() -> bool:
    """Whether mamba-ssm's ``selective_scan_cuda`` extension imports in this environment."""
    return _cuda_kernel.get() is not None


def _version_tuple(version: str) -> Tuple[int, ...]:
    """'3.1.0+git1a2b' -> (3, 1, 0), '3.1' -> (3, 1, 0): the leading numeric release, at least three parts."""
    m = re.match(r'\d+(\.\d+)*', version.strip())
    parts = tuple(int(p) for p in m.group(0).split('.')) if m else ()
    return parts + (0,) * (3 - len(parts))


def _old_triton() -> Optional[str]:
    """The installed Triton's version when it is older than :data:`MIN_TRITON`, else None."""
    import triton  # importable: gmamba_zoo.ops.triton_scan imported it
    version = str(getattr(triton, '__version__', ''))
    return version if _version_tuple(version) < _version_tuple(MIN_TRITON) else None


def _why_not(name: str, device_type: str) -> Optional[str]:
    """Why backend ``name`` cannot run on ``device_type`` tensors here, or None if it can."""
    if name == 'torch':
        return None
    if name in ('cuda', 'triton') and device_type != 'cuda' and not (
            name == 'triton' and device_type == 'cpu' and os.environ.get('TRITON_INTERPRET') == '1'):
        return (f"scan backend {name!r} needs CUDA tensors, got tensors on {device_type}"
                + (" (on CPU only under Triton's interpreter, TRITON_INTERPRET=1)" if name == 'triton' else '') + '.')
    if name == 'numba' and device_type != 'cpu':
        return f"scan backend 'numba' needs CPU tensors, got tensors on {device_type}."
    module, package = _KERNELS[name]
    if module.get() is None:
        if not module.not_installed:  # the package is there: never blame its absence
            return (f'scan backend {name!r}: {module.name} does not load although {package.split()[0]} is installed '
                    f'({module.error}).')
        return f'scan backend {name!r} needs {package}, which is not importable here ({module.error}).'
    old = _old_triton() if name == 'triton' else None
    if old is not None:
        return (f"scan backend 'triton' needs triton>={MIN_TRITON}, found triton {old} (upgrade it with "
                f"`pip install -U 'triton>={MIN_TRITON}'`).")
    if name == 'triton' and device_type == 'cpu' and not module.module.interpreted():
        return ("scan backend 'triton' on CPU needs TRITON_INTERPRET=1 set before gmamba_zoo.ops.triton_scan is "
                'first imported.')
    return None


# The outcome of the Triton kernels' first launch on each device and variant ((str(device), variant) -> None or the
# error), once a process.
_triton_launches: dict = {}
_triton_launch_lock = threading.Lock()

# A scan's kernel variant: what decides which Triton kernels a call compiles (its blocks follow from the width and
# the state size; its flags from the optional inputs; its pointer types from the dtype): (dim, d_state, has D,
# has z, has delta_bias, softplus, dtype). A variant of None probes the mixers' usual one.
_Variant = Tuple[int, int, bool, bool, bool, bool, str]
_PROBE_DEFAULT: _Variant = (64, 16, True, True, True, True, 'float32')
_PROBE_MAX_DIM = 1024  # the kernels' blocks stop growing with the width long before this


def _variant(u: Tensor, A: Tensor, D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
             softplus: bool) -> Optional[_Variant]:
    """The kernel variant of a call, or None when its sizes are symbolic (tracing with dynamic shapes)."""
    dim, dstate = u.shape[1], A.shape[1]
    if not (isinstance(dim, int) and isinstance(dstate, int)):
        return None
    return (min(dim, _PROBE_MAX_DIM), dstate, D is not None, z is not None, delta_bias is not None, bool(softplus),
            str(u.dtype).replace('torch.', ''))


def _probe_triton(device: torch.device, variant: Optional[_Variant] = None) -> None:
    """Launch the Triton forward and backward kernels once on tiny inputs of ``variant`` on ``device`` (64 steps,
    batch 1, the call's width, state size, optional inputs and dtype, so the same kernels compile); raises what they
    raise. Runs outside any dispatch mode (FakeTensorMode, a tracer's): it needs real tensors.
    """
    from torch.utils._python_dispatch import _disable_current_modes

    ts = _triton_kernel.module
    d, n, has_d, has_z, has_bias, softplus, dtype = variant or _PROBE_DEFAULT
    with _disable_current_modes(), torch.no_grad():
        g = torch.Generator().manual_seed(0)
        b, L = 1, KERNEL_CHUNK_SIZE
        r = lambda *shape, dt=getattr(torch, dtype): torch.randn(*shape, generator=g).to(device, dt)
        u, delta, B, C, dout = r(b, d, L), r(b, d, L), r(b, n, L), r(b, n, L), r(b, d, L)
        z = r(b, d, L) if has_z else None
        A = (-torch.rand(d, n, generator=g) - 0.5).to(device)
        D, bias = (r(d, dt=torch.float32) if has_d else None), (r(d, dt=torch.float32) if has_bias else None)
        out, ckpt = ts.scan_fwd(u, delta, A, B, C, D, z, bias, softplus, KERNEL_CHUNK_SIZE)
        grads = ts.scan_bwd(dout, u, delta, A, B, C, D, z, bias, ckpt, softplus, KERNEL_CHUNK_SIZE)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)  # a failed launch may only surface here
        if not all(bool(torch.isfinite(t).all()) for t in (out, *grads) if t is not None):
            raise RuntimeError('the Triton kernels ran but returned non-finite values on finite inputs')


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current device>`` where a GPU is present; other devices unchanged."""
    if device.type == 'cuda' and device.index is None and torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return device


def _triton_launch_error(device: torch.device, variant: Optional[_Variant] = None) -> Optional[str]:
    """Why the Triton kernels of ``variant`` failed to launch on ``device`` (from :func:`_probe_triton`, run once per
    device and variant and cached for the process), or None when they ran or there is no real GPU to launch on (fake
    CUDA tensors)."""
    if device.type == 'cuda' and not torch.cuda.is_available():
        return None
    device = _indexed(device)
    key = (str(device), variant)
    if key not in _triton_launches:
        with _triton_launch_lock:
            if key not in _triton_launches:
                try:
                    _probe_triton(device, variant)
                    _triton_launches[key] = None
                except Exception as e:  # any failure: CompilationError, OutOfResources, a driver error, ...
                    msg = str(e).strip()
                    _triton_launches[key] = f'{type(e).__name__}: {msg[:500]}{"..." if len(msg) > 500 else ""}'
    return _triton_launches[key]


_CUDA_MAX_DSTATE = 256  # mamba-ssm's selective_scan_cuda refuses larger states (its TORCH_CHECK)


def _cuda_kernel_refuses(name: str, variant: Optional[_Variant]) -> Optional[str]:
    """Why mamba-ssm's kernel would refuse a scan of ``variant`` (a state size above its limit), or None."""
    if name == 'cuda' and variant is not None and variant[1] > _CUDA_MAX_DSTATE:
        return (f"scan backend 'cuda' (mamba-ssm's kernel) takes d_state <= {_CUDA_MAX_DSTATE}, got "
                f'{variant[1]}.')
    return None


def resolve_scan_backend(device: Union[torch.device, str], backend: Optional[str] = None,
                         variant: Optional[_Variant] = None) -> str:
    """Which backend runs for tensors on ``device``: ``'torch'``, ``'numba'``, ``'triton'`` or ``'cuda'``.

    ``'auto'`` picks cuda > triton > torch for CUDA tensors and numba > torch on CPU; a backend it passes over for a
    reason the user can fix (a missing package, a Triton older than :data:`MIN_TRITON`) is named once in a
    ``RuntimeWarning``. The first time it would pick Triton on a GPU for a kernel variant it launches the Triton
    kernels of that variant there once (:func:`_probe_triton`); if that raises, it warns once with the error and
    picks ``'torch'`` for that GPU and variant for the rest of the process.

    Args:
        device: Device of the scan's inputs.
        backend: Explicit request; ``None`` uses :func:`get_scan_backend`.
        variant: The call's kernel variant (width, state size, optional inputs, softplus, dtype), which decides the
            Triton kernels it compiles; None stands for the mixers' usual one.

    Raises:
        RuntimeError: A backend requested by name cannot run here; the message says why (device, missing package,
            an old Triton, the Triton kernels' failed launch on this device).
    """
    name = _check_backend_name(backend) if backend is not None else get_scan_backend()
    device = torch.device(device)
    device_type = device.type
    if name != 'auto':
        why = _why_not(name, device_type) or _cuda_kernel_refuses(name, variant)
        if why is None and name == 'triton' and device_type == 'cuda':
            failed = _triton_launches.get((str(_indexed(device)), variant))  # only an earlier auto probe's verdict
            why = None if failed is None else (f"scan backend 'triton' cannot run on {_indexed(device)}: its kernels "
                                               f'failed to launch there ({failed}).')
        if why is not None:
            raise RuntimeError(f'{why[0].upper()}{why[1:]} Choose another backend (e.g. `torch`, which runs '
                               f'everywhere) with scan_backend()/set_scan_backend() or {ENV_BACKEND}.')
        return name
    for candidate in _AUTO_ORDER.get(device_type, ()):
        why = _why_not(candidate, device_type)
        if why is None and _cuda_kernel_refuses(candidate, variant):
            continue  # a limit of the kernel, not something to fix: the next backend runs, without a warning
        if why is None and candidate == 'triton' and device_type == 'cuda':
            failed = _triton_launch_error(device, variant)
            if failed is not None:
                key = ('triton-launch', str(_indexed(device)))
                if key not in _warned:
                    _warned.add(key)
                    warnings.warn(f"The Triton selective-scan kernels failed on {_indexed(device)} ({failed}); "
                                  "scan backend 'auto' uses the PyTorch scan ('torch': correct, slower) there "
                                  "from now on for every scan whose kernels fail (each kind of scan is tried once; "
                                  "this is said once). A Triton or driver mismatch is the usual cause (docs/gpu.md); "
                                  f"scan_backend('triton') raises this error.", RuntimeWarning, stacklevel=3)
                continue
        if why is None:
            return candidate
        if (candidate, device_type) not in _warned:
            _warned.add((candidate, device_type))
            warnings.warn(f"{why[0].upper()}{why[1:]} The selective scan falls back to the next backend "
                          f'(correct, slower).', RuntimeWarning, stacklevel=3)
    return 'torch'


@torch.compiler.assume_constant_result
def _resolve_while_compiling(device_type: str, backend: Optional[str], variant: Optional[_Variant] = None) -> str:
    """:func:`resolve_scan_backend` run once while torch.compile or torch.export traces, its answer a constant of the
    graph: the first probe of an optional kernel imports it under a lock, which the tracer cannot enter (a graph
    break, an error with ``fullgraph=True`` or in torch.export). A compiled graph keeps the backend it was traced with.
    """
    return resolve_scan_backend(device_type, backend, variant)


# ----------------------------------------------------------------------------------------------------------------
# Pure-PyTorch chunked scan
# ----------------------------------------------------------------------------------------------------------------

# The step loops of the recurrences: one ``addcmul_`` per step from Python, or one compiled call per chunk when the
# optional numba package is installed (same arithmetic, same order; over ten times less time per step at small steps).
ENV_CPU_RECURRENCE = 'GMAMBA_ZOO_CPU_RECURRENCE'
CPU_RECURRENCES = ('auto', 'numba', 'python')
_numba_loops = _OptionalModule('gmamba_zoo.ops._numba_recurrence')


def cpu_recurrence() -> str:
    """Which loop runs the PyTorch scan's recurrences on CPU: ``'numba'`` or ``'python'``.

    ``GMAMBA_ZOO_CPU_RECURRENCE`` chooses: ``auto`` (default: numba when it imports), ``numba`` (an error without it)
    or ``python``. Results agree to float32 rounding; only the speed differs. Install numba with
    ``pip install gmamba-zoo[cpu]``.
    """
    choice = os.environ.get(ENV_CPU_RECURRENCE, 'auto').lower()
    if choice not in CPU_RECURRENCES:
        raise ValueError(f'{ENV_CPU_RECURRENCE} must be one of {CPU_RECURRENCES}, got {choice!r}.')
    if choice == 'python':
        return 'python'
    if _numba_loops.get() is None:
        if choice == 'numba' and not _numba_loops.not_installed:
            raise RuntimeError(f'{ENV_CPU_RECURRENCE}=numba but the compiled loops ({_numba_loops.name}) do not load '
                               f'although numba is installed ({_numba_loops.error}).')
        if choice == 'numba':
            raise RuntimeError(f'{ENV_CPU_RECURRENCE}=numba but numba is not importable ({_numba_loops.error}). '
                               'Install it with `pip install gmamba-zoo[cpu]`.')
        return 'python'
    return 'numba'


# Above this many elements per step (B * N * D) the steps are memory-bound and PyTorch's multi-threaded operations
# fill a chunk faster than the serial compiled loop, while dispatch no longer dominates (docs/scan-benchmark.md).
_COMPILED_MAX_STEP = 16384


def _loops_for(device: torch.device, step_elements: int):
    """The compiled loops for steps of ``step_elements`` on ``device``, or None for PyTorch ops and the Python loop."""
    if device.type != 'cpu' or step_elements > _COMPILED_MAX_STEP:
        return None
    return _numba_loops.module if cpu_recurrence() == 'numba' else None


# exp(x) for x < -87.3 is a denormal float, and arithmetic on denormals is ~7x slower on x86 CPUs. Flooring the
# log-decay dt*A at -80 keeps every decay a normal float; the decay it replaces is below exp(-80) = 1.8e-35, so each
# state changes by less than 1.8e-35 times its previous value.
_LOG_DECAY_FLOOR = -80.0


def _chunk_inputs(u, delta, delta_bias, softplus: bool, t0: int, t1: int) -> Tuple[Tensor, Tensor, Tensor]:
    """u, raw (biased) delta and effective delta of one chunk, float32, time-major [n, B, D] and contiguous."""
    uc = u[:, :, t0:t1].float().permute(2, 0, 1).contiguous()
    raw = delta[:, :, t0:t1].float().permute(2, 0, 1)
    raw = raw + delta_bias.float() if delta_bias is not None else raw.contiguous()
    return uc, raw, (F.softplus(raw) if softplus else raw)


def _chunk_bc(x: Tensor, t0: int, t1: int) -> Tensor:
    """[B, N, L] slice -> [n, B, N] float32, contiguous."""
    return x[..., t0:t1].float().permute(2, 0, 1).contiguous()


class _Workspace:
    """Time-major [T, B, N, D] float32 buffers reused by every chunk, with their per-step views made once.

    Time leads so that each step of the recurrence reads and writes one contiguous [B, N, D] block; D is the
    innermost dimension so that the contractions over N (with C, with B, with A) are fast batched GEMVs or
    reductions over a middle dimension.
    """

    def __init__(self, count: int, chunk: int, b: int, n: int, d: int, device: torch.device):
        self.bufs = [torch.empty(chunk, b, n, d, device=device, dtype=torch.float32) for _ in range(count)]
        self._steps: Optional[List[Tuple[Tensor, ...]]] = None

    @property
    def steps(self) -> List[Tuple[Tensor, ...]]:
        """Per-step [B, N, D] views of each buffer, made on first use (a view costs about a microsecond)."""
        if self._steps is None:
            self._steps = [buf.unbind(0) for buf in self.bufs]
        return self._steps


# Auto chunk size: as many steps as fill about this many elements per [T, B, N, D] buffer (512 KiB: cache-sized).
_CHUNK_ELEMENTS = 131072


def auto_chunk_size(step_elements: int) -> int:
    """Default chunk length for steps of ``B * N * D`` elements: a power of two in [64, 1024]."""
    target = max(_CHUNK_ELEMENTS // max(int(step_elements), 1), 1)
    return int(min(max(2 ** (target.bit_length() - 1), 64), 1024))


def _abs_max(x: Tensor) -> float:
    """max |x|, 0 for an empty tensor (an empty batch or no channels)."""
    return float(x.abs().max()) if x.numel() else 0.0


def _fill_chunk(ws: _Workspace, At: Tensor, u: Tensor, dt: Tensor, Bc: Tensor, h0: Tensor, a_max: Optional[float],
                loops=None) -> None:
    """Decays a_t = exp(dt_t A) into buffer 0 and states h_t into buffer 1 for one chunk.

    Args:
        At: [N, D] float32 (A transposed), contiguous.
        u: [n, B, D] float32.
        dt: [n, B, D] effective delta.
        Bc: [n, B, N].
        h0: [B, N, D] state before the chunk.
        a_max: max |A|, to tell whether the log-decay floor can be reached in this chunk; None always floors (off
            the CPU, where reading max |dt| back would stall the device: the floor costs less than the sync).
        loops: The compiled loops (:func:`_loops_for`), or None for PyTorch ops and the Python step loop.
    """
    n = u.shape[0]
    dec, hs = ws.bufs[0][:n], ws.bufs[1][:n]
    if loops is not None:
        loops.fill_chunk_(dec.numpy(), hs.numpy(), dt.numpy(), u.numpy(), At.numpy(), Bc.numpy())
    else:
        torch.mul(dt.unsqueeze(2), At, out=dec)
        torch.mul((dt * u).unsqueeze(2), Bc.unsqueeze(3), out=hs)
    if a_max is None or _abs_max(dt) * a_max > -_LOG_DECAY_FLOOR:  # only then can a log-decay fall below the floor
        dec.clamp_min_(_LOG_DECAY_FLOOR)
    dec.exp_()
    if loops is not None:
        loops.recurrence_forward_(hs.view(n, -1).numpy(), dec.view(n, -1).numpy(), h0.reshape(-1).numpy())
        return
    dsteps, hsteps = ws.steps[0], ws.steps[1]
    hsteps[0].addcmul_(dsteps[0], h0)
    for t in range(1, n):
        hsteps[t].addcmul_(dsteps[t], hsteps[t - 1])


def _sum_n(x: Tensor, w: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """sum_N x * w: x [n, B, N, D], w [n, B, N] -> [n, B, D] (into ``out``, contiguous, when given)."""
    n, b, N, d = x.shape
    res = None if out is None else out.view(n * b, 1, d)
    return torch.bmm(w.reshape(n * b, 1, N), x.reshape(n * b, N, d), out=res).view(n, b, d)


def _sum_d(x: Tensor, w: Tensor) -> Tensor:
    """sum_D x * w: x [n, B, N, D], w [n, B, D] -> [B, N, n]."""
    n, b, N, d = x.shape
    return torch.bmm(w.reshape(n * b, 1, d), x.reshape(n * b, N, d).transpose(1, 2)).view(n, b, N).permute(1, 2, 0)


def _scan_fwd_torch(u, delta, A, B, C, D, z, delta_bias, softplus: bool, chunk: int) -> Tuple[Tensor, Tensor]:
    bsz, d, L = u.shape
    N = A.shape[1]
    At = A.float().t().contiguous()
    a_max = _abs_max(At) if u.device.type == 'cpu' else None  # no host sync on a GPU
    n_chunks = -(-L // chunk)
    ws = _Workspace(2, min(chunk, L), bsz, N, d, u.device)
    loops = _loops_for(u.device, bsz * N * d)
    ckpt = u.new_zeros((n_chunks + 1, bsz, N, d), dtype=torch.float32)  # state entering each chunk, and the last
    # Time-major copies of the whole sequence, made once: per chunk only views are taken (backward, which must
    # keep its peak memory low, converts one chunk at a time instead).
    ut, _, dtt = _chunk_inputs(u, delta, delta_bias, softplus, 0, L)
    Bt, Ct = _chunk_bc(B, 0, L), _chunk_bc(C, 0, L)
    yt = u.new_empty((L, bsz, d), dtype=torch.float32)
    for k in range(n_chunks):
        t0, t1 = k * chunk, min((k + 1) * chunk, L)
        _fill_chunk(ws, At, ut[t0:t1], dtt[t0:t1], Bt[t0:t1], ckpt[k], a_max, loops)
        ckpt[k + 1].copy_(ws.bufs[1][t1 - t0 - 1])
        _sum_n(ws.bufs[1][:t1 - t0], Ct[t0:t1], out=yt[t0:t1])
    if D is not None:
        yt.addcmul_(ut, D.float())
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    if z is not None:
        return torch.mul(yt.permute(1, 2, 0), F.silu(z.float()), out=out), ckpt
    return out.copy_(yt.permute(1, 2, 0)), ckpt


def _scan_bwd_torch(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, softplus: bool, chunk: int):
    bsz, d, L = u.shape
    N = A.shape[1]
    At = A.float().t().contiguous()
    a_max = _abs_max(At) if u.device.type == 'cpu' else None  # no host sync on a GPU
    n_chunks = ckpt.shape[0] - 1
    ws = _Workspace(4, min(chunk, L), bsz, N, d, u.device)  # decay, state, adjoint, scratch
    loops = _loops_for(u.device, bsz * N * d)
    du = torch.empty_like(u, memory_format=torch.contiguous_format)
    ddelta = torch.empty_like(delta, memory_format=torch.contiguous_format)
    dB = torch.empty_like(B, memory_format=torch.contiguous_format)
    dC = torch.empty_like(C, memory_format=torch.contiguous_format)
    dz = torch.empty_like(z, memory_format=torch.contiguous_format) if z is not None else None
    dAt = torch.zeros_like(At)
    dD = torch.zeros(d, device=u.device, dtype=torch.float32) if D is not None else None
    dbias = torch.zeros(d, device=u.device, dtype=torch.float32) if delta_bias is not None else None
    Df = D.float() if D is not None else None
    carry = u.new_zeros((bsz, N, d), dtype=torch.float32)  # a_{t+1} * g_{t+1} entering from the next chunk
    for k in reversed(range(n_chunks)):
        t0, t1 = k * chunk, min((k + 1) * chunk, L)
        n = t1 - t0
        uc, raw, dt = _chunk_inputs(u, delta, delta_bias, softplus, t0, t1)
        Bc, Cc = _chunk_bc(B, t0, t1), _chunk_bc(C, t0, t1)
        _fill_chunk(ws, At, uc, dt, Bc, ckpt[k], a_max, loops)
        dec, hs, gs, tmp = (buf[:n] for buf in ws.bufs)
        dy = dout[:, :, t0:t1].float().permute(2, 0, 1)
        if z is not None:
            zc = z[:, :, t0:t1].float().permute(2, 0, 1)
            y = _sum_n(hs, Cc)
            if D is not None:
                y = y.addcmul_(uc, Df)
            sig = torch.sigmoid(zc)
            dz[:, :, t0:t1] = (dy * y * sig * (1 + zc * (1 - sig))).permute(1, 2, 0)
            dy = dy * zc * sig
        dy = dy.contiguous()
        dC[..., t0:t1] = _sum_d(hs, dy)
        # adjoint recurrence: g_t = dy_t C_t + a_{t+1} g_{t+1}
        torch.mul(dy.unsqueeze(2), Cc.unsqueeze(3), out=gs)
        gs[n - 1].add_(carry)
        if loops is not None:
            loops.recurrence_reverse_(gs.view(n, -1).numpy(), dec.view(n, -1).numpy())
        else:
            gsteps, dsteps = ws.steps[2], ws.steps[0]
            for t in range(n - 2, -1, -1):
                gsteps[t].addcmul_(dsteps[t + 1], gsteps[t + 1])
        torch.mul(dec[0], gs[0], out=carry)
        # P_t = g_t * a_t * h_{t-1}: the gradient with respect to dt_t * A
        p = dec.mul_(gs)
        p[1:].mul_(hs[:n - 1])
        p[0].mul_(ckpt[k])
        dAt += torch.mul(p, dt.unsqueeze(2), out=tmp).sum((0, 1))
        ddt = torch.mul(p, At, out=tmp).sum(2)
        # through dt_t * B_t * u_t
        gB = _sum_n(gs, Bc)
        dB[..., t0:t1] = _sum_d(gs, dt * uc)
        ddt.addcmul_(gB, uc)
        duc = gB.mul_(dt)
        if D is not None:
            duc.addcmul_(dy, Df)
            dD += (dy * uc).sum((0, 1))
        if softplus:
            ddt.mul_(torch.sigmoid(raw))
        if dbias is not None:
            dbias += ddt.sum((0, 1))
        du[:, :, t0:t1] = duc.permute(1, 2, 0)
        ddelta[:, :, t0:t1] = ddt.permute(1, 2, 0)
    return du, ddelta, dAt.t(), dB, dC, dD, dz, dbias


# ----------------------------------------------------------------------------------------------------------------
# mamba-ssm CUDA kernel
# ----------------------------------------------------------------------------------------------------------------

_CUDA_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _cuda_input_dtype(u: Tensor, delta: Tensor, B: Tensor, C: Tensor, z: Optional[Tensor]) -> torch.dtype:
    """The one input type selective_scan_cuda takes for u, delta, B, C and z (it refuses mixed or float64 ones): theirs
    when they share one it takes (the models' case: no copy), else float32, the arithmetic's type."""
    same = all(t is None or t.dtype == u.dtype for t in (delta, B, C, z))
    return u.dtype if same and u.dtype in _CUDA_INPUT_DTYPES else torch.float32


def _cuda_args(u, delta, A, B, C, D, z, delta_bias) -> tuple:
    """The scan's arguments as selective_scan_cuda checks them: u, delta, B, C and z in one input type and contiguous
    along L, B and C as [B, 1, N, L] (one group); A, D and delta_bias float32 (its only real weight type)."""
    itype = _cuda_input_dtype(u, delta, B, C, z)
    inp = lambda t: None if t is None else t.to(itype).contiguous()
    weight = lambda t: None if t is None else t.to(torch.float32).contiguous()
    return (inp(u), inp(delta), weight(A), inp(B).unsqueeze(1), inp(C).unsqueeze(1), weight(D), inp(z),
            weight(delta_bias))


def _scan_fwd_cuda(u, delta, A, B, C, D, z, delta_bias, softplus: bool):
    # fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> [out, x] (+ [out * silu(z)] with z)
    out, x, *rest = _cuda_kernel.get().fwd(*_cuda_args(u, delta, A, B, C, D, z, delta_bias), softplus)
    if z is not None:
        return rest[0].to(u.dtype), x, out  # out: the pre-gate output the backward needs, in the kernel's input type
    return out.to(u.dtype), x, u.new_empty(0)


def _scan_bwd_cuda(dout, u, delta, A, B, C, D, z, delta_bias, x, y_pre, softplus: bool):
    args = _cuda_args(u, delta, A, B, C, D, z, delta_bias)
    # bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z)
    #   -> [du, ddelta, dA, dB, dC, dD, ddelta_bias] (+ [dz] with z); dD or ddelta_bias is None without D or delta_bias
    du, ddelta, dA, dB, dC, dD, dbias, *rest = _cuda_kernel.get().bwd(
        *args, dout.to(args[0].dtype).contiguous(), x, y_pre if z is not None else None, None, softplus, False)
    return du, ddelta, dA, dB.squeeze(1), dC.squeeze(1), dD, (rest[0] if z is not None else None), dbias


# ----------------------------------------------------------------------------------------------------------------
# Custom ops
# ----------------------------------------------------------------------------------------------------------------

def _cuda_ckpt_shape(u: Tensor, A: Tensor) -> Tuple[int, ...]:
    return u.shape[0], u.shape[1], -(-u.shape[2] // 2048), 2 * A.shape[1]


@torch.library.custom_op('gmamba_zoo::selective_scan', mutates_args=())
def _selective_scan_op(
        u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
        delta_bias: Optional[Tensor], delta_softplus: bool, chunk_size: int, backend: str,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns (out [B, D, L], state checkpoints, pre-gate output or an empty tensor)."""
    if backend == 'cuda':
        return _scan_fwd_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend in ('numba', 'triton'):
        out, ckpt = _KERNELS[backend][0].module.scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
        return out, ckpt, u.new_empty(0)
    with autocast_off(u.device.type):  # a float32 island: the caller's autocast must not reach its matmuls
        out, ckpt = _scan_fwd_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
    return out, ckpt, u.new_empty(0)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, backend):
    out = u.new_empty(u.shape)
    if backend == 'cuda':
        y_pre = u.new_empty(u.shape, dtype=_cuda_input_dtype(u, delta, B, C, z)) if z is not None else u.new_empty(0)
        return out, u.new_empty(_cuda_ckpt_shape(u, A), dtype=torch.float32), y_pre
    n_chunks = -(-u.shape[2] // chunk_size)
    # the state entering each chunk and the last one: [n + 1, B, N, D] (torch) or [n + 1, B, D, N] (the kernels)
    inner = (A.shape[1], u.shape[1]) if backend == 'torch' else (u.shape[1], A.shape[1])
    return out, u.new_empty((n_chunks + 1, u.shape[0]) + inner, dtype=torch.float32), u.new_empty(0)


@torch.library.custom_op('gmamba_zoo::selective_scan_bwd', mutates_args=())
def _selective_scan_bwd_op(
        dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
        z: Optional[Tensor], delta_bias: Optional[Tensor], ckpt: Tensor, y_pre: Tensor, delta_softplus: bool,
        chunk_size: int, backend: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); an absent input's gradient is an empty tensor."""
    if backend == 'cuda':
        grads = _scan_bwd_cuda(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, y_pre, delta_softplus)
    elif backend in ('numba', 'triton'):
        grads = _KERNELS[backend][0].module.scan_bwd(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus,
                                                     chunk_size)
    else:
        with autocast_off(u.device.type):
            grads = _scan_bwd_torch(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus, chunk_size)
    refs = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(u.new_empty(0) if g is None else g.to(r.dtype) for g, r in zip(grads, refs))


@_selective_scan_bwd_op.register_fake
def _(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, y_pre, delta_softplus, chunk_size, backend):
    refs = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(u.new_empty(0) if r is None else torch.empty_like(r, memory_format=torch.contiguous_format)
                 for r in refs)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, backend = inputs
    _, ckpt, y_pre = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt, y_pre)
    ctx.opts = (delta_softplus, chunk_size, backend)
    ctx.mark_non_differentiable(ckpt, y_pre)


def _backward(ctx, dout, _dckpt, _dy_pre):
    u, delta, A, B, C, D, z, delta_bias, ckpt, y_pre = ctx.saved_tensors
    grads = _selective_scan_bwd_op(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, y_pre, *ctx.opts)
    refs = (u, delta, A, B, C, D, z, delta_bias)
    grads = tuple(None if r is None else g for g, r in zip(grads, refs))
    return grads + (None, None, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------

def _validate(u, delta, A, B, C, D, z, delta_bias) -> Tuple[Tensor, Tensor]:
    """Check shapes and dtypes; return B and C as [B, N, L]."""
    for name, t in (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D), ('z', z),
                    ('delta_bias', delta_bias)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f'selective_scan_fn: {name} must be a floating-point tensor, got {t.dtype}.')
        if t is not None and t.is_complex():
            raise TypeError(f'selective_scan_fn: complex {name} is not supported.')
    if u.dim() != 3:
        raise ValueError(f'selective_scan_fn: u must be [batch, dim, length], got shape {tuple(u.shape)}.')
    bsz, d, L = u.shape
    if L == 0:
        raise ValueError('selective_scan_fn: the sequence length must be at least 1.')
    if delta.shape != u.shape:
        raise ValueError(f'selective_scan_fn: delta must have the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}.')
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f'selective_scan_fn: A must be [dim={d}, d_state], got {tuple(A.shape)}.')
    N = A.shape[1]
    out = []
    for name, t in (('B', B), ('C', C)):
        if t.dim() == 4 and t.shape[1] == 1:
            t = t.squeeze(1)
        if t.dim() != 3 or tuple(t.shape) != (bsz, N, L):
            raise ValueError(
                f'selective_scan_fn: {name} must be input-dependent, [batch={bsz}, d_state={N}, length={L}] '
                f'(or [batch, 1, d_state, length]; several groups are not supported), got {tuple(t.shape)}.')
        out.append(t)
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (d,):
            raise ValueError(f'selective_scan_fn: {name} must be [dim={d}], got {tuple(t.shape)}.')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'selective_scan_fn: z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape)}.')
    for name, t in (('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D), ('z', z), ('delta_bias', delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f'selective_scan_fn: {name} is on {t.device}, u on {u.device}; all must share a device.')
    return out[0], out[1]


def selective_scan_fn(
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Optional[Tensor] = None,
        z: Optional[Tensor] = None,
        delta_bias: Optional[Tensor] = None,
        delta_softplus: bool = False,
        return_last_state: bool = False,
        *,
        backend: Optional[str] = None,
        chunk_size: Optional[int] = DEFAULT_CHUNK_SIZE,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Selective scan with the signature of ``mamba_ssm.selective_scan_fn``.

    Args:
        u: Input, [B, D, L].
        delta: Step sizes, [B, D, L].
        A: State matrix diagonal, [D, N], real (normally negative: ``-exp(A_log)``).
        B: Input-dependent input projection, [B, N, L] (or [B, 1, N, L]).
        C: Input-dependent output projection, [B, N, L] (or [B, 1, N, L]).
        D: Skip weight, [D].
        z: Gate, [B, D, L]; the output is multiplied by ``silu(z)``.
        delta_bias: Added to ``delta`` before the softplus, [D].
        delta_softplus: Apply softplus to ``delta + delta_bias``.
        return_last_state: Also return the final state [B, D, N] (float32, no gradient flows through it).
        backend: ``'auto'``, ``'torch'``, ``'numba'``, ``'triton'`` or ``'cuda'``; ``None`` uses
            :func:`get_scan_backend`.
        chunk_size: Steps between the states kept for the backward (memory/speed trade-off; no effect on results
            beyond float32 rounding; mamba-ssm's kernel ignores it). ``None``: chosen from the step size B * N * D for
            the PyTorch backend (:func:`auto_chunk_size`), :data:`KERNEL_CHUNK_SIZE` for the numba and Triton ones.

    Returns:
        ``out`` [B, D, L] in the dtype of ``u``, and the last state when ``return_last_state``.
    """
    if torch.onnx.is_in_onnx_export():
        return _scan_for_onnx(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if torch.jit.is_tracing():  # fvcore's tracer: shapes are already known good, and checks would warn
        B, C = (t.squeeze(1) if t.dim() == 4 else t for t in (B, C))
    else:
        B, C = _validate(u, delta, A, B, C, D, z, delta_bias)
    variant = _variant(u, A, D, z, delta_bias, delta_softplus)
    name = (_resolve_while_compiling(u.device.type, backend, variant) if torch.compiler.is_compiling()
            else resolve_scan_backend(u.device, backend, variant))
    if chunk_size is None and name == 'torch':
        step = u.shape[0] * A.shape[1] * u.shape[1]
        # torch.export with a symbolic batch: size the chunks for one sample rather than specialise on the batch (the
        # chunk trades memory for speed only)
        chunk_size = auto_chunk_size(step if isinstance(step, int) else A.shape[1] * u.shape[1])
    elif chunk_size is None:
        chunk_size = KERNEL_CHUNK_SIZE
    if chunk_size < 1:
        raise ValueError(f'selective_scan_fn: chunk_size must be a positive integer, got {chunk_size}.')
    out, ckpt, _ = _selective_scan_op(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                      int(chunk_size), name)
    if not return_last_state:
        return out
    if name == 'cuda':
        last = ckpt[:, :, -1, 1::2]
    else:
        last = ckpt[-1].transpose(1, 2) if name == 'torch' else ckpt[-1]
    return out, last


def _scan_for_onnx(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, return_last_state: bool) -> Tensor:
    """The scan while ``torch.onnx.export`` traces: the loop-free decomposition of :mod:`.parallel_scan`, which the
    dynamo exporter writes with standard ONNX operators for any batch and length (the custom op has no ONNX form)."""
    if torch.jit.is_tracing():
        raise RuntimeError(
            'gmamba_zoo: the selective scan cannot be exported by the TorchScript-based ONNX exporter '
            '(torch.onnx.export(..., dynamo=False)): it would fix the sequence length. Use '
            'gmamba_zoo.export.export_onnx(model, path) (or `gmamba-zoo export`), or '
            'torch.onnx.export(..., dynamo=True).')
    if return_last_state:
        raise NotImplementedError('selective_scan_fn: return_last_state=True is not supported during ONNX export.')
    B, C = (t.squeeze(1) if t.dim() == 4 else t for t in (B, C))
    return selective_scan_parallel(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))


def selective_scan_ref(
        u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
        z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
        return_last_state: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Reference selective scan: a plain sequential loop over L in float32, differentiable by autograd.

    The test oracle and the speed baseline. Steps with ``unbind`` so that autograd's backward stays linear
    in L. Same arguments and result as :func:`selective_scan_fn`; computes in float64 when ``u`` is float64 (the
    oracle the kernels are held to), in float32 otherwise.
    """
    B, C = _validate(u, delta, A, B, C, D, z, delta_bias)
    bsz, d, L = u.shape
    f = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = delta.to(f)
    if delta_bias is not None:
        dt = dt + delta_bias.to(f)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Af = A.to(f)
    Bx, Cx = B.to(f)[:, None], C.to(f)[:, None]  # [B, 1, N, L]
    h = u.new_zeros((bsz, d, Af.shape[1]), dtype=f)
    ys = []
    for u_t, dt_t, b_t, c_t in zip(u.to(f).unbind(-1), dt.unbind(-1), Bx.unbind(-1), Cx.unbind(-1)):
        h = torch.exp(dt_t[..., None] * Af) * h + (dt_t * u_t)[..., None] * b_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(f)[:, None] * u.to(f)
    if z is not None:
        y = y * F.silu(z.to(f))
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y

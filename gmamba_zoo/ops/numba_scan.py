"""Fused selective-scan CPU kernels, forward and backward, compiled with numba (the optional ``numba`` package).

The recurrence is that of :mod:`gmamba_zoo.ops.selective_scan`, with inputs shaped as in ``mamba_ssm``::

    dt  = softplus(delta + delta_bias)                 # or delta + delta_bias when softplus is off
    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t   # h: [B, D, N]; B_t, C_t shared by all D channels
    y_t = <h_t, C_t> + D * u_t;  out = y * silu(z)     # the gate only when z is given

Each direction is ONE compiled call over the whole sequence. The B*D (batch, channel) pairs are split into one
contiguous block per thread; a thread walks the sequence in chunks of ``chunk`` steps and, within a chunk, its pairs
one after another, with the state vector [N] of the pair in a small local buffer. Walking chunk-major keeps the
chunk's B_t and C_t (and, backward, the thread's gradient partials for them) in cache for all the thread's pairs.
Nothing of size [B, D, L, N] is ever made: forward keeps only the state entering each chunk (``ckpt``); backward
recomputes one chunk of one pair's states at a time from it into a [chunk + 1, N] buffer and runs the adjoint
recurrence ``g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}`` back through it.

The inner loops run over N (states) or over the steps of a chunk and are written so that LLVM vectorises them:
``exp``, ``softplus`` and ``sigmoid`` are evaluated inline by polynomials (:func:`_exp`, :func:`_log1p01`) instead
of libm's scalar calls, which cannot be vectorised without Intel's SVML and were several times slower. Arithmetic is
float32. As in the PyTorch scan the log-decay ``dt * A`` is floored at -80, so that every decay is a normal float
(arithmetic on denormals is several times slower).

numba is imported at import time; :mod:`gmamba_zoo.ops.selective_scan` imports this module lazily. Compiled code is
cached on disk (``cache=True``: numba's ``NUMBA_CACHE_DIR``, else ``__pycache__`` beside this file, else the user's
cache directory). Where none of those is writable the kernels are compiled in every process, after one warning
(:func:`gmamba_zoo.ops._numba_jit.cached_njit`).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Optional, Tuple

import numba
import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import prange
from numba.core import types
from numba.extending import intrinsic
from torch import Tensor

from ._numba_jit import cached_njit

__all__ = ['scan_fwd', 'scan_bwd', 'set_threads']

_f32 = np.float32

# Same floor as the PyTorch scan: exp(-80) = 1.8e-35 is still a normal float32.
_LOG_DECAY_FLOOR = _f32(-80.0)
# exp(88) = 1.65e38 is below float32's maximum; exp(88.7) overflows anyway.
_EXP_CEIL = _f32(88.0)
_LOG2E = _f32(1.0 / math.log(2.0))
# ln 2 split in two (Cody-Waite): _LN2_HI has few significant bits, so k * _LN2_HI is exact for |k| < 2**15.
_LN2_HI = _f32(0.693359375)
_LN2_LO = _f32(math.log(2.0) - 0.693359375)
# Taylor coefficients 1/k! for exp on |r| <= ln(2)/2: the degree-7 remainder is 6e-9, below float32's epsilon.
_E2, _E3, _E4, _E5, _E6, _E7 = (_f32(1.0 / math.factorial(k)) for k in range(2, 8))
# log1p(y) = 2 atanh(s), s = y / (2 + y) in [0, 1/3] for y in [0, 1]: odd series 2 (s + s^3/3 + ... + s^15/15).
_L3, _L5, _L7, _L9, _L11, _L13, _L15 = (_f32(1.0 / k) for k in range(3, 16, 2))
_ZERO, _HALF, _ONE, _TWO = _f32(0.0), _f32(0.5), _f32(1.0), _f32(2.0)
# The state dimension is zero-padded to a multiple of this, and the loops over it run in blocks of this many: a
# constant trip count, which LLVM unrolls and vectorises (one AVX-512 or two AVX2 registers). 8 vectorised worse.
_LANES = np.uint64(16)
# Indices are unsigned throughout the kernels: numba wraps negative signed indices around, and the selects that
# costs keep LLVM from seeing that a block's loads are consecutive, which stops it vectorising them. Mixing signed
# and unsigned integers would give floats in numba, hence the unsigned constants.
_U = np.uint64
_U1 = np.uint64(1)

# Vectorising the reductions over N needs reassociation; the polynomials below are compiled without it (their
# instructions keep their own flags when LLVM inlines them), so that it cannot undo the Cody-Waite split.
_FASTMATH = {'reassoc', 'contract', 'nsz', 'arcp'}
_JIT_HELPER = dict(nogil=True, fastmath={'contract'}, error_model='numpy')
_JIT_KERNEL = dict(nogil=True, parallel=True, fastmath=_FASTMATH, error_model='numpy')


@intrinsic
def _bits_as_f32(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer ``bits`` (an LLVM bitcast: it vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@cached_njit(**_JIT_HELPER)
def _exp(x):  # pragma: no cover - compiled
    """exp(x) for a float32 ``x`` clamped to [-80, 88]: 2^k * p(r), x = k ln2 + r, within about 2 ulp."""
    x = min(max(x, _LOG_DECAY_FLOOR), _EXP_CEIL)
    k = np.floor(x * _LOG2E + _HALF)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = _E7 * r + _E6
    p = p * r + _E5
    p = p * r + _E4
    p = p * r + _E3
    p = p * r + _E2
    p = (p * r + _ONE) * r + _ONE
    return p * _bits_as_f32((np.int32(k) + 127) << 23)


@cached_njit(**_JIT_HELPER)
def _log1p01(y):  # pragma: no cover - compiled
    """log(1 + y) for a float32 ``y`` in [0, 1], accurate in relative terms down to tiny ``y``."""
    s = y / (_TWO + y)
    s2 = s * s
    p = _L15 * s2 + _L13
    p = p * s2 + _L11
    p = p * s2 + _L9
    p = p * s2 + _L7
    p = p * s2 + _L5
    p = p * s2 + _L3
    p = p * s2 + _ONE
    return _TWO * s * p


@cached_njit(**_JIT_HELPER)
def _softplus(x):  # pragma: no cover - compiled
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)) for a float32 ``x``."""
    return max(x, _ZERO) + _log1p01(_exp(-abs(x)))


@cached_njit(**_JIT_HELPER)
def _sigmoid(x):  # pragma: no cover - compiled
    """1 / (1 + exp(-x)) for a float32 ``x``, without overflow for either sign."""
    e = _exp(-abs(x))
    s = _ONE / (_ONE + e)
    return s if x >= _ZERO else e * s


@cached_njit(**_JIT_KERNEL)
def _fwd_kernel(u, delta, a, bt, ct, dskip, z, bias, out, ckpt, softplus, has_z, chunk, n_workers):  # pragma: no cover
    """Forward scan. u, delta, z, out: [B, D, L]; a: [D, Np]; bt, ct: [B, L, Np] (N zero-padded to Np, a multiple of
    _LANES); dskip, bias: [D]; ckpt: [n_chunks + 1, B, D, N], ckpt[0] zero on entry. Writes ``out`` and ckpt[1:]."""
    bsz, dim, length = _U(u.shape[0]), _U(u.shape[1]), _U(u.shape[2])
    n_state, n_blocks = _U(ckpt.shape[3]), _U(a.shape[1]) // _LANES
    n_chunks, chunk, n_workers = _U(ckpt.shape[0] - 1), _U(chunk), _U(n_workers)
    n_pairs = bsz * dim
    for worker in prange(n_workers):
        w = _U(worker)
        dt = np.empty(chunk, np.float32)
        dtu = np.empty(chunk, np.float32)
        y = np.empty(chunk, np.float32)
        h = np.zeros(n_blocks * _LANES, np.float32)
        for k in range(n_chunks):
            t0 = k * chunk
            steps = min(chunk, length - t0)
            for p in range(w * n_pairs // n_workers, (w + _U1) * n_pairs // n_workers):
                b = p // dim
                d = p - b * dim
                bias_d = bias[d]
                for j in range(steps):
                    x = delta[b, d, t0 + j] + bias_d
                    if softplus:
                        x = _softplus(x)
                    dt[j] = x
                    dtu[j] = x * u[b, d, t0 + j]
                for n in range(n_state):
                    h[n] = ckpt[k, b, d, n]
                for j in range(steps):
                    t = t0 + j
                    dtj = dt[j]
                    xj = dtu[j]
                    acc = _ZERO
                    for blk in range(n_blocks):
                        for i in range(_LANES):
                            n = blk * _LANES + i
                            hn = _exp(dtj * a[d, n]) * h[n] + xj * bt[b, t, n]
                            h[n] = hn
                            acc += hn * ct[b, t, n]
                    y[j] = acc
                for n in range(n_state):
                    ckpt[k + _U1, b, d, n] = h[n]
                d_d = dskip[d]
                if has_z:
                    for j in range(steps):
                        zj = z[b, d, t0 + j]
                        out[b, d, t0 + j] = (y[j] + d_d * u[b, d, t0 + j]) * (zj * _sigmoid(zj))
                else:
                    for j in range(steps):
                        out[b, d, t0 + j] = y[j] + d_d * u[b, d, t0 + j]


@cached_njit(**_JIT_KERNEL)
def _bwd_kernel(dout, u, delta, a, bt, ct, dskip, z, bias, ckpt, softplus, has_z, chunk, n_workers,
                du, ddelta, dz, da_pair, dd_pair, dbias_pair, db_part, dc_part, db, dc):  # pragma: no cover
    """Backward scan. Inputs as :func:`_fwd_kernel` plus dout [B, D, L]. Writes du, ddelta (with respect to delta:
    the softplus included), dz: [B, D, L]; per-pair partials da_pair [B, D, Np], dd_pair, dbias_pair [B, D];
    per-worker partials db_part, dc_part [n_workers, B, L, Np] (zero on entry) and their sums db, dc [B, N, L]."""
    bsz, dim, length = _U(u.shape[0]), _U(u.shape[1]), _U(u.shape[2])
    n_state, n_blocks = _U(ckpt.shape[3]), _U(a.shape[1]) // _LANES
    n_chunks, chunk, n_workers = _U(ckpt.shape[0] - 1), _U(chunk), _U(n_workers)
    n_pad = n_blocks * _LANES
    n_pairs = bsz * dim
    for worker in prange(n_workers):
        w = _U(worker)
        p0 = w * n_pairs // n_workers
        p1 = (w + _U1) * n_pairs // n_workers
        dt = np.empty(chunk, np.float32)
        dtu = np.empty(chunk, np.float32)
        dsig = np.empty(chunk, np.float32)  # d dt / d delta: sigmoid(delta + bias) with softplus, else 1
        dy = np.empty(chunk, np.float32)  # gradient with respect to y (before the gate)
        ddt = np.empty(chunk, np.float32)
        hs = np.zeros((chunk + _U1, n_pad), np.float32)  # hs[j] = state before step j of the chunk
        dec = np.empty((chunk, n_pad), np.float32)
        # a_{t+1} * g_{t+1} entering each of the worker's pairs from the chunk after
        carry = np.zeros((max(p1 - p0, _U1), n_pad), np.float32)
        da = np.empty(n_pad, np.float32)  # the pair's dA over the chunk
        for kr in range(n_chunks):
            k = n_chunks - _U1 - kr
            t0 = k * chunk
            steps = min(chunk, length - t0)
            for p in range(p0, p1):
                b = p // dim
                d = p - b * dim
                q = p - p0
                bias_d = bias[d]
                d_d = dskip[d]
                for j in range(steps):
                    x = delta[b, d, t0 + j] + bias_d
                    if softplus:
                        dsig[j] = _sigmoid(x)
                        x = _softplus(x)
                    else:
                        dsig[j] = _ONE
                    dt[j] = x
                    dtu[j] = x * u[b, d, t0 + j]
                for n in range(n_state):
                    hs[0, n] = ckpt[k, b, d, n]
                # recompute the chunk's states (and the pre-gate output, which the gate's gradient needs)
                for j in range(steps):
                    t = t0 + j
                    dtj = dt[j]
                    xj = dtu[j]
                    acc = _ZERO
                    for blk in range(n_blocks):
                        for i in range(_LANES):
                            n = blk * _LANES + i
                            an = _exp(dtj * a[d, n])
                            dec[j, n] = an
                            hn = an * hs[j, n] + xj * bt[b, t, n]
                            hs[j + _U1, n] = hn
                            acc += hn * ct[b, t, n]
                    dy[j] = acc
                if has_z:
                    for j in range(steps):
                        zj = z[b, d, t0 + j]
                        yj = dy[j] + d_d * u[b, d, t0 + j]
                        sg = _sigmoid(zj)
                        gj = dout[b, d, t0 + j]
                        dz[b, d, t0 + j] = gj * yj * sg * (_ONE + zj * (_ONE - sg))
                        dy[j] = gj * zj * sg
                else:
                    for j in range(steps):
                        dy[j] = dout[b, d, t0 + j]
                # adjoint: g_t = dy_t C_t + a_{t+1} g_{t+1}, with a_{t+1} g_{t+1} kept in carry[q]
                for n in range(n_pad):
                    da[n] = _ZERO
                for jr in range(steps):
                    j = steps - _U1 - jr
                    t = t0 + j
                    dyj = dy[j]
                    xj = dtu[j]
                    dtj = dt[j]
                    dx = _ZERO
                    dlog = _ZERO
                    for blk in range(n_blocks):
                        for i in range(_LANES):
                            n = blk * _LANES + i
                            gn = dyj * ct[b, t, n] + carry[q, n]
                            an = dec[j, n]
                            pn = gn * an * hs[j, n]  # dL/d(dt_t A_n)
                            dlog += pn * a[d, n]
                            da[n] += pn * dtj
                            dx += gn * bt[b, t, n]
                            db_part[w, b, t, n] += gn * xj
                            dc_part[w, b, t, n] += dyj * hs[j + _U1, n]
                            carry[q, n] = an * gn
                    ddt[j] = (dx * u[b, d, t] + dlog) * dsig[j]
                    du[b, d, t] = dx * dtj + dyj * d_d
                for n in range(n_pad):
                    da_pair[b, d, n] += da[n]
                sd = _ZERO
                sb = _ZERO
                for j in range(steps):
                    sd += dy[j] * u[b, d, t0 + j]
                    sb += ddt[j]
                    ddelta[b, d, t0 + j] = ddt[j]
                dd_pair[b, d] += sd
                dbias_pair[b, d] += sb
    # sum the workers' partials of dB and dC (shared by all D channels), transposing to [B, N, L]
    for bt_index in prange(bsz * length):
        bl = _U(bt_index)
        b = bl // length
        t = bl - b * length
        for n in range(n_state):
            sb = _ZERO
            sc = _ZERO
            for w in range(n_workers):
                sb += db_part[w, b, t, n]
                sc += dc_part[w, b, t, n]
            db[b, n, t] = sb
            dc[b, n, t] = sc


# ----------------------------------------------------------------------------------------------------------------
# Torch entry points
# ----------------------------------------------------------------------------------------------------------------

def set_threads() -> int:
    """Give numba's parallel loops as many threads as PyTorch's intra-op pool has (at most numba's own pool size).

    Returns:
        The thread count now in effect for numba in this thread.
    """
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()


# One kernel call at a time: numba's workqueue threading layer (the one left where neither OpenMP nor TBB loads)
# aborts the process when two Python threads enter parallel code together, and the save/restore of PyTorch's thread
# count below must not interleave. Each call is parallel inside, so serialising callers costs little.
_CALL_LOCK = threading.Lock()


@contextlib.contextmanager
def _threads() -> Iterator[int]:
    """Holds the call lock, sets numba's thread count from PyTorch's (:func:`set_threads`), yields it, and restores
    PyTorch's count.

    numba's OpenMP layer can share PyTorch's libgomp (same soname), and starting numba's pool sets that runtime's
    thread count to numba's default: without the restore, the first kernel call would change
    ``torch.get_num_threads()``.
    """
    with _CALL_LOCK:
        torch_threads = torch.get_num_threads()
        try:
            yield set_threads()
        finally:
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)


def _as_f32(t: Tensor) -> np.ndarray:
    """A contiguous float32 NumPy array of a CPU tensor (shares memory when ``t`` already is one)."""
    if t.device.type != 'cpu':
        raise ValueError(f'the numba scan runs on CPU tensors, got a tensor on {t.device}.')
    if t.dtype == torch.float32 and t.is_contiguous():  # the models' case: no conversion to dispatch
        return t.detach().numpy()
    return t.detach().to(torch.float32).contiguous().numpy()


def _padded_n(n_state: int) -> int:
    """N rounded up to a whole number of SIMD blocks (_LANES)."""
    return -(-n_state // int(_LANES)) * int(_LANES)


def _time_major_n(x: Tensor, n_pad: int) -> np.ndarray:
    """[B, N, L] -> contiguous float32 [B, L, n_pad], zero-padded: each step reads its N values contiguously."""
    n_state = x.shape[1]
    # one pass: the transposed copy with its padding written as it goes (contiguous() copies only if pad kept strides)
    return F.pad(x.detach().to(torch.float32).transpose(1, 2), (0, n_pad - n_state)).contiguous().numpy()


def _operands(u, delta, A, B, C, D, z, delta_bias):
    """The kernels' float32 arrays, with N zero-padded; absent optionals become neutral arrays (zeros, a [1, 1, 1]
    dummy gate) so that every call has the same argument types and compiles once."""
    dim, n_state = A.shape
    n_pad = _padded_n(n_state)
    a = F.pad(A.detach().to(torch.float32), (0, n_pad - n_state)).contiguous().numpy()
    zeros = np.zeros(dim, np.float32)
    return (_as_f32(u), _as_f32(delta), a, _time_major_n(B, n_pad), _time_major_n(C, n_pad),
            zeros if D is None else _as_f32(D), np.zeros((1, 1, 1), np.float32) if z is None else _as_f32(z),
            zeros if delta_bias is None else _as_f32(delta_bias))


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                  z: Optional[Tensor], delta_bias: Optional[Tensor], chunk: int) -> None:
    """The kernels index without bounds checks: refuse shapes that would make them read out of bounds."""
    if u.dim() != 3 or A.dim() != 2 or u.shape[2] < 1 or A.shape[0] != u.shape[1]:
        raise ValueError(f'numba scan: expected u [B, D, L] with L >= 1 and A [D, N], got u {tuple(u.shape)} and '
                         f'A {tuple(A.shape)}.')
    bsz, dim, length = u.shape
    expected = dict(delta=(u.shape, delta), B=((bsz, A.shape[1], length), B), C=((bsz, A.shape[1], length), C),
                    D=((dim,), D), z=(u.shape, z), delta_bias=((dim,), delta_bias))
    for name, (shape, t) in expected.items():
        if t is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f'numba scan: {name} must be {list(shape)}, got {list(t.shape)}.')
    if chunk < 1:
        raise ValueError(f'numba scan: chunk must be a positive integer, got {chunk}.')


def scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
             delta_bias: Optional[Tensor], softplus: bool, chunk: int = 64) -> Tuple[Tensor, Tensor]:
    """Selective scan forward on CPU, float32 inside, in one compiled parallel call.

    Args:
        u: Input, [B, D, L], any float dtype and strides (as are all tensor arguments).
        delta: Step sizes, [B, D, L].
        A: [D, N].
        B: [B, N, L].
        C: [B, N, L].
        D: Skip weight [D], or None.
        z: Gate [B, D, L], or None.
        delta_bias: [D], or None.
        softplus: Apply softplus to ``delta + delta_bias``.
        chunk: Steps between saved states.

    Returns:
        ``out`` [B, D, L] in the dtype of ``u``, and ``ckpt``, float32 [ceil(L / chunk) + 1, B, D, N]: ``ckpt[k]``
        is the state entering steps ``k * chunk ...`` (``ckpt[0]`` is zero) and ``ckpt[-1]`` the last state h_L.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, chunk)
    bsz, dim, length = u.shape
    n_chunks = -(-length // chunk)
    ops = _operands(u, delta, A, B, C, D, z, delta_bias)
    out = torch.empty((bsz, dim, length), dtype=torch.float32)
    ckpt = torch.empty((n_chunks + 1, bsz, dim, A.shape[1]), dtype=torch.float32)
    ckpt[0].zero_()
    with _threads() as threads:
        _fwd_kernel(*ops, out.numpy(), ckpt.numpy(), bool(softplus), z is not None, int(chunk),
                    max(1, min(threads, bsz * dim)))
    return out.to(u.dtype), ckpt


def scan_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             z: Optional[Tensor], delta_bias: Optional[Tensor], ckpt: Tensor, softplus: bool, chunk: int = 64,
             ) -> Tuple[Optional[Tensor], ...]:
    """Selective scan backward on CPU from the forward's checkpoints, in one compiled parallel call.

    Args:
        dout: Gradient of the output, [B, D, L].
        u, delta, A, B, C, D, z, delta_bias, softplus: As given to :func:`scan_fwd`.
        ckpt: The ``ckpt`` :func:`scan_fwd` returned for these inputs, [ceil(L / chunk) + 1, B, D, N].
        chunk: The ``chunk`` given to :func:`scan_fwd`.

    Returns:
        Float32 gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)`` shaped as the inputs ([B, D, L],
        [B, D, L], [D, N], [B, N, L], [B, N, L], [D], [B, D, L], [D]); None for an absent optional input.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, chunk)
    bsz, dim, length = u.shape
    n_state = A.shape[1]
    if tuple(dout.shape) != tuple(u.shape):
        raise ValueError(f'numba scan: dout must be {list(u.shape)}, got {list(dout.shape)}.')
    if tuple(ckpt.shape) != (-(-length // chunk) + 1, bsz, dim, n_state):
        raise ValueError(f'numba scan: ckpt of shape {list(ckpt.shape)} does not match chunk={chunk} and the inputs.')
    ops = _operands(u, delta, A, B, C, D, z, delta_bias)
    n_pad = _padded_n(n_state)
    f32 = dict(dtype=torch.float32)
    du, ddelta = torch.empty((bsz, dim, length), **f32), torch.empty((bsz, dim, length), **f32)
    dz = torch.empty((bsz, dim, length), **f32) if z is not None else torch.empty((1, 1, 1), **f32)
    da_pair = torch.zeros((bsz, dim, n_pad), **f32)
    dd_pair, dbias_pair = torch.zeros((bsz, dim), **f32), torch.zeros((bsz, dim), **f32)
    dB, dC = torch.empty((bsz, n_state, length), **f32), torch.empty((bsz, n_state, length), **f32)
    with _threads() as threads:
        n_workers = max(1, min(threads, bsz * dim))
        # each worker's share of dB and dC, which sum over the channels D that the workers split among them
        db_part = torch.zeros((n_workers, bsz, length, n_pad), **f32)
        dc_part = torch.zeros((n_workers, bsz, length, n_pad), **f32)
        _bwd_kernel(_as_f32(dout), *ops, _as_f32(ckpt), bool(softplus), z is not None, int(chunk), n_workers,
                    du.numpy(), ddelta.numpy(), dz.numpy(), da_pair.numpy(), dd_pair.numpy(), dbias_pair.numpy(),
                    db_part.numpy(), dc_part.numpy(), dB.numpy(), dC.numpy())
    return (du, ddelta, da_pair.sum(0)[:, :n_state].contiguous(), dB, dC, dd_pair.sum(0) if D is not None else None,
            dz if z is not None else None, dbias_pair.sum(0) if delta_bias is not None else None)

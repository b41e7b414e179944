"""Selective scan (Mamba S6) forward and backward as Triton kernels.

Same recurrence and arguments as :func:`gmamba_zoo.ops.selective_scan.selective_scan_fn` (inputs shaped as in
``mamba_ssm.selective_scan_fn``)::

    dt  = softplus(delta + delta_bias) if softplus else delta + delta_bias
    h_t = exp(max(dt_t * A, -80)) * h_{t-1} + dt_t * B_t * u_t     # h: [B, D, N]; B, C shared across D
    y_t = <h_t, C_t> + D * u_t;   out = y * silu(z) when z is given

Layout of the work: one program per (batch, block of ``BLOCK_D`` channels) keeps its [BLOCK_D, N] state in
registers and walks the sequence in tiles of ``BLOCK_L`` steps. A tile's inputs are loaded once, coalesced along L
(u/delta as [BLOCK_D, BLOCK_L], B/C as [N, BLOCK_L]), and the tile's states come from one ``tl.associative_scan``
over L of the affine maps ``x -> a_t x + b_t`` (a_t = exp(dt_t A), b_t = dt_t B_t u_t), applied to the state entering
the tile. The recurrence is evaluated as products of decays and sums (no log-space cumulative sums, no division by a
decay), so it is stable for any decay rate; all arithmetic is float32 whatever the input dtypes.

Forward keeps only the state entering each chunk of ``chunk`` steps (and the final state). Backward walks the chunks
from the last: it recomputes the states entering each tile of the chunk from the chunk's checkpoint (into a scratch
buffer bounded by the chunk, not by L), then walks the chunk's tiles backwards, recomputing each tile's states and
running the adjoint recurrence ``g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}``. That second scan runs in reversed time:
the tile's inputs are loaded in reversed order so that a forward ``associative_scan`` computes it, and the result is
flipped back with ``tl.flip`` (the scan's ``reverse=True`` is not relied upon: its operand order for non-commutative
combines was reported inconsistent, triton-lang/triton#4362). Gradients that sum over D (dB, dC) are written per block
of D and summed afterwards with torch, and those that sum over the batch (dA, dD, ddelta_bias) per batch element:
no atomics.

CPU tensors work through Triton's interpreter: ``TRITON_INTERPRET=1`` must be in the environment before this module
is imported (the kernels are decorated at import, and that is when Triton reads the variable).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ['scan_fwd', 'scan_bwd', 'interpreted', 'DEFAULT_CHUNK', 'LOG_DECAY_FLOOR']

# Steps between saved states. The checkpoints take (L / chunk + 1) * N floats per (batch, channel): at N = 16, about a
# quarter of a float32 u. The backward's scratch holds only chunk / BLOCK_L states per program.
DEFAULT_CHUNK = 64

# The floor of the log-decay dt * A, as in the PyTorch backend (``selective_scan._LOG_DECAY_FLOOR``): every decay
# stays a normal float. Its gradient is taken as if there were no floor (the decay it replaces is below 1.8e-35).
LOG_DECAY_FLOOR = -80.0
_FLOOR = tl.constexpr(LOG_DECAY_FLOOR)

# Largest tile of the 3D [BLOCK_D, BLOCK_N, BLOCK_L] tensors, in elements; backward holds several such tensors at
# once, so it gets half. Untuned starting points for a GPU (eight warps: 16 and 8 elements per tensor and thread).
_FWD_TILE = 4096
_BWD_TILE = 2048
_MAX_BLOCK_L = 32
# Eight warps (16 elements of each 3-D tile per thread) and, where this Triton has the option, ptxas allowed all 255
# registers. With four warps ptxas needs 250-255 registers per thread for the backward and spills 24-32 bytes at
# vGamba's N = 64; with eight it holds the forward to 128 registers on its own and spills 8-36 bytes on sm_75-sm_100;
# with eight and maxnreg 255 it takes 127-255 and spills nothing at any launch the models make (docs/triton-build.md).
# Untimed: a GPU may prefer the spills and twice the resident warps (scripts/check_gpu.py times it).
_NUM_WARPS = 8


def _launch_options() -> dict:
    """``num_warps``, and ``maxnreg`` where this Triton's CUDA backend takes it (not every 3.x release does)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return dict(num_warps=_NUM_WARPS)
    fields = getattr(CUDAOptions, '__dataclass_fields__', {})
    return dict(num_warps=_NUM_WARPS, **({'maxnreg': 255} if 'maxnreg' in fields else {}))


_LAUNCH = _launch_options()


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Compose the affine maps x -> a1 x + b1 (earlier) and x -> a2 x + b2 (later)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), with log1p by Goldberg's correction (no tl.log1p)."""
    e = tl.exp(-tl.abs(x))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _load_dt(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Raw (biased) delta and effective dt of a tile; dt is 0 where ``mask`` is off, making those steps identities."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def _channel_block(A_ptr, D_ptr, bias_ptr, d0, dim, dstate, s_ad, s_an, s_Dd, s_biasd,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """A program's channels d0 .. d0 + BLOCK_D: offsets and masks over D and N, A as float32 [BLOCK_D, BLOCK_N, 1],
    delta_bias and D as float32 [BLOCK_D] (zeros when absent), masked past D and N."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = d0 + offs_d < dim
    mask_n = offs_n < dstate
    A = tl.load(A_ptr + (d0 + offs_d)[:, None] * s_ad + offs_n[None, :] * s_an,
                mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + (d0 + offs_d) * s_biasd, mask=mask_d, other=0.0).to(tl.float32)
    skip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + (d0 + offs_d) * s_Dd, mask=mask_d, other=0.0).to(tl.float32)
    return offs_d, offs_n, mask_d, mask_n, A.to(tl.float32)[:, :, None], bias, skip


@triton.jit
def _fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr,
        dim, dstate, seqlen,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl, s_Dd, s_zb, s_zd, s_zl,
        s_biasd,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    d0 = tl.program_id(1).to(tl.int64) * BLOCK_D
    nbatch = tl.num_programs(0).to(tl.int64)
    offs_d, offs_n, mask_d, mask_n, A, bias, skip = _channel_block(
        A_ptr, D_ptr, bias_ptr, d0, dim, dstate, s_ad, s_an, s_Dd, s_biasd, BLOCK_D, BLOCK_N, HAS_D, HAS_BIAS)
    offs_l = tl.arange(0, BLOCK_L)
    mask_dn = mask_d[:, None] & mask_n[None, :]

    u_rows = u_ptr + pid_b * s_ub + (d0 + offs_d)[:, None] * s_ud  # [BLOCK_D, 1] pointers; add t * stride
    delta_rows = delta_ptr + pid_b * s_db + (d0 + offs_d)[:, None] * s_dd
    z_rows = z_ptr + pid_b * s_zb + (d0 + offs_d)[:, None] * s_zd
    out_rows = out_ptr + (pid_b * dim + d0 + offs_d)[:, None] * seqlen
    B_rows = B_ptr + pid_b * s_bb + offs_n[:, None] * s_bn
    C_rows = C_ptr + pid_b * s_cb + offs_n[:, None] * s_cn
    ckpt_offs = (pid_b * dim + d0 + offs_d)[:, None] * dstate + offs_n[None, :]
    ckpt_step = nbatch * dim * dstate
    is_last = offs_l[None, None, :] == BLOCK_L - 1

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    n_chunks = tl.cdiv(seqlen, CHUNK)
    for k in range(0, n_chunks):
        tl.store(ckpt_ptr + k * ckpt_step + ckpt_offs, h, mask=mask_dn)
        t_start = k * CHUNK
        for i in range(0, tl.cdiv(tl.minimum(seqlen - t_start, CHUNK), BLOCK_L)):
            t = t_start + i * BLOCK_L + offs_l
            mask_l = t < seqlen
            mask_dl = mask_d[:, None] & mask_l[None, :]
            mask_nl = mask_n[:, None] & mask_l[None, :]
            u = tl.load(u_rows + t[None, :] * s_ul, mask=mask_dl, other=0.0).to(tl.float32)
            _, dt = _load_dt(delta_rows + t[None, :] * s_dl, mask_dl, bias, HAS_BIAS, SOFTPLUS)
            Bt = tl.load(B_rows + t[None, :] * s_bl, mask=mask_nl, other=0.0).to(tl.float32)
            Ct = tl.load(C_rows + t[None, :] * s_cl, mask=mask_nl, other=0.0).to(tl.float32)
            # Padding (d, n or t out of range) has dt = 0 or A = 0 and u = 0 or B = 0: a = 1, b = 0, an identity.
            a = tl.exp(tl.maximum(dt[:, None, :] * A, _FLOOR))
            b = (dt * u)[:, None, :] * Bt[None, :, :]
            a_cum, b_cum = tl.associative_scan((a, b), 2, _affine_combine)
            hs = a_cum * h[:, :, None] + b_cum
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += skip[:, None] * u
            if HAS_Z:
                z = tl.load(z_rows + t[None, :] * s_zl, mask=mask_dl, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(out_rows + t[None, :], y.to(out_ptr.dtype.element_ty), mask=mask_dl)
            h = tl.sum(tl.where(is_last, hs, 0.0), axis=2)  # padded steps carried the last state through
    tl.store(ckpt_ptr + n_chunks * ckpt_step + ckpt_offs, h, mask=mask_dn)


@triton.jit
def _bwd_kernel(
        dout_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, scratch_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        dim, dstate, seqlen,
        s_ob, s_od, s_ol, s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_ad, s_an, s_bb, s_bn, s_bl, s_cb, s_cn, s_cl, s_Dd,
        s_zb, s_zd, s_zl, s_biasd,
        CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    TILES: tl.constexpr = CHUNK // BLOCK_L
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    nbatch = tl.num_programs(0).to(tl.int64)
    d0 = pid_d * BLOCK_D
    offs_d, offs_n, mask_d, mask_n, A, bias, skip = _channel_block(
        A_ptr, D_ptr, bias_ptr, d0, dim, dstate, s_ad, s_an, s_Dd, s_biasd, BLOCK_D, BLOCK_N, HAS_D, HAS_BIAS)
    offs_l = tl.arange(0, BLOCK_L)
    mask_dn = mask_d[:, None] & mask_n[None, :]

    dout_rows = dout_ptr + pid_b * s_ob + (d0 + offs_d)[:, None] * s_od
    u_rows = u_ptr + pid_b * s_ub + (d0 + offs_d)[:, None] * s_ud
    delta_rows = delta_ptr + pid_b * s_db + (d0 + offs_d)[:, None] * s_dd
    z_rows = z_ptr + pid_b * s_zb + (d0 + offs_d)[:, None] * s_zd
    B_rows = B_ptr + pid_b * s_bb + offs_n[:, None] * s_bn
    C_rows = C_ptr + pid_b * s_cb + offs_n[:, None] * s_cn
    grad_rows = (pid_b * dim + d0 + offs_d)[:, None] * seqlen  # du, ddelta, dz: contiguous [B, D, L]
    part_rows = ((pid_d * nbatch + pid_b) * dstate + offs_n)[:, None] * seqlen  # dB, dC: [nblocks_d, B, N, L]
    ckpt_offs = (pid_b * dim + d0 + offs_d)[:, None] * dstate + offs_n[None, :]
    ckpt_step = nbatch * dim * dstate
    # This program's scratch: the state entering each tile of the current chunk, [TILES, BLOCK_D, BLOCK_N].
    scratch = (scratch_ptr + (pid_b * tl.num_programs(1) + pid_d) * (TILES * BLOCK_D * BLOCK_N)
               + offs_d[:, None] * BLOCK_N + offs_n[None, :])
    is_last = offs_l[None, None, :] == BLOCK_L - 1

    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    g_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # adjoint of the step after the current tile
    n_chunks = tl.cdiv(seqlen, CHUNK)
    for kk in range(0, n_chunks):
        k = n_chunks - 1 - kk
        t_start = k * CHUNK
        n_tiles = tl.cdiv(tl.minimum(seqlen - t_start, CHUNK), BLOCK_L)
        # Pass 1: the state entering each tile of the chunk, from the chunk's checkpoint.
        h = tl.load(ckpt_ptr + k * ckpt_step + ckpt_offs, mask=mask_dn, other=0.0)
        tl.debug_barrier()  # the previous chunk's pass 2 has read the scratch before it is overwritten
        for i in range(0, n_tiles):
            tl.store(scratch + i * (BLOCK_D * BLOCK_N), h)
            t = t_start + i * BLOCK_L + offs_l
            mask_l = t < seqlen
            mask_dl = mask_d[:, None] & mask_l[None, :]
            u = tl.load(u_rows + t[None, :] * s_ul, mask=mask_dl, other=0.0).to(tl.float32)
            _, dt = _load_dt(delta_rows + t[None, :] * s_dl, mask_dl, bias, HAS_BIAS, SOFTPLUS)
            Bt = tl.load(B_rows + t[None, :] * s_bl, mask=mask_n[:, None] & mask_l[None, :], other=0.0)
            a = tl.exp(tl.maximum(dt[:, None, :] * A, _FLOOR))
            b = (dt * u)[:, None, :] * Bt.to(tl.float32)[None, :, :]
            a_tot, b_tot = tl.reduce((a, b), 2, _affine_combine)
            h = a_tot * h + b_tot
        tl.debug_barrier()  # pass 1's scratch stores are visible to every thread of the program

        # Pass 2: the chunk's tiles from the last.
        for ii in range(0, n_tiles):
            i = n_tiles - 1 - ii
            t0 = t_start + i * BLOCK_L
            h_in = tl.load(scratch + i * (BLOCK_D * BLOCK_N))
            t = t0 + offs_l
            mask_l = t < seqlen
            mask_dl = mask_d[:, None] & mask_l[None, :]
            mask_nl = mask_n[:, None] & mask_l[None, :]
            u = tl.load(u_rows + t[None, :] * s_ul, mask=mask_dl, other=0.0).to(tl.float32)
            raw, dt = _load_dt(delta_rows + t[None, :] * s_dl, mask_dl, bias, HAS_BIAS, SOFTPLUS)
            Bt = tl.load(B_rows + t[None, :] * s_bl, mask=mask_nl, other=0.0).to(tl.float32)
            Ct = tl.load(C_rows + t[None, :] * s_cl, mask=mask_nl, other=0.0).to(tl.float32)
            dy = tl.load(dout_rows + t[None, :] * s_ol, mask=mask_dl, other=0.0).to(tl.float32)

            # h_{t-1} for each step of the tile: a scan of the steps shifted by one, the first an identity.
            tp = t - 1
            mask_p = (offs_l > 0) & (tp < seqlen)
            mask_dp = mask_d[:, None] & mask_p[None, :]
            u_p = tl.load(u_rows + tp[None, :] * s_ul, mask=mask_dp, other=0.0).to(tl.float32)
            _, dt_p = _load_dt(delta_rows + tp[None, :] * s_dl, mask_dp, bias, HAS_BIAS, SOFTPLUS)
            B_p = tl.load(B_rows + tp[None, :] * s_bl, mask=mask_n[:, None] & mask_p[None, :], other=0.0)
            a_p = tl.exp(tl.maximum(dt_p[:, None, :] * A, _FLOOR))
            b_p = (dt_p * u_p)[:, None, :] * B_p.to(tl.float32)[None, :, :]
            pa, pb = tl.associative_scan((a_p, b_p), 2, _affine_combine)
            h_prev = pa * h_in[:, :, None] + pb
            a = tl.exp(tl.maximum(dt[:, None, :] * A, _FLOOR))
            dtu = dt * u
            hs = a * h_prev + dtu[:, None, :] * Bt[None, :, :]  # h_t; not `h`, pass 1's loop-carried [D, N] state

            if HAS_Z:
                z = tl.load(z_rows + t[None, :] * s_zl, mask=mask_dl, other=0.0).to(tl.float32)
                y = tl.sum(hs * Ct[None, :, :], axis=1) + skip[:, None] * u
                sig = tl.sigmoid(z)
                tl.store(dz_ptr + grad_rows + t[None, :], dy * y * sig * (1.0 + z * (1.0 - sig)), mask=mask_dl)
                dy = dy * z * sig
            tl.store(dC_ptr + part_rows + t[None, :], tl.sum(dy[:, None, :] * hs, axis=0), mask=mask_nl)

            # The adjoint g_t = dy_t C_t + a_{t+1} g_{t+1}, as a forward scan over the tile in reversed time.
            tr = t0 + BLOCK_L - 1 - offs_l
            mask_r = tr < seqlen
            mask_dr = mask_d[:, None] & mask_r[None, :]
            dy_r = tl.load(dout_rows + tr[None, :] * s_ol, mask=mask_dr, other=0.0).to(tl.float32)
            if HAS_Z:
                z_r = tl.load(z_rows + tr[None, :] * s_zl, mask=mask_dr, other=0.0).to(tl.float32)
                dy_r = dy_r * z_r * tl.sigmoid(z_r)
            C_r = tl.load(C_rows + tr[None, :] * s_cl, mask=mask_n[:, None] & mask_r[None, :], other=0.0)
            tn = tr + 1
            mask_dnx = mask_d[:, None] & (tn < seqlen)[None, :]
            _, dt_n = _load_dt(delta_rows + tn[None, :] * s_dl, mask_dnx, bias, HAS_BIAS, SOFTPLUS)
            a_n = tl.exp(tl.maximum(dt_n[:, None, :] * A, _FLOOR))
            ga, gb = tl.associative_scan((a_n, dy_r[:, None, :] * C_r.to(tl.float32)[None, :, :]), 2,
                                         _affine_combine)
            g_rev = ga * g_next[:, :, None] + gb
            g_next = tl.sum(tl.where(is_last, g_rev, 0.0), axis=2)  # g at t0, the tile's first step
            g = tl.flip(g_rev, 2)

            gB = tl.sum(g * Bt[None, :, :], axis=1)
            p = g * a * h_prev  # gradient with respect to dt_t * A
            ddt = tl.sum(p * A, axis=1) + gB * u
            dA_acc += tl.sum(p * dt[:, None, :], axis=2)
            tl.store(dB_ptr + part_rows + t[None, :], tl.sum(g * dtu[:, None, :], axis=0), mask=mask_nl)
            du = gB * dt
            if HAS_D:
                du += skip[:, None] * dy
                dD_acc += tl.sum(dy * u, axis=1)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            if HAS_BIAS:
                dbias_acc += tl.sum(tl.where(mask_dl, ddt, 0.0), axis=1)
            tl.store(du_ptr + grad_rows + t[None, :], du, mask=mask_dl)
            tl.store(ddelta_ptr + grad_rows + t[None, :], ddt, mask=mask_dl)

    # dA, dD, ddelta_bias of this batch element: [B, D, N] and [B, D], summed over the batch by the caller.
    tl.store(dA_ptr + ckpt_offs, dA_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + pid_b * dim + d0 + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * dim + d0 + offs_d, dbias_acc, mask=mask_d)


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` was set at this module's import)."""
    return not isinstance(_fwd_kernel, triton.runtime.JITFunction)


def _pow2_at_least(x: int) -> int:
    return 1 << max(int(x) - 1, 0).bit_length()


def _blocks(dim: int, dstate: int, chunk: int, tile: int, block_l: Optional[int],
            block_d: Optional[int]) -> Tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, BLOCK_L): BLOCK_L a power of two dividing ``chunk``, the 3D tile within ``tile`` elements."""
    block_n = _pow2_at_least(dstate)
    if block_l is None:
        block_l = min(chunk & -chunk, _MAX_BLOCK_L, max(tile // block_n, 1))  # chunk & -chunk: its largest 2^k factor
    elif block_l < 1 or block_l & (block_l - 1) or chunk % block_l:
        raise ValueError(f'block_l must be a power of two dividing chunk={chunk}, got {block_l}.')
    if block_d is None:
        block_d = min(_pow2_at_least(dim), max(tile // (block_n * block_l), 1))
    elif block_d < 1 or block_d & (block_d - 1):
        raise ValueError(f'block_d must be a power of two, got {block_d}.')
    return block_d, block_n, block_l


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
           delta_bias: Optional[Tensor], chunk: int) -> None:
    bsz, dim, seqlen = u.shape
    dstate = A.shape[1]
    if seqlen < 1:
        raise ValueError('triton scan: the sequence length must be at least 1.')
    if chunk < 1:
        raise ValueError(f'triton scan: chunk must be a positive integer, got {chunk}.')
    shapes = dict(delta=(delta, (bsz, dim, seqlen)), A=(A, (dim, dstate)), B=(B, (bsz, dstate, seqlen)),
                  C=(C, (bsz, dstate, seqlen)), D=(D, (dim,)), z=(z, (bsz, dim, seqlen)),
                  delta_bias=(delta_bias, (dim,)))
    for name, (t, shape) in shapes.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f'triton scan: {name} must be {list(shape)}, got {list(t.shape)}.')
        if t is not None and t.device != u.device:
            raise ValueError(f'triton scan: {name} is on {t.device}, u on {u.device}.')
    if u.device.type == 'cpu' and not interpreted():
        raise RuntimeError(f'triton scan: tensors on {u.device} need the Triton interpreter: set TRITON_INTERPRET=1 '
                           'before triton and this module are imported.')


def scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
             delta_bias: Optional[Tensor], softplus: bool, chunk: int = DEFAULT_CHUNK, *,
             block_l: Optional[int] = None, block_d: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Selective scan forward.

    Inputs may have any strides and floating dtypes; they are read as they are and upcast to float32 on load.

    Args:
        u: Input, [B, D, L].
        delta: Step sizes, [B, D, L].
        A: State matrix diagonal, [D, N].
        B: Input projection, [B, N, L].
        C: Output projection, [B, N, L].
        D: Skip weight, [D], or None.
        z: Gate, [B, D, L], or None.
        delta_bias: Added to delta before the softplus, [D], or None.
        softplus: Apply softplus to ``delta + delta_bias``.
        chunk: Steps between saved states.
        block_l: Steps per tile (a power of two dividing ``chunk``); None picks one.
        block_d: Channels per program (a power of two); None picks one.

    Returns:
        ``out`` [B, D, L] in u's dtype, and ``ckpt`` float32 [n_chunks + 1, B, D, N] with n_chunks = ceil(L / chunk):
        ``ckpt[k]`` is the state entering chunk k (the state after step k * chunk - 1; ``ckpt[0]`` is zero) and
        ``ckpt[-1]`` the final state h_L.
    """
    _check(u, delta, A, B, C, D, z, delta_bias, chunk)
    bsz, dim, seqlen = u.shape
    dstate = A.shape[1]
    n_chunks = -(-seqlen // chunk)
    out = torch.empty((bsz, dim, seqlen), device=u.device, dtype=u.dtype)
    ckpt = torch.zeros((n_chunks + 1, bsz, dim, dstate), device=u.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, ckpt
    bd, bn, bl = _blocks(dim, dstate, chunk, _FWD_TILE, block_l, block_d)
    grid = (bsz, triton.cdiv(dim, bd))
    _fwd_kernel[grid](
        u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), out, ckpt,
        dim, dstate, seqlen,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides(D, 1), *_strides(z, 3),
        *_strides(delta_bias, 1),
        CHUNK=chunk, BLOCK_D=bd, BLOCK_N=bn, BLOCK_L=bl,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
        **_LAUNCH,
    )
    return out, ckpt


def scan_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             z: Optional[Tensor], delta_bias: Optional[Tensor], ckpt: Tensor, softplus: bool,
             chunk: int = DEFAULT_CHUNK, *, block_l: Optional[int] = None, block_d: Optional[int] = None,
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Selective scan backward, from the checkpoints of :func:`scan_fwd` (made with the same ``chunk``).

    Args:
        dout: Gradient of ``out``, [B, D, L], any strides and floating dtype.
        u, delta, A, B, C, D, z, delta_bias, softplus: As given to :func:`scan_fwd`.
        ckpt: float32 [n_chunks + 1, B, D, N], from :func:`scan_fwd` (the last entry is not read).
        chunk: The ``chunk`` of the forward call.
        block_l: Steps per tile (a power of two dividing ``chunk``); None picks one.
        block_d: Channels per program (a power of two); None picks one.

    Returns:
        float32 gradients ``(du [B, D, L], ddelta [B, D, L], dA [D, N], dB [B, N, L], dC [B, N, L], dD [D],
        dz [B, D, L], ddelta_bias [D])``, None for each absent optional input.
    """
    _check(u, delta, A, B, C, D, z, delta_bias, chunk)
    bsz, dim, seqlen = u.shape
    dstate = A.shape[1]
    n_chunks = -(-seqlen // chunk)
    if tuple(ckpt.shape) != (n_chunks + 1, bsz, dim, dstate) or ckpt.dtype != torch.float32:
        raise ValueError(f'triton scan: ckpt must be float32 {[n_chunks + 1, bsz, dim, dstate]} for chunk={chunk}, '
                         f'got {ckpt.dtype} {list(ckpt.shape)}.')
    if tuple(dout.shape) != (bsz, dim, seqlen):
        raise ValueError(f'triton scan: dout must be {[bsz, dim, seqlen]}, got {list(dout.shape)}.')
    ckpt = ckpt.contiguous()
    f32 = dict(device=u.device, dtype=torch.float32)
    bd, bn, bl = _blocks(dim, dstate, chunk, _BWD_TILE, block_l, block_d)
    n_dblocks = triton.cdiv(dim, bd)
    du = torch.zeros((bsz, dim, seqlen), **f32)
    ddelta = torch.zeros((bsz, dim, seqlen), **f32)
    dz = torch.zeros((bsz, dim, seqlen), **f32) if z is not None else None
    dA_part = torch.zeros((bsz, dim, dstate), **f32)
    dB_part = torch.zeros((n_dblocks, bsz, dstate, seqlen), **f32)
    dC_part = torch.zeros((n_dblocks, bsz, dstate, seqlen), **f32)
    dD_part = torch.zeros((bsz, dim), **f32) if D is not None else None
    dbias_part = torch.zeros((bsz, dim), **f32) if delta_bias is not None else None
    if du.numel():  # N = 0 needs no special case: BLOCK_N = 1, all masked
        scratch = torch.empty((bsz, n_dblocks, chunk // bl, bd, bn), **f32)
        _bwd_kernel[(bsz, n_dblocks)](
            dout, u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), ckpt, scratch,
            du, ddelta, _or(dz, du), dA_part, dB_part, dC_part, _or(dD_part, du), _or(dbias_part, du),
            dim, dstate, seqlen,
            *dout.stride(), *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides(D, 1),
            *_strides(z, 3), *_strides(delta_bias, 1),
            CHUNK=chunk, BLOCK_D=bd, BLOCK_N=bn, BLOCK_L=bl,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
            **_LAUNCH,
        )
    dD = dD_part.sum(0) if dD_part is not None else None
    dbias = dbias_part.sum(0) if dbias_part is not None else None
    return du, ddelta, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dD, dz, dbias


def _or(t: Optional[Tensor], fallback: Tensor) -> Tensor:
    """A pointer for an absent optional tensor (never read: its flag is off)."""
    return fallback if t is None else t


def _strides(t: Optional[Tensor], ndim: int) -> Tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * ndim


"""The selective scan as a fixed graph of tensor operations, for exporters: no loop over time, any sequence length.

The backends of :mod:`gmamba_zoo.ops.selective_scan` step through the sequence in a loop (Python, numba, Triton or
CUDA), which an exporter cannot write down for a length known only at run time. :func:`selective_scan_parallel`
computes the same recurrence ``h_t = a_t h_{t-1} + b_t`` (``a_t = exp(dt_t A)``, ``b_t = dt_t B_t u_t``) as a fixed
graph of slices, products and sums, which the ONNX exporter traces with a symbolic batch and length:

* the sequence is cut into blocks of :data:`BLOCK` steps; within all blocks at once the BLOCK steps of the
  recurrence are written out, each step's decays and inputs [B, D, N, blocks] made from that step's slice of the
  [B, D, L] and [B, N, L] inputs (so no [B, D, N, L] tensor is padded, transposed or split), keeping the product of the
  decays since each block's start;
* the blocks' last states form a recurrence BLOCK times shorter, solved by a blocked Hillis-Steele scan
  (:func:`_block_scan`: log2(BLOCK) rounds per level, :data:`LEVELS` levels in all, few graph nodes on data BLOCK times
  smaller), whose states enter the blocks: ``h = h_block + decay_product * h_in``; the output is contracted with C
  step by step.

A Hillis-Steele scan over the whole sequence (log2(BLOCK) rounds of several passes over the states) ran three to
five times slower in onnxruntime; an ONNX ``Loop`` over time would take one iteration per position. Decays are only
multiplied (no division, no log-space sums), so it is as stable as the step-by-step recurrence; results differ from
the other backends by float32 rounding only. The states are materialised block step by block step, which the stepping
backends avoid: it is an export path, not a training backend (no custom backward; autograd differentiates it like any
graph). :func:`linear_recurrence` is the same recurrence for given decays and inputs.

The levels bound the length: :data:`MAX_LENGTH` = BLOCK ** LEVELS = 2 ** 20 steps (a 1024 x 1024 map, a 4096 x 4096
image at stride 4).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['selective_scan_parallel', 'linear_recurrence', 'BLOCK', 'LEVELS', 'MAX_LENGTH']

BLOCK = 16  # steps per block, written out at each level
LEVELS = 5
MAX_LENGTH = BLOCK ** LEVELS

# Same floor on the log-decay as the PyTorch backend (see selective_scan._LOG_DECAY_FLOOR): keeps decays normal floats.
_LOG_DECAY_FLOOR = -80.0


def linear_recurrence(a: Tensor, b: Tensor, levels: int = LEVELS) -> Tensor:
    """All states of ``h_t = a_t h_{t-1} + b_t`` with ``h_{-1} = 0``, along the last dim.

    The sequence, padded with identity steps (a = 1, b = 0) to ``BLOCK * n`` steps, is cut into n blocks; within all
    blocks at once, the BLOCK steps of the recurrence are written out (step-major, so that each step reads contiguous
    [..., n] slices), keeping the product of the decays since the block's start. The blocks' last states and decay
    products form a recurrence n steps long (:func:`_block_scan`, ``levels - 1`` more levels), whose states enter the
    blocks: ``h += decay_product * h_in``.

    Args:
        a: Decays [..., L].
        b: Inputs [..., L], same shape.
        levels: Recursion depth; L must be at most ``BLOCK ** levels``.

    Returns:
        h [..., L].
    """
    length = a.shape[-1]
    blocks = (length + BLOCK - 1) // BLOCK
    pad = blocks * BLOCK - length
    a = F.pad(a, (0, pad), value=1.0).unflatten(-1, (blocks, BLOCK)).movedim(-1, 0)  # [BLOCK, ..., n]
    b = F.pad(b, (0, pad)).unflatten(-1, (blocks, BLOCK)).movedim(-1, 0)
    states, decays = [b[0]], [a[0]]
    for t in range(1, BLOCK):
        states.append(b[t] + a[t] * states[-1])
        decays.append(a[t] * decays[-1])
    h = torch.stack(states)
    if levels > 1:
        ends = _block_scan(decays[-1], states[-1], levels - 1)  # the state leaving each block [..., n]
        entering = F.pad(ends, (1, 0))[..., :blocks]  # the state entering each block: the previous block's last
        h = h + torch.stack(decays) * entering
    return h.movedim(0, -1).flatten(-2)[..., :length]


def _steps(x: Tensor, pad: int, blocks: int) -> list:
    """[..., L] zero-padded to ``BLOCK * blocks`` steps -> the BLOCK step slices [..., blocks] of its blocks."""
    return F.pad(x, (0, pad)).unflatten(-1, (blocks, BLOCK)).unbind(-1)


def _shift(x: Tensor, k: int) -> Tensor:
    """``x`` moved ``k`` steps later along the last dim, zeros in front (padding then slicing, so that the length
    stays the same symbol for an exporter)."""
    return F.pad(x, (k, 0))[..., :x.shape[-1]]


def _block_scan(a: Tensor, b: Tensor, levels: int) -> Tensor:
    """:func:`linear_recurrence` for the short upper levels, in fewer graph nodes: within blocks of BLOCK positions a
    Hillis-Steele scan combines ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)`` in log2(BLOCK) rounds (a mask on the
    position keeps each inside its block, so no length has to divide another), then the same one level up."""
    length = a.shape[-1]
    pos = torch.arange(length, device=a.device)
    offset = pos % BLOCK
    k = 1
    while k < BLOCK:
        inside = offset >= k
        prev_b = torch.where(inside, _shift(b, k), 0.0)
        prev_a = torch.where(inside, _shift(a, k), 1.0)
        b = b + a * prev_b
        a = a * prev_a
        k *= 2
    if levels == 1:
        return b
    last = torch.arange(a.shape[-1] // BLOCK, device=a.device) * BLOCK + (BLOCK - 1)
    ends = _block_scan(a.index_select(-1, last), b.index_select(-1, last), levels - 1)
    entering = torch.cat([ends.new_zeros(ends.shape[:-1] + (1,)), ends], dim=-1)
    return b + a * entering.index_select(-1, pos // BLOCK)


def selective_scan_parallel(
        u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
        z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
) -> Tensor:
    """The selective scan of :func:`~gmamba_zoo.ops.selective_scan_fn` as one traceable graph (see the module docs).

    Takes that function's arguments (without ``return_last_state``), shaped alike.

    Returns:
        out [B, D, L] in the dtype of ``u`` (computed in float32).
    """
    uf = u.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # Step-major blocks of the [B, D, L] and [B, N, L] inputs (a padding step has dt = 0: decay 1, input 0); each
    # step's [B, D, N, n] decay and input are made from them when the step runs, so that no [B, D, N, L] tensor is
    # padded, transposed or split, and the output is contracted step by step.
    length = u.shape[-1]
    blocks = (length + BLOCK - 1) // BLOCK
    pad = blocks * BLOCK - length
    dt_steps = _steps(dt.unsqueeze(2), pad, blocks)  # [B, D, 1, n] each
    du_steps = _steps((dt * uf).unsqueeze(2), pad, blocks)
    b_steps, c_steps = _steps(B.float().unsqueeze(1), pad, blocks), _steps(C.float().unsqueeze(1), pad, blocks)
    a_log = A.float()[None, :, :, None]  # [1, D, N, 1]; b_steps, c_steps: [B, 1, N, n]
    states, decays = [], []
    for t in range(BLOCK):
        decay = (dt_steps[t] * a_log).clamp_min(_LOG_DECAY_FLOOR).exp()  # [B, D, N, n]
        inputs = du_steps[t] * b_steps[t]
        states.append(inputs + decay * states[-1] if t else inputs)
        decays.append(decay * decays[-1] if t else decay)
    ends = _block_scan(decays[-1], states[-1], LEVELS - 1)  # the state leaving each block [B, D, N, n]
    entering = F.pad(ends, (1, 0))[..., :blocks]  # the state entering each block: the previous block's last
    ys = [((h + p * entering) * c).sum(2) for h, p, c in zip(states, decays, c_steps)]  # [B, D, n] each
    y = torch.stack(ys, dim=-1).flatten(-2)[..., :length]  # [B, D, L]
    if D is not None:
        y = y + D.float()[:, None] * uf
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)

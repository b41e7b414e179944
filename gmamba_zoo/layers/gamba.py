"""Layers of vGamba: a plain Mamba mixer, the Gamba Cell, 2-D MHSA with registers, gated fusion, the Gamba block.

Paper: "vGamba: Attentive State Space Bottleneck for efficient Long-range Dependencies in Visual Recognition".

The Gamba block replaces the 3x3 conv of a ResNet bottleneck. It splits its p channels in half: the first half goes
through the Gamba Cell (a Mamba mixer over the raster-flattened map, gated by a context mask), the second through a
2-D multi-head self-attention with position terms and register tokens; a gated fusion brings both back to p channels.

Every term sized at construction (the Cell's positional embedding, the attention's position terms) is kept at the
grid it was built for and linearly interpolated to the actual feature map in ``forward``, so the layers run at any
input size and a checkpoint made at the construction size loads unchanged. Register tokens are a fixed number of
learned key/value tokens and do not depend on the map size.

Choices where the paper is silent (also in the README / docs/vgamba.md):
    * Position terms are factorised per channel: a row term [C, H0] plus a column term [C, W0]. Resizing is 1-D linear
      interpolation (``align_corners=False``) of each term; at the construction size it is the identity.
    * Attention logits are ``q_i . (k_j + r_j) / sqrt(head_dim)`` with ``r_j = rel_h[row(j)] + rel_w[col(j)]``: the
      content-content plus content-position terms of Bottleneck Transformers, with the query of position i attending
      to the position of key j. The published code pairs the position of i with the query of j instead (a transposed
      term) and uses no 1/sqrt(d) scaling; the form here is the one the BoTNet paper writes, and because it folds into
      the keys it runs through ``F.scaled_dot_product_attention`` without materialising an [L, L] map.
    * Register tokens: ``num_registers`` (default 1) learned key and value vectors per head, appended to the keys and
      values of every query. The published code's registers are a learned [L, L] logit table tied to the 224 grid
      whose head is discarded after the softmax; here they are real tokens, independent of the map size, and every
      one of their parameters receives a gradient.
    * Position terms and register tokens start as truncated normals with std 0.02 (the ViT convention; the published
      code uses unit normals).
    * The q, k and v 1x1 convs are one fused conv with bias (same parameters and arithmetic as three).
    * The Mamba mixer is mamba-ssm's ``Mamba`` block (in_proj without bias, causal depthwise conv1d with bias, SiLU,
      x_proj, dt_proj, z-gated selective scan, out_proj without bias), initialised as Mamba is; its shared choices are
      listed in :mod:`gmamba_zoo.layers.ssm`.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.layers import register_notrace_function, trunc_normal_, use_fused_attn

from ._checks import check_bool, check_int, check_real, check_size
from .onednn import conv1x1
from .ssm import SelectiveSSM, check_ssm_args

__all__ = [
    'resize_pos_embed_1d', 'MambaMixer', 'GambaCell', 'RegisterMHSA2d', 'GatedFusion', 'GambaBlock',
    'CeilAvgPool2d', 'GAMBA_NO_WEIGHT_DECAY', 'check_gamba_args', 'check_input_shape',
]

torch.fx.wrap('conv1x1')  # an FX leaf for every tracer: a traced graph takes eager's oneDNN route (onednn.py)

# Names (last component) of the parameters that should not be weight-decayed: SSM parameters as in Mamba,
# position terms and register tokens as in ViTs.
GAMBA_NO_WEIGHT_DECAY = ('A_log', 'D', 'pos_h', 'pos_w', 'rel_h', 'rel_w', 'reg_k', 'reg_v')


def check_gamba_args(
        owner: str,
        dim: Union[int, None] = None,
        num_heads: int = 4,
        num_registers: int = 1,
        d_state: int = 64,
        d_conv: int = 4,
        expand: float = 2,
        arg: str = '{}',
        dim_arg: str = 'dim',
) -> None:
    """Check the arguments of a :class:`GambaBlock` (``dim`` only when given).

    Args:
        owner: Who is being built, for the message.
        dim: Channels p of the block: even, with p / 2 divisible by ``num_heads``.
        num_heads, num_registers, d_state, d_conv, expand: As for :class:`GambaBlock`.
        arg: How an argument is named in the message, ``'{}'`` formatted with its name.
        dim_arg: How ``dim`` is named in the message (``'widths[2]'`` for a vGamba stage).

    Raises:
        TypeError, ValueError: Naming the argument, the value and what is expected.
    """
    check_int(owner, arg.format('num_heads'), num_heads, minimum=1)
    check_int(owner, arg.format('num_registers'), num_registers, minimum=0)
    check_ssm_args(owner, dict(d_state=d_state, d_conv=d_conv), causal=True, arg=arg)
    check_real(owner, arg.format('expand'), expand, 0, low_open=True)
    if dim is not None:
        check_int(owner, dim_arg, dim, minimum=2)
        if dim % 2 or (dim // 2) % num_heads:
            raise ValueError(f'{owner}: {dim_arg} must be even with {dim_arg} / 2 divisible by num_heads={num_heads} '
                             f'(half the channels go to the attention), got {dim}.')
        if int(expand * (dim // 2)) < 1:
            raise ValueError(f'{owner}: {arg.format("expand")} must give the Mamba mixer at least one inner channel '
                             f'(expand * {dim_arg} / 2 >= 1), got expand={expand!r} with {dim_arg}={dim}.')


@register_notrace_function  # FX leaf: the size is known when the traced graph runs
@torch.fx.wrap
def resize_pos_embed_1d(pos: Tensor, size: int) -> Tensor:
    """Linearly interpolate a per-channel 1-D position term to ``size`` positions.

    Args:
        pos: [C, n0] position term.
        size: Target number of positions (>= 1).

    Returns:
        [C, size]; ``pos`` itself when ``size == n0`` (a symbolic size, while ``torch.export`` traces, always
        interpolates: at scale 1 that is an exact copy, and the graph stays valid for every size).
    """
    if type(size) is int and pos.shape[-1] == size:
        return pos
    return F.interpolate(pos[None], size=size, mode='linear', align_corners=False)[0]


@register_notrace_function  # FX leaf: the check reads the input's shape when the traced graph runs
@torch.fx.wrap
def check_input_shape(x: Tensor, ndim: int, channel_dim: int, channels: int, expected: str) -> None:
    """Raise ``ValueError('<expected>, got shape ...')`` unless x has ``ndim`` dims, ``channels`` at ``channel_dim``."""
    if x.dim() != ndim or x.shape[channel_dim] != channels:
        raise ValueError(f'{expected}, got shape {tuple(x.shape)}.')


def _pos_2d(pos_h: Tensor, pos_w: Tensor, height: int, width: int) -> Tensor:
    """Row term [C, H0] + column term [C, W0], resized to the map: [C, H, W]."""
    return resize_pos_embed_1d(pos_h, height)[:, :, None] + resize_pos_embed_1d(pos_w, width)[:, None, :]


class MambaMixer(SelectiveSSM):
    """A plain Mamba (S6) mixer over a sequence, on the package's selective scan (runs on CPU without mamba-ssm).

    Maps [B, L, C] to [B, L, C]. A :class:`~gmamba_zoo.layers.ssm.SelectiveSSM` with E = expand * C, a causal conv
    and SiLU on the scan branch x only, and the z gate inside the scan.

    Args:
        dim: Model width C.
        d_state: State size N.
        d_conv: Kernel of the causal depthwise 1-D conv.
        expand: Inner width E = expand * C.
        dt_rank: Rank of the step-size projection; ``'auto'`` is ceil(C / 16).
        **ssm_kwargs: The initial step-size range (dt_min, dt_max, dt_init_floor), see :class:`SelectiveSSM`.
    """

    def __init__(
            self,
            dim: int,
            d_state: int = 16,
            d_conv: int = 4,
            expand: int = 2,
            dt_rank: Union[int, str] = 'auto',
            **ssm_kwargs,
    ):
        name = type(self).__name__
        check_int(name, 'dim', dim, minimum=1)
        check_real(name, 'expand', expand, 0, low_open=True)
        if int(expand * dim) < 1:
            raise ValueError(f'{name}: expand must give at least one inner channel (expand * dim >= 1), got '
                             f'expand={expand!r} with dim={dim}.')
        super().__init__(
            dim, int(expand * dim), d_state=d_state, d_conv=d_conv, causal=True, conv_z=False, gate='scan',
            dt_rank=dt_rank, **ssm_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, L, C] -> [B, L, C]."""
        check_input_shape(x, 3, -1, self.dim, f'MambaMixer: expected a [B, L, C={self.dim}] sequence')
        return super().forward(x)


class GambaCell(nn.Module):
    """Gamba Cell: 2-D positional embedding, context mask, Mamba mixer over the raster-flattened map.

    ``out = Mamba(s) * sigmoid(Conv1d_k3(s))`` with ``s = flatten(x + pos)``.

    Args:
        dim: Channels C of the half map it works on.
        grid_size: (H0, W0) the positional embedding is built for; resized to the actual map in forward.
        d_state, d_conv, expand: Of the Mamba mixer.
    """

    def __init__(
            self,
            dim: int,
            grid_size: Union[int, Tuple[int, int]],
            d_state: int = 64,
            d_conv: int = 4,
            expand: int = 2,
    ):
        name = type(self).__name__
        check_int(name, 'dim', dim, minimum=1)
        grid_size = check_size(name, 'grid_size', grid_size)
        super().__init__()
        self.dim = dim
        self.grid_size = grid_size
        self.pos_h = nn.Parameter(torch.zeros(dim, self.grid_size[0]))
        self.pos_w = nn.Parameter(torch.zeros(dim, self.grid_size[1]))
        self.context = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.mamba = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand)
        trunc_normal_(self.pos_h, std=.02)
        trunc_normal_(self.pos_w, std=.02)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        x = (x + _pos_2d(self.pos_h, self.pos_w, h, w).to(x.dtype)).flatten(2)  # [B, C, L]
        mask = torch.sigmoid(self.context(x))  # [B, C, L]
        # contiguous [B, C, H, W]: the product keeps the mixer's channels-last strides otherwise, which the fusion's
        # convs would inherit (and torch.export cannot reason about for a symbolic size)
        y = self.mamba(x.transpose(1, 2)).transpose(1, 2) * mask
        return y.reshape(b, c, h, w).contiguous()


class RegisterMHSA2d(nn.Module):
    """Global 2-D multi-head self-attention with factorised position terms and register tokens.

    ``logits_ij = q_i . (k_j + rel_h[row(j)] + rel_w[col(j)]) / sqrt(d)`` over the L map positions, plus
    ``q_i . reg_k / sqrt(d)`` over ``num_registers`` learned tokens whose values are ``reg_v``.

    Args:
        dim: Channels C (divisible by ``num_heads``).
        grid_size: (H0, W0) the position terms are built for; resized to the actual map in forward.
        num_heads: Attention heads.
        num_registers: Learned key/value tokens per head (0 for none).
        qkv_bias: Bias on the fused q/k/v 1x1 conv.
    """

    def __init__(
            self,
            dim: int,
            grid_size: Union[int, Tuple[int, int]],
            num_heads: int = 4,
            num_registers: int = 1,
            qkv_bias: bool = True,
    ):
        name = type(self).__name__
        check_int(name, 'dim', dim, minimum=1)
        check_int(name, 'num_heads', num_heads, minimum=1)
        if dim % num_heads:
            raise ValueError(f'{name}: dim ({dim}) must be divisible by num_heads ({num_heads}).')
        check_int(name, 'num_registers', num_registers, minimum=0)
        grid_size = check_size(name, 'grid_size', grid_size)
        check_bool(name, 'qkv_bias', qkv_bias)
        super().__init__()
        self.dim, self.num_heads, self.num_registers = dim, num_heads, num_registers
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.grid_size = grid_size
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Conv2d(dim, 3 * dim, kernel_size=1, bias=qkv_bias)
        self.rel_h = nn.Parameter(torch.zeros(dim, self.grid_size[0]))
        self.rel_w = nn.Parameter(torch.zeros(dim, self.grid_size[1]))
        trunc_normal_(self.rel_h, std=.02)
        trunc_normal_(self.rel_w, std=.02)
        if num_registers:
            self.reg_k = nn.Parameter(torch.zeros(1, num_heads, num_registers, self.head_dim))
            self.reg_v = nn.Parameter(torch.zeros(1, num_heads, num_registers, self.head_dim))
            trunc_normal_(self.reg_k, std=.02)
            trunc_normal_(self.reg_v, std=.02)
        else:
            self.reg_k = self.reg_v = None

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        nh, hd = self.num_heads, self.head_dim
        q, k, v = conv1x1(self.qkv, x).reshape(b, 3, nh, hd, h * w).unbind(1)  # [B, nh, hd, L] each
        k = k + _pos_2d(self.rel_h, self.rel_w, h, w).to(k.dtype).reshape(nh, hd, h * w)
        # [B, nh, L, hd], contiguous in hd: the fused CPU kernel needs that, else it falls back to an [L, L] map
        q, k, v = (t.transpose(-1, -2).contiguous() for t in (q, k, v))
        if self.reg_k is not None:
            k = torch.cat([k, self.reg_k.to(k.dtype).expand(b, -1, -1, -1)], dim=2)  # [B, nh, L + R, hd]
            v = torch.cat([v, self.reg_v.to(v.dtype).expand(b, -1, -1, -1)], dim=2)
        if self.fused_attn and not torch.jit.is_tracing():
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # explicit matmuls: the reference path, and what fvcore's tracer counts
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, nh, L, L + R]
            out = attn @ v
        return out.transpose(-1, -2).reshape(b, c, h, w)


class CeilAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)``: halves a map, rounding up.

    While ``torch.export`` traces, the same values (bit for bit) come from a zero-padded sum over a count of the
    pixels under each window, because the exporter cannot prove ceil mode's output-size rule for a symbolic size.
    """

    def __init__(self):
        super().__init__(2, 2, ceil_mode=True, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C, ceil(H / 2), ceil(W / 2)]."""
        if not torch.compiler.is_exporting():
            return super().forward(x)
        h, w = x.shape[-2:]
        # pad to 2 * ((n - 1) // 2 + 1): the output size is then written as a stride-2 conv's, the shortcut's
        pad = (0, 2 * ((w - 1) // 2 + 1) - w, 0, 2 * ((h - 1) // 2 + 1) - h)
        count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), 2)
        return F.avg_pool2d(F.pad(x, pad), 2) / count


class GatedFusion(nn.Module):
    """``a = proj_a(x_a)``, ``b = proj_b(x_b)`` (1x1 convs), ``out = sigmoid(gate(a)) * a + sigmoid(gate(b)) * b``.

    The 1-channel ``gate`` conv is shared by both branches.

    Args:
        in_dim: Channels of each input.
        out_dim: Channels of the output.
    """

    def __init__(self, in_dim: int, out_dim: int):
        check_int(type(self).__name__, 'in_dim', in_dim, minimum=1)
        check_int(type(self).__name__, 'out_dim', out_dim, minimum=1)
        super().__init__()
        self.proj_a = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        self.proj_b = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        self.gate = nn.Conv2d(out_dim, 1, kernel_size=1)

    def forward(self, x_a: Tensor, x_b: Tensor) -> Tensor:
        """x_a, x_b: [B, Cin, H, W] -> [B, Cout, H, W]."""
        a, b = conv1x1(self.proj_a, x_a), conv1x1(self.proj_b, x_b)  # oneDNN in CPU inference (onednn.py)
        return torch.sigmoid(self.gate(a)) * a + torch.sigmoid(self.gate(b)) * b


class GambaBlock(nn.Module):
    """Gamba block: Gamba Cell on the first half of the channels, 2-D MHSA on the second, gated fusion.

    Args:
        dim: Channels p (even, and p / 2 divisible by ``num_heads``).
        grid_size: (H0, W0) map size the position terms are built for (any size runs).
        num_heads: Heads of the MHSA.
        num_registers: Register tokens of the MHSA.
        d_state, d_conv, expand: Of the Cell's Mamba mixer.
    """

    def __init__(
            self,
            dim: int,
            grid_size: Union[int, Tuple[int, int]],
            num_heads: int = 4,
            num_registers: int = 1,
            d_state: int = 64,
            d_conv: int = 4,
            expand: int = 2,
    ):
        name = type(self).__name__
        check_gamba_args(name, dim, num_heads, num_registers, d_state, d_conv, expand)
        check_size(name, 'grid_size', grid_size)
        super().__init__()
        self.dim = dim
        half = dim // 2
        self.cell = GambaCell(half, grid_size, d_state=d_state, d_conv=d_conv, expand=expand)
        self.mhsa = RegisterMHSA2d(half, grid_size, num_heads=num_heads, num_registers=num_registers)
        self.fusion = GatedFusion(half, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, p, H, W] -> [B, p, H, W]."""
        check_input_shape(x, 4, 1, self.dim, f'GambaBlock: expected a [B, C={self.dim}, H, W] map')
        x_a, x_b = x.chunk(2, dim=1)
        return self.fusion(self.cell(x_a), self.mhsa(x_b))

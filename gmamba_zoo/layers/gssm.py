"""GSSM: the global selective state-space block of GMamba.

Paper: "Enabling True Global Perception in State Space Models for Visual Tasks" (GMamba, ICLR 2026).

A plug-in residual block for a feature map of any size. A 2-D DFT front end (FEM, the Frequency Encoding Module)
splits the map into a low and a high frequency band; FGMM (the Frequency-Guided Modulation Module) uses them to
modulate the input of a one-way selective scan over the raster-flattened map. Because every DFT coefficient depends
on every pixel, every output of the block depends on every input position, which a causal scan alone cannot do.

Choices where the paper is silent (see also the README):
    * The low band is the set of frequencies with |f| < ``freq_cutoff`` cycles/sample on both axes (default 0.25,
      half of each axis' band). The mask is symmetric in +/-f, so both bands are real images. The high band is
      computed as ``x - low``, which equals the inverse DFT of the complementary mask.
    * The DFT is orthonormal and always runs in float32 with autocast disabled (cuFFT in half precision accepts only
      power-of-two sizes; CPU FFTs have no bfloat16).
    * FGMM's 1x1 convolutions act per position and are written as ``nn.Linear`` on channels-last tokens
      (identical parameters and arithmetic).
    * The band weights and the modulation ratio are scalars initialised to 0 (sigmoid = 0.5).
    * Layer scale (``timm.layers.LayerScale``) on both residual branches, initialised to 0 by default so an inserted
      block is exactly the identity until trained.
    * The depthwise 1-D conv has kernel 3 and same (non-causal) padding, as the paper describes, so a scan-only mixer
      reaches one position ahead of its output in scan order, and no further.
    * No windowed variant is offered: the block is always global.

Evaluation shortcut (same function, same parameters): FEM's band projections, band weights and the first fusion
layer are all linear, and the high band is ``x - low``, so together they equal ``x @ Mx.T + low @ Ml.T + c`` with
[2m, m] matrices folded from the parameters on every call (see :meth:`FrequencyEncoding.folded_weights`). That takes
4m^2 multiply-adds per token instead of 8m^2, plus 4m^3 for the fold, so it is used when H*W > 2m (the early, large
maps); smaller maps run the layers one by one. Gradients reach every parameter either way; the FLOP counter counts
what runs.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.layers import DropPath, LayerScale, Mlp

from ..ops import autocast_off
from .ssm import SelectiveSSM

__all__ = [
    'frequency_split', 'low_band', 'low_band_mask', 'FrequencyEncoding', 'FrequencyGuidedModulation', 'GSSMMixer',
    'GMambaBlock', 'InplaceGELU',
]


def low_band_mask(height: int, width: int, cutoff: float, device: Optional[torch.device] = None) -> Tensor:
    """Boolean mask over the ``rfft2`` spectrum of an H x W map: True where |f_h| < cutoff and |f_w| < cutoff.

    Returns:
        [H, W // 2 + 1] bool.
    """
    fh = torch.fft.fftfreq(height, device=device).abs() < cutoff
    fw = torch.fft.rfftfreq(width, device=device) < cutoff
    return fh[:, None] & fw[None, :]


def low_band(x: Tensor, cutoff: float = 0.25) -> Tensor:
    """The low frequency band of a map (see :func:`frequency_split`), [..., H, W] float32."""
    if not 0.0 < cutoff <= 0.5:
        raise ValueError(f'low_band / frequency_split: cutoff must be in (0, 0.5] cycles per sample, got {cutoff}.')
    h, w = x.shape[-2:]
    with autocast_off(x.device.type):
        spec = torch.fft.rfft2(x.float(), norm='ortho')
        return torch.fft.irfft2(spec * low_band_mask(h, w, cutoff, x.device), s=(h, w), norm='ortho')


def frequency_split(x: Tensor, cutoff: float = 0.25) -> Tuple[Tensor, Tensor]:
    """Split a map into its low and high frequency bands with a 2-D real DFT, in float32.

    Args:
        x: [..., H, W] map, any float dtype.
        cutoff: Frequencies with |f| < cutoff (cycles per sample) on both axes form the low band; in (0, 0.5].

    Returns:
        ``(low, high)``, each [..., H, W] float32, with ``low + high == x``.
    """
    low = low_band(x, cutoff)
    with autocast_off(x.device.type):
        return low, x.float() - low


class FrequencyEncoding(nn.Module):
    """FEM: DFT band split, a linear map and a learned scalar weight per band, fusion MLP over [x, low, high].

    Attributes:
        fold: Whether to evaluate through :meth:`folded_weights`: ``None`` (default) when H*W > 2m, or True/False.
    """

    fold: Optional[bool] = None

    def __init__(self, dim: int, cutoff: float = 0.25):
        super().__init__()
        self.cutoff = cutoff
        self.low_proj = nn.Linear(dim, dim)
        self.high_proj = nn.Linear(dim, dim)
        self.low_weight = nn.Parameter(torch.zeros(()))
        self.high_weight = nn.Parameter(torch.zeros(()))
        self.fuse = nn.Sequential(nn.Linear(3 * dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def folded_weights(self) -> Tuple[Tensor, Tensor, Tensor]:
        """(Mx, Ml, c) with fuse[0]([x, s_l * low_proj(low), s_h * high_proj(x - low)]) = x Mx^T + low Ml^T + c.

        With fuse[0]'s weight split as [W_x | W_l | W_h] by input block and s = sigmoid(band weight):
        Mx = W_x + s_h W_h W_high, Ml = s_l W_l W_low - s_h W_h W_high, c = b + s_l W_l b_low + s_h W_h b_high.
        """
        with autocast_off(self.low_weight.device.type):  # fold in float32; the matmuls that use it may autocast
            w_x, w_l, w_h = self.fuse[0].weight.chunk(3, dim=1)  # [2m, m] each
            s_l, s_h = torch.sigmoid(self.low_weight), torch.sigmoid(self.high_weight)
            w_high = s_h * torch.mm(w_h, self.high_proj.weight)
            m_x = w_x + w_high
            m_l = s_l * torch.mm(w_l, self.low_proj.weight) - w_high
            c = self.fuse[0].bias + s_l * F.linear(self.low_proj.bias, w_l) + s_h * F.linear(self.high_proj.bias, w_h)
        return m_x, m_l, c

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, m, H, W] -> F_freq [B, H*W, m] (tokens)."""
        tokens = lambda t: t.flatten(2).transpose(1, 2).to(x.dtype)  # [B, L, m]
        m, area = x.shape[1], x.shape[-2] * x.shape[-1]
        if self.fold if self.fold is not None else area > 2 * m:
            low = low_band(x, self.cutoff)
            m_x, m_l, c = self.folded_weights()
            hidden = F.linear(tokens(x), m_x, c) + F.linear(tokens(low), m_l)
        else:
            low, high = frequency_split(x, self.cutoff)
            low = self.low_proj(tokens(low)) * torch.sigmoid(self.low_weight)
            high = self.high_proj(tokens(high)) * torch.sigmoid(self.high_weight)
            hidden = self.fuse[0](torch.cat([tokens(x), low, high], dim=-1))
        return self.fuse[2](self.fuse[1](hidden))


class FrequencyGuidedModulation(nn.Module):
    """FGMM: enhance the frequency features, mix them with the input by a per-sample softmax, scale by a gate."""

    def __init__(self, dim: int):
        super().__init__()
        quarter, half = max(dim // 4, 1), max(dim // 2, 1)
        self.enhance = nn.Sequential(nn.Linear(dim, quarter), nn.ReLU(), nn.Linear(quarter, dim))
        self.select = nn.Sequential(nn.Linear(dim, quarter), nn.ReLU(), nn.Linear(quarter, 2))
        self.importance = nn.Sequential(nn.Linear(dim, half), nn.ReLU(), nn.Linear(half, 1))
        self.ratio = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, f_freq: Tensor) -> Tensor:
        """x, f_freq: [B, L, m] -> modulated x [B, L, m]."""
        f_enh = f_freq * torch.sigmoid(self.enhance(f_freq))
        a = self.select((x + f_enh).mean(1)).softmax(-1)[:, None, :]  # [B, 1, 2]
        x_mod = a[..., :1] * x + a[..., 1:] * f_enh
        g = torch.sigmoid(self.importance(f_freq)).mean(1, keepdim=True)  # [B, 1, 1]
        return x_mod * (1 + torch.sigmoid(self.ratio) * g)


class GSSMMixer(SelectiveSSM):
    """The GSSM token mixer: in_proj, depthwise conv, FEM + FGMM on one half, selective scan, out_proj.

    Maps [B, H, W, C] to [B, H, W, C]. A :class:`~gmamba_zoo.layers.ssm.SelectiveSSM` with E = C / 2, the conv (same
    padding) and SiLU over both halves, FEM + FGMM modulating the scan input x, and no gate in the scan: the other half
    z is concatenated to the scan's output.

    Args:
        dim: Channels C (even); the scan runs on m = C / 2 channels, the other half passes beside it.
        d_state: State size N of the scan.
        d_conv: Kernel of the depthwise 1-D conv (odd; same padding).
        dt_rank: Rank of the step-size projection; ``'auto'`` is ceil(C / 16).
        freq_cutoff: Low band cut-off in cycles per sample, see :func:`frequency_split`.
        frequency_path: With False the FEM/FGMM front end is left out: a plain (causal) scan-only mixer, for
            ablations and for showing what the frequency path adds.
        **ssm_kwargs: The initial step-size range (dt_min, dt_max, dt_init_floor), see :class:`SelectiveSSM`.
    """

    def __init__(
            self,
            dim: int,
            d_state: int = 8,
            d_conv: int = 3,
            dt_rank: Union[int, str] = 'auto',
            freq_cutoff: float = 0.25,
            frequency_path: bool = True,
            **ssm_kwargs,
    ):
        if dim < 2 or dim % 2:
            raise ValueError(f'GSSMMixer: dim must be an even number of channels >= 2, got {dim}.')
        front_end = dict(fem=partial(FrequencyEncoding, cutoff=freq_cutoff), fgmm=FrequencyGuidedModulation)
        super().__init__(
            dim, dim // 2, d_state=d_state, d_conv=d_conv, causal=False, conv_z=True, gate='concat', dt_rank=dt_rank,
            front_end=front_end if frequency_path else None, **ssm_kwargs)
        if not frequency_path:
            self.fem = self.fgmm = None

    def modulate(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """FEM + FGMM: x [B, m, H*W], ``size`` = (H, W) -> modulated x [B, m, H*W]; identity without them."""
        if self.fem is None:
            return x
        f_freq = self.fem(x.unflatten(2, size))  # [B, L, m]
        return self.fgmm(x.transpose(1, 2), f_freq).transpose(1, 2)


class InplaceGELU(nn.GELU):
    """``nn.GELU`` that overwrites its input when autograd will not need it (inference, or frozen layers).

    In the block's MLP the input is the first linear layer's fresh output, so nothing else reads it; reusing it saves
    the block's largest temporary, the [B, H, W, 4C] hidden map, with the same values.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


class GMambaBlock(nn.Module):
    """GMamba block: ``x + ls1 * Mixer(LN(x))``, then ``x + ls2 * MLP(LN(x))``, with drop path.

    Args:
        dim: Channels C.
        channels_last: Input and output are [B, H, W, C] (timm's Swin stages) instead of [B, C, H, W].
        mlp_ratio: Hidden width of the MLP relative to C.
        layer_scale_init_value: Initial layer scale; 0 makes the block the identity when inserted.
        drop_path: Stochastic depth rate.
        mixer_kwargs: Passed to :class:`GSSMMixer` (d_state, d_conv, dt_rank, freq_cutoff, frequency_path, ...).
    """

    def __init__(
            self,
            dim: int,
            channels_last: bool = False,
            mlp_ratio: float = 4.0,
            layer_scale_init_value: float = 0.0,
            drop_path: float = 0.0,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            act_layer: Type[nn.Module] = InplaceGELU,
            **mixer_kwargs,
    ):
        super().__init__()
        self.dim, self.channels_last = dim, channels_last
        self.norm1 = norm_layer(dim)
        self.mixer = GSSMMixer(dim, **mixer_kwargs)
        self.ls1 = LayerScale(dim, layer_scale_init_value)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.ls2 = LayerScale(dim, layer_scale_init_value)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W], or [B, H, W, C] when ``channels_last``; returns the same layout."""
        layout = '[B, H, W, C]' if self.channels_last else '[B, C, H, W]'
        if x.dim() != 4 or x.shape[-1 if self.channels_last else 1] != self.dim:
            raise ValueError(f'GMambaBlock: expected a {layout} map with C={self.dim}, got shape {tuple(x.shape)}.')
        if not x.is_floating_point():
            raise TypeError(f'GMambaBlock: expected a floating-point map, got {x.dtype}.')
        if not self.channels_last:
            x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path1(self.ls1(self.mixer(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x if self.channels_last else x.permute(0, 3, 1, 2)

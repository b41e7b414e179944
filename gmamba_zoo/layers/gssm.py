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
    * Global by default: one DFT and one scan over the whole map. ``window_size`` runs the mixer on non-overlapping
      windows instead (the map zero-padded at the bottom and right to whole windows before the norm, each window
      its own DFT and scan), which reproduces the authors' released code (7x7 windows) as an ablation; a windowed
      block is not global (its outputs' gradients are zero outside their window: docs/official-code.md).
    * The paper's ablations are options of the mixer (``frequency_path``, ``fgmm``, ``adaptive_fem``,
      ``scan_directions``; see :class:`GSSMMixer` and docs/ablations.md). Without the adaptive FEM, FGMM is guided by
      the fixed DFT low band; with several scan directions each extra one owns a FEM and a ``dt_proj``, the split the
      paper's four-way parameter count implies.

Evaluation shortcut (same function, same parameters): FEM's band projections, band weights and the first fusion
layer are all linear, and the high band is ``x - low``, so together they equal ``x @ Mx.T + low @ Ml.T + c`` with
[2m, m] matrices folded from the parameters on every call (see :meth:`FrequencyEncoding.folded_weights`). That takes
4m^2 multiply-adds per token instead of 8m^2, plus 4m^3 for the fold, so it is used when H*W > 2m (the early, large
maps); smaller maps run the layers one by one. Gradients reach every parameter either way; the FLOP counter counts
what runs.

Eager inference (autograd off, no tracer or compiler; docs/cpu-cost.md): the block reads one contiguous channels-last
copy of the map instead of a permuted view, scales its branches and adds its residuals in place (the modules'
arithmetic bit for bit, so torch.fx graphs still reproduce eager exactly) unless a hook could hold a branch; FEM's
fold is kept while its parameters' versions are unchanged and, on CPU in float32, runs as two in-place batched
products on the strided token views; the low-band mask is kept per map size. Outputs are those of the module path to
float32 rounding (tests/test_block_fast_paths.py); training runs the module path.
"""
from __future__ import annotations

import functools
import inspect
import math
from functools import partial
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor
from timm.layers import DropPath, LayerScale, Mlp, register_notrace_function

from ..compat import compiling_dynamic_shapes, forward_hooks_registered
from ..ops import autocast_off, selective_scan_fn
from ._checks import check_bool, check_callable, check_choice, check_int, check_keys, check_real, check_size
from .onednn import linear, linear_weights
from .ssm import SSM_INIT_KWARGS, SelectiveSSM, check_ssm_args, init_dt_proj

torch.fx.wrap('linear')  # an FX leaf for every tracer: a traced graph takes eager's oneDNN route (onednn.py)
torch.fx.wrap('selective_scan_fn')  # and the scan of several directions (ssm.py registers it with timm)

__all__ = [
    'frequency_split', 'low_band', 'low_band_mask', 'low_band_matrix', 'FrequencyEncoding', 'FrequencyGuidedModulation',
    'GSSMMixer', 'GMambaBlock', 'GMambaMlp', 'InplaceGELU', 'ScanDirection', 'SCAN_ORDERS', 'check_gmamba_block_kwargs',
    'check_gssm_mixer_args',
]


def _low_bins(n: int, cutoff: float, device: Optional[torch.device], bins: Optional[int] = None) -> Tensor:
    """Whether each of the first ``bins`` (default n) DFT bins of length ``n`` has |f| < cutoff: bin k is
    min(k, n - k) / n cycles per sample. Integer arithmetic and one comparison in float64, so the mask is the same at
    every size and traces with a symbolic ``n`` (unlike ``torch.fft.fftfreq``)."""
    k = torch.arange(n if bins is None else bins, device=device)
    return torch.minimum(k, n - k).double() < cutoff * n


def low_band_mask(height: int, width: int, cutoff: float, device: Optional[torch.device] = None) -> Tensor:
    """Boolean mask over the ``rfft2`` spectrum of an H x W map: True where |f_h| < cutoff and |f_w| < cutoff.

    Returns:
        [H, W // 2 + 1] bool.
    """
    return _low_bins(height, cutoff, device)[:, None] & _low_bins(width, cutoff, device, width // 2 + 1)[None, :]


def low_band_matrix(n: int, cutoff: float, device: Optional[torch.device] = None) -> Tensor:
    """The low band along one axis as a matrix: ``P @ v`` keeps the DFT bins of v with |f| < cutoff.

    The mask is symmetric in +/-f, so P is real, symmetric and circulant: ``P[j, k] = p[j - k]`` with
    ``p[d] = (1/n) sum_f mask_f cos(2 pi f d / n)``. The 2-D mask is the outer product of the axes' masks, so the low
    band of an H x W map is ``P_H @ x @ P_W``: what ONNX export uses instead of the FFT (see :func:`low_band`). Built
    in float64 (angles up to 2 pi n) from ``arange`` and products only, so it traces with a symbolic ``n``.

    Returns:
        [n, n] float32.
    """
    k = torch.arange(n, device=device)
    d = torch.arange(1 - n, n, device=device)  # every j - k
    angle = (d[:, None] * k[None, :]).double() * (2 * math.pi / n)
    p = torch.cos(angle) @ _low_bins(n, cutoff, device).double() / n  # [2n - 1]
    return p[k[:, None] - k[None, :] + (n - 1)].float()


@register_notrace_function  # FX leaf: the FFT island (float32, autocast off) stays one call in a traced graph
@torch.fx.wrap
def low_band(x: Tensor, cutoff: float = 0.25) -> Tensor:
    """The low frequency band of a map (see :func:`frequency_split`), [..., H, W] float32.

    While ``torch.onnx.export`` traces, the same filter runs as two matrix products (:func:`low_band_matrix`): the
    exporter's FFT translation does not run in onnxruntime at every size, and its FFT shape checks would fix a batch of
    1 (the exporter traces with ``backed_size_oblivious``).
    """
    if not 0.0 < cutoff <= 0.5:
        raise ValueError(f'low_band / frequency_split: cutoff must be in (0, 0.5] cycles per sample, got {cutoff}.')
    h, w = x.shape[-2:]
    with autocast_off(x.device.type):
        if not isinstance(x, torch.fx.Proxy) and x.numel() == 0 and not torch.compiler.is_compiling():
            return x.float() * 0  # MKL's FFT refuses empty batches; the low band of nothing is empty (autograd kept)
        if torch.onnx.is_in_onnx_export():
            # P_H x P_W as two products over the last dim of contiguous maps (P is symmetric): plain 2-D products
            # for the tracer, no batch dims to broadcast or fold that it would have to check for size 1
            low = F.linear(_dense(x.float()), low_band_matrix(w, cutoff, x.device))
            return F.linear(_dense(low.transpose(-1, -2)), low_band_matrix(h, cutoff, x.device)).transpose(-1, -2)
        spec = torch.fft.rfft2(x.float(), norm='ortho')
        if _eager_no_grad(x):  # the same mask every call at a map size: made once, kept
            mask = _cached_low_band_mask(h, w, cutoff, x.device)
        else:
            mask = low_band_mask(h, w, cutoff, x.device)
        return torch.fft.irfft2(spec * mask, s=(h, w), norm='ortho')


def _eager_no_grad(x: Tensor) -> bool:
    """Eager, no tracer or compiler at work, and autograd off: where tensors made from constants or parameters may be
    kept between calls (a tracer would record them as constants; autograd would need them made in its graph)."""
    return type(x) is Tensor and not torch.is_grad_enabled() and not _tracing(x)


@functools.lru_cache(maxsize=64)
def _cached_low_band_mask(height: int, width: int, cutoff: float, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # a normal tensor, usable wherever the caller runs next
        return low_band_mask(height, width, cutoff, device)


def _dense(x: Tensor) -> Tensor:
    """A contiguous copy, made whatever x's layout (``.contiguous()`` would make a tracer decide on x's layout)."""
    return x.clone(memory_format=torch.contiguous_format)


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
        self._folded_cache: Optional[Tuple[tuple, Tuple[Tensor, Tensor, Tensor]]] = None
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

    def _folded_weights_cached(self) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`folded_weights`, kept while no parameter it reads has changed (autograd off: no graph to keep).

        A parameter changed in place (an optimizer step, ``load_state_dict``, ``copy_``) bumps its version counter;
        one replaced (``.to()``, ``.data =``) has another tensor behind it: either makes the key differ."""
        params = (self.fuse[0].weight, self.fuse[0].bias, self.low_proj.weight, self.low_proj.bias,
                  self.high_proj.weight, self.high_proj.bias, self.low_weight, self.high_weight)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cache = getattr(self, '_folded_cache', None)  # a module pickled before the cache existed has none
        if cache is None or cache[0] != key:
            cache = self._folded_cache = (key, self.folded_weights())
        return cache[1]

    def forward(self, x: Tensor, low: Optional[Tensor] = None) -> Tensor:
        """x: [B, m, H, W] -> F_freq [B, H*W, m] (tokens). ``low``: x's low band when already computed (several scan
        directions, each with its own FEM, share one DFT of the same map)."""
        if low is None:
            low = low_band(x, self.cutoff)
        if self.fold is not None:
            hidden = self.fused(x, low, self.fold)
        elif torch.compiler.is_exporting():
            # One graph for every map size: the folded form, valid at every size (a torch.cond on the size would keep
            # eager's choice, but doubles the export time); it costs 4m^3 multiply-adds more than eager on H*W <= 2m.
            hidden = self.fused(x, low, True)
        elif torch.compiler.is_compiling() and compiling_dynamic_shapes():
            # One graph for every map size, without a guard on the size (it would recompile) or a torch.cond (which
            # inductor's graph cache refuses): the layer-by-layer form, valid at every size. Where eager folds, it costs
            # 4m^2 (B*H*W - m) more multiply-adds: 1.5-5% of a model's at 224 x 224 and at 800 x 1216.
            hidden = self.fused(x, low, False)
        else:
            hidden = fem_fused(self, x, low)
        if (_eager_no_grad(x) and type(self.fuse[1]) is nn.ReLU
                and not forward_hooks_registered(self.fuse[0], self.fuse[1])):
            hidden = hidden.relu_()  # a temporary no hook holds: no second [B, L, 2m] map
        else:
            hidden = self.fuse[1](hidden)
        return linear(self.fuse[2], hidden)  # the linear layers: oneDNN in CPU inference (onednn.py)

    def fused(self, x: Tensor, low: Tensor, fold: bool) -> Tensor:
        """fuse[0] on [x, s_l low_proj(low), s_h high_proj(x - low)]: x, low [B, m, H, W] -> [B, H*W, 2m].

        Args:
            x: The map.
            low: Its low band (float32).
            fold: Through :meth:`folded_weights` (fewer multiply-adds per token) or layer by layer; same function.
        """
        if fold:
            eager = _eager_no_grad(x)
            m_x, m_l, c = self._folded_weights_cached() if eager else self.folded_weights()
            if eager and _blas_fold(x, low):
                # c + x Mx^T + low Ml^T as two batched products accumulated in place: BLAS reads the strided token
                # views (x's channel-interleaved rows, low's transposed map) as they are, where a linear layer would
                # copy each, and the sum needs no third pass
                hidden = torch.baddbmm(c, _tokens(x, x.dtype), m_x.t().expand(x.shape[0], -1, -1))
                return hidden.baddbmm_(_tokens(low, x.dtype), m_l.t().expand(x.shape[0], -1, -1))
            return linear_weights(_tokens(x, x.dtype), m_x, c) + linear_weights(_tokens(low, x.dtype), m_l)
        with autocast_off(x.device.type):
            high = x.float() - low
        low = linear(self.low_proj, _tokens(low, x.dtype)) * torch.sigmoid(self.low_weight)
        high = linear(self.high_proj, _tokens(high, x.dtype)) * torch.sigmoid(self.high_weight)
        return linear(self.fuse[0], torch.cat([_tokens(x, x.dtype), low, high], dim=-1))


def _blas_fold(x: Tensor, low: Tensor) -> bool:
    """Whether :meth:`FrequencyEncoding.fused`, in eager inference, may fold through in-place batched products: CPU
    float32 without autocast. BLAS reads the strided token views as they are and accumulates the second product into
    the first; two linear layers would copy each view and need a third pass for the sum."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and low.dtype == torch.float32
            and not torch.is_autocast_enabled('cpu'))


def _tokens(t: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, m, H, W] -> [B, H*W, m] tokens in ``dtype``."""
    return t.flatten(2).transpose(1, 2).to(dtype)


def fold_pays_off(x: Tensor) -> bool:
    """Whether :class:`FrequencyEncoding` on x [B, m, H, W] is cheaper folded: H*W > 2m (a SymBool when tracing)."""
    return x.shape[-2] * x.shape[-1] > 2 * x.shape[1]


@register_notrace_function  # FX leaf: the folded or layer-by-layer choice is made on each call's map size
@torch.fx.wrap
def fem_fused(fem: FrequencyEncoding, x: Tensor, low: Tensor) -> Tensor:
    """``fem.fused(x, low, fold)`` with ``fold`` chosen by :func:`fold_pays_off` (``fem.fold`` when set)."""
    return fem.fused(x, low, fold_pays_off(x) if fem.fold is None else fem.fold)


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
        g = torch.sigmoid(self.importance(f_freq)).mean(1, keepdim=True)  # [B, 1, 1]
        scale = 1 + torch.sigmoid(self.ratio) * g
        if _eager_no_grad(x) and x.dtype == f_enh.dtype == scale.dtype:  # the same products and sums, in place
            return (a[..., :1] * x).add_(f_enh.mul_(a[..., 1:])).mul_(scale)
        x_mod = a[..., :1] * x + a[..., 1:] * f_enh
        return x_mod * scale


#: The scan orders of ``scan_directions`` (1, 2 or 4 of them, in this order): raster (row-major) forward and reverse,
#: then column-major forward and reverse, as VMamba's cross-scan.
SCAN_ORDERS = ('row', 'row_reverse', 'column', 'column_reverse')
_DIRECTION_COUNTS = (1, 2, 4)


def check_gssm_mixer_args(owner: str, kwargs: Mapping[str, Any], arg: str = '{}') -> None:
    """Check the front-end and scan-direction arguments of :class:`GSSMMixer` present in ``kwargs``, alone and together
    (absent ones count as their defaults).

    Raises:
        TypeError: A value of the wrong type.
        ValueError: A value out of range, or options that contradict each other (``fgmm=False`` with
            ``frequency_path=False``: a scan-only block has no FGMM to leave out).
    """
    if 'freq_cutoff' in kwargs:
        check_real(owner, arg.format('freq_cutoff'), kwargs['freq_cutoff'], 0, 0.5, low_open=True)
    for name in ('frequency_path', 'fgmm', 'adaptive_fem'):
        if name in kwargs:
            check_bool(owner, arg.format(name), kwargs[name])
    if 'scan_directions' in kwargs:
        check_int(owner, arg.format('scan_directions'), kwargs['scan_directions'], minimum=1)
        check_choice(owner, arg.format('scan_directions'), kwargs['scan_directions'], _DIRECTION_COUNTS)
    frequency_path, fgmm, adaptive_fem = (kwargs.get(k, True) for k in ('frequency_path', 'fgmm', 'adaptive_fem'))
    if not frequency_path:
        for name in ('fgmm', 'adaptive_fem'):
            if not kwargs.get(name, True):
                raise ValueError(
                    f'{owner}: {arg.format(name)}=False has no meaning with {arg.format("frequency_path")}=False (the '
                    f'scan-only block has neither FEM nor FGMM to leave out); leave {arg.format(name)} at True.')
    elif not fgmm and not adaptive_fem:
        raise ValueError(
            f'{owner}: {arg.format("fgmm")}=False together with {arg.format("adaptive_fem")}=False leaves no front end '
            f'(expected at most one of them False); for a block without the frequency path pass '
            f'{arg.format("frequency_path")}=False.')


class ScanDirection(nn.Module):
    """What a scan direction other than the first has of its own: a step-size projection and, in a block with the
    adaptive FEM, its own FEM (see :class:`GSSMMixer`, ``scan_directions``).

    Args:
        dim: The scan's width m.
        dt_rank: Rank of the step-size projection.
        fem: The direction's FEM, or None.
        **init_kwargs: The initial step-size range (dt_min, dt_max, dt_init_floor), see
            :func:`~gmamba_zoo.layers.ssm.init_dt_proj`.
    """

    def __init__(self, dim: int, dt_rank: int, fem: Optional[FrequencyEncoding] = None, **init_kwargs):
        super().__init__()
        self.fem = fem
        self.dt_proj = nn.Linear(dt_rank, dim)
        init_dt_proj(self.dt_proj, **init_kwargs)


def _to_order(x: Tensor, size: Sequence[int], order: str) -> Tensor:
    """x [B, m, H*W] in raster order -> the same positions in scan order ``order`` (one of :data:`SCAN_ORDERS`)."""
    if order.startswith('column'):
        x = x.unflatten(2, size).transpose(2, 3).flatten(2)
    return x.flip(2) if order.endswith('reverse') else x


def _per_direction(t: Tensor, k: int) -> List[Tensor]:
    """[K*B, ...] -> K tensors [B, ...]: an exact split (``chunk`` would make torch.export guard on the batch), by
    index (torch.fx cannot iterate over ``unbind``)."""
    t = t.unflatten(0, (k, -1))
    return [t[i] for i in range(k)]


def _from_order(y: Tensor, size: Sequence[int], order: str) -> Tensor:
    """The inverse of :func:`_to_order`: y [B, m, H*W] in scan order ``order`` -> raster order."""
    if order.endswith('reverse'):
        y = y.flip(2)
    if order.startswith('column'):
        y = y.unflatten(2, (size[1], size[0])).transpose(2, 3).flatten(2)
    return y


class GSSMMixer(SelectiveSSM):
    """The GSSM token mixer: in_proj, depthwise conv, FEM + FGMM on one half, selective scan, out_proj.

    Maps [B, H, W, C] to [B, H, W, C]. A :class:`~gmamba_zoo.layers.ssm.SelectiveSSM` with E = C / 2, the conv (same
    padding) and SiLU over both halves, FEM + FGMM modulating the scan input x, and no gate in the scan: the other half
    z is concatenated to the scan's output.

    The paper's ablations are options (docs/ablations.md), each leaving out parameters and never adding any to the
    default block, whose parameters, state-dict keys and outputs they leave unchanged:

    ===============================  ======================================================================
    option                           the paper's row
    ===============================  ======================================================================
    ``frequency_path=False``         "SSM only": neither FEM nor FGMM; a causal scan-only mixer
    ``fgmm=False``                   "FEM+SSM": FEM's output F_freq is the scan's input (no FGMM)
    ``adaptive_fem=False``           "DFT+FGMM+SSM": no learned band projections, band weights or fusion;
                                     F_freq is the fixed DFT low band of x (|f| < ``freq_cutoff``)
    ``scan_directions=2`` / ``4``    bidirectional / four-way scanning (Table 6)
    ===============================  ======================================================================

    With several scan directions, direction k scans the modulated map in its order (:data:`SCAN_ORDERS`: raster
    forward and reverse, then column-major forward and reverse) and the outputs, back in raster order, are summed
    before z is concatenated, as VMamba merges its cross-scan. Each direction after the first has its own FEM (when
    the block has the adaptive FEM) and its own step-size projection ``dt_proj``, in :attr:`extra_directions`;
    in_proj, the conv, FGMM, x_proj, A_log, D and out_proj are shared. That split is the one the paper's parameter
    counts imply (four-way scanning adds 7.44 M over 7 ConvNeXt-S blocks: three FEMs and three dt_projs are 7.437 M;
    docs/ablations.md has the arithmetic and the alternatives it rules out). The directions' FEMs share one DFT of
    the map, and the directions run as one scan over a K-times batch.

    Args:
        dim: Channels C (even); the scan runs on m = C / 2 channels, the other half passes beside it.
        d_state: State size N of the scan.
        d_conv: Kernel of the depthwise 1-D conv (odd; same padding).
        dt_rank: Rank of the step-size projection; ``'auto'`` is ceil(C / 16).
        freq_cutoff: Low band cut-off in cycles per sample, see :func:`frequency_split`.
        frequency_path: With False the FEM/FGMM front end is left out: a plain (causal) scan-only mixer, for
            ablations and for showing what the frequency path adds.
        fgmm: With False, FGMM is left out and FEM's output is the scan's input.
        adaptive_fem: With False, FEM is left out and FGMM is guided by the fixed DFT low band of x.
        scan_directions: 1 (default), 2 or 4 scan orders, see above.
        **ssm_kwargs: The initial step-size range (dt_min, dt_max, dt_init_floor), see :class:`SelectiveSSM`.

    Raises:
        TypeError, ValueError: A bad argument or a contradictory combination (:func:`check_gssm_mixer_args`).
    """

    def __init__(
            self,
            dim: int,
            d_state: int = 8,
            d_conv: int = 3,
            dt_rank: Union[int, str] = 'auto',
            freq_cutoff: float = 0.25,
            frequency_path: bool = True,
            fgmm: bool = True,
            adaptive_fem: bool = True,
            scan_directions: int = 1,
            **ssm_kwargs,
    ):
        if dim < 2 or dim % 2:
            raise ValueError(f'GSSMMixer: dim must be an even number of channels >= 2, got {dim}.')
        check_gssm_mixer_args(type(self).__name__, dict(
            freq_cutoff=freq_cutoff, frequency_path=frequency_path, fgmm=fgmm, adaptive_fem=adaptive_fem,
            scan_directions=scan_directions))
        front_end = {}
        if frequency_path and adaptive_fem:
            front_end['fem'] = partial(FrequencyEncoding, cutoff=freq_cutoff)
        if frequency_path and fgmm:
            front_end['fgmm'] = FrequencyGuidedModulation
        super().__init__(
            dim, dim // 2, d_state=d_state, d_conv=d_conv, causal=False, conv_z=True, gate='concat', dt_rank=dt_rank,
            front_end=front_end or None, **ssm_kwargs)
        self.freq_cutoff, self.frequency_path, self.scan_directions = freq_cutoff, frequency_path, scan_directions
        for name in ('fem', 'fgmm'):
            if name not in front_end:
                setattr(self, name, None)
        self.extra_directions: Optional[nn.ModuleDict] = None
        if scan_directions > 1:  # registered last: a one-way block's parameters and random draws are unchanged
            self.extra_directions = nn.ModuleDict({
                order: ScanDirection(
                    self.d_inner, self.dt_rank, FrequencyEncoding(self.d_inner, freq_cutoff) if 'fem' in front_end
                    else None, **ssm_kwargs)
                for order in SCAN_ORDERS[1:scan_directions]})

    def modulate(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """FEM + FGMM: x [B, m, H*W], ``size`` = (H, W) -> modulated x [B, m, H*W]; identity without them."""
        return self._front_end(x, size, self.fem)

    def _front_end(self, x: Tensor, size: Sequence[int], fem: Optional[nn.Module], low: Optional[Tensor] = None
                   ) -> Tensor:
        """:meth:`modulate` with a given FEM (a scan direction's) and, optionally, x's low band already computed."""
        if not self.frequency_path:
            return x
        x_map = x.unflatten(2, size)
        if fem is not None:
            f_freq = fem(x_map) if low is None else fem(x_map, low)  # [B, L, m]
        else:  # no adaptive FEM: the fixed band split's low band guides FGMM
            f_freq = _tokens(low_band(x_map, self.freq_cutoff) if low is None else low, x.dtype)
        if self.fgmm is None:  # FEM + SSM: FEM's output is the scan's input
            return f_freq.transpose(1, 2)
        return self.fgmm(x.transpose(1, 2), f_freq).transpose(1, 2)

    def ssm(self, xs: Tensor, z: Tensor, size: Sequence[int]) -> Tensor:
        """The front end and the scan, over each scan direction: xs [B, m, L] -> y [B, m, L] (raster order)."""
        if self.extra_directions is None:
            return super().ssm(xs, z, size)
        n, r = self.d_state, self.dt_rank
        orders = SCAN_ORDERS[:self.scan_directions]
        dt_projs = [self.dt_proj] + [d.dt_proj for d in self.extra_directions.values()]
        if self.fem is not None:  # a FEM per direction, one DFT
            low = low_band(xs.unflatten(2, size), self.freq_cutoff)
            fems = [self.fem] + [d.fem for d in self.extra_directions.values()]
            mods = [self._front_end(xs, size, fem, low) for fem in fems]
        else:
            mods = [self.modulate(xs, size)] * len(orders)
        u = torch.cat([_to_order(x, size, order) for x, order in zip(mods, orders)])  # [K*B, m, L]
        dt, B, C = linear(self.x_proj, u.transpose(1, 2)).split([r, n, n], dim=-1)
        # each direction's step-size bias added here (in float32, as the scan adds delta_bias), so one scan runs all
        dt = torch.cat([F.linear(d, proj.weight).transpose(1, 2) + proj.bias.float()[:, None]
                        for d, proj in zip(_per_direction(dt, len(orders)), dt_projs)])
        y = selective_scan_fn(u, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2), C.transpose(1, 2),
                              self.D.float(), delta_softplus=True)
        ys = [_from_order(y_k, size, order) for y_k, order in zip(_per_direction(y, len(orders)), orders)]
        out = ys[0]
        for y_k in ys[1:]:  # element-wise adds (a sum over a stacked dim would count as a reduction's FLOPs)
            out = out + y_k
        return out


class InplaceGELU(nn.GELU):
    """``nn.GELU`` that overwrites its input when autograd will not need it (inference, or frozen layers).

    Only for an input nothing else reads: a forward hook on the module that produced it would see GELU's output in
    place of that module's. :class:`GMambaBlock` no longer uses it: its :class:`GMambaMlp` applies GELU in place
    only when no hook can observe the overwritten map.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def _tracing(x: Tensor) -> bool:
    compiler = getattr(torch, 'compiler', None)
    return (isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing() or torch.jit.is_scripting()
            or bool(compiler is not None and compiler.is_compiling()))


class GMambaMlp(Mlp):
    """timm's ``Mlp`` (same modules, same state-dict keys) whose GELU reuses fc1's output buffer when nobody can tell.

    fc1's output, the [B, H, W, 4C] hidden map, is the block's largest temporary. GELU overwrites it in place (same
    values, one such map less at the peak) only when all of these hold: the activation is an ``nn.GELU``; autograd
    does not need fc1's output (inference, frozen layers); no forward hook or pre-hook is registered on ``fc1`` or
    ``act`` nor globally, so no hook holds the map GELU would overwrite; and the model is not being traced or compiled
    (a compiler plans its own buffers). Otherwise it runs as timm's ``Mlp``, ``act`` called as a module, so every
    hook sees each module's true output.
    """

    def forward(self, x: Tensor) -> Tensor:
        x = linear(self.fc1, x)  # fc1(x), through oneDNN in CPU inference (layers/onednn.py)
        if self._gelu_in_place(x):
            x = torch.ops.aten.gelu_(x, approximate=self.act.approximate)
        else:
            x = self.act(x)
        x = self.drop1(x)
        x = self.norm(x)
        x = linear(self.fc2, x)
        return self.drop2(x)

    def _gelu_in_place(self, x: Tensor) -> bool:
        if type(self.act) is not nn.GELU or _tracing(x) or (torch.is_grad_enabled() and x.requires_grad):
            return False
        return not forward_hooks_registered(self.fc1, self.act)


def _block_arg_names() -> Tuple[str, ...]:
    """Every keyword argument a GMambaBlock accepts (its own and, through ``mixer_kwargs``, its mixer's)."""
    skip = {'self', 'dim', 'mixer_kwargs', 'ssm_kwargs'}
    own = [p for p in inspect.signature(GMambaBlock.__init__).parameters if p not in skip]
    mixer = [p for p in inspect.signature(GSSMMixer.__init__).parameters if p not in skip]
    return tuple(dict.fromkeys(own + mixer + list(SSM_INIT_KWARGS)))


def check_gmamba_block_kwargs(
        owner: str,
        kwargs: Mapping[str, Any],
        where: Optional[str] = None,
        reserved: Optional[Mapping[str, str]] = None,
) -> None:
    """Check keyword arguments for :class:`GMambaBlock` (all but ``dim``), before any block is built.

    Args:
        owner: Who is building, for the message (``'GMambaBlock'``, ``'add_gmamba'``, a model name).
        kwargs: The arguments.
        where: The argument that holds them (``'gmamba_kwargs'``): keys are then named ``gmamba_kwargs['d_state']``.
        reserved: Block arguments the caller sets itself, each with what to do instead (``drop_path``: pass
            ``drop_path_rate``).

    Raises:
        TypeError: An unknown or reserved key, or a value of the wrong type.
        ValueError: A value out of range (``d_state=0``, ``freq_cutoff=0.7``, an even ``d_conv``, ...).
    """
    arg = f"{where}['{{}}']" if where else '{}'
    check_keys(owner, where or 'the keyword arguments', kwargs, _block_arg_names())
    for key, instead in (reserved or {}).items():
        if key in kwargs:
            raise TypeError(f'{owner}: {arg.format(key)} is set by {owner} itself, got {kwargs[key]!r}; {instead}.')
    if 'channels_last' in kwargs:
        check_bool(owner, arg.format('channels_last'), kwargs['channels_last'])
    if 'mlp_ratio' in kwargs:
        check_real(owner, arg.format('mlp_ratio'), kwargs['mlp_ratio'], 0, low_open=True)
    if 'layer_scale_init_value' in kwargs:
        check_real(owner, arg.format('layer_scale_init_value'), kwargs['layer_scale_init_value'])
    if 'drop_path' in kwargs:
        check_real(owner, arg.format('drop_path'), kwargs['drop_path'], 0, 1, high_open=True)
    for name in ('norm_layer', 'act_layer'):
        if name in kwargs:
            check_callable(owner, arg.format(name), kwargs[name])
    check_gssm_mixer_args(owner, kwargs, arg)
    if kwargs.get('window_size') is not None:
        check_size(owner, arg.format('window_size'), kwargs['window_size'])
    check_ssm_args(owner, kwargs, causal=False, arg=arg)


class GMambaBlock(nn.Module):
    """GMamba block: ``x + ls1 * Mixer(LN(x))``, then ``x + ls2 * MLP(LN(x))``, with drop path.

    Every argument is checked when the block is built (:func:`check_gmamba_block_kwargs`): a bad one raises a
    ``TypeError`` or ``ValueError`` naming it, the value and what is expected.

    Args:
        dim: Channels C (even).
        channels_last: Input and output are [B, H, W, C] (timm's Swin stages) instead of [B, C, H, W].
        mlp_ratio: Hidden width of the MLP relative to C.
        layer_scale_init_value: Initial layer scale; 0 makes the block the identity when inserted.
        drop_path: Stochastic depth rate, in [0, 1).
        norm_layer: Norm of both branches.
        act_layer: Activation of the MLP (:class:`GMambaMlp` applies an ``nn.GELU`` in place when nothing can see it).
        window_size: None (default): the mixer sees the whole map, as the paper's theory states. An int or (h, w):
            it runs on non-overlapping windows of that size (the released code's 7x7 windowing, as an ablation).
        mixer_kwargs: Passed to :class:`GSSMMixer` (d_state, d_conv, dt_rank, freq_cutoff, and the ablations
            frequency_path, fgmm, adaptive_fem, scan_directions: docs/ablations.md).

    Attributes:
        grad_checkpointing: Recompute the block's activations in backward (see :meth:`set_grad_checkpointing`).
    """

    grad_checkpointing: bool = False

    def __init__(
            self,
            dim: int,
            channels_last: bool = False,
            mlp_ratio: float = 4.0,
            layer_scale_init_value: float = 0.0,
            drop_path: float = 0.0,
            norm_layer: Type[nn.Module] = nn.LayerNorm,
            act_layer: Type[nn.Module] = nn.GELU,
            window_size: Optional[Union[int, Tuple[int, int]]] = None,
            **mixer_kwargs,
    ):
        name = type(self).__name__
        check_int(name, 'dim', dim, minimum=2)
        if dim % 2:
            raise ValueError(f'{name}: dim must be an even int >= 2 (the scan takes half the channels), got {dim}.')
        check_gmamba_block_kwargs(name, dict(
            channels_last=channels_last, mlp_ratio=mlp_ratio, layer_scale_init_value=layer_scale_init_value,
            drop_path=drop_path, norm_layer=norm_layer, act_layer=act_layer, window_size=window_size, **mixer_kwargs))
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f'{name}: mlp_ratio must give the MLP at least one hidden channel (dim * mlp_ratio >= 1), '
                             f'got mlp_ratio={mlp_ratio!r} with dim={dim}.')
        super().__init__()
        self.dim, self.channels_last = dim, channels_last
        self.window_size = None if window_size is None else check_size(name, 'window_size', window_size)
        self.norm1 = norm_layer(dim)
        self.mixer = GSSMMixer(dim, **mixer_kwargs)
        self.ls1 = LayerScale(dim, layer_scale_init_value)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = GMambaMlp(dim, hidden, act_layer=act_layer)
        self.ls2 = LayerScale(dim, layer_scale_init_value)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the block's activations in backward instead of keeping them (for where no enclosing stage or
        wrapper checkpoints it; a model's ``set_grad_checkpointing`` already covers its inserted blocks)."""
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W], or [B, H, W, C] when ``channels_last``; returns the same layout."""
        check_block_input(x, self.dim, self.channels_last)
        if self.grad_checkpointing and torch.is_grad_enabled() and not (
                isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing() or torch.jit.is_scripting()):
            return torch.utils.checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        if not self.channels_last:
            x = x.permute(0, 2, 3, 1)
        if self._inplace_residuals(x):
            # Same arithmetic (bit for bit) in fewer passes and allocations: one contiguous channels-last map that the
            # norms, linear layers and residuals read in place (a permuted NCHW map makes each of them a slow strided
            # pass), each branch scaled in place and added in place.
            shortcut = x.contiguous()
            branch = _inplace(torch.Tensor.mul_, torch.mul, self._mix(shortcut), self.ls1.gamma)
            if shortcut is x:  # the caller's own tensor (a contiguous channels-last input): never written
                x = shortcut + branch
            else:
                x = _inplace(torch.Tensor.add_, torch.add, shortcut, branch)
            branch = _inplace(torch.Tensor.mul_, torch.mul, self.mlp(self.norm2(x)), self.ls2.gamma)
            x = _inplace(torch.Tensor.add_, torch.add, x, branch)
            return x if self.channels_last else x.permute(0, 3, 1, 2).contiguous()
        x = x + self.drop_path1(self.ls1(self._mix(x)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x if self.channels_last else x.permute(0, 3, 1, 2)

    def _inplace_residuals(self, x: Tensor) -> bool:
        """Whether :meth:`_forward` may scale the branches and add the residuals in place: eager inference (a tracer
        records the modules; with autograd on, in-place work would cost copies for backward), plain ``LayerScale``
        modules, drop paths that are the identity (none, or eval mode), and no hook that could hold a branch's output
        (on the mixer, the MLP, their last layers, the layer scales or the drop paths)."""
        if not _eager_no_grad(x):
            return False
        if type(self.ls1) is not LayerScale or type(self.ls2) is not LayerScale or self.ls1.inplace or self.ls2.inplace:
            return False
        if self.training and not (type(self.drop_path1) is nn.Identity and type(self.drop_path2) is nn.Identity):
            return False
        return not forward_hooks_registered(
            self.mixer, self.mixer.out_proj, self.mlp, self.mlp.fc2, self.mlp.drop2, self.ls1, self.ls2,
            self.drop_path1, self.drop_path2)

    def _mix(self, x: Tensor) -> Tensor:
        """The mixer branch before its layer scale: x [B, H, W, C] -> [B, H, W, C], whole map or per window."""
        if self.window_size is None:
            return self.mixer(self.norm1(x))
        b, h, w, c = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))  # zero rows/columns at the bottom and right, before the norm
        nh, nw = x.shape[1] // wh, x.shape[2] // ww
        win = self.norm1(x).reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, wh, ww, c)
        win = self.mixer(win).reshape(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        return win.reshape(b, nh * wh, nw * ww, c)[:, :h, :w]


def _inplace(inplace_op, op, t: Tensor, other: Tensor) -> Tensor:
    """``inplace_op(t, other)`` where it gives what ``op(t, other)`` gives, bit for bit: when the result's type is
    t's (under autocast a bfloat16 branch times a float32 scale is float32, which t cannot hold)."""
    return inplace_op(t, other) if torch.result_type(t, other) == t.dtype else op(t, other)


@register_notrace_function  # FX leaf: the check reads the input's shape and dtype when the traced graph runs
@torch.fx.wrap
def check_block_input(x: Tensor, dim: int, channels_last: bool) -> None:
    """Raise unless x is a floating-point [B, C, H, W] map ([B, H, W, C] when ``channels_last``) with C = ``dim``."""
    layout = '[B, H, W, C]' if channels_last else '[B, C, H, W]'
    if x.dim() != 4 or x.shape[-1 if channels_last else 1] != dim:
        raise ValueError(f'GMambaBlock: expected a {layout} map with C={dim}, got shape {tuple(x.shape)}.')
    if not x.is_floating_point():
        raise TypeError(f'GMambaBlock: expected a floating-point map, got {x.dtype}.')

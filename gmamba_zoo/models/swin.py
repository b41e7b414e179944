"""Swin at any input size: the one way the package builds a model for an input size (H, W).

timm's Swin is built for one input size (224): its patch embedding asserts the size and its shifted-window attention
masks are precomputed for it. Every Swin this package builds, a GMamba Swin's base as well as the plain Swin a FLOP
report or a benchmark compares against, comes from :func:`create_for_input_size`, so they all compute the same way:

* ``strict_img_size=False``: the attention masks are built for the actual map on each forward;
* the patch embedding pads the image on the bottom and right to a multiple of the patch size
  (``PatchEmbed.dynamic_img_pad``, set on the built module, so the model's construction arguments stay plain data);
* the windows stay those of the checkpoint (7); ``img_size`` (224 by default) only sets the map sizes the stages'
  window and shift sizes are laid out for (a stage whose map is no larger than the window neither shifts nor pads);
* an empty batch gives an empty output, as timm's other models do: timm's ``SwinTransformerBlock`` cannot reshape a
  batch of zero maps, so each block is an :class:`AnyBatchSwinBlock`, the same module (class swapped, same
  parameters and computation) that passes an empty batch through.

The other backbones (ResNet, ConvNeXt, vGamba) run at any size as built; for them ``img_size`` is not passed on.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from timm.models import model_entrypoint
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

from ..compat import size_oblivious_tracing
from .variants import ZOO_VARIANTS

__all__ = ['is_swin', 'create_for_input_size', 'AnyBatchSwinBlock', 'AnySizeSwinBlock', 'AnySizePatchMerging',
           'AnySizePatchEmbed']

_TIMM_SWIN_MODULE = 'timm.models.swin_transformer'


class AnyBatchSwinBlock(SwinTransformerBlock):
    """timm's ``SwinTransformerBlock`` (same parameters and computation) that also takes an empty batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy) and x.shape[0] == 0:
            return x.clone()  # [0, H, W, C]: timm's reshape(B, -1, C) cannot infer -1 from zero elements
        return super().forward(x)


class AnySizeSwinBlock(AnyBatchSwinBlock):
    """:class:`AnyBatchSwinBlock` whose window arithmetic follows a symbolic map size (same values as timm's).

    timm pads a map to ``H + (ws - H % ws) % ws`` and builds the shifted-window mask with slice assignments; a
    tracer can prove neither that the padded size splits into windows nor trace the assignments. Here the padded size
    is written as ``ws * n`` with ``n = ceil(H / ws)`` windows, and the mask's regions come from comparisons on the
    position, so ``torch.export`` keeps H and W symbolic and ``torch.fx`` traces the mask. While ``torch.export``
    traces, the block (timm's window attention with it) runs size-oblivious
    (:func:`~gmamba_zoo.compat.size_oblivious_tracing`): a window count may be 1, and the graph is the same then.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        with _export_context():
            return super().forward(x)

    def get_attn_mask(
            self,
            x: Optional[torch.Tensor] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> Optional[torch.Tensor]:
        """Mask of the shifted windows of the padded map x [B, Hp, W, C]: [num_windows, ws*ws, ws*ws] (0 / -100)."""
        if x is None or not any(self.shift_size):
            return super().get_attn_mask(x, device, dtype)
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        hp, wp = x.shape[1], x.shape[2]
        rows, cols = torch.arange(hp, device=x.device), torch.arange(wp, device=x.device)
        # timm's regions along an axis: [0, n - ws), [n - ws, n - shift), [n - shift, n), numbered 0, 1, 2
        region_h = (rows >= hp - wh).long() + (rows >= hp - sh).long()
        region_w = (cols >= wp - ww).long() + (cols >= wp - sw).long()
        img_mask = (3 * region_h[:, None] + region_w[None, :]).to(x.dtype)  # [Hp, Wp]
        windows = _copy_view(img_mask.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3), -1, self.window_area)
        attn_mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """Shifted-window attention on x [B, H, W, C] -> [B, H, W, C] (timm's steps, sizes in symbolic form)."""
        b, h, w, c = x.shape
        (wh, ww), shift = self.window_size, self.shift_size
        has_shift = any(shift)
        shifted_x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if has_shift else x
        nh, nw = (h + wh - 1) // wh, (w + ww - 1) // ww  # windows per column and row
        shifted_x = torch.nn.functional.pad(shifted_x, (0, 0, 0, nw * ww - w, 0, nh * wh - h))
        x_windows = _copy_view(shifted_x.view(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5), b * nh * nw, -1, c)
        attn_mask = self.get_attn_mask(shifted_x) if getattr(self, 'dynamic_mask', False) else self.attn_mask
        attn_windows = self.attn(x_windows, mask=attn_mask)  # [B * nh * nw, wh * ww, C]
        windows = attn_windows.view(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        shifted_x = _copy_view(windows, b, nh * wh, nw * ww, c)
        # the crop as a gather: a tracer cannot prove h <= wh * ceil(h / wh), which a slice needs
        shifted_x = shifted_x.index_select(1, torch.arange(h, device=x.device))
        shifted_x = shifted_x.index_select(2, torch.arange(w, device=x.device))
        return torch.roll(shifted_x, shifts=shift, dims=(1, 2)) if has_shift else shifted_x


def _export_context() -> contextlib.AbstractContextManager:
    """Size-oblivious tracing while ``torch.export`` traces (timm's Swin arithmetic needs it), else nothing."""
    return size_oblivious_tracing() if torch.compiler.is_exporting() else contextlib.nullcontext()


def _copy_view(x: torch.Tensor, *shape: Any) -> torch.Tensor:
    """``x.reshape(shape)`` of a permuted x, always as a contiguous copy (what it is in eager: x is not contiguous),
    so that a tracer has no contiguity to decide on a symbolic size."""
    return x.clone(memory_format=torch.contiguous_format).view(shape)


class AnySizePatchMerging(PatchMerging):
    """timm's ``PatchMerging`` (same parameters and values) padding odd maps to ``2 * ceil(H / 2)``, a size a tracer
    can halve symbolically (timm's ``H + H % 2`` it cannot)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] -> [B, ceil(H / 2), ceil(W / 2), out_dim]."""
        with _export_context():
            b, h, w, c = x.shape
            nh, nw = (h + 1) // 2, (w + 1) // 2
            x = torch.nn.functional.pad(x, (0, 0, 0, 2 * nw - w, 0, 2 * nh - h))
            x = _copy_view(x.reshape(b, nh, 2, nw, 2, c).permute(0, 1, 3, 4, 2, 5), b, nh, nw, 4 * c)
            return self.reduction(self.norm(x))


class AnySizePatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` (same parameters and values) whose padding to a multiple of the patch size is written as
    ``p * ceil(H / p) - H``, so the embedded map's size stays a plain ``ceil(H / p)`` for a tracer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> the embedded patches (timm's format)."""
        with _export_context():
            if self.dynamic_img_pad:
                (ph, pw), (h, w) = self.patch_size, x.shape[-2:]
                x = torch.nn.functional.pad(x, (0, pw * ((w + pw - 1) // pw) - w, 0, ph * ((h + ph - 1) // ph) - h))
            return super().forward(x)  # timm's own padding is then zero


def is_swin(name: str) -> bool:
    """True for a zoo Swin (``swin_t_gmamba``, ...) or one of timm's ``swin_transformer`` models."""
    variant = ZOO_VARIANTS.get(name)
    if variant is not None:
        return variant.family == 'swin'
    return model_entrypoint(name).__module__ == _TIMM_SWIN_MODULE


def create_for_input_size(name: str, img_size: Optional[Sequence[int]] = None, **kwargs: Any) -> nn.Module:
    """Build the model ``name`` (a zoo model or a plain timm model), randomly initialised, for inputs of ``img_size``.

    The model's own entrypoint is called (not ``timm.create_model``), so the model records no construction arguments
    of ours; a zoo model's builder calls this for its timm base.

    Args:
        name: A registered model name without a pretrained tag.
        img_size: (H, W) the model is laid out for; Swin only (see the module docstring), None for its default.
        kwargs: Model arguments (``num_classes``, ``drop_path_rate``, ...); those set to None are dropped, as
            ``timm.create_model`` does.

    Returns:
        The model; every Swin runs at any input size (attention masks per forward, padding to the patch size).
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    entrypoint = model_entrypoint(name)
    if not is_swin(name):
        return entrypoint(pretrained=False, **kwargs)
    if img_size is not None:
        kwargs['img_size'] = tuple(img_size)
    if name in ZOO_VARIANTS:  # its builder comes back here for its timm base
        return entrypoint(pretrained=False, **kwargs)
    kwargs.setdefault('strict_img_size', False)
    model = entrypoint(pretrained=False, **kwargs)
    if not model.patch_embed.strict_img_size:
        model.patch_embed.dynamic_img_pad = True
    for module in model.modules():
        if type(module) is SwinTransformerBlock:
            module.__class__ = AnySizeSwinBlock
        elif type(module) is PatchMerging:
            module.__class__ = AnySizePatchMerging
        elif type(module) is PatchEmbed and module.dynamic_img_pad:
            module.__class__ = AnySizePatchEmbed
    return model

"""Swin at any input size: the one way the package builds a model for an input size (H, W).

timm's Swin is built for one input size (224): its patch embedding asserts the size and its shifted-window attention
masks are precomputed for it. Every Swin this package builds, a GMamba Swin's base as well as the plain Swin a FLOP
report or a benchmark compares against, comes from :func:`create_for_input_size`, so they all compute the same way:

* ``strict_img_size=False``: the attention masks are built for the actual map on each forward;
* the patch embedding pads the image on the bottom and right to a multiple of the patch size
  (``PatchEmbed.dynamic_img_pad``, set on the built module, so the model's construction arguments stay plain data);
* the windows stay those of the checkpoint (7); ``img_size`` (224 by default) only sets the map sizes the stages'
  window and shift sizes are laid out for (a stage whose map is no larger than the window neither shifts nor pads).

The other backbones (ResNet, ConvNeXt, vGamba) run at any size as built; for them ``img_size`` is not passed on.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch.nn as nn
from timm.models import model_entrypoint

from .variants import ZOO_VARIANTS

__all__ = ['is_swin', 'create_for_input_size']

_TIMM_SWIN_MODULE = 'timm.models.swin_transformer'


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
    return model

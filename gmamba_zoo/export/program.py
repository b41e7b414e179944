"""``torch.export`` programs of zoo models with a dynamic batch, height and width, and the models to export.

:func:`export_program` is ``torch.export.export`` with the dynamic shapes of :func:`dynamic_image_shapes`; the models
need nothing else (any size-dependent choice in them traces symbolically: docs/export.md lists how). The batch runs
from 1, height and width from twice the network's stride (:func:`min_export_size`: exporters specialise a dimension
that can be 1, and a map of 1 x 1 is what a smaller input gives) to ``max_size``.

:func:`build_model` makes the model an exporter sees from a name: pretrained, randomly initialised or with a checkpoint
file's weights, as a classifier or as a ``features_only`` feature extractor (the full model, weights loaded, then its
features taken through ``forward_intermediates``, so a checkpoint of the full model loads into a feature extractor).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.export import Dim

from ..hub.checkpoint import load_checkpoint_into, read_checkpoint
from ..models import feature_info_dicts
from ..models.features import FeatureGetterNet

__all__ = [
    'build_model', 'min_export_size', 'dynamic_image_shapes', 'example_input', 'export_program', 'DEFAULT_MAX_SIZE',
    'DEFAULT_MAX_BATCH',
]

DEFAULT_MAX_SIZE = 4096  # largest height and width: the scan's ONNX form reaches 2 ** 20 positions (1024^2 at stride 4)
DEFAULT_MAX_BATCH = 1024


def build_model(
        name: str,
        pretrained: bool = False,
        checkpoint: Optional[Union[str, Path]] = None,
        features_only: bool = False,
        **kwargs: Any,
) -> nn.Module:
    """The zoo model ``name`` in eval mode, ready to export.

    Args:
        name: A registered model name (``gmamba-zoo list``), optionally with a pretrained tag.
        pretrained: Load the pretrained weights of its default cfg (ignored with ``checkpoint``).
        checkpoint: A checkpoint file of the full model (any layout :func:`~gmamba_zoo.hub.checkpoint.read_checkpoint`
            reads), loaded strictly as ``timm.create_model(..., checkpoint_path=...)`` does; else random or
            pretrained weights.
        features_only: Return the feature maps of every tap of ``feature_info`` (what ``features_only=True``
            returns) instead of the classifier's logits.
        kwargs: Model arguments passed to ``timm.create_model``.

    Returns:
        The model (or feature extractor) in eval mode.
    """
    import timm  # the zoo's models are registered by importing gmamba_zoo.models, done by this package's import

    model = timm.create_model(name, pretrained=pretrained and checkpoint is None, **kwargs)
    if checkpoint is not None:
        load_checkpoint_into(model, read_checkpoint(checkpoint), source=str(checkpoint))
    if features_only:
        model = FeatureGetterNet(model, out_indices=tuple(range(len(feature_info_dicts(model)))))
    return model.eval()


def min_export_size(model: nn.Module) -> int:
    """Smallest height and width of an exported program: twice the network's total stride (its deepest map 2 x 2)."""
    return 2 * int(max((i.get('reduction', 1) for i in feature_info_dicts(model)), default=1))


def dynamic_image_shapes(
        model: nn.Module,
        max_size: int = DEFAULT_MAX_SIZE,
        max_batch: int = DEFAULT_MAX_BATCH,
) -> Tuple[Dict[int, Dim]]:
    """``dynamic_shapes`` for ``torch.export`` / ``torch.onnx.export`` of ``model(x)``: batch, height and width."""
    low = min_export_size(model)
    if max_size < low:
        raise ValueError(f'dynamic_image_shapes: max_size={max_size} is below the smallest exportable size {low}.')
    return ({0: Dim('batch', min=1, max=max_batch), 2: Dim('height', min=low, max=max_size),
             3: Dim('width', min=low, max=max_size)},)


def example_input(model: nn.Module, img_size: Sequence[int] = (224, 224), batch: int = 2) -> torch.Tensor:
    """A random [batch, in_chans, H, W] batch on the model's device and dtype; the exporters trace with it (a batch
    of 2: an example size of 1 would fix the batch)."""
    ref = next(model.parameters())
    in_chans = getattr(getattr(model, 'input_spec', None), 'in_chans', 3)
    h, w = img_size
    low = min_export_size(model)
    if min(h, w) < low:
        raise ValueError(f'example_input: img_size {tuple(img_size)} is below the smallest exportable size {low}.')
    return torch.randn(batch, in_chans, h, w, device=ref.device, dtype=ref.dtype)


def export_program(
        model: nn.Module,
        img_size: Sequence[int] = (224, 224),
        max_size: int = DEFAULT_MAX_SIZE,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` with a dynamic batch, height and width.

    The program keeps the selective scan as one ``gmamba_zoo::selective_scan`` node (the backend chosen at export
    time: run it on the device it was exported on) and the DFT as FFTs.

    Args:
        model: A zoo model or feature extractor, in eval mode.
        img_size: (H, W) of the example input it is traced with.
        max_size: Largest height and width.
    """
    with torch.no_grad():
        return torch.export.export(model, (example_input(model, img_size),),
                                   dynamic_shapes=dynamic_image_shapes(model, max_size))

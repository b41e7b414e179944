"""Zoo models as torchvision detection backbones: timm ``features_only`` maps + torchvision's FeaturePyramidNetwork.

:func:`detection_backbone` turns any zoo model (a name, or a model already built) into what torchvision's
``FasterRCNN``, ``MaskRCNN``, ``RetinaNet`` and ``KeypointRCNN`` take as ``backbone``: an ``nn.Module`` with an
``out_channels`` attribute whose forward maps images [B, C, H, W] to an ``OrderedDict`` of NCHW FPN maps, keys
``'0', '1', ...`` (finest first) plus ``'pool'`` (the max-pooled coarsest level) by default, as torchvision's own
``resnet_fpn_backbone`` does, so torchvision's default anchor generator (5 levels) and RoI pooler (``'0'..'3'``) fit.

Example::

    from torchvision.models.detection import FasterRCNN
    from gmamba_zoo.integrations.detection import detection_backbone

    model = FasterRCNN(detection_backbone('resnet50_gmamba', pretrained=True), num_classes=91)

Choices:
    * Default taps: the last four feature maps with strides 4, 8, 16 and 32 (ResNet and vGamba's stride-2 stem tap is
      left out, as in torchvision's ResNet-FPN).
    * BatchNorm stays trainable by default; ``frozen_bn=True`` replaces it with ``FrozenBatchNorm2d`` (torchvision's
      choice for detection with its small per-GPU batches). The GMamba blocks use LayerNorm and are not affected.
    * Images must be at least the largest tap's stride on each side; torchvision's ``GeneralizedRCNNTransform``
      resizes to ``min_size`` and pads to a multiple of 32, so detection inputs always are.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..compat.extras import require_extra
from ..models.features import FeatureGetterNet, feature_info_dicts, is_features_only

__all__ = ['DetectionBackbone', 'detection_backbone', 'build_detector', 'default_out_indices']


def default_out_indices(reductions: Sequence[int]) -> tuple:
    """Indices of the last four taps whose strides are at least 4 (e.g. (1, 2, 3, 4) for ResNet, (0, 1, 2, 3) Swin)."""
    idx = [i for i, r in enumerate(reductions) if r >= 4]
    return tuple(idx[-4:])


class DetectionBackbone(nn.Module):
    """A feature extractor followed by a torchvision ``FeaturePyramidNetwork``.

    Args:
        body: A timm ``features_only`` model returning a list of NCHW maps, with ``feature_info``.
        fpn_channels: Channels of every FPN output (``out_channels``).
        extra_blocks: torchvision's ``ExtraFPNBlock`` (default ``LastLevelMaxPool``, the extra ``'pool'`` level), or
            None for none.
        norm_layer: Norm inside the FPN convs (torchvision's argument), None for none.

    Attributes:
        out_channels: ``fpn_channels``, read by torchvision's detectors.
        strides: Stride of each returned map, in order (``'pool'`` is twice the last tap's).
    """

    def __init__(
            self,
            body: nn.Module,
            fpn_channels: int = 256,
            extra_blocks: Optional[nn.Module] = None,
            norm_layer: Optional[Any] = None,
            use_pool_level: bool = True,
    ):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
        if extra_blocks is None and use_pool_level:
            extra_blocks = LastLevelMaxPool()
        self.body = body
        taps = feature_info_dicts(body)
        self.fpn = FeaturePyramidNetwork(
            [t['num_chs'] for t in taps], fpn_channels, extra_blocks=extra_blocks, norm_layer=norm_layer)
        self.out_channels = fpn_channels
        reductions = [t['reduction'] for t in taps]
        self.strides = reductions + ([reductions[-1] * 2] if isinstance(extra_blocks, LastLevelMaxPool) else [])

    def forward(self, x: Tensor) -> 'OrderedDict[str, Tensor]':
        """x: [B, C, H, W] images -> OrderedDict ``'0'..'n-1'`` (+ ``'pool'``) of [B, out_channels, H/s, W/s]."""
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def detection_backbone(
        name_or_model: Union[str, nn.Module],
        out_indices: Optional[Sequence[int]] = None,
        fpn_channels: int = 256,
        pretrained: bool = False,
        frozen_bn: bool = False,
        extra_blocks: Optional[nn.Module] = None,
        use_pool_level: bool = True,
        norm_layer: Optional[Any] = None,
        **model_kwargs: Any,
) -> DetectionBackbone:
    """A torchvision detection backbone with an FPN on any zoo (or timm) model.

    Args:
        name_or_model: A model name (``timm.create_model(name, features_only=True, ...)`` builds it), a full timm
            model with ``forward_intermediates`` (wrapped with timm's ``FeatureGetterNet``), or a ``features_only``
            model (used as is; ``out_indices`` must then be None).
        out_indices: Feature taps to use; default: the last four with strides >= 4 (:func:`default_out_indices`).
        fpn_channels: ``out_channels`` of the FPN.
        pretrained: Load the registry's pretrained weights (names only).
        frozen_bn: Replace BatchNorm2d in the body with FrozenBatchNorm2d.
        extra_blocks: torchvision ``ExtraFPNBlock``; default ``LastLevelMaxPool`` when ``use_pool_level``.
        use_pool_level: Add the ``'pool'`` level (torchvision's default 5-level layout).
        norm_layer: Norm in the FPN convs.
        model_kwargs: For ``timm.create_model`` (``in_chans``, ``drop_path_rate``, ``gmamba_depths``, ...).

    Returns:
        A :class:`DetectionBackbone`: forward maps [B, C, H, W] to an OrderedDict of [B, fpn_channels, h, w].

    Raises:
        TypeError: ``name_or_model`` is neither a name nor a model with ``feature_info``.
        ValueError: ``out_indices`` given with a ``features_only`` model, or model kwargs with a model.
    """
    import timm
    require_extra('detection', 'detection_backbone')

    if isinstance(name_or_model, str):
        if out_indices is None:
            with torch.device('meta'):  # structure only: the wrapper's default feature_info lists every tap
                probe = timm.create_model(name_or_model, pretrained=False, features_only=True, **model_kwargs)
            indices = default_out_indices([i['reduction'] for i in feature_info_dicts(probe)])
        else:
            indices = tuple(out_indices)
        body = timm.create_model(name_or_model, pretrained=pretrained, features_only=True, out_indices=indices,
                                 **model_kwargs)
    elif isinstance(name_or_model, nn.Module):
        if pretrained or model_kwargs:
            raise ValueError('detection_backbone: pretrained and model kwargs apply to a model name only; got a model.')
        if is_features_only(name_or_model):
            if out_indices is not None:
                raise ValueError('detection_backbone: got a features_only model: choose its out_indices when '
                                 'creating it (timm.create_model(..., features_only=True, out_indices=...)).')
            body = name_or_model
        elif hasattr(name_or_model, 'forward_intermediates') and hasattr(name_or_model, 'feature_info'):
            reductions = [i['reduction'] for i in feature_info_dicts(name_or_model)]
            indices = tuple(out_indices) if out_indices is not None else default_out_indices(reductions)
            body = FeatureGetterNet(name_or_model, out_indices=indices)
            spec = getattr(name_or_model, 'input_spec', None)
            if spec is not None:  # keep the zoo's input checks on the wrapper that now runs instead of forward
                from ..models._validation import install_input_checks
                install_input_checks(body, spec.name, spec.in_chans)
        else:
            raise TypeError(f'detection_backbone: {type(name_or_model).__name__} has no forward_intermediates and '
                            f'feature_info; pass a timm model, a features_only model or a model name.')
    else:
        raise TypeError(f'detection_backbone: expected a model name or an nn.Module, got '
                        f'{type(name_or_model).__name__}.')
    if frozen_bn:
        from timm.layers import freeze_batch_norm_2d
        body = freeze_batch_norm_2d(body)
    return DetectionBackbone(body, fpn_channels, extra_blocks=extra_blocks, norm_layer=norm_layer,
                             use_pool_level=use_pool_level)



def build_detector(
        arch: str,
        name_or_model: Union[str, nn.Module],
        num_classes: int,
        fpn_channels: int = 256,
        pretrained_backbone: bool = False,
        backbone_kwargs: Optional[dict] = None,
        **detector_kwargs: Any,
) -> nn.Module:
    """torchvision's Faster R-CNN (``arch='faster_rcnn'``) or Mask R-CNN (``'mask_rcnn'``) on a zoo backbone + FPN.

    Args:
        arch: ``'faster_rcnn'`` or ``'mask_rcnn'``.
        name_or_model: See :func:`detection_backbone`.
        num_classes: Including the background class.
        fpn_channels: FPN width.
        pretrained_backbone: Load the backbone's registry weights.
        backbone_kwargs: More arguments for :func:`detection_backbone` (``out_indices``, ``frozen_bn``, model args).
        detector_kwargs: For the torchvision constructor (``min_size``, ``max_size``, ``box_detections_per_img``, ...).
    """
    require_extra('detection', 'build_detector')
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    classes = {'faster_rcnn': FasterRCNN, 'mask_rcnn': MaskRCNN}
    if arch not in classes:
        raise ValueError(f'build_detector: arch must be one of {list(classes)}, got {arch!r}.')
    backbone = detection_backbone(name_or_model, fpn_channels=fpn_channels, pretrained=pretrained_backbone,
                                  **(backbone_kwargs or {}))
    return classes[arch](backbone, num_classes=num_classes, **detector_kwargs)

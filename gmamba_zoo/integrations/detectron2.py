"""detectron2: a zoo model as a detectron2 ``Backbone``, registered in ``BACKBONE_REGISTRY``.

Not tested here: detectron2 has no wheels on PyPI (install it from source, see
https://detectron2.readthedocs.io/en/latest/tutorials/install.html). Usage::

    from detectron2.config import get_cfg
    from gmamba_zoo.integrations.detectron2 import add_gmamba_zoo_config

    cfg = get_cfg()
    add_gmamba_zoo_config(cfg)
    cfg.merge_from_file('COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml')  # from detectron2's model zoo
    cfg.MODEL.BACKBONE.NAME = 'build_gmamba_zoo_fpn_backbone'
    cfg.MODEL.GMAMBA_ZOO.NAME = 'resnet50_gmamba'
    cfg.MODEL.GMAMBA_ZOO.PRETRAINED = True
    cfg.MODEL.WEIGHTS = ''                                # the backbone weights come from timm
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]      # timm's ImageNet mean/std, RGB, 0-255 scale
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = 'RGB'

Output names are ``res2..res5`` (strides 4-32), so detectron2's FPN (``IN_FEATURES: [res2, res3, res4, res5]``) and
the ``p2..p6`` heads of its R-CNN configs work unchanged.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor

try:
    from detectron2.config import CfgNode
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY, Backbone
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('gmamba_zoo.integrations.detectron2 needs detectron2, which is not on PyPI: install it from '
                      'source (pip install "git+https://github.com/facebookresearch/detectron2.git").') from e

__all__ = ['GMambaZooD2Backbone', 'add_gmamba_zoo_config', 'build_gmamba_zoo_backbone', 'build_gmamba_zoo_fpn_backbone']


def add_gmamba_zoo_config(cfg: CfgNode) -> None:
    """Add ``cfg.MODEL.GMAMBA_ZOO`` (NAME, PRETRAINED, OUT_FEATURES, DROP_PATH_RATE) with defaults."""
    cfg.MODEL.GMAMBA_ZOO = CfgNode()
    cfg.MODEL.GMAMBA_ZOO.NAME = 'resnet50_gmamba'
    cfg.MODEL.GMAMBA_ZOO.PRETRAINED = False
    cfg.MODEL.GMAMBA_ZOO.OUT_FEATURES = ['res2', 'res3', 'res4', 'res5']
    cfg.MODEL.GMAMBA_ZOO.DROP_PATH_RATE = 0.0


class GMambaZooD2Backbone(Backbone):
    """timm ``features_only`` maps of a zoo model, named ``res<k>`` for stride 2^k.

    Args:
        model_name: A zoo model name.
        out_features: Which of ``res2..res5`` (strides 4, 8, 16, 32) to return.
        pretrained: Load the registry's pretrained weights.
        in_chans: Input channels.
        model_kwargs: More arguments for ``timm.create_model``.
    """

    def __init__(self, model_name: str, out_features: List[str], pretrained: bool = False, in_chans: int = 3,
                 **model_kwargs):
        super().__init__()
        import timm
        import gmamba_zoo  # noqa: F401
        with torch.device('meta'):
            probe = timm.create_model(model_name, features_only=True, in_chans=in_chans, **model_kwargs)
        names = [f'res{int(r).bit_length() - 1}' for r in probe.feature_info.reduction()]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f'GMambaZooD2Backbone: {unknown} not among {model_name}\'s maps {names}.')
        indices = tuple(names.index(f) for f in out_features)
        self.body = timm.create_model(model_name, features_only=True, pretrained=pretrained, in_chans=in_chans,
                                      out_indices=indices, **model_kwargs)
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(out_features, self.body.feature_info.channels()))
        self._out_feature_strides = dict(zip(out_features, self.body.feature_info.reduction()))

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """x: [B, C, H, W] -> {name: [B, C_i, H / s_i, W / s_i]}."""
        return dict(zip(self._out_features, self.body(x)))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_gmamba_zoo_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME: build_gmamba_zoo_backbone``: the zoo model's maps, no FPN."""
    c = cfg.MODEL.GMAMBA_ZOO
    return GMambaZooD2Backbone(c.NAME, list(c.OUT_FEATURES), pretrained=c.PRETRAINED, in_chans=input_shape.channels,
                               drop_path_rate=c.DROP_PATH_RATE)


@BACKBONE_REGISTRY.register()
def build_gmamba_zoo_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME: build_gmamba_zoo_fpn_backbone``: the zoo model + detectron2's FPN (``MODEL.FPN.*``)."""
    bottom_up = build_gmamba_zoo_backbone(cfg, input_shape)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)

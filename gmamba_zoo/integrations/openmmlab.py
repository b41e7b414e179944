"""OpenMMLab (MMDetection 3.x, MMSegmentation 1.x, MMPretrain): a zoo model as a backbone, by config.

Importing this module registers :class:`GMambaZooBackbone` in MMEngine's root ``MODELS`` registry. The OpenMMLab
libraries' own registries (``mmdet.registry.MODELS``, ``mmseg.registry.MODELS``, ...) are children of it and look
names up in their parent, so one registration serves all of them. In a config::

    custom_imports = dict(imports=['gmamba_zoo.integrations.openmmlab'], allow_failed_imports=False)
    model = dict(
        backbone=dict(type='GMambaZooBackbone', model_name='resnet50_gmamba', out_indices=(1, 2, 3, 4),
                      pretrained=True),
        neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        ...)

``GMambaZooBackbone.feature_channels('resnet50_gmamba', (1, 2, 3, 4))`` gives the neck's ``in_channels``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..compat.extras import require_extra

require_extra('openmmlab', 'gmamba_zoo.integrations.openmmlab (MMDetection also needs mmcv, see '
              'https://mmcv.readthedocs.io/en/latest/get_started/installation.html)')
from mmengine.model import BaseModule  # noqa: E402
from mmengine.registry import MODELS  # noqa: E402

__all__ = ['GMambaZooBackbone']


@MODELS.register_module()
class GMambaZooBackbone(BaseModule):
    """A zoo model's ``features_only`` maps as an OpenMMLab backbone: forward returns a tuple of NCHW maps.

    Args:
        model_name: A zoo model name (``gmamba_zoo.list_models()``).
        out_indices: Feature taps to return (timm indices: for ResNet/vGamba 0 is the stride-2 stem and 1-4 the
            stages; for ConvNeXt/Swin 0-3 are the stages).
        pretrained: Load the registry's pretrained weights (timm, from the Hugging Face Hub).
        checkpoint: A weights file (``.safetensors`` / ``.pth``) of this model to load instead; keys must match.
        norm_eval: Keep every BatchNorm in eval mode while training (MMDetection's default for ResNet backbones).
        model_kwargs: More arguments for ``timm.create_model`` (``drop_path_rate``, ``gmamba_depths``, ...).
        init_cfg: MMEngine's init config (unused: weights come from ``pretrained`` / ``checkpoint``).
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Sequence[int] = (1, 2, 3, 4),
            pretrained: bool = False,
            checkpoint: Optional[str] = None,
            norm_eval: bool = False,
            model_kwargs: Optional[Dict[str, Any]] = None,
            init_cfg: Optional[Dict[str, Any]] = None,
    ):
        super().__init__(init_cfg=init_cfg)
        import timm
        import gmamba_zoo  # noqa: F401  (registers the models)
        if model_name not in gmamba_zoo.list_models():
            raise ValueError(f'GMambaZooBackbone: unknown model {model_name!r}; expected one of '
                             f'{gmamba_zoo.list_models()}.')
        if pretrained and checkpoint:
            raise ValueError('GMambaZooBackbone: give pretrained=True or a checkpoint, not both.')
        overlay = dict(file=str(checkpoint)) if checkpoint else None
        # a checkpoint goes through timm's pretrained loader: into the full model, through the model's own filter
        # (which names missing/unexpected keys when the file is another model's), then the features wrapper
        self.model = timm.create_model(model_name, pretrained=bool(pretrained or checkpoint), features_only=True,
                                       out_indices=tuple(out_indices), pretrained_cfg_overlay=overlay,
                                       **(model_kwargs or {}))
        self.out_channels: List[int] = self.model.feature_info.channels()
        self.strides: List[int] = self.model.feature_info.reduction()
        self.norm_eval = norm_eval

    @staticmethod
    def feature_channels(model_name: str, out_indices: Sequence[int] = (1, 2, 3, 4)) -> List[int]:
        """Channels of the returned maps (for the neck's ``in_channels``), without allocating the model."""
        import timm
        import gmamba_zoo  # noqa: F401
        with torch.device('meta'):
            m = timm.create_model(model_name, features_only=True, out_indices=tuple(out_indices))
        return m.feature_info.channels()

    def train(self, mode: bool = True) -> 'GMambaZooBackbone':
        super().train(mode)
        if mode:
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """x: [B, C, H, W] -> tuple of [B, C_i, H / s_i, W / s_i], one per ``out_indices``."""
        return tuple(self.model(x))


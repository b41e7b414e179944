"""What ``gmamba-zoo info`` reports about one registered model."""
from __future__ import annotations

from typing import Any, Dict

import timm
import torch

from ..ops import cuda_kernel_available, get_scan_backend, resolve_scan_backend
from ._registry import list_models
from .features import feature_info_dicts

__all__ = ['model_info']


def model_info(name: str) -> Dict[str, Any]:
    """Params, feature channels/strides, the scan backends that run (CPU; CUDA when a GPU is present) and the default
    config of a zoo model.

    Raises:
        KeyError: ``name`` is not one of :func:`list_models`.
    """
    models = list_models()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; `gmamba-zoo list` shows the {len(models)} models.")
    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg
    feats = feature_info_dicts(model)
    return {
        'name': name,
        'params_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        'num_features': model.num_features,
        'feature_channels': [f['num_chs'] for f in feats],
        'feature_strides': [f['reduction'] for f in feats],
        'feature_modules': [f['module'] for f in feats],
        'scan_backend_requested': get_scan_backend(),
        'scan_backend_cpu': resolve_scan_backend('cpu'),
        'scan_backend_cuda': resolve_scan_backend('cuda') if torch.cuda.is_available() else None,
        'cuda_kernel_available': cuda_kernel_available(),
        'default_cfg': {k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool, tuple, list, type(None)))},
    }

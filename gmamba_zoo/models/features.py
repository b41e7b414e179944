"""A model's ``feature_info`` in one form, and the timm feature-extraction names the package uses.

timm keeps ``feature_info`` in two forms: a full model holds a list of dicts (``num_chs``, ``reduction``, ``module``,
one per feature tap), and a ``features_only`` wrapper holds a :class:`timm.models.FeatureInfo` over the taps it returns.
:func:`feature_info_dicts` reads either as a list of dicts, so no caller has to tell them apart.

``FeatureGetterNet`` and ``feature_take_indices`` come from :mod:`gmamba_zoo.compat`: timm exports neither.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch.nn as nn
from timm.models import FeatureDictNet, FeatureHookNet, FeatureInfo, FeatureListNet

from ..compat import FeatureGetterNet, feature_take_indices

__all__ = ['feature_info_dicts', 'is_features_only', 'FeatureGetterNet', 'feature_take_indices']

_FEATURE_WRAPPERS = (FeatureDictNet, FeatureListNet, FeatureHookNet, FeatureGetterNet)


def feature_info_dicts(model: nn.Module) -> List[Dict[str, Any]]:
    """The feature taps of ``model`` as a list of dicts (``num_chs``, ``reduction``, ``module``, ...).

    Args:
        model: A timm model (its ``feature_info`` list: every tap) or a ``features_only`` wrapper (its
            ``FeatureInfo``: only the taps the wrapper returns, in order).

    Returns:
        One dict per tap, shallow copies (editing them leaves the model alone); empty when the model has no
        ``feature_info`` or one of neither form. Entries that are not dicts are passed through for the caller to
        reject.
    """
    info = getattr(model, 'feature_info', None)
    if isinstance(info, FeatureInfo):
        return [dict(d) for d in info.get_dicts()]
    if not isinstance(info, (list, tuple)):
        return []
    return [dict(d) if isinstance(d, dict) else d for d in info]


def is_features_only(model: nn.Module) -> bool:
    """True for one of timm's ``features_only`` wrappers (``FeatureListNet``, ``FeatureGetterNet``, ...)."""
    return isinstance(model, _FEATURE_WRAPPERS)

"""The private timm and fvcore APIs the package needs, in one place, each with the versions it was checked against.

Everything else uses the public APIs of timm (``timm.models``, ``timm.layers``), fvcore (``fvcore.nn``) and
huggingface_hub. This room sits below every other (docs/architecture.md); when a dependency makes one of these
public, or changes it, this is the only file to edit.

* ``FeatureGetterNet``, ``feature_take_indices`` (timm 1.0.3 to 1.0.31, the oldest and newest supported): timm's
  feature wrapper around a model's ``forward_intermediates`` and its index resolver. Neither is exported from
  ``timm.models`` or ``timm.layers``; ``create_model(..., features_only=True, feature_cls='getter')`` is the public
  route, but it needs a model name, and the zoo wraps model instances.
* fvcore (0.1.5.post20221221, its last release): :func:`fvcore_nn` imports ``fvcore.nn`` without the FutureWarning
  that its module-level ``torch.jit.script`` prints under torch >= 2.10, and :func:`flop_analysis` empties the
  analysis' built-in list of ignored ops, which only the private ``_ignored_ops`` attribute holds.
"""
from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from timm.models._features import FeatureGetterNet, feature_take_indices

__all__ = ['FeatureGetterNet', 'feature_take_indices', 'fvcore_nn', 'flop_analysis']


def fvcore_nn() -> ModuleType:
    """``fvcore.nn``, imported without its deprecation warning about ``torch.jit.script`` (and only when called)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*torch.jit.script.* is deprecated', category=FutureWarning)
        import fvcore.nn
    return fvcore.nn


def flop_analysis(model: Any, inputs: Any) -> Any:
    """An ``fvcore.nn.FlopCountAnalysis`` with no op handles and an empty ignore list: only the handles the caller
    sets count, and every other op is reported by ``unsupported_ops()``."""
    fca = fvcore_nn().FlopCountAnalysis(model, inputs)
    fca.clear_op_handles()
    fca._ignored_ops = set()  # fvcore 0.1.5: the built-in ignore list; no public way to empty it
    return fca

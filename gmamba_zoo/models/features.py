"""A model's ``feature_info`` in one form, and the timm feature-extraction names the package uses.

timm keeps ``feature_info`` in two forms: a full model holds a list of dicts (``num_chs``, ``reduction``, ``module``,
one per feature tap), and a ``features_only`` wrapper holds a :class:`timm.models.FeatureInfo` over the taps it returns.
:func:`feature_info_dicts` reads either as a list of dicts, so no caller has to tell them apart.

``FeatureGetterNet`` and ``feature_take_indices`` come from :mod:`gmamba_zoo.compat`: timm exports neither.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch.nn as nn
from timm.layers import Format
from timm.models import FeatureDictNet, FeatureGraphNet, FeatureHookNet, FeatureInfo, FeatureListNet

from ..compat import FeatureGetterNet, feature_take_indices

__all__ = [
    'feature_info_dicts', 'is_features_only', 'FeatureGetterNet', 'feature_take_indices', 'FeatureGradCheckpointing',
    'NchwFeatureGraphNet',
]

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


class NchwFeatureGraphNet(FeatureGraphNet):
    """timm's FX feature extractor (``feature_cls='fx'``) returning NCHW maps from a model whose stages are NHWC.

    timm's ``FeatureGraphNet`` returns the traced stage outputs as they are, NHWC for Swin; the zoo's Swin
    ``features_only`` models return NCHW (through ``forward_intermediates``), and this makes the FX extractor return
    the same maps in the same layout.
    """

    def __init__(self, model: nn.Module, out_indices: tuple, out_map: Any = None, output_fmt: str = 'NCHW',
                 return_dict: bool = False):
        super().__init__(model, out_indices, out_map=out_map, output_fmt=output_fmt, return_dict=return_dict)
        self.to_nchw = self.output_fmt == Format.NHWC
        self.output_fmt = Format.NCHW

    def forward(self, x: Any) -> Any:
        """x: [B, C, H, W] images -> the feature maps, each [B, C_i, H_i, W_i] (a dict with ``return_dict``)."""
        out = super().forward(x)
        if not self.to_nchw:
            return out
        if self.return_dict:
            return {k: v.permute(0, 3, 1, 2) for k, v in out.items()}
        return [v.permute(0, 3, 1, 2) for v in out]


class FeatureGradCheckpointing:
    """``set_grad_checkpointing`` for a zoo model's ``features_only`` wrapper, so that every block recomputes.

    timm's ``FeatureListNet`` checkpoints each of its modules (whole stages) except the first and the last, so the
    blocks of its last stage would keep their activations: those blocks that can checkpoint themselves
    (``set_grad_checkpointing`` on the block: GMamba blocks, vGamba's Gamba bottlenecks) are told to. timm's
    ``FeatureGetterNet`` (Swin) has no such method; the model it wraps checkpoints block by block in
    ``forward_intermediates``. Held in the wrapper's ``__dict__`` (a plain object, not a submodule); it refers back to
    the wrapper, an ordinary reference cycle for deepcopy and pickle.
    """

    def __init__(self, wrapper: nn.Module, block_types: tuple):
        self.wrapper, self.block_types = wrapper, block_types

    def __call__(self, enable: bool = True) -> None:
        wrapper = self.wrapper
        if isinstance(wrapper, FeatureGetterNet):
            wrapper.model.set_grad_checkpointing(enable)
            return
        type(wrapper).set_grad_checkpointing(wrapper, enable)
        modules = list(wrapper.children())
        for module in modules[-1].modules() if modules else ():
            if isinstance(module, self.block_types):
                module.set_grad_checkpointing(enable)

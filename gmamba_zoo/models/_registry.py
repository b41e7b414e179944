"""The zoo's models: each is registered with timm through :func:`register_zoo_model`, recorded here, and built by
:func:`build_zoo_model` (timm's ``build_model_with_cfg`` plus what every zoo model carries)."""
from typing import Any, Callable, List, Tuple, Type

import torch.nn as nn
from timm.models import build_model_with_cfg, register_model

from ._checkpoint import explain_pretrained_error, install_checkpoint_errors
from ._validation import install_input_checks
from .features import FeatureGradCheckpointing, is_features_only

_ZOO_MODELS: set = set()


def register_zoo_model(fn: Callable) -> Callable:
    """``timm.models.register_model`` that also records the name as one of this package's models."""
    _ZOO_MODELS.add(fn.__name__)
    return register_model(fn)


def list_models() -> List[str]:
    """Names of every model this package registers with timm, sorted."""
    return sorted(_ZOO_MODELS)


def build_zoo_model(
        model_cls: Callable[..., nn.Module],
        variant: str,
        pretrained: bool,
        blocks: Tuple[Type[nn.Module], ...],
        **kwargs: Any,
) -> nn.Module:
    """``timm.models.build_model_with_cfg`` for a zoo model, then what every zoo model carries.

    A pretrained file that cannot be read or does not fit is reported naming the file; a ``checkpoint_path`` given to
    ``timm.create_model`` is too (:func:`install_checkpoint_errors`); a ``features_only`` wrapper's
    ``set_grad_checkpointing`` reaches every one of ``blocks``; the input is checked (shape, channels, dtype).

    Args:
        model_cls: Builds the model from the remaining keyword arguments.
        variant: The registered name.
        pretrained: Load the variant's pretrained cfg.
        blocks: The model's own block classes, which checkpoint themselves under a features_only wrapper.
        kwargs: For ``build_model_with_cfg`` (pretrained_filter_fn, feature_cfg, the user's arguments).
    """
    try:
        model = build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except Exception as e:
        unreadable = explain_pretrained_error(variant, kwargs, e) if pretrained else None
        if unreadable is None:
            raise
        if unreadable.__suppress_context__:  # a refused file: torch's advice to unpickle it is not passed on
            raise unreadable from None
        raise unreadable from e
    install_checkpoint_errors(model)
    if is_features_only(model):
        model.set_grad_checkpointing = FeatureGradCheckpointing(model, blocks)
    return install_input_checks(model, variant, kwargs.get('in_chans', 3))

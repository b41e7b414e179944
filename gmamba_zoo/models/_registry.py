"""The zoo's models: each is registered with timm through :func:`register_zoo_model` and recorded here."""
from typing import Callable, List

from timm.models import register_model

_ZOO_MODELS: set = set()


def register_zoo_model(fn: Callable) -> Callable:
    """``timm.models.register_model`` that also records the name as one of this package's models."""
    _ZOO_MODELS.add(fn.__name__)
    return register_model(fn)


def list_models() -> List[str]:
    """Names of every model this package registers with timm, sorted."""
    return sorted(_ZOO_MODELS)

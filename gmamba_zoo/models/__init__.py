"""Model definitions; importing this module registers every zoo model with timm."""
from ._registry import list_models, register_zoo_model
from .gmamba import GMAMBA_VARIANTS, add_gmamba, gmamba_model_card, gmamba_no_weight_decay
from . import vgamba

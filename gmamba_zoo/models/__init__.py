"""Model definitions; importing this module registers every zoo model with timm."""
from ._registry import list_models, register_zoo_model
from .features import feature_info_dicts
from .gmamba import GMambaPlacementError, GMambaTap, add_gmamba, create_model, gmamba_no_weight_decay, plan_gmamba
from .swin import create_for_input_size
from .variants import ZOO_VARIANTS, ZooVariant, baseline_name
from . import vgamba

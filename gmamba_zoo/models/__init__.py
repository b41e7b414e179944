"""Model definitions; importing this module registers every zoo model with timm."""
from ._registry import list_models, register_zoo_model
from .features import feature_info_dicts
from .gmamba import (
    GMambaPlacementError, GMambaTap, add_gmamba, build_for_input_size, create_model, gmamba_no_weight_decay,
    plan_gmamba,
)
from .swin import create_for_input_size
from .variants import ZOO_VARIANTS, ZooVariant, baseline_name, gmamba_spec, parse_gmamba_spec
from . import vgamba

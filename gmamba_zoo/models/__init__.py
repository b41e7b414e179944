"""Model definitions; importing this module registers every zoo model with timm."""
from ._registry import list_models, register_zoo_model

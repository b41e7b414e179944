"""gmamba_zoo: timm-compatible global-perception state-space vision backbones (GMamba and vGamba).

Importing the package registers every model with timm; it touches no network and no GPU.
"""
from .layers import GMambaBlock, GSSMMixer, frequency_split
from .ops import scan_backend, selective_scan_fn, selective_scan_ref, set_scan_backend
from . import models
from .models import add_gmamba, create_model, list_models

__version__ = '0.1.0'  # the package's version: pyproject.toml reads it from here

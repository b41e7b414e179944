"""Analysis of global perception: the paper's gradient criterion and effective receptive fields
(:mod:`.perception`), and the long-range corner-colour benchmark (:mod:`.longrange`)."""
from .perception import (
    GlobalPerceptionResult, effective_receptive_field, erf_area_ratio, erf_models, gradient_criterion, noise_images,
    plot_erf_maps, require_matplotlib,
)

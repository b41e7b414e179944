from .ssm import SelectiveSSM, init_ssm_params
from .gssm import (
    FrequencyEncoding, FrequencyGuidedModulation, GMambaBlock, GSSMMixer, InplaceGELU, frequency_split, low_band,
    low_band_mask,
)
from .gamba import (
    GAMBA_NO_WEIGHT_DECAY, GambaBlock, GambaCell, GatedFusion, MambaMixer, RegisterMHSA2d, resize_pos_embed_1d,
)

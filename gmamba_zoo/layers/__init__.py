from .gssm import (
    FrequencyEncoding, FrequencyGuidedModulation, GMambaBlock, GSSMMixer, frequency_split, init_ssm_params,
    low_band_mask,
)

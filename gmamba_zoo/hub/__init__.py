"""Checkpoints and the Hugging Face Hub: reading, checking and loading checkpoints, model cards, export and upload.

The Hub *loading* path is timm's own (``hf-hub:``/``local-dir:`` names and the registered cfgs' ``hf_hub_id``); this
room holds what timm does not:

    :mod:`.checkpoint`  checkpoint files of any common layout, loaded with errors that name the keys; safetensors writes
    :mod:`.card`        the model card, generated from the registry and the model itself, and the papers' citations
    :mod:`.publish`     a Hub-ready folder, its verification and upload (``gmamba-zoo push-to-hub``)
"""
from .card import (
    CITATIONS, DEFAULT_GITHUB_REPO, GMAMBA_PAPER, VGAMBA_PAPER, WeightsSource, model_card, model_facts, model_family,
    pretrained_weights,
)
from .checkpoint import (
    CheckpointMismatchError, CheckpointReadError, CheckpointRefusedError, file_sha256, load_checkpoint_into,
    load_torch_file, read_checkpoint, safetensors_metadata, save_safetensors,
)
from .publish import build_model, export_for_hub, upload_folder, verify_export

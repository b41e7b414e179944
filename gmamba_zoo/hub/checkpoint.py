"""Checkpoint files: reading any common layout safely, loading with errors that name the keys, writing safetensors.

Read: ``.safetensors``, or ``torch.save`` files (``.pth``, ``.pt``, ``.bin``, ``.pth.tar``, ``.ckpt``) read with
``torch.load(weights_only=True)`` so that nothing but tensors and plain containers is unpickled; a plain state dict or a
timm-style training dict (``state_dict`` / ``model`` / ``state_dict_ema`` / ``model_ema``). Load: strict, and a
mismatch raises :class:`CheckpointMismatchError` naming the missing, unexpected and wrongly shaped keys and which
model the file looks like; a file that does not read is a :class:`CheckpointReadError` naming it. Write: a
model's weights as one safetensors file, atomically, with string metadata (training's checkpoints and replicas).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from ..models._checkpoint import (  # noqa: F401  (_list_keys: for publish)
    CheckpointMismatchError, CheckpointReadError, CheckpointRefusedError, key_shapes, list_keys as _list_keys,
    load_torch_file, mismatch_message, read_state_dict,
)

__all__ = [
    'CheckpointMismatchError', 'CheckpointReadError', 'CheckpointRefusedError', 'load_torch_file', 'read_checkpoint',
    'load_checkpoint_into', 'save_safetensors', 'safetensors_metadata', 'file_sha256',
]

PathLike = Union[str, Path]


def read_checkpoint(path: PathLike, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict in a checkpoint file (``.safetensors`` or a ``torch.save`` file read with ``weights_only=True``),
    ``'state_dict_ema'``/``'model_ema'`` when ``use_ema``: :func:`gmamba_zoo.models._checkpoint.read_state_dict`,
    which the models' own ``checkpoint_path`` loading shares; its errors name the file.
    """
    return read_state_dict(path, use_ema=use_ema)


def load_checkpoint_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = 'checkpoint') -> None:
    """Load ``state_dict`` into ``model`` strictly, with an error that names every kind of mismatch.

    Args:
        model: The model to load into.
        state_dict: The tensors, e.g. from :func:`read_checkpoint`.
        source: What the tensors are, for the error message (e.g. ``'checkpoint path/to/file.pth'``).

    Raises:
        CheckpointMismatchError: Missing keys, unexpected keys or shape mismatches, with the first keys named, which
            model the keys look like (compared with every registered model and its timm base) and, when only the
            classifier differs, a hint to pass the checkpoint's ``num_classes``.
    """
    message = mismatch_message(model, key_shapes(state_dict), source)
    if message is not None:
        raise CheckpointMismatchError(message)
    model.load_state_dict(state_dict, strict=True)


def save_safetensors(model: nn.Module, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``model``'s state dict to ``path`` as safetensors, under a temporary name moved into place.

    An interrupted write leaves any previous file at ``path`` whole. Tensors are written from CPU and contiguous, so a
    model on an accelerator or in channels-last memory format writes as it is.

    Args:
        model: The model (unwrapped: a DDP or compiled wrapper would prefix the keys).
        path: The file to write; its folder must exist.
        metadata: String pairs for the file's header (read back with :func:`safetensors_metadata`).

    Returns:
        The path.
    """
    import safetensors.torch
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + '.tmp')
    safetensors.torch.save_file(tensors, str(tmp), metadata={'format': 'pt', **dict(metadata or {})})
    os.replace(tmp, path)
    return path


def safetensors_metadata(path: PathLike) -> Dict[str, str]:
    """The string metadata in a safetensors file's header (empty if it has none); reads no tensors."""
    import safetensors
    with safetensors.safe_open(str(path), 'pt') as f:
        return dict(f.metadata() or {})


def file_sha256(path: PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()

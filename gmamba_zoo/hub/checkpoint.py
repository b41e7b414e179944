"""Checkpoint files: reading any common layout safely, loading with errors that name the keys, writing safetensors.

Read: ``.safetensors``, or ``torch.save`` files (``.pth``, ``.pt``, ``.bin``, ``.pth.tar``, ``.ckpt``) read with
``torch.load(weights_only=True)`` so that nothing but tensors and plain containers is unpickled; a plain state dict or a
timm-style training dict (``state_dict`` / ``model`` / ``state_dict_ema`` / ``model_ema``). Load: strict, and a
mismatch raises :class:`CheckpointMismatchError` naming the missing, unexpected and wrongly shaped keys. Write: a
model's weights as one safetensors file, atomically, with string metadata (training's checkpoints and replicas).
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn


__all__ = [
    'CheckpointMismatchError', 'read_checkpoint', 'load_checkpoint_into', 'save_safetensors', 'safetensors_metadata',
    'file_sha256',
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
_CKPT_SUFFIXES = ('.pth', '.pt', '.bin', '.pth.tar', '.ckpt')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's tensors do not fit the model: names the missing, unexpected and wrongly shaped keys."""


def read_checkpoint(path: PathLike, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, without unpickling anything but tensors and plain containers.

    Accepts ``.safetensors`` and ``torch.save`` files (``.pth``, ``.pt``, ``.bin``, ``.pth.tar``, ``.ckpt``) holding a
    plain state dict or a timm-style training dict with ``'state_dict'``, ``'model'``, ``'state_dict_ema'`` or
    ``'model_ema'``. The latter are read with ``torch.load(weights_only=True)``. ``module.`` and ``_orig_mod.``
    prefixes (DDP, torch.compile) are removed.

    Args:
        path: The checkpoint file.
        use_ema: Take the EMA weights (``'state_dict_ema'`` / ``'model_ema'``); an error if there are none. Without
            it, ``'state_dict'`` or ``'model'`` is taken, and the EMA weights only when nothing else is there.

    Raises:
        FileNotFoundError: No such file.
        ValueError: An unknown file type, a file that ``weights_only=True`` refuses, or no state dict inside.
    """
    from timm.models import clean_state_dict
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    name = path.name.lower()
    if name.endswith('.safetensors'):
        import safetensors.torch
        ckpt: Any = safetensors.torch.load_file(str(path), device='cpu')
    elif name.endswith(_CKPT_SUFFIXES):
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f'{path}: torch.load(weights_only=True) refused it: it holds pickled Python objects besides tensors '
                f'and plain containers, and untrusted pickles are never loaded here. Re-save just the weights, e.g. '
                f'`torch.save(model.state_dict(), "weights.pth")` or safetensors. ({str(e).splitlines()[0]})') from e
    else:
        raise ValueError(f'{path}: unknown checkpoint type; expected .safetensors or one of {list(_CKPT_SUFFIXES)}.')
    state_dict = _select_state_dict(ckpt, use_ema, path)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: the state dict has non-tensor entries {bad[:10]}; is this a state dict?')
    return clean_state_dict(state_dict)


def _select_state_dict(ckpt: Any, use_ema: bool, path: Path) -> Dict[str, Any]:
    if not isinstance(ckpt, Mapping):
        raise ValueError(f'{path}: expected a dict (a state dict or a training checkpoint), got {type(ckpt).__name__}.')
    ema_keys = [k for k in ('state_dict_ema', 'model_ema') if isinstance(ckpt.get(k), Mapping)]
    main_keys = [k for k in ('state_dict', 'model') if isinstance(ckpt.get(k), Mapping)]
    if use_ema:
        if not ema_keys:
            raise ValueError(f'{path}: use_ema asked for EMA weights but there is no "state_dict_ema" or "model_ema" '
                             f'(top-level keys: {sorted(map(str, ckpt))[:20]}).')
        return dict(ckpt[ema_keys[0]])
    if main_keys or ema_keys:
        key = (main_keys or ema_keys)[0]
        if not main_keys:
            _logger.warning('%s: no "state_dict"/"model" entry; taking the EMA weights ("%s").', path, key)
        return dict(ckpt[key])
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()) and ckpt:
        return dict(ckpt)
    raise ValueError(f'{path}: neither a state dict nor a training checkpoint with "state_dict", "model", '
                     f'"state_dict_ema" or "model_ema"; top-level keys: {sorted(map(str, ckpt))[:20]}.')


def _list_keys(keys: Sequence[Any], limit: int = 20) -> str:
    keys = list(keys)
    shown = ', '.join(map(str, keys[:limit]))
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_checkpoint_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = 'checkpoint') -> None:
    """Load ``state_dict`` into ``model`` strictly, with an error that names every kind of mismatch.

    Args:
        model: The model to load into.
        state_dict: The tensors, e.g. from :func:`read_checkpoint`.
        source: What the tensors are, for the error message (e.g. ``'checkpoint path/to/file.pth'``).

    Raises:
        CheckpointMismatchError: Missing keys, unexpected keys or shape mismatches, with the keys named and, when only
            the classifier differs, a hint to pass the checkpoint's ``num_classes``.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture', type(model).__name__)
        parts = [f'{source} does not fit {arch} (num_classes={getattr(model, "num_classes", "?")}).']
        if missing:
            parts.append(f'Missing keys ({len(missing)}): {_list_keys(missing)}.')
        if unexpected:
            parts.append(f'Unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}.')
        if shapes:
            parts.append(f'Shape mismatches ({len(shapes)}): {_list_keys(shapes)}.')
        classifier = _classifier_keys(model)
        if not missing and not unexpected and shapes and all(s.split(':')[0] in classifier for s in shapes):
            weight = next(k for k in classifier if k.endswith('weight') and k in state_dict)
            parts.append(f'Only the classifier differs: build the model with num_classes={state_dict[weight].shape[0]} '
                         f'(--num-classes).')
        elif missing and unexpected:
            parts.append('Is it a checkpoint of another model, or of this one built with other model args '
                         '(--model-args)?')
        raise CheckpointMismatchError(' '.join(parts))
    model.load_state_dict(state_dict, strict=True)


def _classifier_keys(model: nn.Module) -> List[str]:
    names = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier') or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [f'{n}.{s}' for n in names for s in ('weight', 'bias')]


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

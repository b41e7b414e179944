"""Checkpoint files meeting zoo models: reading them with errors that name the file, and explaining a mismatch.

Every route by which a file reaches a zoo model ends here when something is wrong:

* ``timm.create_model(name, checkpoint_path=FILE)``: timm loads the file after the model is built, with its own
  ``load_checkpoint``; :func:`gmamba_zoo.compat.route_checkpoint_path_errors` hands a failure to the model's
  ``explain_checkpoint_error`` (:func:`explain_checkpoint_error`, set by the builders);
* ``pretrained=True`` (a file in the Hugging Face cache, or ``pretrained_cfg_overlay=dict(file=FILE)``): the builders
  ask :func:`explain_pretrained_error` which file failed to read; the pretrained filters use :func:`describe_keys`;
* :mod:`gmamba_zoo.hub.checkpoint` (``read_checkpoint``, ``load_checkpoint_into``), used by training and publishing.

A corrupt, truncated or foreign file is a :class:`CheckpointReadError` (a ``ValueError``) naming the file and what
the reader said. A readable file whose tensors do not fit is a :class:`CheckpointMismatchError` naming the file, the
first missing, unexpected and wrongly shaped keys, and which model the file looks like it belongs to: its key names
are compared with those of every registered zoo model and every plain timm model they are built on, each built once
per process on the meta device (no memory, no initialisation; about 2 s for all of them).
"""
from __future__ import annotations

import functools
import io
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..compat import route_checkpoint_path_errors
from .variants import ZOO_VARIANTS

__all__ = [
    'CheckpointReadError', 'CheckpointRefusedError', 'CheckpointMismatchError', 'read_state_dict', 'load_torch_file',
    'key_shapes', 'closest_models', 'describe_keys', 'list_keys', 'mismatch_message', 'explain_checkpoint_error',
    'install_checkpoint_errors', 'explain_pretrained_error',
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
CKPT_SUFFIXES = ('.pth', '.pt', '.bin', '.pth.tar', '.ckpt')
_KEYS_SHOWN = 20


class CheckpointReadError(ValueError):
    """A checkpoint file could not be read: corrupt, truncated, of an unknown type, or holding no state dict."""


class CheckpointRefusedError(CheckpointReadError):
    """A checkpoint file holds pickled Python objects that ``torch.load(weights_only=True)`` refuses; none was run."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's tensors do not fit the model: names the missing, unexpected and wrongly shaped keys."""


def read_state_dict(path: PathLike, use_ema: Optional[bool] = False) -> Dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, without unpickling anything but tensors and plain containers.

    Accepts ``.safetensors`` and ``torch.save`` files (``.pth``, ``.pt``, ``.bin``, ``.pth.tar``, ``.ckpt``) holding a
    plain state dict or a timm-style training dict with ``'state_dict'``, ``'model'``, ``'state_dict_ema'`` or
    ``'model_ema'``. The latter are read with ``torch.load(weights_only=True)``. ``module.`` and ``_orig_mod.``
    prefixes (DDP, torch.compile) are removed.

    Args:
        path: The checkpoint file.
        use_ema: True: the EMA weights (``'state_dict_ema'`` / ``'model_ema'``), an error if there are none. False:
            ``'state_dict'`` or ``'model'``, the EMA weights only when nothing else is there. None: the EMA weights when
            there are any (what ``timm.create_model(..., checkpoint_path=...)`` loads).

    Raises:
        FileNotFoundError: No such file.
        CheckpointReadError: A file that cannot be read (corrupt or truncated), of an unknown type, one that
            ``weights_only=True`` refuses, or one with no state dict inside; the message names the file.
    """
    from timm.models import clean_state_dict
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    name = path.name.lower()
    if name.endswith('.safetensors'):
        import safetensors.torch
        try:
            ckpt: Any = safetensors.torch.load_file(str(path), device='cpu')
        except Exception as e:  # safetensors_rust.SafetensorError and OSError; its messages name no file
            raise CheckpointReadError(
                f'{path}: not a readable safetensors file ({_first_line(e)}); it may be truncated or corrupt '
                f'({path.stat().st_size} bytes). Download or save it again.') from e
    elif name.endswith(CKPT_SUFFIXES):
        ckpt = load_torch_file(path)
    else:
        raise CheckpointReadError(
            f'{path}: unknown checkpoint type; expected .safetensors or one of {list(CKPT_SUFFIXES)}.')
    state_dict = _select_state_dict(ckpt, use_ema, path)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointReadError(f'{path}: the state dict has non-tensor entries {bad[:10]}; is this a state dict?')
    return clean_state_dict(state_dict)


def load_torch_file(path: PathLike) -> Any:
    """What a ``torch.save`` file holds, read with ``torch.load(weights_only=True)``: tensors and plain containers only.

    Raises:
        CheckpointRefusedError: The file holds pickled Python objects (a function or class to call on load);
            nothing in it was run. Whatever torch's wording, the message says ``refused`` and names one of them.
        CheckpointReadError: Any other file that does not read (truncated, corrupt, not a ``torch.save`` file).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # UnpicklingError; a truncated zip (RuntimeError); an empty file (EOFError); ...
        error = e
    # torch's wording: "Unsupported global: GLOBAL posix.system was not an allowed global" (torch < 2.6 and any
    # module not blocked), "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (newer); a
    # pickle of protocol 4 or more is refused before its globals are read ("Unsupported operand 149"): read them here
    found = re.search(r'GLOBAL ([\w.]+)', str(error)) if isinstance(error, pickle.UnpicklingError) else None
    names = [found.group(1)] if found else _pickled_globals(path)
    if names:
        raise CheckpointRefusedError(
            f'{path}: refused: it holds pickled Python objects, e.g. {names[0]}; load only files you trust, or '
            f'convert to safetensors.') from None  # torch's own message advises weights_only=False: not passed on
    raise CheckpointReadError(
        f'{path}: not a readable torch.save file ({type(error).__name__}: {_unpickling_detail(error)}); it may be '
        f'truncated or corrupt ({path.stat().st_size} bytes). Download or save it again.') from error


# what torch.save pickles for a state dict: tensors, their storages and rebuild functions, and plain containers
_SAFE_GLOBAL_PREFIXES = ('torch.', 'collections.OrderedDict', '_codecs.encode', 'builtins.set', 'builtins.frozenset',
                         'builtins.bytearray', 'builtins.complex', 'builtins.slice')
_STRING_OPS = {'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE', 'SHORT_BINSTRING', 'BINSTRING', 'STRING'}


def _pickled_globals(path: Path) -> List[str]:
    """The globals (``module.name``) a pickle in ``path`` would import, other than torch's own, read with
    :mod:`pickletools` (which runs nothing): in a ``torch.save`` zip its ``data.pkl``, else the pickles at the start
    of the file (a legacy ``torch.save`` file is several). Empty when there are none or the bytes are no pickle."""
    import pickletools
    import zipfile
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith('data.pkl')), None)
                data = zf.read(member) if member else b''
        else:
            data = path.read_bytes()
    except Exception:
        return []
    names: List[str] = []
    start = 0
    for _ in range(8):  # a legacy file: magic number, protocol, system info, the object, the storage keys
        strings: List[Any] = []  # values pushed by string pushes and memo gets (None: another value)
        memo: Dict[Any, Any] = {}
        stream = io.BytesIO(data[start:])
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    strings.append(arg)
                elif op.name in ('BINGET', 'LONG_BINGET', 'GET'):
                    strings.append(memo.get(arg))
                elif op.name in ('BINPUT', 'LONG_BINPUT', 'PUT', 'MEMOIZE'):
                    memo[len(memo) if op.name == 'MEMOIZE' else arg] = strings[-1] if strings else None
                elif op.name in ('GLOBAL', 'INST'):
                    names.append(str(arg).replace(' ', '.'))
                elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    names.append(f'{strings[-2]}.{strings[-1]}')
                if op.name not in _STRING_OPS | {'BINGET', 'LONG_BINGET', 'GET', 'BINPUT', 'LONG_BINPUT', 'PUT',
                                                 'MEMOIZE'}:
                    strings.append(None)
        except Exception:  # not (or no longer) a pickle: the raw tensor bytes of a legacy file, or garbage
            break
        start += stream.tell()
        if start >= len(data):
            break
    return [n for n in dict.fromkeys(names) if not n.startswith(_SAFE_GLOBAL_PREFIXES)]


def _unpickling_detail(e: BaseException) -> str:
    """The informative line of torch's weights-only unpickling error (its first lines are generic advice)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith('WeightsUnpickler error:')]
    return after[0] if after else _first_line(e)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _select_state_dict(ckpt: Any, use_ema: Optional[bool], path: Path) -> Dict[str, Any]:
    if not isinstance(ckpt, Mapping):
        raise CheckpointReadError(
            f'{path}: expected a dict (a state dict or a training checkpoint), got {type(ckpt).__name__}.')
    ema_keys = [k for k in ('state_dict_ema', 'model_ema') if isinstance(ckpt.get(k), Mapping)]
    main_keys = [k for k in ('state_dict', 'model') if isinstance(ckpt.get(k), Mapping)]
    if use_ema:
        if not ema_keys:
            raise CheckpointReadError(
                f'{path}: use_ema asked for EMA weights but there is no "state_dict_ema" or "model_ema" (top-level '
                f'keys: {sorted(map(str, ckpt))[:20]}).')
        return dict(ckpt[ema_keys[0]])
    if use_ema is None and ema_keys:
        return dict(ckpt[ema_keys[0]])
    if main_keys or ema_keys:
        key = (main_keys or ema_keys)[0]
        if not main_keys:
            _logger.warning('%s: no "state_dict"/"model" entry; taking the EMA weights ("%s").', path, key)
        return dict(ckpt[key])
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()) and ckpt:
        return dict(ckpt)
    raise CheckpointReadError(
        f'{path}: neither a state dict nor a training checkpoint with "state_dict", "model", "state_dict_ema" or '
        f'"model_ema"; top-level keys: {sorted(map(str, ckpt))[:20]}.')


# ---------------------------------------------------------------------------------------------- which model is it?

Shapes = Dict[str, Tuple[int, ...]]


def key_shapes(state_dict: Mapping[str, Any]) -> Shapes:
    """Key -> shape of a state dict (tensors, or anything with a ``shape``)."""
    return {k: tuple(getattr(v, 'shape', ())) for k, v in state_dict.items()}


@functools.lru_cache(maxsize=1)
def _candidates() -> Dict[str, Shapes]:
    """Key shapes of every registered zoo model and of the plain timm models they are built on, with their default
    arguments, built on the meta device once per process."""
    import timm
    names = list(ZOO_VARIANTS) + sorted({v.base for v in ZOO_VARIANTS.values()} - set(ZOO_VARIANTS))
    out = {}
    with torch.random.fork_rng(devices=[]):
        for name in names:
            try:
                with torch.device('meta'):
                    out[name] = key_shapes(timm.create_model(name).state_dict())
            except Exception as e:  # a candidate that does not build is left out of the comparison, never fatal
                _logger.debug('checkpoint identification: %s does not build on the meta device (%s)', name, e)
    return out


def _layout(keys: Any) -> set:
    """Key names with every index replaced by ``#``, that of a numbered container too (``layer3.12.conv1.weight`` ->
    ``layer#.#.conv1.weight``, ``conv1`` stays): the kinds of layers a model has, whatever its depths."""
    out = set()
    for key in keys:
        parts = key.split('.')
        for i, part in enumerate(parts):
            if part.isdigit():
                parts[i] = '#'
            elif i + 1 < len(parts) and parts[i + 1].isdigit():
                parts[i] = re.sub(r'\d+$', '#', part)  # layer3 / stages_2 followed by a block index
        out.add('.'.join(parts))
    return out


def closest_models(shapes: Mapping[str, Any], top: int = 3) -> List[Tuple[str, float, int, int]]:
    """The registered zoo models and timm bases whose state-dict keys best match ``shapes`` (key -> shape).

    Candidates are ranked by how much of their key *layout* (the key names with every index replaced, so a model with
    other depths keeps its layout) they share with the file's, then by the share of exact key names, then by keys that
    also agree in shape.

    Returns:
        Up to ``top`` tuples ``(name, layout share, exact keys shared, keys of the candidate)``, best first; a share is
        the intersection over the union, 1.0 when equal.
    """
    keys, layout = set(shapes), _layout(shapes)
    ranked = []
    for name, theirs in _candidates().items():
        their_layout = _layout(theirs)
        layout_share = len(layout & their_layout) / (len(layout | their_layout) or 1)
        shared = keys & theirs.keys()
        key_share = len(shared) / (len(keys | theirs.keys()) or 1)
        same_shape = sum(tuple(shapes[k]) == theirs[k] for k in shared)
        ranked.append(((-layout_share, -key_share, -same_shape, name), (name, layout_share, len(shared), len(theirs))))
    ranked.sort(key=lambda r: r[0])
    return [r[1] for r in ranked[:top]]


def describe_keys(shapes: Mapping[str, Any]) -> str:
    """One sentence on which model a state dict (key -> shape) looks like it belongs to, from its key names."""
    if not shapes:
        return 'The file holds no tensors.'
    best = closest_models(shapes, top=1)
    if not best:
        return ''
    name, layout_share, shared, total = best[0]
    if shared == total == len(shapes):
        return f'Its keys are exactly those of {name} ({total} keys): it looks like a {name} checkpoint.'
    if layout_share == 1.0:
        return (f'Its keys follow the layout of {name} with other depths or block counts ({shared} of its {total} '
                f'keys; the file has {len(shapes)}): it looks like a checkpoint of {name} built with other arguments.')
    if layout_share >= 0.5:
        return (f'Its keys are closest to those of {name} ({layout_share:.0%} of the key layout shared): it may be a '
                f'checkpoint of {name} built with other arguments, or of a model derived from it.')
    return (f'Its keys match none of the zoo\'s models or their timm bases (closest: {name}, {layout_share:.0%} of '
            f'the key layout shared).')


def list_keys(keys: Sequence[Any], limit: int = _KEYS_SHOWN) -> str:
    """The first ``limit`` keys, comma-separated, and how many more there are."""
    keys = list(keys)
    shown = ', '.join(map(str, keys[:limit]))
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def _architecture(model: nn.Module) -> str:
    return (getattr(model, 'pretrained_cfg', None) or {}).get('architecture', type(model).__name__)


def _classifier_keys(model: nn.Module) -> List[str]:
    names = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier') or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [f'{n}.{s}' for n in names for s in ('weight', 'bias')]


def mismatch_message(model: nn.Module, shapes: Mapping[str, Any], source: str) -> Optional[str]:
    """Why a state dict (key -> shape) does not load strictly into ``model``; None when it does.

    Names the first missing, unexpected and wrongly shaped keys, which model the keys look like, and, when only the
    classifier differs, the ``num_classes`` to build.
    """
    own = key_shapes(model.state_dict())
    shapes = {k: tuple(v) for k, v in shapes.items()}
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    wrong = [k for k in own if k in shapes and shapes[k] != own[k]]
    if not (missing or unexpected or wrong):
        return None
    parts = [f'{source} does not fit {_architecture(model)} (num_classes={getattr(model, "num_classes", "?")}).']
    if missing:
        parts.append(f'Missing keys ({len(missing)}): {list_keys(missing)}.')
    if unexpected:
        parts.append(f'Unexpected keys ({len(unexpected)}): {list_keys(unexpected)}.')
    if wrong:
        parts.append(f'Shape mismatches ({len(wrong)}): '
                     f'{list_keys([f"{k}: checkpoint {shapes[k]} vs model {own[k]}" for k in wrong])}.')
    classifier = _classifier_keys(model)
    if not missing and not unexpected and all(k in classifier for k in wrong):
        weight = next((k for k in classifier if k.endswith('weight') and k in shapes), None)
        if weight is not None:
            parts.append(f'Only the classifier differs: build the model with num_classes={shapes[weight][0]} '
                         f'(--num-classes).')
    else:
        parts.append(describe_keys(shapes))
        if missing and unexpected:
            parts.append('Is it a checkpoint of another model, or of this one built with other model args '
                         '(--model-args)?')
    return ' '.join(p for p in parts if p)


def explain_checkpoint_error(model: nn.Module, path: PathLike, error: BaseException) -> BaseException:
    """The error to raise when ``timm.create_model(..., checkpoint_path=path)`` failed to load ``path`` into ``model``.

    Installed on every zoo model (and ``features_only`` wrapper) as ``model.explain_checkpoint_error`` and called by
    the hook in :func:`gmamba_zoo.compat.route_checkpoint_path_errors`, which raises the result from ``error``.
    """
    arch = _architecture(model)
    source = f'checkpoint_path {str(path)!r}'
    if not os.path.isfile(path):
        return FileNotFoundError(f'{arch}: {source}: no such file.')
    try:
        state_dict = read_state_dict(path, use_ema=None)  # what timm's load_checkpoint reads (EMA first)
    except CheckpointReadError as e:
        return _standalone(type(e)(f'{arch}: {e}'), e)
    message = mismatch_message(model, key_shapes(state_dict), f'{arch}: {source}')
    if message is not None:
        return CheckpointMismatchError(message)
    return type(error)(f'{arch}: loading {source} failed: {error}') if isinstance(error, (RuntimeError, ValueError)) \
        else error


def install_checkpoint_errors(model: nn.Module) -> nn.Module:
    """Make ``timm.create_model(..., checkpoint_path=...)`` failures on ``model`` name the file and the keys.

    Sets ``model.explain_checkpoint_error`` (:func:`explain_checkpoint_error`, a module-level function, so the model
    still pickles) and puts :func:`gmamba_zoo.compat.route_checkpoint_path_errors` in place. Returns the model.
    """
    route_checkpoint_path_errors()
    model.explain_checkpoint_error = explain_checkpoint_error
    return model


def _standalone(error: BaseException, read_error: BaseException) -> BaseException:
    """``error``, marked to be raised without its cause when the file was refused (torch's message, the cause, advises
    ``weights_only=False``, the one thing not to do with such a file)."""
    if isinstance(read_error, CheckpointRefusedError):
        error.__suppress_context__ = True
    return error


# the files timm's local-dir: loader tries, in its order (timm.models._hub.load_state_dict_from_path)
_LOCAL_DIR_FILES = ('model.safetensors', 'pytorch_model.bin', 'pytorch_model.pth', 'model.pth',
                    'open_clip_model.safetensors', 'open_clip_pytorch_model.safetensors')
_LOCAL_DIR_SUFFIXES = ('.safetensors', '.pth', '.pth.tar', '.bin')


def _pretrained_files(variant: str, kwargs: Mapping[str, Any]) -> Tuple[List[Path], bool]:
    """The local files ``pretrained=True`` may have read for ``variant`` and whether they are in the Hub cache: the
    cfg's ``file`` (for ``local-dir:``, the weights file in that folder), or its Hub cache entries (the safetensors
    file first, as timm tries it first)."""
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg or {})
    if cfg.get('file'):
        path = Path(cfg['file'])
        if cfg.get('source') == 'local-dir' and path.is_dir():
            found = [path / n for n in _LOCAL_DIR_FILES if (path / n).exists()]
            found = found or [f for ext in _LOCAL_DIR_SUFFIXES for f in sorted(path.glob(f'*{ext}'))]
            return found[:1], False
        return [path], False
    hub_id = cfg.get('hf_hub_id')
    if not hub_id:
        return [], False
    from huggingface_hub import try_to_load_from_cache
    repo, _, revision = hub_id.partition('@')
    filename = cfg.get('hf_hub_filename') or 'pytorch_model.bin'
    names = [filename] if filename.endswith('.safetensors') else ['model.safetensors', filename]
    files = []
    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=kwargs.get('cache_dir'), revision=revision or None)
        if isinstance(found, str):
            files.append(Path(found))
    return files, True


def explain_pretrained_error(variant: str, kwargs: Mapping[str, Any], error: BaseException) -> Optional[BaseException]:
    """When building ``variant`` with ``pretrained=True`` failed on its weights file, an error that names the file:
    a file that does not read (one in the Hub cache: delete it), or one whose tensors do not fit (torch's list of
    mismatches). None when the failure is not the file's (timm's error stands)."""
    try:
        files, cached = _pretrained_files(variant, kwargs)
    except Exception:  # the cfg itself is bad: timm's error stands
        return None
    for path in files:
        try:
            read_state_dict(path, use_ema=None)
        except FileNotFoundError:
            continue
        except CheckpointRefusedError as e:
            return _standalone(CheckpointRefusedError(f'{variant}: the pretrained weights were not loaded. {e}'), e)
        except CheckpointReadError as e:
            hint = (' It is in the Hugging Face cache: delete it (or the model\'s folder there) and load again to '
                    'download it anew.') if cached else ''
            return CheckpointReadError(f'{variant}: the pretrained weights could not be read. {e}{hint}')
        if isinstance(error, RuntimeError) and 'Error(s) in loading state_dict' in str(error):
            details = '; '.join(line.strip() for line in str(error).splitlines()[1:] if line.strip())
            return CheckpointMismatchError(f'{variant}: the pretrained weights {path} do not fit the model as built '
                                           f'(are the model arguments those of the checkpoint?): {details}')
        return None
    return None

"""Publish zoo models to the Hugging Face Hub: a Hub-ready folder (weights, timm config, model card) and its upload.

A published folder holds exactly what timm's own Hub loader reads, so after ``import gmamba_zoo`` these all work:

    timm.create_model('hf-hub:<org>/<repo>', pretrained=True)              # from the Hub (or its offline cache)
    timm.create_model('local-dir:/path/to/folder', pretrained=True)        # the folder on disk
    timm.create_model('<name>', pretrained=True,
                      pretrained_cfg_overlay=dict(file='/path/to/folder/model.safetensors'))   # the weight file

Folder contents:
    ``model.safetensors``  the model's state dict (safetensors only: loading it unpickles nothing).
    ``config.json``        timm's format, written by ``timm.models.save_for_hf`` (architecture, num_classes,
                           num_features, global_pool, model_args, pretrained_cfg), with the pretrained_cfg's
                           description, notes and tag rewritten to say where THESE weights came from.
    ``README.md``          the model card, generated from the registry and the model itself (:func:`model_card`).

Weights come from one of three places (:class:`WeightsSource`): the model's own initialisation, the registry's
pretrained weights (``pretrained=True``: for GMamba models timm's ImageNet weights for the plain backbone with
untrained, identity GMamba blocks), or a training checkpoint (``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with
``torch.load(weights_only=True)``). Whether the state-space blocks were trained is never guessed: the exporter states
it (``blocks_trained``, default False), and the card repeats it and claims no accuracy.

Uploading uses ``huggingface_hub.HfApi`` (token from ``HF_TOKEN`` or ``huggingface-cli login``). timm's
``push_to_hf_hub`` is not used for it because it cannot take a ready-made model card and would keep an old README.

Command line: ``gmamba-zoo push-to-hub NAME ...`` and ``python scripts/push_to_hub.py NAME ...`` (same arguments).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .cli import command, script_main

__all__ = [
    'CITATIONS', 'WeightsSource', 'CheckpointMismatchError', 'read_checkpoint', 'load_checkpoint_into', 'build_model',
    'model_facts', 'model_card', 'export_for_hub', 'verify_export', 'upload_folder', 'add_arguments', 'run', 'main',
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
CARD_NAME = 'README.md'
DEFAULT_GITHUB_REPO = 'gmamba-zoo/gmamba_zoo'  # the torch.hub repo shown in model cards; --github-repo overrides it
_PLACEHOLDER_ORG = 'your-org'

GMAMBA_PAPER = 'Enabling True Global Perception in State Space Models for Visual Tasks'
VGAMBA_PAPER = 'vGamba: Attentive State Space Bottleneck for efficient Long-range Dependencies in Visual Recognition'
# BibTeX of both papers. Only what SPEC.md states (title, venue) is filled in; authors are left to the paper's page.
CITATIONS: Dict[str, str] = {
    'gmamba': textwrap.dedent(f"""\
        @inproceedings{{gmamba2026,
          title     = {{{GMAMBA_PAPER}}},
          booktitle = {{International Conference on Learning Representations (ICLR)}},
          year      = {{2026}},
          note      = {{GMamba}}
        }}"""),
    'vgamba': textwrap.dedent(f"""\
        @misc{{vgamba,
          title = {{{VGAMBA_PAPER}}},
          note  = {{vGamba}}
        }}"""),
}

# What a model family's state-space blocks are called, and which paper it implements; keyed by the module that
# registers the model (gmamba_zoo.models.<key>).
_FAMILIES: Dict[str, Dict[str, str]] = {
    'gmamba': dict(name='GMamba', blocks='GMamba (GSSM) blocks', paper=GMAMBA_PAPER),
    'vgamba': dict(name='vGamba', blocks='Gamba blocks (Mamba cell + 2-D attention)', paper=VGAMBA_PAPER),
}
_GENERIC_FAMILY = dict(name='gmamba_zoo', blocks='state-space blocks', paper='')
# timm's defaults for the args get_model_args always records; the card's snippets leave them out
_TIMM_DEFAULT_ARGS = {'in_chans': 3, 'num_classes': 1000, 'global_pool': 'avg'}
_CKPT_SUFFIXES = ('.pth', '.pt', '.bin', '.pth.tar', '.ckpt')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's tensors do not fit the model: names the missing, unexpected and wrongly shaped keys."""


# ----------------------------------------------------------------------------------------------------------------------
# where the weights came from

@dataclass(frozen=True)
class WeightsSource:
    """Where exported weights came from, as the model card states it.

    Attributes:
        kind: ``'init'`` (the model's own initialisation), ``'pretrained'`` (the registry's pretrained cfg, loaded by
            timm) or ``'checkpoint'`` (a training checkpoint).
        detail: For 'pretrained', the timm pretrained cfg name and its location; for 'checkpoint', the file's name and
            SHA-256.
        blocks_trained: Whether the model's state-space blocks were trained, as the exporter states it.
        notes: Free text from the exporter (e.g. the data set and schedule of a fine-tuning run).
    """
    kind: str
    detail: str = ''
    blocks_trained: bool = False
    notes: str = ''

    def __post_init__(self):
        if self.kind not in ('init', 'pretrained', 'checkpoint'):
            raise ValueError(f"WeightsSource.kind must be 'init', 'pretrained' or 'checkpoint', got {self.kind!r}.")
        if self.blocks_trained and self.kind != 'checkpoint':
            raise ValueError(
                f'blocks_trained=True needs a training checkpoint: {self.kind!r} weights have untrained state-space '
                f'blocks (this package ships no trained ones).')

    def statement(self, family: Mapping[str, str]) -> str:
        """One or two sentences saying where the weights came from and whether the blocks were trained."""
        blocks = family['blocks']
        if self.kind == 'init':
            return (f'Untrained: the random initialisation of the model, {blocks} included. Not for inference '
                    f'before training.')
        if self.kind == 'pretrained':
            if family['name'] == 'GMamba':
                return (f"timm's ImageNet weights for the plain backbone ({self.detail}); {blocks} untrained "
                        f"(identity at initialisation: layer scale 0), so the model computes what the plain "
                        f"backbone computes.")
            return f'The registry\'s pretrained weights ({self.detail}); {blocks} untrained.'
        return f'A user checkpoint: {self.detail}. {blocks[0].upper() + blocks[1:]} trained: ' \
               f'{"yes" if self.blocks_trained else "no"} (as stated by whoever exported it).'


def _family(architecture: str) -> Dict[str, str]:
    import timm
    module = timm.models.model_entrypoint(architecture).__module__
    return _FAMILIES.get(module.rsplit('.', 1)[-1], _GENERIC_FAMILY)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# training checkpoints

def read_checkpoint(path: PathLike, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict in a training checkpoint, without unpickling anything but tensors and plain containers.

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
            _logger.warning('%s: no "state_dict"/"model" entry; exporting the EMA weights ("%s").', path, key)
        return dict(ckpt[key])
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()) and ckpt:
        return dict(ckpt)
    raise ValueError(f'{path}: neither a state dict nor a training checkpoint with "state_dict", "model", '
                     f'"state_dict_ema" or "model_ema"; top-level keys: {sorted(map(str, ckpt))[:20]}.')


def _list(keys: Sequence[Any], limit: int = 20) -> str:
    keys = list(keys)
    shown = ', '.join(map(str, keys[:limit]))
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_checkpoint_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = 'checkpoint') -> None:
    """Load ``state_dict`` into ``model`` strictly, with an error that names every kind of mismatch.

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
            parts.append(f'Missing keys ({len(missing)}): {_list(missing)}.')
        if unexpected:
            parts.append(f'Unexpected keys ({len(unexpected)}): {_list(unexpected)}.')
        if shapes:
            parts.append(f'Shape mismatches ({len(shapes)}): {_list(shapes)}.')
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


def build_model(
        name: str,
        checkpoint: Optional[PathLike] = None,
        pretrained: bool = False,
        use_ema: bool = False,
        blocks_trained: bool = False,
        notes: str = '',
        **model_args: Any,
) -> Tuple[nn.Module, WeightsSource]:
    """A registered zoo model with the weights to export, and the statement of where they came from.

    Args:
        name: A name from :func:`gmamba_zoo.list_models`.
        checkpoint: A training checkpoint to load (see :func:`read_checkpoint`); strict, every key must match.
        pretrained: Load the registry's pretrained weights through timm (downloads them unless cached).
        use_ema: Take the checkpoint's EMA weights.
        blocks_trained: Whether the checkpoint's state-space blocks were trained (only the exporter knows).
        notes: Free text for the model card's weights section.
        model_args: Passed to ``timm.create_model`` and recorded in config.json (num_classes, gmamba_depths, ...).

    Raises:
        ValueError: An unknown name, or both ``checkpoint`` and ``pretrained``.
        CheckpointMismatchError: The checkpoint does not fit the model.
    """
    import timm
    from . import list_models
    if name not in list_models():
        raise ValueError(f'unknown model {name!r}; the zoo has {list_models()}.')
    if checkpoint is not None and pretrained:
        raise ValueError('give a checkpoint or pretrained=True, not both (the checkpoint would replace every weight).')
    if blocks_trained and checkpoint is None:
        raise ValueError('blocks_trained=True needs a checkpoint: no other weights have trained state-space blocks.')
    if checkpoint is None:
        model = timm.create_model(name, pretrained=pretrained, **model_args)
        if pretrained:
            cfg = model.pretrained_cfg
            where = cfg.get('hf_hub_id') or cfg.get('url') or cfg.get('file') or 'unknown location'
            if _family(name)['name'] == 'GMamba':
                detail = f'`{where}`'
            else:
                cfg_notes = cfg.get('notes') or ()
                detail = f"timm pretrained cfg `{name}.{cfg.get('tag')}`, weights from `{where}`" + (
                    f': {cfg_notes[0]}' if cfg_notes else '')
            return model, WeightsSource('pretrained', detail, False, notes)
        return model, WeightsSource('init', '', False, notes)
    path = Path(checkpoint)
    state_dict = read_checkpoint(path, use_ema=use_ema)
    model = timm.create_model(name, pretrained=False, **model_args)
    load_checkpoint_into(model, state_dict, source=f'checkpoint {path}')
    detail = f'`{path.name}`{" (EMA weights)" if use_ema else ""}, SHA-256 `{_sha256(path)}`'
    return model, WeightsSource('checkpoint', detail, blocks_trained, notes)


# ----------------------------------------------------------------------------------------------------------------------
# facts for the card

def _flops_fn() -> Optional[Callable[[nn.Module, Tuple[int, int, int]], float]]:
    """The package's FLOP counter (:func:`gmamba_zoo.flops.count`, fvcore; one multiply-add = one FLOP), if present."""
    try:
        from . import flops
    except ImportError:  # the counter needs fvcore
        return None
    count = getattr(flops, 'count', None)
    return None if count is None else (lambda model, size: count(model, size, what=model.__class__.__name__)['flops'])


def model_facts(model: nn.Module, flops_input_size: Optional[Tuple[int, int, int]] = None) -> Dict[str, Any]:
    """What the model card says about the model itself, read from the model (not from any table).

    Args:
        model: A timm model built from the registry.
        flops_input_size: (C, H, W) to count FLOPs at, or None not to count them. Counted with the package's fvcore
            counter when it exists; otherwise ``flops`` is None.
    """
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    info = getattr(model, 'feature_info', None)
    info = info.get_dicts() if hasattr(info, 'get_dicts') else list(info or [])
    facts: Dict[str, Any] = {
        'architecture': cfg.get('architecture'),
        'params': sum(p.numel() for p in model.parameters()),
        'num_classes': getattr(model, 'num_classes', None),
        'num_features': getattr(model, 'num_features', None),
        'feature_channels': [int(f['num_chs']) for f in info],
        'feature_strides': [int(f['reduction']) for f in info],
        'feature_modules': [str(f['module']) for f in info],
        'input_size': tuple(cfg.get('input_size', (3, 224, 224))),
        'fixed_input_size': bool(cfg.get('fixed_input_size', False)),
        'mean': tuple(cfg.get('mean', ())), 'std': tuple(cfg.get('std', ())),
        'interpolation': cfg.get('interpolation'), 'crop_pct': cfg.get('crop_pct'),
        'gmamba_depths': tuple(getattr(model, 'gmamba_depths', ()) or ()),
        'flops': None, 'flops_input_size': None,
    }
    if flops_input_size is not None:
        fn = _flops_fn()
        if fn is None:
            _logger.warning('gmamba_zoo.flops (the fvcore counter) is not available; the card leaves FLOPs out.')
        else:
            was_training = model.training
            try:
                facts['flops'] = float(fn(model.eval(), tuple(flops_input_size)))
                facts['flops_input_size'] = tuple(flops_input_size)
            finally:
                model.train(was_training)
    return facts


def _model_args_for_export(model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> Tuple[Dict, List[str]]:
    """timm's reconstruction args of ``model`` that JSON can hold, and the names of those it cannot.

    A zoo model built on a timm base model can carry the base's internal construction arguments (e.g. Swin's
    ``embed_layer`` partial); its entrypoint sets them again, so they are left out of config.json.
    """
    from timm.models import get_model_args
    args, dropped = {}, []
    for k, v in get_model_args(model, dict(extra or {})).items():
        try:
            json.dumps(v)
            args[k] = v
        except (TypeError, ValueError):
            dropped.append(k)
    return args, dropped


# ----------------------------------------------------------------------------------------------------------------------
# the model card

def _fmt_int(n: int) -> str:
    return f'{n:,}'


def _usage(architecture: str, repo_id: str, github_repo: str, model_args: Mapping[str, Any]) -> str:
    build_args = ''.join(f', {k}={v!r}' for k, v in model_args.items())
    return textwrap.dedent(f"""\
        Install the package first (`pip install gmamba-zoo`); `import gmamba_zoo` registers its models with timm, and
        timm cannot build `{architecture}` without it.

        ### timm

        ```python
        import timm
        import torch
        import gmamba_zoo  # noqa: F401  (registers the models with timm)

        model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
        data_config = timm.data.resolve_model_data_config(model)
        transform = timm.data.create_transform(**data_config, is_training=False)
        with torch.no_grad():
            logits = model(transform(image).unsqueeze(0))  # image: a PIL image
        ```

        A local copy of this repository loads the same way: `timm.create_model('local-dir:/path/to/folder',
        pretrained=True)`, or the weight file alone with
        `timm.create_model('{architecture}', pretrained=True{build_args},
        pretrained_cfg_overlay=dict(file='/path/to/model.safetensors'))`.

        ### Feature maps (`features_only`)

        ```python
        backbone = timm.create_model('hf-hub:{repo_id}', pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))
        print(backbone.feature_info.channels(), backbone.feature_info.reduction())
        features = backbone(torch.randn(1, 3, 224, 224))  # a list of [B, C, H, W] maps
        ```

        ### torch.hub

        ```python
        import torch
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        model = torch.hub.load('{github_repo}', '{architecture}', pretrained=False{build_args})
        model.load_state_dict(load_file(hf_hub_download('{repo_id}', 'model.safetensors')))
        ```

        `features_only=True` passes through `torch.hub.load` as well.
        """)


def model_card(
        facts: Mapping[str, Any],
        weights: WeightsSource,
        repo_id: Optional[str] = None,
        license: Optional[str] = None,
        model_args: Optional[Mapping[str, Any]] = None,
        github_repo: str = DEFAULT_GITHUB_REPO,
) -> str:
    """The model card (README.md with Hub metadata) for an exported model.

    Every number comes from ``facts`` (:func:`model_facts`, read from the model), the description from the model's
    registry entry; the weights section is ``weights``' statement. No accuracy is claimed for the weights: the papers'
    figures are quoted as the papers' claims for the authors' own models.

    Args:
        facts: From :func:`model_facts`.
        weights: Where the weights came from.
        repo_id: The Hub repo the card is for (snippets use it); a placeholder when None.
        license: The weights' license; the pretrained cfg's or apache-2.0 when None.
        model_args: Model args the snippets must pass to rebuild the model (config.json's, less timm's defaults).
        github_repo: The GitHub repository that ``torch.hub.load`` fetches the code from.
    """
    import timm
    from . import __version__
    arch = facts['architecture']
    family = _family(arch)
    repo_id = repo_id or f'{_PLACEHOLDER_ORG}/{arch}'
    license = (license or 'apache-2.0').lower()
    doc = (timm.models.model_entrypoint(arch).__doc__ or '').strip().split('\n')[0]
    tags = ['image-classification', 'timm', 'gmamba_zoo', 'state-space-model', family['name'].lower()]
    lines = ['---', 'tags:'] + [f'- {t}' for t in dict.fromkeys(tags)] + [
        'library_name: timm', 'pipeline_tag: image-classification', f'license: {license}', '---',
        f'# Model card for {repo_id.split("/")[-1]}', '',
        f'`{arch}`, a {family["name"]} model from [gmamba_zoo](https://github.com/{github_repo}). {doc}', '']
    if family['paper']:
        lines += [f'Paper: "{family["paper"]}".', '']

    lines += ['## Weights', '', f'- **Source:** {weights.statement(family)}',
              f'- **{family["blocks"][0].upper() + family["blocks"][1:]} trained:** '
              f'{"yes" if weights.blocks_trained else "no"}']
    if weights.notes:
        lines.append(f'- **Exporter\'s notes:** {weights.notes}')
    lines += ['- **Accuracy:** none claimed. gmamba_zoo has not evaluated these weights; the results reported in the '
              'papers are for the authors\' own trained models, not for these weights.', '']

    p = facts['params']
    rows = [('Architecture', f'`{arch}`'), ('Parameters', f'{_fmt_int(p)} ({p / 1e6:.2f} M)')]
    if facts.get('flops') is not None:
        c, h, w = facts['flops_input_size']
        rows.append((f'FLOPs at {c}x{h}x{w}', f'{facts["flops"] / 1e9:.2f} G (fvcore count, 1 multiply-add = 1 FLOP)'))
    else:
        rows.append(('FLOPs', 'not counted for this export'))
    rows += [('Classes', str(facts['num_classes'])), ('Final features (`num_features`)', str(facts['num_features'])),
             ('Feature channels (`features_only`)', str(facts['feature_channels'])),
             ('Feature strides', str(facts['feature_strides'])),
             ('Feature modules', ', '.join(f'`{m}`' for m in facts['feature_modules']))]
    if any(facts.get('gmamba_depths') or ()):
        rows.append(('GMamba blocks per feature tap', str(tuple(facts['gmamba_depths']))))
    c, h, w = facts['input_size']
    size_note = 'fixed' if facts['fixed_input_size'] else 'nominal, not fixed'
    rows += [('Input', f'{c}x{h}x{w} ({size_note}), mean {facts["mean"]}, std {facts["std"]}, '
                       f'{facts["interpolation"]} resize, crop {facts["crop_pct"]}')]
    if model_args:
        rows.append(('Model args besides timm defaults', f'`{json.dumps(dict(model_args), sort_keys=True)}`'))
    rows += [('License', license),
             ('Exported with', f'gmamba_zoo {__version__}, timm {timm.__version__}, torch {torch.__version__}')]
    lines += ['## Model details', '', '| | |', '| --- | --- |'] + [f'| {k} | {v} |' for k, v in rows] + ['']

    lines += ['## Usage', '', _usage(arch, repo_id, github_repo, model_args or {}).rstrip(), '']
    lines += ['## Citation', '', 'The GMamba and vGamba papers, whose architectures gmamba_zoo implements:', '']
    for key in ('gmamba', 'vgamba'):
        lines += ['```bibtex', CITATIONS[key], '```', '']
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# export, verification and upload

def export_for_hub(
        model: nn.Module,
        out_dir: PathLike,
        weights: WeightsSource,
        repo_id: Optional[str] = None,
        license: Optional[str] = None,
        flops_input_size: Optional[Tuple[int, int, int]] = None,
        github_repo: str = DEFAULT_GITHUB_REPO,
        overwrite: bool = False,
) -> Path:
    """Write ``model`` as a Hub-ready folder: ``model.safetensors``, ``config.json`` (timm's format), ``README.md``.

    config.json is written by ``timm.models.save_for_hf``; its pretrained_cfg's description, notes and tag are replaced
    by ``weights``' statement so that no copy of the registry's "untrained" (or any other) claim outlives the weights
    it described.

    Args:
        model: A model built from the registry (``timm.create_model`` or :func:`build_model`), with the weights to
            publish.
        out_dir: The folder to write; created if needed.
        weights: Where the weights came from (the card and config.json say it).
        repo_id: The Hub repo it is meant for (used in the card's snippets).
        license: The weights' license for the card; the pretrained cfg's, else apache-2.0, when None.
        flops_input_size: (C, H, W) to count FLOPs at for the card, or None.
        github_repo: The GitHub repository of this package, for the card's torch.hub snippet.
        overwrite: Allow writing into a folder that already holds files.

    Returns:
        The folder.

    Raises:
        ValueError: The model is not a zoo model, or is a features_only wrapper.
        FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
    """
    from timm.models import save_for_hf
    from . import list_models
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    arch = cfg.get('architecture')
    if arch not in list_models():
        raise ValueError(f'export_for_hub: expected a zoo model built by timm.create_model (architecture in '
                         f'{list_models()}), got architecture {arch!r} ({type(model).__name__}).')
    if not hasattr(model, 'num_classes') or not hasattr(model, 'state_dict'):
        raise ValueError('export_for_hub: export the full model, not a features_only wrapper.')
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f'{out} is not empty; pick another folder or pass overwrite=True (--overwrite).')
    out.mkdir(parents=True, exist_ok=True)

    model_args, dropped = _model_args_for_export(model)
    if dropped:
        _logger.info('%s: construction args %s are not JSON and are set again by the model entrypoint; left out of '
                     'config.json.', arch, dropped)
    family = _family(arch)
    statement = weights.statement(family)
    tag = {'init': 'untrained', 'pretrained': cfg.get('tag') or 'pretrained',
           'checkpoint': 'checkpoint_blocks_trained' if weights.blocks_trained else 'checkpoint_blocks_untrained'}
    export_cfg = {'description': statement, 'notes': tuple(n for n in (statement, weights.notes) if n),
                  'tag': tag[weights.kind]}
    if weights.kind != 'pretrained':
        # the registry cfg's paper ids describe the recipe of its pretrained weights, which these are not
        export_cfg['paper_ids'] = None
    saved_args = getattr(model, '_model_args', None)
    try:
        # save_for_hf reads the args from the model; hand it only the JSON-able ones
        model._model_args = dict(model_args)
        save_for_hf(model, str(out), model_config={'pretrained_cfg': export_cfg}, safe_serialization=True)
    finally:
        if saved_args is None:
            del model._model_args
        else:
            model._model_args = saved_args
    facts = model_facts(model, flops_input_size)
    card_args = {k: v for k, v in model_args.items() if _TIMM_DEFAULT_ARGS.get(k, object()) != v}
    card = model_card(facts, weights, repo_id=repo_id, license=license or cfg.get('license'), model_args=card_args,
                      github_repo=github_repo)
    (out / CARD_NAME).write_text(card, encoding='utf-8')
    return out


def verify_export(folder: PathLike, model: nn.Module) -> None:
    """Rebuild the exported folder through timm's ``local-dir:`` loader and check every tensor equals ``model``'s.

    Raises:
        AssertionError: A key, shape or value differs (the config.json would not rebuild the exported model).
    """
    import timm
    loaded = timm.create_model(f'local-dir:{Path(folder).resolve()}', pretrained=True)
    want, got = model.state_dict(), loaded.state_dict()
    if want.keys() != got.keys():
        raise AssertionError(f'the exported folder rebuilds another model: missing {_list(want.keys() - got.keys())}, '
                             f'extra {_list(got.keys() - want.keys())}.')
    diff = [k for k in want if want[k].shape != got[k].shape or not torch.equal(want[k], got[k])]
    if diff:
        raise AssertionError(f'the exported folder loads different tensors: {_list(diff)}.')


def upload_folder(
        folder: PathLike,
        repo_id: str,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: str = 'Add model (gmamba_zoo export)',
        create_pr: bool = False,
        token: Optional[str] = None,
) -> Any:
    """Create ``repo_id`` on the Hub if needed and upload ``folder`` to it.

    The token is huggingface_hub's usual one (``HF_TOKEN``, or the one ``huggingface-cli login`` stored) unless given.

    Returns:
        huggingface_hub's ``CommitInfo``.
    """
    from huggingface_hub import HfApi
    from . import __version__
    api = HfApi(token=token, library_name='gmamba_zoo', library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model').repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type='model', revision=revision,
                             commit_message=commit_message, create_pr=create_pr)


# ----------------------------------------------------------------------------------------------------------------------
# command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('name', help='a model name from `gmamba-zoo list`')
    src = parser.add_mutually_exclusive_group()
    src.add_argument('--checkpoint', type=Path, help='training checkpoint to export (.safetensors, or .pth/.pt/.bin '
                     'read with torch.load(weights_only=True)); a plain state dict or a dict with state_dict / model / '
                     'state_dict_ema')
    src.add_argument('--pretrained', action='store_true',
                     help="export the registry's pretrained weights (downloaded by timm; GMamba: the plain backbone's "
                          "ImageNet weights with untrained blocks)")
    parser.add_argument('--ema', action='store_true', help="take the checkpoint's EMA weights")
    parser.add_argument('--blocks-trained', action='store_true',
                        help="state that the checkpoint's state-space blocks were trained (default: untrained)")
    parser.add_argument('--notes', default='', help='free text for the card, e.g. the data and schedule of training')
    parser.add_argument('--num-classes', type=int, help='classes of the checkpoint\'s head (default: the model\'s)')
    parser.add_argument('--model-args', type=json.loads, default={}, metavar='JSON',
                        help='more timm.create_model arguments as JSON, e.g. \'{"gmamba_depths": [1, 1, 1, 0]}\'')
    parser.add_argument('--out', type=Path, help='folder to write (default: hub_export/<name>)')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty --out')
    parser.add_argument('--repo-id', help='Hub repo (<org>/<name>) to upload to; without it only the folder is written')
    parser.add_argument('--dry-run', action='store_true',
                        help='write the folder (its card made for --repo-id) but upload nothing')
    parser.add_argument('--private', action='store_true', help='create the Hub repo as private')
    parser.add_argument('--revision', help='branch to upload to')
    parser.add_argument('--commit-message', default='Add model (gmamba_zoo export)')
    parser.add_argument('--license', help='license of the weights for the card (default: the pretrained cfg\'s, '
                                          'else apache-2.0)')
    parser.add_argument('--flops-size', type=int, default=224, help='image size to count FLOPs at for the card')
    parser.add_argument('--no-flops', action='store_true', help='leave FLOPs out of the card (counting takes a while)')
    parser.add_argument('--github-repo', default=DEFAULT_GITHUB_REPO,
                        help=f'GitHub repository of this package for the card\'s torch.hub snippet '
                             f'(default {DEFAULT_GITHUB_REPO})')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip reloading the folder through timm and comparing every tensor')


def run(args: argparse.Namespace) -> int:
    if args.blocks_trained and args.checkpoint is None:
        raise SystemExit('push-to-hub: --blocks-trained needs --checkpoint (no other weights have trained blocks).')
    if args.ema and args.checkpoint is None:
        raise SystemExit('push-to-hub: --ema needs --checkpoint.')
    model_args = dict(args.model_args)
    if args.num_classes is not None:
        model_args['num_classes'] = args.num_classes
    try:
        model, weights = build_model(args.name, checkpoint=args.checkpoint, pretrained=args.pretrained,
                                     use_ema=args.ema, blocks_trained=args.blocks_trained, notes=args.notes,
                                     **model_args)
    except (ValueError, FileNotFoundError, CheckpointMismatchError) as e:
        raise SystemExit(f'push-to-hub: {e}') from e
    model.eval()
    out = args.out or Path('hub_export') / args.name
    flops_size = None if args.no_flops else (3, args.flops_size, args.flops_size)
    try:
        export_for_hub(model, out, weights, repo_id=args.repo_id, license=args.license, flops_input_size=flops_size,
                       github_repo=args.github_repo, overwrite=args.overwrite)
    except FileExistsError as e:
        raise SystemExit(f'push-to-hub: {e}') from e
    print(f'wrote {out}: ' + ', '.join(sorted(p.name for p in out.iterdir())))
    print(f'weights: {weights.statement(_family(args.name))}')
    if not args.no_verify:
        verify_export(out, model)
        print('verified: timm rebuilds the folder (local-dir:) with every tensor equal')
    if args.repo_id and not args.dry_run:
        info = upload_folder(out, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message)
        print(f'uploaded to https://huggingface.co/{args.repo_id}: {getattr(info, "commit_url", info)}')
    elif args.repo_id:
        print('dry run: nothing uploaded; upload with the same command without --dry-run')
    return 0


@command('push-to-hub')
def _push_to_hub_cmd(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Export a model (its own, pretrained or checkpoint weights) as a Hub folder with a model card; upload it."""
    add_arguments(parser)
    return run


def main(argv: Optional[List[str]] = None) -> int:
    return script_main(__doc__, add_arguments, run, argv, prog='push_to_hub.py')


if __name__ == '__main__':
    sys.exit(main())

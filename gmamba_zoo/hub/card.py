"""Model cards: the one generator of what a published model says about itself, and the papers' citations.

A card is built from three things and nothing else: the model (:func:`model_facts`: parameters, FLOPs, feature
channels and strides, input config, read from the model), the registry (the model's family, paper and docstring) and
where the weights came from (:class:`WeightsSource`, stated by the exporter). It never claims accuracy for the
weights: the results in the papers are the authors' own trained models', not these weights'.

:data:`CITATIONS` holds the BibTeX of both papers, read from the model files' docstrings (where they are written).
"""
from __future__ import annotations

import json
import logging
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..models import gmamba as gmamba_models, vgamba as vgamba_models
from ..models.features import feature_info_dicts

__all__ = [
    'GMAMBA_PAPER', 'VGAMBA_PAPER', 'CITATIONS', 'DEFAULT_GITHUB_REPO', 'WeightsSource', 'model_family',
    'pretrained_weights', 'model_facts', 'model_card',
]

_logger = logging.getLogger(__name__)

DEFAULT_GITHUB_REPO = 'gmamba-zoo/gmamba_zoo'  # the torch.hub repo shown in model cards; --github-repo overrides it
_PLACEHOLDER_ORG = 'your-org'

GMAMBA_PAPER = 'Enabling True Global Perception in State Space Models for Visual Tasks'
VGAMBA_PAPER = 'vGamba: Attentive State Space Bottleneck for efficient Long-range Dependencies in Visual Recognition'


def _bibtex(module: Any, title: str) -> str:
    """The BibTeX entry in a model module's docstring (where the citation lives); a title-only entry where the
    docstrings were stripped (``python -OO``)."""
    lines = (module.__doc__ or '').splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith('@')), None)
    if start is None:
        return f'@misc{{{module.__name__.rsplit(".", 1)[-1]},\n  title={{{title}}}\n}}'
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == '}')
    return textwrap.dedent('\n'.join(lines[start:end + 1]))


# BibTeX of both papers, keyed like _FAMILIES, from the model files' docstrings. GMamba: the ICLR 2026 paper
# (OpenReview). vGamba: arXiv 2503.21262, with the authors of its current version (v3; v1 and v2 list only the first
# two).
CITATIONS: Dict[str, str] = {
    'gmamba': _bibtex(gmamba_models, GMAMBA_PAPER), 'vgamba': _bibtex(vgamba_models, VGAMBA_PAPER)}

# What a model family's state-space blocks are called, and which paper it implements; keyed by the module that
# registers the model (gmamba_zoo.models.<key>).
_FAMILIES: Dict[str, Dict[str, str]] = {
    'gmamba': dict(name='GMamba', blocks='GMamba (GSSM) blocks', paper=GMAMBA_PAPER),
    'vgamba': dict(name='vGamba', blocks='Gamba blocks (Mamba cell + 2-D attention)', paper=VGAMBA_PAPER),
}
_GENERIC_FAMILY = dict(name='gmamba_zoo', blocks='state-space blocks', paper='')
# timm's defaults for the args get_model_args always records; the card's snippets leave them out
_TIMM_DEFAULT_ARGS = {'in_chans': 3, 'num_classes': 1000, 'global_pool': 'avg'}


def model_family(architecture: str) -> Dict[str, str]:
    """The family of a registered model: ``name``, what its state-space ``blocks`` are called, and its ``paper``."""
    import timm
    module = timm.models.model_entrypoint(architecture).__module__
    return _FAMILIES.get(module.rsplit('.', 1)[-1], _GENERIC_FAMILY)


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
        """One or two sentences saying where the weights came from and whether the blocks were trained.

        Args:
            family: The model's family (:func:`model_family`).
        """
        blocks = family['blocks']
        if self.kind == 'init':
            return (f'Untrained: the random initialisation of the model, {blocks} included. Not for inference '
                    f'before training.')
        if self.kind == 'pretrained':
            if family['name'] == 'GMamba':
                return (f"timm's ImageNet weights for the plain backbone ({self.detail}); the GMamba blocks are "
                        f"untrained (identity at initialisation: layer scale 0), so the model computes what the plain "
                        f"backbone computes.")
            return f'The registry\'s pretrained weights ({self.detail}); {blocks} untrained.'
        return f'A user checkpoint: {self.detail}. {blocks[0].upper() + blocks[1:]} trained: ' \
               f'{"yes" if self.blocks_trained else "no"} (as stated by whoever exported it).'


def pretrained_weights(
        model_name: str,
        pretrained_cfg: Optional[Mapping[str, Any]] = None,
        notes: str = '',
) -> WeightsSource:
    """The registry's pretrained weights of a model as a :class:`WeightsSource`; nothing is downloaded.

    No registered pretrained cfg has trained state-space blocks, so ``blocks_trained`` is always False.

    Args:
        model_name: ``'<name>'`` (its default tag) or ``'<name>.<tag>'``, e.g.
            ``'resnet50_gmamba.a1_in1k_untrained_gmamba'``.
        pretrained_cfg: The cfg the weights were loaded with (a built model's ``pretrained_cfg``, which an overlay may
            have changed); timm's registered cfg of ``model_name`` when None.
        notes: Free text for the card.

    Raises:
        ValueError: ``model_name`` has no registered pretrained cfg (and none is given).
    """
    from timm.models import get_pretrained_cfg
    name = model_name.partition('.')[0]
    if pretrained_cfg is None:
        try:
            found = get_pretrained_cfg(model_name)
        except RuntimeError as e:  # timm's error for an unknown tag
            raise ValueError(f'pretrained_weights: {e}') from e
        if found is None:
            raise ValueError(f'pretrained_weights: {model_name!r} has no registered pretrained cfg.')
        pretrained_cfg = found.to_dict()
    cfg = pretrained_cfg
    where = cfg.get('hf_hub_id') or cfg.get('url') or cfg.get('file') or 'unknown location'
    if model_family(name)['name'] == 'GMamba':
        detail = f'`{where}`'
    else:
        cfg_notes = cfg.get('notes') or ()
        detail = f"timm pretrained cfg `{name}.{cfg.get('tag')}`, weights from `{where}`" + (
            f': {cfg_notes[0]}' if cfg_notes else '')
    return WeightsSource('pretrained', detail, False, notes)


# ----------------------------------------------------------------------------------------------------------------------
# facts about the model

def _flops_fn() -> Optional[Callable[[nn.Module, Tuple[int, int, int]], float]]:
    """The package's FLOP counter (:func:`gmamba_zoo.flops.count`, fvcore; one multiply-add = one FLOP), if present."""
    try:
        from .. import flops
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
    info = feature_info_dicts(model)
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


# ----------------------------------------------------------------------------------------------------------------------
# the card

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
    """The model card (README.md with Hub metadata) of a model with the given weights.

    Every number comes from ``facts`` (:func:`model_facts`, read from the model), the description from the model's
    registry entry; the weights section is ``weights``' statement. No accuracy is claimed for the weights.

    Args:
        facts: From :func:`model_facts`.
        weights: Where the weights came from.
        repo_id: The Hub repo the card is for (snippets use it); a placeholder when None.
        license: The weights' license; apache-2.0 when None.
        model_args: The model's construction args as config.json records them; the snippets pass those that differ
            from timm's defaults.
        github_repo: The GitHub repository that ``torch.hub.load`` fetches the code from.
    """
    import timm
    from .. import __version__
    arch = facts['architecture']
    family = model_family(arch)
    repo_id = repo_id or f'{_PLACEHOLDER_ORG}/{arch}'
    license = (license or 'apache-2.0').lower()
    model_args = {k: v for k, v in (model_args or {}).items() if _TIMM_DEFAULT_ARGS.get(k, object()) != v}
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
    rows = [('Architecture', f'`{arch}`'), ('Parameters', f'{p:,} ({p / 1e6:.2f} M)')]
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

    lines += ['## Usage', '', _usage(arch, repo_id, github_repo, model_args).rstrip(), '']
    lines += ['## Citation', '', 'The GMamba and vGamba papers, whose architectures gmamba_zoo implements:', '']
    for key in ('gmamba', 'vgamba'):
        lines += ['```bibtex', CITATIONS[key], '```', '']
    return '\n'.join(lines)

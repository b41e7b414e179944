"""Publish zoo models to the Hugging Face Hub: a Hub-ready folder (weights, timm config, model card) and its upload.

A published folder holds exactly what timm's own Hub loader reads, so after ``import gmamba_zoo`` these all work:

    timm.create_model('hf-hub:<org>/<repo>', pretrained=True)              # from the Hub (or its offline cache)
    timm.create_model('local-dir:/path/to/folder', pretrained=True)        # the folder on disk
    timm.create_model('<name>', pretrained=True,
                      pretrained_cfg_overlay=dict(file='/path/to/folder/model.safetensors'))   # the weight file

Folder contents:
    ``model.safetensors``  the model's state dict (safetensors only: loading it unpickles nothing).
    ``config.json``        timm's format, written by ``timm.models.save_for_hf`` (architecture, num_classes,
                           num_features, global_pool, label_names if given, pretrained_cfg), with the pretrained_cfg's
                           description, notes and tag rewritten to say where THESE weights came from, and
                           ``model_args`` holding only the build arguments that differ from the entrypoint's defaults
                           (:func:`hub_model_args`), never ``num_classes``: the top-level ``num_classes`` carries it.
                           That is the layout Hugging Face transformers' ``TimmWrapper`` reads
                           (``AutoModelForImageClassification``, ``AutoModel``, ``AutoImageProcessor``, the
                           image-classification pipeline): it passes ``num_classes`` to ``timm.create_model`` itself
                           and fails on a second one in ``model_args``. Folders written before, with ``in_chans``,
                           ``num_classes`` and ``global_pool`` in ``model_args``, still load in timm.
    ``README.md``          the model card (:func:`gmamba_zoo.hub.card.model_card`).

Weights come from one of three places (:class:`~gmamba_zoo.hub.card.WeightsSource`): the model's own initialisation,
the registry's pretrained weights (``pretrained=True``: for GMamba models timm's ImageNet weights for the plain backbone
with untrained, identity GMamba blocks), or a training checkpoint (read by
:func:`gmamba_zoo.hub.checkpoint.read_checkpoint`). Whether the state-space blocks were trained is never guessed: the
exporter states it (``blocks_trained``, default False), and the card repeats it and claims no accuracy.

Uploading uses ``huggingface_hub.HfApi`` (token from ``HF_TOKEN`` or ``huggingface-cli login``). timm's
``push_to_hf_hub`` is not used for it because it cannot take a ready-made model card and would keep an old README.

Command line: ``gmamba-zoo push-to-hub NAME ...`` and ``python scripts/push_to_hub.py NAME ...`` (same arguments).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..bench.progress import Progress, add_quiet_argument
from .card import DEFAULT_GITHUB_REPO, WeightsSource, model_card, model_facts, model_family, pretrained_weights
from .checkpoint import CheckpointMismatchError, _list_keys, file_sha256, load_checkpoint_into, read_checkpoint


__all__ = ['build_model', 'hub_model_args', 'export_for_hub', 'verify_export', 'upload_folder', 'add_arguments', 'run']

PathLike = Union[str, Path]
CARD_NAME = 'README.md'


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
    from ..models import list_models
    if name not in list_models():
        raise ValueError(f'unknown model {name!r}; the zoo has {list_models()}.')
    if checkpoint is not None and pretrained:
        raise ValueError('give a checkpoint or pretrained=True, not both (the checkpoint would replace every weight).')
    if blocks_trained and checkpoint is None:
        raise ValueError('blocks_trained=True needs a checkpoint: no other weights have trained state-space blocks.')
    if checkpoint is None:
        model = timm.create_model(name, pretrained=pretrained, **model_args)
        if pretrained:
            return model, pretrained_weights(name, model.pretrained_cfg, notes)
        return model, WeightsSource('init', '', False, notes)
    path = Path(checkpoint)
    state_dict = read_checkpoint(path, use_ema=use_ema)
    model = timm.create_model(name, pretrained=False, **model_args)
    load_checkpoint_into(model, state_dict, source=f'checkpoint {path}')
    detail = f'`{path.name}`{" (EMA weights)" if use_ema else ""}, SHA-256 `{file_sha256(path)}`'
    return model, WeightsSource('checkpoint', detail, blocks_trained, notes)


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
        model_args: Optional[Mapping[str, Any]] = None,
        label_names: Optional[Sequence[str]] = None,
) -> Path:
    """Write ``model`` as a Hub-ready folder: ``model.safetensors``, ``config.json`` (timm's format), ``README.md``.

    The weights and config.json are written by ``timm.models.save_for_hf``; config.json's model_args are the build
    arguments that differ from the entrypoint's defaults (:func:`hub_model_args`) less ``num_classes``, and its
    pretrained_cfg's description, notes and tag are replaced by ``weights``' statement so that no copy of the
    registry's "untrained" (or any other) claim outlives the weights it described.

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
        model_args: JSON replacements for construction args that JSON cannot hold (``save_for_hf``'s model_args);
            e.g. a layer's registered name for the layer class the model was built with.
        label_names: One name per class, in class-index order (config.json's ``label_names``; transformers'
            ``id2label``). None: none recorded (transformers then names ImageNet's classes for a 1000-class head).

    Returns:
        The folder.

    Raises:
        ValueError: The model is not a zoo model, is a features_only wrapper, or was built with args JSON cannot hold
            and ``model_args`` does not replace, or ``label_names`` does not hold one name per class.
        FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
    """
    from timm.models import get_model_args, save_for_hf
    from ..models import list_models
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    arch = cfg.get('architecture')
    if arch not in list_models():
        raise ValueError(f'export_for_hub: expected a zoo model built by timm.create_model (architecture in '
                         f'{list_models()}), got architecture {arch!r} ({type(model).__name__}).')
    if not hasattr(model, 'num_classes') or not hasattr(model, 'state_dict'):
        raise ValueError('export_for_hub: export the full model, not a features_only wrapper.')
    replacements = dict(model_args or {})
    export_args = get_model_args(model, replacements)
    not_json = [k for k, v in export_args.items() if not _is_json(v)]
    if not_json:
        raise ValueError(f'export_for_hub: {arch} was built with args {not_json} that JSON cannot hold, so config.json '
                         f'could not rebuild it; pass JSON replacements for them as model_args.')
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if len(label_names) != model.num_classes:
            raise ValueError(f'export_for_hub: expected one label name per class ({model.num_classes}), got '
                             f'{len(label_names)}.')
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f'{out} is not empty; pick another folder or pass overwrite=True (--overwrite).')
    out.mkdir(parents=True, exist_ok=True)

    statement = weights.statement(model_family(arch))
    tag = {'init': 'untrained', 'pretrained': cfg.get('tag') or 'pretrained',
           'checkpoint': 'checkpoint_blocks_trained' if weights.blocks_trained else 'checkpoint_blocks_untrained'}
    export_cfg = {'description': statement, 'notes': tuple(n for n in (statement, weights.notes) if n),
                  'tag': tag[weights.kind]}
    if weights.kind != 'pretrained':
        # the registry cfg's paper ids describe the recipe of its pretrained weights, which these are not
        export_cfg['paper_ids'] = None
    model_config: Dict[str, Any] = {'pretrained_cfg': export_cfg}
    if label_names is not None:
        model_config['label_names'] = label_names
    save_for_hf(model, str(out), model_config=model_config, model_args=replacements, safe_serialization=True)
    # save_for_hf records every arg get_model_args returns (in_chans, num_classes and global_pool always); keep only
    # those that differ from the defaults, as timm's exports did before, so that transformers can pass num_classes
    build_args = hub_model_args(model, replacements)
    config_path = out / 'config.json'
    config = json.loads(config_path.read_text(encoding='utf-8'))
    config.pop('model_args', None)
    config_args = {k: v for k, v in build_args.items() if k != 'num_classes'}
    if config_args:
        config = {**{k: v for k, v in config.items() if k != 'pretrained_cfg'}, 'model_args': config_args,
                  'pretrained_cfg': config['pretrained_cfg']}
    config_path.write_text(json.dumps(config, indent=2), encoding='utf-8')
    facts = model_facts(model, flops_input_size)
    card = model_card(facts, weights, repo_id=repo_id, license=license or cfg.get('license'), model_args=build_args,
                      github_repo=github_repo)
    (out / CARD_NAME).write_text(card, encoding='utf-8')
    return out


def hub_model_args(model: nn.Module, replacements: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The arguments that rebuild ``model`` from its entrypoint: those that differ from the entrypoint's defaults.

    Every argument the model was built with (``timm.models.get_model_args``: the ones given to ``timm.create_model``,
    less drop rates, with ``replacements`` for those JSON cannot hold) is kept, except the ones timm records for
    every model (``in_chans``, ``num_classes``, ``global_pool``, ``img_size``: their current values) where they equal
    those of the entrypoint's default build, which is made on the meta device (no memory, no weights initialised).
    An argument given with its default value (``gmamba_depths`` equal to the table's) is kept, as given.

    Args:
        model: A model built by ``timm.create_model`` from a registered name.
        replacements: JSON replacements for arguments JSON cannot hold.

    Returns:
        ``{name: value}``, in get_model_args' order.
    """
    import timm
    from timm.models import get_model_args
    args = get_model_args(model, dict(replacements or {}))
    with torch.device('meta'):
        default = get_model_args(timm.create_model(model.pretrained_cfg['architecture'], pretrained=False))
    return {k: v for k, v in args.items() if k not in default or not _same(default[k], v)}


def _same(a: Any, b: Any) -> bool:
    """Whether two argument values are the same once JSON has held them (tuples and lists alike)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def verify_export(folder: PathLike, model: nn.Module) -> None:
    """Rebuild the exported folder through timm's ``local-dir:`` loader and check every tensor equals ``model``'s.

    Raises:
        AssertionError: A key, shape or value differs (the config.json would not rebuild the exported model).
    """
    import timm
    loaded = timm.create_model(f'local-dir:{Path(folder).resolve()}', pretrained=True)
    want, got = model.state_dict(), loaded.state_dict()
    if want.keys() != got.keys():
        raise AssertionError(f'the exported folder rebuilds another model: missing '
                             f'{_list_keys(want.keys() - got.keys())}, extra {_list_keys(got.keys() - want.keys())}.')
    diff = [k for k in want if want[k].shape != got[k].shape or not torch.equal(want[k], got[k])]
    if diff:
        raise AssertionError(f'the exported folder loads different tensors: {_list_keys(diff)}.')


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
    from .. import __version__
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
    parser.add_argument('--label-names', type=Path, metavar='FILE',
                        help="a text file with one class name per line, in class-index order (`gmamba-zoo train` "
                             "numbers the class folders in timm's natural sort order); config.json's label_names, "
                             "transformers' id2label")
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
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.blocks_trained and args.checkpoint is None:
        raise SystemExit('push-to-hub: --blocks-trained needs --checkpoint (no other weights have trained blocks).')
    if args.ema and args.checkpoint is None:
        raise SystemExit('push-to-hub: --ema needs --checkpoint.')
    model_args = dict(args.model_args)
    if args.num_classes is not None:
        model_args['num_classes'] = args.num_classes
    upload = bool(args.repo_id and not args.dry_run)
    with Progress('push-to-hub', 2 + (not args.no_verify) + upload, 'stage', args.quiet) as progress:
        return _run(args, model_args, upload, progress)


def _run(args: argparse.Namespace, model_args: Dict[str, Any], upload: bool, progress: Progress) -> int:
    progress.stage(f'build {args.name}')
    try:
        model, weights = build_model(args.name, checkpoint=args.checkpoint, pretrained=args.pretrained,
                                     use_ema=args.ema, blocks_trained=args.blocks_trained, notes=args.notes,
                                     **model_args)
    except (ValueError, FileNotFoundError, CheckpointMismatchError) as e:
        raise SystemExit(f'push-to-hub: {e}') from e
    model.eval()
    progress.done()
    label_names = None
    if args.label_names is not None:
        try:
            label_names = [line.strip() for line in args.label_names.read_text(encoding='utf-8').splitlines()
                           if line.strip()]
        except OSError as e:
            raise SystemExit(f'push-to-hub: --label-names: {e}') from e
    out = args.out or Path('hub_export') / args.name
    flops_size = None if args.no_flops else (3, args.flops_size, args.flops_size)
    progress.stage('write the folder' + ('' if flops_size is None else ', count FLOPs for the card'))
    try:
        export_for_hub(model, out, weights, repo_id=args.repo_id, license=args.license, flops_input_size=flops_size,
                       github_repo=args.github_repo, overwrite=args.overwrite, label_names=label_names)
    except (FileExistsError, ValueError) as e:
        raise SystemExit(f'push-to-hub: {e}') from e
    progress.done()
    progress.print(f'wrote {out}: ' + ', '.join(sorted(p.name for p in out.iterdir())))
    progress.print(f'weights: {weights.statement(model_family(args.name))}')
    if not args.no_verify:
        progress.stage('verify: reload through timm')
        verify_export(out, model)
        progress.done()
        progress.print('verified: timm rebuilds the folder (local-dir:) with every tensor equal')
    if upload:
        progress.stage(f'upload to {args.repo_id}')
        info = upload_folder(out, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message)
        progress.done()
        progress.print(f'uploaded to https://huggingface.co/{args.repo_id}: {getattr(info, "commit_url", info)}')
    elif args.repo_id:
        progress.print('dry run: nothing uploaded; upload with the same command without --dry-run')
    return 0

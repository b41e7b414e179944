"""GMamba backbones: GSSM blocks inserted after the stages of any hierarchical timm backbone (registered: ResNet,
ConvNeXt, Swin).

Paper: "Enabling True Global Perception in State Space Models for Visual Tasks" (GMamba, ICLR 2026)::

    @inproceedings{hui2026enabling,
      title={Enabling True Global Perception in State Space Models for Visual Tasks},
      author={Jie Hui and Zhenxiang Zhang and Wenyu Mi and Jianji Wang},
      booktitle={The Fourteenth International Conference on Learning Representations},
      year={2026},
      url={https://openreview.net/forum?id=96p1eBUVaN}
    }

One mechanism, :func:`add_gmamba`, inserts :class:`~gmamba_zoo.layers.GMambaBlock` s in place after feature taps of
any timm backbone with ``feature_info``, and one build, :func:`create_model`, makes a timm model of it: any timm base
through ``gmamba_zoo.create_model(base, gmamba_depths=...)``, and every registered ``*_gmamba`` model as a record in
:data:`~gmamba_zoo.models.variants.ZOO_VARIANTS` (a timm base, a block count per tap, pretrained tags, a
``features_only`` cfg). Both go through timm's ``build_model_with_cfg``, so timm's own ``forward_features``,
``forward_intermediates``, ``features_only``, gradient checkpointing, ``group_matcher`` and classifier handling keep
working, and the plain timm checkpoint's keys load unchanged.

Defaults follow the paper's placement table: (2, 2, 2, 1) blocks after stages 1-4 for the segmentation backbones
(ResNet-18/34, ConvNeXt, Swin) and (1, 1, 1, 0) for ResNet-50/101 (the detection configuration).
``timm.create_model(name, gmamba_depths=(...), gmamba_kwargs=dict(...))`` overrides the depths and the block options.

Choices where the paper is silent:
    * Stages are found through the model's ``feature_info`` module names; ``depths[i]`` goes with the i-th of the
      last ``len(depths)`` feature taps (for ResNet, whose first tap is the stem, 4 depths go to ``layer1..4``).
    * Where the blocks go is read from the model by :func:`plan_gmamba`: one probe forward records each tapped
      module's output (its layout, NCHW or NHWC, and whether it is one stage's single map). The blocks are appended
      to the tapped module when it is an ``nn.Sequential`` (ResNet ``layerN``) or to its ``blocks`` Sequential when
      that computes the module's output (ConvNeXt ``stages[i].blocks``, Swin ``layers[i].blocks``, channels-last
      there), so they run on the stage's output and are checkpointed with the stage's blocks; otherwise they are
      held in a new ``gmamba`` Sequential of the tapped module, run by the module itself (a stage that runs its
      children in order) or by a forward hook on it. Taps where blocks cannot go are refused before any is built.
    * Stochastic depth of the inserted blocks rises linearly from 0 to ``drop_path_rate`` over all inserted blocks in
      order; ``drop_path_rate`` also goes to the base model as usual. Left out, the inserted blocks have none.
    * Swin is built by :func:`~gmamba_zoo.models.swin.create_for_input_size` (attention masks built per forward, a
      patch embedding that pads the image to a multiple of the patch size), so any input size works;
      ``features_only`` uses timm's ``forward_intermediates`` getter so Swin's features are NCHW like the others'.
    * Pretrained weights are the ImageNet weights timm publishes on the Hugging Face Hub for the base backbone
      (safetensors). The GMamba blocks are NOT trained: their layer scales start at 0, so a model loaded with
      ``pretrained=True`` computes exactly what the plain backbone computes until it is fine-tuned. Every tag ends in
      ``_untrained_gmamba`` to say so. ``default_cfgs`` repeat the data config of timm's cfg of each base checkpoint
      (written out, not read from timm's registry at import; ``tests/test_variants.py`` checks they agree).
"""
from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, is_model, load_checkpoint, model_entrypoint, split_model_name_tag

from ..layers import GMambaBlock
from ..layers._checks import check_bool, check_int_sequence, check_mapping, check_real
from ..layers.gssm import check_gmamba_block_kwargs
from ._checkpoint import CheckpointMismatchError, describe_keys, key_shapes, list_keys
from ._registry import build_zoo_model, register_zoo_model
from .features import NchwFeatureGraphNet, feature_info_dicts, is_features_only
from .swin import create_for_input_size, is_swin
from .variants import GMAMBA_VARIANTS, ZOO_VARIANTS, parse_gmamba_spec

__all__ = [
    'add_gmamba', 'plan_gmamba', 'create_model', 'build_for_input_size', 'GMambaTap', 'GMambaPlacementError',
    'gmamba_no_weight_decay',
    'GMAMBA_VARIANTS', 'checkpoint_filter_fn',
]

_PAPER_NAME = 'Enabling True Global Perception in State Space Models for Visual Tasks'
_UNTRAINED_NOTE = (
    'The GMamba (GSSM) blocks are untrained: only the base backbone carries ImageNet weights (timm\'s, from the '
    'Hugging Face Hub). The blocks start as the identity (layer scale 0), so the model computes exactly what the plain '
    'backbone computes until it is fine-tuned.'
)
_CHILD = 'gmamba'  # the Sequential added to a tapped module that holds no Sequential of its own
# Names (relative to a GMambaBlock) of the parameters that are kept out of weight decay: the scan's A_log and D,
# the layer-scale gammas and the scalar band / modulation gates.
_NO_WD_SUFFIXES = ('mixer.A_log', 'mixer.D', 'ls1.gamma', 'ls2.gamma', 'low_weight', 'high_weight', 'fgmm.ratio')


def _feature_info_list(model: nn.Module) -> List[Dict[str, Any]]:
    """The model's ``feature_info`` as a list of dicts (num_chs, reduction, module); a clear error if it has none."""
    if is_features_only(model):
        raise TypeError(
            f'add_gmamba: got a features_only wrapper ({type(model).__name__}); pass the full timm model and wrap it '
            f'afterwards (or use timm.create_model("<name>_gmamba", features_only=True)).')
    info = feature_info_dicts(model)
    if not info or not all(isinstance(i, dict) and {'num_chs', 'module'} <= i.keys() for i in info):
        raise TypeError(
            f'add_gmamba: expected a timm backbone with a `feature_info` list of dicts with "num_chs" and "module" '
            f'(one per stage); {type(model).__name__} has {type(getattr(model, "feature_info", None)).__name__}.')
    return info


class GMambaPlacementError(TypeError):
    """GMamba blocks cannot be placed after a feature tap of a model; the message names the model, the tap and why."""


class _ProbeError(GMambaPlacementError):
    """The probe forward failed at every size tried (on the meta device: an op without a meta kernel, perhaps)."""


@dataclass(frozen=True)
class GMambaTap:
    """Where :func:`add_gmamba` puts the blocks of one feature tap, as read from the model by a probe forward.

    Attributes:
        index: The tap's index in ``feature_info``.
        module: The tapped module's name (``feature_info[index]['module']``).
        num_chs: Channels C of the tap's output.
        reduction: Its stride.
        layout: ``'NCHW'`` or ``'NHWC'``: the layout of the tap's output.
        placement: How the blocks join the forward so that they run on the tap's output: ``'append'`` (the tapped
            module is an ``nn.Sequential``; appended to it), ``'blocks'`` (appended to the tapped module's
            ``nn.Sequential`` ``blocks``, whose output is the module's output), ``'child'`` (an ``nn.Sequential``
            ``gmamba`` added to the tapped module, which runs its children in order, e.g. RegNet's ``RegStage``) or
            ``'hook'`` (the same ``gmamba`` child, run on the module's output by a forward hook).
    """
    index: int
    module: str
    num_chs: int
    reduction: int
    layout: str
    placement: str

    def holder(self, model: nn.Module) -> nn.Sequential:
        """The ``nn.Sequential`` in ``model`` that holds (or will hold) this tap's blocks."""
        module = model.get_submodule(self.module)
        if self.placement == 'append':
            return module
        return module.blocks if self.placement == 'blocks' else getattr(module, _CHILD)


def _run_gmamba_blocks(module: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a tapped module whose own forward does not run its ``gmamba`` child: run it on the output."""
    return getattr(module, _CHILD)(output)


def _is_plain_sequential(module: Any) -> bool:
    """An ``nn.Sequential`` whose forward is ``nn.Sequential``'s (each child on the previous one's output)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _in_chans(model: nn.Module) -> int:
    """Image channels the model takes: its first conv's (``pretrained_cfg['first_conv']``, else the first Conv2d)."""
    first = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv')
    try:
        conv = model.get_submodule(first) if isinstance(first, str) else None
    except AttributeError:
        conv = None
    if not isinstance(conv, nn.Conv2d):
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def _probe_sizes(model: nn.Module, info: List[Dict[str, Any]]) -> List[Tuple[int, int]]:
    """Input sizes to probe with, first that which works: a small non-square one (2 and 3 times the total stride,
    so that no spatial size equals another or, usually, a channel count), then the pretrained cfg's input size."""
    stride = max(int(i.get('reduction', 1) or 1) for i in info)
    sizes = [(2 * stride, 3 * stride)]
    cfg_size = tuple((getattr(model, 'pretrained_cfg', None) or {}).get('input_size', ()))[-2:]
    if len(cfg_size) == 2 and cfg_size not in sizes:
        sizes.append(tuple(int(s) for s in cfg_size))
    return sizes


def _probe(model: nn.Module, name: str, info: List[Dict[str, Any]], watch: Dict[str, nn.Module]) -> Dict[str, list]:
    """Run ``model`` once on a small zero batch (eval mode, no grad; on its own device, so on the meta device a model
    built there costs nothing) and return, for each watched module name, the outputs of each of its calls.

    The model's train/eval flags are restored afterwards; nothing else about it changes.
    """
    ref = next((t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    device, dtype = (ref.device, ref.dtype) if ref is not None else (torch.device('cpu'), torch.float32)
    records: Dict[str, list] = {k: [] for k in watch}
    handles = [m.register_forward_hook(lambda mod, args, out, key=k: records[key].append(out))
               for k, m in watch.items()]
    modes = [(m, m.training) for m in model.modules()]
    errors = []
    try:
        model.eval()
        for h, w in _probe_sizes(model, info):
            for r in records.values():
                r.clear()
            try:
                with torch.no_grad():
                    model(torch.zeros(1, _in_chans(model), h, w, device=device, dtype=dtype))
                return records
            except Exception as e:  # noqa: BLE001 (any failure of a foreign model's forward: try the next size)
                errors.append(f'{h} x {w}: {type(e).__name__}: {e}')
        raise _ProbeError(
            f'add_gmamba: cannot place GMamba blocks in {name}: a probe forward, which reads the layout of each '
            f'feature tap\'s output, failed at every size tried ({"; ".join(errors)}).')
    finally:
        for hd in handles:
            hd.remove()
        for m, training in modes:
            m.training = training


def _refusal(model_name: str, tap: str, why: str) -> str:
    return f'feature tap "{tap}" of {model_name}: {why}'


def plan_gmamba(
        model: nn.Module,
        depths: Sequence[int],
        name: Optional[str] = None,
        channels_last: Optional[bool] = None,
) -> List[GMambaTap]:
    """Where :func:`add_gmamba` would put GMamba blocks in ``model``, or a :class:`GMambaPlacementError` saying why not.

    The model is run once on a small batch (twice when a tap needs a new child module: the second run tells whether
    the tapped module's own forward runs it) with forward hooks that record each tapped module's output. Nothing is
    left in the model. A tap given blocks must be a stage output: a module with submodules that runs exactly once per
    forward and returns one [B, C, H, W] or [B, H, W, C] map with C = ``num_chs`` (even: the scan takes half).

    Args:
        model: A timm model with ``feature_info``.
        depths: Blocks per tap, aligned with the last ``len(depths)`` taps (0: none, and that tap is not checked).
        name: The model's name for messages (default: its pretrained cfg's architecture, else its class name).
        channels_last: Force the layout (True: NHWC) instead of reading it from the tap outputs.

    Returns:
        One :class:`GMambaTap` per tap with blocks, in tap order.

    Raises:
        GMambaPlacementError: (a ``TypeError``) naming the model, each tap where blocks cannot go and why.
        ValueError: ``depths`` is malformed or longer than the model's feature taps.
    """
    info = _feature_info_list(model)
    depths = check_int_sequence('add_gmamba', 'depths', depths, minimum=0)
    name = name or (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
    if len(depths) > len(info):
        raise ValueError(
            f'add_gmamba: {len(depths)} depths given but {name} has only {len(info)} feature taps '
            f'({[i["module"] for i in info]}).')
    first = len(info) - len(depths)
    wanted = [(first + j, info[first + j]) for j, d in enumerate(depths) if d]
    problems, watch = [], {}
    for index, tap in wanted:
        key = tap['module']
        try:
            module = model.get_submodule(key)
        except AttributeError:
            problems.append(_refusal(name, key, 'no such submodule (its feature_info names a module the model does '
                                                'not have)'))
            continue
        if tap.get('hook_type') == 'forward_pre':
            problems.append(_refusal(name, key, 'the feature is the input of that module (hook_type "forward_pre"), '
                                                'not a stage output'))
        elif not any(True for _ in module.children()):
            problems.append(_refusal(name, key, f'a single {type(module).__name__} layer, not a stage output'))
        else:
            watch[key] = module
            if _is_plain_sequential(getattr(module, 'blocks', None)):
                watch[key + '.blocks'] = module.blocks
    if problems:
        raise GMambaPlacementError('add_gmamba: cannot place GMamba blocks after ' + '; '.join(problems) + '.')
    records = _probe(model, name, info, watch) if watch else {}
    same_stride = len({i.get('reduction') for i in info}) == 1
    plan, needs_child = [], []
    for index, tap in wanted:
        key, chs = tap['module'], int(tap['num_chs'])
        outs = records[key]
        why = None
        if not outs:
            why = 'it does not run in the model\'s forward'
        elif len(outs) > 1:
            why = f'it runs {len(outs)} times per forward (a shared module), so its output is not one stage\'s'
        elif not isinstance(outs[0], torch.Tensor):
            why = (f'its output is a {type(outs[0]).__name__} of {len(outs[0])} (a multi-branch stage), not one map'
                   if isinstance(outs[0], (list, tuple, dict)) else f'its output is a {type(outs[0]).__name__}')
        elif outs[0].dim() == 3:
            why = (f'its output is a token sequence [B, L, C] (shape {tuple(outs[0].shape)}) that carries no H x W '
                   f'grid' + (f'; every tap has stride {info[0].get("reduction")}: not a hierarchical backbone'
                              if same_stride else ''))
        elif outs[0].dim() != 4:
            why = f'its output has shape {tuple(outs[0].shape)}, not a [B, C, H, W] or [B, H, W, C] map'
        elif chs % 2:
            why = f'it has {chs} channels; a GMamba block needs an even count (the scan takes half)'
        if why is None:
            shape = tuple(outs[0].shape)
            nchw, nhwc = shape[1] == chs, shape[3] == chs
            if channels_last is not None:
                nchw, nhwc = nchw and not channels_last, nhwc and channels_last
            elif nchw and nhwc:  # a square map as wide as it has channels: the model's own word decides
                nhwc = str(getattr(model, 'output_fmt', 'NCHW')).upper().endswith('NHWC')
                nchw = not nhwc
            if not (nchw or nhwc):
                why = (f'its output has shape {shape}, with no channel dimension of feature_info\'s {chs}' +
                       ('' if channels_last is None else f' in the layout forced by channels_last={channels_last}'))
        if why is not None:
            problems.append(_refusal(name, key, why))
            continue
        module = watch[key]
        if _is_plain_sequential(module):
            placement = 'append'
        elif key + '.blocks' in records and len(records[key + '.blocks']) == 1 and records[key + '.blocks'][0] is \
                outs[0]:
            placement = 'blocks'
        elif hasattr(module, _CHILD):
            problems.append(_refusal(name, key, f'it already has an attribute "{_CHILD}"'))
            continue
        else:
            placement = 'hook'
            needs_child.append((len(plan), module))
        plan.append(GMambaTap(index, key, chs, int(tap.get('reduction', 0) or 0), 'NHWC' if nhwc else 'NCHW',
                              placement))
    if problems:
        raise GMambaPlacementError('add_gmamba: cannot place GMamba blocks after ' + '; '.join(problems) + '.')
    if needs_child:  # does the tapped module's forward run a new child by itself (a stage iterating its children)?
        for _, module in needs_child:
            module.add_module(_CHILD, nn.Sequential())
        try:
            watch = {plan[i].module: m for i, m in needs_child}
            watch.update({plan[i].module + '.' + _CHILD: m.get_submodule(_CHILD) for i, m in needs_child})
            records = _probe(model, name, info, watch)
        finally:
            for _, module in needs_child:
                delattr(module, _CHILD)
        for i, module in needs_child:
            runs, key = records[plan[i].module + '.' + _CHILD], plan[i].module
            if len(runs) == 1 and len(records[key]) == 1 and runs[0] is records[key][0]:
                plan[i] = dataclasses.replace(plan[i], placement='child')
            elif runs:
                problems.append(_refusal(name, key, f'its forward runs its children ({len(runs)} calls of a new one) '
                                                    f'but does not return the last one\'s output'))
    if problems:
        raise GMambaPlacementError('add_gmamba: cannot place GMamba blocks after ' + '; '.join(problems) + '.')
    return plan


def gmamba_no_weight_decay(model: nn.Module) -> Set[str]:
    """Names of the GMamba block parameters to keep out of weight decay (A_log, D, layer scales, scalar gates)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, GMambaBlock):
            for pname, _ in module.named_parameters():
                if pname.endswith(_NO_WD_SUFFIXES):
                    names.add(f'{name}.{pname}' if name else pname)
    return names


class _NoWeightDecay:
    """``model.no_weight_decay()`` for a model with inserted blocks: the model class's own set plus the blocks'.

    Held in the instance's ``__dict__`` (a plain object, so it is neither a submodule nor in the state dict); it keeps
    a reference to its model, which deepcopy and pickle handle as an ordinary reference cycle.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self) -> Set[str]:
        base = getattr(type(self.model), 'no_weight_decay', None)
        return set(base(self.model) if base is not None else ()) | gmamba_no_weight_decay(self.model)


class _GradCheckpointing:
    """``model.set_grad_checkpointing(enable)`` for a model where forward hooks run some inserted blocks: the model
    class's own method, then each hook-run block (no stage checkpoints those). A plain object in the instance's
    ``__dict__``, like :class:`_NoWeightDecay`."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, enable: bool = True) -> None:
        base = getattr(type(self.model), 'set_grad_checkpointing', None)
        if base is not None:
            base(self.model, enable)
        for tap in getattr(self.model, 'gmamba_taps', ()):
            if tap.placement == 'hook':
                for block in tap.holder(self.model):
                    block.set_grad_checkpointing(enable)


def add_gmamba(
        model: nn.Module,
        depths: Sequence[int],
        drop_path_rate: float = 0.0,
        channels_last: Optional[bool] = None,
        name: Optional[str] = None,
        **block_kwargs: Any,
) -> nn.Module:
    """Insert GMamba blocks in place after feature taps of any timm backbone with ``feature_info``.

    Each tap given blocks is found through ``model.feature_info`` and checked by :func:`plan_gmamba` (one probe
    forward reads the layout of its output, NCHW or NHWC, and whether the blocks can join the forward); a model or
    tap where blocks cannot go is refused with a :class:`GMambaPlacementError` before any block is built. The blocks
    then run on the tap's output:

    * appended to the tapped module when it is an ``nn.Sequential`` (ResNet ``layerN``, EfficientNet ``blocks.N``), or
      to its ``nn.Sequential`` ``blocks`` when that computes the module's output (ConvNeXt, Swin, MetaFormer conv
      stages): ordinary blocks of the stage, checkpointed with it;
    * otherwise held in a new ``nn.Sequential`` ``gmamba`` of the tapped module, which the module runs itself if its
      forward runs its children in order (RegNet's ``RegStage``) or else a forward hook on the module runs on its
      output (PVT-v2 stages, CAFormer's attention stages, any stage class with its own forward).

    The base model's state-dict keys are unchanged (blocks only add keys), so its pretrained weights load. With the
    default ``layer_scale_init_value=0`` every inserted block is the identity, so the model's outputs are unchanged
    until it is trained. timm's forward, ``forward_intermediates``, ``features_only`` wrappers and torch.fx tracing run
    the blocks; ``set_grad_checkpointing`` reaches the blocks a hook runs.

    Args:
        model: A timm model with ``feature_info``.
        depths: Blocks to insert per tap, aligned with the LAST ``len(depths)`` entries of ``feature_info``
            (e.g. ``(1, 1, 1, 0)`` for ResNet's layer1..layer4; ResNet's first tap, the stem, is left out).
        drop_path_rate: Stochastic depth of the inserted blocks, rising linearly from 0 over all of them.
        channels_last: Force the layout of the tap outputs (True: [B, H, W, C]); None reads it from the model.
        name: The model's name in error messages (default: its pretrained cfg's architecture).
        block_kwargs: Passed to :class:`~gmamba_zoo.layers.GMambaBlock` (mlp_ratio, layer_scale_init_value,
            d_state, d_conv, freq_cutoff, frequency_path, ...).

    Returns:
        The same model, modified in place, with ``model.gmamba_depths`` (one entry per feature tap) and
        ``model.gmamba_taps`` (the :class:`GMambaTap` s) recorded and ``model.no_weight_decay()`` extended with the
        blocks' A_log, D, layer scales and scalar gates.

    Raises:
        GMambaPlacementError: (a ``TypeError``) A tap given blocks is not a stage output with one map of even channels
            (the message names the model, the tap and why).
        TypeError: The model has no usable ``feature_info``, or an argument has the wrong type (an unknown block
            argument included).
        ValueError: ``depths`` is malformed, longer than the model's feature taps, the model already has blocks, or an
            argument is out of range. Every argument is checked, block arguments too, even when no block is inserted.
    """
    _feature_info_list(model)
    depths = check_int_sequence('add_gmamba', 'depths', depths, minimum=0)
    check_real('add_gmamba', 'drop_path_rate', drop_path_rate, 0, 1, high_open=True)
    if channels_last is not None:
        check_bool('add_gmamba', 'channels_last', channels_last)
    check_gmamba_block_kwargs('add_gmamba', block_kwargs, reserved=dict(
        channels_last='pass it as add_gmamba(channels_last=...)', drop_path='pass add_gmamba(drop_path_rate=...)'))
    if any(isinstance(m, GMambaBlock) for m in model.modules()):
        raise ValueError('add_gmamba: the model already has GMamba blocks; build a fresh base model instead.')
    plan = plan_gmamba(model, depths, name=name, channels_last=channels_last)
    info = _feature_info_list(model)

    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # plain floats: works on the meta device
    tap_depths = dict(zip(range(len(info) - len(depths), len(info)), depths))
    for tap in plan:
        module = model.get_submodule(tap.module)
        if tap.placement in ('child', 'hook'):
            module.add_module(_CHILD, nn.Sequential())
        holder = tap.holder(model)
        ref = next((p for p in module.parameters() if p.is_floating_point()), None)
        for _ in range(tap_depths[tap.index]):
            block = GMambaBlock(tap.num_chs, channels_last=tap.layout == 'NHWC', drop_path=rates.pop(0), **block_kwargs)
            if ref is not None:
                block.to(device=ref.device, dtype=ref.dtype)
            holder.append(block)
        if tap.placement == 'hook':
            module.register_forward_hook(_run_gmamba_blocks)

    model.gmamba_depths = (0,) * (len(info) - len(depths)) + depths
    model.gmamba_taps = tuple(plan)
    model.no_weight_decay = _NoWeightDecay(model)
    if any(t.placement == 'hook' for t in plan):
        model.set_grad_checkpointing = _GradCheckpointing(model)
    return model


def checkpoint_filter_fn(
        state_dict: Dict[str, torch.Tensor],
        model: nn.Module,
        base_filter_fn: Optional[Callable] = None,
) -> Dict[str, torch.Tensor]:
    """Check a plain timm backbone checkpoint against a GMamba model; fill in the (untrained) GMamba block tensors.

    The base model's own filter runs first. Then the only keys the checkpoint may lack are those of the GMamba blocks
    (they are taken from the model as initialised, i.e. identity blocks), and, when the model's classifier differs
    from the checkpoint's (other ``num_classes``), the classifier's, which timm's ``load_pretrained`` drops.

    Raises:
        CheckpointMismatchError: A ``RuntimeError`` naming the file, the first other missing and unexpected keys, and
            which model the file's keys look like.
    """
    if base_filter_fn is not None:
        state_dict = base_filter_fn(state_dict, model)
    own = model.state_dict()
    gmamba_prefixes = tuple(f'{n}.' for n, m in model.named_modules() if isinstance(m, GMambaBlock))
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    classifiers = cfg.get('classifier') or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    classifier_keys = set()
    if getattr(model, 'num_classes', cfg.get('num_classes')) != cfg.get('num_classes'):
        classifier_keys = {f'{c}.{s}' for c in classifiers for s in ('weight', 'bias')}

    missing = [k for k in own if k not in state_dict and not k.startswith(gmamba_prefixes) and k not in classifier_keys]
    unexpected = [k for k in state_dict if k not in own and k not in classifier_keys]
    if missing or unexpected:
        source = cfg.get('file') or cfg.get('hf_hub_id') or cfg.get('url') or 'the state dict given'
        raise CheckpointMismatchError(
            f'Pretrained checkpoint {source} does not match {cfg.get("architecture", type(model).__name__)}: the only '
            f'keys it may lack are the GMamba blocks\'. Missing keys ({len(missing)}): {list_keys(missing)}. '
            f'Unexpected keys ({len(unexpected)}): {list_keys(unexpected)}. {describe_keys(key_shapes(state_dict))}')
    state_dict = dict(state_dict)
    for k, v in own.items():
        if k.startswith(gmamba_prefixes) and k not in state_dict:
            state_dict[k] = v
    return state_dict


def _create_base(base: str, **kwargs: Any) -> nn.Module:
    """timm's plain ``base``, randomly initialised: a Swin built to run at any input size, any other model as its
    entrypoint builds it (``img_size`` included: MaxViT's windows are laid out for it); None arguments dropped."""
    if is_swin(base):
        return create_for_input_size(base, **kwargs)
    return model_entrypoint(base)(pretrained=False, **{k: v for k, v in kwargs.items() if v is not None})


def _build_gmamba_model(
        base: str,
        gmamba_depths: Sequence[int],
        block_kwargs: Dict[str, Any],
        /,
        **kwargs: Any,
) -> nn.Module:
    """timm's plain ``base`` (random init) with GMamba blocks inserted; the ``model_cls`` of build_model_with_cfg.

    The base comes from its own entrypoint, called directly (the model then records only the user's
    ``create_model`` arguments); a Swin through :func:`~gmamba_zoo.models.swin.create_for_input_size`, so that it runs
    at any input size. ``kwargs`` are the base's (positional-only parameters before them, so a base argument such as
    Swin's ``depths`` passes through).
    """
    model = _create_base(base, **kwargs)
    return add_gmamba(model, gmamba_depths, drop_path_rate=kwargs.get('drop_path_rate') or 0.0, name=base,
                      **block_kwargs)


# Arguments of timm.create_model / build_model_with_cfg that are not the model class's
_BUILD_ARGS = ('features_only', 'out_indices', 'feature_cls', 'pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir')


def _check_build_args(owner: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Check ``gmamba_kwargs`` and ``drop_path_rate`` of a build; returns the user's block arguments."""
    user_block_kwargs = check_mapping(owner, 'gmamba_kwargs', kwargs.pop('gmamba_kwargs', None))
    check_gmamba_block_kwargs(owner, user_block_kwargs, where='gmamba_kwargs', reserved=dict(
        channels_last='the blocks take the layout of the stages', drop_path=f'pass {owner}(drop_path_rate=...)'))
    check_real(owner, 'drop_path_rate', kwargs.get('drop_path_rate') or 0.0, 0, 1, high_open=True)
    return dict(user_block_kwargs)


def _build_gmamba(
        base: str,
        variant: str,
        pretrained: bool,
        depths: Sequence[int],
        block_kwargs: Dict[str, Any],
        feature_cfg: Dict[str, Any],
        kwargs: Dict[str, Any],
) -> nn.Module:
    """The one build of a GMamba model: timm's ``build_model_with_cfg`` over ``base`` with blocks inserted.

    Args:
        base: The timm model the blocks go into (no tag).
        variant: The name whose pretrained cfg is used: a registered zoo variant's, or ``base`` with a tag (timm's).
        pretrained: Load that cfg's weights (the base's checkpoint; the blocks' keys are filled as initialised).
        depths: Blocks per feature tap (the last ``len(depths)`` taps).
        block_kwargs: For each :class:`~gmamba_zoo.layers.GMambaBlock`.
        feature_cfg: timm's ``feature_cfg`` for ``features_only``.
        kwargs: The user's other arguments (the base's, and timm's build arguments).
    """
    if kwargs.get('feature_cls') == 'fx':  # timm's FX extractor, returning NCHW maps from NHWC stages too
        kwargs['feature_cls'] = NchwFeatureGraphNet
    base_filter_fn = getattr(sys.modules[model_entrypoint(base).__module__], 'checkpoint_filter_fn', None)
    return build_zoo_model(
        partial(_build_gmamba_model, base, depths, block_kwargs), variant, pretrained, (GMambaBlock,),
        pretrained_filter_fn=partial(checkpoint_filter_fn, base_filter_fn=base_filter_fn), feature_cfg=feature_cfg,
        **kwargs)


def create_model(
        base_name: str,
        gmamba_depths: Optional[Sequence[int]] = None,
        gmamba_kwargs: Optional[Dict[str, Any]] = None,
        pretrained: bool = False,
        **kwargs: Any,
) -> nn.Module:
    """Any timm backbone with GMamba blocks after its feature taps, with the base's pretrained weights.

    ``gmamba_zoo.create_model('regnety_016', gmamba_depths=(1, 1, 1, 1), pretrained=True)`` builds timm's
    ``regnety_016`` through timm's ``build_model_with_cfg`` with the base's own pretrained cfg (``pretrained_cfg`` is
    the base's; the weights are its checkpoint, the blocks' tensors filled as initialised, i.e. identity blocks) and
    inserts the blocks with :func:`add_gmamba`. Where blocks cannot go the model is refused before it is built: the
    base is first built on the meta device (no memory, no init) and checked there by :func:`plan_gmamba`.

    What timm gives for the base works: ``features_only=True`` (timm's ``FeatureGetterNet`` over the model's
    ``forward_intermediates``: NCHW maps with the base's channels and strides; ``feature_cls='fx'`` for timm's FX
    extractor, ``'list'`` or ``'hook'`` for timm's others), ``out_indices``, ``forward_intermediates``,
    ``set_grad_checkpointing``, ``reset_classifier``, ``num_classes``, ``drop_path_rate`` (also the inserted blocks'
    stochastic depth, rising linearly from 0), ``checkpoint_path`` and the base's other arguments.

    The registered ``*_gmamba`` models are this build with a fixed base, depths and pretrained tags
    (:data:`~gmamba_zoo.models.variants.GMAMBA_VARIANTS`).

    Args:
        base_name: A timm model name, optionally with a pretrained tag (``'convnext_atto.d2_in1k'``).
        gmamba_depths: Blocks per feature tap, aligned with the last ``len(gmamba_depths)`` taps; None: one after
            each of the last four taps (all taps when there are fewer).
        gmamba_kwargs: For each :class:`~gmamba_zoo.layers.GMambaBlock` (mlp_ratio, d_state, frequency_path, ...).
        pretrained: Load the base's pretrained weights (timm's, from its pretrained cfg).
        kwargs: timm's ``create_model`` arguments (``features_only``, ``out_indices``, ``feature_cls``,
            ``num_classes``, ``in_chans``, ``drop_path_rate``, ``pretrained_cfg_overlay``, ``checkpoint_path``, ...).

    Raises:
        GMambaPlacementError: (a ``TypeError``) The base has a tap given blocks where they cannot go (a ViT's
            token sequences, HRNet's multi-branch stages, a tap that is not a stage output), naming the tap and why.
        ValueError: ``base_name`` is a zoo model (use ``timm.create_model``) or no timm model; bad depths.
        TypeError: A bad argument (an unknown block argument included).
    """
    base, tag = split_model_name_tag(base_name)
    if base in ZOO_VARIANTS:
        raise ValueError(f'create_model: {base!r} is one of the zoo\'s registered models; build it with '
                         f'timm.create_model({base!r}), or pass its base {ZOO_VARIANTS[base].base!r} here.')
    if not is_model(base):
        raise ValueError(f'create_model: {base_name!r} is not a timm model (timm.list_models() lists them).')
    check_bool('create_model', 'pretrained', pretrained)
    owner = f'create_model({base_name!r})'
    kwargs['gmamba_kwargs'] = gmamba_kwargs
    block_kwargs = _check_build_args(owner, kwargs)
    checkpoint_path = kwargs.pop('checkpoint_path', None)

    model_kwargs = {k: v for k, v in kwargs.items() if k not in _BUILD_ARGS}
    try:  # the base on the meta device, to read its taps and refuse it before anything real is built
        with torch.device('meta'):
            probe_model = _create_base(base, **model_kwargs)
    except Exception:  # noqa: BLE001 (e.g. a model that reads tensor values while built): the real build checks
        probe_model = None
    num_taps = None
    if probe_model is not None:
        num_taps = len(_feature_info_list(probe_model))
        if gmamba_depths is None:
            gmamba_depths = (1,) * min(4, num_taps)
        try:
            plan_gmamba(probe_model, gmamba_depths, name=base)
        except _ProbeError:  # the base does not run on the meta device: the real build's add_gmamba checks it
            pass
    elif gmamba_depths is None:
        raise ValueError(f'{owner}: give gmamba_depths (blocks per feature tap); the base\'s taps could not be read.')
    depths = check_int_sequence(owner, 'gmamba_depths', gmamba_depths, minimum=0)
    feature_cfg = dict(flatten_sequential=True)  # for feature_cls='list' or 'hook' (timm drops it for the getter)
    if probe_model is None or hasattr(probe_model, 'forward_intermediates'):
        feature_cfg['feature_cls'] = 'getter'
    if num_taps is not None:
        feature_cfg['out_indices'] = tuple(range(num_taps))
    variant = f'{base}.{tag}' if tag else base
    model = _build_gmamba(base, variant, pretrained, depths, block_kwargs, feature_cfg, kwargs)
    if checkpoint_path:
        load_checkpoint(model, checkpoint_path)
    return model


def build_for_input_size(name: str, img_size: Optional[Sequence[int]] = None, **kwargs: Any) -> nn.Module:
    """A zoo model, a plain timm model or a :func:`~gmamba_zoo.models.variants.gmamba_spec` name (a timm base with
    GMamba blocks, built by :func:`create_model`), randomly initialised, laid out for ``img_size`` (Swin only: see
    :func:`~gmamba_zoo.models.swin.create_for_input_size`); what the FLOP report and the benchmark build."""
    spec = parse_gmamba_spec(name)
    if spec is None:
        return create_for_input_size(name, img_size, **kwargs)
    base, depths = spec
    if img_size is not None and is_swin(base):
        kwargs['img_size'] = tuple(img_size)
    return create_model(base, gmamba_depths=depths, **kwargs)


def _create_gmamba(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered GMamba variant: :func:`create_model`'s build over its record's base, depths, block
    arguments and feature cfg; ``gmamba_depths`` and ``gmamba_kwargs`` override the record."""
    record = ZOO_VARIANTS[variant]
    depths = check_int_sequence(
        variant, 'gmamba_depths', kwargs.pop('gmamba_depths', record.depths), length=len(record.depths), minimum=0)
    block_kwargs = dict(record.block_kwargs, **_check_build_args(variant, kwargs))
    return _build_gmamba(record.base, variant, pretrained, depths, block_kwargs, dict(record.feature_cfg), kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """Pretrained cfg of a GMamba variant on the base's timm checkpoint ``hf_hub_id`` (its Hub copy, safetensors).

    The defaults and ``kwargs`` repeat that checkpoint's data config in timm's registry (``tests/test_variants.py``
    checks them); the description and notes say the GMamba blocks are untrained.
    """
    weights = kwargs['hf_hub_id'].split('/', 1)[-1]
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_mode': 'center',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'hf_hub_filename': 'model.safetensors',
        'description': f'{weights} ImageNet weights (timm) with untrained GMamba blocks. {_UNTRAINED_NOTE}',
        'notes': (_UNTRAINED_NOTE, f'Backbone weights: timm {weights} from the Hugging Face Hub.'),
        'paper_name': _PAPER_NAME,
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'resnet18_gmamba.a1_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet18.a1_in1k', test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='conv1', classifier='fc', license='apache-2.0',
        origin_url='https://github.com/huggingface/pytorch-image-models'),
    'resnet18_gmamba.tv_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet18.tv_in1k', crop_pct=0.875, interpolation='bilinear', first_conv='conv1',
        classifier='fc', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'resnet34_gmamba.a1_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet34.a1_in1k', test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='conv1', classifier='fc', license='apache-2.0',
        origin_url='https://github.com/huggingface/pytorch-image-models'),
    'resnet34_gmamba.tv_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet34.tv_in1k', crop_pct=0.875, interpolation='bilinear', first_conv='conv1',
        classifier='fc', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'resnet50_gmamba.a1_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet50.a1_in1k', test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='conv1', classifier='fc', license='apache-2.0',
        origin_url='https://github.com/huggingface/pytorch-image-models'),
    'resnet50_gmamba.tv_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet50.tv_in1k', crop_pct=0.875, interpolation='bilinear', first_conv='conv1',
        classifier='fc', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'resnet101_gmamba.a1h_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet101.a1h_in1k', test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='conv1', classifier='fc', license='apache-2.0',
        origin_url='https://github.com/huggingface/pytorch-image-models'),
    'resnet101_gmamba.tv_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/resnet101.tv_in1k', crop_pct=0.875, interpolation='bilinear', first_conv='conv1',
        classifier='fc', license='bsd-3-clause', origin_url='https://github.com/pytorch/vision'),
    'convnext_t_gmamba.fb_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/convnext_tiny.fb_in1k', test_input_size=(3, 288, 288), crop_pct=0.875, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='stem.0', classifier='head.fc', license='apache-2.0'),
    'convnext_t_gmamba.in12k_ft_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/convnext_tiny.in12k_ft_in1k', test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='stem.0', classifier='head.fc', license='apache-2.0'),
    'convnext_s_gmamba.fb_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/convnext_small.fb_in1k', test_input_size=(3, 288, 288), crop_pct=0.875, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='stem.0', classifier='head.fc', license='apache-2.0'),
    'convnext_s_gmamba.in12k_ft_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/convnext_small.in12k_ft_in1k', test_input_size=(3, 288, 288), crop_pct=0.95,
        test_crop_pct=1.0, interpolation='bicubic', first_conv='stem.0', classifier='head.fc', license='apache-2.0'),
    'convnext_b_gmamba.fb_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/convnext_base.fb_in1k', test_input_size=(3, 288, 288), crop_pct=0.875, test_crop_pct=1.0,
        interpolation='bicubic', first_conv='stem.0', classifier='head.fc', license='apache-2.0'),
    'convnext_b_gmamba.fb_in22k_ft_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/convnext_base.fb_in22k_ft_in1k', test_input_size=(3, 288, 288), crop_pct=0.875,
        test_crop_pct=1.0, interpolation='bicubic', first_conv='stem.0', classifier='head.fc', license='apache-2.0'),
    'swin_t_gmamba.ms_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/swin_tiny_patch4_window7_224.ms_in1k', crop_pct=0.9, interpolation='bicubic',
        first_conv='patch_embed.proj', classifier='head.fc', fixed_input_size=False, license='mit'),
    'swin_t_gmamba.ms_in22k_ft_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/swin_tiny_patch4_window7_224.ms_in22k_ft_in1k', crop_pct=0.9, interpolation='bicubic',
        first_conv='patch_embed.proj', classifier='head.fc', fixed_input_size=False, license='mit'),
    'swin_s_gmamba.ms_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/swin_small_patch4_window7_224.ms_in1k', crop_pct=0.9, interpolation='bicubic',
        first_conv='patch_embed.proj', classifier='head.fc', fixed_input_size=False, license='mit'),
    'swin_s_gmamba.ms_in22k_ft_in1k_untrained_gmamba': _cfg(
        hf_hub_id='timm/swin_small_patch4_window7_224.ms_in22k_ft_in1k', crop_pct=0.9, interpolation='bicubic',
        first_conv='patch_embed.proj', classifier='head.fc', fixed_input_size=False, license='mit'),
})


@register_zoo_model
def resnet18_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResNet-18 with GMamba blocks (2, 2, 2, 1) after stages 1-4 (the paper's segmentation backbone layout)."""
    return _create_gmamba('resnet18_gmamba', pretrained, **kwargs)


@register_zoo_model
def resnet34_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResNet-34 with GMamba blocks (2, 2, 2, 1) after stages 1-4 (the paper's UNet "+GMamba x7")."""
    return _create_gmamba('resnet34_gmamba', pretrained, **kwargs)


@register_zoo_model
def resnet50_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResNet-50 with GMamba blocks (1, 1, 1, 0) after stages 1-4 (the paper's Faster R-CNN "+GMamba x3")."""
    return _create_gmamba('resnet50_gmamba', pretrained, **kwargs)


@register_zoo_model
def resnet101_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResNet-101 with GMamba blocks (1, 1, 1, 0) after stages 1-4 (the detection layout)."""
    return _create_gmamba('resnet101_gmamba', pretrained, **kwargs)


@register_zoo_model
def convnext_t_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ConvNeXt-T with GMamba blocks (2, 2, 2, 1) after stages 1-4."""
    return _create_gmamba('convnext_t_gmamba', pretrained, **kwargs)


@register_zoo_model
def convnext_s_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ConvNeXt-S with GMamba blocks (2, 2, 2, 1) after stages 1-4 (the paper's UNet "+GMamba x7")."""
    return _create_gmamba('convnext_s_gmamba', pretrained, **kwargs)


@register_zoo_model
def convnext_b_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """ConvNeXt-B with GMamba blocks (2, 2, 2, 1) after stages 1-4."""
    return _create_gmamba('convnext_b_gmamba', pretrained, **kwargs)


@register_zoo_model
def swin_t_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """Swin-T (patch 4, window 7) with GMamba blocks (2, 2, 2, 1) after stages 1-4; any input size."""
    return _create_gmamba('swin_t_gmamba', pretrained, **kwargs)


@register_zoo_model
def swin_s_gmamba(pretrained: bool = False, **kwargs) -> nn.Module:
    """Swin-S (patch 4, window 7) with GMamba blocks (2, 2, 2, 1) after stages 1-4; any input size."""
    return _create_gmamba('swin_s_gmamba', pretrained, **kwargs)

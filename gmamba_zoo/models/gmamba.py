"""GMamba backbones: GSSM blocks inserted after the stages of timm's ResNet, ConvNeXt and Swin.

Paper: "Enabling True Global Perception in State Space Models for Visual Tasks" (GMamba, ICLR 2026)::

    @inproceedings{hui2026enabling,
      title={Enabling True Global Perception in State Space Models for Visual Tasks},
      author={Jie Hui and Zhenxiang Zhang and Wenyu Mi and Jianji Wang},
      booktitle={The Fourteenth International Conference on Learning Representations},
      year={2026},
      url={https://openreview.net/forum?id=96p1eBUVaN}
    }

One mechanism, :func:`add_gmamba`, inserts :class:`~gmamba_zoo.layers.GMambaBlock` s in place at the end of each
stage of a timm backbone. Every registered ``*_gmamba`` model is a configuration of it (a timm base model and a
block count per stage: its record in :data:`~gmamba_zoo.models.variants.ZOO_VARIANTS`), built through timm's
``build_model_with_cfg``, so timm's own ``forward_features``, ``forward_intermediates``, ``features_only``, gradient
checkpointing, ``group_matcher`` and classifier handling keep working, and the plain timm checkpoint's keys load
unchanged.

Defaults follow the paper's placement table: (2, 2, 2, 1) blocks after stages 1-4 for the segmentation backbones
(ResNet-18/34, ConvNeXt, Swin) and (1, 1, 1, 0) for ResNet-50/101 (the detection configuration).
``timm.create_model(name, gmamba_depths=(...), gmamba_kwargs=dict(...))`` overrides the depths and the block options.

Choices where the paper is silent:
    * Stages are found through the model's ``feature_info`` module names; ``depths[i]`` goes with the i-th of the
      last ``len(depths)`` feature taps (for ResNet, whose first tap is the stem, 4 depths go to ``layer1..4``).
    * Blocks are appended to the stage's own ``nn.Sequential`` (ResNet ``layerN``) or to its ``blocks`` Sequential
      (ConvNeXt ``stages[i].blocks``, Swin ``layers[i].blocks``, channels-last there because timm's Swin stages are
      NHWC), so they run on the stage's output and are checkpointed with the stage's blocks.
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

import sys
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, model_entrypoint

from ..layers import GMambaBlock
from ..layers._checks import check_bool, check_int_sequence, check_mapping, check_real
from ..layers.gssm import check_gmamba_block_kwargs
from ._checkpoint import CheckpointMismatchError, describe_keys, key_shapes, list_keys
from ._registry import build_zoo_model, register_zoo_model
from .features import NchwFeatureGraphNet, feature_info_dicts, is_features_only
from .swin import create_for_input_size
from .variants import GMAMBA_VARIANTS, ZOO_VARIANTS

__all__ = ['add_gmamba', 'gmamba_no_weight_decay', 'GMAMBA_VARIANTS', 'checkpoint_filter_fn']

_PAPER_NAME = 'Enabling True Global Perception in State Space Models for Visual Tasks'
_UNTRAINED_NOTE = (
    'The GMamba (GSSM) blocks are untrained: only the base backbone carries ImageNet weights (timm\'s, from the '
    'Hugging Face Hub). The blocks start as the identity (layer scale 0), so the model computes exactly what the plain '
    'backbone computes until it is fine-tuned.'
)
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


def _stage_container(model: nn.Module, module_name: str) -> nn.Sequential:
    """The ``nn.Sequential`` whose output is the output of the stage ``module_name``."""
    stage = model.get_submodule(module_name)
    if isinstance(stage, nn.Sequential):
        return stage
    blocks = getattr(stage, 'blocks', None)
    if isinstance(blocks, nn.Sequential):
        return blocks
    raise TypeError(
        f'add_gmamba: cannot insert blocks after feature tap "{module_name}" ({type(stage).__name__}): expected an '
        f'nn.Sequential stage (ResNet layerN) or a stage whose blocks are an nn.Sequential `blocks` attribute '
        f'(ConvNeXt, Swin). Give that tap depth 0, or insert blocks into your model by hand.')


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


def add_gmamba(
        model: nn.Module,
        depths: Sequence[int],
        drop_path_rate: float = 0.0,
        channels_last: Optional[bool] = None,
        **block_kwargs: Any,
) -> nn.Module:
    """Insert GMamba blocks in place after the stages of a timm backbone.

    The blocks are appended to each stage's own ``nn.Sequential`` (found through ``model.feature_info``), so the
    model's forward, ``forward_intermediates``, ``features_only`` wrappers, gradient checkpointing and
    ``group_matcher`` see them as ordinary blocks of that stage, and the plain model's state-dict keys are unchanged.
    With the default ``layer_scale_init_value=0`` every inserted block is the identity, so the model's outputs are
    unchanged until it is trained.

    Args:
        model: A timm model with ``feature_info`` (ResNet, ConvNeXt, Swin, and others whose stages are an
            ``nn.Sequential`` or hold their blocks in an ``nn.Sequential`` named ``blocks``).
        depths: Blocks to insert per stage, aligned with the LAST ``len(depths)`` entries of ``feature_info``
            (e.g. ``(1, 1, 1, 0)`` for ResNet's layer1..layer4; ResNet's first tap, the stem, is left out).
        drop_path_rate: Stochastic depth of the inserted blocks, rising linearly from 0 over all of them.
        channels_last: Layout of the stage outputs; None reads it from ``model.output_fmt`` ('NHWC' for timm's Swin,
            NCHW otherwise).
        block_kwargs: Passed to :class:`~gmamba_zoo.layers.GMambaBlock` (mlp_ratio, layer_scale_init_value,
            d_state, d_conv, freq_cutoff, frequency_path, ...).

    Returns:
        The same model, modified in place, with ``model.gmamba_depths`` (one entry per feature tap) recorded and
        ``model.no_weight_decay()`` extended with the blocks' A_log, D, layer scales and scalar gates.

    Raises:
        TypeError: The model has no usable ``feature_info``, a stage given blocks has no Sequential to append to, or an
            argument has the wrong type (an unknown block argument included).
        ValueError: ``depths`` is malformed, longer than the model's feature taps, the model already has blocks, or an
            argument is out of range. Every argument is checked, block arguments too, even when no block is inserted.
    """
    info = _feature_info_list(model)
    depths = check_int_sequence('add_gmamba', 'depths', depths, minimum=0)
    if len(depths) > len(info):
        raise ValueError(
            f'add_gmamba: {len(depths)} depths given but {type(model).__name__} has only {len(info)} feature taps '
            f'({[i["module"] for i in info]}).')
    check_real('add_gmamba', 'drop_path_rate', drop_path_rate, 0, 1, high_open=True)
    if channels_last is not None:
        check_bool('add_gmamba', 'channels_last', channels_last)
    check_gmamba_block_kwargs('add_gmamba', block_kwargs, reserved=dict(
        channels_last='pass it as add_gmamba(channels_last=...)', drop_path='pass add_gmamba(drop_path_rate=...)'))
    if any(isinstance(m, GMambaBlock) for m in model.modules()):
        raise ValueError('add_gmamba: the model already has GMamba blocks; build a fresh base model instead.')
    if channels_last is None:
        channels_last = str(getattr(model, 'output_fmt', 'NCHW')).upper().endswith('NHWC')

    taps = info[len(info) - len(depths):]
    containers = [_stage_container(model, tap['module']) if d else None for tap, d in zip(taps, depths)]
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # plain floats: works on the meta device
    for tap, depth, container in zip(taps, depths, containers):
        if not depth:
            continue
        ref = next((p for p in container.parameters() if p.is_floating_point()), None)
        for _ in range(depth):
            block = GMambaBlock(tap['num_chs'], channels_last=channels_last, drop_path=rates.pop(0), **block_kwargs)
            if ref is not None:
                block.to(device=ref.device, dtype=ref.dtype)
            container.append(block)

    model.gmamba_depths = (0,) * (len(info) - len(depths)) + depths
    model.no_weight_decay = _NoWeightDecay(model)
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


def _build_gmamba_model(
        base: str,
        gmamba_depths: Sequence[int],
        block_kwargs: Dict[str, Any],
        /,
        **kwargs: Any,
) -> nn.Module:
    """timm's plain ``base`` (random init) with GMamba blocks inserted; the ``model_cls`` of build_model_with_cfg.

    The base comes from :func:`~gmamba_zoo.models.swin.create_for_input_size` (a Swin runs at any input size), which
    calls its entrypoint directly: the model then records only the user's ``create_model`` arguments. ``kwargs`` are
    the base's (positional-only parameters before them, so a base argument such as Swin's ``depths`` passes through).
    """
    model = create_for_input_size(base, **kwargs)
    return add_gmamba(model, gmamba_depths, drop_path_rate=kwargs.get('drop_path_rate') or 0.0, **block_kwargs)


def _create_gmamba(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered GMamba variant; ``gmamba_depths`` and ``gmamba_kwargs`` override its table record."""
    record = ZOO_VARIANTS[variant]
    depths = check_int_sequence(
        variant, 'gmamba_depths', kwargs.pop('gmamba_depths', record.depths), length=len(record.depths), minimum=0)
    user_block_kwargs = check_mapping(variant, 'gmamba_kwargs', kwargs.pop('gmamba_kwargs', None))
    check_gmamba_block_kwargs(variant, user_block_kwargs, where='gmamba_kwargs', reserved=dict(
        channels_last='the blocks take the layout of the stages', drop_path=f'pass {variant}(drop_path_rate=...)'))
    check_real(variant, 'drop_path_rate', kwargs.get('drop_path_rate') or 0.0, 0, 1, high_open=True)
    block_kwargs = dict(record.block_kwargs, **user_block_kwargs)
    if record.family == 'swin':
        # Swin stages are NHWC: take features through forward_intermediates, which returns NCHW
        feature_cfg = dict(feature_cls='getter', out_indices=(0, 1, 2, 3))
        if kwargs.get('feature_cls') == 'fx':  # the FX extractor returns NCHW maps too
            kwargs['feature_cls'] = NchwFeatureGraphNet
    elif record.family == 'convnext':
        feature_cfg = dict(flatten_sequential=True, out_indices=(0, 1, 2, 3))
    else:
        feature_cfg = dict()
    base_filter_fn = getattr(sys.modules[model_entrypoint(record.base).__module__], 'checkpoint_filter_fn', None)
    return build_zoo_model(
        partial(_build_gmamba_model, record.base, depths, block_kwargs), variant, pretrained, (GMambaBlock,),
        pretrained_filter_fn=partial(checkpoint_filter_fn, base_filter_fn=base_filter_fn), feature_cfg=feature_cfg,
        **kwargs)


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

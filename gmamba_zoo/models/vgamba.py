"""vGamba: ResNet bottleneck backbones whose stage 3-4 convs are Gamba blocks (Mamba cell + 2-D attention).

Paper: "vGamba: Attentive State Space Bottleneck for efficient Long-range Dependencies in Visual Recognition"::

    @misc{haruna2025vgamba,
      title={vGamba: Attentive State Space Bottleneck for efficient Long-range Dependencies in Visual Recognition},
      author={Yunusa Haruna and Adamu Lawan and Shamsuddeen Hassan Muhammad and Jiaquan Zhang and Chaoning Zhang},
      year={2025},
      eprint={2503.21262},
      archivePrefix={arXiv},
      primaryClass={cs.CV},
      url={https://arxiv.org/abs/2503.21262}
    }

Layout: a ResNet-50/101 (7x7 stride-2 stem, 3x3 max-pool, bottlenecks of expansion 4, widths 64/128/256/512).
Stages 1-2 are timm's plain ResNet ``Bottleneck``; in stages 3-4 the 3x3 conv of every bottleneck is a
:class:`~gmamba_zoo.layers.GambaBlock`, followed by a 2x2 average pool in the strided first block of a stage.

Any input size: the blocks' position terms are built for the map sizes of ``img_size`` (224 by default) and
interpolated to the actual map in forward, so a model built for 224 runs at 320x192, 517x333 or 800x1216 and a 224
checkpoint loads unchanged. :func:`checkpoint_filter_fn` also interpolates them when a checkpoint built for another
``img_size`` is loaded.

``pretrained=True`` initialises every tensor whose name and shape match from timm's ImageNet ResNet-50 (vGamba-B) or
ResNet-101 (vGamba-L) weights: the stem, stages 1-2, the 1x1 convs, norms and downsamples of stages 3-4 and the
classifier. The Gamba blocks start from random initialisation; the list is on ``model.pretrained_init`` and in a
warning. No vGamba weights trained on ImageNet are shipped, and none of the paper's accuracies are claimed.

Choices where the paper is silent (the layer choices are in :mod:`gmamba_zoo.layers.gamba`):
    * The Gamba block of a strided block runs at the block's input resolution, then ``AvgPool2d(2, 2,
      ceil_mode=True)``: with ``ceil_mode`` the residual branch matches the stride-2 1x1 shortcut at odd sizes.
    * Shortcuts are timm's (1x1 conv without bias + BN) so the ResNet weights load; the published code adds a bias.
    * Convs outside the Gamba blocks use timm ResNet's initialisation (Kaiming fan-out, last BN of each bottleneck
      zeroed when ``zero_init_last``); the Gamba blocks keep their own (PyTorch defaults, Mamba's SSM init).
    * No dropout before the classifier by default (``drop_rate``; the published code uses 0.3).

Parameter counts (complete, every parameter) and why they differ from the paper's are in docs/vgamba.md.
"""
from __future__ import annotations

import logging
import re
import warnings
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, create_classifier, to_2tuple
from timm.models import checkpoint_seq, generate_default_cfgs
from timm.models.resnet import Bottleneck, downsample_conv

from ..layers._checks import check_bool, check_callable, check_int, check_int_sequence, check_real, check_size
from ..layers.gamba import (
    GAMBA_NO_WEIGHT_DECAY, CeilAvgPool2d, GambaBlock, check_gamba_args, check_input_shape, resize_pos_embed_1d,
)
from ._checkpoint import CheckpointMismatchError, describe_keys, key_shapes, list_keys
from ._registry import build_zoo_model, register_zoo_model
from .features import feature_take_indices
from .variants import ZOO_VARIANTS

__all__ = ['VGamba', 'GambaBottleneck', 'checkpoint_filter_fn']

_logger = logging.getLogger(__name__)
torch.fx.wrap('check_input_shape')  # an FX leaf here too (timm's tracer finds it through register_notrace_function)


def _ceil_half(n: int) -> int:
    return -(-n // 2)


class GambaBottleneck(nn.Module):
    """ResNet bottleneck whose 3x3 conv is a Gamba block (then a 2x2 average pool when strided).

    Module names follow timm's ``Bottleneck`` (conv1/bn1, bn2, conv3/bn3, downsample) so ResNet weights map onto it.

    Args:
        inplanes: Input channels.
        planes: Bottleneck width p; the output has 4p channels.
        grid_size: Map size (H0, W0) at the Gamba block's input for the construction ``img_size``.
        stride: 1, or 2 for the first block of a stage.
        downsample: Shortcut projection, or None for identity.
        num_heads, num_registers, d_state, d_conv, expand: Of the Gamba block.
        act_layer, norm_layer: As in timm's ResNet.
        drop_path: Stochastic depth module, or None.

    Attributes:
        grad_checkpointing: Recompute the block's activations in backward (see :meth:`set_grad_checkpointing`).
    """
    expansion = 4
    grad_checkpointing: bool = False

    def __init__(
            self,
            inplanes: int,
            planes: int,
            grid_size: Tuple[int, int],
            stride: int = 1,
            downsample: Optional[nn.Module] = None,
            num_heads: int = 4,
            num_registers: int = 1,
            d_state: int = 64,
            d_conv: int = 4,
            expand: int = 2,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            drop_path: Optional[nn.Module] = None,
    ):
        name = type(self).__name__
        check_int(name, 'inplanes', inplanes, minimum=1)
        check_int(name, 'planes', planes, minimum=1)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f'{name}: stride must be 1 or 2, got {stride!r}.')
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.act1 = act_layer(inplace=True)
        self.gamba = GambaBlock(
            planes, grid_size, num_heads=num_heads, num_registers=num_registers, d_state=d_state, d_conv=d_conv,
            expand=expand)
        self.pool = CeilAvgPool2d() if stride == 2 else nn.Identity()
        self.bn2 = norm_layer(planes)
        self.act2 = act_layer(inplace=True)
        self.conv3 = nn.Conv2d(planes, outplanes, kernel_size=1, bias=False)
        self.bn3 = norm_layer(outplanes)
        self.act3 = act_layer(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.drop_path = drop_path

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so the residual branch starts as zero (as timm's ResNet does)."""
        nn.init.zeros_(self.bn3.weight)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the block's activations in backward (for where no enclosing stage or wrapper checkpoints it)."""
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, Cin, H, W] -> [B, 4p, ceil(H / s), ceil(W / s)]."""
        if self.grad_checkpointing and torch.is_grad_enabled() and not (
                isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing() or torch.jit.is_scripting()):
            return torch.utils.checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.pool(self.gamba(x))))
        x = self.bn3(self.conv3(x))
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


class VGamba(nn.Module):
    """vGamba backbone: ResNet stem and stages 1-2, Gamba bottlenecks in stages 3-4, pooled linear classifier.

    Args:
        layers: Blocks per stage, e.g. (3, 4, 6, 3) for vGamba-B, (3, 4, 23, 3) for vGamba-L.
        num_classes: Classifier outputs (0 for none).
        in_chans: Input image channels.
        img_size: Input size the position terms are built for; every other size also runs (they are resized).
        widths: Bottleneck widths of the four stages (outputs are 4x); the stem has ``widths[0]`` channels.
        num_heads: Attention heads of the Gamba blocks.
        num_registers: Register tokens of the Gamba blocks' attention.
        d_state, d_conv, expand: Of the Gamba Cells' Mamba mixers.
        global_pool: Classifier pooling type (timm's ``create_classifier``).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, rising linearly over all blocks.
        act_layer, norm_layer: Activation and norm of the ResNet parts.
        zero_init_last: Zero the last BN of every bottleneck at initialisation.
    """

    def __init__(
            self,
            layers: Tuple[int, ...] = (3, 4, 6, 3),
            num_classes: int = 1000,
            in_chans: int = 3,
            img_size: Union[int, Tuple[int, int]] = 224,
            widths: Tuple[int, ...] = (64, 128, 256, 512),
            num_heads: int = 4,
            num_registers: int = 1,
            d_state: int = 64,
            d_conv: int = 4,
            expand: int = 2,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            zero_init_last: bool = True,
    ):
        name = type(self).__name__
        layers = check_int_sequence(name, 'layers', layers, length=4, minimum=1)
        widths = check_int_sequence(name, 'widths', widths, length=4, minimum=1)
        check_int(name, 'num_classes', num_classes, minimum=0)
        check_int(name, 'in_chans', in_chans, minimum=1)
        check_size(name, 'img_size', img_size)
        check_gamba_args(name, None, num_heads, num_registers, d_state, d_conv, expand)
        for i in (2, 3):  # the stages whose bottlenecks hold Gamba blocks
            check_gamba_args(name, widths[i], num_heads, num_registers, d_state, d_conv, expand, dim_arg=f'widths[{i}]')
        check_real(name, 'drop_rate', drop_rate, 0, 1, high_open=True)
        check_real(name, 'drop_path_rate', drop_path_rate, 0, 1, high_open=True)
        check_callable(name, 'act_layer', act_layer)
        check_callable(name, 'norm_layer', norm_layer)
        check_bool(name, 'zero_init_last', zero_init_last)
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.img_size = to_2tuple(img_size)
        self.grad_checkpointing = False
        self.pretrained_init: Optional[Dict[str, Any]] = None  # set by checkpoint_filter_fn on a ResNet init

        stem_chs = widths[0]
        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem_chs)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=stem_chs, reduction=2, module='act1')]

        grid = tuple(_ceil_half(_ceil_half(s)) for s in self.img_size)  # map size entering stage 1
        total = sum(layers)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # plain floats: builds on the meta device
        inplanes, reduction, block_idx = stem_chs, 4, 0
        for stage_idx, (depth, planes) in enumerate(zip(layers, widths)):
            stride = 1 if stage_idx == 0 else 2
            outplanes = planes * Bottleneck.expansion
            blocks = []
            for i in range(depth):
                s = stride if i == 0 else 1
                down = downsample_conv(inplanes, outplanes, 1, stride=s, norm_layer=norm_layer) \
                    if s != 1 or inplanes != outplanes else None
                dp = DropPath(dpr[block_idx]) if dpr[block_idx] > 0 else None
                if stage_idx < 2:
                    blocks.append(Bottleneck(
                        inplanes, planes, stride=s, downsample=down, act_layer=act_layer, norm_layer=norm_layer,
                        drop_path=dp))
                else:
                    blocks.append(GambaBottleneck(
                        inplanes, planes, grid, stride=s, downsample=down, num_heads=num_heads,
                        num_registers=num_registers, d_state=d_state, d_conv=d_conv, expand=expand,
                        act_layer=act_layer, norm_layer=norm_layer, drop_path=dp))
                if s == 2:
                    grid = (_ceil_half(grid[0]), _ceil_half(grid[1]))
                inplanes = outplanes
                block_idx += 1
            reduction *= stride
            self.add_module(f'layer{stage_idx + 1}', nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=outplanes, reduction=reduction, module=f'layer{stage_idx + 1}'))

        self.num_features = self.head_hidden_size = inplanes
        self.global_pool, self.fc = create_classifier(self.num_features, self.num_classes, pool_type=global_pool)
        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        """timm ResNet's initialisation for the convs and norms outside the Gamba blocks."""
        gamba_modules = {id(m) for b in self.modules() if isinstance(b, GambaBlock) for m in b.modules()}
        for m in self.modules():
            if id(m) in gamba_modules:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """SSM parameters (A_log, D), position terms and register tokens: full parameter names."""
        return {n for n, _ in self.named_parameters() if n.rsplit('.', 1)[-1] in GAMBA_NO_WEIGHT_DECAY}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^conv1|bn1|maxpool', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, self.num_classes, pool_type=global_pool)

    def _stages(self) -> List[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def _stem(self, x: Tensor) -> Tensor:
        """[B, in_chans, H, W] -> after act1: [B, C0, H/2, W/2] (rounded up)."""
        check_input_shape(x, 4, 1, self.in_chans, f'VGamba: expected a [B, {self.in_chans}, H, W] image batch')
        return self.act1(self.bn1(self.conv1(x)))

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward features and return intermediates: the stem (index 0, stride 2) and stages 1-4 (strides 4-32).

        Args:
            x: [B, in_chans, H, W] images.
            indices: Take the last n if int, all if None, those listed if a sequence.
            norm: Unused (no final norm); accepted for timm's API.
            stop_early: Stop after the last requested intermediate.
            output_fmt: Only ``'NCHW'``.
            intermediates_only: Return only the intermediates.

        Returns:
            The final features [B, C, H/32, W/32] and the list of intermediates, or the list only.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"VGamba.forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}.")
        intermediates = []
        take_indices, max_index = feature_take_indices(5, indices)
        x = self._stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        stages = self._stages()[:max_index] if stop_early else self._stages()
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last requested intermediate (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(5, indices)
        for name in ('layer1', 'layer2', 'layer3', 'layer4')[max_index:]:
            setattr(self, name, nn.Sequential())
        if max_index == 0:
            self.maxpool = nn.Identity()
        if max_index < 4:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or max_index < 4:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """[B, in_chans, H, W] -> [B, C, H/32, W/32] (each halving rounds up)."""
        x = self.maxpool(self._stem(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self._stages(), x, flatten=True)
        else:
            for stage in self._stages():
                x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """[B, C, h, w] -> [B, num_classes], or the pooled [B, C] with ``pre_logits``."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """[B, in_chans, H, W] -> [B, num_classes]."""
        return self.forward_head(self.forward_features(x))


_POS_TERM = re.compile(r'\.(pos_h|pos_w|rel_h|rel_w)$')


def _fresh_modules(keys: List[str]) -> List[str]:
    """Collapse tensor names to the modules holding them, a Gamba block counting as one module."""
    mods = []
    for k in keys:
        m = re.sub(r'(\.gamba)\..*$', r'\1', k.rsplit('.', 1)[0] if '.' in k else k)
        if m not in mods:
            mods.append(m)
    return mods


def checkpoint_filter_fn(state_dict: Dict[str, Tensor], model: VGamba) -> Dict[str, Tensor]:
    """Adapt a vGamba or a timm ResNet checkpoint to ``model``.

    * A vGamba checkpoint (it has Gamba block tensors): position terms built for another ``img_size`` are linearly
      interpolated to the model's; everything else passes unchanged.
    * A ResNet checkpoint (timm's resnet50/resnet101 layout): every tensor whose name and shape match the model is
      taken, the stem conv also when only its input channels differ (timm adapts it afterwards); every other model
      tensor keeps its random initialisation. The result has every model key, so a strict load succeeds. What was
      taken and what starts fresh is stored on ``model.pretrained_init`` and announced in a warning.
    """
    state_dict = state_dict.get('state_dict', state_dict.get('model', state_dict))
    target = model.state_dict()
    if any('.gamba.' in k for k in state_dict):
        out = {}
        for k, v in state_dict.items():
            if _POS_TERM.search(k) and k in target and v.dim() == 2 and v.shape != target[k].shape:
                v = resize_pos_embed_1d(v.float(), target[k].shape[-1]).to(v.dtype)
            out[k] = v
        return out

    # A ResNet source must hold the stem and stages 1-2 exactly (same bottleneck layout); anything else is another model
    plain = ('conv1.', 'bn1.', 'layer1.', 'layer2.')
    bad = [k for k, t in target.items() if k.startswith(plain) and not k.endswith('num_batches_tracked') and (
        k not in state_dict or (state_dict[k].shape != t.shape and k != 'conv1.weight'))]
    extra = [k for k in state_dict if k.startswith(plain) and k not in target]
    if bad or extra:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        source = cfg.get('file') or cfg.get('hf_hub_id') or cfg.get('url') or 'the state dict given'
        raise CheckpointMismatchError(
            f'vGamba: the checkpoint {source} is neither a vGamba checkpoint nor a timm ResNet-50/101 whose stem and '
            f'stages 1-2 match this model. Missing or mis-shaped keys ({len(bad)}): {list_keys(bad)}; unexpected '
            f'keys ({len(extra)}): {list_keys(extra)}. {describe_keys(key_shapes(state_dict))}')
    out, loaded, fresh = {}, [], []
    for k, t in target.items():
        v = state_dict.get(k)
        stem_adapt = k == 'conv1.weight' and v is not None and v.dim() == 4 and v.shape[0] == t.shape[0] \
            and v.shape[2:] == t.shape[2:]
        if v is not None and (v.shape == t.shape or stem_adapt):
            out[k] = v
            loaded.append(k)
        else:
            out[k] = t
            if not k.endswith('num_batches_tracked'):
                fresh.append(k)
    unused = [k for k in state_dict if k not in out or (k in target and state_dict[k].shape != target[k].shape
                                                         and k != 'conv1.weight')]
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    source = cfg.get('file') or cfg.get('hf_hub_id') or cfg.get('url') or 'a ResNet checkpoint'
    model.pretrained_init = dict(source=source, loaded=loaded, fresh=fresh, unused=unused)
    msg = (f'vGamba initialised from {source}: {len(loaded)} tensors with matching name and shape were copied '
           f'(stem, stages 1-2, 1x1 convs, norms and shortcuts of stages 3-4, classifier); these modules start from '
           f'random initialisation: {", ".join(_fresh_modules(fresh)) or "none"}. This is a ResNet initialisation, '
           f'not a trained vGamba: fine-tune before use (no vGamba ImageNet weights exist here). The full lists are '
           f'in model.pretrained_init.')
    _logger.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=2)
    return out


def _create_vgamba(variant: str, pretrained: bool = False, **kwargs: Any) -> VGamba:
    """Build a registered vGamba variant; its stage layout (``layers``) comes from its table record."""
    kwargs.setdefault('layers', ZOO_VARIANTS[variant].depths)
    return build_zoo_model(VGamba, variant, pretrained, (GambaBottleneck,), pretrained_filter_fn=checkpoint_filter_fn,
                           feature_cfg=dict(out_indices=(0, 1, 2, 3, 4)), **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """vGamba's own data config, initialised from the timm ResNet checkpoint ``hf_hub_id`` (not trained as vGamba)."""
    weights = kwargs['hf_hub_id'].split('/', 1)[-1]
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'fc',
        'license': 'apache-2.0',
        'notes': (f'Partial initialisation from timm {weights} ImageNet weights (stem, stages 1-2, the 1x1 convs and '
                  'norms of stages 3-4, classifier); the Gamba blocks are random. Not a trained vGamba.',),
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'vgamba_b.resnet50_a1_in1k_init': _cfg(hf_hub_id='timm/resnet50.a1_in1k'),
    'vgamba_l.resnet101_a1h_in1k_init': _cfg(hf_hub_id='timm/resnet101.a1h_in1k'),
})


@register_zoo_model
def vgamba_b(pretrained: bool = False, **kwargs) -> VGamba:
    """vGamba-B: ResNet-50 layout (3, 4, 6, 3). ``pretrained`` initialises the shared layers from ResNet-50."""
    return _create_vgamba('vgamba_b', pretrained=pretrained, **kwargs)


@register_zoo_model
def vgamba_l(pretrained: bool = False, **kwargs) -> VGamba:
    """vGamba-L: ResNet-101 layout (3, 4, 23, 3). ``pretrained`` initialises the shared layers from ResNet-101."""
    return _create_vgamba('vgamba_l', pretrained=pretrained, **kwargs)

"""The zoo's variants as data: one :class:`ZooVariant` record per registered model, in :data:`ZOO_VARIANTS`.

The model builders (:mod:`.gmamba`, :mod:`.vgamba`), the FLOP report and the benchmark (the baseline of each model)
and the analyses read this table; nothing else lists the variants. Each family's ``default_cfgs`` (written out in its
module) holds one pretrained cfg per tag in ``pretrained_tags``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

__all__ = [
    'ZooVariant', 'ZOO_VARIANTS', 'GMAMBA_VARIANTS', 'VGAMBA_VARIANTS', 'GMAMBA_FAMILIES', 'baseline_name',
    'gmamba_spec', 'parse_gmamba_spec',
]

#: Families whose models are a timm backbone with GMamba blocks inserted after its stages.
GMAMBA_FAMILIES = ('resnet', 'convnext', 'swin')


@dataclass(frozen=True)
class ZooVariant:
    """One registered zoo model.

    Attributes:
        name: The timm model name it is registered under.
        family: ``'resnet'``, ``'convnext'``, ``'swin'`` (GMamba blocks inserted into that timm backbone) or
            ``'vgamba'``.
        base: The timm model it is built on. GMamba: the backbone the blocks are inserted into. vGamba: the ResNet
            whose layout it follows and whose weights initialise its shared layers.
        depths: GMamba: blocks inserted after stages 1-4. vGamba: bottlenecks per stage (those of stages 3-4 hold
            the Gamba blocks).
        pretrained_tags: Tags of ``base``'s timm checkpoints on the Hugging Face Hub that the model offers as
            pretrained weights; the first is the default. :attr:`weight_tags` are the tags registered for the model.
        baseline: The plain timm model the FLOP report and the benchmark compare the model against.
        block_kwargs: Default keyword arguments of the inserted GMamba blocks (GMamba families; empty: the block's
            own defaults).
        feature_cfg: timm's ``feature_cfg`` for the model's ``features_only`` wrapper (GMamba families): the
            family's timm ``features_only`` layout (ConvNeXt: its flattened stages; Swin: ``forward_intermediates``,
            which returns NCHW maps from its NHWC stages).
    """
    name: str
    family: str
    base: str
    depths: Tuple[int, ...]
    pretrained_tags: Tuple[str, ...]
    baseline: str
    block_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    feature_cfg: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.family not in GMAMBA_FAMILIES + ('vgamba',):
            raise ValueError(f'ZooVariant {self.name}: unknown family {self.family!r}.')

    @property
    def is_gmamba(self) -> bool:
        """GMamba blocks inserted into a timm backbone (not vGamba)."""
        return self.family in GMAMBA_FAMILIES

    def weight_tag(self, base_tag: str) -> str:
        """The tag registered for the model for ``base``'s checkpoint ``base_tag``.

        GMamba: ``'<base_tag>_untrained_gmamba'`` (the inserted blocks are not trained). vGamba:
        ``'<base>_<base_tag>_init'`` (a partial initialisation from the ResNet).
        """
        return f'{base_tag}_untrained_gmamba' if self.is_gmamba else f'{self.base}_{base_tag}_init'

    @property
    def weight_tags(self) -> Tuple[str, ...]:
        """The model's registered pretrained tags, the default first."""
        return tuple(self.weight_tag(t) for t in self.pretrained_tags)


def _variants(*records: ZooVariant) -> Dict[str, ZooVariant]:
    return {r.name: r for r in records}


_CONVNEXT_FEATURES = dict(flatten_sequential=True, out_indices=(0, 1, 2, 3))
_SWIN_FEATURES = dict(feature_cls='getter', out_indices=(0, 1, 2, 3))


#: Every zoo model, by name. The layouts follow the papers: GMamba (2, 2, 2, 1) after stages 1-4 for the
#: segmentation backbones, (1, 1, 1, 0) for ResNet-50/101 (the detection layout); vGamba-B/L the ResNet-50/101 stages.
ZOO_VARIANTS: Dict[str, ZooVariant] = _variants(
    ZooVariant('resnet18_gmamba', 'resnet', 'resnet18', (2, 2, 2, 1), ('a1_in1k', 'tv_in1k'), 'resnet18'),
    ZooVariant('resnet34_gmamba', 'resnet', 'resnet34', (2, 2, 2, 1), ('a1_in1k', 'tv_in1k'), 'resnet34'),
    ZooVariant('resnet50_gmamba', 'resnet', 'resnet50', (1, 1, 1, 0), ('a1_in1k', 'tv_in1k'), 'resnet50'),
    ZooVariant('resnet101_gmamba', 'resnet', 'resnet101', (1, 1, 1, 0), ('a1h_in1k', 'tv_in1k'), 'resnet101'),
    ZooVariant('convnext_t_gmamba', 'convnext', 'convnext_tiny', (2, 2, 2, 1), ('fb_in1k', 'in12k_ft_in1k'),
               'convnext_tiny', feature_cfg=_CONVNEXT_FEATURES),
    ZooVariant('convnext_s_gmamba', 'convnext', 'convnext_small', (2, 2, 2, 1), ('fb_in1k', 'in12k_ft_in1k'),
               'convnext_small', feature_cfg=_CONVNEXT_FEATURES),
    ZooVariant('convnext_b_gmamba', 'convnext', 'convnext_base', (2, 2, 2, 1), ('fb_in1k', 'fb_in22k_ft_in1k'),
               'convnext_base', feature_cfg=_CONVNEXT_FEATURES),
    ZooVariant('swin_t_gmamba', 'swin', 'swin_tiny_patch4_window7_224', (2, 2, 2, 1),
               ('ms_in1k', 'ms_in22k_ft_in1k'), 'swin_tiny_patch4_window7_224', feature_cfg=_SWIN_FEATURES),
    ZooVariant('swin_s_gmamba', 'swin', 'swin_small_patch4_window7_224', (2, 2, 2, 1),
               ('ms_in1k', 'ms_in22k_ft_in1k'), 'swin_small_patch4_window7_224', feature_cfg=_SWIN_FEATURES),
    ZooVariant('vgamba_b', 'vgamba', 'resnet50', (3, 4, 6, 3), ('a1_in1k',), 'resnet50'),
    ZooVariant('vgamba_l', 'vgamba', 'resnet101', (3, 4, 23, 3), ('a1h_in1k',), 'resnet101'),
)

#: The GMamba variants (timm backbones with inserted blocks) and the vGamba ones, by name: subsets of
#: :data:`ZOO_VARIANTS`, which is what the builders read (a test replacing a record patches that one).
GMAMBA_VARIANTS: Dict[str, ZooVariant] = {n: v for n, v in ZOO_VARIANTS.items() if v.is_gmamba}
VGAMBA_VARIANTS: Dict[str, ZooVariant] = {n: v for n, v in ZOO_VARIANTS.items() if not v.is_gmamba}


_SPEC = re.compile(r'(?P<base>[A-Za-z0-9_.\-]+)\+gmamba\((?P<depths>\d+(?:,\d+)*)\)')


def gmamba_spec(base: str, depths: Sequence[int]) -> str:
    """The name the FLOP report and the benchmark give a timm ``base`` with GMamba ``depths``:
    ``'pvt_v2_b0+gmamba(1,1,1,1)'`` (built by ``gmamba_zoo.create_model(base, gmamba_depths=depths)``)."""
    return f'{base}+gmamba({",".join(str(int(d)) for d in depths)})'


def parse_gmamba_spec(name: str) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """``(base, depths)`` of a :func:`gmamba_spec` name; None for any other name."""
    match = _SPEC.fullmatch(name.replace(' ', ''))
    if match is None:
        return None
    return match['base'], tuple(int(d) for d in match['depths'].split(','))


def baseline_name(name: str) -> Optional[str]:
    """The plain timm model a zoo model extends (GMamba) or whose layout it follows (vGamba), the base of a
    :func:`gmamba_spec` name; None if unknown."""
    variant = ZOO_VARIANTS.get(name)
    if variant is not None:
        return variant.baseline
    spec = parse_gmamba_spec(name)
    return spec[0] if spec is not None else None

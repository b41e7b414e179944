"""Which timm backbones take GMamba blocks: the README table of section "GMamba on your backbone".

For each model below, the plain timm model is built on the meta device (no memory, no init) and
:func:`gmamba_zoo.models.plan_gmamba` decides, from one probe forward there, where one block after each of the last
four feature taps would go (``add_gmamba`` and ``gmamba_zoo.create_model`` run the same check), or why it refuses.
Models that ``tests/test_any_backbone.py`` builds and checks end to end (identity at insertion, gradients,
features_only, forward_intermediates; refusals by message) are marked tested.

    python scripts/backbone_families.py            # print the table
    python scripts/backbone_families.py --readme README.md   # regenerate the block between the README's markers
"""
import argparse
import re
import sys
from pathlib import Path

import timm
import torch

from gmamba_zoo.models import GMambaPlacementError, plan_gmamba

START, END = '<!-- backbones:start -->', '<!-- backbones:end -->'
# (timm model, its build arguments): the smallest member of each family
MODELS = [
    ('resnet18d', {}), ('seresnet18', {}), ('resnext50_32x4d', {}), ('regnety_016', {}), ('efficientnet_b0', {}),
    ('mobilenetv3_large_100', {}), ('convnext_atto', {}), ('convnextv2_atto', {}), ('mambaout_femto', {}),
    ('fastvit_t8', {}), ('efficientvit_b0', {}), ('poolformer_s12', {}), ('caformer_s18', {}),
    ('maxvit_nano_rw_256', dict(img_size=128)), ('pvt_v2_b0', {}), ('swin_tiny_patch4_window7_224', {}),
    ('edgenext_xx_small', {}), ('repvit_m1', {}), ('inception_next_tiny', {}), ('davit_tiny', {}),
    ('hrnet_w18_small', {}), ('vit_tiny_patch16_224', {}), ('levit_128s', {}),
]
TESTED = {'efficientnet_b0', 'mobilenetv3_large_100', 'convnextv2_atto', 'mambaout_femto', 'fastvit_t8',
          'efficientvit_b0', 'poolformer_s12', 'maxvit_nano_rw_256', 'resnext50_32x4d', 'resnet18d', 'seresnet18',
          'regnety_016', 'pvt_v2_b0', 'caformer_s18', 'hrnet_w18_small', 'vit_tiny_patch16_224', 'levit_128s'}
PLACEMENTS = {
    'append': 'appended to the stage (an nn.Sequential)',
    'blocks': "appended to the stage's `blocks`",
    'child': 'a `gmamba` child the stage runs',
    'hook': 'a `gmamba` child run by a forward hook',
}


def row(name: str, kwargs: dict) -> list:
    """One table row: model, result, where the blocks go (or why not), layouts."""
    with torch.device('meta'):
        model = timm.create_model(name, **kwargs)
    taps = len(model.feature_info)
    try:
        plan = plan_gmamba(model, (1,) * min(4, taps), name=name)
    except (GMambaPlacementError, ValueError) as e:
        why = str(e).split(f' of {name}: ', 1)[-1].split('; feature tap ')[0].rstrip('.')
        first_tap = re.search(r'feature tap "([^"]+)"', str(e))
        where = f'tap `{first_tap.group(1)}`: ' if first_tap else ''
        return [f'`{name}`', 'refused', where + why, '-']
    kinds = [PLACEMENTS[p] for p in dict.fromkeys(t.placement for t in plan)]
    taps = ', '.join(f'`{t.module}`' for t in plan)
    return [f'`{name}`', 'works', f'{taps}: ' + '; '.join(kinds), '/'.join(dict.fromkeys(t.layout for t in plan))]


def table() -> str:
    head = ['timm model', 'GMamba blocks', 'where (last four taps) or why refused', 'tap layout', 'tested']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
    for name, kwargs in MODELS:
        cells = row(name, kwargs) + ['yes' if name in TESTED else '-']
        lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--readme', type=Path, help=f'replace the text between {START} and {END} in this file')
    args = parser.parse_args(argv)
    text = table()
    if args.readme is None:
        print(text, end='')
        return 0
    readme = args.readme.read_text()
    pat = re.compile(re.escape(START) + r'.*?' + re.escape(END), re.S)
    if not pat.search(readme):
        raise SystemExit(f'{args.readme}: no {START} ... {END} block; add the two markers.')
    args.readme.write_text(pat.sub(lambda _: f'{START}\n{text}{END}', readme, count=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""The variant table, the written-out pretrained cfgs against timm's registry, feature_info and the Swin size path.

Structure only or tiny models: every test here runs in seconds on 2 CPU cores.
"""
import json
import subprocess
import sys

import pytest
import timm
import torch
from timm.models import get_model_args, get_pretrained_cfg

import gmamba_zoo
from gmamba_zoo.layers import GMambaBlock
from gmamba_zoo.models import create_for_input_size, feature_info_dicts
from gmamba_zoo.models.swin import is_swin
from gmamba_zoo.models.variants import GMAMBA_VARIANTS, VGAMBA_VARIANTS, ZOO_VARIANTS, ZooVariant, baseline_name

# What a GMamba cfg repeats from its base checkpoint's cfg in timm's registry (fixed_input_size is ours for Swin)
GMAMBA_CFG_KEYS = ('hf_hub_id', 'mean', 'std', 'input_size', 'test_input_size', 'pool_size', 'crop_pct',
                   'test_crop_pct', 'crop_mode', 'interpolation', 'first_conv', 'classifier', 'num_classes', 'license',
                   'origin_url')
# vGamba has its own eval recipe (crop, interpolation) and license; it shares the ResNet's weights and layout
VGAMBA_CFG_KEYS = ('hf_hub_id', 'mean', 'std', 'input_size', 'pool_size', 'first_conv', 'classifier', 'num_classes')
PRETRAINED = [(v, tag) for v in ZOO_VARIANTS.values() for tag in v.pretrained_tags]
# a small Swin: one block per stage, narrow (the window and patch layout of Swin-T)
TINY_SWIN = dict(depths=(1, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 4, 8))


# ---------------------------------------------------------------- the table

def test_table_is_the_registry():
    assert sorted(ZOO_VARIANTS) == gmamba_zoo.list_models()
    assert set(GMAMBA_VARIANTS) | set(VGAMBA_VARIANTS) == set(ZOO_VARIANTS)
    assert not set(GMAMBA_VARIANTS) & set(VGAMBA_VARIANTS) and len(GMAMBA_VARIANTS) == 9 and len(VGAMBA_VARIANTS) == 2
    for name, v in ZOO_VARIANTS.items():
        assert isinstance(v, ZooVariant) and v.name == name
        assert timm.is_model(v.base) and timm.is_model(v.baseline)
        assert baseline_name(name) == v.baseline
        # the registered tags are the record's, the default first
        assert sorted(timm.list_pretrained(f'{name}.*')) == sorted(f'{name}.{t}' for t in v.weight_tags)
        assert get_pretrained_cfg(name).tag == v.weight_tags[0]
    assert baseline_name('resnet18') is None


def test_record_is_frozen_and_checked():
    v = ZOO_VARIANTS['resnet18_gmamba']
    with pytest.raises(AttributeError):
        v.depths = (1, 1, 1, 1)
    with pytest.raises(ValueError, match='family'):
        ZooVariant('x', 'vit', 'vit_tiny_patch16_224', (1,), (), 'vit_tiny_patch16_224')
    assert v.weight_tag('a1_in1k') == 'a1_in1k_untrained_gmamba'
    assert ZOO_VARIANTS['vgamba_b'].weight_tags == ('resnet50_a1_in1k_init',)


def test_flops_reads_the_table():
    flops = pytest.importorskip('gmamba_zoo.flops', reason='the FLOP counter needs fvcore')
    assert all(flops.baseline_name(n) == v.baseline for n, v in ZOO_VARIANTS.items())


# ---------------------------------------------------------------- the written-out cfgs against timm's registry

@pytest.mark.parametrize('variant, tag', PRETRAINED, ids=[f'{v.name}.{t}' for v, t in PRETRAINED])
def test_literal_cfg_matches_timm_registry(variant, tag):
    base_cfg = get_pretrained_cfg(f'{variant.base}.{tag}')
    assert base_cfg is not None and base_cfg.hf_hub_id, f'timm has no Hub weights for {variant.base}.{tag}'
    cfg = get_pretrained_cfg(f'{variant.name}.{variant.weight_tag(tag)}').to_dict()
    base = base_cfg.to_dict()
    keys = GMAMBA_CFG_KEYS if variant.is_gmamba else VGAMBA_CFG_KEYS
    assert {k: cfg.get(k) for k in keys} == {k: base.get(k) for k in keys}
    assert not cfg.get('url')  # the Hub copy only
    if variant.is_gmamba:
        assert cfg['hf_hub_filename'] == 'model.safetensors' and cfg['fixed_input_size'] is False
        assert 'untrained' in cfg['description'] and f'{variant.base}.{tag}' in cfg['notes'][1]
    else:
        assert f'{variant.base}.{tag}' in cfg['notes'][0] and 'Not a trained vGamba' in cfg['notes'][0]


@pytest.mark.slow
def test_import_reads_no_pretrained_cfg_from_timm():
    """`import gmamba_zoo` with timm's cfg look-ups made to fail: the cfgs are literals, nothing is looked up."""
    code = (
        'import timm.models, timm.models._registry as r\n'
        'def refuse(*a, **k): raise AssertionError("pretrained cfg looked up at import")\n'
        'timm.models.get_pretrained_cfg = r.get_pretrained_cfg = refuse\n'
        'import gmamba_zoo\n'
        'assert gmamba_zoo.list_models()\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


# ---------------------------------------------------------------- feature_info in one form

def test_feature_info_dicts_of_models_wrappers_and_others():
    with torch.device('meta'):
        model = timm.create_model('resnet18_gmamba')
        wrapper = timm.create_model('resnet18_gmamba', features_only=True, out_indices=(1, 3))
    full = feature_info_dicts(model)
    assert [f['reduction'] for f in full] == [2, 4, 8, 16, 32] and full[1]['module'] == 'layer1'
    assert [(f['num_chs'], f['reduction']) for f in feature_info_dicts(wrapper)] == [(64, 4), (256, 16)]
    full[0]['num_chs'] = -1  # copies: the model's own list is untouched
    assert model.feature_info[0]['num_chs'] == 64
    assert feature_info_dicts(torch.nn.Conv2d(3, 8, 3)) == []


# ---------------------------------------------------------------- one Swin input-size path

def test_every_swin_runs_at_any_size_with_the_same_windows():
    """A plain Swin from create_for_input_size and a GMamba Swin whose blocks are the identity compute the same."""
    torch.manual_seed(0)
    plain = create_for_input_size('swin_tiny_patch4_window7_224', **TINY_SWIN).eval()
    model = timm.create_model('swin_t_gmamba', gmamba_depths=(1, 0, 0, 0), **TINY_SWIN).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all('layers.0.blocks.1.' in k for k in missing)
    assert plain.patch_embed.dynamic_img_pad and model.patch_embed.dynamic_img_pad
    x = torch.randn(1, 3, 67, 97)  # not a multiple of the patch size nor of the windows
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)


def test_swin_laid_out_for_a_size_keeps_its_windows():
    plain = create_for_input_size('swin_tiny_patch4_window7_224', (800, 1216), **TINY_SWIN)
    model = create_for_input_size('swin_t_gmamba', (800, 1216), gmamba_depths=(0, 0, 0, 1), **TINY_SWIN)
    windows = [blk.window_size for stage in plain.layers for blk in stage.blocks]
    assert windows == [(7, 7)] * 4
    swin_blocks = [b for s in model.layers for b in s.blocks if not isinstance(b, GMambaBlock)]
    assert [b.window_size for b in swin_blocks] == windows
    assert [b.shift_size for s in model.layers for b in s.blocks if hasattr(b, 'shift_size')] == [
        b.shift_size for s in plain.layers for b in s.blocks]
    assert is_swin('swin_t_gmamba') and is_swin('swin_tiny_patch4_window7_224')
    assert not is_swin('resnet18_gmamba') and not is_swin('vgamba_b') and not is_swin('resnet18')


def test_model_records_only_the_users_arguments():
    """No private attribute patched: the base is built through its entrypoint, so config export stays plain data."""
    model = timm.create_model('swin_t_gmamba', num_classes=5, **TINY_SWIN)
    args = get_model_args(model)
    json.dumps(args)
    assert 'embed_layer' not in args and 'strict_img_size' not in args
    assert args['num_classes'] == 5 and tuple(args['depths']) == TINY_SWIN['depths']

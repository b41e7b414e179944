"""GMamba backbones as timm models: registry, insertion, paper param deltas, timm API, features, Hub weights.

Small inputs throughout. The full-size checks (517 x 333 for every family, 800 x 1216 with the default blocks) take
tens of seconds on 2 CPU cores and run only with ``GMAMBA_ZOO_SLOW_TESTS=1``.
"""
import copy
import io
import os

import pytest
import safetensors.torch
import timm
import torch
from timm.models import get_pretrained_cfg
from timm.optim import create_optimizer_v2

import gmamba_zoo
from gmamba_zoo.layers import GMambaBlock
from gmamba_zoo.hub.card import model_family, pretrained_weights
from gmamba_zoo.models.variants import GMAMBA_VARIANTS
from hub_cache import put_in_hub_cache

SLOW = pytest.mark.skipif(not os.environ.get('GMAMBA_ZOO_SLOW_TESTS'), reason='set GMAMBA_ZOO_SLOW_TESTS=1')
ALL = sorted(GMAMBA_VARIANTS)
# the smallest model of each family, with its plain timm base
SMALL = {'resnet18_gmamba': 'resnet18', 'convnext_t_gmamba': 'convnext_tiny',
         'swin_t_gmamba': 'swin_tiny_patch4_window7_224'}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gmamba_blocks(model: torch.nn.Module):
    return [m for m in model.modules() if isinstance(m, GMambaBlock)]


def with_active_blocks(name: str, **kwargs) -> torch.nn.Module:
    """A model whose GMamba blocks are not the identity (layer scale 0.1), so tests see them compute."""
    return timm.create_model(name, gmamba_kwargs=dict(layer_scale_init_value=0.1), **kwargs)


def assert_features_match_info(feats, info, hw):
    """NCHW tensors whose channels and (floor or ceil) reductions match feature_info."""
    assert len(feats) == len(info.channels())
    for f, c, r in zip(feats, info.channels(), info.reduction()):
        assert f.dim() == 4 and f.shape[1] == c, (tuple(f.shape), c)
        for size, full in zip(f.shape[-2:], hw):
            assert abs(size - full / r) < 1, (tuple(f.shape), r, hw)


# ---------------------------------------------------------------- registry, defaults, configuration

def test_registered_with_timm_and_zoo():
    assert set(ALL) <= set(gmamba_zoo.list_models())
    assert set(ALL) <= set(timm.list_models('*_gmamba'))
    assert {'resnet18_gmamba', 'resnet34_gmamba', 'resnet50_gmamba', 'resnet101_gmamba', 'convnext_t_gmamba',
            'convnext_s_gmamba', 'convnext_b_gmamba', 'swin_t_gmamba', 'swin_s_gmamba'} <= set(ALL)
    for name, variant in GMAMBA_VARIANTS.items():
        detection = name in ('resnet50_gmamba', 'resnet101_gmamba')
        assert variant.depths == ((1, 1, 1, 0) if detection else (2, 2, 2, 1)), name


@pytest.mark.parametrize('name', ALL)
def test_every_model_builds_with_paper_depths_cfg_and_feature_info(name):
    """Structure only, on the meta device (no init, no compute); one model per family runs for real below."""
    base, depths = GMAMBA_VARIANTS[name].base, GMAMBA_VARIANTS[name].depths
    with torch.device('meta'):
        model = timm.create_model(name)
        plain = timm.create_model(base)
        feats = timm.create_model(name, features_only=True)
        feats_plain = timm.create_model(base, features_only=True)
    assert model.gmamba_depths[-4:] == depths
    assert len(gmamba_blocks(model)) == sum(depths)
    assert set(plain.state_dict()) <= set(model.state_dict())  # the base model's keys are unchanged
    cfg = model.pretrained_cfg
    for key in ('input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'first_conv', 'classifier', 'num_classes'):
        assert cfg.get(key) is not None, key
    model.get_submodule(cfg['first_conv'])
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert feats.feature_info.channels() == feats_plain.feature_info.channels()
    assert feats.feature_info.reduction() == feats_plain.feature_info.reduction()
    assert len(gmamba_blocks(feats)) == sum(depths)  # the wrapper runs the stages that hold the blocks


def test_gmamba_depths_and_kwargs_override():
    model = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 2), gmamba_kwargs=dict(d_state=4))
    assert model.gmamba_depths == (0, 1, 0, 0, 2)
    assert [type(b).__name__ for b in model.layer1][-1] == 'GMambaBlock' and len(model.layer2) == 2
    assert len(model.layer4) == 4 and all(b.mixer.A_log.shape[1] == 4 for b in gmamba_blocks(model))


@pytest.mark.parametrize('name, base, paper, rel', [
    ('resnet34_gmamba', 'resnet34', 5.63e6, 0.005),
    ('convnext_s_gmamba', 'convnext_small', 12.64e6, 0.005),
    ('resnet50_gmamba', 'resnet50', 17.6e6, 0.02),
])
def test_added_params_match_paper(name, base, paper, rel):
    with torch.device('meta'):
        delta = n_params(timm.create_model(name)) - n_params(timm.create_model(base))
    assert delta == pytest.approx(paper, rel=rel), delta


# ---------------------------------------------------------------- the timm model API

@pytest.mark.parametrize('name', list(SMALL))
def test_timm_model_api(name):
    model = with_active_blocks(name, drop_path_rate=0.1).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, feats)
        assert_features_match_info(inter, timm.models.FeatureInfo(model.feature_info, range(len(inter))), (32, 48))
    assert pooled.shape == (2, model.num_features) and logits.shape == (2, 1000) and model.num_classes == 1000

    # drop_path_rate reaches the base blocks and the inserted ones (rising to the rate over the inserted blocks)
    rates = [b.drop_path2.drop_prob if hasattr(b.drop_path2, 'drop_prob') else 0.0 for b in gmamba_blocks(model)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)

    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier().out_features == 7
    with torch.no_grad():
        assert model(x).shape == (2, 7)

    # group_matcher covers every parameter; the inserted blocks group with their stage's blocks
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert sorted(n for names in groups.values() for n in names) == sorted(n for n, _ in model.named_parameters())

    nwd = model.no_weight_decay()
    names = dict(model.named_parameters())
    assert nwd <= set(names)
    for block_name in (n for n, m in model.named_modules() if isinstance(m, GMambaBlock)):
        for p in ('mixer.A_log', 'mixer.D', 'ls1.gamma', 'ls2.gamma'):
            assert f'{block_name}.{p}' in nwd
    if name.startswith('swin'):  # the base model's own set is kept
        assert any(n.endswith('relative_position_bias_table') for n in nwd)
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in opt.param_groups if g['weight_decay'] == 0 for p in g['params']}
    assert all(id(names[n]) in no_decay for n in nwd)

    if name != 'resnet18_gmamba':
        return
    clone = copy.deepcopy(model)
    assert clone.no_weight_decay() == nwd and clone.no_weight_decay.model is clone
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False).no_weight_decay() == nwd


def test_in_chans():
    model = timm.create_model('resnet18_gmamba', in_chans=1, num_classes=3)
    assert model.in_chans == 1 and model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize('name', list(SMALL))
def test_every_parameter_gets_a_gradient_and_checkpointing_changes_nothing(name):
    model = with_active_blocks(name).eval()
    x = torch.randn(1, 3, 32, 48)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.logsumexp(-1).mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing  # so DDP needs no find_unused_parameters
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out, grads = run()
    model.set_grad_checkpointing(True)
    out_ckpt, grads_ckpt = run()
    torch.testing.assert_close(out_ckpt, out, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # one max over all tensors: assert_close per tensor costs seconds on 28 M parameters
        worst = max(((g - g_ckpt).abs().max() / (g.abs().max() + 1e-6)).item() for g, g_ckpt in zip(grads, grads_ckpt))
    assert worst < 1e-4, worst


def test_identity_blocks_still_receive_gradients():
    model = timm.create_model('resnet18_gmamba').train()  # default init: layer scale 0, the blocks are the identity
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(b.ls1.gamma.grad.abs().sum() > 0 for b in gmamba_blocks(model))


# ---------------------------------------------------------------- features_only and input sizes

@pytest.mark.parametrize('name, out_indices', [('resnet18_gmamba', (1, 3, 4)), ('convnext_t_gmamba', (0, 2)),
                                               ('swin_t_gmamba', (1, 3))])
def test_features_only_out_indices(name, out_indices):
    model = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    assert model.feature_info.out_indices == out_indices
    hw = (67, 97)
    with torch.no_grad():
        feats = model(torch.randn(2, 3, *hw))
    assert_features_match_info(feats, model.feature_info, hw)


def test_features_at_common_sizes():
    model = timm.create_model('resnet18_gmamba', features_only=True).eval()
    for hw in [(224, 224), (320, 192)]:
        with torch.no_grad():
            assert_features_match_info(model(torch.randn(1, 3, *hw)), model.feature_info, hw)


def test_detection_size_fast():
    """800 x 1216 through the smallest model; blocks only in stages 3-4 to stay fast (the full run is in SLOW)."""
    model = timm.create_model('resnet18_gmamba', features_only=True, gmamba_depths=(0, 0, 1, 1)).eval()
    with torch.no_grad():
        assert_features_match_info(model(torch.randn(1, 3, 800, 1216)), model.feature_info, (800, 1216))


@SLOW
@pytest.mark.parametrize('name, hw', [(n, (517, 333)) for n in SMALL] + [
    ('resnet18_gmamba', (800, 1216)), ('swin_t_gmamba', (800, 1216))])
def test_features_at_full_sizes(name, hw):
    model = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        assert_features_match_info(model(torch.randn(1, 3, *hw)), model.feature_info, hw)


# ---------------------------------------------------------------- pretrained weights from the (offline) Hub

def test_pretrained_tags_point_at_timm_hub_weights():
    tags = timm.list_pretrained('*_gmamba*')
    assert {t.split('.')[0] for t in tags} == set(ALL)
    for full in tags:
        name, tag = full.split('.', 1)
        assert tag.endswith('_untrained_gmamba'), full
        base = GMAMBA_VARIANTS[name].base
        base_cfg = get_pretrained_cfg(f'{base}.{tag[:-len("_untrained_gmamba")]}')  # exists in timm's registry
        cfg = get_pretrained_cfg(full)
        assert base_cfg is not None and base_cfg.hf_hub_id and cfg.hf_hub_id == base_cfg.hf_hub_id, full
        assert cfg.hf_hub_filename == 'model.safetensors' and not cfg.url
        assert (cfg.mean, cfg.std, cfg.input_size) == (base_cfg.mean, base_cfg.std, base_cfg.input_size)
        assert 'untrained' in cfg.description and any('untrained' in n for n in cfg.notes)
        assert 'GMamba blocks are untrained' in pretrained_weights(full).statement(model_family(name))


def plain_checkpoint(base: str, hub_id: str, mutate=None, **kwargs) -> torch.nn.Module:
    """A random plain timm model whose weights are put in the offline Hub cache as hub_id/model.safetensors."""
    plain = timm.create_model(base, **kwargs).eval()
    with torch.no_grad():  # non-trivial BN statistics and norms, so a failed load would show
        for n, t in plain.state_dict().items():
            if t.is_floating_point() and ('running_var' in n or n.endswith('weight') and t.dim() == 1):
                t.uniform_(0.5, 1.5)
    sd = {k: v.contiguous() for k, v in plain.state_dict().items()}
    if mutate is not None:
        sd = mutate(sd)
    put_in_hub_cache(hub_id, {'model.safetensors': safetensors.torch.save(sd)})
    return plain


@pytest.mark.parametrize('name', list(SMALL))
def test_pretrained_loads_base_weights_and_matches_plain_backbone(name):
    hub_id = get_pretrained_cfg(name).hf_hub_id  # the default tag's: timm's Hub id for the base weights
    # timm's plain Swin, told to accept sizes other than 224 (its checkpoint keys are the same)
    plain = plain_checkpoint(SMALL[name], hub_id, **(dict(strict_img_size=False) if 'swin' in name else {}))
    model = timm.create_model(name, pretrained=True).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        diff = (model(x) - plain(x)).abs().max().item()
    assert diff < 1e-5, diff

    if name == 'resnet18_gmamba':  # other heads and features_only load the same backbone
        feats = timm.create_model(name, pretrained=True, features_only=True).eval()
        other = timm.create_model(name, pretrained=True, num_classes=10)
        assert torch.equal(other.conv1.weight, plain.conv1.weight) and other.get_classifier().out_features == 10
        with torch.no_grad():
            torch.testing.assert_close(feats(x)[-1], plain.forward_features(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize('mutate, named', [
    (lambda sd: {**sd, 'layer9.bogus.weight': torch.zeros(1)}, ['layer9.bogus.weight']),
    (lambda sd: {k: v for k, v in sd.items() if k != 'layer2.0.conv1.weight'}, ['layer2.0.conv1.weight']),
])
def test_pretrained_with_wrong_keys_is_a_clear_error(mutate, named):
    hub_id = 'gmamba-zoo-tests/bad-resnet18'
    plain_checkpoint('resnet18', hub_id, mutate)
    with pytest.raises(RuntimeError) as err:
        timm.create_model('resnet18_gmamba', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=hub_id))
    for key in named:
        assert key in str(err.value)
    assert 'layer1.2.' not in str(err.value)  # the GMamba blocks' keys are allowed to be missing


# ---------------------------------------------------------------- add_gmamba on a user's own backbone

def test_add_gmamba_on_own_timm_model_is_identity_at_insertion():
    plain = timm.create_model('convnext_atto').eval()
    model = gmamba_zoo.add_gmamba(copy.deepcopy(plain), depths=(1, 1, 1, 0)).eval()
    assert len(gmamba_blocks(model)) == 3 and isinstance(model.stages[2].blocks[-1], GMambaBlock)
    assert model.gmamba_depths == (1, 1, 1, 0)
    assert set(plain.state_dict()) <= set(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - plain(x)).abs().max() < 1e-5
    assert any(n.endswith('mixer.A_log') for n in model.no_weight_decay())


def test_add_gmamba_errors_are_clear():
    with pytest.raises(TypeError, match='feature_info'):
        gmamba_zoo.add_gmamba(torch.nn.Conv2d(3, 8, 3), depths=(1,))
    vit = timm.create_model('vit_tiny_patch16_224', depth=2)
    with pytest.raises(TypeError, match=r'blocks\.1'):
        gmamba_zoo.add_gmamba(vit, depths=(1,))
    resnet = timm.create_model('resnet18')
    with pytest.raises(ValueError, match='feature taps'):
        gmamba_zoo.add_gmamba(resnet, depths=(1, 1, 1, 1, 1, 1))
    with pytest.raises(TypeError, match='act1'):  # ResNet's first tap is the stem activation
        gmamba_zoo.add_gmamba(resnet, depths=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match='ints'):
        gmamba_zoo.add_gmamba(resnet, depths=(1, -1, 0, 0))
    gmamba_zoo.add_gmamba(resnet, depths=(0, 0, 0, 1))
    with pytest.raises(ValueError, match='already'):
        gmamba_zoo.add_gmamba(resnet, depths=(0, 0, 0, 1))
    with pytest.raises(TypeError, match='features_only'):
        gmamba_zoo.add_gmamba(timm.create_model('resnet18', features_only=True), depths=(1, 1, 1, 1))

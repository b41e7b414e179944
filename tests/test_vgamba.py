"""vGamba: layers against oracles, the timm API, any input size, ResNet initialisation from an offline Hub, params."""
import copy

import pytest
import timm
import timm.optim
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import gmamba_zoo
from gmamba_zoo.layers import GambaBlock, GatedFusion, MambaMixer, RegisterMHSA2d, resize_pos_embed_1d
from gmamba_zoo.models.vgamba import VGamba, checkpoint_filter_fn
from gmamba_zoo.ops import selective_scan_ref
from hub_cache import put_in_hub_cache


pytestmark = pytest.mark.usefixtures('one_thread')


# A narrow, shallow vGamba (same code paths as vgamba_b) for the structural tests.
TINY = dict(layers=(1, 1, 2, 1), widths=(8, 16, 32, 64), num_classes=10)


def tiny(**kwargs) -> VGamba:
    return timm.create_model('vgamba_b', **dict(TINY, **kwargs))


def out_size(n: int, reduction: int) -> int:
    for _ in range(reduction.bit_length() - 1):  # every halving of the network rounds up
        n = -(-n // 2)
    return n


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------

def mamba_oracle(m: MambaMixer, x: torch.Tensor) -> torch.Tensor:
    """Mamba written out with an explicit causal conv and the sequential reference scan."""
    L = x.shape[1]
    xz = x @ m.in_proj.weight.T
    xs, z = xz.chunk(2, dim=-1)  # [B, L, E]
    xp = F.pad(xs.transpose(1, 2), (m.d_conv - 1, 0))
    w = m.conv1d.weight[:, 0]  # [E, K]
    conv = torch.stack([(xp[:, :, t:t + m.d_conv] * w).sum(-1) for t in range(L)], -1) + m.conv1d.bias[:, None]
    xs = F.silu(conv)  # [B, E, L]
    dbc = xs.transpose(1, 2) @ m.x_proj.weight.T
    dt, B, C = dbc.split([m.dt_rank, m.d_state, m.d_state], -1)
    dt = (dt @ m.dt_proj.weight.T).transpose(1, 2)
    y = selective_scan_ref(xs, dt, -torch.exp(m.A_log), B.transpose(1, 2), C.transpose(1, 2), m.D, z.transpose(1, 2),
                           m.dt_proj.bias, True)
    return y.transpose(1, 2) @ m.out_proj.weight.T


def test_mamba_mixer_matches_oracle_and_is_causal():
    m = MambaMixer(12, d_state=8, d_conv=4, expand=2).double()
    x = torch.randn(2, 37, 12, dtype=torch.float64, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, mamba_oracle(m, x), rtol=1e-6, atol=1e-6)
    y[:, 20].sum().backward()
    assert x.grad[:, 21:].abs().max() == 0 and x.grad[:, :21].abs().sum() > 0


def test_mhsa_matches_explicit_logits_with_position_terms_and_registers():
    torch.manual_seed(1)
    m = RegisterMHSA2d(16, grid_size=(4, 6), num_heads=4, num_registers=2).double()
    for p in (m.rel_h, m.rel_w, m.reg_k, m.reg_v):
        torch.nn.init.normal_(p)  # large enough that a wrong pairing would show
    x = torch.randn(2, 16, 5, 3, dtype=torch.float64)  # not the construction grid: the terms are resized
    b, c, h, w = x.shape
    q, k, v = m.qkv(x).reshape(b, 3, 4, 4, h, w).unbind(1)  # [B, heads, d, H, W]
    rh, rw = resize_pos_embed_1d(m.rel_h, h), resize_pos_embed_1d(m.rel_w, w)
    r = (rh[:, :, None] + rw[:, None, :]).reshape(4, 4, h, w)
    logits = torch.einsum('bndij,bndkl->bnijkl', q, k) + torch.einsum('bndij,ndkl->bnijkl', q, r)
    logits = logits.reshape(b, 4, h * w, h * w)
    reg_logits = torch.einsum('bndij,nrd->bnijr', q, m.reg_k[0]).reshape(b, 4, h * w, 2)
    attn = (torch.cat([logits, reg_logits], -1) * 4 ** -0.5).softmax(-1)
    vals = torch.cat([v.reshape(b, 4, 4, h * w).transpose(-1, -2), m.reg_v.expand(b, -1, -1, -1)], 2)
    expected = (attn @ vals).transpose(-1, -2).reshape(b, c, h, w)
    for fused in (True, False):
        m.fused_attn = fused
        torch.testing.assert_close(m(x), expected, rtol=1e-8, atol=1e-8)


def test_gated_fusion_and_block_split():
    blk = GambaBlock(16, grid_size=4, d_state=4).eval()
    x = torch.randn(2, 16, 4, 5)
    a, b = blk.fusion.proj_a(blk.cell(x[:, :8])), blk.fusion.proj_b(blk.mhsa(x[:, 8:]))
    expected = torch.sigmoid(blk.fusion.gate(a)) * a + torch.sigmoid(blk.fusion.gate(b)) * b
    torch.testing.assert_close(blk(x), expected)
    assert isinstance(blk.fusion, GatedFusion)
    with pytest.raises(ValueError, match='C=16'):
        blk(torch.randn(1, 8, 4, 4))


def test_resize_pos_embed_1d():
    pos = torch.randn(3, 14)
    assert resize_pos_embed_1d(pos, 14) is pos  # identity at the construction size
    ramp = torch.arange(7.).repeat(2, 1)
    out = resize_pos_embed_1d(ramp, 14)
    assert out.shape == (2, 14)
    torch.testing.assert_close(out[:, 1:-1].diff(), torch.full((2, 11), 0.5))  # linear: a ramp stays a ramp
    assert resize_pos_embed_1d(pos, 1).shape == (3, 1)


# ---------------------------------------------------------------------------------------------------------------
# Registration, configs, parameter counts
# ---------------------------------------------------------------------------------------------------------------

def test_registered_with_default_cfgs():
    assert {'vgamba_b', 'vgamba_l'} <= set(gmamba_zoo.list_models())
    assert {'vgamba_b', 'vgamba_l'} <= set(timm.list_models('vgamba*'))
    for name, resnet in (('vgamba_b', 'resnet50'), ('vgamba_l', 'resnet101')):
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.hf_hub_id == timm.models.get_pretrained_cfg(resnet).hf_hub_id
        assert cfg.input_size == (3, 224, 224) and cfg.first_conv == 'conv1' and cfg.classifier == 'fc'
        assert cfg.mean == timm.data.IMAGENET_DEFAULT_MEAN and cfg.std == timm.data.IMAGENET_DEFAULT_STD
        assert 0 < cfg.crop_pct <= 1 and 'Not a trained vGamba' in cfg.notes[0]


# Complete counts (every parameter); the paper reports 18.94 M and 31.89 M, see docs/vgamba.md.
PARAMS = {'vgamba_b': 20_441_137, 'vgamba_l': 34_946_370}
# What a counter that only sees parameters of leaf modules reports (no A_log, D, position terms, registers).
LEAF_PARAMS = {'vgamba_b': 20_159_537, 'vgamba_l': 34_255_682}


@pytest.mark.parametrize('name', ['vgamba_b', 'vgamba_l'])
def test_param_counts_pinned(name):
    m = timm.create_model(name)
    assert sum(p.numel() for p in m.parameters()) == PARAMS[name]
    leaf = sum(p.numel() for mod in m.modules() if not list(mod.children()) for p in mod.parameters(recurse=False))
    assert leaf == LEAF_PARAMS[name]
    if name == 'vgamba_b':  # the one full-size forward of the file
        m.eval()
        with torch.no_grad():
            feats = m.forward_features(torch.randn(1, 3, 224, 224))
            assert feats.shape == (1, 2048, 7, 7)
            assert m.forward_head(feats).shape == (1, 1000)


# ---------------------------------------------------------------------------------------------------------------
# timm API
# ---------------------------------------------------------------------------------------------------------------

def test_timm_api():
    m = tiny(drop_path_rate=0.1, drop_rate=0.1)
    assert m.num_classes == 10 and m.in_chans == 3 and m.num_features == 256
    assert any(isinstance(mod, timm.layers.DropPath) for mod in m.modules())
    x = torch.randn(2, 3, 64, 96)
    m.eval()
    feats = m.forward_features(x)
    assert feats.shape == (2, 256, 2, 3)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 256)
    assert m(x).shape == (2, 10)
    assert m.get_classifier() is m.fc
    m.reset_classifier(5)
    assert m(x).shape == (2, 5) and m.num_classes == 5
    m.reset_classifier(0)
    assert m(x).shape == (2, 256)
    one = tiny(in_chans=1)
    assert one.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match=r'\[B, 1, H, W\]'):
        one(x)

    nwd = m.no_weight_decay()
    names = dict(m.named_parameters())
    assert nwd <= set(names)
    for suffix in ('mamba.A_log', 'mamba.D', 'cell.pos_h', 'cell.pos_w', 'mhsa.rel_h', 'mhsa.rel_w', 'mhsa.reg_k',
                   'mhsa.reg_v'):
        assert sum(n.endswith(suffix) for n in nwd) == 3, suffix  # one per Gamba block
    groups = timm.optim.create_optimizer_v2(m, 'adamw', weight_decay=0.05).param_groups
    decayed = {id(p) for g in groups if g['weight_decay'] > 0 for p in g['params']}
    assert not any(id(names[n]) in decayed for n in nwd)

    matcher = m.group_matcher()
    assert set(matcher) == {'stem', 'blocks'}
    grouped = timm.models.group_parameters(m, matcher)
    assert sum(len(v) for v in grouped.values()) == len(names)


def test_forward_intermediates_and_prune():
    m = tiny().eval()
    x = torch.randn(1, 3, 97, 75)
    final, inter = m.forward_intermediates(x)
    assert len(inter) == 5
    for t, info in zip(inter, m.feature_info):
        assert t.shape[1:] == (info['num_chs'], out_size(97, info['reduction']), out_size(75, info['reduction']))
    torch.testing.assert_close(final, m.forward_features(x))
    last2 = m.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape[1] for t in last2] == [128, 256]
    early = m.forward_intermediates(x, indices=[1, 2], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early, inter[1:3])
    with pytest.raises(ValueError, match='NCHW'):
        m.forward_intermediates(x, output_fmt='NHWC')
    kept = m.prune_intermediate_layers(indices=[1, 2])
    assert kept == [1, 2] and len(m.layer3) == 0 and len(m.layer4) == 0 and m.num_classes == 0
    torch.testing.assert_close(m.forward_intermediates(x, indices=[1, 2], intermediates_only=True), inter[1:3])


def test_features_only_out_indices():
    fm = tiny(features_only=True, out_indices=(1, 2, 3, 4)).eval()
    x = torch.randn(1, 3, 77, 99)
    outs = fm(x)
    assert [o.shape[1] for o in outs] == fm.feature_info.channels() == [32, 64, 128, 256]
    assert fm.feature_info.reduction() == [4, 8, 16, 32]
    for o, r in zip(outs, fm.feature_info.reduction()):
        assert o.shape[2:] == (out_size(77, r), out_size(99, r))


def test_grad_checkpointing_same_outputs_and_grads():
    m = tiny(zero_init_last=False).train()
    m2 = copy.deepcopy(m)
    m2.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 64, 64)
    y1, y2 = m(x), m2(x)
    torch.testing.assert_close(y1, y2)
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n, p1), p2 in zip(m.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-6, msg=n)
    i1 = m.forward_intermediates(x, intermediates_only=True)
    i2 = m2.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(i1, i2):
        torch.testing.assert_close(a, b)


def test_every_parameter_gets_a_gradient():
    m = tiny(zero_init_last=False, drop_path_rate=0.1).train()
    m(torch.randn(2, 3, 64, 64)).logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [n for n, p in m.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, zero


# ---------------------------------------------------------------------------------------------------------------
# Any input size
# ---------------------------------------------------------------------------------------------------------------

def test_any_input_size_and_224_checkpoint_loads_unchanged():
    m = tiny().eval()
    shapes = {n: p.shape for n, p in m.named_parameters()}
    assert m.layer3[0].gamba.cell.pos_h.shape[-1] == 28 and m.layer4[0].gamba.mhsa.rel_w.shape[-1] == 14
    fresh = tiny().eval()
    fresh.load_state_dict(m.state_dict(), strict=True)  # the 224 checkpoint, unchanged
    with torch.no_grad():
        for h, w in ((320, 192), (517, 333), (800, 1216)):
            x = torch.randn(1, 3, h, w)
            y = m.forward_features(x)
            assert y.shape == (1, 256, out_size(h, 32), out_size(w, 32))
            assert torch.isfinite(y).all()
            if h == 517:
                torch.testing.assert_close(fresh.forward_features(x), y)
    assert {n: p.shape for n, p in m.named_parameters()} == shapes  # nothing was resized in place


def test_filter_resizes_position_terms_of_other_img_size():
    src = tiny()
    dst = tiny(img_size=(320, 192))
    assert dst.layer3[1].gamba.cell.pos_h.shape[-1] == 20 and dst.layer3[1].gamba.cell.pos_w.shape[-1] == 12
    sd = checkpoint_filter_fn(src.state_dict(), dst)
    dst.load_state_dict(sd, strict=True)
    torch.testing.assert_close(dst.layer3[1].gamba.mhsa.rel_h, resize_pos_embed_1d(src.layer3[1].gamba.mhsa.rel_h, 20))
    torch.testing.assert_close(dst.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


# ---------------------------------------------------------------------------------------------------------------
# pretrained=True: ResNet ImageNet weights from the (offline) Hub
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def resnet50_in_hub(tmp_path_factory):
    """A random-valued timm resnet50 checkpoint placed in the offline Hub cache under timm's own hf_hub_id."""
    torch.manual_seed(123)
    sd = {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in
          timm.create_model('resnet50').state_dict().items()}
    path = tmp_path_factory.mktemp('rn50') / 'model.safetensors'
    save_file(sd, str(path))
    put_in_hub_cache(timm.models.get_pretrained_cfg('resnet50').hf_hub_id, {'model.safetensors': path})
    return sd


def test_pretrained_initialises_shape_matching_layers_from_resnet50(resnet50_in_hub):
    ckpt = resnet50_in_hub
    with pytest.warns(UserWarning, match='not a trained vGamba'):
        m = timm.create_model('vgamba_b', pretrained=True)
    info = m.pretrained_init
    assert info['source'] == timm.models.get_pretrained_cfg('resnet50').hf_hub_id
    sd = m.state_dict()
    for k in info['loaded']:
        torch.testing.assert_close(sd[k], ckpt[k], msg=k)
    # everything of the stem, stages 1-2 and the classifier, and the non-Gamba layers of stages 3-4
    for k in sd:
        if k.endswith('num_batches_tracked'):
            continue
        if '.gamba.' in k:
            assert k in info['fresh']
        else:
            assert k in info['loaded'], k
    assert any(k.startswith('layer3.0.conv1') for k in info['loaded'])
    assert any(k.startswith('layer4.2.bn2') for k in info['loaded'])
    assert 'layer3.0.downsample.0.weight' in info['loaded'] and 'fc.weight' in info['loaded']
    assert set(info['fresh']) == {k for k in sd if '.gamba.' in k}
    assert set(info['unused']) == {k for k in ckpt if k.startswith(('layer3.', 'layer4.')) and '.conv2.' in k}


def test_pretrained_other_num_classes_and_in_chans(resnet50_in_hub):
    ckpt = resnet50_in_hub
    with pytest.warns(UserWarning, match='random initialisation'):
        m = timm.create_model('vgamba_b', pretrained=True, num_classes=7, in_chans=1)
    assert 'fc.weight' in m.pretrained_init['fresh'] and m.fc.weight.shape == (7, 2048)
    torch.testing.assert_close(m.conv1.weight, ckpt['conv1.weight'].sum(1, keepdim=True))  # timm's adaptation
    torch.testing.assert_close(m.layer2[3].conv2.weight, ckpt['layer2.3.conv2.weight'])

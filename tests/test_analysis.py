"""Global-perception analysis: the gradient criterion (exact numbers, GSSM / scan / conv verdicts), ERF, CLI."""
import pytest
import torch
import torch.nn as nn

from gmamba_zoo import GMambaBlock
from gmamba_zoo.analysis import (
    effective_receptive_field, erf_area_ratio, gradient_criterion, noise_images, plot_erf_maps,
)


class DenseLinear(nn.Module):
    """out = M @ vec(x): a map whose Jacobian is M, [C, H, W] -> [C, H, W]."""

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        self.shape = (c, h, w)
        self.M = nn.Parameter(torch.randn(c * h * w, c * h * w, dtype=torch.float64))

    def forward(self, x):
        return (x.flatten(1) @ self.M.T).reshape(x.shape[0], *self.shape)


class ListOutput(nn.Module):
    """Returns [identity, 3x3 conv] like a features_only model."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return [x, self.conv(x)]


def test_gssm_block_holds():
    res = gradient_criterion(GMambaBlock(16, layer_scale_init_value=1.0), (16, 6, 7))
    assert res.holds and res.tau > 1e-6
    assert res.positions == [(0, 0), (3, 3), (5, 6)] and res.norms.shape == (3, 6, 7) and res.map.shape == (6, 7)
    assert (res.norms > 0).all()
    assert 'HOLDS' in res.report()


def test_gssm_block_holds_per_element_channels_last():
    block = GMambaBlock(16, channels_last=True, layer_scale_init_value=1.0)
    res = gradient_criterion(block, (16, 5, 6), [(0, 0)], input_layout='NHWC', output_layout='NHWC', per_channel=True)
    assert res.holds, res.report()


def test_scan_only_block_fails_causally():
    block = GMambaBlock(16, layer_scale_init_value=1.0, frequency_path=False)
    h, w = 6, 7
    res = gradient_criterion(block, (16, h, w), [(0, 0), (2, 3), (-1, -1)])
    assert not res.holds and res.tau == 0.0
    for k, (i, j) in enumerate(res.positions):
        reach = i * w + j + 1  # the same-padding depthwise conv reaches one step ahead in raster order
        flat = res.norms[k].flatten()
        assert torch.all(flat[reach + 1:] == 0) and torch.all(flat[:reach + 1] > 0)
    assert res.taus[-1] > 0  # the last position in scan order sees everything
    assert 'causal order' in res.report() and 'FAILS' in res.report()


def test_conv3x3_fails_beyond_its_reach():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    res = gradient_criterion(conv, (4, 7, 7), [(3, 3)])
    assert not res.holds
    support = (res.norms[0] > 0).nonzero()
    assert support.min(0).values.tolist() == [2, 2] and support.max(0).values.tolist() == [4, 4]
    assert 'limited reach' in res.report()
    assert gradient_criterion(conv, (4, 3, 3), [(1, 1)]).holds  # within its reach it is "global"
    two = nn.Sequential(conv, nn.Conv2d(4, 4, 3, padding=1))
    support = (gradient_criterion(two, (4, 9, 9), [(4, 4)]).norms[0] > 0).nonzero()
    assert support.min(0).values.tolist() == [2, 2] and support.max(0).values.tolist() == [6, 6]


def test_numbers_match_a_known_jacobian():
    """1x1 conv: only the position itself, with norm ||W||_F; a dense linear map: norms are blocks of M."""
    conv = nn.Conv2d(3, 5, 1, bias=True)
    res = gradient_criterion(conv, (3, 4, 5), [(1, 2)])
    expected = torch.zeros(4, 5, dtype=torch.float64)
    expected[1, 2] = conv.weight.detach().double().norm()
    torch.testing.assert_close(res.norms[0], expected)
    assert res.tau == 0.0 and not res.holds

    c, h, w = 2, 3, 4
    dense = DenseLinear(c, h, w)
    res = gradient_criterion(dense, (c, h, w), [(0, 0), (2, 3)], chunk_size=3)
    M = dense.M.detach().reshape(c, h, w, c, h, w)
    for k, (i, j) in enumerate(res.positions):
        ref = M[:, i, j].square().sum((0, 1)).sqrt()  # Frobenius over output and input channels
        torch.testing.assert_close(res.norms[k], ref)
        torch.testing.assert_close(res.taus[k], ref.min() / ref.mean())
    assert res.holds
    ref_el = M[:, 0, 0].square().sum(0).sqrt()  # per input element: norm over output channels only
    el = gradient_criterion(dense, (c, h, w), [(0, 0)], per_channel=True)
    torch.testing.assert_close(el.taus[0], ref_el.min() / ref_el.mean())


def test_list_outputs_and_stage():
    mod = ListOutput(3)
    res = gradient_criterion(mod, (3, 5, 5), [(2, 2)], stage=0)  # the identity map
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[2, 2] = 3 ** 0.5
    torch.testing.assert_close(res.norms[0], expected)
    assert (gradient_criterion(mod, (3, 5, 5), [(2, 2)]).norms[0] > 0).sum() == 9  # stage -1: the conv
    mod.train()
    gradient_criterion(mod, (3, 5, 5), [(0, 0)])
    assert mod.training and mod.conv.weight.dtype == torch.float32  # the module itself is left as it was


@pytest.mark.parametrize('kwargs,match', [
    (dict(input_size=(4, 4)), r'\(C, H, W\)'),
    (dict(input_size=(3, 4, 4), positions=[(4, 0)]), 'outside'),
    (dict(input_size=(3, 4, 4), stage=2), 'stage=2'),
    (dict(input_size=(3, 4, 4), output_layout='NCWH'), 'output_layout'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_criterion(ListOutput(3), **kwargs)


def test_non_map_output_rejected():
    with pytest.raises(ValueError, match='forward_features'):
        gradient_criterion(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (3, 2, 2))


def test_erf_conv_reach_and_gssm_spread():
    images = noise_images(2, (4, 9, 9), seed=0)
    assert images.shape == (2, 4, 9, 9)
    torch.testing.assert_close(images.mean((-2, -1)), torch.zeros(2, 4), atol=1e-5, rtol=0)
    erf = effective_receptive_field(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)),
                                    images)
    support = (erf > 0).nonzero()
    assert support.min(0).values.tolist() == [2, 2] and support.max(0).values.tolist() == [6, 6]
    block = GMambaBlock(4 * 2, layer_scale_init_value=1.0)
    erf = effective_receptive_field(nn.Sequential(nn.Conv2d(4, 8, 1), block), images)
    assert (erf > 0).all()


def test_erf_area_ratio():
    one = torch.zeros(4, 5)
    one[2, 3] = 1.0
    assert erf_area_ratio(one, 0.9) == 1 / 20
    flat = torch.ones(4, 5)
    assert erf_area_ratio(flat, 0.5) == 10 / 20 and erf_area_ratio(flat, 1.0) == 1.0
    with pytest.raises(ValueError, match='fraction'):
        erf_area_ratio(flat, 0)


def test_plot_erf_maps(tmp_path):
    pytest.importorskip('matplotlib')
    path = plot_erf_maps({'a': torch.rand(6, 6), 'b': torch.rand(6, 6)}, tmp_path / 'x.png', 'title', 'caption')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def _has_gmamba_models() -> bool:
    from gmamba_zoo import list_models
    return 'resnet18_gmamba' in list_models()


@pytest.mark.skipif(not _has_gmamba_models(), reason='resnet18_gmamba is not registered')
def test_erf_models_share_the_backbone():
    from gmamba_zoo.analysis import erf_models
    models = erf_models('resnet18_gmamba', layer_scale=0.0, seed=0, depths=(0, 0, 1, 1))
    x = noise_images(1, (3, 64, 64))
    outs = [m.forward_features(x) for m in models.values()]
    for o in outs[1:]:  # layer scale 0: the GMamba blocks are the identity, so all three agree
        torch.testing.assert_close(o, outs[0])


@pytest.mark.skipif(not _has_gmamba_models(), reason='resnet18_gmamba is not registered')
def test_erf_command(tmp_path):
    pytest.importorskip('matplotlib')
    from gmamba_zoo.cli import main
    assert main(['erf', 'resnet18_gmamba', '--size', '64', '48', '--images', '1', '--out', str(tmp_path)]) == 0
    png = tmp_path / 'erf-resnet18_gmamba-64x48.png'
    assert png.read_bytes()[:4] == b'\x89PNG'
    md = (tmp_path / 'erf-resnet18_gmamba-64x48.md').read_text()
    assert 'resnet18_gmamba GSSM' in md and 'scan-only' in md and 'resnet18 (plain)' in md

"""The GSSM block: band split against a dense-DFT oracle, global perception, layouts, sizes, precision, params."""
import math

import pytest
import torch

from gmamba_zoo.layers import GMambaBlock, GSSMMixer, frequency_split


def dense_low_band(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Oracle: the low band via dense DFT matrices (no FFT), complex, so a non-real result would show."""
    h, w = x.shape[-2:]

    def dft(n):
        k = torch.arange(n, dtype=torch.float64)
        return torch.exp(-2j * math.pi * torch.outer(k, k) / n)

    def freqs(n):  # signed frequency of DFT bin k, in cycles per sample
        k = torch.arange(n, dtype=torch.float64)
        return torch.where(k <= (n - 1) // 2, k, k - n) / n

    Fh, Fw = dft(h), dft(w)
    spec = Fh @ x.to(torch.complex128) @ Fw.T
    mask = (freqs(h).abs()[:, None] < cutoff) & (freqs(w).abs()[None, :] < cutoff)
    assert torch.equal(mask, mask.flip(0).roll(1, 0).flip(1).roll(1, 1)), 'mask must be symmetric in +/-f'
    return torch.linalg.inv(Fh) @ (spec * mask) @ torch.linalg.inv(Fw.T)


@pytest.mark.parametrize('hw', [(8, 8), (7, 5), (1, 6), (9, 1), (1, 1), (12, 17)])
@pytest.mark.parametrize('cutoff', [0.25, 0.1, 0.5])
def test_band_split_matches_dense_dft(hw, cutoff):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    low, high = frequency_split(x, cutoff)
    oracle = dense_low_band(x, cutoff)
    assert oracle.imag.abs().max() < 1e-10  # symmetric mask: the band is a real image
    torch.testing.assert_close(low.double(), oracle.real, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((low + high).double(), x, rtol=1e-5, atol=1e-5)  # lossless
    # high holds nothing of the low band: its own low band is zero
    torch.testing.assert_close(dense_low_band(high.double(), cutoff).real, torch.zeros_like(x), rtol=0, atol=1e-5)


def test_band_split_is_float32_under_autocast():
    x = torch.randn(1, 4, 6, 10, dtype=torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low, high = frequency_split(x)
    assert low.dtype == high.dtype == torch.float32


def test_band_split_rejects_bad_cutoff():
    with pytest.raises(ValueError, match='cutoff'):
        frequency_split(torch.randn(1, 1, 4, 4), 0.7)


def input_gradient_norms(block: torch.nn.Module, hw=(6, 7), pos=(0, 0), dim=16) -> torch.Tensor:
    """||d out[:, :, i, j] / d x[:, :, a, b]|| for every input position (a, b), as [H, W] (one random projection)."""
    x = torch.randn(1, dim, *hw, requires_grad=True, dtype=torch.float64)
    out = block.double()(x)
    (out[0, :, pos[0], pos[1]] * torch.randn(dim, dtype=torch.float64)).sum().backward()
    return x.grad[0].norm(dim=0)


def test_gssm_is_global():
    """The paper's criterion: one output position depends on every input position (min gradient norm > 0)."""
    block = GMambaBlock(16, layer_scale_init_value=1.0)
    for pos in [(0, 0), (3, 4), (5, 6)]:
        norms = input_gradient_norms(block, pos=pos)
        assert norms.min() > 1e-6 * norms.mean(), f'output {pos}: min/mean {norms.min() / norms.mean():.2e}'


def test_scan_only_mixer_is_causal():
    """Without the frequency path the same mixer cannot see past its depthwise conv's reach in scan order."""
    block = GMambaBlock(16, layer_scale_init_value=1.0, frequency_path=False)
    h, w = 6, 7
    for pos in [(0, 0), (2, 3)]:
        norms = input_gradient_norms(block, hw=(h, w), pos=pos).flatten()
        p = pos[0] * w + pos[1]
        reach = p + block.mixer.conv1d.kernel_size[0] // 2  # the same-padding conv sees one step ahead
        assert torch.all(norms[reach + 1:] == 0), 'a causal scan must have zero gradient after its reach'
        assert torch.all(norms[:reach + 1] > 0)


def test_identity_at_insertion():
    block = GMambaBlock(32)
    x = torch.randn(2, 32, 5, 9)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize('shape', [(1, 16, 1, 1), (1, 16, 7, 5), (2, 16, 3, 11), (1, 16, 1, 9)])
def test_any_size_and_both_layouts(shape):
    block = GMambaBlock(16, layer_scale_init_value=0.5).eval()
    block_cl = GMambaBlock(16, channels_last=True, layer_scale_init_value=0.5).eval()
    block_cl.load_state_dict(block.state_dict())
    x = torch.randn(*shape)
    y = block(x)
    assert y.shape == x.shape
    torch.testing.assert_close(block_cl(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), y)


def test_bfloat16_autocast_close_to_float32():
    block = GMambaBlock(32, layer_scale_init_value=1.0)
    x = torch.randn(2, 32, 9, 7, requires_grad=True)
    ref = block(x)
    g_ref = torch.autograd.grad(ref.square().sum(), x)[0]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = block(x)
    g = torch.autograd.grad(out.float().square().sum(), x)[0]
    assert torch.isfinite(out).all() and torch.isfinite(g).all()
    assert ((out.float() - ref).norm() / ref.norm()) < 5e-2
    assert ((g - g_ref).norm() / g_ref.norm()) < 5e-2


def test_every_parameter_gets_a_gradient():
    block = GMambaBlock(16, layer_scale_init_value=1e-2)
    block(torch.randn(2, 16, 5, 6)).sum().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_parameter_count_matches_paper():
    """SPEC table: blocks of widths 64,64,128,128,256,256,512 (ResNet-34 "+GMamba x7") add 5.63 M."""
    widths = [64, 64, 128, 128, 256, 256, 512]
    total = sum(sum(p.numel() for p in GMambaBlock(c).parameters()) for c in widths)
    assert abs(total / 5.63e6 - 1) < 0.005, total


def test_mixer_structure():
    mixer = GSSMMixer(64)
    assert mixer.dt_rank == 4 and mixer.A_log.shape == (32, 8) and mixer.x_proj.out_features == 4 + 16
    torch.testing.assert_close(mixer.A_log[0].exp(), torch.arange(1, 9, dtype=torch.float32))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6


@pytest.mark.parametrize('x,match', [
    (torch.randn(1, 8, 4, 4), r'C=16'),
    (torch.randn(16, 4, 4), r'\[B, C, H, W\]'),
    (torch.ones(1, 16, 4, 4, dtype=torch.long), 'floating-point'),
])
def test_bad_input(x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GMambaBlock(16)(x)


def test_odd_width_rejected():
    with pytest.raises(ValueError, match='even'):
        GSSMMixer(15)


@pytest.mark.parametrize('hw', [(9, 7), (16, 16)])
def test_folded_fem_equals_layer_by_layer(hw, monkeypatch):
    """The folded evaluation of FEM's linear layers computes the same function, with the same gradients."""
    from gmamba_zoo.layers.gssm import FrequencyEncoding
    torch.manual_seed(0)
    fem = FrequencyEncoding(6)
    with torch.no_grad():  # non-default band weights and biases, so every folded term matters
        fem.low_weight.fill_(0.7)
        fem.high_weight.fill_(-1.3)
        for lin in (fem.low_proj, fem.high_proj, fem.fuse[0]):
            lin.bias.normal_()
    x = torch.randn(2, 6, *hw, requires_grad=True)
    results = {}
    for fold in (True, False):
        monkeypatch.setattr(fem, 'fold', fold)
        y = fem(x)
        grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.shape[-1])).sum(), [x, *fem.parameters()])
        results[fold] = (y, *grads)
    for a, b in zip(results[True], results[False]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(fem, 'fold', None)
    calls = []
    monkeypatch.setattr(fem, 'folded_weights', lambda orig=fem.folded_weights: calls.append(1) or orig())
    fem(torch.randn(1, 6, 3, 3))  # 9 positions <= 2m = 12: layer by layer
    assert not calls
    fem(torch.randn(1, 6, 4, 4))  # 16 > 12: folded
    assert calls


def test_inplace_gelu():
    from gmamba_zoo.layers.gssm import InplaceGELU
    act, ref = InplaceGELU(), torch.nn.GELU()
    x = torch.randn(4, 7)
    with torch.no_grad():
        h = x.clone()
        y = act(h)
    assert y.data_ptr() == h.data_ptr() and torch.equal(y, ref(x))  # inference: the input's memory is reused
    with torch.inference_mode():
        h = x.clone()
        assert act(h).data_ptr() == h.data_ptr()
    w = torch.randn(7, 7, requires_grad=True)
    h = x @ w  # autograd needs h for GELU's gradient: it must stay intact
    y = act(h)
    assert y.data_ptr() != h.data_ptr()
    (g,) = torch.autograd.grad(y.sum(), w)
    assert torch.allclose(g, torch.autograd.grad(ref(x @ w).sum(), w)[0])
    blk = GMambaBlock(8, layer_scale_init_value=1.0).eval()
    x = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        out = blk(x)
    blk.mlp.act = torch.nn.GELU()
    with torch.no_grad():
        assert torch.equal(out, blk(x))


def test_both_mixers_configure_one_ssm_core():
    """GSSM and Mamba are one SelectiveSSM: GSSM convs and concatenates z, Mamba convs x only and gates the scan."""
    from gmamba_zoo.layers import MambaMixer, SelectiveSSM
    gssm, mamba = GSSMMixer(16), MambaMixer(12, expand=2)
    assert isinstance(gssm, SelectiveSSM) and isinstance(mamba, SelectiveSSM)
    config = lambda m: (m.conv1d.in_channels, m.conv1d.padding, m.out_proj.in_features, m.gate)  # noqa: E731
    assert config(gssm) == (16, (1,), 16, 'concat') and config(mamba) == (24, (3,), 24, 'scan')
    # the front end's modules sit between the conv and x_proj, as in checkpoints (and optimizer states) saved before
    names = [n for n, _ in gssm.named_children()]
    assert names == ['in_proj', 'conv1d', 'fem', 'fgmm', 'x_proj', 'dt_proj', 'out_proj']
    assert GSSMMixer(16, frequency_path=False).fem is None


def test_selective_ssm_scans_any_positional_shape_in_raster_order():
    from gmamba_zoo.layers import SelectiveSSM
    torch.manual_seed(0)
    core = SelectiveSSM(8, 16, d_state=4, d_conv=3, causal=False, conv_z=True, gate='concat').double()
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(core(x), core(x.reshape(2, 15, 8)).reshape(2, 3, 5, 8), rtol=0, atol=0)


@pytest.mark.parametrize('kwargs,match', [
    (dict(d_conv=4, causal=False), 'odd'),
    (dict(d_conv=0, causal=True), '>= 1'),
    (dict(gate='mul'), 'gate'),
])
def test_selective_ssm_rejects_bad_config(kwargs, match):
    from gmamba_zoo.layers import SelectiveSSM
    with pytest.raises(ValueError, match=match):
        SelectiveSSM(8, 8, **kwargs)

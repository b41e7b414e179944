"""Every bad build argument is an error when the model (or block) is built, naming the argument, the value and what
is expected; empty batches give empty outputs of the right shape; float64 under autocast and half inputs are either
run or refused clearly.

The model-level cases build on the meta device: the checks run before any tensor is made, so the error (or its
absence) is the same there and costs nothing.
"""
import re

import pytest
import timm
import torch

import gmamba_zoo
from gmamba_zoo.layers import GambaBlock, GambaCell, GMambaBlock, MambaMixer, RegisterMHSA2d, SelectiveSSM

pytestmark = pytest.mark.usefixtures('one_thread')

VG_TINY = dict(widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=8)


def assert_names(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    for part in parts:
        assert part in msg, f'{part!r} not in {msg!r}'


# ------------------------------------------------------------------------------------------------- model arguments

GMAMBA_BAD = [
    (dict(gmamba_kwargs={'d_state': 0}), ValueError, ["gmamba_kwargs['d_state']", '0', 'int >= 1']),
    (dict(gmamba_kwargs={'d_state': -1}), ValueError, ["gmamba_kwargs['d_state']", '-1']),
    (dict(gmamba_kwargs={'d_state': 8.0}), TypeError, ["gmamba_kwargs['d_state']", '8.0']),
    (dict(gmamba_depths=3), TypeError, ['gmamba_depths', '3', 'sequence of 4 ints']),
    (dict(gmamba_depths=(1, 2)), ValueError, ['gmamba_depths', '(1, 2)', 'sequence of 4 ints']),
    (dict(gmamba_depths=(1, -1, 0, 0)), ValueError, ['gmamba_depths', '-1', '>= 0']),
    (dict(gmamba_depths=(1.0, 0, 0, 0)), TypeError, ['gmamba_depths', '1.0']),
    (dict(gmamba_depths='1111'), TypeError, ['gmamba_depths', "'1111'"]),
    (dict(gmamba_kwargs=5), TypeError, ['gmamba_kwargs', '5', 'dict']),
    (dict(gmamba_kwargs={'freq_cutoff': 0.6}), ValueError, ["gmamba_kwargs['freq_cutoff']", '0.6', '(0, 0.5]']),
    (dict(gmamba_kwargs={'freq_cutoff': 0}), ValueError, ["gmamba_kwargs['freq_cutoff']", '0']),
    (dict(gmamba_kwargs={'bogus': 1}), TypeError, ["'bogus'", 'gmamba_kwargs', 'd_state']),
    (dict(gmamba_kwargs={'dt_rank': 'big'}), ValueError, ["gmamba_kwargs['dt_rank']", "'big'", "'auto'"]),
    (dict(gmamba_kwargs={'dt_rank': 0}), ValueError, ["gmamba_kwargs['dt_rank']", '0', "'auto'"]),
    (dict(gmamba_kwargs={'dt_rank': 1.5}), TypeError, ["gmamba_kwargs['dt_rank']", '1.5']),
    (dict(gmamba_kwargs={'d_conv': 2}), ValueError, ["gmamba_kwargs['d_conv']", '2', 'odd']),
    (dict(gmamba_kwargs={'mlp_ratio': -1}), ValueError, ["gmamba_kwargs['mlp_ratio']", '-1']),
    (dict(gmamba_kwargs={'frequency_path': 'yes'}), TypeError, ["gmamba_kwargs['frequency_path']", "'yes'"]),
    (dict(gmamba_kwargs={'dt_min': 0.5}), ValueError, ["gmamba_kwargs['dt_min']", '0.5', 'dt_max']),
    (dict(gmamba_kwargs={'drop_path': 0.1}), TypeError, ["gmamba_kwargs['drop_path']", 'drop_path_rate']),
    (dict(gmamba_kwargs={'layer_scale_init_value': float('inf')}), ValueError,
     ["gmamba_kwargs['layer_scale_init_value']", 'inf']),
    (dict(drop_path_rate=1.5), ValueError, ['drop_path_rate', '1.5', '[0, 1)']),
]


@pytest.mark.parametrize('name', ['resnet18_gmamba', 'convnext_t_gmamba', 'swin_t_gmamba'])
@pytest.mark.parametrize('kwargs, exc, parts', GMAMBA_BAD, ids=[str(c[0]) for c in GMAMBA_BAD])
def test_bad_gmamba_arguments_fail_at_build(name, kwargs, exc, parts):
    with torch.device('meta'), pytest.raises(exc) as err:
        timm.create_model(name, **kwargs)
    assert str(err.value).startswith(name + ':')
    assert_names(err, *parts)


def test_block_arguments_are_checked_even_when_no_block_is_built():
    with torch.device('meta'), pytest.raises(ValueError, match=re.escape("gmamba_kwargs['d_state']")):
        timm.create_model('resnet18_gmamba', gmamba_depths=(0, 0, 0, 0), gmamba_kwargs={'d_state': 0})
    with pytest.raises(TypeError, match=r"add_gmamba: unknown key 'nope'"):
        gmamba_zoo.add_gmamba(timm.create_model('resnet18'), depths=(0, 0, 0, 0), nope=1)
    with pytest.raises(TypeError, match=r'add_gmamba: depths must be a sequence .* got 2'):
        gmamba_zoo.add_gmamba(timm.create_model('resnet18'), depths=2)


def test_good_arguments_still_build():
    with torch.device('meta'):
        model = timm.create_model('resnet18_gmamba', gmamba_depths=[1, 0, 0, 1], drop_path_rate=0.1, gmamba_kwargs=dict(
            d_state=4, d_conv=5, dt_rank=3, freq_cutoff=0.5, frequency_path=False, mlp_ratio=2, dt_min=0.01,
            dt_max=0.2, dt_init_floor=0, layer_scale_init_value=0.5))
    assert model.gmamba_depths == (0, 1, 0, 0, 1)
    block = model.layer1[-1]
    assert block.mixer.d_state == 4 and block.mixer.d_conv == 5 and block.mixer.dt_rank == 3 and block.mixer.fem is None


VGAMBA_BAD = [
    (dict(d_state=0), ValueError, ['d_state', '0']),
    (dict(widths=(8, 16, 30, 64)), ValueError, ['widths[2]', '30', 'num_heads=4']),
    (dict(widths=(8, 16, 32)), ValueError, ['widths', '(8, 16, 32)', '4 ints']),
    (dict(layers=(1, 1, 1)), ValueError, ['layers', '(1, 1, 1)', '4 ints']),
    (dict(layers=3), TypeError, ['layers', '3']),
    (dict(layers=(1, 0, 1, 1)), ValueError, ['layers', '>= 1']),
    (dict(num_heads=0), ValueError, ['num_heads', '0']),
    (dict(expand=0), ValueError, ['expand', '0']),
    (dict(d_conv=0), ValueError, ['d_conv', '0']),
    (dict(num_registers=-1), ValueError, ['num_registers', '-1']),
    (dict(drop_path_rate=1.0), ValueError, ['drop_path_rate', '1.0']),
    (dict(img_size=0), ValueError, ['img_size', '0']),
    (dict(in_chans=0), ValueError, ['in_chans', '0']),
    (dict(num_classes=-1), ValueError, ['num_classes', '-1']),
    (dict(zero_init_last='no'), TypeError, ['zero_init_last', "'no'"]),
]


@pytest.mark.parametrize('kwargs, exc, parts', VGAMBA_BAD, ids=[str(c[0]) for c in VGAMBA_BAD])
def test_bad_vgamba_arguments_fail_at_build(kwargs, exc, parts):
    with torch.device('meta'), pytest.raises(exc) as err:
        timm.create_model('vgamba_b', **{**VG_TINY, **kwargs})
    assert_names(err, *parts)


# ------------------------------------------------------------------------------------------------- layer arguments

LAYER_BAD = [
    (lambda: GMambaBlock(7), ValueError, ['dim', '7', 'even']),
    (lambda: GMambaBlock(True), TypeError, ['dim', 'True']),
    (lambda: GMambaBlock(8, mlp_ratio=0.01), ValueError, ['mlp_ratio', '0.01']),
    (lambda: GMambaBlock(8, drop_path=1.0), ValueError, ['drop_path', '1.0']),
    (lambda: GMambaBlock(8, channels_last=1), TypeError, ['channels_last', '1']),
    (lambda: GMambaBlock(8, norm_layer=3), TypeError, ['norm_layer', '3']),
    (lambda: GMambaBlock(8, foo=1), TypeError, ["'foo'", 'freq_cutoff']),
    (lambda: GMambaBlock(8, d_state=0), ValueError, ['d_state', '0']),
    (lambda: GambaBlock(10, 4), ValueError, ['dim', '10', 'num_heads=4']),
    (lambda: GambaBlock(16, 4, num_heads=0), ValueError, ['num_heads', '0']),
    (lambda: GambaBlock(16, 0), ValueError, ['grid_size', '0']),
    (lambda: GambaBlock(16, 4, expand=-2), ValueError, ['expand', '-2']),
    (lambda: GambaBlock(16, 4, d_state=2.5), TypeError, ['d_state', '2.5']),
    (lambda: GambaCell(8, (4, 'a')), TypeError, ['grid_size', "'a'"]),
    (lambda: MambaMixer(8, expand=0.01), ValueError, ['expand', '0.01']),
    (lambda: RegisterMHSA2d(8, 4, num_registers=-1), ValueError, ['num_registers', '-1']),
    (lambda: SelectiveSSM(8, 8, gate='mul'), ValueError, ['gate', "'mul'"]),
    (lambda: SelectiveSSM(8, 0), ValueError, ['d_inner', '0']),
    (lambda: SelectiveSSM(8, 8, dt_rank='x'), ValueError, ['dt_rank', "'x'"]),
    (lambda: SelectiveSSM(8, 8, dt_min=-1.0), ValueError, ['dt_min', '-1.0']),
    (lambda: SelectiveSSM(8, 8, front_end={'fem': 3}), TypeError, ["front_end['fem']", '3']),
]


@pytest.mark.parametrize('build, exc, parts', LAYER_BAD, ids=range(len(LAYER_BAD)))
def test_bad_layer_arguments_fail_at_build(build, exc, parts):
    with pytest.raises(exc) as err:
        build()
    assert_names(err, *parts)


# ------------------------------------------------------------------------------------------------- empty batches

# Each registered model, shrunk through its base's own arguments (the builder, the wrapper and the inserted blocks are
# the variant's own), so that all eleven build and run in a few seconds.
SHRINK = {
    'resnet': dict(layers=(1, 1, 1, 1)),
    'convnext': dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
    'swin': dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)),
    'vgamba': VG_TINY,
}


def _shrunk(name: str, **kwargs):
    family = gmamba_zoo.models.ZOO_VARIANTS[name].family
    extra = dict(gmamba_kwargs=dict(layer_scale_init_value=0.1)) if family != 'vgamba' else {}
    return timm.create_model(name, num_classes=7, **SHRINK[family], **extra, **kwargs)


@pytest.mark.parametrize('features_only', [False, True], ids=['model', 'features'])
@pytest.mark.parametrize('name', gmamba_zoo.list_models())
def test_empty_batch_gives_empty_output_of_the_right_shape(name, features_only):
    torch.manual_seed(0)
    model = _shrunk(name, features_only=features_only).eval()
    with torch.no_grad():
        one, empty = model(torch.randn(1, 3, 33, 35)), model(torch.randn(0, 3, 33, 35))
    one, empty = (one, empty) if features_only else ([one], [empty])
    assert [t.shape[1:] for t in empty] == [t.shape[1:] for t in one]
    assert all(t.shape[0] == 0 and t.dtype == torch.float32 for t in empty)


def test_empty_batch_trains_like_timm():
    """A training step on an empty batch runs (as for timm's plain ResNet) and gives finite, zero gradients."""
    for model in (_shrunk('resnet18_gmamba'), _shrunk('vgamba_b'), _shrunk('swin_t_gmamba')):
        model.train()
        out = model(torch.randn(0, 3, 32, 32))
        assert out.shape == (0, 7)
        out.sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.count_nonzero(g) == 0 for g in grads)


def test_empty_map_through_each_block():
    for block, x in ((GMambaBlock(8, layer_scale_init_value=1.0), torch.randn(0, 8, 5, 6)),
                     (GMambaBlock(8, frequency_path=False), torch.randn(0, 8, 5, 6)),
                     (GambaBlock(16, 4, d_state=4), torch.randn(0, 16, 5, 6)),
                     (MambaMixer(8, d_state=4), torch.randn(0, 11, 8))):
        assert block(x).shape == x.shape


@pytest.mark.parametrize('shape', [(0, 4, 8, 8), (2, 0, 8, 8), (2, 3, 0, 5)], ids=['batch', 'channels', 'rows'])
def test_frequency_split_of_an_empty_map_is_empty(shape):
    from gmamba_zoo.layers.gssm import frequency_split, low_band
    x = torch.randn(shape, requires_grad=True)
    low, high = frequency_split(x)
    assert low.shape == high.shape == shape and low.dtype == torch.float32
    low_band(x).sum().backward()
    assert x.grad.shape == shape
    with pytest.raises(ValueError, match='cutoff'):  # the argument is still checked
        low_band(x, 0.7)


@pytest.mark.parametrize('backend', ['torch', 'numba'])
@pytest.mark.parametrize('bdl', [(0, 4, 5), (2, 0, 5)], ids=['batch', 'channels'])
def test_scan_of_an_empty_batch_is_empty(backend, bdl):
    from gmamba_zoo.ops import scan_backend, selective_scan_fn
    if backend == 'numba':
        pytest.importorskip('numba')
    b, d, length = bdl
    n = 3
    u = torch.randn(b, d, length, requires_grad=True)
    a = (-torch.rand(d, n)).requires_grad_()
    args = (torch.randn(b, d, length), a, torch.randn(b, n, length), torch.randn(b, n, length), torch.randn(d))
    with scan_backend(backend):
        y = selective_scan_fn(u, *args, z=torch.randn(b, d, length), delta_bias=torch.randn(d), delta_softplus=True)
        y.sum().backward()
    assert y.shape == (b, d, length)
    assert u.grad.shape == u.shape and a.grad.shape == a.shape and torch.count_nonzero(a.grad) == 0

# ------------------------------------------------------------------------------------------------- input dtypes

@pytest.fixture(scope='module')
def resnet_tiny():
    torch.manual_seed(0)
    return timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 1), num_classes=10,
                             gmamba_kwargs=dict(layer_scale_init_value=0.1)).eval()


@pytest.mark.parametrize('amp', [torch.bfloat16, torch.float16])
def test_float64_under_autocast_is_a_clear_error(resnet_tiny, amp):
    with torch.autocast('cpu', dtype=amp), pytest.raises(TypeError, match=r'float64 input under torch\.autocast.*'
                                                                          r'x\.float\(\)'):
        resnet_tiny(torch.randn(1, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_input_on_cpu(resnet_tiny, dtype):
    """Into a float32 model: a clear error outside autocast, runs under autocast; a half model runs half inputs."""
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(TypeError, match=rf'input dtype {dtype}.*parameters\' dtype torch.float32'):
        resnet_tiny(x.to(dtype))
    with torch.no_grad():
        ref = resnet_tiny(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp = resnet_tiny(x.to(dtype))
        half = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 1), num_classes=10)
        half.load_state_dict(resnet_tiny.state_dict())
        out = half.to(dtype).eval()(x.to(dtype))
    assert amp.dtype == torch.bfloat16 and out.dtype == dtype
    for y in (amp, out):
        assert torch.isfinite(y).all()
        assert float((y.float() - ref).norm() / ref.norm()) < 3e-2

"""Bad input gets a clear error; a checkpoint of another model is refused; bf16 autocast; torch.compile = eager.

Mixed precision bounds (CPU bfloat16 autocast against float32, same weights and input):
bfloat16 keeps 8 significant bits, a unit roundoff of 2^-9 ~ 2e-3 per rounded op (2^-8 ~ 4e-3 when a value is
rounded twice, e.g. a matmul output re-rounded on its way to the next op). Rounding errors of the ~20 rounded layers
add up roughly like a random walk, ~sqrt(20) * 4e-3 ~ 2e-2 relative (L2 over the output). So outputs must agree to
3e-2 (measured: 6e-3 for resnet18_gmamba, 3e-3 for vgamba). Backward rounds about twice as many ops and the loss
squares the output, so all gradients together (one L2 over every parameter's gradient) must agree to 1e-1
(measured: 2e-2 for both). Single gradient tensors are not bounded one by one: some are near-cancelling sums (the
bias of a 2-way softmax has a gradient that sums to ~0), where any rounding is a large relative change.
"""
import pickle

import pytest
import safetensors.torch
import timm
import torch

import gmamba_zoo
from gmamba_zoo import frequency_split, selective_scan_fn
from gmamba_zoo.hub import CheckpointMismatchError, load_checkpoint_into, read_checkpoint
from gmamba_zoo.ops import selective_scan_ref

# the smallest model of each family, with the GMamba blocks active (layer scale 0.1) and a tiny vGamba
TINY = {
    'resnet18_gmamba': dict(gmamba_kwargs=dict(layer_scale_init_value=0.1), num_classes=10),
    'vgamba_b': dict(widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=8, num_classes=10),
}


pytestmark = pytest.mark.usefixtures('one_thread')


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# ---------------------------------------------------------------- bad input

BAD_INPUTS = [
    (lambda: torch.randn(3, 64, 64), ValueError, r'\[B, C, H, W\].*3-D.*unsqueeze\(0\)'),
    (lambda: torch.randn(1, 2, 3, 64, 64), ValueError, r'\[B, C, H, W\].*5-D.*flatten\(0, 1\)'),
    (lambda: torch.randn(1, 1, 64, 64), ValueError, r'in_chans=3.*1 channels'),
    (lambda: torch.randn(1, 64, 64, 3), ValueError, r'in_chans=3.*channels-last'),
    (lambda: torch.randn(1, 3, 16, 64), ValueError, r'16 x 64.*H, W >= 32.*stride'),
    (lambda: torch.randn(1, 3, 64, 31), ValueError, r'64 x 31.*H, W >= 32'),
    (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, r'floating-point.*torch.uint8'),
    (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.int64), TypeError, r'floating-point.*torch.int64'),
    (lambda: torch.randn(1, 3, 64, 64, dtype=torch.float64), TypeError, r'float64.*parameters\' dtype torch.float32'),
]
IDS = ['3d', '5d', 'channels', 'channels_last', 'too_small_h', 'too_small_w', 'uint8', 'int64', 'float64']


@pytest.fixture(scope='module')
def small_models():
    """Each family's smallest model, full and features_only. The checks run before any layer, so the big ones are
    built on the meta device (no weights); vGamba (tiny widths) and ResNet-18 are real."""
    models = {}
    with torch.device('meta'):
        for name in ('convnext_t_gmamba', 'swin_t_gmamba'):
            models[name] = (timm.create_model(name), timm.create_model(name, features_only=True))
    models['resnet18_gmamba'] = (timm.create_model('resnet18_gmamba'),
                                 timm.create_model('resnet18_gmamba', features_only=True))
    models['vgamba_b'] = (timm.create_model('vgamba_b', **TINY['vgamba_b']),
                          timm.create_model('vgamba_b', features_only=True, **TINY['vgamba_b']))
    return models


@pytest.mark.parametrize('make, exc, pattern', BAD_INPUTS, ids=IDS)
@pytest.mark.parametrize('name', ['resnet18_gmamba', 'convnext_t_gmamba', 'swin_t_gmamba', 'vgamba_b'])
def test_bad_input_is_named(small_models, name, make, exc, pattern):
    for model in small_models[name]:
        with pytest.raises(exc, match=pattern) as info:
            model(make())
        assert str(info.value).startswith(name)


def test_every_zoo_model_has_the_checks(small_models):
    for name in gmamba_zoo.list_models():
        if name.startswith('vgamba'):  # vGamba does not build on the meta device; real tiny ones
            model = timm.create_model(name, **dict(TINY['vgamba_b'], layers=(1, 1, 1, 1)))
        else:
            with torch.device('meta'):
                model = timm.create_model(name)
        assert model.input_spec.in_chans == 3 and model.input_spec.min_size == 32, (name, model.input_spec)
    for name, (_, feats) in small_models.items():
        assert feats.input_spec.in_chans == 3 and feats.input_spec.min_size == 32, (name, feats.input_spec)
    with torch.device('meta'):
        partial = timm.create_model('resnet18_gmamba', features_only=True, out_indices=(0, 1), in_chans=1)
    assert (partial.input_spec.in_chans, partial.input_spec.min_size) == (1, 4)  # stride of the maps it returns


def test_good_input_passes_and_models_still_pickle(small_models):
    model = small_models['resnet18_gmamba'][0].eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 45)).shape == (1, 1000)  # exactly the stride, odd sizes
        with torch.autocast('cpu', dtype=torch.bfloat16):  # float32 input into autocast: no dtype complaint
            model(torch.randn(1, 3, 32, 32))
    clone = pickle.loads(pickle.dumps(model))
    with pytest.raises(ValueError, match='in_chans=3'):
        clone(torch.randn(1, 4, 32, 32))


def test_checks_do_not_break_jit_trace():
    """fvcore counts FLOPs through torch.jit.trace: the hook must stay out of the traced graph."""
    model = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 0)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        assert torch.allclose(traced(x), model(x), atol=1e-5)


# ---------------------------------------------------------------- a checkpoint for another model

@pytest.fixture(scope='module')
def other_checkpoint(tmp_path_factory):
    """A safetensors file of a (tiny) vGamba: another model for every GMamba variant."""
    path = tmp_path_factory.mktemp('ckpt') / 'vgamba_tiny.safetensors'
    safetensors.torch.save_file(timm.create_model('vgamba_b', **TINY['vgamba_b']).state_dict(), str(path))
    return path


def test_timm_file_overlay_with_another_models_checkpoint(other_checkpoint):
    with pytest.raises(RuntimeError, match=r'does not match resnet18_gmamba.*Missing keys.*Unexpected keys'):
        timm.create_model('resnet18_gmamba', pretrained=True, pretrained_cfg_overlay=dict(file=str(other_checkpoint)))


def test_load_checkpoint_into_another_model(other_checkpoint):
    model = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 0))
    with pytest.raises(CheckpointMismatchError, match=r'does not fit resnet18_gmamba.*Missing keys.*another model'):
        load_checkpoint_into(model, read_checkpoint(other_checkpoint), source=str(other_checkpoint))


def test_vgamba_refuses_another_models_checkpoint(tmp_path):
    """A GMamba ResNet-18 checkpoint is neither a vGamba nor a ResNet-50/101: an error naming the keys, not a warning."""
    path = tmp_path / 'resnet18_gmamba.safetensors'
    safetensors.torch.save_file(timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 0)).state_dict(), str(path))
    with pytest.raises(RuntimeError, match=r'neither a vGamba checkpoint nor a timm ResNet-50/101.*layer1\.0\.conv3'):
        timm.create_model('vgamba_b', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY['vgamba_b'])


# ---------------------------------------------------------------- mixed precision

@pytest.mark.parametrize('name', list(TINY))
def test_bf16_autocast_cpu_close_to_fp32(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **TINY[name]).eval()  # eval: BatchNorm uses the same statistics in both runs
    x = torch.randn(2, 3, 64, 64)
    results = []
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            y = model(x)
        y.float().square().mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((y.detach(), grads))
    (y32, g32), (y16, g16) = results
    assert y16.dtype == torch.bfloat16 and y32.dtype == torch.float32
    assert torch.isfinite(y16).all() and torch.isfinite(g16).all()
    assert g16.numel() == g32.numel()
    assert rel(y16, y32) < 3e-2, rel(y16, y32)
    assert rel(g16, g32) < 1e-1, rel(g16, g32)


def test_fft_is_a_float32_island_under_autocast():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low, high = frequency_split(x)
    assert low.dtype == high.dtype == torch.float32
    ref_low, ref_high = frequency_split(x.float())
    assert torch.equal(low, ref_low) and torch.equal(high, ref_high)


def test_scan_is_a_float32_island_under_autocast():
    g = torch.Generator().manual_seed(0)
    b, d, n, L = 1, 4, 3, 64
    u, delta = (torch.randn(b, d, L, generator=g).bfloat16() for _ in range(2))
    B, C = (torch.randn(b, n, L, generator=g).bfloat16() for _ in range(2))
    A, D = -torch.rand(d, n, generator=g) - 0.5, torch.ones(d)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = selective_scan_fn(u, delta, A, B, C, D, delta_softplus=True)
    y32 = selective_scan_fn(u.float(), delta.float(), A, B.float(), C.float(), D, delta_softplus=True)
    ref = selective_scan_ref(u.float(), delta.float(), A, B.float(), C.float(), D, delta_softplus=True)
    torch.testing.assert_close(y32, ref, rtol=1e-5, atol=1e-5)
    # bfloat16 inputs under autocast: the scan ran in float32 over all 64 steps and only its result was rounded
    assert y.dtype == torch.bfloat16 and torch.equal(y, y32.to(torch.bfloat16))


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
def test_torch_compile_matches_eager():
    """aot_eager traces the whole model with AOTAutograd (as inductor does) without generating code, fullgraph=True:
    the input checks and the scan op make no graph break. Inductor timings: scripts/bench_compile.py."""
    torch.manual_seed(0)
    model = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 1), num_classes=10,
                              gmamba_kwargs=dict(layer_scale_init_value=0.1)).eval()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    y_eager = model(x)
    (gx_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
    y_comp = compiled(x)
    (gx_comp,) = torch.autograd.grad(y_comp.square().sum(), x)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx_comp, gx_eager, rtol=1e-4, atol=1e-6)


def _counting_compile(model: torch.nn.Module, graphs: list, **kwargs) -> torch.nn.Module:
    """torch.compile with a backend that records each graph it is handed and runs it as traced (no code generated)."""
    def counting(gm: torch.fx.GraphModule, example_inputs) -> object:
        graphs.append(gm)
        return gm.forward
    return torch.compile(model, backend=counting, fullgraph=True, **kwargs)


@pytest.mark.slow  # dynamo traces whole models: tens of seconds each
@pytest.mark.parametrize('name', ['resnet18_gmamba', 'vgamba_b'])
def test_torch_compile_dynamic_compiles_once(name):
    """dynamic=True: one graph serves other batch sizes, heights and widths, also across the size at which a GSSM
    block's frequency encoding changes between its folded and layer-by-layer form (a dynamic graph takes the latter).
    The sizes avoid what PyTorch specialises in any model: batch 1 (its 0/1 specialisation) and a first input with
    H == W (duck sizing)."""
    from gmamba_zoo.layers import FrequencyEncoding
    from gmamba_zoo.layers.gssm import fold_pays_off
    torch.manual_seed(0)
    kwargs = dict(TINY[name], num_classes=10)
    if name == 'resnet18_gmamba':
        kwargs['gmamba_depths'] = (1, 1, 0, 0)
    model = timm.create_model(name, **kwargs).eval()
    folds = set()
    for m in model.modules():
        if isinstance(m, FrequencyEncoding):
            m.register_forward_pre_hook(lambda mod, args: None if torch.compiler.is_compiling()
                                        else folds.add((id(mod), bool(fold_pays_off(args[0])))))
    graphs = []
    compiled = _counting_compile(model, graphs, dynamic=True)
    with torch.no_grad():
        for shape in [(2, 3, 64, 96), (3, 3, 96, 64), (5, 3, 160, 128)]:
            x = torch.randn(*shape)
            y = compiled(x)
            torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
            assert len(graphs) == 1, f'recompiled at {shape}'
    if name == 'resnet18_gmamba':  # the sizes straddle the fold threshold of some block
        assert any((i, True) in folds and (i, False) in folds for i, _ in folds), folds


@pytest.mark.parametrize('name, kwargs', [
    ('convnext_t_gmamba', dict(gmamba_depths=(1, 0, 0, 1), depths=(1, 1, 1, 1))),
    ('swin_t_gmamba', dict(gmamba_depths=(1, 0, 0, 0), depths=(2, 1, 1, 1))),
], ids=['convnext', 'swin'])
@pytest.mark.slow  # dynamo traces whole models: tens of seconds each
def test_torch_compile_fullgraph_convnext_and_swin(name, kwargs):
    """The other two families in one graph with dynamic shapes (timm's blocks around ours included)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, gmamba_kwargs=dict(layer_scale_init_value=0.1), **kwargs).eval()
    graphs = []
    compiled = _counting_compile(model, graphs, dynamic=True)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    assert len(graphs) == 1


@pytest.mark.slow  # dynamo traces whole models: tens of seconds each
def test_torch_compile_dynamic_recompiles_as_the_plain_backbone():
    """Sizes at which PyTorch specialises any model (a first batch of 1, a first square input): resnet18_gmamba
    compiles exactly as many graphs as timm's resnet18, i.e. its own code adds no guard."""
    counts = {}
    gmamba = dict(TINY['resnet18_gmamba'], gmamba_depths=(1, 1, 0, 0))
    for name, kwargs in [('resnet18', {}), ('resnet18_gmamba', gmamba)]:
        torch.manual_seed(0)
        model = timm.create_model(name, **dict(kwargs, num_classes=10)).eval()
        graphs = []
        compiled = _counting_compile(model, graphs, dynamic=True)
        counts[name] = []
        with torch.no_grad():
            for shape in [(1, 3, 64, 64), (2, 3, 96, 80), (3, 3, 96, 96), (4, 3, 160, 128)]:
                x = torch.randn(*shape)
                torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
                counts[name].append(len(graphs))
    assert counts['resnet18_gmamba'] == counts['resnet18'], counts
    assert counts['resnet18'][-1] > 1  # the sequence does make PyTorch recompile


_FRESH_COMPILE = """
import timm, torch, gmamba_zoo
model = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 0), num_classes=10,
                          gmamba_kwargs=dict(layer_scale_init_value=0.1)).eval()
x = torch.randn(2, 3, 64, 96)
with torch.no_grad():
    y = torch.compile(model, backend='eager', fullgraph=True)(x)  # the first scan of the process, while compiling
    torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
    ep = torch.export.export(timm.create_model('vgamba_b', widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=8,
                                               num_classes=10).eval(), (x,))
print('ok')
"""


@pytest.mark.slow  # dynamo traces whole models: tens of seconds each
def test_torch_compile_and_export_in_a_fresh_process():
    """The first scan of a process made inside torch.compile(fullgraph=True) or torch.export: the backend's first
    probe (a lazy import under a lock) is taken out of the traced code instead of breaking the graph."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, '-c', _FRESH_COMPILE], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith('ok'), res.stderr[-3000:]

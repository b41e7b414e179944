"""Tracing and export (docs/export.md): torch.fx, torchvision's feature extractor, torch.export, ONNX, TorchScript.

Every model's zero-initialised tensors (layer scales, the last BN of a bottleneck, scalar gates) are made non-zero
first, so that the GMamba and Gamba blocks take part in what is compared. By default one model per family runs, the
ONNX exports with fewer blocks (each block's scan adds to the export time, not to what is tested);
``GMAMBA_ZOO_SLOW_TESTS=1`` runs every registered model at its full depth.
"""
import os

import pytest
import timm
import torch
import torch.fx
from timm.layers import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import gmamba_zoo
from gmamba_zoo.export import build_model, export_onnx, export_program
from gmamba_zoo.export.onnx import check_sizes

SLOW = os.environ.get('GMAMBA_ZOO_SLOW_TESTS') == '1'
FAMILIES = ['resnet18_gmamba', 'convnext_t_gmamba', 'swin_t_gmamba', 'vgamba_b']
MODELS = gmamba_zoo.list_models() if SLOW else FAMILIES
# Fewer blocks for the default ONNX tests (each block's scan adds about 10 s to an export): one GMamba block, in the
# first stage (the longest sequence) or the last, two Swin blocks per stage (one with shifted windows), one bottleneck
# per vGamba stage.
SHALLOW = {
    'resnet18_gmamba': dict(gmamba_depths=(1, 0, 0, 0)),
    'convnext_t_gmamba': dict(gmamba_depths=(0, 0, 0, 1)),
    'swin_t_gmamba': dict(gmamba_depths=(1, 0, 0, 0), depths=(2, 2, 2, 2)),
    'vgamba_b': dict(layers=(1, 1, 1, 1)),
}
SIZE = 64  # twice the stride: the smallest size an exported program takes


def _active(model: torch.nn.Module) -> torch.nn.Module:
    """Fill every all-zero parameter (layer scales, zero-init BNs, gates) with small random values."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _fx_model(model: torch.nn.Module, train: bool = False) -> torch.nn.Module:
    """timm's tests/test_models.py ``_create_fx_model``: the graph's output nodes, eval or train, through torchvision's
    extractor with timm's leaf modules and functions."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes, train_return_nodes = [eval_nodes[-1]], [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        train_return_nodes = [train_nodes[-graph_node_names.index(n)] for n in output_node_names]
    return create_feature_extractor(model, train_return_nodes=train_return_nodes, eval_return_nodes=eval_return_nodes,
                                    tracer_kwargs=tracer_kwargs)


# --------------------------------------------------------------------------------------------------------------------
# torch.fx
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore:NOTE. The nodes obtained by tracing')
@pytest.mark.parametrize('name', [n if n == 'resnet18_gmamba' else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS])
def test_fx_forward_and_backward(name):
    """timm's test_model_forward_fx (bit-exact) and test_model_backward_fx (every parameter gets a gradient)."""
    model = _active(timm.create_model(name)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        expected = model(x)
        got = torch.cat(tuple(_fx_model(model)(x).values()))
    assert torch.equal(got, expected)

    model = _active(timm.create_model(name, num_classes=42)).train()
    fx_model = _fx_model(model, train=True)
    out = torch.cat(tuple(fx_model(torch.randn(2, 3, SIZE, SIZE)).values()))
    out.mean().backward()
    assert out.shape == (2, 42) and not out.isnan().any()
    missing = [n for n, p in fx_model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'


def _live_kwargs(name: str) -> dict:
    """Build arguments that make the blocks take part from initialisation (no zero layer scales or BNs), so that two
    wrappers built from the same seed hold the same, active weights."""
    if name.startswith('vgamba'):
        return dict(zero_init_last=False)
    return dict(gmamba_kwargs=dict(layer_scale_init_value=0.1))


@pytest.mark.filterwarnings('ignore:NOTE. The nodes obtained by tracing')
@pytest.mark.parametrize('name', MODELS)
def test_features_only_fx(name):
    """``features_only=True, feature_cls='fx'`` returns what ``features_only=True`` returns (NCHW for Swin too)."""
    torch.manual_seed(0)
    eager = timm.create_model(name, features_only=True, **_live_kwargs(name)).eval()
    torch.manual_seed(0)
    graph = timm.create_model(name, features_only=True, feature_cls='fx', **_live_kwargs(name)).eval()
    x = torch.randn(2, 3, SIZE + 32, SIZE)
    with torch.inference_mode():
        expected, got = eager(x), graph(x)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert g.shape == e.shape and torch.equal(g, e)


def test_torchvision_feature_extractor():
    """torchvision's create_feature_extractor, without timm's tracer arguments, returns the stage outputs eager
    computes (forward_intermediates)."""
    for name, nodes in [('resnet18_gmamba', ['layer1', 'layer2', 'layer3', 'layer4']),
                        ('vgamba_b', ['layer1', 'layer2', 'layer3', 'layer4'])]:
        model = _active(timm.create_model(name)).eval()
        extractor = create_feature_extractor(model, return_nodes={n: n for n in nodes})
        x = torch.randn(1, 3, SIZE + 32, SIZE + 32)
        with torch.inference_mode():
            expected = model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
            got = extractor(x)
        for n, e in zip(nodes, expected):
            assert torch.equal(got[n], e), (name, n)


def test_fx_leaves_keep_checks_and_scan_as_calls():
    """The scan, the FFT island and the input checks are single call nodes of a traced graph, not traced through."""
    graph = torch.fx.symbolic_trace(gmamba_zoo.GMambaBlock(32)).graph
    targets = {getattr(n.target, '__name__', '') for n in graph.nodes if n.op == 'call_function'}
    assert {'selective_scan_fn', 'low_band', 'check_block_input'} <= targets
    with pytest.raises(ValueError, match='GMambaBlock: expected'):
        torch.fx.symbolic_trace(gmamba_zoo.GMambaBlock(32))(torch.randn(1, 16, 8, 8))


# --------------------------------------------------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_torch_export_dynamic_batch_height_width(name):
    model = _active(timm.create_model(name)).eval()
    program = export_program(model, img_size=(SIZE, SIZE))
    ops = {str(n.target) for n in program.graph.nodes if n.op == 'call_function'}
    assert 'gmamba_zoo.selective_scan.default' in ops  # the scan stays one op
    runner = program.module()
    with torch.no_grad():
        for shape in [(1, 3, SIZE, SIZE + 7), (3, 3, 97, 131)]:
            x = torch.randn(shape)
            assert _rel(runner(x), model(x)) < 1e-4, shape


def test_plain_torch_export_call():
    """No helper needed: torch.export.export with torch's own Dim objects (Swin: its window arithmetic too)."""
    from torch.export import Dim
    model = _active(timm.create_model('swin_t_gmamba', gmamba_depths=(1, 0, 0, 0))).eval()
    dims = {0: Dim('b', min=1, max=16), 2: Dim('h', min=64, max=512), 3: Dim('w', min=64, max=512)}
    program = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes=(dims,))
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        assert _rel(program.module()(x), model(x)) < 1e-4


# --------------------------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('features_only', [False, True], ids=['logits', 'features'])
@pytest.mark.slow
@pytest.mark.parametrize('name', MODELS)
def test_onnx_dynamic_in_onnxruntime(name, features_only, tmp_path):
    """The graph runs in onnxruntime at two sizes other than the export size, within 1e-4 of PyTorch's outputs."""
    if not SLOW and features_only != (name in ('convnext_t_gmamba', 'vgamba_b')):
        pytest.skip('default run: logits for ResNet and Swin, features for ConvNeXt and vGamba')
    kwargs = {} if SLOW else SHALLOW[name]
    model = _active(build_model(name, features_only=features_only, **kwargs))
    res = export_onnx(model, tmp_path / f'{name}.onnx', img_size=(SIZE, SIZE), optimize=False)
    assert len(res.errors) == 2 and all(max(e) < 1e-4 for e in res.errors.values())
    assert res.output_names == ([f'features_{i}' for i in range(len(model.feature_info.out_indices))]
                                if features_only else ['logits'])


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_plain_torch_onnx_export(tmp_path):
    """torch.onnx.export itself: the dynamo exporter gives the same graph; the TorchScript one names export_onnx."""
    model = _active(build_model('resnet18_gmamba', gmamba_depths=(0, 0, 0, 1))).eval()
    with pytest.raises(Exception, match='export_onnx'):
        torch.onnx.export(model, (torch.randn(1, 3, SIZE, SIZE),), str(tmp_path / 'legacy.onnx'), dynamo=False)


@pytest.mark.slow
def test_export_with_checkpoint_cli(tmp_path):
    """``gmamba-zoo export --checkpoint --features-only``: the full model's checkpoint loads into the extractor."""
    from gmamba_zoo.cli import main
    from gmamba_zoo.export.onnx import check_onnx
    from gmamba_zoo.hub.checkpoint import save_safetensors

    class Intermediates(torch.nn.Module):  # the checkpointed model's own feature maps
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.forward_intermediates(x, indices=[0, 1, 2, 3, 4], intermediates_only=True)

    model = _active(timm.create_model('resnet18_gmamba', gmamba_depths=(0, 0, 0, 1))).eval()
    ckpt = save_safetensors(model, tmp_path / 'ckpt.safetensors')
    out = tmp_path / 'f.onnx'
    assert main(['export', 'resnet18_gmamba', '--out', str(out), '--checkpoint', str(ckpt), '--features-only',
                 '--model-args', '{"gmamba_depths": [0, 0, 0, 1]}', '--img-size', '64', '64', '--no-optimize',
                 '--no-check']) == 0
    errors = check_onnx(out, Intermediates(model), check_sizes((SIZE, SIZE), SIZE))
    assert all(len(e) == 5 and max(e) < 1e-4 for e in errors.values())
    # standard operators only (no custom domain), symbolic batch, height and width
    import onnx
    proto = onnx.load(str(out))
    assert {o.domain for o in proto.opset_import} <= {'', 'ai.onnx'}
    assert all(n.domain in ('', 'ai.onnx') for n in proto.graph.node)
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]


# --------------------------------------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning', 'ignore:.*is deprecated:FutureWarning')
@pytest.mark.parametrize('name', MODELS)
def test_jit_trace(name):
    model = _active(timm.create_model(name)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        assert _rel(traced(x), model(x)) < 1e-5

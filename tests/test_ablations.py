"""The paper's ablations as block options (docs/ablations.md): each builds, runs, starts as the identity, has the
parameters `gmamba-zoo ablations` reports, is refused when malformed, and passes the gradient criterion only where it
is global; scan directions are scanned in their orders, counted by the FLOP counter and exported."""
import copy
import math

import pytest
import timm
import torch

import gmamba_zoo  # noqa: F401
from gmamba_zoo.analysis.ablations import (
    ABLATIONS, Ablation, added_params, block_criterion, component_params, direction_candidates, measure, report,
)
from gmamba_zoo.flops.counter import count
from gmamba_zoo.layers import GMambaBlock, GSSMMixer, SelectiveSSM
from gmamba_zoo.layers.gssm import SCAN_ORDERS, low_band_matrix

pytestmark = pytest.mark.usefixtures('one_thread')

IDS = [a.name for a in ABLATIONS]
KWARGS = [dict(a.kwargs) for a in ABLATIONS]
GLOBAL = {'FEM+SSM (no FGMM)', 'DFT+FGMM+SSM (no adaptive FEM)', 'GSSM, one-way scan (default)',
          'GSSM, bidirectional scan', 'GSSM, four-way scan', 'SSM only, four-way scan'}
CONVNEXT_S_WIDTHS = [96, 96, 192, 192, 384, 384, 768]


@pytest.mark.parametrize('kwargs', KWARGS, ids=IDS)
def test_option_builds_runs_and_starts_as_identity(kwargs):
    x = torch.randn(2, 16, 9, 10)
    assert torch.equal(GMambaBlock(16, **kwargs)(x), x)  # layer scale 0: the identity, as the default block
    block = GMambaBlock(16, layer_scale_init_value=0.5, **kwargs)
    x.requires_grad_(True)
    y = block(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0
    missing = [n for n, p in block.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    for name, p in block.named_parameters():  # each direction's own parameters take part
        if 'extra_directions' in name and name.endswith('dt_proj.weight'):
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('kwargs', [dict(fgmm=False), dict(adaptive_fem=False), dict(scan_directions=4)],
                         ids=['fem_ssm', 'dft_fgmm', 'four_way'])
def test_option_in_a_model_at_64px(kwargs):
    """Through timm.create_model's gmamba_kwargs: the blocks carry the option; features come out at every stage."""
    model = timm.create_model('convnext_t_gmamba', gmamba_depths=(1, 0, 0, 1), gmamba_kwargs=kwargs,
                              features_only=True)
    blocks = [m for m in model.modules() if isinstance(m, GMambaBlock)]
    assert len(blocks) == 2
    assert all((b.mixer.fgmm is None) == (kwargs.get('fgmm') is False) for b in blocks)
    assert all(b.mixer.scan_directions == kwargs.get('scan_directions', 1) for b in blocks)
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def _fem(m: int) -> int:
    """FEM's parameters from its layer shapes: two band Linear(m, m), two scalar weights, Linear(3m, 2m), Linear(2m, m)."""
    return 2 * (m * m + m) + 2 + (3 * m * 2 * m + 2 * m) + (2 * m * m + m)


def _fgmm(m: int) -> int:
    """FGMM's: enhance m -> m/4 -> m, select m -> m/4 -> 2, importance m -> m/2 -> 1 (all with bias), the ratio."""
    q, h = m // 4, m // 2
    return (m * q + q + q * m + m) + (m * q + q + q * 2 + 2) + (m * h + h + h + 1) + 1


def _blocks(kwargs) -> int:
    with torch.device('meta'):  # shapes only
        return sum(sum(p.numel() for p in GMambaBlock(w, **kwargs).parameters()) for w in CONVNEXT_S_WIDTHS)


@pytest.fixture(scope='module')
def measured():
    """What ``gmamba-zoo ablations --no-flops`` measures, less the criterion (tested below), for three rows (each
    builds convnext_s_gmamba, about 2 s even on the meta device)."""
    names = ('SSM only', 'FEM+SSM (no FGMM)', 'GSSM, four-way scan')
    return measure(flops=False, criterion_sizes=(), ablations=[a for a in ABLATIONS if a.name in names])


def test_parameter_counts_the_script_reports(measured):
    """The report's added params (``added_params``, timm models) against the blocks alone, and the deltas against
    hand counts from the layer shapes."""
    for row in measured['rows']:
        assert row['added_params'] == _blocks(row['kwargs']), row['name']
    base = added_params({})
    assert base == _blocks({})
    ms = [w // 2 for w in CONVNEXT_S_WIDTHS]
    dt_proj = [math.ceil(w / 16) * (w // 2) + w // 2 for w in CONVNEXT_S_WIDTHS]
    assert base - _blocks(dict(fgmm=False)) == sum(_fgmm(m) for m in ms)
    assert base - _blocks(dict(adaptive_fem=False)) == sum(_fem(m) for m in ms)
    assert base - _blocks(dict(frequency_path=False)) == sum(_fem(m) + _fgmm(m) for m in ms)
    four = _blocks(dict(scan_directions=4)) - base
    assert four == 3 * sum(_fem(m) + d for m, d in zip(ms, dt_proj))
    assert round(four / 1e6, 2) == 7.44  # the paper's Table 6: 78.50 - 71.06


def test_per_direction_arithmetic():
    parts = component_params(CONVNEXT_S_WIDTHS)
    assert sum(parts.values()) == added_params({})
    hits = direction_candidates(parts, 78.50 - 71.06)
    assert ('fem', 'dt_proj') in [s for s, _ in hits]  # the set scan_directions gives each extra direction
    assert all('fem' in s for s, _ in hits)


@pytest.mark.parametrize('kwargs,exc,match', [
    (dict(scan_directions=3), ValueError, r"scan_directions must be one of \(1, 2, 4\), got 3"),
    (dict(scan_directions=True), TypeError, r'scan_directions must be an int'),
    (dict(scan_directions=2.0), TypeError, r'scan_directions must be an int'),
    (dict(fgmm='no'), TypeError, r'fgmm must be True or False'),
    (dict(adaptive_fem=0), TypeError, r'adaptive_fem must be True or False'),
    (dict(fgmm=False, adaptive_fem=False), ValueError, r'leaves no front end.*frequency_path'),
    (dict(frequency_path=False, fgmm=False), ValueError, r'fgmm.*=False has no meaning with.*frequency_path'),
    (dict(frequency_path=False, adaptive_fem=False), ValueError, r'adaptive_fem.*=False has no meaning'),
])
def test_bad_options_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GMambaBlock(16, **kwargs)
    with pytest.raises(exc, match=match):
        GSSMMixer(16, **kwargs)
    with pytest.raises(exc, match=r"gmamba_kwargs\['"):  # named as the user passed it, before anything is built
        timm.create_model('convnext_t_gmamba', gmamba_kwargs=kwargs)


@pytest.mark.parametrize('ab', ABLATIONS, ids=IDS)
def test_only_global_configurations_pass_the_criterion(ab):
    assert block_criterion(ab.kwargs, size=16).holds == (ab.name in GLOBAL)


def test_fem_alone_misses_positions_where_the_low_band_has_zeros():
    """At n = 2 (mod 4) the default low band's kernel is 0 at every even offset, so FEM + a causal scan misses those
    positions (docs/ablations.md); FGMM's global averages make the full block global there all the same."""
    kernel = low_band_matrix(14, 0.25)[0]
    assert torch.all(kernel[2::2].abs() < 1e-6) and torch.all(kernel[1::2].abs() > 1e-2)
    assert not block_criterion(dict(fgmm=False), size=14).holds
    assert block_criterion({}, size=14).holds


def _order_index(h: int, w: int, order: str) -> torch.Tensor:
    """Raster positions in the order ``order`` scans them, built independently of the layer's reshapes."""
    grid = torch.arange(h * w).reshape(h, w)
    idx = grid.t().flatten() if order.startswith('column') else grid.flatten()
    return idx.flip(0) if order.endswith('reverse') else idx


@pytest.mark.parametrize('directions', [2, 4])
def test_directions_scan_in_their_orders_and_sum(directions):
    """Scan-only K-way mixer == the sum over directions of a one-way scan of the reordered sequence, each with that
    direction's dt_proj, put back in raster order."""
    mixer = GSSMMixer(16, frequency_path=False, scan_directions=directions)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    h, w = 5, 7
    xs, z = torch.randn(2, 8, h * w), torch.randn(2, 8, h * w)
    got = mixer.ssm(xs, z, (h, w))
    want = torch.zeros_like(got)
    projs = [mixer.dt_proj] + [d.dt_proj for d in mixer.extra_directions.values()]
    for order, proj in zip(SCAN_ORDERS[:directions], projs):
        one = copy.deepcopy(mixer)
        one.dt_proj = proj
        idx = _order_index(h, w, order)
        y = SelectiveSSM.ssm(one, xs[..., idx], z[..., idx], (h * w,))
        want[..., idx] += y
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_one_way_weights_load_into_a_multi_way_block():
    """The shared parameters keep their names: a one-way checkpoint fills all but the extra directions."""
    one, four = GMambaBlock(16).state_dict(), GMambaBlock(16, scan_directions=4)
    missing, unexpected = four.load_state_dict(one, strict=False)
    assert not unexpected and missing and all(k.startswith('mixer.extra_directions.') for k in missing)
    assert sorted({k.split('.')[2] for k in missing}) == sorted(SCAN_ORDERS[1:])


def test_flop_counter_counts_every_direction():
    one = count(GMambaBlock(16, layer_scale_init_value=0.5), (1, 16, 12, 12))
    four = count(GMambaBlock(16, layer_scale_init_value=0.5, scan_directions=4), (1, 16, 12, 12))
    scan = next(k for k in one['by_operator'] if 'selective_scan' in k)
    assert four['by_operator'][scan] == 4 * one['by_operator'][scan] > 0
    assert not four['skipped'] and four['flops'] > one['flops']
    fft = sum(v for k, v in four['by_operator'].items() if 'fft' in k)
    assert fft == sum(v for k, v in one['by_operator'].items() if 'fft' in k)  # the directions share one DFT


def test_four_way_block_fx_trace():
    """timm's FX tracer (torchvision's feature extractor with timm's leaves) traces the directions' reorderings."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    block = GMambaBlock(16, layer_scale_init_value=0.5, scan_directions=4).eval()
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    _, nodes = get_graph_node_names(block, tracer_kwargs=tracer_kwargs)
    fx = create_feature_extractor(block, return_nodes=[nodes[-1]], tracer_kwargs=tracer_kwargs)
    x = torch.randn(2, 16, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx(x).values())), block(x))


@pytest.mark.slow
def test_four_way_model_torch_export_dynamic_batch_height_width():
    """About 35 s: torch.export with a dynamic batch, height and width, all directions in one scan op."""
    from gmamba_zoo.export import export_program
    model = timm.create_model('resnet18_gmamba', gmamba_depths=(0, 0, 0, 1),
                              gmamba_kwargs=dict(scan_directions=4, layer_scale_init_value=0.5)).eval()
    program = export_program(model, img_size=(64, 64))
    ops = [str(n.target) for n in program.graph.nodes if n.op == 'call_function']
    assert ops.count('gmamba_zoo.selective_scan.default') == 1
    with torch.no_grad():
        for shape in [(1, 3, 64, 71), (3, 3, 97, 131)]:
            x = torch.randn(shape)
            torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_four_way_model_onnx_in_onnxruntime(tmp_path):
    """The ONNX forms (matrix low band, parallel scan) with the directions' flips and transposes, in onnxruntime."""
    from gmamba_zoo.export import build_model, export_onnx
    model = build_model('convnext_t_gmamba', gmamba_depths=(0, 0, 0, 1),
                        gmamba_kwargs=dict(scan_directions=4, layer_scale_init_value=0.5))
    res = export_onnx(model, tmp_path / 'four_way.onnx', img_size=(64, 64), optimize=False)
    assert len(res.errors) == 2 and all(max(e) < 1e-4 for e in res.errors.values())


def test_report_lists_every_row_beside_the_paper(measured):
    text = report(measured, 'python scripts/ablations.py', dict(cpu='cpu', cores=1, torch_threads=1, torch='x',
                                                                date='today'))
    for ab in ABLATIONS:
        if ab.name not in [r['name'] for r in measured['rows']]:
            continue
        line = next(line for line in text.splitlines() if line.startswith(f'| {ab.name} |'))
        ours = next(r['added_params'] for r in measured['rows'] if r['name'] == ab.name)
        assert f'| {ours / 1e6:.3f} | {ab.paper_added_m:.2f} |' in line
    assert '7.44' in text and 'fem + dt_proj' in text
    assert Ablation('x').paper_added_m is None

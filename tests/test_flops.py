"""FLOP handles against hand counts, the skipped-op check, the report files, and the benchmark's output fields."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gmamba_zoo
from gmamba_zoo import GMambaBlock, selective_scan_fn
from gmamba_zoo.bench import models as bench
from gmamba_zoo.cli import main as cli_main
from gmamba_zoo.ops import resolve_scan_backend
from gmamba_zoo.flops import counter as flops
from gmamba_zoo.flops import SkippedOpsError, count


class Fn(nn.Module):
    """A function (or module) as a module; ``drop_batch`` undoes the batch count() adds to a 3-D input size."""

    def __init__(self, fn, drop_batch: bool = False):
        super().__init__()
        self.fn, self.drop_batch = fn, drop_batch
        self.w = nn.Parameter(torch.zeros(1))  # count() reads the device from a parameter

    def forward(self, x):
        return self.fn(x[0] if self.drop_batch else x)


def Fn3(fn):
    return Fn(fn, drop_batch=True)


def ops(fn, shape, **kw):
    module, shape = (Fn3(fn), (1, *shape)) if len(shape) == 3 else (Fn(fn), shape)
    return count(module, shape, **kw)['by_operator']


@pytest.mark.parametrize('with_d, with_z', [(True, True), (False, False), (True, False)])
def test_scan_handle(with_d, with_z):
    b, d, n, length = 2, 6, 4, 15

    def fn(x):  # x: [B, D, L]
        bc = x[:, :n].sigmoid()
        return selective_scan_fn(x, x, -torch.ones(d, n), bc, bc, torch.ones(d) if with_d else None,
                                 x if with_z else None, delta_softplus=True)
    expected = 9 * b * length * d * n + (b * d * length if with_d else 0) + (b * d * length if with_z else 0)
    assert ops(fn, (b, d, length))['selective_scan'] == expected


def test_fft_handles():
    shape = (2, 3, 5, 6)  # numel 180; 2-D transform n = 30 -> ceil(log2 30) = 5; 1-D over W: n = 6 -> 3
    got = ops(lambda x: torch.fft.irfft2(torch.fft.rfft2(x), s=x.shape[-2:]) + torch.fft.rfft(x).real.sum(), shape)
    assert got['fft_rfft2'] == 180 * 5
    assert got['fft_irfft2'] == 180 * 5  # counted on the real output
    assert got['fft_rfft'] == 180 * 3
    got = ops(lambda x: torch.fft.fft2(x.to(torch.complex64), dim=(1, 2)).real, shape)  # n = 3 * 5 = 15 -> 4
    assert got['fft_fft2'] == 180 * 4


def test_sdpa_and_matmul_handles():
    def attn(x):  # x: [2, 3, 10, 8]
        k, v = torch.cat([x, x[:, :, :2]], 2), torch.cat([x, x[:, :, :2]], 2)[..., :5]
        return F.scaled_dot_product_attention(x, k, v)
    assert ops(attn, (2, 3, 10, 8))['scaled_dot_product_attention'] == 2 * 3 * 10 * 12 * (8 + 5)
    w = torch.randn(5, 6)
    assert ops(lambda x: w.t() @ x, (2, 5, 6))['matmul'] == 2 * 6 * 5 * 6  # broadcast second operand
    assert ops(lambda x: x @ torch.ones(6), (4, 6))['matmul'] == 4 * 6  # matrix-vector


def test_timm_attention_ops_are_counted():
    """timm's Attention emits aten::matmul (math) or aten::scaled_dot_product_attention (fused): both counted."""
    from timm.layers import Attention
    for fused in (True, False):
        m = Attention(16, num_heads=2)
        m.fused_attn = fused
        got = count(Fn3(m), (1, 1, 9, 16))['by_operator']
        attn = got.get('scaled_dot_product_attention', 0) + got.get('matmul', 0)
        assert attn == 2 * 9 * 9 * 8 * 2  # heads * L * S * (E + Ev)
        assert got['linear'] == 9 * 16 * 48 + 9 * 16 * 16


def test_pooling_and_reductions():
    assert ops(lambda x: x.mean((2, 3)), (2, 3, 4, 4))['mean'] == 96
    assert ops(lambda x: F.avg_pool2d(x, 2), (1, 2, 4, 4))['avg_pool2d'] == 8 * 4


def test_gmamba_block_counts_fft_and_scan():
    dim, h, w = 16, 5, 7
    c = count(GMambaBlock(dim), (dim, h, w))
    m, L = dim // 2, h * w
    assert c['by_operator']['selective_scan'] == 9 * L * m * 8 + L * m  # N = 8, D term, no z gate inside the scan
    assert c['by_operator']['fft_rfft2'] == m * L * math.ceil(math.log2(L))
    assert c['by_operator']['fft_irfft2'] == m * L * math.ceil(math.log2(L))
    assert not c['skipped'] and 'aten::transpose' in c['not_counted']  # allow-listed FLOP-free ops are listed


def test_skipped_flop_bearing_op_fails():
    handles = {k: v for k, v in flops.FLOP_HANDLES.items() if k != 'aten::fft_rfft2'}
    with pytest.raises(SkippedOpsError, match='aten::fft_rfft2'):
        count(GMambaBlock(8), (8, 4, 4), handles=handles)
    with pytest.raises(SkippedOpsError, match='aten::cumsum'):  # on neither list
        count(Fn(lambda x: x.cumsum(1)), (2, 3))
    # fvcore's own ignore list is off: with relu taken off our allow-list, relu is reported, not silently ignored
    with pytest.raises(SkippedOpsError, match='aten::relu'):
        count(Fn(torch.relu), (2, 3), flop_free=flops.FLOP_FREE_OPS - {'aten::relu'})
    assert not set(flops.FLOP_HANDLES) & flops.FLOP_FREE_OPS


def test_paper_layout_params():
    for p in flops.paper_layout_params():
        assert p['ours_m'] == pytest.approx(p['paper_m'], rel=0.015), p


FAMILY = [n for n in ('resnet18_gmamba', 'swin_t_gmamba', 'vgamba_b') if n in gmamba_zoo.list_models()]


@pytest.mark.parametrize('name', FAMILY)
def test_zoo_models_have_no_skipped_ops(name):
    import timm
    c = count(timm.create_model(name), (3, 64, 64), what=name)  # raises on a skipped FLOP-bearing op
    assert c['gflops'] > 0 and 'selective_scan' in c['by_operator']


@pytest.fixture
def tiny_model():
    if 'resnet18_gmamba' not in gmamba_zoo.list_models():
        pytest.skip('resnet18_gmamba is not registered')
    return 'resnet18_gmamba'


def test_report_files_and_readme(tmp_path, tiny_model):
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{flops.README_START}\nold table\n{flops.README_END}\nrest\n')
    out, models_md = tmp_path / 'flops.md', tmp_path / 'models.md'
    rc = cli_main(['flops', '--models', tiny_model, '--size', '32', '32', '--det-size', '32', '48', '--out', str(out),
                     '--models-md', str(models_md), '--readme', str(readme)])
    assert rc == 0
    rep = json.loads(out.with_suffix('.json').read_text())
    row = rep['models'][0]
    assert row['baseline'] == 'resnet18' and row['delta_params_m'] > 0 and row['gflops_det'] > row['gflops'] * 0
    assert rep['baselines']['resnet18']['params_m'] == pytest.approx(11.69, abs=0.01)
    assert row['feature_strides'] == [2, 4, 8, 16, 32]
    text = readme.read_text()
    assert 'old table' not in text and f'`{tiny_model}`' in text and text.endswith(f'{flops.README_END}\nrest\n')
    assert 'multiply-add as one FLOP' in out.read_text() and 'python scripts/report_flops.py' in out.read_text()
    assert f'`{tiny_model}`' in models_md.read_text()
    readme.write_text('no markers')
    with pytest.raises(SystemExit, match='markers'):
        flops.update_readme(readme, 'table')


def test_report_exits_nonzero_on_skipped_op(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delitem(flops.FLOP_HANDLES, 'gmamba_zoo::selective_scan')
    out = tmp_path / 'flops.md'
    assert cli_main(['flops', '--models', tiny_model, '--size', '32', '32', '--no-det', '--no-baselines',
                       '--out', str(out)]) == 1
    assert 'gmamba_zoo::selective_scan' in json.loads(out.with_suffix('.json').read_text())['skipped'][tiny_model]
    assert 'FAILED' in out.read_text()


# ----------------------------------------------------------------------------------------------------------------
# Benchmark (tiny sizes: it runs, and its output has the fields)
# ----------------------------------------------------------------------------------------------------------------

SPEC = dict(device='cpu', warmup=0, iters=1, channels_last=False, tf32=False, amp='none', scan_backend='auto', batch=1)


def test_benchmark_child_model_and_blocks():
    r = bench._child({**SPEC, 'kind': 'time', 'mode': 'fwd_bwd', 'model': 'resnet18', 'size': [64, 64]})
    assert r['median_ms'] > 0 and r['min_ms'] <= r['median_ms']
    for blk in ('gmamba', 'attn-sdpa', 'attn-math'):
        r = bench._child({**SPEC, 'kind': 'memory', 'mode': 'fwd', 'block': blk, 'dim': 32, 'heads': 1, 'grid': 6})
        assert r['peak_mb'] >= 0


def test_attention_block_matches_between_impls():
    x = torch.randn(1, 32, 5, 6)
    a, b = bench.AttentionBlock(32, 2, 'sdpa'), bench.AttentionBlock(32, 2, 'math')
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_benchmark_end_to_end(tmp_path):
    out = tmp_path / 'bench.md'
    cli_main(['benchmark', '--what', 'models', '--models', 'resnet18', '--img-size', '32', '32', '--modes', 'fwd', '--iters',
                '1', '--warmup', '0', '--no-memory', '--out', str(out)])
    rep = json.loads(out.with_suffix('.json').read_text())
    assert rep['settings']['device'] == 'cpu' and rep['settings']['scan_backend_resolved'] == resolve_scan_backend('cpu')
    row = rep['models'][0]
    assert {'model', 'mode', 'median_ms', 'img_per_s', 'peak_mb', 'baseline'} <= set(row)
    text = out.read_text()
    assert 'TF32' in text and 'channels_last' in text and 'scan backend' in text and rep['machine']['date'] in text


def test_scaling_summary_crossover_and_targets():
    rows = [{'grid': g, 'mode': 'fwd', 'dim': 32, 'heads': 1, 'gmamba_ms': 10.0, 'gmamba_peak_mb': 10.0,
             'sdpa_ms': t, 'sdpa_peak_mb': m, 'sdpa_speedup': t / 10, 'sdpa_mem_ratio': m / 10}
            for g, t, m in ((16, 5.0, 5.0), (64, 20.0, 8.0), (128, 60.0, 60.0))]
    cross = bench.crossovers(rows, ['sdpa'])
    assert any('faster' in c and 'from 64x64' in c for c in cross)
    assert any('lighter' in c and 'from 128x128' in c for c in cross)
    checks, ok = bench.check_targets([], rows, (224, 224), 1)
    assert ok and '6.0x faster' in checks[0] and 'met' in checks[0]
    rows[-1]['sdpa_mem_ratio'] = 2.0
    assert not bench.check_targets([], rows, (224, 224), 1)[1]


def test_paired_timing_alternates_model_and_baseline(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, '_prepare', lambda spec: (lambda: calls.append(spec['model'])))
    r = bench._child({**SPEC, 'kind': 'time', 'mode': 'fwd', 'models': ['a', 'b'], 'size': [8, 8], 'iters': 3,
                      'warmup': 1})
    assert calls == ['a', 'b'] + ['a', 'b'] * 3  # warm-up each, then one timed run of each per iteration
    assert len(r['results']) == 2 and all(x['median_ms'] >= 0 for x in r['results'])


@pytest.mark.slow
def test_benchmark_rows_pair_a_model_with_its_baseline(tmp_path):
    out = tmp_path / 'bench.md'
    cli_main(['benchmark', '--what', 'models', '--models', 'resnet18_gmamba', '--img-size', '32', '32', '--modes', 'fwd',
                '--iters', '1', '--warmup', '0', '--no-memory', '--out', str(out)])
    row = json.loads(out.with_suffix('.json').read_text())['models'][0]
    assert row['baseline'] == 'resnet18' and row['baseline_median_ms'] > 0
    assert row['latency_ratio'] == pytest.approx(row['median_ms'] / row['baseline_median_ms'])


def test_benchmark_latency_vs_flops_ratio(tmp_path):
    report = Path(__file__).resolve().parents[1] / 'docs' / 'flops.json'  # a checkout's report, passed explicitly
    gflops, source = bench.flops_of(['resnet18_gmamba', 'resnet18'], (224, 224), report)
    assert str(report) in source and gflops['resnet18_gmamba'] > gflops['resnet18'] > 0
    rows = [{'model': 'resnet18_gmamba', 'baseline': 'resnet18', 'mode': mode, 'median_ms': 30.0, 'min_ms': 29.0,
             'img_per_s': 33.3, 'peak_mb': None, 'baseline_median_ms': 20.0, 'baseline_img_per_s': 50.0,
             'baseline_peak_mb': None, 'latency_ratio': 1.5} for mode in ('fwd', 'fwd_bwd')]
    assert str(report) in bench.attach_flops(rows, (224, 224), report)
    ratio = gflops['resnet18_gmamba'] / gflops['resnet18']
    assert rows[0]['flops_ratio'] == pytest.approx(ratio)
    checks, ok = bench.check_targets(rows, [], (224, 224), 1)
    assert len(checks) == 1 and ok == (1.5 <= bench.FLOPS_SLACK * ratio)
    assert f'for {ratio:.2f}x its FLOPs' in checks[0]
    assert bench.check_targets(rows, [], (224, 224), 2)[0] == []  # the target is stated for batch 1 only
    rows_512 = [dict(r, latency_ratio=9.0) for r in rows]  # the same rule at 512 (issue 25): a miss is reported
    checks_512, ok_512 = bench.check_targets(rows_512, [], (512, 512), 1)
    assert not ok_512 and len(checks_512) == 1 and 'at 512x512' in checks_512[0] and 'NOT met' in checks_512[0]
    rep = {'machine': {'cpu': 'x', 'cores': 2, 'torch': '2', 'python': '3', 'date': 'd'},
           'settings': {'device': 'cpu', 'tf32': False, 'channels_last': False, 'amp': 'none', 'scan_backend': 'auto',
                        'scan_backend_resolved': 'numba', 'cpu_recurrence': 'numba', 'warmup': 1, 'iters': 2},
           'batch_size': 1, 'img_size': [224, 224], 'models': rows, 'scaling': [], 'checks': checks,
           'flops_source': 'docs/flops.json', 'load_before': [1.5, 1.0, 1.0], 'load_after': [0.2, 0.5, 0.9]}
    text = bench.markdown(rep, 'python scripts/benchmark.py')
    assert '## Latency ratio vs FLOPs ratio, all 1 models' in text and f'{ratio:.2f}x | 1.50x' in text
    assert 'Load average' in text and 'not quiet' in text


def test_benchmark_flops_without_a_report_are_counted(tmp_path):
    """The installed package reads no file of the source tree: with no report (or one without the size) it counts."""
    gflops, source = bench.flops_of(['resnet18_gmamba', 'resnet18'], (64, 64))
    assert source.startswith('counted by this run') and gflops['resnet18_gmamba'] > gflops['resnet18'] > 0
    report = Path(__file__).resolve().parents[1] / 'docs' / 'flops.json'
    assert bench.flops_of(['resnet18'], (64, 64), report) == ({'resnet18': gflops['resnet18']}, source)

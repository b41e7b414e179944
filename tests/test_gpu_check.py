"""The GPU check (``gmamba-zoo check-gpu``, gmamba_zoo/bench/gpu_check.py) run on CPU at tiny sizes: the oracle
comparison catches a wrong backend, the report records the machine, the AMP step runs under bfloat16 autocast, and
without a GPU the check refuses. The same code runs on a GPU with ``--device cuda`` (the default)."""
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from gmamba_zoo.bench import gpu_check
from gmamba_zoo.cli import main
from gmamba_zoo.ops import selective_scan_fn

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = Path(__file__).resolve().parents[1]
TINY = {'tiny': (1, 3, 2, 9)}
TINY_VGAMBA = dict(widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=8)  # vGamba's blocks, tiny
torch_scan = partial(selective_scan_fn, backend='torch')


def _scaled_output(**kw):
    """A backend 0.2% off: right but for its last digits in float32."""
    return torch_scan(**kw) * 1.002


def _scaled_grad_b(**kw):
    """A backend whose output is right and whose gradient of B is 1% off."""
    b = kw['B'] * 1.0
    b.register_hook(lambda g: g * 1.01)
    return torch_scan(**{**kw, 'B': b})


def _no_bias_grad(**kw):
    """A backend that computes the right output but passes no gradient to delta_bias."""
    bias = kw['delta_bias']
    return torch_scan(**{**kw, 'delta_bias': None if bias is None else bias.detach()})


def test_parity_catches_a_wrong_backend():
    backends = {'torch': torch_scan, 'off_out': _scaled_output, 'off_dB': _scaled_grad_b, 'no_dbias': _no_bias_grad}
    res = gpu_check.check_parity('cpu', backends, TINY, dtypes=('float32',), log=lambda s: None)
    rows = {(r['backend'], r['variant']): r for r in res['rows']}
    assert len(rows) == len(backends) * len(gpu_check.VARIANTS) and not res['ok']
    for variant in gpu_check.VARIANTS:
        good = rows['torch', variant]
        assert good['ok'] and good['errors']['out'] < 1e-6 and not good['problems']
        # every given input has its gradient checked
        assert set(good['errors']) == {'out'} | {'d' + k for k in ('u', 'delta', 'A', 'B', 'C')} | (
            {'dD', 'dz', 'ddelta_bias'} if variant != 'plain' else set())
        assert not rows['off_out', variant]['ok'] and rows['off_out', variant]['errors']['out'] > 1e-3
        off = rows['off_dB', variant]
        assert not off['ok'] and off['worst'] == 'dB' and off['errors']['out'] < 1e-6
    assert rows['no_dbias', 'plain']['ok']  # no delta_bias given: nothing to miss
    assert not rows['no_dbias', 'z+D+bias+softplus']['ok']
    assert 'no gradient for delta_bias' in rows['no_dbias', 'z+D+bias+softplus']['problems']


def test_parity_half_precision_tolerances():
    """bfloat16/float16 inputs: the PyTorch scan passes, a backend 3% off fails (the tolerance is not so loose)."""
    off = lambda **kw: torch_scan(**kw) * 1.03
    res = gpu_check.check_parity('cpu', {'torch': torch_scan, 'off': off}, TINY, dtypes=('bfloat16', 'float16'),
                                 variants=('z+D+bias+softplus',), log=lambda s: None)
    for r in res['rows']:
        assert r['ok'] == (r['backend'] == 'torch'), r


def test_backends_that_cannot_run_are_named_with_the_reason():
    runnable, skipped = gpu_check.scan_backends('cpu')
    assert 'torch' in runnable and 'cuda' not in runnable and 'cuda' not in skipped  # cuda is no CPU candidate
    assert set(runnable) | set(skipped) == {'numba', 'triton', 'torch'}
    if 'triton' in skipped:
        assert 'TRITON_INTERPRET' in skipped['triton'] or 'triton' in skipped['triton'].lower()


def test_refuses_without_a_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    out = tmp_path / 'gpu-check.md'
    assert main(['check-gpu', '--out', str(out)]) == 2
    assert 'no CUDA device' in capsys.readouterr().out and not out.exists()
    with pytest.raises(SystemExit, match='--device must be cuda'):
        main(['check-gpu', '--device', 'meta'])


def test_report_is_written_with_the_machine_and_versions(tmp_path, capsys):
    out = tmp_path / 'gpu-check.md'
    assert main(['check-gpu', '--device', 'cpu', '--sections', 'parity', '--dtypes', 'float32', '--out', str(out)]) == 0
    text, data = out.read_text(), json.loads(out.with_suffix('.json').read_text())
    m = data['machine']
    for key in ('torch', 'triton', 'mamba_ssm', 'cuda', 'date', 'cpu', 'python'):
        assert key in m
    assert m['torch'] in text and m['date'] in text and 'mamba-ssm' in text and 'Triton' in text
    assert '**Device cpu: a smoke run' in text and gpu_check.HOW_TO_RUN in text
    assert 'Result: every check passed.' in text and data['ok'] and list(data['sections']) == ['parity']
    assert {r['backend'] for r in data['sections']['parity']['rows']} >= {'torch'}
    assert 'scripts/check_gpu.py --device cpu --sections parity' in text


def test_a_crashed_section_fails_the_run_and_is_reported(monkeypatch, tmp_path):
    def crash(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
    monkeypatch.setattr(gpu_check, 'check_amp', crash)
    out = tmp_path / 'gpu-check.md'
    assert main(['check-gpu', '--device', 'cpu', '--sections', 'amp', '--out', str(out)]) == 1
    text = out.read_text()
    assert 'Result: **FAILED** (amp)' in text and 'Section `amp` **crashed**' in text and 'out of memory' in text


def _fake_cuda_report(parity_ok: bool) -> str:
    mach = dict(gpu='NVIDIA H100 80GB HBM3', capability='9.0', cpu='x', cores=16, torch='2.5.1', cuda='12.4',
                triton='3.1.0', mamba_ssm=None, numba='0.60', python='3.11', date='2026-01-01T00:00+00:00')
    row = dict(backend='triton', dtype='bfloat16', shape='S1', dims=[2, 192, 16, 3136], variant='plain',
               errors={'out': 1e-3, 'du': 3e-2 if not parity_ok else 1e-3}, worst='du', ok=parity_ok,
               problems=[] if parity_ok else ['du rel err 3.00e-02'])
    rep = dict(device='cuda', machine=mach, seconds=100.0, sections=dict(
        parity=dict(rows=[row], skipped={'cuda': 'mamba-ssm is not importable'}, ok=parity_ok,
                    block=dict(rows=[], ok=True))))
    return gpu_check.markdown(rep, 'python scripts/check_gpu.py')


def test_report_names_the_gpu_and_failures():
    text = _fake_cuda_report(parity_ok=True)
    assert 'NVIDIA H100 80GB HBM3 (compute capability 9.0)' in text and 'CUDA 12.4' in text
    assert 'mamba-ssm not installed' in text and '`cuda`: mamba-ssm is not importable' in text
    assert 'Result: every check passed.' in text and '**Device cpu' not in text
    text = _fake_cuda_report(parity_ok=False)
    assert 'Result: **FAILED** (parity)' in text and 'du rel err 3.00e-02' in text


def test_committed_report_says_how_to_run():
    text = (ROOT / 'docs' / 'gpu-check.md').read_text()
    assert gpu_check.HOW_TO_RUN in text
    assert 'has not been run on a GPU' in text or 'Device: NVIDIA' in text  # a placeholder says so


def test_amp_step_bf16_on_cpu():
    res = gpu_check.amp_step('vgamba_b', 'cpu', 'bfloat16', size=64, batch=2, model_kwargs=TINY_VGAMBA)
    assert res['ok'], res['problems']
    assert res['finite'] and res['logits_dtype'] == 'torch.bfloat16' and res['skipped_steps'] == 0
    assert res['loss_rel_diff'] < gpu_check.AMP_TOL['loss']
    assert res['grad_cosine'] > gpu_check.AMP_TOL['cosine']['bfloat16']


def test_amp_step_notices_autocast_not_reaching_the_model(monkeypatch):
    class NoAutocast:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch, 'autocast', NoAutocast)
    res = gpu_check.amp_step('vgamba_b', 'cpu', 'bfloat16', size=64, batch=2, model_kwargs=TINY_VGAMBA)
    assert not res['ok'] and any('autocast did not reach the model' in p for p in res['problems'])


def test_speed_uses_bench_scan_timing():
    res = gpu_check.check_speed('cpu', shapes=['1,4,2,16'], repeats=1, warmup=0)
    (row,) = res['rows']
    assert res['ok'] and row['dims'] == [1, 4, 2, 16] and set(row['results']) == set(res['backends'])
    for b in res['backends']:
        assert row['results'][b]['fwd']['median_ms'] > 0 and row['results'][b]['fwd_bwd']['median_ms'] > 0
    if 'triton' not in res['backends']:
        assert row['triton_vs_cuda_fwd'] is None and row['triton_vs_torch_fwd_bwd'] is None


def test_compile_verdict(monkeypatch):
    from gmamba_zoo.bench import compile as bench_compile_module
    row = dict(size=64, first_call_s=1.0, graphs=1, eager_ms=1.0, compiled_ms=1.0, max_abs_diff=0.0, rel_diff=0.0)
    monkeypatch.setattr(bench_compile_module, 'bench_compile', lambda *a, **k: [dict(row)])
    assert gpu_check.check_compile('cpu', log=lambda s: None)['ok']
    monkeypatch.setattr(bench_compile_module, 'bench_compile', lambda *a, **k: [dict(row, rel_diff=0.1)])
    assert not gpu_check.check_compile('cpu', log=lambda s: None)['ok']

    def crash(*a, **k):
        raise RuntimeError('inductor failed')
    monkeypatch.setattr(bench_compile_module, 'bench_compile', crash)
    res = gpu_check.check_compile('cpu', log=lambda s: None)
    assert not res['ok'] and 'inductor failed' in res['error']


@pytest.mark.slow
def test_compile_on_cpu():
    res = gpu_check.check_compile('cpu', size=64, log=lambda s: None)
    assert res['ok'] and res['graphs'] >= 1 and res['rel_diff'] <= gpu_check.COMPILE_TOL


@pytest.mark.slow
def test_amp_all_models_on_cpu():
    res = gpu_check.check_amp('cpu', size=64, model_kwargs={'vgamba_b': TINY_VGAMBA}, log=lambda s: None)
    assert res['ok'], [r['problems'] for r in res['rows'] if not r['ok']]
    assert [r['model'] for r in res['rows']] == list(gpu_check.AMP_MODELS)


@pytest.mark.slow
def test_triton_parity_under_the_interpreter():
    """The Triton backend through the same check, on CPU under Triton's interpreter (a child process: the variable
    must be set before the kernels are imported), and a wrong Triton result is caught there too."""
    pytest.importorskip('triton')
    code = (
        'import json, torch\n'
        'from gmamba_zoo.bench import gpu_check\n'
        'runnable, skipped = gpu_check.scan_backends("cpu")\n'
        'assert "triton" in runnable, skipped\n'
        'tri = runnable["triton"]\n'
        'backends = {"triton": tri, "off": lambda **kw: tri(**kw) * 1.002}\n'
        'res = gpu_check.check_parity("cpu", backends, {"t": (1, 3, 2, 9)}, dtypes=("float32", "bfloat16"),\n'
        '                             log=lambda s: None)\n'
        'print(json.dumps([[r["backend"], r["dtype"], r["ok"]] for r in res["rows"]]))\n')
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 * 2 * len(gpu_check.VARIANTS)
    for backend, dtype, ok in rows:
        assert ok == (backend == 'triton' or dtype == 'bfloat16'), (backend, dtype, ok)

"""Speed and memory of the pure-PyTorch selective scan against a plain sequential loop.

The baseline is :func:`gmamba_zoo.ops.selective_scan_ref`: a Python loop over L that steps with ``unbind``,
differentiated by autograd (so its backward stays linear in L). Both get the same arguments: u, delta, A, B, C,
D, z, delta_bias and ``delta_softplus=True``, in float32. Our scan is timed twice: with the CPU step loop that
:func:`gmamba_zoo.ops.cpu_recurrence` picks (numba's compiled loop when numba is installed) and with the step
loop dispatched from Python (``GMAMBA_ZOO_CPU_RECURRENCE=python``).

Every figure comes from a fresh child process, so one measurement's allocator state cannot help or hurt the
next. Times are the minimum over repeats, in milliseconds. Memory is the peak resident set size during one
forward+backward above the resident size once the inputs exist and one small warm-up call has imported and
compiled what a first call needs (Linux: the peak is reset through
``/proc/self/clear_refs``; glibc's mmap threshold is fixed at 64 KiB in that child so freed tensors leave the
resident set and the peak follows live memory). The gradient of the output is created inside the measured span.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .machine import machine, proc_status

__all__ = ['CONFIGS', 'add_arguments', 'run']

# label -> (batch, dim, d_state, length); 'S1' is the speed target, 'M' the memory target (a detection-size map)
CONFIGS = {
    'S1 56x56 N16': (2, 192, 16, 56 * 56),
    'convnext_s_gmamba stage 1, batch 1': (1, 48, 8, 56 * 56),
    '56x56 N8': (2, 192, 8, 56 * 56),
    '56x56 N64': (2, 192, 64, 56 * 56),
    '28x28 N16': (2, 384, 16, 28 * 28),
    '14x14 N16': (2, 768, 16, 14 * 14),
    'M 128x128 N8': (1, 256, 8, 128 * 128),
}
SPEED_TARGET = ('S1 56x56 N16', 4.0)  # forward and forward+backward each at least 4x faster than the loop
MEMORY_TARGET = ('M 128x128 N8', 3.0)  # peak above the inputs at most 3x the inputs (u, delta, z, B, C)


def _inputs(b: int, d: int, n: int, L: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ins = dict(
        u=torch.randn(b, d, L, generator=g), delta=torch.randn(b, d, L, generator=g) * 0.5,
        A=-torch.exp(torch.randn(d, n, generator=g)), B=torch.randn(b, n, L, generator=g),
        C=torch.randn(b, n, L, generator=g), D=torch.randn(d, generator=g), z=torch.randn(b, d, L, generator=g),
        delta_bias=torch.randn(d, generator=g) * 0.1)
    return {k: v.requires_grad_() for k, v in ins.items()}


def _impl(name: str):
    from gmamba_zoo.ops import selective_scan_fn, selective_scan_ref
    fn = selective_scan_ref if name == 'loop' else selective_scan_fn  # 'ours', or 'ours-python' (see _spawn)
    return lambda ins: fn(**ins, delta_softplus=True)


def _child_time(cfg: str, impl: str, repeats: int) -> dict:
    ins, f = _inputs(*CONFIGS[cfg]), _impl(impl)
    fwd, fwd_bwd = [], []
    for i in range(repeats + 1):  # the first run warms up and is not counted
        with torch.no_grad():
            t = time.perf_counter()
            f(ins)
            t_fwd = time.perf_counter() - t
        dy = torch.randn(ins['u'].shape)
        t = time.perf_counter()
        f(ins).backward(dy)
        t_fb = time.perf_counter() - t
        for v in ins.values():
            v.grad = None
        if i:
            fwd.append(t_fwd * 1e3)
            fwd_bwd.append(t_fb * 1e3)
    return {'fwd_ms': min(fwd), 'fwd_bwd_ms': min(fwd_bwd)}


def _child_memory(cfg: str, impl: str) -> dict:
    ins, f = _inputs(*CONFIGS[cfg]), _impl(impl)
    small = _inputs(1, 4, CONFIGS[cfg][2], 8)
    f(small).sum().backward()  # imports and compiles what a first call needs (numba), outside the measured span
    input_bytes = sum(ins[k].numel() * ins[k].element_size() for k in ('u', 'delta', 'z', 'B', 'C'))
    with open('/proc/self/clear_refs', 'w') as fh:
        fh.write('5')  # reset the peak resident set size to the current one
    base = proc_status('VmRSS')
    y = f(ins)
    y.backward(torch.randn(y.shape))
    peak = proc_status('VmHWM')
    return {'input_mb': input_bytes / 2 ** 20, 'peak_above_inputs_mb': (peak - base) / 2 ** 20}


def _spawn(kind: str, cfg: str, impl: str, repeats: int) -> dict:
    env = dict(os.environ)
    if impl == 'ours-python':
        env['GMAMBA_ZOO_CPU_RECURRENCE'] = 'python'
    if kind == 'memory':
        env['MALLOC_MMAP_THRESHOLD_'] = '65536'
    cmd = [sys.executable, '-m', 'gmamba_zoo.bench.scan', '--child', kind, cfg, impl, str(repeats)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f'benchmark child {cmd} failed:\n{res.stderr}')
    return json.loads(res.stdout.strip().splitlines()[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--configs', nargs='*', default=list(CONFIGS), choices=list(CONFIGS), metavar='CFG',
                        help=f'which shapes (default: all of {list(CONFIGS)})')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs of our scan per figure (minimum kept)')
    parser.add_argument('--loop-repeats', type=int, default=2, help='timed runs of the loop per figure')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurements')
    parser.add_argument('--out', type=Path, help='write the Markdown report here (and JSON beside it)')


def _markdown(mach: dict, rows: List[dict], checks: List[str]) -> str:
    lines = [
        '# Selective scan benchmark (pure-PyTorch backend)', '',
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['torch_threads']} torch threads; "
        f"torch {mach['torch']}, Python {mach['python']}. Date: {mach['date']}.",
        f"CPU step loop of our scan (`ours`): {mach['cpu_recurrence']}; `ours, Python loop` is the same scan with "
        "`GMAMBA_ZOO_CPU_RECURRENCE=python`, the step loop dispatched from Python (what runs without numba, "
        "`pip install gmamba-zoo[cpu]`).", '',
        'Generated by `python scripts/bench_scan.py --out docs/scan-benchmark.md` (also `gmamba-zoo bench-scan`).',
        'Baseline: `selective_scan_ref`, a sequential Python loop stepping with `unbind`, under autograd. Both get',
        'u, delta, A, B, C, D, z, delta_bias and softplus, float32. Times: minimum over repeats, each figure in a',
        'fresh process. Memory: peak resident set during one forward+backward above the resident set once the',
        'inputs exist and a small warm-up call has run (the output gradient is allocated inside the measured span).',
        '',
        '| shape (B, D, N, L) | ours fwd ms | ours, Python loop fwd ms | loop fwd ms | speed-up | ours fwd+bwd ms '
        '| ours, Python loop fwd+bwd ms | loop fwd+bwd ms | speed-up | inputs MB | ours peak MB | loop peak MB |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for r in rows:
        mem = (f"{r['input_mb']:.0f} | {r['ours_peak_mb']:.0f} ({r['ours_peak_mb'] / r['input_mb']:.2f}x) | "
               f"{r['loop_peak_mb']:.0f} ({r['loop_peak_mb'] / r['input_mb']:.2f}x)") if 'input_mb' in r else '- | - | -'
        lines.append(
            f"| {r['config']}: {r['shape']} | {r['ours_fwd_ms']:.1f} | {r['ours-python_fwd_ms']:.1f} | "
            f"{r['loop_fwd_ms']:.1f} | {r['loop_fwd_ms'] / r['ours_fwd_ms']:.1f}x | {r['ours_fwd_bwd_ms']:.1f} | "
            f"{r['ours-python_fwd_bwd_ms']:.1f} | {r['loop_fwd_bwd_ms']:.1f} | "
            f"{r['loop_fwd_bwd_ms'] / r['ours_fwd_bwd_ms']:.1f}x | {mem} |")
    lines += ['', 'Targets:', ''] + [f'- {c}' for c in checks] + ['']
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    mach = machine()
    print(f"{mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, {mach['date']}", flush=True)
    rows = []
    for cfg in args.configs:
        b, d, n, L = CONFIGS[cfg]
        row = {'config': cfg, 'shape': f'{b}, {d}, {n}, {L}'}
        for impl, reps in (('ours', args.repeats), ('ours-python', args.repeats), ('loop', args.loop_repeats)):
            t = _spawn('time', cfg, impl, reps)
            row[f'{impl}_fwd_ms'], row[f'{impl}_fwd_bwd_ms'] = t['fwd_ms'], t['fwd_bwd_ms']
        if not args.no_memory and sys.platform.startswith('linux'):
            for impl in ('ours', 'loop'):
                m = _spawn('memory', cfg, impl, 0)
                row['input_mb'], row[f'{impl}_peak_mb'] = m['input_mb'], m['peak_above_inputs_mb']
        rows.append(row)
        print(json.dumps(row), flush=True)
    checks, ok = [], True
    by_cfg = {r['config']: r for r in rows}
    cfg, factor = SPEED_TARGET
    if cfg in by_cfg:
        r = by_cfg[cfg]
        s_f, s_fb = r['loop_fwd_ms'] / r['ours_fwd_ms'], r['loop_fwd_bwd_ms'] / r['ours_fwd_bwd_ms']
        passed = s_f >= factor and s_fb >= factor
        ok &= passed
        checks.append(f"{cfg}: forward {s_f:.1f}x and forward+backward {s_fb:.1f}x faster than the loop "
                      f"(target >= {factor}x each): {'met' if passed else 'NOT met'}")
    cfg, factor = MEMORY_TARGET
    if cfg in by_cfg and 'ours_peak_mb' in by_cfg[cfg]:
        r = by_cfg[cfg]
        ratio = r['ours_peak_mb'] / r['input_mb']
        passed = ratio <= factor
        ok &= passed
        checks.append(f"{cfg}: forward+backward peak above the inputs is {ratio:.2f}x the inputs "
                      f"(target <= {factor}x; the loop needs {r['loop_peak_mb'] / r['input_mb']:.2f}x): "
                      f"{'met' if passed else 'NOT met'}")
    report = _markdown(mach, rows, checks)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        args.out.with_suffix('.json').write_text(json.dumps({'machine': mach, 'rows': rows, 'checks': checks}, indent=2))
    return 0 if ok else 1


if __name__ == '__main__':  # a measuring child of _spawn: python -m gmamba_zoo.bench.scan --child KIND CFG IMPL REPEATS
    _kind, _cfg, _impl, _repeats = sys.argv[2:6]
    print(json.dumps(_child_time(_cfg, _impl, int(_repeats)) if _kind == 'time' else _child_memory(_cfg, _impl)))

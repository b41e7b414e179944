"""Speed, memory and first-call cost of the selective scan's fused kernels against the PyTorch scan.

CPU (the default): the fused numba kernel (backend ``numba``, what ``auto`` runs on CPU) against the chunked PyTorch
scan (backend ``torch``, with its per-chunk compiled step loops: what ran by default before the fused kernel), on
the shapes of :data:`SHAPES`, at each thread count of ``--threads``:

* Time: both backends in one child process, timed alternately, iteration by iteration (the order swapped every
  iteration), so that the machine's speed drifting during the run (shared virtual machines lose part of their CPU
  time to their neighbours at times) hits both alike. ``fwd`` is one call under ``torch.no_grad``; ``fwd_bwd`` is one
  call with every input requiring a gradient followed by ``backward`` (the output's gradient made before the clock
  starts). Medians and minima of the timed iterations, in milliseconds; speed-ups are ratios of medians.
* Peak memory of one forward+backward at :data:`MEMORY_SHAPE`, each backend in a fresh child: the peak resident set
  size (``VmHWM``, reset through ``/proc/self/clear_refs``) above the resident set once the inputs exist and a small
  call has imported and compiled what a first call needs, with glibc's mmap threshold fixed at 64 KiB so that freed
  tensors leave the resident set and the peak follows live memory (Linux only).
* First call: the time the first forward and the first backward of the numba kernel take in a fresh process (which
  includes importing numba and compiling, or loading from numba's disk cache, the kernels), cold (an empty
  ``NUMBA_CACHE_DIR``) and warm (the same directory again, now filled), beside a steady-state call.
* The machine's load (``/proc/loadavg``) before and after: figures taken on a busy machine are noisier.
* ``--ref`` also times :func:`gmamba_zoo.ops.selective_scan_ref`, the sequential Python loop (slow).

Inputs everywhere: float32, ``delta_softplus=True``, ``D`` and ``delta_bias`` given, no gate ``z``.

``--device cuda``: the Triton kernel (``triton``), mamba-ssm's CUDA kernel (``cuda``, when ``selective_scan_cuda``
imports) and the PyTorch scan on the GPU, at :data:`CUDA_SHAPES`, forward and forward+backward (timed alternately as
on CPU, with ``torch.cuda.synchronize`` around each call), the peak CUDA memory of a forward+backward, and the
ratio Triton / mamba-ssm (goal: at most :data:`TRITON_GOAL`). Without a CUDA device it says so and exits with
status 2, writing nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .machine import command_line, load_average, machine, proc_status, write_report
from .progress import Progress, add_quiet_argument

__all__ = [
    'SHAPES', 'MEMORY_SHAPE', 'CUDA_SHAPES', 'SPEED_TARGETS', 'TRITON_GOAL', 'add_arguments', 'markdown', 'run',
]

# label -> (batch, channels D, states N, length L)
SHAPES: Dict[str, Tuple[int, int, int, int]] = {
    'S1': (2, 192, 16, 56 * 56),  # a 56x56 stage-1 map
    'M': (1, 256, 16, 128 * 128),  # a 128x128 map (detection-size input): the memory target
    'T': (8, 768, 16, 14 * 14),  # a 14x14 map, wide and batched: many short sequences
}
MEMORY_SHAPE = 'M'
CUDA_SHAPES = ('S1', 'M')
CPU_BACKENDS = ('numba', 'torch')  # the candidate, then today's default it is measured against
CUDA_BACKENDS = ('triton', 'cuda', 'torch')
SPEED_TARGETS = {'fwd': 3.0, 'fwd_bwd': 2.5}  # numba at least this many times faster than torch, every shape
TRITON_GOAL = 1.5  # Triton's time at most this many times mamba-ssm's
MODES = ('fwd', 'fwd_bwd')
_MODE_NAMES = {'fwd': 'forward', 'fwd_bwd': 'forward+backward'}


def _parse_shape(text: str) -> Tuple[str, Tuple[int, int, int, int]]:
    """A label of :data:`SHAPES`, or ``B,D,N,L`` (e.g. ``1,4,4,32``) for a shape of one's own."""
    if text in SHAPES:
        return text, SHAPES[text]
    try:
        dims = tuple(int(v) for v in text.split(','))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f'a shape is one of {list(SHAPES)} or B,D,N,L with positive integers, '
                                         f'got {text!r}')
    return text, dims


# ----------------------------------------------------------------------------------------------------------------
# Child processes: one measurement each
# ----------------------------------------------------------------------------------------------------------------

def _inputs(shape: Sequence[int], device: str, grad: bool = True) -> Dict[str, torch.Tensor]:
    b, d, n, length = shape
    g = torch.Generator().manual_seed(0)
    ins = dict(u=torch.randn(b, d, length, generator=g), delta=torch.randn(b, d, length, generator=g) * 0.5,
               A=-torch.exp(torch.randn(d, n, generator=g)), B=torch.randn(b, n, length, generator=g),
               C=torch.randn(b, n, length, generator=g), D=torch.randn(d, generator=g),
               delta_bias=torch.randn(d, generator=g) * 0.1)
    return {k: v.to(device).requires_grad_(grad) for k, v in ins.items()}


def _scan(backend: str) -> Callable[[Dict[str, torch.Tensor]], torch.Tensor]:
    from ..ops import selective_scan_fn, selective_scan_ref
    if backend == 'ref':
        return lambda ins: selective_scan_ref(**ins, delta_softplus=True)
    return lambda ins: selective_scan_fn(**ins, delta_softplus=True, backend=backend)


def _clock(device: str) -> Callable[[], float]:
    if device.startswith('cuda'):
        def now() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return now
    return time.perf_counter


def _time_one(f, ins, dy, mode: str, now: Callable[[], float]) -> float:
    """Milliseconds of one forward (no_grad) or forward+backward call."""
    if mode == 'fwd':
        with torch.no_grad():
            t = now()
            f(ins)
            return (now() - t) * 1e3
    t = now()
    f(ins).backward(dy)
    ms = (now() - t) * 1e3
    for v in ins.values():
        v.grad = None
    return ms


def _summary(ts: List[float]) -> Dict[str, Any]:
    return {'median_ms': statistics.median(ts), 'min_ms': min(ts), 'times_ms': ts}


def _child_time(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Every backend of ``spec['backends']`` at one shape and thread count, alternating iteration by iteration."""
    torch.set_num_threads(spec['threads'])
    device, now = spec['device'], _clock(spec['device'])
    ins = _inputs(spec['shape'], device)
    dy = torch.randn(ins['u'].shape, generator=torch.Generator().manual_seed(1)).to(device)
    backends = list(spec['backends'])
    fns = {b: _scan(b) for b in backends}
    times: Dict[str, Dict[str, List[float]]] = {b: {m: [] for m in MODES} for b in backends}
    for _ in range(spec['warmup']):
        for b in backends:
            for mode in MODES:
                _time_one(fns[b], ins, dy, mode, now)
    for i in range(spec['repeats']):
        for b in (backends if i % 2 == 0 else backends[::-1]):
            for mode in MODES:
                times[b][mode].append(_time_one(fns[b], ins, dy, mode, now))
    out: Dict[str, Any] = {'threads': torch.get_num_threads(),
                           'results': {b: {m: _summary(ts) for m, ts in times[b].items()} for b in backends}}
    if spec.get('ref_repeats'):  # the sequential loop, on its own after the others (it is slow)
        f = _scan('ref')
        out['results']['ref'] = {m: _summary([_time_one(f, ins, dy, m, now) for _ in range(spec['ref_repeats'])])
                                 for m in MODES}
    if device.startswith('cuda'):  # peak memory of one forward+backward per backend
        for b in backends:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            _time_one(fns[b], ins, dy, 'fwd_bwd', now)
            out['results'][b]['peak_mb'] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return out


def _child_memory(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Peak resident memory of one forward+backward of one backend (a fresh process per figure)."""
    torch.set_num_threads(spec['threads'])
    f = _scan(spec['backend'])
    ins = _inputs(spec['shape'], 'cpu')
    small = _inputs((1, 4, spec['shape'][2], 8), 'cpu')
    f(small).sum().backward()  # imports and compiles what a first call needs, outside the measured span
    input_bytes = sum(v.numel() * v.element_size() for v in ins.values())
    with open('/proc/self/clear_refs', 'w') as fh:
        fh.write('5')  # reset the peak resident set size to the current one
    base = proc_status('VmRSS')
    y = f(ins)
    y.backward(torch.randn(y.shape))
    peak = proc_status('VmHWM')
    return {'input_mb': input_bytes / 2 ** 20, 'peak_mb': (peak - base) / 2 ** 20}


def _child_first_call(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds of the first forward and backward of the numba kernel in this process, then of a second call."""
    torch.set_num_threads(spec['threads'])
    f = _scan('numba')
    ins = _inputs((1, 8, 16, 64), 'cpu')
    res = {}
    for label in ('first', 'second'):
        t = time.perf_counter()
        y = f(ins)
        res[f'{label}_fwd_s'] = time.perf_counter() - t
        t = time.perf_counter()
        y.sum().backward()
        res[f'{label}_bwd_s'] = time.perf_counter() - t
    return res


_CHILDREN = {'time': _child_time, 'memory': _child_memory, 'first_call': _child_first_call}


def _spawn(spec: Dict[str, Any], env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    cmd = [sys.executable, '-m', 'gmamba_zoo.bench.scan', '--child', json.dumps(spec)]
    res = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f'benchmark child failed for {spec}:\n{res.stderr[-4000:]}')
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                        help='cpu: numba kernel vs the PyTorch scan; cuda: Triton vs mamba-ssm vs the PyTorch scan')
    parser.add_argument('--shapes', nargs='+', type=_parse_shape, metavar='SHAPE',
                        help=f'labels of {dict(SHAPES)} or B,D,N,L (default: all three on CPU, '
                             f'{list(CUDA_SHAPES)} on CUDA)')
    parser.add_argument('--threads', nargs='+', type=int, default=[1, 2],
                        help='CPU: intra-op thread counts to measure at (each its own child process)')
    parser.add_argument('--repeats', type=int, default=7, help='timed iterations per backend (alternating)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed iterations per backend before timing')
    parser.add_argument('--memory-shape', type=_parse_shape, default=MEMORY_SHAPE,
                        metavar='SHAPE', help='CPU: the shape of the peak-memory comparison')
    parser.add_argument('--no-memory', action='store_true', help='CPU: skip the peak-memory comparison')
    parser.add_argument('--no-first-call', action='store_true',
                        help="CPU: skip timing the numba kernel's first call (cold and warm cache)")
    parser.add_argument('--ref', action='store_true', help='also time selective_scan_ref, the sequential loop (slow)')
    parser.add_argument('--ref-repeats', type=int, default=1, help='timed runs of the loop per figure')
    parser.add_argument('--out', type=Path, help='write the Markdown report here and JSON beside it (.json)')
    add_quiet_argument(parser)


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return num / den if num is not None and den else None


def _fmt(x: Optional[float], nd: int = 1, suffix: str = '') -> str:
    return '-' if x is None else f'{x:.{nd}f}{suffix}'


def _met(ok: bool) -> str:
    return 'met' if ok else 'NOT met'


def _cpu_rows(args: argparse.Namespace, shapes, log: Progress) -> List[Dict[str, Any]]:
    rows = []
    for label, shape in shapes:
        for threads in args.threads:
            log.stage(f'{label}, {threads} thread(s)')
            spec = {'kind': 'time', 'device': 'cpu', 'shape': list(shape), 'threads': threads,
                    'backends': list(CPU_BACKENDS), 'repeats': args.repeats, 'warmup': args.warmup,
                    'ref_repeats': args.ref_repeats if args.ref else 0}
            res = _spawn(spec)['results']
            row: Dict[str, Any] = {'shape': label, 'dims': list(shape), 'threads': threads, 'results': res}
            for mode in MODES:
                row[f'speedup_{mode}'] = _ratio(res['torch'][mode]['median_ms'], res['numba'][mode]['median_ms'])
                row[f'met_{mode}'] = row[f'speedup_{mode}'] >= SPEED_TARGETS[mode]
            rows.append(row)
            med = {(b, mode): res[b][mode]['median_ms'] for b in CPU_BACKENDS for mode in MODES}
            log.done(f"{label} {tuple(shape)} {threads} thread(s): numba fwd {med['numba', 'fwd']:.2f} ms, fwd+bwd "
                     f"{med['numba', 'fwd_bwd']:.2f} ms; torch fwd {med['torch', 'fwd']:.2f} ms, fwd+bwd "
                     f"{med['torch', 'fwd_bwd']:.2f} ms; speed-ups {row['speedup_fwd']:.2f}x, "
                     f"{row['speedup_fwd_bwd']:.2f}x")
    return rows


def _cpu_memory(args: argparse.Namespace, log: Progress) -> List[Dict[str, Any]]:
    label, shape = args.memory_shape
    rows = []
    for threads in args.threads:
        log.stage(f'memory {label}, {threads} thread(s)')
        row: Dict[str, Any] = {'shape': label, 'dims': list(shape), 'threads': threads}
        for backend in CPU_BACKENDS:
            m = _spawn({'kind': 'memory', 'backend': backend, 'shape': list(shape), 'threads': threads},
                       env={'MALLOC_MMAP_THRESHOLD_': '65536'})
            row['input_mb'], row[f'{backend}_peak_mb'] = m['input_mb'], m['peak_mb']
        row['met'] = row['numba_peak_mb'] <= row['torch_peak_mb']
        rows.append(row)
        log.done(f"memory {label} {threads} thread(s): numba {row['numba_peak_mb']:.1f} MB, "
                 f"torch {row['torch_peak_mb']:.1f} MB")
    return rows


def _first_call(args: argparse.Namespace, log: Progress) -> Dict[str, Any]:
    threads = max(args.threads)
    log.stage('numba first call, cold and warm cache')
    with tempfile.TemporaryDirectory(prefix='gmamba_zoo_numba_cache_') as cache:
        env = {'NUMBA_CACHE_DIR': cache}
        spec = {'kind': 'first_call', 'threads': threads}
        res = {'threads': threads, 'cold': _spawn(spec, env), 'warm': _spawn(spec, env)}
    log.done(f"numba first call: cold fwd {res['cold']['first_fwd_s']:.2f} s + bwd {res['cold']['first_bwd_s']:.2f} "
             f"s; warm fwd {res['warm']['first_fwd_s']:.2f} s + bwd {res['warm']['first_bwd_s']:.2f} s")
    return res


def _unavailable(backend: str) -> Optional[str]:
    """Why scan backend ``backend`` cannot run on CUDA tensors here, or None when it can."""
    from ..ops import resolve_scan_backend
    try:
        resolve_scan_backend('cuda', backend)
    except RuntimeError as e:
        return str(e).split(' Choose another backend')[0]
    return None


def _cuda_rows(args: argparse.Namespace, shapes,
               log: Progress) -> Tuple[List[Dict[str, Any]], Dict[str, Optional[str]]]:
    unavailable = {b: _unavailable(b) for b in CUDA_BACKENDS}
    backends = [b for b in CUDA_BACKENDS if unavailable[b] is None]
    rows = []
    for label, shape in shapes:
        log.stage(label)
        spec = {'kind': 'time', 'device': 'cuda', 'shape': list(shape), 'threads': torch.get_num_threads(),
                'backends': backends, 'repeats': args.repeats, 'warmup': max(args.warmup, 1),
                'ref_repeats': args.ref_repeats if args.ref else 0}
        res = _spawn(spec)['results']
        row: Dict[str, Any] = {'shape': label, 'dims': list(shape), 'results': res}
        for mode in MODES:
            tri, cud = (res.get(b, {}).get(mode, {}).get('median_ms') for b in ('triton', 'cuda'))
            row[f'triton_vs_cuda_{mode}'] = _ratio(tri, cud)
        rows.append(row)
        log.done(f"{label} {tuple(shape)}: " + '; '.join(
            f"{b} fwd {res[b]['fwd']['median_ms']:.3f} ms, fwd+bwd {res[b]['fwd_bwd']['median_ms']:.3f} ms"
            for b in backends))
    return rows, unavailable


def _targets_cpu(rows, mem_rows) -> Tuple[List[str], bool]:
    checks, ok = [], True
    for r in rows:
        for mode in MODES:
            ok &= r[f'met_{mode}']
            checks.append(f"{r['shape']} {tuple(r['dims'])}, {r['threads']} thread(s), {_MODE_NAMES[mode]}: numba "
                          f"{r[f'speedup_{mode}']:.2f}x faster than torch (target >= {SPEED_TARGETS[mode]}x): "
                          f"{_met(r[f'met_{mode}'])}")
    for m in mem_rows:
        ok &= m['met']
        checks.append(f"{m['shape']} {tuple(m['dims'])}, {m['threads']} thread(s): forward+backward peak, numba "
                      f"{m['numba_peak_mb']:.1f} MB vs torch {m['torch_peak_mb']:.1f} MB (target: numba's no higher): "
                      f"{_met(m['met'])}")
    return checks, ok


def _targets_cuda(rows, unavailable) -> Tuple[List[str], bool]:
    checks, ok = [], True
    for r in rows:
        for mode in MODES:
            ratio = r[f'triton_vs_cuda_{mode}']
            if ratio is None:
                why = unavailable.get('cuda') or unavailable.get('triton') or 'not measured'
                checks.append(f"{r['shape']} {tuple(r['dims'])}, {_MODE_NAMES[mode]}: Triton vs mamba-ssm not "
                              f"measured ({why})")
                continue
            passed = ratio <= TRITON_GOAL
            ok &= passed
            checks.append(f"{r['shape']} {tuple(r['dims'])}, {_MODE_NAMES[mode]}: Triton takes {ratio:.2f}x "
                          f"mamba-ssm's time (goal <= {TRITON_GOAL}x): {_met(passed)}")
    return checks, ok


def _load_line(rep: Dict[str, Any]) -> str:
    fmt = lambda v: '/'.join(f'{x:.2f}' for x in v) if v else 'n/a'
    line = (f"Load average (1/5/15 min, /proc/loadavg) before: {fmt(rep['load_before'])}; after: "
            f"{fmt(rep['load_after'])}.")
    if rep['load_before'] and rep['load_before'][0] >= 0.5:
        line += ' The machine was not quiet (1-minute load >= 0.5): timings are noisier than usual.'
    return line


def markdown(rep: Dict[str, Any], command: str) -> str:
    m = rep['machine']
    gpu = f", GPU {m['gpu']} (CUDA {m['cuda']})" if 'gpu' in m else ''
    lines = [f"# Selective scan benchmark ({rep['device']})", '',
             f'Generated by `{command}` (also `gmamba-zoo bench-scan`); do not edit by hand.', '',
             f"Machine: {m['cpu']}, {m['cores']} cores{gpu}; torch {m['torch']}, numba {m.get('numba', '-')}, "
             f"triton {m.get('triton', '-')}, Python {m['python']}. Date: {m['date']}.", '', _load_line(rep), '',
             'Inputs: float32, `delta_softplus=True`, `D` and `delta_bias` given, no gate `z`; forward+backward '
             'computes the gradients of all seven inputs. Each shape (and thread count) runs in its own process; the '
             f"backends are timed there alternately, iteration by iteration (order swapped every iteration), "
             f"{rep['warmup']} warm-up and {rep['repeats']} timed iterations each: median (min) ms.", '']
    if rep['device'] == 'cpu':
        lines += ['Backends: `numba`, the fused CPU kernel (what `auto` runs on CPU), against `torch`, the chunked '
                  f"PyTorch scan with its per-chunk compiled step loops (CPU step loop: {m['cpu_recurrence']}): the "
                  'default before the fused kernel. Speed-up: torch median / numba median.', '',
                  '## Speed', '',
                  '| shape | B, D, N, L | threads | torch fwd ms | numba fwd ms | fwd speed-up | torch fwd+bwd ms | '
                  'numba fwd+bwd ms | fwd+bwd speed-up |' + (' loop fwd ms | loop fwd+bwd ms |' if rep['ref'] else ''),
                  '|' + ' --- |' * (9 + 2 * rep['ref'])]
        for r in rep['rows']:
            res = r['results']
            cell = lambda b, mode: f"{res[b][mode]['median_ms']:.2f} ({res[b][mode]['min_ms']:.2f})"
            line = (f"| {r['shape']} | {', '.join(map(str, r['dims']))} | {r['threads']} | {cell('torch', 'fwd')} | "
                    f"{cell('numba', 'fwd')} | {r['speedup_fwd']:.2f}x | {cell('torch', 'fwd_bwd')} | "
                    f"{cell('numba', 'fwd_bwd')} | {r['speedup_fwd_bwd']:.2f}x |")
            if rep['ref']:
                line += f" {cell('ref', 'fwd')} | {cell('ref', 'fwd_bwd')} |"
            lines.append(line)
        lines.append('')
        if rep['memory']:
            lines += ['## Peak memory of one forward+backward', '',
                      'Peak resident set (VmHWM, reset through /proc/self/clear_refs, glibc mmap threshold 64 KiB) '
                      'above the resident set once the inputs exist and a small call has run, each figure in a fresh '
                      'process.', '',
                      '| shape | B, D, N, L | threads | inputs MB | torch peak MB | numba peak MB |',
                      '| --- | --- | --- | --- | --- | --- |']
            for r in rep['memory']:
                lines.append(f"| {r['shape']} | {', '.join(map(str, r['dims']))} | {r['threads']} | "
                             f"{r['input_mb']:.1f} | {r['torch_peak_mb']:.1f} | {r['numba_peak_mb']:.1f} |")
            lines.append('')
        if rep['first_call']:
            fc = rep['first_call']
            lines += ['## First call of the numba kernel', '',
                      'A fresh process (torch and gmamba_zoo already imported), a small input: the first forward '
                      'imports numba and compiles the forward kernel (cold: an empty `NUMBA_CACHE_DIR`) or loads it '
                      'from the disk cache (warm: the same directory again); the first backward does the same for the '
                      f"backward kernel. {fc['threads']} thread(s).", '',
                      '| cache | first forward s | first backward s | second forward s | second backward s |',
                      '| --- | --- | --- | --- | --- |']
            for kind in ('cold', 'warm'):
                r = fc[kind]
                lines.append(f"| {kind} | {r['first_fwd_s']:.2f} | {r['first_bwd_s']:.2f} | {r['second_fwd_s']:.4f} | "
                             f"{r['second_bwd_s']:.4f} |")
            lines.append('')
    else:
        lines += ['Backends: `triton` (this package\'s Triton kernel), `cuda` (mamba-ssm\'s `selective_scan_cuda`), '
                  '`torch` (the chunked PyTorch scan). Peak memory: `torch.cuda.max_memory_allocated` over one '
                  'forward+backward above what was allocated before it.', '']
        missing = {b: why for b, why in rep['unavailable'].items() if why}
        if missing:
            lines += ['Not measured: ' + '; '.join(f'`{b}`: {why}' for b, why in missing.items()), '']
        backends = [b for b in CUDA_BACKENDS if not rep['unavailable'].get(b)]
        lines += ['| shape | B, D, N, L | backend | fwd ms | fwd+bwd ms | peak MB (fwd+bwd) |',
                  '| --- | --- | --- | --- | --- | --- |']
        for r in rep['rows']:
            for b in backends + (['ref'] if rep['ref'] else []):
                res = r['results'][b]
                lines.append(f"| {r['shape']} | {', '.join(map(str, r['dims']))} | {b} | "
                             f"{res['fwd']['median_ms']:.3f} ({res['fwd']['min_ms']:.3f}) | "
                             f"{res['fwd_bwd']['median_ms']:.3f} ({res['fwd_bwd']['min_ms']:.3f}) | "
                             f"{_fmt(res.get('peak_mb'))} |")
        lines += ['', '| shape | Triton / mamba-ssm, fwd | Triton / mamba-ssm, fwd+bwd |', '| --- | --- | --- |']
        for r in rep['rows']:
            lines.append(f"| {r['shape']} | {_fmt(r['triton_vs_cuda_fwd'], 2, 'x')} | "
                         f"{_fmt(r['triton_vs_cuda_fwd_bwd'], 2, 'x')} |")
        lines.append('')
    lines += ['## Targets', ''] + [f'- {c}' for c in rep['checks']] + ['']
    return '\n'.join(lines)


def _versions(info: Dict[str, Any]) -> Dict[str, Any]:
    for name in ('numba', 'triton'):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # not installed, or broken: the report says '-'
            info[name] = None
    return info


def run(args: argparse.Namespace) -> int:
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gmamba-zoo bench-scan --device cuda: no CUDA device is available here (torch.cuda.is_available() is '
              'False): nothing was measured and no report was written. Run it on a machine with an NVIDIA GPU.')
        return 2
    if args.device == 'cpu':
        from ..ops import resolve_scan_backend
        try:
            resolve_scan_backend('cpu', 'numba')
        except RuntimeError as e:
            print(f'gmamba-zoo bench-scan: the fused CPU kernel cannot run here, nothing was measured: {e}')
            return 2
    load_before = load_average()
    mach = _versions(machine())
    mach['date'] = datetime.datetime.now().isoformat(timespec='minutes')
    if args.device == 'cuda':
        mach['gpu'], mach['cuda'] = torch.cuda.get_device_name(), torch.version.cuda
    shapes = args.shapes or [(s, SHAPES[s]) for s in (SHAPES if args.device == 'cpu' else CUDA_SHAPES)]
    rep: Dict[str, Any] = {'device': args.device, 'machine': mach, 'load_before': load_before, 'repeats': args.repeats,
                           'warmup': args.warmup, 'ref': bool(args.ref), 'memory': [], 'first_call': None}
    memory = args.device == 'cpu' and not args.no_memory and sys.platform.startswith('linux')
    first_call = args.device == 'cpu' and not args.no_first_call
    # one step per row of the report: a shape and thread count, a memory row (both backends), the first calls
    total = (len(shapes) * len(args.threads) if args.device == 'cpu' else len(shapes)) + \
        (len(args.threads) if memory else 0) + int(first_call)
    with Progress('bench-scan', total, 'run', args.quiet) as log:
        log(f"{mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, {mach['date']}, load {load_before}")
        if args.device == 'cpu':
            rep['rows'] = _cpu_rows(args, shapes, log)
            if memory:
                rep['memory'] = _cpu_memory(args, log)
            if first_call:
                rep['first_call'] = _first_call(args, log)
            rep['checks'], ok = _targets_cpu(rep['rows'], rep['memory'])
        else:
            rep['rows'], rep['unavailable'] = _cuda_rows(args, shapes, log)
            rep['checks'], ok = _targets_cuda(rep['rows'], rep['unavailable'])
    rep['load_after'] = load_average()
    write_report(args.out, markdown(rep, command_line('scripts/bench_scan.py', 'bench-scan', args)), rep)
    return 0 if ok else 1


if __name__ == '__main__':  # a measuring child of _spawn: python -m gmamba_zoo.bench.scan --child SPEC_JSON
    _spec = json.loads(sys.argv[2])
    print(json.dumps(_CHILDREN[_spec['kind']](_spec)))

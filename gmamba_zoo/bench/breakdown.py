"""Where a model's forward time goes, by kind of operation, beside its plain backbone.

``python scripts/time_breakdown.py --models resnet18_gmamba vgamba_b --out docs/time-breakdown.md`` (also
``gmamba-zoo bench-breakdown``). For each model and its baseline (batch 1, eval, ``torch.no_grad``, built as the
benchmark builds them), in one process:

* wall time: the median of ``iters`` forwards, model and baseline alternating, without the profiler;
* per kind of operation: the self time of every operator recorded by ``torch.profiler`` over ``iters`` more
  forwards, summed by kind (:data:`KINDS`: the first rule matching an operator's name decides). An operator's time
  on the calling thread includes its intra-op worker threads' work, which it waits for; the profiled forwards' wall
  time not inside any operator is Python and dispatch ("outside operators"). The profiler adds to both, so the
  profiled forwards are slower than the unprofiled wall time;
* multiply-adds per kind, from the FLOP counter (:mod:`gmamba_zoo.flops`, fvcore) mapped onto the same kinds, so each
  kind's rate (GMAC/s) can be set beside the backbone's.

The difference between a model and its baseline, kind by kind, is what the added blocks cost and at what rate they
run; a kind whose added time is large for its added multiply-adds is where the model is slower per FLOP than its
backbone.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .machine import command_line, load_average, machine, write_report
from .progress import Progress, add_quiet_argument

__all__ = ['KINDS', 'kind_of', 'op_times', 'breakdown', 'add_arguments', 'run']

#: (kind, substrings of profiler operator names, FLOP-counter operator names), first match wins. The FLOP counter's
#: names are those of :data:`gmamba_zoo.flops.counter.FLOP_HANDLES` without ``aten::``/``gmamba_zoo::``.
KINDS: Tuple[Tuple[str, Tuple[str, ...], Tuple[str, ...]], ...] = (
    ('convolution', ('convolution', 'conv2d', 'conv1d', 'conv_depthwise', 'slow_conv'), ('conv',)),
    ('linear, matmul', ('linear', 'addmm', '::mm', 'bmm', 'matmul', 'baddbmm'),
     ('linear', 'mm', 'matmul', 'addmm', 'bmm', 'baddbmm', 'einsum')),
    ('selective scan', ('selective_scan',), ('selective_scan',)),
    ('FFT', ('fft',), ('fft_rfft', 'fft_irfft', 'fft_fft', 'fft_ifft', 'fft_rfft2', 'fft_irfft2', 'fft_fft2',
                       'fft_ifft2', 'fft_rfftn', 'fft_irfftn', 'fft_fftn', 'fft_ifftn')),
    ('attention', ('scaled_dot_product', 'softmax'), ('scaled_dot_product_attention',)),
    ('normalisation', ('batch_norm', 'layer_norm', 'group_norm'), ('batch_norm', 'layer_norm', 'group_norm')),
    ('pooling, reductions', ('pool', '::mean', '::sum'), ('adaptive_avg_pool2d', 'avg_pool2d', 'max_pool2d', 'mean',
                                                         'sum')),
    ('elementwise, copies, allocation', ('',), ()),
)
OUTSIDE = 'outside operators (Python, dispatch)'


def kind_of(op_name: str) -> str:
    """The :data:`KINDS` entry of a profiler operator name (``aten::addmm`` -> ``'linear, matmul'``)."""
    name = op_name.lower()
    return next(kind for kind, keys, _ in KINDS if any(k in name for k in keys))


def _flop_kind(op: str) -> str:
    return next((kind for kind, _, ops in KINDS if op in ops), KINDS[-1][0])


def op_times(model: torch.nn.Module, x: torch.Tensor, iters: int) -> Tuple[Dict[str, float], float]:
    """Self time (ms per forward) of the operators of ``model(x)`` under ``torch.no_grad``, summed by kind, and the
    wall time per forward of the profiled forwards (so that what is outside the operators is measured under the same
    profiler). A first, discarded profiling session takes the profiler's own start-up costs."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.no_grad():
        with torch.profiler.profile(activities=activities):
            model(x)
        with torch.profiler.profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(iters):
                model(x)
            wall = (time.perf_counter() - start) * 1e3 / iters
    out = {kind: 0.0 for kind, _, _ in KINDS}
    for event in prof.key_averages():
        out[kind_of(event.key)] += event.self_cpu_time_total / 1e3 / iters
    return out, wall


def _wall(models: Sequence[torch.nn.Module], x: torch.Tensor, warmup: int, iters: int) -> List[float]:
    """Median ms per forward of each model, timed alternately."""
    times: List[List[float]] = [[] for _ in models]
    with torch.no_grad():
        for i in range(warmup + iters):
            for t, m in zip(times, models):
                start = time.perf_counter()
                m(x)
                if i >= warmup:
                    t.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def _macs_by_kind(model: torch.nn.Module, size: Sequence[int]) -> Dict[str, float]:
    from ..flops.counter import count
    out = {kind: 0.0 for kind, _, _ in KINDS}
    for op, flops in count(model, (3, *size), strict=False)['by_operator'].items():
        out[_flop_kind(op)] += flops / 1e9
    return out


def breakdown(name: str, size: Sequence[int] = (224, 224), warmup: int = 3, iters: int = 20,
              baseline: Optional[str] = None) -> Dict[str, Any]:
    """Wall time, time and GMACs by kind of ``name`` and its baseline (the FLOP report's, unless given).

    Returns:
        ``{'model', 'baseline', 'size', 'wall_ms': [model, baseline], 'profiled_ms': [model, baseline],
        'kinds': {kind: {'ms': [m, b], 'gmacs': [m, b]}}}``: wall time without and with the profiler; the kinds' times
        (with the outside-operators row, which has no GMACs) add up to the profiled time.
    """
    from ..flops.counter import baseline_name
    from ..models import create_for_input_size
    baseline = baseline or baseline_name(name)
    torch.manual_seed(0)
    models = [create_for_input_size(n, tuple(size)).eval() for n in (name, baseline)]
    x = torch.randn(1, 3, *size)
    wall = _wall(models, x, warmup, iters)
    profiled = [op_times(m, x, iters) for m in models]
    macs = [_macs_by_kind(m, size) for m in models]
    kinds: Dict[str, Dict[str, List[Optional[float]]]] = {
        kind: {'ms': [t[kind] for t, _ in profiled], 'gmacs': [m[kind] for m in macs]} for kind, _, _ in KINDS}
    kinds[OUTSIDE] = {'ms': [max(w - sum(t.values()), 0.0) for t, w in profiled], 'gmacs': [None, None]}
    return {'model': name, 'baseline': baseline, 'size': list(size), 'wall_ms': wall,
            'profiled_ms': [w for _, w in profiled], 'kinds': kinds}


def _rate(gmacs: Optional[float], ms: float) -> str:
    return f'{gmacs / ms * 1e3:.0f}' if gmacs and ms > 0.05 else '-'


def markdown(reports: List[Dict[str, Any]], rep_machine: Dict[str, Any], load: List[Any], command: str) -> str:
    lines = ['# Where the forward time goes', '',
             f'Generated by `{command}` (also `gmamba-zoo bench-breakdown`); do not edit by hand.', '',
             f"Machine: {rep_machine['cpu']}, {rep_machine['cores']} cores, {rep_machine['torch_threads']} torch "
             f"threads; torch {rep_machine['torch']}, Python {rep_machine['python']}. Date: {rep_machine['date']}. "
             f'Load average (1/5/15 min) before: {load[0]}; after: {load[1]}.', '',
             'Batch 1, eval, `torch.no_grad`, float32. Time per kind of operation: the self time of the operators '
             'torch.profiler records, per forward, and "outside operators" the rest of the profiled forwards\' wall '
             'time (Python and dispatch; the profiler adds to both). The kinds add up to the profiled time; the wall '
             'time without the profiler (median, model and baseline alternating) is the one to compare with the '
             'benchmark. GMACs: the FLOP counter (multiply-adds) by the same kinds. "added" is the model minus its '
             'baseline; its rate is added GMACs per added second of the profiled run.', '']
    for r in reports:
        (wm, wb), (pm, pb), (h, w) = r['wall_ms'], r['profiled_ms'], r['size']
        lines += [f"## {r['model']} vs {r['baseline']} ({h}x{w})", '',
                  f'Wall time {wm:.1f} ms vs {wb:.1f} ms ({wm / wb:.2f}x); under the profiler {pm:.1f} ms vs '
                  f'{pb:.1f} ms ({pm / pb:.2f}x).', '',
                  '| kind | model ms | baseline ms | added ms | share of added time | model GMACs | baseline GMACs '
                  '| added GMACs | baseline GMAC/s | added GMAC/s |',
                  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
        added_total = pm - pb
        for kind, v in r['kinds'].items():
            (m, b), (gm, gb) = v['ms'], v['gmacs']
            if max(m, b) < 0.05 and not (gm or gb):
                continue
            d = m - b
            gd = gm - gb if gm is not None else None
            share = f'{d / added_total:.0%}' if added_total > 0 else '-'
            g = (lambda v: '-' if v is None else f'{v:.3f}')
            lines.append(f'| {kind} | {m:.1f} | {b:.1f} | {d:+.1f} | {share} | {g(gm)} | {g(gb)} | {g(gd)} '
                         f'| {_rate(gb, b)} | {_rate(gd, d) if gd and gd > 0 else "-"} |')
        lines.append('')
    return '\n'.join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--models', nargs='+', default=['resnet18_gmamba', 'resnet34_gmamba', 'vgamba_b', 'vgamba_l'],
                   help='zoo model names')
    p.add_argument('--img-size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    p.add_argument('--warmup', type=int, default=3, help='untimed forwards before timing')
    p.add_argument('--iters', type=int, default=20, help='timed forwards, and profiled forwards')
    p.add_argument('--threads', type=int, help="intra-op threads (default: torch's)")
    p.add_argument('--out', type=Path, help='write the Markdown report here and JSON beside it (.json)')
    add_quiet_argument(p)


def run(args: argparse.Namespace) -> int:
    import gmamba_zoo  # noqa: F401  (registers the models)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    reports = []
    with Progress('bench-breakdown', len(args.models), 'model', args.quiet) as progress:
        for name in args.models:
            progress.stage(name)
            progress(f'{name} ...')
            reports.append(breakdown(name, args.img_size, args.warmup, args.iters))
            progress.done()
    rep_machine, load = machine(), [load_before, load_average()]
    write_report(args.out, markdown(reports, rep_machine, load, command_line('scripts/time_breakdown.py',
                                                                              'bench-breakdown', args)),
                 {'machine': rep_machine, 'load': load, 'models': reports})
    return 0

"""Where a model's forward time goes, by kind of operation, beside its plain backbone.

``python scripts/time_breakdown.py --models resnet18_gmamba vgamba_b --img-size 224 224 --img-size 512 512 --out
docs/time-breakdown.md`` (also ``gmamba-zoo bench-breakdown``). For each size, model and its baseline (batch 1, eval,
``torch.no_grad``, built as the benchmark builds them), in one process:

* wall time: the median of ``iters`` forwards, model and baseline alternating, without the profiler;
* per kind of operation: the time of every operator the model calls (an operator called by no other operator,
  with the operators it calls in turn) recorded by ``torch.profiler`` over ``iters`` more forwards, summed by kind
  (:func:`kind_of`). An operator's time on the calling thread includes its intra-op worker threads' work, which it
  waits for; the profiled forwards' wall time not inside any operator is Python and dispatch ("outside operators").
  The profiler adds to both, so the profiled forwards are slower than the unprofiled wall time;
* multiply-adds per kind, from the FLOP counter (:mod:`gmamba_zoo.flops`, fvcore), whose traced operators are the
  same operators the model calls, sent to kinds by the same rules, so each kind's rate (GMAC/s) is that of the
  operators whose time it holds and can be set beside the backbone's.

The kind of an operator is given by its name (:data:`KINDS`), and by where it runs: the products and softmax inside
an attention module (:data:`ATTENTION_MODULES`) are the attention's, both their time and their multiply-adds, whether
the module runs them fused or as explicit matmuls (timm's Swin). That matters where an attention runs one operator
eagerly and another when traced: vGamba's 2-D attention calls ``F.scaled_dot_product_attention`` in eager mode and
explicit matmuls under the FLOP counter's tracer, whose multiply-adds would otherwise count as "linear, matmul" while
the time is "attention".

The difference between a model and its baseline, kind by kind, is what the added blocks cost and at what rate they
run; a kind whose added time is large for its added multiply-adds is where the model is slower per FLOP than its
backbone.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .machine import command_line, load_average, machine, write_report
from .models import FLOPS_SLACK
from .progress import Progress, add_quiet_argument

__all__ = ['KINDS', 'ATTENTION', 'ATTENTION_MODULES', 'ATTENTION_OPS', 'kind_of', 'flop_kind', 'attention_modules',
           'op_times', 'macs_by_kind', 'breakdown', 'add_arguments', 'run']

ATTENTION = 'attention'
#: (kind, substrings of profiler operator names, FLOP-counter operator names), first match wins. The FLOP counter's
#: names are those of :data:`gmamba_zoo.flops.counter.FLOP_HANDLES` without ``aten::``/``gmamba_zoo::``.
KINDS: Tuple[Tuple[str, Tuple[str, ...], Tuple[str, ...]], ...] = (
    ('convolution', ('convolution', 'conv2d', 'conv1d', 'conv_depthwise', 'slow_conv'), ('conv',)),
    ('linear, matmul', ('::linear', '_linear_pointwise', 'addmm', '::mm', 'bmm', 'matmul', 'einsum'),
     ('linear', 'mm', 'matmul', 'addmm', 'bmm', 'baddbmm', 'einsum')),
    ('selective scan', ('selective_scan',), ('selective_scan',)),
    ('FFT', ('fft',), ('fft_rfft', 'fft_irfft', 'fft_fft', 'fft_ifft', 'fft_rfft2', 'fft_irfft2', 'fft_fft2',
                       'fft_ifft2', 'fft_rfftn', 'fft_irfftn', 'fft_fftn', 'fft_ifftn')),
    (ATTENTION, ('scaled_dot_product',), ('scaled_dot_product_attention',)),
    ('normalisation', ('batch_norm', 'layer_norm', 'group_norm', 'instance_norm'),
     ('batch_norm', 'layer_norm', 'group_norm', 'instance_norm')),
    ('pooling, reductions', ('pool', '::mean', '::sum'), ('adaptive_avg_pool2d', 'avg_pool2d', 'max_pool2d', 'mean',
                                                         'sum')),
    ('elementwise, copies, allocation', ('',), ()),
)
#: Substrings (lower case) of the class names of attention modules: timm's ``Attention`` and ``WindowAttention``,
#: torch's ``MultiheadAttention``, vGamba's ``RegisterMHSA2d``.
ATTENTION_MODULES = ('attention', 'mhsa')
#: Substrings of the operator names (profiler's or FLOP counter's) that are the attention itself when an attention
#: module runs them: the products of queries, keys and values (``q @ k^T``, ``attn @ v``, fused or not) and the
#: softmax. The module's projections (``linear``, ``addmm``, convolutions) keep their own kinds.
ATTENTION_OPS = ('matmul', 'bmm', 'einsum', 'scaled_dot_product', 'softmax')
OUTSIDE = 'outside operators (Python, dispatch)'
_RANGE = 'gmamba_zoo.bench.breakdown: attention module'  # profiler range around each attention module's forward


def kind_of(op_name: str, in_attention: bool = False) -> str:
    """The :data:`KINDS` entry of a profiler operator name (``aten::addmm`` -> ``'linear, matmul'``); an
    :data:`ATTENTION_OPS` operator run by an attention module is ``'attention'``."""
    name = op_name.lower()
    if in_attention and any(k in name for k in ATTENTION_OPS):
        return ATTENTION
    return next(kind for kind, keys, _ in KINDS if any(k in name for k in keys))


def flop_kind(op: str, in_attention: bool = False) -> str:
    """The kind of a FLOP-counter operator name (``'matmul'``), by the same rules as :func:`kind_of`."""
    if in_attention and any(k in op for k in ATTENTION_OPS):
        return ATTENTION
    return next((kind for kind, _, ops in KINDS if op in ops), KINDS[-1][0])


def attention_modules(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The outermost modules of ``model`` whose class name holds an :data:`ATTENTION_MODULES` substring, by name."""
    out: Dict[str, torch.nn.Module] = {}
    for name, m in model.named_modules():
        if (any(k in type(m).__name__.lower() for k in ATTENTION_MODULES)
                and not any(name.startswith(p + '.') or not p for p in out)):
            out[name] = m
    return out


@contextmanager
def _attention_ranges(model: torch.nn.Module) -> Iterator[None]:
    """Mark each attention module's forward with a profiler range (hooks on those modules only: a hook on a linear
    or convolution, or a global one, would change the route :mod:`gmamba_zoo.layers.onednn` takes)."""
    handles = []
    for m in attention_modules(model).values():
        ranges: List[Any] = []

        def pre(_m, _args, ranges=ranges):
            ranges.append(torch.profiler.record_function(_RANGE).__enter__())

        def post(_m, _args, _out, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _is_op(event: Any) -> bool:
    return not (event.is_user_annotation or event.is_python_function)


def op_times(model: torch.nn.Module, x: torch.Tensor, iters: int) -> Tuple[Dict[str, Dict[str, float]], float]:
    """Time (ms per forward) of the operators of ``model(x)`` under ``torch.no_grad``, by kind and operator name, and
    the wall time per forward of the profiled forwards (so that what is outside the operators is measured under the
    same profiler). An operator called by no other operator counts with the operators it calls (as the FLOP counter
    counts it), under its own kind (:func:`kind_of`). A first, discarded profiling session takes the profiler's own
    start-up costs.

    Returns:
        ``({kind: {operator: ms}}, profiled wall ms)``, every kind of :data:`KINDS` present.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.no_grad(), _attention_ranges(model):
        with torch.profiler.profile(activities=activities):
            model(x)
        with torch.profiler.profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(iters):
                model(x)
            wall = (time.perf_counter() - start) * 1e3 / iters
    out: Dict[str, Dict[str, float]] = {kind: {} for kind, _, _ in KINDS}
    for event in prof.events():
        if not _is_op(event):
            continue
        parent, in_attention = event.cpu_parent, False
        while parent is not None and not _is_op(parent):
            in_attention |= parent.name == _RANGE
            parent = parent.cpu_parent
        if parent is None:  # called by no other operator
            ops = out[kind_of(event.name, in_attention)]
            ops[event.name] = ops.get(event.name, 0.0) + event.cpu_time_total / 1e3 / iters
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


def macs_by_kind(model: torch.nn.Module, size: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """GMACs of ``model`` on a [1, 3, H, W] input by kind and FLOP-counter operator: the counter's operators go to
    kinds by :func:`flop_kind`, those run by an attention module (:func:`attention_modules`) to the attention where
    :data:`ATTENTION_OPS` says so. Operators the counter has no handle for count nothing here (the FLOP report lists
    them).

    Returns:
        ``{kind: {operator: GMACs}}``, every kind of :data:`KINDS` present.
    """
    from ..flops.counter import ZooFlopCountAnalysis
    model.eval()
    analysis = ZooFlopCountAnalysis(model, (torch.randn(1, 3, *size, device=next(model.parameters()).device),))
    with torch.no_grad():
        by_module = analysis.fca.by_module_and_operator()
    in_attention: Counter = Counter()
    for name in attention_modules(model):
        in_attention.update({op: f for op, f in by_module.get(name, {}).items() if flop_kind(op, True) == ATTENTION})
    out: Dict[str, Dict[str, float]] = {kind: {} for kind, _, _ in KINDS}
    for op, flops in by_module[''].items():
        for kind, f in ((flop_kind(op), flops - in_attention[op]), (ATTENTION, in_attention[op])):
            if f:
                out[kind][op] = out[kind].get(op, 0.0) + f / 1e9
    return out


def breakdown(name: str, size: Sequence[int] = (224, 224), warmup: int = 3, iters: int = 20,
              baseline: Optional[str] = None) -> Dict[str, Any]:
    """Wall time, time and GMACs by kind of ``name`` and its baseline (the FLOP report's, unless given).

    Returns:
        ``{'model', 'baseline', 'size', 'wall_ms': [model, baseline], 'profiled_ms': [model, baseline],
        'kinds': {kind: {'ms': [m, b], 'gmacs': [m, b], 'ops_ms': [{op: ms}] * 2, 'ops_gmacs': [{op: GMACs}] * 2}}}``:
        wall time without and with the profiler; the kinds' times (with the outside-operators row, which has no GMACs)
        add up to the profiled time; each kind's operators (profiler names for the time, the FLOP counter's for the
        GMACs) beside its totals.
    """
    from ..flops.counter import baseline_name
    from ..models import create_for_input_size
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f'breakdown: size must be (H, W), two positive ints, got {size}.')
    baseline = baseline or baseline_name(name)
    torch.manual_seed(0)
    models = [create_for_input_size(n, tuple(size)).eval() for n in (name, baseline)]
    x = torch.randn(1, 3, *size)
    wall = _wall(models, x, warmup, iters)
    profiled = [op_times(m, x, iters) for m in models]
    macs = [macs_by_kind(m, size) for m in models]
    kinds: Dict[str, Dict[str, List[Any]]] = {
        kind: {'ms': [sum(t[kind].values()) for t, _ in profiled], 'gmacs': [sum(m[kind].values()) for m in macs],
               'ops_ms': [t[kind] for t, _ in profiled], 'ops_gmacs': [m[kind] for m in macs]}
        for kind, _, _ in KINDS}
    kinds[OUTSIDE] = {'ms': [max(w - sum(sum(ops.values()) for ops in t.values()), 0.0) for t, w in profiled],
                      'gmacs': [None, None]}
    return {'model': name, 'baseline': baseline, 'size': list(size), 'wall_ms': wall,
            'profiled_ms': [w for _, w in profiled], 'kinds': kinds}


#: The kinds that are multiply-adds in bulk (matrix products, convolutions, attention): what the FLOPs ratio measures.
PRODUCT_KINDS = ('convolution', 'linear, matmul', ATTENTION)


def _budget_lines(r: Dict[str, Any]) -> List[str]:
    """The latency target (added time <= (1.1 x FLOPs ratio - 1) x the baseline's) in ms, against what the added
    products and the added rest take under the profiler (scaled to the wall time)."""
    kinds = r['kinds']
    gm = sum(v['gmacs'][0] or 0 for k, v in kinds.items() if k != OUTSIDE)
    gb = sum(v['gmacs'][1] or 0 for k, v in kinds.items() if k != OUTSIDE)
    (wm, wb), (pm, pb) = r['wall_ms'], r['profiled_ms']
    if not gb or pm <= pb:
        return []
    budget = (FLOPS_SLACK * gm / gb - 1) * wb
    scale = (wm - wb) / (pm - pb)  # the profiler's added time, brought to the wall time's
    products = sum(kinds[k]['ms'][0] - kinds[k]['ms'][1] for k in PRODUCT_KINDS if k in kinds) * scale
    return [f'FLOPs ratio {gm / gb:.2f}x: the target (latency ratio <= {FLOPS_SLACK} x that) allows {budget:.1f} ms '
            f'of added time; the model adds {wm - wb:.1f} ms, of which the added products (convolution, linear, '
            f'attention) take {products:.1f} ms and everything else (scan, FFT, norms, elementwise work, Python) '
            f'{wm - wb - products:.1f} ms (profiled shares, scaled to the wall time).']


def _rate(gmacs: Optional[float], ms: float) -> str:
    return f'{gmacs / ms * 1e3:.0f}' if gmacs and ms > 0.05 else '-'


def markdown(reports: List[Dict[str, Any]], rep_machine: Dict[str, Any], load: List[Any], command: str) -> str:
    lines = ['# Where the forward time goes', '',
             f'Generated by `{command}` (also `gmamba-zoo bench-breakdown`); do not edit by hand.', '',
             f"Machine: {rep_machine['cpu']}, {rep_machine['cores']} cores, {rep_machine['torch_threads']} torch "
             f"threads; torch {rep_machine['torch']}, Python {rep_machine['python']}. Date: {rep_machine['date']}. "
             f'Load average (1/5/15 min) before: {load[0]}; after: {load[1]}.', '',
             'Batch 1, eval, `torch.no_grad`, float32. Time per kind of operation: the time torch.profiler records '
             'for each operator the model calls (with the operators it calls in turn), per forward, and "outside '
             'operators" the rest of the profiled forwards\' wall time (Python and dispatch; the profiler adds to '
             'both). The kinds add up to the profiled time; the wall time without the profiler (median, model and '
             'baseline alternating) is the one to compare with the benchmark. GMACs: the FLOP counter '
             '(multiply-adds), whose operators go to kinds by the same rules as the timed ones, so a kind\'s rate is '
             'that of the operators whose time it holds: the products and softmax inside an attention module are '
             '"attention" for both, whether the module runs them fused or as explicit matmuls. The JSON beside this '
             'file lists each kind\'s operators. "added" is the model minus its baseline; its rate is added GMACs per '
             'added second of the profiled run.', '']
    for r in reports:
        (wm, wb), (pm, pb), (h, w) = r['wall_ms'], r['profiled_ms'], r['size']
        lines += [f"## {r['model']} vs {r['baseline']} ({h}x{w})", '',
                  f'Wall time {wm:.1f} ms vs {wb:.1f} ms ({wm / wb:.2f}x); under the profiler {pm:.1f} ms vs '
                  f'{pb:.1f} ms ({pm / pb:.2f}x).', '', *_budget_lines(r), '',
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
    p.add_argument('--img-size', type=int, nargs=2, action='append', metavar=('H', 'W'),
                   help='input size; repeat for several sizes in one report (default: 224 224)')
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
    sizes = [tuple(s) for s in args.img_size or [(224, 224)]]
    bad = [s for s in sizes if min(s) < 1]
    if bad:
        raise SystemExit(f'gmamba-zoo bench-breakdown: --img-size takes two positive ints H W, got {bad}.')
    reports = []
    with Progress('bench-breakdown', len(sizes) * len(args.models), 'model', args.quiet) as progress:
        for size in sizes:
            for name in args.models:
                progress.stage(f'{name} {size[0]}x{size[1]}')
                progress(f'{name} at {size[0]}x{size[1]} ...')
                reports.append(breakdown(name, size, args.warmup, args.iters))
                progress.done()
    rep_machine, load = machine(), [load_before, load_average()]
    write_report(args.out, markdown(reports, rep_machine, load, command_line('scripts/time_breakdown.py',
                                                                              'bench-breakdown', args)),
                 {'machine': rep_machine, 'load': load, 'models': reports})
    return 0

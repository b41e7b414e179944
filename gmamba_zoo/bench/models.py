"""Throughput and peak memory of the zoo's models beside their baselines; the GMamba-vs-attention scaling study.

Every measurement runs in a fresh child process (``python -m gmamba_zoo.bench.models --child SPEC``), so one
measurement's allocator state cannot help or hurt the next. A model and its baseline are timed in the same child,
alternating iteration by iteration, so that the machine's speed drifting during the run (shared virtual machines
lose up to a fifth of their CPU time to their neighbours at times) affects both alike and their ratio is fair.

* Time: ``warmup`` untimed runs, then ``iters`` timed runs (``torch.cuda.synchronize`` around each on CUDA);
  the median is reported as latency and ``batch / median`` as throughput. ``fwd`` is inference (eval mode,
  ``torch.no_grad``); ``fwd_bwd`` is a training step without the optimizer (train mode, ``out.sum().backward()``).
* Models and baselines are built by :func:`gmamba_zoo.models.build_for_input_size` for the benchmark's size, as in
  the FLOP report: a plain Swin baseline runs like the GMamba Swin (attention masks per forward, windows of 7);
  ``--base NAME --depths ...`` measures any timm backbone with GMamba blocks beside the plain base.
* Peak memory above the model weights and the input, for one run after warm-up. CUDA:
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU (Linux): the peak resident set,
  reset through ``/proc/self/clear_refs`` and read from ``VmHWM``, in a child whose glibc mmap threshold is
  fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident set and the peak follows
  live memory; that child is not the one timed.
* The scaling study runs the GMamba block and a global attention block of the same width on [B, C, H, W] maps
  of growing size. The attention block is timm's pre-norm ViT ``Block`` (multi-head self-attention over all
  H*W tokens, then an MLP of ratio 4, as in the GMamba block), with PyTorch's fused
  ``scaled_dot_product_attention`` (``sdpa``: flash/memory-efficient kernels, no L x L matrix kept) and with
  the explicit ``softmax(q k^T) v`` (``math``: the L x L matrix, as most vision code writes attention).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..ops import SCAN_BACKENDS
from .machine import command_line, load_average, machine as scan_machine, proc_status, write_report
from .progress import Progress, add_quiet_argument

__all__ = [
    'AttentionBlock', 'measure', 'measure_paired', 'measure_peak', 'add_arguments', 'run', 'LATENCY_TARGET',
    'SCALING_TARGET', 'FLOPS_SLACK', 'flops_of', 'attach_flops',
]

LATENCY_TARGET = ('convnext_s_gmamba', 'convnext_small', 1.5)  # forward, batch 1, 224: at most 1.5x the baseline
# Every model, forward, batch 1, 224: its latency ratio to its baseline at most this many times its FLOPs ratio.
FLOPS_SLACK = 1.1
SCALING_TARGET = (128, 5.0)  # at 128 x 128 tokens: GMamba block >= 5x faster and >= 5x lighter than attention
ATTN_IMPLS = ('sdpa', 'math')
WIN_MARGIN = 1.05  # a ratio within 5% of 1 is a tie (timing noise, page granularity of the memory peak)


class AttentionBlock(nn.Module):
    """Global multi-head self-attention block on a [B, C, H, W] map: timm's pre-norm ViT ``Block`` over all tokens.

    Args:
        dim: Channels C.
        num_heads: Attention heads (C must divide by it).
        impl: ``'sdpa'`` (``F.scaled_dot_product_attention``) or ``'math'`` (explicit softmax(q k^T) v).
        mlp_ratio: Hidden width of the MLP relative to C.
    """

    def __init__(self, dim: int, num_heads: int, impl: str = 'sdpa', mlp_ratio: float = 4.0):
        super().__init__()
        from timm.models.vision_transformer import Block
        if impl not in ATTN_IMPLS:
            raise ValueError(f'AttentionBlock: impl must be one of {ATTN_IMPLS}, got {impl!r}.')
        self.block = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
        self.block.attn.fused_attn = impl == 'sdpa'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        y = self.block(x.flatten(2).transpose(1, 2))  # [B, H*W, C]
        return y.transpose(1, 2).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------------------------
# Child process: one measurement
# ----------------------------------------------------------------------------------------------------------------

def _build(spec: Dict[str, Any]) -> Tuple[nn.Module, Tuple[int, ...]]:
    """The module and its input shape for a spec: ``{'model': name}`` or ``{'block': 'gmamba'|'attn-sdpa'|...}``."""
    b = spec['batch']
    if 'model' in spec:
        from ..models import build_for_input_size
        h, w = spec['size']
        return build_for_input_size(spec['model'], (h, w)), (b, 3, h, w)
    dim, g = spec['dim'], spec['grid']
    if spec['block'] == 'gmamba':
        from ..layers import GMambaBlock
        return GMambaBlock(dim), (b, dim, g, g)
    return AttentionBlock(dim, spec['heads'], impl=spec['block'].split('-', 1)[1]), (b, dim, g, g)


def _prepare(spec: Dict[str, Any]) -> Callable[[], None]:
    """Build the spec's module and input on its device; return one untimed step (forward, or forward+backward)."""
    device = torch.device(spec['device'])
    model, shape = _build(spec)
    fmt = torch.channels_last if spec['channels_last'] else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    train = spec['mode'] == 'fwd_bwd'
    model.train(train)
    if spec.get('grad_ckpt'):  # timm's gradient checkpointing: activations recomputed in backward, block by block
        model.set_grad_checkpointing(True)
    dtype = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[spec['amp']]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), torch.set_grad_enabled(train):
            out = model(x)
        if train:
            out.float().sum().backward()
            model.zero_grad(set_to_none=True)

    return step


def _child(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch.manual_seed(0)
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    device = torch.device(spec['device'])
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = spec['tf32']
        torch.backends.cudnn.benchmark = True
    from ..ops import set_scan_backend
    set_scan_backend(spec['scan_backend'])
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    names = spec.get('models', [spec.get('model')])
    steps = [_prepare({**spec, 'model': n} if n else spec) for n in names]
    for step in steps:
        for _ in range(spec['warmup']):
            step()
    sync()
    if spec['kind'] == 'time':  # several models: timed in turn, iteration by iteration, so drift hits all alike
        times: List[List[float]] = [[] for _ in steps]
        for _ in range(spec['iters']):
            for step, ts in zip(steps, times):
                sync()
                t = time.perf_counter()
                step()
                sync()
                ts.append(time.perf_counter() - t)
        res = [{'median_ms': statistics.median(ts) * 1e3, 'min_ms': min(ts) * 1e3} for ts in times]
        return res[0] if 'models' not in spec else {'results': res}
    step = steps[0]
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync()
        return {'peak_mb': (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20}
    with open('/proc/self/clear_refs', 'w') as fh:
        fh.write('5')  # reset the peak resident set size to the current one
    base = proc_status('VmRSS')
    step()
    # Linux batches its RSS counters per thread, so a tiny run can read a few KiB below the baseline: that is 0
    return {'peak_mb': max(proc_status('VmHWM') - base, 0) / 2 ** 20}


def measure_paired(spec: Dict[str, Any], names: Sequence[str]) -> List[Dict[str, Any]]:
    """Latency of several models timed in one child, alternating iteration by iteration (``spec`` as for
    :func:`measure`, without ``model``). Returns one ``{'median_ms', 'min_ms', 'img_per_s'}`` per name."""
    res = _spawn({**spec, 'kind': 'time', 'models': list(names)})['results']
    for r in res:
        r['img_per_s'] = spec['batch'] / r['median_ms'] * 1e3
    return res


def measure(spec: Dict[str, Any], memory: bool = True) -> Dict[str, Any]:
    """Time (and, where supported, peak memory) of one spec, each in a fresh child process.

    Args:
        spec: ``model`` (timm name) and ``size`` [H, W], or ``block``, ``dim``, ``grid``, ``heads``; plus ``batch``,
            ``mode`` ('fwd' or 'fwd_bwd'), ``device``, ``warmup``, ``iters``, ``channels_last``, ``tf32``, ``amp``,
            ``scan_backend``.
        memory: Also measure the peak memory (CUDA, or CPU on Linux).

    Returns:
        ``{'median_ms', 'min_ms', 'img_per_s', 'peak_mb' (or None)}``.
    """
    res = _spawn({**spec, 'kind': 'time'})
    res['img_per_s'] = spec['batch'] / res['median_ms'] * 1e3
    res['peak_mb'] = measure_peak(spec) if memory else None
    return res


def measure_peak(spec: Dict[str, Any]) -> Optional[float]:
    """Peak memory (MB) of one step of a spec in a fresh child; None where it cannot be measured."""
    if not (spec['device'].startswith('cuda') or sys.platform.startswith('linux')):
        return None
    return _spawn({**spec, 'kind': 'memory', 'warmup': min(spec['warmup'], 1)})['peak_mb']


def _spawn(spec: Dict[str, Any]) -> Dict[str, Any]:
    env = dict(os.environ)
    if spec['kind'] == 'memory' and not spec['device'].startswith('cuda'):
        env['MALLOC_MMAP_THRESHOLD_'] = '65536'
    cmd = [sys.executable, '-m', 'gmamba_zoo.bench.models', '--child', json.dumps(spec)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f'benchmark child failed for {spec}:\n{res.stderr[-4000:]}')
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

def machine(device: str) -> Dict[str, Any]:
    """:func:`gmamba_zoo.bench.machine.machine`, with the time to the minute and the GPU when ``device`` is CUDA."""
    info = dict(scan_machine(), date=datetime.datetime.now().isoformat(timespec='minutes'))
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
        info['cuda'] = torch.version.cuda
    return info


def _settings(args: argparse.Namespace, device: str) -> Dict[str, Any]:
    from ..ops import cpu_recurrence, cuda_kernel_available, resolve_scan_backend
    return {
        'device': device, 'warmup': args.warmup, 'iters': args.iters, 'channels_last': args.channels_last,
        'tf32': bool(args.tf32), 'amp': args.amp, 'scan_backend': args.scan_backend,
        'scan_backend_resolved': resolve_scan_backend(device, args.scan_backend),
        'mamba_ssm_kernel': cuda_kernel_available(), 'cpu_recurrence': cpu_recurrence(),
        'threads': getattr(args, 'threads', None) or torch.get_num_threads(),
    }


def _settings_line(s: Dict[str, Any]) -> str:
    tf32 = (f"TF32 {'on' if s['tf32'] else 'off'} (matmul and cuDNN)" if s['device'].startswith('cuda')
            else 'TF32 n/a (CPU)')
    return (f"device {s['device']}; {tf32}; channels_last {'on' if s['channels_last'] else 'off'}; "
            f"autocast {s['amp']}; scan backend {s['scan_backend_resolved']} (requested {s['scan_backend']}), "
            f"CPU step loop {s['cpu_recurrence']}; intra-op threads {s.get('threads', '-')}; "
            f"warm-up {s['warmup']}, timed iterations {s['iters']} (median)")


def _model_names(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """(model, baseline) pairs; a baseline measured once is not repeated."""
    from ..models import baseline_name, gmamba_spec, list_models
    names = args.models if args.models is not None else list_models()
    if getattr(args, 'base', None):  # a timm base with GMamba blocks, beside the base
        names = [n for n in names if args.models is not None] + [gmamba_spec(args.base, args.depths)]
    return [(n, None if args.no_baselines else baseline_name(n)) for n in names]


def _fmt_mem(x: Optional[float]) -> str:
    return '-' if x is None else f'{x:.0f}'


def _model_jobs(args: argparse.Namespace
                ) -> Tuple[List[Tuple[str, str]], List[str], List[Tuple[str, Optional[str], str]]]:
    """The model runs: peak memory (model, mode), peak memory with gradient checkpointing (model), and timing
    (model, baseline, mode); each model and baseline is measured once."""
    pairs = _model_names(args)
    todo: List[str] = []
    for m, b in pairs:
        todo += [n for n in (m, b) if n and n not in todo]
    memory_jobs = [] if args.no_memory else [(n, mode) for n in todo for mode in args.modes]
    ckpt_jobs = todo if memory_jobs and getattr(args, 'grad_checkpointing', False) and 'fwd_bwd' in args.modes else []
    return memory_jobs, ckpt_jobs, [(m, b, mode) for m, b in pairs for mode in args.modes]


def _scaling_jobs(args: argparse.Namespace) -> List[Tuple[int, str, str]]:
    """The scaling study's runs: (grid side, mode, block)."""
    blocks = ['gmamba'] + [f'attn-{i}' for i in args.attn_impl]
    return [(g, mode, blk) for mode in args.modes for g in args.grids for blk in blocks]


def run_models(args: argparse.Namespace, base: Dict[str, Any], log: Progress) -> List[Dict[str, Any]]:
    size = {'size': list(args.img_size), 'batch': args.batch_size}
    peaks: Dict[Tuple[str, str], Optional[float]] = {}
    memory_jobs, ckpt_jobs, jobs = _model_jobs(args)
    for i, (n, mode) in enumerate(memory_jobs, 1):
        log.stage(f'memory: {n} {mode}')
        peaks[(n, mode)] = p = measure_peak({**base, **size, 'model': n, 'mode': mode})
        log.done(f"[memory {i}/{len(memory_jobs)}] {n} {mode}: peak {_fmt_mem(p)} MB")
    for i, n in enumerate(ckpt_jobs, 1):
        log.stage(f'memory, gradient checkpointing: {n}')
        peaks[(n, 'ckpt')] = p = measure_peak({**base, **size, 'model': n, 'mode': 'fwd_bwd', 'grad_ckpt': True})
        log.done(f"[memory, gradient checkpointing {i}/{len(ckpt_jobs)}] {n} fwd_bwd: peak {_fmt_mem(p)} MB")
    rows = []
    for i, (m, b, mode) in enumerate(jobs, 1):
        log.stage(f'time: {m} {mode}')
        r, *rb = measure_paired({**base, **size, 'mode': mode}, [m] + ([b] if b else []))
        rb = rb[0] if rb else None
        log.done(f"[time {i}/{len(jobs)}] {m} {mode} batch {args.batch_size} {args.img_size[0]}x{args.img_size[1]}: "
                 f"{r['median_ms']:.1f} ms" + (f"; {b} {rb['median_ms']:.1f} ms" if rb else ''))
        rows.append({'model': m, 'baseline': b, 'mode': mode, **r, 'peak_mb': peaks.get((m, mode)),
                     'baseline_median_ms': rb and rb['median_ms'], 'baseline_img_per_s': rb and rb['img_per_s'],
                     'baseline_peak_mb': peaks.get((b, mode)),
                     'latency_ratio': rb and r['median_ms'] / rb['median_ms']})
        if mode == 'fwd_bwd' and (m, 'ckpt') in peaks:
            rows[-1].update(peak_ckpt_mb=peaks[(m, 'ckpt')], baseline_peak_ckpt_mb=peaks.get((b, 'ckpt')))
    return rows


def run_scaling(args: argparse.Namespace, base: Dict[str, Any], log: Progress) -> List[Dict[str, Any]]:
    heads = args.heads or max(args.dim // 32, 1)
    jobs = _scaling_jobs(args)
    res: Dict[Tuple[int, str, str], Dict[str, Any]] = {}
    for i, (g, mode, blk) in enumerate(jobs, 1):
        log.stage(f'scaling: {blk} {mode} {g}x{g}')
        spec = {**base, 'block': blk, 'dim': args.dim, 'heads': heads, 'grid': g, 'batch': args.batch_size,
                'mode': mode}
        r = measure(spec, memory=not args.no_memory)
        res[(g, mode, blk)] = r
        log.done(f"[{i}/{len(jobs)}] {blk} {mode} {g}x{g} tokens, dim {args.dim}: {r['median_ms']:.1f} ms, "
                 f"peak {_fmt_mem(r['peak_mb'])} MB")
    rows = []
    for mode in args.modes:
        for g in args.grids:
            row = {'grid': g, 'tokens': g * g, 'mode': mode, 'dim': args.dim, 'heads': heads,
                   'gmamba_ms': res[(g, mode, 'gmamba')]['median_ms'],
                   'gmamba_peak_mb': res[(g, mode, 'gmamba')]['peak_mb']}
            for impl in args.attn_impl:
                a = res[(g, mode, f'attn-{impl}')]
                row[f'{impl}_ms'], row[f'{impl}_peak_mb'] = a['median_ms'], a['peak_mb']
                row[f'{impl}_speedup'] = a['median_ms'] / row['gmamba_ms']
                row[f'{impl}_mem_ratio'] = (a['peak_mb'] / row['gmamba_peak_mb']
                                            if a['peak_mb'] and row['gmamba_peak_mb'] else None)
            rows.append(row)
    return rows


def crossovers(rows: List[Dict[str, Any]], impls: Sequence[str]) -> List[str]:
    """The smallest grid from which the GMamba block beats attention (ratio > WIN_MARGIN) on every larger grid."""
    out = []
    for mode in sorted({r['mode'] for r in rows}):
        rs = sorted((r for r in rows if r['mode'] == mode), key=lambda r: r['grid'])
        for impl in impls:
            for key, what in ((f'{impl}_speedup', 'faster'), (f'{impl}_mem_ratio', 'lighter in peak memory')):
                vals = [(r['grid'], r[key]) for r in rs if r.get(key) is not None]
                if not vals:
                    continue
                start = None
                for g, v in reversed(vals):
                    if v > WIN_MARGIN:
                        start = g
                    else:
                        break
                msg = (f'from {start}x{start} tokens upward' if start is not None else
                       f'at none of the grids measured (up to {vals[-1][0]}x{vals[-1][0]})')
                out.append(f'{mode}: the GMamba block is {what} than attention ({impl}), by more than '
                           f'{WIN_MARGIN - 1:.0%}, {msg}.')
    return out


def flops_of(names: Sequence[str], size: Sequence[int], report: Optional[Union[str, Path]] = None,
             log: Optional[Callable[[str], None]] = None) -> Tuple[Dict[str, Optional[float]], str]:
    """GFLOPs (multiply-adds, :mod:`gmamba_zoo.flops`) of each of ``names`` at ``size`` [H, W], batch 1, and where
    they come from: ``report`` (the JSON of ``gmamba-zoo flops --out``, e.g. a checkout's ``docs/flops.json``) when
    it holds every one of them at that size, else the FLOP counter, run now on each model built as the benchmark
    builds it. None for a model that cannot be counted.
    """
    names = list(dict.fromkeys(n for n in names if n))
    if report is not None:
        rep = json.loads(Path(report).read_text())
        if list(rep.get('size', [])) == list(size):
            known = {r['name']: r['gflops'] for r in rep.get('models', []) if r.get('gflops')}
            known.update({k: v['gflops'] for k, v in rep.get('baselines', {}).items() if v.get('gflops')})
            if all(n in known for n in names):
                return {n: known[n] for n in names}, f"{report} ({rep.get('machine', {}).get('date', '-')})"
        if log:
            log(f'{report} does not hold the FLOPs of every model at {list(size)}: counting them now')
    from ..flops.counter import count as count_flops
    from ..models import build_for_input_size
    out: Dict[str, Optional[float]] = {}
    for n in names:
        try:
            out[n] = count_flops(build_for_input_size(n, tuple(size)), (3, *size), what=n)['gflops']
        except Exception as e:  # a model the counter cannot trace: no ratio for it, the timings stand
            out[n] = None
            if log:
                log(f'FLOPs of {n} not counted: {type(e).__name__}: {e}')
    return out, 'counted by this run (gmamba_zoo.flops)'


def attach_flops(rows: List[Dict[str, Any]], size: Sequence[int], report: Optional[Union[str, Path]] = None,
                 log: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """Add ``gflops``, ``baseline_gflops`` and ``flops_ratio`` to each model row; returns where the FLOPs came from."""
    if not any(r['baseline'] for r in rows):
        return None
    gflops, source = flops_of([n for r in rows if r['baseline'] for n in (r['model'], r['baseline'])], size, report,
                              log)
    for r in rows:
        g, gb = gflops.get(r['model']), gflops.get(r['baseline']) if r['baseline'] else None
        r.update(gflops=g, baseline_gflops=gb, flops_ratio=g / gb if g and gb else None)
    return source


def check_targets(model_rows: List[Dict[str, Any]], scaling_rows: List[Dict[str, Any]], img_size: Sequence[int],
                  batch: int) -> Tuple[List[str], bool]:
    checks, ok = [], True
    name, base, limit = LATENCY_TARGET
    r = next((r for r in model_rows if r['model'] == name and r['baseline'] == base and r['mode'] == 'fwd'), None)
    if r and r['latency_ratio'] and batch == 1 and tuple(img_size) == (224, 224):
        passed = r['latency_ratio'] <= limit
        ok &= passed
        checks.append(f"{name} forward latency at 224, batch 1, is {r['latency_ratio']:.2f}x {base}'s "
                      f"(target <= {limit}x): {'met' if passed else 'NOT met'}")
    if batch == 1:  # the sizes are 224 and 512; the rule is the same at any size
        for r in model_rows:
            if r['mode'] != 'fwd' or not r.get('latency_ratio') or not r.get('flops_ratio'):
                continue
            passed = r['latency_ratio'] <= FLOPS_SLACK * r['flops_ratio']
            ok &= passed
            size = '224' if tuple(img_size) == (224, 224) else f'{img_size[0]}x{img_size[1]}'
            checks.append(f"{r['model']} forward latency at {size}, batch 1, is {r['latency_ratio']:.2f}x "
                          f"{r['baseline']}'s for {r['flops_ratio']:.2f}x its FLOPs (target <= {FLOPS_SLACK} x the "
                          f"FLOPs ratio = {FLOPS_SLACK * r['flops_ratio']:.2f}x): {'met' if passed else 'NOT met'}")
    grid, factor = SCALING_TARGET
    for s in scaling_rows:
        if s['grid'] != grid or s['mode'] != 'fwd':
            continue
        for impl in (k[:-8] for k in s if k.endswith('_speedup')):
            sp, mem = s[f'{impl}_speedup'], s[f'{impl}_mem_ratio']
            passed = sp >= factor and (mem is None or mem >= factor)
            ok &= passed
            checks.append(f"GMamba block vs global attention ({impl}) at {grid}x{grid} tokens, forward: "
                          f"{sp:.1f}x faster, "
                          + (f'{mem:.1f}x lighter in peak memory' if mem else 'memory not measured')
                          + f" (target >= {factor}x each): {'met' if passed else 'NOT met'}")
    return checks, ok


def _load_line(rep: Dict[str, Any]) -> str:
    fmt = lambda v: '/'.join(f'{x:.2f}' for x in v) if v else 'n/a'
    before, after = rep.get('load_before'), rep.get('load_after')
    line = f'Load average (1/5/15 min, /proc/loadavg) before the run: {fmt(before)}; after: {fmt(after)}.'
    if before and before[0] >= 0.5:
        line += (' The machine was not quiet (1-minute load >= 0.5: other processes were running): absolute times '
                 'are inflated and noisier; the paired ratios less so.')
    return line


def _flops_table(rep: Dict[str, Any]) -> List[str]:
    rows = [r for r in rep['models'] if r['mode'] == 'fwd' and r.get('flops_ratio') and r.get('latency_ratio')]
    if not rows:
        return []
    b, (h, w) = rep['batch_size'], rep['img_size']
    lines = [f'## Latency ratio vs FLOPs ratio, all {len(rows)} models (forward, batch {b}, {h}x{w})', '',
             f"Each model's forward latency divided by its baseline's (timed in one process, alternating) against its "
             f"FLOPs divided by its baseline's (FLOPs: {rep.get('flops_source') or '-'}; multiply-adds). Target: "
             f'latency ratio <= {FLOPS_SLACK} x FLOPs ratio, i.e. the added blocks run at least about as efficiently '
             'per FLOP as the backbone around them. Where a model misses it, docs/cpu-cost.md says where its added '
             'time goes (`scripts/time_breakdown.py`) and why the rest is not worth chasing.', '',
             '| model | baseline | GFLOPs | baseline GFLOPs | FLOPs ratio | latency ratio | limit '
             f'({FLOPS_SLACK} x FLOPs ratio) | latency ratio / FLOPs ratio | target |', '|' + ' --- |' * 9]
    for r in rows:
        limit = FLOPS_SLACK * r['flops_ratio']
        lines.append(f"| {r['model']} | {r['baseline']} | {r['gflops']:.2f} | {r['baseline_gflops']:.2f} | "
                     f"{r['flops_ratio']:.2f}x | {r['latency_ratio']:.2f}x | {limit:.2f}x | "
                     f"{r['latency_ratio'] / r['flops_ratio']:.2f} | "
                     f"{'met' if r['latency_ratio'] <= limit else 'NOT met'} |")
    return lines + ['']


def markdown(rep: Dict[str, Any], command: str) -> str:
    m, s = rep['machine'], rep['settings']
    lines = ['# Speed and memory benchmark', '',
             f'Generated by `{command}` (also `gmamba-zoo benchmark`); do not edit by hand.', '',
             f"Machine: {m['cpu']}, {m['cores']} cores"
             + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if 'gpu' in m else '') +
             f"; torch {m['torch']}, Python {m['python']}. Date: {m['date']}.", '',
             f'Settings: {_settings_line(s)}.', '', _load_line(rep), '',
             'Latency is the median of the timed runs; throughput is batch / latency. `fwd` is inference (eval, '
             'no_grad); `fwd_bwd` is a training step without the optimizer (train mode, `out.sum().backward()`). '
             'Peak memory is above the model weights and the input, for one run: `torch.cuda.max_memory_allocated` '
             'on CUDA, the peak resident set (VmHWM, reset through /proc/self/clear_refs, glibc mmap threshold 64 KiB) '
             'on CPU. Each memory figure comes from a fresh process; a model and its baseline are timed in one '
             'process, alternating iteration by iteration, so that drift in the machine\'s speed hits both alike.', '']
    if rep['models']:
        b, (h, w) = rep['batch_size'], rep['img_size']
        lines += [f'## Models (batch {b}, {h}x{w})', '',
                  '| model | mode | ms | img/s | peak MB | baseline | baseline ms | baseline img/s | baseline peak MB '
                  '| latency vs baseline |', '|' + ' --- |' * 10]
        for r in rep['models']:
            lines.append(f"| {r['model']} | {r['mode']} | {r['median_ms']:.1f} | {r['img_per_s']:.1f} | "
                         f"{_fmt_mem(r['peak_mb'])} | {r['baseline'] or '-'} | "
                         + (f"{r['baseline_median_ms']:.1f} | {r['baseline_img_per_s']:.1f} | "
                            f"{_fmt_mem(r['baseline_peak_mb'])} | {r['latency_ratio']:.2f}x |"
                            if r['baseline_median_ms'] else '- | - | - | - |'))
        lines.append('')
        ckpt = [r for r in rep['models'] if r.get('peak_ckpt_mb') is not None]
        if ckpt:
            lines += ['Peak memory of a training step (`fwd_bwd`) without and with timm\'s gradient checkpointing '
                      '(`model.set_grad_checkpointing()`: each block, GMamba blocks included, recomputes its '
                      'activations in backward; `--grad-checkpointing`):', '',
                      '| model | peak MB | with checkpointing | baseline | baseline peak MB | with checkpointing |',
                      '|' + ' --- |' * 6]
            lines += [f"| {r['model']} | {_fmt_mem(r['peak_mb'])} | {_fmt_mem(r['peak_ckpt_mb'])} | "
                      f"{r['baseline'] or '-'} | {_fmt_mem(r['baseline_peak_mb'])} | "
                      f"{_fmt_mem(r['baseline_peak_ckpt_mb'])} |" for r in ckpt]
            lines.append('')
    lines += _flops_table(rep)
    if rep['scaling']:
        impls = rep['attn_impls']
        s0 = rep['scaling'][0]
        lines += ['## Scaling: GMamba block vs global attention', '',
                  f"Width {s0['dim']}, {s0['heads']} attention heads, batch {rep['batch_size']}. Both blocks take a "
                  '[B, C, H, W] map; the attention block is timm\'s pre-norm ViT `Block` (global MHSA over H*W tokens '
                  '+ MLP ratio 4). `sdpa`: PyTorch\'s fused scaled_dot_product_attention; `math`: explicit '
                  'softmax(q k^T) v with the L x L matrix. Ratios are attention / GMamba (above 1: GMamba wins).', '',
                  '| mode | tokens | GMamba ms | GMamba peak MB | '
                  + ' | '.join(f'{i} ms | {i} peak MB | speed ratio ({i}) | memory ratio ({i})' for i in impls) + ' |',
                  '|' + ' --- |' * (4 + 4 * len(impls))]
        for r in rep['scaling']:
            lines.append(f"| {r['mode']} | {r['grid']}x{r['grid']} | {r['gmamba_ms']:.1f} | "
                         f"{_fmt_mem(r['gmamba_peak_mb'])} | "
                         + ' | '.join(f"{r[f'{i}_ms']:.1f} | {_fmt_mem(r[f'{i}_peak_mb'])} | "
                                      f"{r[f'{i}_speedup']:.2f}x | "
                                      + (f"{r[f'{i}_mem_ratio']:.2f}x" if r[f'{i}_mem_ratio'] else '-') for i in impls)
                         + ' |')
        lines += ['', 'Crossover:', ''] + [f'- {c}' for c in rep['crossover']] + ['']
    if rep['checks']:
        lines += ['## Targets', ''] + [f'- {c}' for c in rep['checks']] + ['']
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--what', nargs='+', choices=('models', 'scaling'), default=['models', 'scaling'],
                        help='model benchmark, scaling study, or both (default)')
    parser.add_argument('--models', nargs='*', help='timm model names (default: every zoo model)')
    parser.add_argument('--base', help='any timm backbone: measure it with GMamba blocks (--depths) beside itself; '
                                       'with --models, in addition to those')
    parser.add_argument('--depths', type=int, nargs='+', default=[1, 1, 1, 1],
                        help='with --base: GMamba blocks after each of its last len(depths) feature taps')
    parser.add_argument('--no-baselines', action='store_true', help='do not measure the plain timm baselines')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--img-size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--modes', nargs='+', choices=('fwd', 'fwd_bwd'), default=['fwd', 'fwd_bwd'])
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs before timing')
    parser.add_argument('--iters', type=int, default=10, help='timed runs (median reported)')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available)")
    parser.add_argument('--channels-last', action='store_true', help='channels_last model and input')
    parser.add_argument('--tf32', action='store_true', help='allow TF32 in matmuls and cuDNN (CUDA)')
    parser.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none', help='autocast dtype')
    parser.add_argument('--scan-backend', choices=SCAN_BACKENDS, default='auto', help='selective-scan backend')
    parser.add_argument('--no-memory', action='store_true', help='skip peak-memory measurements')
    parser.add_argument('--threads', type=int, help="intra-op threads of the measuring processes (default: torch's)")
    parser.add_argument('--flops-report', type=Path, default=None, metavar='JSON',
                        help='read the FLOPs of the latency-vs-FLOPs table from this `gmamba-zoo flops --out` JSON '
                             '(scripts/benchmark.py passes docs/flops.json) instead of counting them now')
    parser.add_argument('--grad-checkpointing', action='store_true',
                        help='fwd_bwd: also measure peak memory with gradient checkpointing on')
    parser.add_argument('--dim', type=int, default=96, help='scaling study: block width')
    parser.add_argument('--heads', type=int, help='scaling study: attention heads (default: dim // 32)')
    parser.add_argument('--grids', type=int, nargs='+', default=[16, 32, 48, 64, 96, 128],
                        help='scaling study: token grid sides')
    parser.add_argument('--attn-impl', nargs='+', choices=ATTN_IMPLS, default=list(ATTN_IMPLS))
    parser.add_argument('--out', type=Path, help='write the Markdown report here and JSON beside it (.json)')
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    device = args.device if args.device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('gmamba-zoo benchmark: --device cuda but CUDA is not available.')
    load_before = load_average()
    mach, settings = machine(device), _settings(args, device)
    total = (sum(map(len, _model_jobs(args))) if 'models' in args.what else 0) + \
        (len(_scaling_jobs(args)) if 'scaling' in args.what else 0)
    with Progress('benchmark', total, 'run', args.quiet) as log:
        log(f"{mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, {mach['date']}")
        log(f'settings: {_settings_line(settings)}')
        base = {k: settings[k] for k in ('device', 'warmup', 'iters', 'channels_last', 'tf32', 'amp', 'scan_backend',
                                         'threads')}
        model_rows = run_models(args, base, log) if 'models' in args.what else []
        log.stage('FLOPs')
        flops_source = attach_flops(model_rows, args.img_size, getattr(args, 'flops_report', None), log)
        scaling_rows = run_scaling(args, base, log) if 'scaling' in args.what else []
    checks, ok = check_targets(model_rows, scaling_rows, args.img_size, args.batch_size)
    rep = {'machine': mach, 'settings': settings, 'batch_size': args.batch_size, 'img_size': list(args.img_size),
           'models': model_rows, 'scaling': scaling_rows, 'attn_impls': list(args.attn_impl),
           'crossover': crossovers(scaling_rows, args.attn_impl), 'checks': checks, 'flops_source': flops_source,
           'load_before': load_before, 'load_after': load_average()}
    write_report(args.out, markdown(rep, command_line('scripts/benchmark.py', 'benchmark', args)), rep)
    return 0 if ok else 1


if __name__ == '__main__':  # a measuring child of _spawn: python -m gmamba_zoo.bench.models --child SPEC_JSON
    print(json.dumps(_child(json.loads(sys.argv[2]))))

"""torch.compile against eager for a zoo model: compile time per input size, recompiles, steady-state speed and the
largest output difference.

``python scripts/bench_compile.py --model resnet18_gmamba --sizes 224 256 --backend inductor [--dynamic]`` (on a
GPU add ``--device cuda``). Every size is a new input to the same compiled model, so the first call of the second
size shows whether it recompiles (``graphs`` grows) or reuses the graph (``--dynamic``: ``torch.compile(...,
dynamic=True)``). Inductor compiles C++/Triton code, minutes on a small CPU, so the test suite checks correctness and
recompiles with backends that generate no code (tests/test_robustness.py) and this script measures inductor. Run it
twice to see the compile cache at work: inductor keeps compiled graphs on disk (``TORCHINDUCTOR_CACHE_DIR``, by
default under the temp directory) and a second process finds them.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .machine import load_average, machine
from .progress import Progress, add_quiet_argument

__all__ = ['bench_compile', 'add_arguments', 'run']


def _time(fn, x: torch.Tensor, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(x)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def _graphs_compiled() -> int:
    """Graphs dynamo has handed to a backend in this process (its own counter; 0 where torch lacks it)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters['stats']['unique_graphs'])


def bench_compile(model_name: str, sizes: Sequence[int] = (224,), batch: int = 1, backend: str = 'inductor',
                  device: str = 'cpu', repeats: int = 5, mode: Optional[str] = None,
                  dynamic: Optional[bool] = None, progress: Optional[Progress] = None) -> List[Dict[str, Any]]:
    """Eager vs ``torch.compile(model, backend=..., mode=..., dynamic=...)`` inference of one model (GMamba blocks
    active: layer scale 0.1), at each of ``sizes`` in turn with the same compiled model.

    Returns:
        One dict per size: ``first_call_s`` (the compiled model's first call at that size: compile or recompile
        included when one happens), ``graphs`` (graphs compiled so far in this process), ``eager_ms`` and
        ``compiled_ms`` (minimum over ``repeats``), ``max_abs_diff`` and ``rel_diff`` (L2) of the outputs.

    ``progress`` (if given) gets 1 + 3 per size stages: the build, then per size the compiled model's first call,
    the eager timing and the compiled timing.
    """
    import timm
    progress = progress or Progress('bench-compile', quiet=True)
    progress.add(1 + 3 * len(sizes))
    progress.stage(f'build {model_name}')
    dev = torch.device(device)
    kwargs = dict(gmamba_kwargs=dict(layer_scale_init_value=0.1)) if model_name.endswith('_gmamba') else {}
    model = timm.create_model(model_name, **kwargs).eval().to(dev)
    torch.compiler.reset()  # nothing compiled earlier in this process is reused: every compile is timed
    compiled = torch.compile(model, backend=backend, mode=mode, dynamic=dynamic)
    graphs0, rows = _graphs_compiled(), []
    progress.done()
    for size in sizes:
        x = torch.randn(batch, 3, size, size, device=dev)
        with torch.no_grad():
            y_eager = model(x)
            progress.stage(f'{size}px: compile and first call')
            t = time.perf_counter()
            y_comp = compiled(x)
            first_call_s = time.perf_counter() - t
            progress.done()
            progress.stage(f'{size}px: eager timing')
            eager_ms = _time(model, x, repeats, dev)
            progress.done()
            progress.stage(f'{size}px: compiled timing')
            compiled_ms = _time(compiled, x, repeats, dev)
            progress.done()
        diff = (y_comp.float() - y_eager.float())
        rows.append(dict(size=size, first_call_s=first_call_s, graphs=_graphs_compiled() - graphs0,
                         eager_ms=eager_ms, compiled_ms=compiled_ms, max_abs_diff=float(diff.abs().max()),
                         rel_diff=float(diff.norm() / y_eager.float().norm())))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``gmamba-zoo bench-compile``."""
    p.add_argument('--model', default='resnet18_gmamba')
    p.add_argument('--sizes', type=int, nargs='+', default=[224], help='input sizes, in turn (square images)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--backend', default='inductor')
    p.add_argument('--mode', default=None, help='torch.compile mode, e.g. max-autotune')
    p.add_argument('--dynamic', action='store_true', help='torch.compile(..., dynamic=True)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--repeats', type=int, default=5)
    add_quiet_argument(p)


def run(a: argparse.Namespace) -> int:
    """``gmamba-zoo bench-compile``: print the comparison as JSON."""
    with Progress('bench-compile', unit='stage', quiet=a.quiet) as progress:
        rows = bench_compile(a.model, a.sizes, a.batch, a.backend, a.device, a.repeats, a.mode, a.dynamic or None,
                             progress)
    print(json.dumps(dict(model=a.model, batch=a.batch, backend=a.backend, mode=a.mode, dynamic=a.dynamic,
                          device=a.device, machine=machine(), load_average=load_average(), runs=rows), indent=2))
    return 0

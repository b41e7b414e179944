"""torch.compile against eager for a zoo model: compile time, steady-state speed and the largest output difference.

``python scripts/bench_compile.py --model resnet18_gmamba --size 224 --backend inductor`` (on a GPU add
``--device cuda``). Inductor compiles C++/Triton code, minutes on a small CPU, so the test suite checks correctness
with the ``aot_eager`` backend (tests/test_robustness.py) and this script measures inductor.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict, Optional

import torch

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


def bench_compile(model_name: str, size: int = 224, batch: int = 1, backend: str = 'inductor', device: str = 'cpu',
                  repeats: int = 5, mode: Optional[str] = None) -> Dict[str, float]:
    """Eager vs ``torch.compile(backend=...)`` inference of one model (GMamba blocks active: layer scale 0.1).

    Returns:
        ``compile_s`` (first call), ``eager_ms`` and ``compiled_ms`` (minimum over ``repeats``), ``max_abs_diff`` and
        ``rel_diff`` (L2) of the outputs.
    """
    import timm
    dev = torch.device(device)
    kwargs = dict(gmamba_kwargs=dict(layer_scale_init_value=0.1)) if model_name.endswith('_gmamba') else {}
    model = timm.create_model(model_name, **kwargs).eval().to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    compiled = torch.compile(model, backend=backend, mode=mode)
    with torch.no_grad():
        y_eager = model(x)
        t = time.perf_counter()
        y_comp = compiled(x)
        compile_s = time.perf_counter() - t
        eager_ms = _time(model, x, repeats, dev)
        compiled_ms = _time(compiled, x, repeats, dev)
    diff = (y_comp.float() - y_eager.float())
    return dict(compile_s=compile_s, eager_ms=eager_ms, compiled_ms=compiled_ms,
                max_abs_diff=float(diff.abs().max()), rel_diff=float(diff.norm() / y_eager.float().norm()))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``gmamba-zoo bench-compile``."""
    p.add_argument('--model', default='resnet18_gmamba')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--backend', default='inductor')
    p.add_argument('--mode', default=None, help='torch.compile mode, e.g. max-autotune')
    p.add_argument('--device', default='cpu')
    p.add_argument('--repeats', type=int, default=5)


def run(a: argparse.Namespace) -> int:
    """``gmamba-zoo bench-compile``: print the comparison as JSON."""
    res = bench_compile(a.model, a.size, a.batch, a.backend, a.device, a.repeats, a.mode)
    print(json.dumps(dict(model=a.model, size=a.size, batch=a.batch, backend=a.backend, device=a.device,
                          torch=torch.__version__, **res), indent=2))
    return 0

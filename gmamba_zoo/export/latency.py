"""CPU latency of an exported model in onnxruntime beside PyTorch eager (``scripts/onnx_latency.py``).

The two run alternately on the same inputs with the same number of threads, after warm-up runs; the median of each
is reported, with the machine, its load average before and after (timings taken on a busy machine are noisier), and
onnxruntime's largest relative difference from PyTorch on those inputs.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from ..bench.machine import load_average, machine
from ..compat.extras import require_extra
from .onnx import export_onnx, onnx_session
from .program import build_model

__all__ = ['onnx_latency', 'latency_report']


def _time_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def onnx_latency(
        name: str,
        img_size: Sequence[int] = (224, 224),
        batch: int = 1,
        threads: int = 1,
        repeats: int = 10,
        warmup: int = 3,
        onnx_path: Optional[str] = None,
        model_args: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Latency of ``name`` (random weights, blocks active: zero-initialised tensors set to 0.1) in PyTorch eager and
    in onnxruntime, on CPU.

    Args:
        name: A registered model name.
        img_size: (H, W) of the timed input (also the export's example size).
        batch: Batch size of the timed input.
        threads: Intra-op threads of both runtimes.
        repeats: Timed runs of each; the medians are reported.
        warmup: Untimed runs of each first.
        onnx_path: Where to write the ONNX file (a temporary file if None).
        model_args: Model arguments for ``timm.create_model``.

    Returns:
        ``eager_ms``, ``onnxruntime_ms``, ``ratio`` (onnxruntime / eager), ``max_rel_error``, ``export_s`` and the
        settings.
    """
    require_extra('onnx', 'onnx_latency')
    model = build_model(name, **(model_args or {}))
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.fill_(0.1)
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_path or str(Path(tmp) / f'{name}.onnx')
        res = export_onnx(model, path, img_size=img_size, check=False)
        session = onnx_session(path, threads=threads)
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            x = torch.randn(batch, 3, *img_size)
            feed = {res.input_name: x.numpy()}
            with torch.no_grad():
                for _ in range(warmup):
                    model(x)
                    session.run(None, feed)
                eager, ort = [], []
                for _ in range(repeats):  # alternate, so that a change of load hits both alike
                    eager.append(_time_ms(lambda: model(x)))
                    ort.append(_time_ms(lambda: session.run(None, feed)))
                expected = model(x)
            got = session.run(None, feed)[0]
        finally:
            torch.set_num_threads(torch_threads)
    expected = (expected if isinstance(expected, torch.Tensor) else expected[0]).float().numpy()
    eager_ms, ort_ms = statistics.median(eager), statistics.median(ort)
    return dict(model=name, img_size=list(img_size), batch=batch, threads=threads, repeats=repeats,
                eager_ms=eager_ms, onnxruntime_ms=ort_ms, ratio=ort_ms / eager_ms,
                max_rel_error=float(np.abs(got - expected).max() / np.abs(expected).max()), export_s=res.export_s)


def latency_report(names: Sequence[str], **kwargs: Any) -> Dict[str, Any]:
    """:func:`onnx_latency` for each of ``names``, with the machine and its load average before and after."""
    require_extra('onnx', 'latency_report')
    import onnxruntime
    info = dict(machine(), onnxruntime=onnxruntime.__version__, load_before=load_average())
    rows = [onnx_latency(n, **kwargs) for n in names]
    return dict(machine=info, load_after=load_average(), rows=rows)

"""One check of everything that runs differently on a GPU: ``gmamba-zoo check-gpu`` (``python scripts/check_gpu.py``).

Four sections, each a function taking ``device`` (``'cuda'`` for the real check; ``'cpu'`` runs the same code at tiny
sizes, which is how the test suite checks the checker):

1. :func:`check_parity`: every scan backend that can run on ``device`` (on CUDA: ``triton``, ``cuda`` = mamba-ssm's
   kernel, ``torch``; a backend that cannot run is named as skipped, with the reason) against the float64 oracle,
   :func:`gmamba_zoo.ops.selective_scan_ref` on float64 copies of the same (rounded) inputs, for float32, bfloat16 and
   float16 inputs, with and without ``z``/``D``/``delta_bias``/``delta_softplus``: the output and the gradients of
   every input (u, delta, A, B, C, D, z, delta_bias) within :data:`TOL`; then a GMamba block under each backend
   against the same block under ``torch``.
2. :func:`check_speed`: the backends' forward and forward+backward time (and peak CUDA memory) at the shapes of
   ``gmamba-zoo bench-scan --device cuda``, measured by its own timing code (:mod:`gmamba_zoo.bench.scan`). Reported,
   never failed: speed is not correctness.
3. :func:`check_amp`: one training step of each of :data:`AMP_MODELS` under autocast (bfloat16; float16 with a
   ``GradScaler``) beside a float32 step of the same model on the same batch: finite loss, finite gradients and
   parameters after the step, loss and gradient direction close to float32's (:data:`AMP_TOL`).
4. :func:`check_compile`: ``torch.compile`` of one model against eager (:func:`gmamba_zoo.bench.compile.bench_compile`).

The report (Markdown, JSON beside it) records the GPU, the versions of torch, CUDA, Triton and mamba-ssm, and the date.
Exit status: 0 every check passed, 1 a check failed, 2 nothing was checked (no CUDA device).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import scan as bench_scan
from .machine import command_line, machine, write_report

__all__ = [
    'SECTIONS', 'DTYPES', 'TOL', 'VARIANTS', 'AMP_MODELS', 'AMP_TOL', 'COMPILE_TOL', 'SIZES', 'scan_backends',
    'check_parity', 'check_block', 'check_speed', 'check_amp', 'amp_step', 'check_compile', 'versions', 'markdown',
    'add_arguments', 'run',
]

SECTIONS = ('parity', 'speed', 'amp', 'compile')
DTYPES = ('float32', 'bfloat16', 'float16')
ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')

#: Relative error (Frobenius norm of the difference over that of the oracle) allowed for the output and for each
#: gradient. Every backend computes in float32 and returns the input's dtype, so the output and the gradients of
#: u, delta, B, C, z carry one rounding to that dtype (2^-8 relative for bfloat16, 2^-11 for float16, about a third of
#: that as a norm) on top of float32 arithmetic; the CPU tests hold the PyTorch scan to 1e-4 (float32), 2e-2
#: (bfloat16) and 2e-3 (float16) on its output (tests/test_selective_scan.py).
TOL: Dict[str, Dict[str, float]] = {
    'float32': {'out': 1e-4, 'grad': 1e-4},
    'bfloat16': {'out': 1e-2, 'grad': 2e-2},
    'float16': {'out': 2e-3, 'grad': 5e-3},
}

#: Which optional inputs a case passes: (D, z, delta_bias, delta_softplus).
VARIANTS: Dict[str, Tuple[bool, bool, bool, bool]] = {
    'z+D+bias+softplus': (True, True, True, True),
    'plain': (False, False, False, False),
}

#: The sizes of one run: the real check on CUDA, a smoke run of the same code on CPU.
SIZES: Dict[str, Dict[str, Any]] = {
    'cuda': dict(parity_shapes={'odd': (2, 64, 8, 37), 'wide-N': (2, 96, 64, 196), 'S1': bench_scan.SHAPES['S1']},
                 speed_shapes=bench_scan.CUDA_SHAPES, repeats=5, warmup=1, amp_size=224, amp_batch=4,
                 compile_size=224, compile_batch=2, compile_backend='inductor'),
    'cpu': dict(parity_shapes={'tiny': (2, 5, 3, 13)}, speed_shapes=('1,8,4,64',), repeats=2, warmup=1,
                amp_size=64, amp_batch=2, compile_size=64, compile_batch=1, compile_backend='aot_eager'),
}

AMP_MODELS = ('resnet18_gmamba', 'convnext_t_gmamba', 'swin_t_gmamba', 'vgamba_b')
#: An AMP step against the float32 step: loss relative difference at most ``loss``, cosine similarity of the
#: flattened gradients at least ``cosine[dtype]``. They catch a broken mixed-precision path (an overflow, a gradient
#: lost or of the wrong sign gives a cosine near 0), not rounding: a sound bfloat16 step of swin_t_gmamba at 64 px on
#: CPU measured 0.91 (resnet18_gmamba 0.98, vgamba_b 0.99); the scan's own rounding is checked by the parity section.
AMP_TOL: Dict[str, Any] = {'loss': 5e-2, 'cosine': {'bfloat16': 0.8, 'float16': 0.9}}
AMP_SCALER_TRIES = 8  # GradScaler skips a step whose gradients overflow and halves its scale; this many tries
COMPILE_TOL = 1e-3  # relative (L2) difference of the compiled model's output from eager's

Log = Callable[[str], None]
ScanFn = Callable[..., torch.Tensor]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _error(e: BaseException) -> str:
    """One line naming an exception and where it came from."""
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    loc = f' ({Path(where.filename).name}:{where.lineno})' if where else ''
    return f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}{loc}'


# ----------------------------------------------------------------------------------------------------------------
# 1. Scan backends against the float64 oracle
# ----------------------------------------------------------------------------------------------------------------

def _candidates(device: str) -> Tuple[str, ...]:
    return bench_scan.CUDA_BACKENDS if torch.device(device).type == 'cuda' else ('numba', 'triton', 'torch')


def scan_backends(device: str) -> Tuple[Dict[str, ScanFn], Dict[str, str]]:
    """The scan backends that can run on ``device`` (name -> a function with ``selective_scan_fn``'s signature) and
    why each of the others cannot (on CUDA: triton, cuda, torch; on CPU: numba, triton, torch; Triton runs on CPU only
    under its interpreter, ``TRITON_INTERPRET=1``)."""
    from ..ops import resolve_scan_backend, selective_scan_fn
    runnable, skipped = {}, {}
    for name in _candidates(device):
        try:
            resolve_scan_backend(torch.device(device).type, name)
        except RuntimeError as e:
            skipped[name] = str(e).split(' Choose another backend')[0]
            continue
        runnable[name] = partial(selective_scan_fn, backend=name)
    return runnable, skipped


def _scan_case(dims: Sequence[int], dtype: torch.dtype, variant: str, device: str, seed: int = 0
               ) -> Tuple[Dict[str, Optional[torch.Tensor]], bool, torch.Tensor]:
    """Inputs of one case (u, delta, B, C, z in ``dtype``; A, D, delta_bias in float32, as the models hold them), its
    ``delta_softplus`` and the output gradient (in ``dtype``)."""
    b, d, n, length = dims
    with_d, with_z, with_bias, softplus = VARIANTS[variant]
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    delta = r(b, d, length) * 0.5 if softplus else F.softplus(r(b, d, length) * 0.5 - 1.0)  # > 0 without softplus
    ins = dict(u=r(b, d, length).to(dtype), delta=delta.to(dtype), A=-torch.exp(r(d, n)),
               B=r(b, n, length).to(dtype), C=r(b, n, length).to(dtype), D=r(d) if with_d else None,
               z=r(b, d, length).to(dtype) if with_z else None, delta_bias=r(d) * 0.1 if with_bias else None)
    dy = r(b, d, length).to(dtype).to(device)
    return {k: None if v is None else v.to(device).requires_grad_() for k, v in ins.items()}, softplus, dy


def _run_scan(fn: ScanFn, ins: Mapping[str, Optional[torch.Tensor]], softplus: bool, dy: torch.Tensor
              ) -> Tuple[torch.Tensor, Dict[str, Optional[torch.Tensor]]]:
    """Output and the gradient of every given input (None where the scan gave none: an input it did not use)."""
    out = fn(**ins, delta_softplus=softplus)
    given = [k for k in ARGS if ins[k] is not None]
    grads = torch.autograd.grad(out, [ins[k] for k in given], dy.to(out.dtype), allow_unused=True)
    return out.detach(), dict(zip(given, grads))


def _oracle(ins: Mapping[str, Optional[torch.Tensor]], softplus: bool, dy: torch.Tensor):
    from ..ops import selective_scan_ref
    ins64 = {k: None if v is None else v.detach().double().requires_grad_() for k, v in ins.items()}
    return _run_scan(selective_scan_ref, ins64, softplus, dy.double())


def _compare(got, want, dtype: str) -> Dict[str, Any]:
    """Relative errors of an output and its gradients against the oracle's, and the verdict."""
    (out, grads), (out_ref, grads_ref) = got, want
    errors, problems = {}, []
    if out.shape != out_ref.shape or out.dtype != getattr(torch, dtype):
        problems.append(f'output {tuple(out.shape)} {out.dtype}, expected {tuple(out_ref.shape)} {dtype}')
    else:
        errors['out'] = _rel(out, out_ref)
    for name, ref in grads_ref.items():
        grad = grads.get(name)
        if grad is None:
            problems.append(f'no gradient for {name}')
        elif grad.shape != ref.shape or not torch.isfinite(grad).all():
            problems.append(f'gradient of {name}: shape {tuple(grad.shape)} (expected {tuple(ref.shape)}) or '
                            'not finite')
        else:
            errors['d' + name] = _rel(grad, ref)
    tol = TOL[dtype]
    bad = {k: e for k, e in errors.items() if not e <= tol['out' if k == 'out' else 'grad']}  # NaN is bad
    worst = max(errors, key=lambda k: errors[k] / tol['out' if k == 'out' else 'grad']) if errors else None
    return {'errors': errors, 'worst': worst, 'problems': problems + [f'{k} rel err {e:.2e}' for k, e in bad.items()],
            'ok': not problems and not bad}


def check_parity(device: str, backends: Optional[Mapping[str, ScanFn]] = None,
                 shapes: Optional[Mapping[str, Sequence[int]]] = None, dtypes: Sequence[str] = DTYPES,
                 variants: Sequence[str] = tuple(VARIANTS), log: Log = _log) -> Dict[str, Any]:
    """Every backend against the float64 oracle, every dtype, variant and shape: output and all gradients.

    Args:
        device: Where the inputs live.
        backends: Name -> scan function with ``selective_scan_fn``'s signature; default :func:`scan_backends`.
        shapes: Label -> (batch, channels D, states N, length L); default ``SIZES[device type]['parity_shapes']``.
        dtypes: Input dtypes, names of :data:`TOL`.
        variants: Names of :data:`VARIANTS`.

    Returns:
        ``rows`` (one per backend and case: errors by output/gradient name, the worst one, problems, ``ok``),
        ``skipped`` (backend -> why it did not run) and ``ok``.
    """
    skipped: Dict[str, str] = {}
    if backends is None:
        backends, skipped = scan_backends(device)
    for name, why in skipped.items():
        log(f'  skipped {name}: {why}')
    shapes = shapes or SIZES[torch.device(device).type]['parity_shapes']
    rows = []
    for dtype in dtypes:
        for label, dims in shapes.items():
            for variant in variants:
                ins, softplus, dy = _scan_case(dims, getattr(torch, dtype), variant, device)
                oracle = _oracle(ins, softplus, dy)
                for name, fn in backends.items():
                    row = {'backend': name, 'dtype': dtype, 'shape': label, 'dims': list(dims), 'variant': variant}
                    try:
                        row.update(_compare(_run_scan(fn, ins, softplus, dy), oracle, dtype))
                    except Exception as e:  # a crash is a failed check; the others still run
                        row.update(errors={}, worst=None, problems=[_error(e)], ok=False)
                    rows.append(row)
                    worst = f"{row['worst']} {row['errors'][row['worst']]:.1e}" if row['worst'] else '-'
                    log(f"  {name:7s} {dtype:9s} {label} {tuple(dims)} {variant}: worst {worst} "
                        f"{'ok' if row['ok'] else 'FAILED ' + '; '.join(row['problems'])}")
    return {'rows': rows, 'skipped': skipped, 'ok': all(r['ok'] for r in rows)}


def check_block(device: str, backends: Sequence[str], tol: float = 1e-4, log: Log = _log) -> Dict[str, Any]:
    """A GMamba block (96 channels, a 33x47 map, layer scale 1) in float32 under each named backend against the same
    block under ``torch``: the scan as the layers call it (strided views, float32 weights)."""
    from ..layers import GMambaBlock
    from ..ops import scan_backend
    torch.manual_seed(0)
    block = GMambaBlock(96, layer_scale_init_value=1.0).to(device)
    x = torch.randn(2, 96, 33, 47, device=device)
    with torch.no_grad(), scan_backend('torch'):
        ref = block(x)
    rows = []
    for name in backends:
        if name == 'torch':
            continue
        row: Dict[str, Any] = {'backend': name, 'tol': tol}
        try:
            with torch.no_grad(), scan_backend(name):
                row['rel_err'] = _rel(block(x), ref)
            row['ok'] = row['rel_err'] <= tol
        except Exception as e:
            row.update(rel_err=None, ok=False, error=_error(e))
        rows.append(row)
        log(f"  GMambaBlock(96) under {name} vs torch: "
            f"{row.get('error') or format(row['rel_err'], '.1e')} {'ok' if row['ok'] else 'FAILED'}")
    return {'rows': rows, 'ok': all(r['ok'] for r in rows)}


# ----------------------------------------------------------------------------------------------------------------
# 2. Scan speed (bench-scan's shapes and timing code)
# ----------------------------------------------------------------------------------------------------------------

def check_speed(device: str, shapes: Optional[Sequence[str]] = None, repeats: Optional[int] = None,
                warmup: Optional[int] = None, log: Log = _log) -> Dict[str, Any]:
    """Forward and forward+backward time of every backend that runs on ``device`` at bench-scan's shapes, with its
    timing code (backends alternating iteration by iteration, ``torch.cuda.synchronize`` around each call on CUDA,
    float32, ``D`` and ``delta_bias``, no ``z``), in this process. Informational: it fails only on a crash.

    Args:
        shapes: Labels of ``bench_scan.SHAPES`` or ``B,D,N,L``; default ``SIZES[device type]['speed_shapes']``.
    """
    sizes = SIZES[torch.device(device).type]
    runnable, skipped = scan_backends(device)
    names = list(runnable)
    rows, ok = [], True
    for label in shapes or sizes['speed_shapes']:
        label, dims = bench_scan._parse_shape(label)
        spec = {'device': device, 'shape': list(dims), 'threads': torch.get_num_threads(), 'backends': names,
                'repeats': repeats or sizes['repeats'], 'warmup': warmup if warmup is not None else sizes['warmup']}
        row: Dict[str, Any] = {'shape': label, 'dims': list(dims)}
        try:
            row['results'] = bench_scan._child_time(spec)['results']
        except Exception as e:
            row['error'], ok = _error(e), False
            log(f'  {label} {tuple(dims)}: FAILED {row["error"]}')
            rows.append(row)
            continue
        med = lambda b, m: row['results'].get(b, {}).get(m, {}).get('median_ms')
        for mode in bench_scan.MODES:
            row[f'triton_vs_cuda_{mode}'] = bench_scan._ratio(med('triton', mode), med('cuda', mode))
            row[f'triton_vs_torch_{mode}'] = bench_scan._ratio(med('triton', mode), med('torch', mode))
        rows.append(row)
        log(f'  {label} {tuple(dims)}: ' + '; '.join(
            f"{b} fwd {med(b, 'fwd'):.3f} ms, fwd+bwd {med(b, 'fwd_bwd'):.3f} ms" for b in names))
    return {'rows': rows, 'backends': names, 'skipped': skipped, 'ok': ok}


# ----------------------------------------------------------------------------------------------------------------
# 3. One AMP training step against a float32 one
# ----------------------------------------------------------------------------------------------------------------

def _model_kwargs(name: str) -> Dict[str, Any]:
    # GMamba blocks start as the identity (layer scale 0); 0.1 makes them count in the loss and its gradients
    return dict(gmamba_kwargs=dict(layer_scale_init_value=0.1)) if name.endswith('_gmamba') else {}


def amp_step(name: str, device: str, dtype: str, size: int, batch: int, num_classes: int = 10,
             model_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One SGD step of ``name`` in train mode under ``torch.autocast(dtype)`` (float16: with a ``GradScaler``) beside
    the float32 gradients of the same model on the same batch.

    Returns:
        ``loss_fp32``, ``loss_amp``, ``loss_rel_diff``, ``grad_cosine`` (flattened gradients, AMP against float32),
        ``finite`` (loss, gradients, parameters after the step), ``skipped_steps`` (float16: steps the scaler skipped
        for overflowing gradients before one went through), ``ok`` and ``problems``.
    """
    import timm
    amp_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    kwargs = {**_model_kwargs(name), **(model_kwargs or {})}
    model = timm.create_model(name, num_classes=num_classes, **kwargs).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, num_classes, (batch,), device=device)

    loss32 = F.cross_entropy(model(x), target)
    grads32 = torch.autograd.grad(loss32, params)
    flat32 = torch.cat([g.reshape(-1) for g in grads32])

    opt = torch.optim.SGD(params, lr=1e-3)
    dev_type = torch.device(device).type
    scaler = torch.amp.GradScaler(dev_type) if amp_dtype is torch.float16 else None
    skipped, loss = 0, None
    for _ in range(AMP_SCALER_TRIES if scaler else 1):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev_type, dtype=amp_dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), target)
        if scaler is None:
            loss.backward()
            grads_finite = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
            opt.step()
            break
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grads_finite = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        scaler.step(opt)  # skipped (and the scale lowered) when a gradient overflowed
        scaler.update()
        if grads_finite:
            break
        skipped += 1
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.float().reshape(-1) for g in grads])
    res = {'model': name, 'dtype': dtype, 'size': size, 'batch': batch, 'logits_dtype': str(logits.dtype),
           'loss_fp32': loss32.item(), 'loss_amp': loss.item(),
           'loss_rel_diff': abs(loss.item() - loss32.item()) / max(abs(loss32.item()), 1e-12),
           'grad_cosine': F.cosine_similarity(flat.double(), flat32.double(), dim=0).item() if grads_finite else None,
           'skipped_steps': skipped,
           'finite': bool(math.isfinite(loss.item()) and grads_finite
                          and all(torch.isfinite(p).all() for p in params))}
    problems = []
    if not res['finite']:
        problems.append('non-finite loss, gradients or parameters' + (
            f' (the scaler skipped all {skipped} steps)' if scaler else ''))
    if logits.dtype != amp_dtype:
        problems.append(f'logits are {logits.dtype} under autocast({dtype}): autocast did not reach the model')
    if not res['loss_rel_diff'] <= AMP_TOL['loss']:
        problems.append(f"loss differs from float32's by {res['loss_rel_diff']:.1e} (relative)")
    if res['grad_cosine'] is not None and not res['grad_cosine'] >= AMP_TOL['cosine'][dtype]:
        problems.append(f"gradient cosine similarity to float32's {res['grad_cosine']:.3f}")
    res.update(problems=problems, ok=not problems)
    return res


def check_amp(device: str, models: Sequence[str] = AMP_MODELS, dtypes: Optional[Sequence[str]] = None,
              size: Optional[int] = None, batch: Optional[int] = None,
              model_kwargs: Optional[Mapping[str, Dict[str, Any]]] = None, log: Log = _log) -> Dict[str, Any]:
    """:func:`amp_step` for every model and autocast dtype (default: bfloat16 and float16 on CUDA, bfloat16 on CPU)."""
    sizes = SIZES[torch.device(device).type]
    dtypes = dtypes or (('bfloat16', 'float16') if torch.device(device).type == 'cuda' else ('bfloat16',))
    rows = []
    for name in models:
        for dtype in dtypes:
            try:
                row = amp_step(name, device, dtype, size or sizes['amp_size'], batch or sizes['amp_batch'],
                               model_kwargs=(model_kwargs or {}).get(name))
            except Exception as e:
                row = {'model': name, 'dtype': dtype, 'ok': False, 'problems': [_error(e)]}
            rows.append(row)
            detail = (f"loss {row['loss_amp']:.4f} vs fp32 {row['loss_fp32']:.4f}, grad cosine "
                      f"{row['grad_cosine'] if row['grad_cosine'] is None else format(row['grad_cosine'], '.4f')}"
                      if 'loss_amp' in row else '')
            log(f"  {name} autocast {dtype}: {detail} {'ok' if row['ok'] else 'FAILED ' + '; '.join(row['problems'])}")
    return {'rows': rows, 'ok': all(r['ok'] for r in rows)}


# ----------------------------------------------------------------------------------------------------------------
# 4. torch.compile against eager
# ----------------------------------------------------------------------------------------------------------------

def check_compile(device: str, model: str = 'resnet18_gmamba', size: Optional[int] = None,
                  batch: Optional[int] = None, backend: Optional[str] = None, repeats: int = 3,
                  tol: float = COMPILE_TOL, log: Log = _log) -> Dict[str, Any]:
    """``torch.compile`` (default: inductor on CUDA, aot_eager on CPU) of one model in eval mode against eager:
    compile time, steady-state times, output difference (:func:`gmamba_zoo.bench.compile.bench_compile`)."""
    from .compile import bench_compile
    sizes = SIZES[torch.device(device).type]
    backend = backend or sizes['compile_backend']
    res: Dict[str, Any] = {'model': model, 'backend': backend, 'tol': tol}
    try:
        (row,) = bench_compile(model, (size or sizes['compile_size'],), batch or sizes['compile_batch'], backend,
                               device, repeats)
        res.update(row, ok=row['rel_diff'] <= tol)
        log(f"  {model} {backend}: first call {row['first_call_s']:.1f} s, eager {row['eager_ms']:.2f} ms, compiled "
            f"{row['compiled_ms']:.2f} ms, rel diff {row['rel_diff']:.1e} {'ok' if res['ok'] else 'FAILED'}")
    except Exception as e:
        res.update(ok=False, error=_error(e))
        log(f'  {model} {backend}: FAILED {res["error"]}')
    return res


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

HOW_TO_RUN = """\
How to run, on a machine with an NVIDIA GPU (sized to finish within 5 minutes; each section's time is in the
report). `pip install -e .[cuda]` adds mamba-ssm's kernel, which is checked when it imports and named as skipped
when it does not:

```
python scripts/check_gpu.py                  # all four sections; writes docs/gpu-check.md and docs/gpu-check.json
gmamba-zoo check-gpu --sections parity amp   # the same through the CLI, some sections only
```

Sections: (1) every scan backend (Triton, mamba-ssm's CUDA kernel, the PyTorch scan) against the float64 oracle
`selective_scan_ref`, float32/bfloat16/float16 inputs, with and without `z`/`D`/`delta_bias`/softplus, the output
and the gradients of all eight inputs; (2) the backends' speed at `bench-scan`'s CUDA shapes (reported; it fails
only on a crash); (3) one AMP training step (bfloat16 autocast; float16 with a GradScaler) of resnet18_gmamba,
convnext_t_gmamba, swin_t_gmamba and vgamba_b at 224 px beside a float32 step; (4) `torch.compile` (inductor) of
resnet18_gmamba against eager. Exit status 0: every check passed; 1: a check
failed; 2: no CUDA device, nothing checked. `--device cpu` runs the same code at tiny sizes (a smoke test of the
script, not a GPU check)."""


def _pkg_version(dist: str, module: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return getattr(__import__(module), '__version__', 'unknown')
    except Exception:  # not installed, or broken: the report says '-'
        return None


def versions(device: str) -> Dict[str, Any]:
    """The machine (:func:`gmamba_zoo.bench.machine.machine`), the GPU and CUDA, and the versions of Triton,
    mamba-ssm and numba; the date and time (UTC)."""
    info = machine()
    info['date'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')
    info.update(triton=_pkg_version('triton', 'triton'), mamba_ssm=_pkg_version('mamba-ssm', 'mamba_ssm'),
                numba=_pkg_version('numba', 'numba'), cuda=torch.version.cuda)
    if torch.device(device).type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['capability'] = '.'.join(map(str, torch.cuda.get_device_capability(device)))
    return info


def _fmt(x: Optional[float], spec: str = '.1e') -> str:
    return '-' if x is None else format(x, spec)


def _verdict(ok: bool) -> str:
    return 'ok' if ok else '**FAILED**'


def markdown(rep: Dict[str, Any], command: str) -> str:
    """The report of one run (``rep`` as :func:`run` builds it)."""
    m, sec = rep['machine'], dict(rep['sections'])
    failed = [name for name, s in sec.items() if not s['ok']]
    lines = ['# GPU check', '', f'Generated by `{command}` (also `gmamba-zoo check-gpu`); do not edit by hand.', '',
             HOW_TO_RUN, '', '## This run', '']
    if rep['device'] == 'cpu':
        lines += ['**Device cpu: a smoke run of the script at tiny sizes, not a GPU check.**', '']
    lines += [f"Device: {m.get('gpu', rep['device'])}" + (f" (compute capability {m['capability']})"
                                                          if 'capability' in m else '')
              + f"; CPU {m['cpu']}, {m['cores']} cores. torch {m['torch']} (CUDA {m['cuda'] or '-'}), Triton "
              f"{m['triton'] or '-'}, mamba-ssm {m['mamba_ssm'] or 'not installed'}, numba {m['numba'] or '-'}, "
              f"Python {m['python']}. Date: {m['date']}. Time: {rep['seconds']:.0f} s.", '',
              ('Result: every check passed.' if not failed else f"Result: **FAILED** ({', '.join(failed)})."), '']
    for name in [n for n, s in sec.items() if 'crashed' in s]:
        lines += [f"Section `{name}` **crashed** before it finished: {sec.pop(name)['crashed']}", '']
    if 'parity' in sec:
        s = sec['parity']
        lines += ['## 1. Scan backends against the float64 oracle', '',
                  'Relative error (Frobenius norm of the difference over the oracle\'s) of the output and of every '
                  'gradient; the worst, relative to its tolerance, is shown. Tolerances (output / gradients): '
                  + '; '.join(f"{d} {t['out']:g} / {t['grad']:g}" for d, t in TOL.items()) + '.', '']
        if s['skipped']:
            lines += ['Skipped: ' + '; '.join(f'`{b}`: {why}' for b, why in s['skipped'].items()), '']
        lines += ['| backend | dtype | shape (B, D, N, L) | variant | out | worst gradient | result |',
                  '| --- | --- | --- | --- | --- | --- | --- |']
        for r in s['rows']:
            grads = {k: e for k, e in r['errors'].items() if k != 'out'}
            wg = max(grads, key=grads.get) if grads else None
            lines.append(f"| {r['backend']} | {r['dtype']} | {r['shape']} ({', '.join(map(str, r['dims']))}) | "
                         f"{r['variant']} | {_fmt(r['errors'].get('out'))} | "
                         f"{f'{wg} {grads[wg]:.1e}' if wg else '-'} | "
                         f"{_verdict(r['ok'])}{': ' + '; '.join(r['problems']) if r['problems'] else ''} |")
        lines.append('')
        for r in s.get('block', {}).get('rows', []):
            lines.append(f"- GMambaBlock(96), 33x47 map, float32, `{r['backend']}` against `torch`: relative error "
                         f"{r.get('error') or _fmt(r['rel_err'])} (tolerance {r['tol']:g}): {_verdict(r['ok'])}")
        lines.append('')
    if 'speed' in sec:
        s = sec['speed']
        lines += ['## 2. Scan speed', '',
                  "`bench-scan`'s shapes and timing code: float32, `D` and `delta_bias`, no `z`; the backends timed "
                  'alternately; median (min) ms; peak memory of one forward+backward above what was allocated '
                  'before. Informational: this section fails only if a run crashes.', '']
        if s['skipped']:
            lines += ['Not measured: ' + '; '.join(f'`{b}`: {why}' for b, why in s['skipped'].items()), '']
        lines += ['| shape | B, D, N, L | backend | fwd ms | fwd+bwd ms | peak MB |',
                  '| --- | --- | --- | --- | --- | --- |']
        for r in s['rows']:
            if 'error' in r:
                lines.append(f"| {r['shape']} | {', '.join(map(str, r['dims']))} | - | **FAILED**: {r['error']} | | |")
                continue
            for b, res in r['results'].items():
                cell = lambda mode: f"{res[mode]['median_ms']:.3f} ({res[mode]['min_ms']:.3f})"
                lines.append(f"| {r['shape']} | {', '.join(map(str, r['dims']))} | {b} | {cell('fwd')} | "
                             f"{cell('fwd_bwd')} | {_fmt(res.get('peak_mb'), '.1f')} |")
        lines.append('')
        for r in s['rows']:
            ratios = [f"Triton takes {r[f'triton_vs_{key}_{mode}']:.2f}x {other}'s time, {bench_scan._MODE_NAMES[mode]}"
                      for key, other in (('cuda', 'mamba-ssm'), ('torch', 'the PyTorch scan'))
                      for mode in bench_scan.MODES if r.get(f'triton_vs_{key}_{mode}') is not None]
            if ratios:
                lines.append(f"- {r['shape']}: " + '; '.join(ratios) + '.')
        lines += [f"- The goal for Triton is at most {bench_scan.TRITON_GOAL}x mamba-ssm's time (see "
                  '`gmamba-zoo bench-scan --device cuda`); it is not a pass/fail check here.', '']
    if 'amp' in sec:
        lines += ['## 3. AMP training step against float32', '',
                  f"One SGD step in train mode under `torch.autocast` (float16 with a GradScaler: up to "
                  f"{AMP_SCALER_TRIES} tries, a step skipped for overflowing gradients is counted), beside the float32 "
                  f"gradients of the same model and batch. Checks: finite loss, gradients and parameters; loss "
                  f"relative difference <= {AMP_TOL['loss']:g}; cosine similarity of the gradients >= "
                  + ', '.join(f'{c:g} ({d})' for d, c in AMP_TOL['cosine'].items())
                  + ' (these catch a broken mixed-precision path, not rounding).', '',
                  '| model | autocast | size, batch | loss fp32 | loss AMP | rel diff | grad cosine | skipped steps | '
                  'result |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for r in sec['amp']['rows']:
            if 'loss_amp' not in r:
                lines.append(f"| {r['model']} | {r['dtype']} | | | | | | | **FAILED**: {'; '.join(r['problems'])} |")
                continue
            lines.append(f"| {r['model']} | {r['dtype']} | {r['size']}, {r['batch']} | {r['loss_fp32']:.4f} | "
                         f"{r['loss_amp']:.4f} | {r['loss_rel_diff']:.1e} | {_fmt(r['grad_cosine'], '.4f')} | "
                         f"{r['skipped_steps']} | {_verdict(r['ok'])}"
                         f"{': ' + '; '.join(r['problems']) if r['problems'] else ''} |")
        lines.append('')
    if 'compile' in sec:
        c = sec['compile']
        lines += ['## 4. torch.compile against eager', '']
        if 'error' in c:
            lines.append(f"- `{c['model']}`, backend `{c['backend']}`: **FAILED**: {c['error']}")
        else:
            lines.append(f"- `{c['model']}` (eval, GMamba layer scale 0.1), {c['size']} px, backend `{c['backend']}`: "
                         f"first call (compile) {c['first_call_s']:.1f} s, graphs {c['graphs']}, eager "
                         f"{c['eager_ms']:.2f} ms, compiled {c['compiled_ms']:.2f} ms (min of the timed calls); output "
                         f"relative difference {c['rel_diff']:.1e}, max abs {c['max_abs_diff']:.1e} (tolerance "
                         f"{c['tol']:g}): {_verdict(c['ok'])}")
        lines.append('')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--device', default='cuda',
                        help="'cuda' (or 'cuda:N'): the check; 'cpu': the same code at tiny sizes (a smoke test)")
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS), help='what to run')
    parser.add_argument('--dtypes', nargs='+', choices=DTYPES, default=list(DTYPES),
                        help='input dtypes of the scan parity section')
    parser.add_argument('--models', nargs='+', default=list(AMP_MODELS), help='models of the AMP section')
    parser.add_argument('--compile-model', default='resnet18_gmamba', help='the model of the torch.compile section')
    parser.add_argument('--out', type=Path, default=None,
                        help='the Markdown report (JSON beside it); default docs/gpu-check.md on CUDA, none on CPU')


def run(args: argparse.Namespace) -> int:
    """``gmamba-zoo check-gpu``: run the sections, write the report, return 0 (all passed), 1 (a check failed) or 2
    (no CUDA device: nothing checked, nothing written)."""
    device = args.device
    try:
        dev_type = torch.device(device).type
    except RuntimeError as e:
        raise SystemExit(f'gmamba-zoo check-gpu: --device {device!r} is not a device ({e}); use cuda or cpu') from None
    if dev_type not in SIZES:
        raise SystemExit(f'gmamba-zoo check-gpu: --device must be cuda (cuda:N) or cpu, got {device!r}')
    if dev_type == 'cuda' and not torch.cuda.is_available():
        print('gmamba-zoo check-gpu: no CUDA device is available here (torch.cuda.is_available() is False): nothing '
              'was checked and no report was written. Run it on a machine with an NVIDIA GPU (or --device cpu for a '
              'smoke run of the script itself).')
        return 2
    out = args.out if args.out is not None or dev_type != 'cuda' else Path('docs/gpu-check.md')
    t0 = time.perf_counter()
    rep: Dict[str, Any] = {'device': device, 'machine': versions(device), 'sections': {}}
    m = rep['machine']
    _log(f"check-gpu on {m.get('gpu', device)}: torch {m['torch']}, CUDA {m['cuda']}, Triton {m['triton']}, "
         f"mamba-ssm {m['mamba_ssm'] or 'not installed'}, {m['date']}")
    for section in SECTIONS:
        if section not in args.sections:
            continue
        t = time.perf_counter()
        _log(f'[{section}] ...')
        try:
            if section == 'parity':
                res = check_parity(device, dtypes=args.dtypes)
                res['block'] = check_block(device, list(scan_backends(device)[0]))
                res['ok'] = res['ok'] and res['block']['ok']
            elif section == 'speed':
                res = check_speed(device)
            elif section == 'amp':
                res = check_amp(device, args.models)
            else:
                res = check_compile(device, args.compile_model)
        except Exception as e:  # the section failed as a whole (out of memory, say); the others still run
            res = {'ok': False, 'crashed': _error(e)}
            _log(f'[{section}] crashed: {res["crashed"]}')
        res['seconds'] = time.perf_counter() - t
        rep['sections'][section] = res
        _log(f"[{section}] {'ok' if res['ok'] else 'FAILED'} in {res['seconds']:.0f} s")
    rep['seconds'] = time.perf_counter() - t0
    rep['ok'] = all(s['ok'] for s in rep['sections'].values())
    write_report(out, markdown(rep, command_line('scripts/check_gpu.py', 'check-gpu', args)), rep)
    _log(f"check-gpu: {'every check passed' if rep['ok'] else 'a check FAILED'} ({rep['seconds']:.0f} s)"
         + (f'; report: {out}' if out else ''))
    return 0 if rep['ok'] else 1

#!/usr/bin/env python
"""Parity of the selective-scan backends on a CUDA GPU: Triton, mamba-ssm, PyTorch, against a float64 oracle.

Triton, mamba-ssm's kernel and the PyTorch scan are compared with a float64 oracle and with each other.

Needs a CUDA device; mamba-ssm (``pip install .[cuda]``) and Triton (it ships with the CUDA build of torch) are each
checked when they import, and named as skipped when they do not. For each shape, dtype (float32, bfloat16, float16)
and gate (with and without ``z``) it runs ``selective_scan_fn`` with every available backend on the same CUDA tensors
and compares the output and the gradients of all eight inputs (u, delta, A, B, C, D, z, delta_bias):

* each backend against the oracle: :func:`gmamba_zoo.ops.selective_scan_ref` on float64 copies of the same inputs
  (the exact answer for the rounded inputs, computed in float64);
* Triton against mamba-ssm's kernel, and the PyTorch scan against mamba-ssm's kernel;

and finally the GSSM block's output under each backend. Errors are relative (``|a - b| / |b|``, Frobenius norms).
Every backend computes in float32 and returns the input's dtype, so the tolerances are set by the output's rounding:
float32 1e-4, bfloat16 and float16 2e-2.

Exit status: 0 all within tolerance, 1 a mismatch, 2 nothing compared (no CUDA device here).

    python scripts/check_cuda_parity.py
"""
import argparse
import sys
from typing import Dict, List, Optional, Tuple

import torch

from gmamba_zoo import GMambaBlock
from gmamba_zoo.ops import resolve_scan_backend, scan_backend, selective_scan_fn, selective_scan_ref

SHAPES = [(2, 64, 8, 1), (2, 64, 8, 37), (2, 192, 16, 3136), (1, 256, 8, 16384), (2, 96, 64, 196)]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}
BACKENDS = ('triton', 'cuda', 'torch')
NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def unavailable(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run on CUDA tensors here, or None."""
    try:
        resolve_scan_backend('cuda', backend)
    except RuntimeError as e:
        return str(e).split(' Choose another backend')[0]
    return None


def inputs(b: int, d: int, n: int, L: int, dtype: torch.dtype, gated: bool) -> Dict[str, torch.Tensor]:
    """u, delta, B, C, z in ``dtype``; A, D, delta_bias in float32 (as the models hold them)."""
    g = torch.Generator(device='cuda').manual_seed(0)
    r = lambda *s: torch.randn(*s, device='cuda', generator=g)
    ins = dict(u=r(b, d, L).to(dtype), delta=(r(b, d, L) * 0.5).to(dtype), A=-torch.exp(r(d, n)),
               B=r(b, n, L).to(dtype), C=r(b, n, L).to(dtype), D=r(d), z=r(b, d, L).to(dtype) if gated else None,
               delta_bias=r(d) * 0.1)
    return {k: (v.requires_grad_() if v is not None else None) for k, v in ins.items()}


def run_backend(ins: Dict[str, torch.Tensor], dy: torch.Tensor, backend: Optional[str]
                ) -> Tuple[torch.Tensor, List[Optional[torch.Tensor]]]:
    """Output and input gradients of one scan; ``backend=None`` is the float64 oracle."""
    if backend is None:
        ins = {k: (v.detach().double().requires_grad_() if v is not None else None) for k, v in ins.items()}
        out = selective_scan_ref(**ins, delta_softplus=True)
    else:
        out = selective_scan_fn(**ins, delta_softplus=True, backend=backend)
    present = [v for v in ins.values() if v is not None]
    grads = iter(torch.autograd.grad(out, present, dy.to(out.dtype)))
    return out.detach(), [next(grads) if v is not None else None for v in ins.values()]


def compare(a, b) -> Tuple[float, str]:
    """Worst relative error over the output and the gradients, and which one it was."""
    (out_a, grads_a), (out_b, grads_b) = a, b
    errs = {'out': rel(out_a, out_b)}
    errs.update({f'd{k}': rel(ga, gb) for k, ga, gb in zip(NAMES, grads_a, grads_b) if ga is not None})
    worst = max(errs, key=errs.get)
    return errs[worst], worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='only the shapes with L <= 3136 (the oracle is a '
                        'sequential loop: L = 16384 takes a while)')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print('no CUDA device: nothing to compare (this script checks the CUDA backends on an NVIDIA GPU)')
        return 2
    missing = {b: unavailable(b) for b in BACKENDS}
    backends = [b for b in BACKENDS if missing[b] is None]
    print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'backends:', ', '.join(backends))
    for b, why in missing.items():
        if why:
            print(f'skipped {b}: {why}')
    ok = True

    def check(label: str, err: float, which: str, tol: float) -> None:
        nonlocal ok
        ok &= err <= tol
        print(f"  {label:28s} worst rel err {err:.2e} ({which}) {'ok' if err <= tol else 'MISMATCH'}")

    shapes = [s for s in SHAPES if s[3] <= 3136] if args.quick else SHAPES
    for dtype in DTYPES:
        for shape in shapes:
            for gated in (True, False):
                print(f'{str(dtype):15s} {shape} z={"yes" if gated else "no"}')
                ins = inputs(*shape, dtype, gated)
                dy = torch.randn(ins['u'].shape, device='cuda', generator=torch.Generator('cuda').manual_seed(1))
                dy = dy.to(dtype)  # the oracle gets the same (rounded) output gradient, in float64
                oracle = run_backend(ins, dy, None)
                res = {b: run_backend(ins, dy, b) for b in backends}
                for b in backends:
                    check(f'{b} vs float64 oracle', *compare(res[b], oracle), TOL[dtype])
                if 'cuda' in res:
                    for b in ('triton', 'torch'):
                        if b in res:
                            check(f'{b} vs mamba-ssm', *compare(res[b], res['cuda']), TOL[dtype])
    block = GMambaBlock(96, layer_scale_init_value=1.0).cuda()
    x = torch.randn(2, 96, 33, 47, device='cuda')
    ys = {}
    with torch.no_grad():
        for b in backends:
            with scan_backend(b):
                ys[b] = block(x)
    ref = 'cuda' if 'cuda' in ys else 'torch'
    print(f'GMambaBlock(96) at 33x47, against {ref}:')
    for b in backends:
        if b != ref:
            check(b, rel(ys[b], ys[ref]), 'out', TOL[torch.float32])
    print('all within tolerance' if ok else 'MISMATCH found')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

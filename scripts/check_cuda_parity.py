#!/usr/bin/env python
"""Parity of the selective-scan backends on a CUDA GPU: mamba-ssm's kernel vs the pure-PyTorch scan.

Needs a CUDA device and ``mamba-ssm`` installed (``pip install .[cuda]``). For each shape and dtype it runs
``selective_scan_fn`` with ``backend='cuda'`` and ``backend='torch'`` on the same CUDA tensors and compares the
output and the gradients of every input, and also the GSSM block's output under each backend. Exit status 1 when a
relative error exceeds its tolerance (float32: 1e-4; bfloat16/float16: 2e-2, both backends computing in float32).

    python scripts/check_cuda_parity.py
"""
import argparse
import sys

import torch

from gmamba_zoo import GMambaBlock
from gmamba_zoo.ops import cuda_kernel_available, scan_backend, selective_scan_fn

SHAPES = [(2, 64, 8, 1), (2, 64, 8, 37), (2, 192, 16, 3136), (1, 256, 8, 16384), (2, 96, 64, 196)]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def inputs(b: int, d: int, n: int, L: int, dtype: torch.dtype) -> dict:
    g = torch.Generator(device='cuda').manual_seed(0)
    r = lambda *s: torch.randn(*s, device='cuda', generator=g)
    ins = dict(u=r(b, d, L).to(dtype), delta=(r(b, d, L) * 0.5).to(dtype), A=-torch.exp(r(d, n)),
               B=r(b, n, L).to(dtype), C=r(b, n, L).to(dtype), D=r(d), z=r(b, d, L).to(dtype), delta_bias=r(d) * 0.1)
    return {k: v.requires_grad_() for k, v in ins.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.parse_args()
    if not torch.cuda.is_available():
        print('no CUDA device: nothing to compare')
        return 2
    if not cuda_kernel_available():
        print('mamba-ssm kernel not importable: install gmamba-zoo[cuda]')
        return 2
    print(torch.cuda.get_device_name(), 'torch', torch.__version__)
    ok = True
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for shape in SHAPES:
            ins = inputs(*shape, dtype)
            outs, grads = {}, {}
            for backend in ('cuda', 'torch'):
                out = selective_scan_fn(**ins, delta_softplus=True, backend=backend)
                dy = torch.randn(out.shape, device='cuda', generator=torch.Generator('cuda').manual_seed(1))
                grads[backend] = torch.autograd.grad(out.float(), list(ins.values()), dy)
                outs[backend] = out.detach()
            errs = {'out': rel(outs['torch'], outs['cuda'])}
            errs.update({f'd{k}': rel(gt, gc) for k, gt, gc in zip(ins, grads['torch'], grads['cuda'])})
            worst = max(errs.values())
            ok &= worst <= TOL[dtype]
            print(f'{str(dtype):15s} {shape}: worst rel err {worst:.2e} ({max(errs, key=errs.get)}) '
                  f"{'ok' if worst <= TOL[dtype] else 'MISMATCH'}")
    block = GMambaBlock(96, layer_scale_init_value=1.0).cuda()
    x = torch.randn(2, 96, 33, 47, device='cuda')
    with scan_backend('cuda'):
        y_cuda = block(x)
    with scan_backend('torch'):
        y_torch = block(x)
    err = rel(y_torch, y_cuda)
    ok &= err <= TOL[torch.float32]
    print(f'GMambaBlock(96) at 33x47: rel err {err:.2e}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

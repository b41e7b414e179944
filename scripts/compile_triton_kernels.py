#!/usr/bin/env python
"""Compile the Triton selective-scan kernels (forward and backward) for a GPU target, without a GPU.

Runs Triton's full compiler (Triton IR, LLVM, PTX, and ``ptxas`` to a cubin; the wheels ship ``ptxas``) on
``gmamba_zoo/ops/triton_scan.py``'s ``_fwd_kernel`` and ``_bwd_kernel`` with the blocks the wrappers pick for
d_state 16 and chunk 64, every optional input on and off. It is how docs/gpu.md's "Triton versions" table was made:
run it with each Triton release in a throwaway virtual environment (torch is not needed: it is stubbed when absent,
the kernels do not use it)::

    python3 -m venv /tmp/tritonvenv && /tmp/tritonvenv/bin/pip install triton==3.0.0
    /tmp/tritonvenv/bin/python scripts/compile_triton_kernels.py [--arch 90] [path/to/triton_scan.py]

Handles the three ``ASTSource`` signatures of Triton 3.x (argument indices and ``constants=`` in 3.0-3.1, names and
``constants=`` in 3.2, names and ``constexprs=`` since 3.3) and Triton 2.x's ``(backend, arch)`` target tuple.

Exit status: 0 every kernel compiled, 1 one failed (its error is printed).
"""
import argparse
import importlib.util
import inspect
import sys
import time
import types
from pathlib import Path

KERNEL_FILE = Path(__file__).resolve().parents[1] / 'gmamba_zoo' / 'ops' / 'triton_scan.py'
# The blocks scan_fwd/scan_bwd pick for d_state 16 and chunk 64 (forward tiles of 4096 elements, backward 2048)
BLOCKS = {
    '_fwd_kernel': dict(CHUNK=64, BLOCK_D=8, BLOCK_N=16, BLOCK_L=32),
    '_bwd_kernel': dict(CHUNK=64, BLOCK_D=4, BLOCK_N=16, BLOCK_L=32),
}
FLAGS = ('HAS_D', 'HAS_Z', 'HAS_BIAS', 'SOFTPLUS')


def load_kernels(path: Path) -> types.ModuleType:
    """Import the kernel file by path (a stub torch when torch is absent: only its host wrappers use torch)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        stub = types.ModuleType('torch')
        stub.Tensor = object
        sys.modules['torch'] = stub
    spec = importlib.util.spec_from_file_location('triton_scan_under_test', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Triton resolves the kernels' globals through sys.modules
    spec.loader.exec_module(module)
    return module


def source(fn, constexprs: dict):
    """An ``ASTSource`` for ``fn`` with float32 pointers, int32 scalars and ``constexprs``, in this Triton's API."""
    from triton.compiler import ASTSource
    sig = {a: 'constexpr' if a in constexprs else '*fp32' if a.endswith('_ptr') else 'i32' for a in fn.arg_names}
    params = inspect.signature(ASTSource.__init__).parameters
    if 'constexprs' in params:  # 3.3+
        return ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    if 'Signature keys must be string' in inspect.getsource(ASTSource.__init__):  # 3.2
        return ASTSource(fn=fn, signature=sig, constants=constexprs)
    names = list(fn.arg_names)  # 2.x-3.1: argument indices, constexprs left out of the signature
    return ASTSource(fn=fn, signature={i: t for i, t in enumerate(sig.values()) if t != 'constexpr'},
                     constants={names.index(k): v for k, v in constexprs.items()})


def target(arch: int):
    try:
        from triton.backends.compiler import GPUTarget
    except ImportError:
        try:
            from triton.compiler.compiler import GPUTarget
        except ImportError:  # 2.x
            return 'cuda', arch
    return GPUTarget('cuda', arch, 32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('path', nargs='?', type=Path, default=KERNEL_FILE, help='the kernel file')
    parser.add_argument('--arch', type=int, default=90, help='CUDA compute capability, e.g. 80, 90 (default 90)')
    args = parser.parse_args()
    import triton
    module = load_kernels(args.path)
    print(f'triton {triton.__version__}, target sm_{args.arch}, {args.path}')
    failed = False
    for name, blocks in BLOCKS.items():
        for flag in (True, False):
            t0 = time.perf_counter()
            try:
                kernel = triton.compile(source(getattr(module, name), dict(blocks, **dict.fromkeys(FLAGS, flag))),
                                        target=target(args.arch), options=dict(num_warps=4))
                print(f'OK   {name} optional inputs {"on" if flag else "off"}: cubin '
                      f'{len(kernel.asm.get("cubin", b""))} bytes ({time.perf_counter() - t0:.1f} s)')
            except Exception as e:
                failed = True
                print(f'FAIL {name} optional inputs {"on" if flag else "off"}: {type(e).__name__}: {e}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

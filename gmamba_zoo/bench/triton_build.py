"""The Triton scan kernels compiled for real GPU targets without a GPU: does each build, and at what cost.

Triton's interpreter (``TRITON_INTERPRET=1``, what the CPU tests run) executes a kernel's Python with NumPy: it checks
the numbers but none of what the compiler checks (loop-carried types, layouts, registers, shared memory). This module
runs the real compiler instead: Triton's front end, its MLIR passes, LLVM and the ``ptxas`` bundled with the triton
wheel, for each of :data:`TARGETS`, on the launches the package actually makes.

The launches are captured, not written out by hand: :func:`capture_launches` calls
:func:`gmamba_zoo.ops.triton_scan.scan_fwd` / ``scan_bwd`` with the kernels swapped for recorders, so each record is
the exact argument list and ``constexpr`` set (``BLOCK_D/N/L``, ``HAS_D/Z/BIAS``, ``SOFTPLUS``, ``num_warps``) that a
GPU would receive. The scan inputs come from the models' own mixers (:func:`model_scan_inputs` records every
``selective_scan_fn`` call of a forward, with its strides and, under autocast, its dtypes) and from the edges of
``_blocks``' tile rules (:func:`edge_scan_inputs`). Triton's own launcher code then specialises each record as a
launch would (integer arguments equal to 1 become constants; pointers and integers divisible by 16 are marked so),
and :func:`compile_launch` compiles it for one target and reads ``ptxas -v`` on the PTX: registers per thread,
spill stores and loads, stack frame; shared memory from Triton's metadata, against the target's per-block limit.

``gmamba-zoo triton-build`` (``python scripts/triton_build.py``) writes the table of docs/triton-build.md;
tests/test_triton_build.py compiles the matrix (the whole of it in the slow set).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .progress import add_quiet_argument

__all__ = ['TARGETS', 'Launch', 'ScanInputs', 'capture_launches', 'model_scan_inputs', 'edge_scan_inputs',
           'launches_for', 'compile_launch', 'build_matrix', 'failures', 'report', 'add_arguments', 'run']

# Compute capability -> the most shared memory one block may use (the opt-in maximum, bytes), from the CUDA C++
# Programming Guide's table of technical specifications per compute capability.
TARGETS: Dict[int, int] = {
    75: 64 * 1024,   # Turing (T4, RTX 20xx)
    80: 163 * 1024,  # A100
    86: 99 * 1024,   # RTX 30xx, A10, A40
    89: 99 * 1024,   # L4, L40, RTX 40xx
    90: 227 * 1024,  # H100, H200
    100: 227 * 1024,  # B200
    120: 99 * 1024,  # RTX 50xx, RTX PRO Blackwell
}
MAX_REGISTERS = 255  # per thread, every target here

_MIXER_OPTS = dict(D=True, delta_bias=True, softplus=True)  # what both mixers pass (layers/ssm.py)


@dataclass
class ScanInputs:
    """One set of scan inputs (CPU tensors with the strides and dtypes a GPU launch would get) and where it is from."""
    origin: str
    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Optional[Tensor]
    z: Optional[Tensor]
    delta_bias: Optional[Tensor]
    softplus: bool
    chunk: int = 64


@dataclass
class Launch:
    """One kernel launch as the package makes it: the kernel's name, positional arguments and keywords."""
    kernel: str  # '_fwd_kernel' or '_bwd_kernel'
    origin: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    dtype: str = field(default='')

    def config(self) -> str:
        """The launch's compile-time configuration in one string: blocks and flags."""
        k = self.kwargs
        flags = ''.join(c for c, f in (('D', 'HAS_D'), ('z', 'HAS_Z'), ('b', 'HAS_BIAS'), ('s', 'SOFTPLUS')) if k[f])
        regs = f" r{k['maxnreg']}" if k.get('maxnreg') else ''
        return (f"D{k['BLOCK_D']} N{k['BLOCK_N']} L{k['BLOCK_L']} chunk{k['CHUNK']} {flags or '-'} "
                f"w{k['num_warps']}{regs}")


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records the call, launches nothing."""

    def __init__(self, name: str, calls: List[Tuple[str, tuple, dict]]):
        self.name, self.calls = name, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.name, args, kwargs))


@contextlib.contextmanager
def _recording(calls: List[Tuple[str, tuple, dict]]) -> Iterator[Any]:
    from ..ops import triton_scan as ts
    saved = ts._fwd_kernel, ts._bwd_kernel, ts.interpreted
    ts._fwd_kernel, ts._bwd_kernel = _Recorder('_fwd_kernel', calls), _Recorder('_bwd_kernel', calls)
    ts.interpreted = lambda: True  # the wrappers' device check: CPU tensors stand for CUDA ones here
    try:
        yield ts
    finally:
        ts._fwd_kernel, ts._bwd_kernel, ts.interpreted = saved


def capture_launches(inputs: ScanInputs) -> List[Launch]:
    """The forward and backward launches :mod:`gmamba_zoo.ops.triton_scan` makes for ``inputs`` (nothing runs)."""
    calls: List[Tuple[str, tuple, dict]] = []
    x = inputs
    with _recording(calls) as ts:
        out, ckpt = ts.scan_fwd(x.u, x.delta, x.A, x.B, x.C, x.D, x.z, x.delta_bias, x.softplus, x.chunk)
        ts.scan_bwd(torch.zeros_like(out), x.u, x.delta, x.A, x.B, x.C, x.D, x.z, x.delta_bias, ckpt, x.softplus,
                    x.chunk)
    dtype = str(x.u.dtype).replace('torch.', '')
    return [Launch(name, x.origin, args, kwargs, dtype) for name, args, kwargs in calls]


def model_scan_inputs(names: Sequence[str], img_size: int = 64,
                      dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16, torch.bfloat16),
                      ) -> List[ScanInputs]:
    """Every scan call of each model's forward (batch 2, ``img_size``), recorded with its strides and dtypes.

    float16/bfloat16 calls come from a forward under CPU autocast, which casts the mixers' linear layers as CUDA's
    autocast does (A, D and delta_bias stay float32: the mixers pass them as ``.float()``).
    """
    import timm

    from ..layers import ssm
    from ..ops.selective_scan import _validate

    records: List[ScanInputs] = []
    original = ssm.selective_scan_fn

    def recorder(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kwargs):
        Bv, Cv = _validate(u, delta, A, B, C, D, z, delta_bias)
        records.append(ScanInputs(f'{current} d={u.shape[1]} N={A.shape[1]}', u, delta, A, Bv, Cv, D, z,
                                  delta_bias, bool(delta_softplus)))
        return original(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, **kwargs)

    ssm.selective_scan_fn = recorder
    try:
        for name in names:
            model = timm.create_model(name).eval()
            x = torch.randn(2, 3, img_size, img_size)
            for dtype in dtypes:
                current = f'{name} {str(dtype).replace("torch.", "")}'
                with torch.no_grad(), torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
                    model(x)
    finally:
        ssm.selective_scan_fn = original
    return records


def edge_scan_inputs(dtypes: Sequence[torch.dtype] = (torch.float32,)) -> List[ScanInputs]:
    """Contiguous inputs at the edges of ``_blocks``' tile rules: one channel and one state (every block 1 but L);
    odd sizes with a chunk of 6 (BLOCK_L 2); N = 256 (BLOCK_L shrinks below 32, BLOCK_D to 1); every flag off and
    every flag on."""
    cases = [  # (name, dim, dstate, chunk, D, z, delta_bias, softplus)
        ('edge d=1 N=1', 1, 1, 64, True, False, True, True),
        ('edge d=3 N=3 chunk=6', 3, 3, 6, True, True, True, True),
        ('edge d=1024 N=256', 1024, 256, 64, True, False, True, True),
        ('edge flags off', 64, 16, 64, False, False, False, False),
        ('edge flags on', 64, 16, 64, True, True, True, True),
    ]
    out = []
    for dtype in dtypes:
        for name, dim, n, chunk, has_d, has_z, has_b, sp in cases:
            L = 2 * chunk + 1
            r = lambda *s, dt=dtype: torch.randn(*s, dtype=dt)
            out.append(ScanInputs(f'{name} {str(dtype).replace("torch.", "")}', r(2, dim, L), r(2, dim, L),
                                  -torch.rand(dim, n), r(2, n, L), r(2, n, L), torch.randn(dim) if has_d else None,
                                  r(2, dim, L) if has_z else None, torch.randn(dim) if has_b else None, sp, chunk))
    return out


def _specialise(launch: Launch, capability: int):
    """Triton's own launcher steps for ``launch`` on ``capability``: (ASTSource, GPUTarget, options dict)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    from ..ops import triton_scan as ts
    kernel = getattr(ts, launch.kernel)
    target = GPUTarget('cuda', capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, specialization, options)
    del triton
    return ASTSource(kernel, signature, constexprs, attrs), target, options.__dict__


_PTXAS_LINE = re.compile(r'Used (\d+) registers')
_SPILL = re.compile(r'(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads')


def _ptxas_usage(ptx: str, capability: int) -> Dict[str, int]:
    """``ptxas -v`` on ``ptx`` for ``capability``, with the ptxas and the flags Triton builds with."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    ptxas = get_ptxas(capability).path
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'k.ptx')
        with open(src, 'w') as f:
            f.write(ptx)
        res = subprocess.run([ptxas, '-lineinfo', '-v', '--regAllocOptLevel=2',
                              f'--gpu-name={sm_arch_from_capability(capability)}', src, '-o',
                              os.path.join(tmp, 'k.o')], capture_output=True, text=True)
    log = res.stdout + res.stderr
    if res.returncode:
        raise RuntimeError(f'ptxas -v failed for sm_{capability}:\n{log}')
    regs, spill = _PTXAS_LINE.search(log), _SPILL.search(log)
    if regs is None or spill is None:
        raise RuntimeError(f'ptxas -v printed no resource usage:\n{log}')
    return dict(registers=int(regs.group(1)), stack=int(spill.group(1)), spill_stores=int(spill.group(2)),
                spill_loads=int(spill.group(3)))


def compile_launch(launch: Launch, capability: int) -> Dict[str, Any]:
    """Compile ``launch`` for ``capability`` with Triton's compiler (no GPU needed) and report what it costs.

    Returns:
        A row: kernel, origin, dtype, config, target, ``ok``, ``error`` (the compiler's message when not ok),
        ``shared`` bytes and the target's ``shared_limit``, and from ``ptxas -v``: ``registers``, ``spill_stores``,
        ``spill_loads``, ``stack``; ``seconds`` the compile took.
    """
    import triton
    row: Dict[str, Any] = dict(kernel=launch.kernel.strip('_'), origin=launch.origin, dtype=launch.dtype,
                               config=launch.config(), target=f'sm_{capability}', shared_limit=TARGETS[capability])
    t = time.perf_counter()
    try:
        src, target, options = _specialise(launch, capability)
        compiled = triton.compile(src, target=target, options=options)
        row.update(ok=True, error=None, shared=int(compiled.metadata.shared),
                   **_ptxas_usage(compiled.asm['ptx'], capability))
    except Exception as e:  # the compiler's own error is the result
        row.update(ok=False, error=f'{type(e).__name__}: {str(e).strip()[:2000]}')
    row['seconds'] = round(time.perf_counter() - t, 2)
    return row


def _key(launch: Launch) -> Tuple:
    """What makes two launches compile to the same kernel: Triton's specialisation of their arguments."""
    src, _, options = _specialise(launch, 90)
    return (launch.kernel, src.hash(), tuple(sorted((k, str(v)) for k, v in options.items())))


def launches_for(inputs: Sequence[ScanInputs], every_specialisation: bool = False) -> List[Launch]:
    """The distinct launches of ``inputs``, in order of first appearance; ``origin`` lists up to three of the inputs
    that make the same kernel.

    Args:
        inputs: Scan inputs, e.g. from :func:`model_scan_inputs` and :func:`edge_scan_inputs`.
        every_specialisation: Distinct by Triton's full specialisation (which integer arguments are 1 or multiples of
            16, which pointers are 16-byte aligned: the models' different widths make several per configuration).
            By default one launch per kernel, configuration (blocks, flags) and dtype: the first one seen.
    """
    seen: Dict[Tuple, Launch] = {}
    for x in inputs:
        for launch in capture_launches(x):
            key = _key(launch) if every_specialisation else (launch.kernel, launch.config(), launch.dtype)
            if key in seen:
                first = seen[key]
                if first.origin.count(';') < 2 and x.origin.split(' ')[0] not in first.origin:
                    first.origin += f'; {x.origin}'
            else:
                seen[key] = launch
    return list(seen.values())


def _compile_job(job: Tuple[Launch, int]) -> Dict[str, Any]:
    return compile_launch(*job)


def build_matrix(launches: Sequence[Launch], targets: Sequence[int] = tuple(TARGETS), workers: int = 1,
                 progress: Optional[Any] = None) -> List[Dict[str, Any]]:
    """:func:`compile_launch` for every launch and target (``workers`` processes); each compiled kernel is a step of
    ``progress`` (a :class:`gmamba_zoo.bench.progress.Progress`) when given."""
    jobs = [(launch, cap) for launch in launches for cap in targets]
    if progress is not None:
        progress.add(len(jobs))
    rows: List[Dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        results = (map(_compile_job, jobs) if workers <= 1
                   else stack.enter_context(ProcessPoolExecutor(workers)).map(_compile_job, jobs))
        for row in results:
            rows.append(row)
            if progress is not None:
                progress.done(f'[{len(rows)}/{len(jobs)}] {row["kernel"]} {row["target"]} {row["dtype"]} '
                              f'{row["config"]}: {"ok" if row["ok"] else "FAILED"} ({row["seconds"]} s)')
    return rows


def failures(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """What is wrong in ``rows``: a compile error, shared memory above the target's limit, or over 255 registers."""
    bad = []
    for r in rows:
        where = f"{r['kernel']} {r['target']} {r['dtype']} [{r['config']}] ({r['origin']})"
        if not r['ok']:
            bad.append(f"{where}: {r['error']}")
        elif r['shared'] > r['shared_limit']:
            bad.append(f"{where}: {r['shared']} B of shared memory, above the target's {r['shared_limit']} B")
        elif r['registers'] > MAX_REGISTERS:
            bad.append(f"{where}: {r['registers']} registers per thread")
    return bad


def report(rows: Sequence[Dict[str, Any]], header: str = '') -> str:
    """A Markdown table of ``rows``: one line per kernel, configuration and dtype, targets as columns (registers /
    spill stores+loads in bytes / shared memory in KiB)."""
    targets = sorted({r['target'] for r in rows}, key=lambda t: int(t[3:]))
    groups: Dict[Tuple, Dict[str, Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r['kernel'], r['config'], r['dtype'], r['origin']), {})[r['target']] = r

    def cell(r: Optional[Dict[str, Any]]) -> str:
        if r is None:
            return ''
        if not r['ok']:
            return 'FAILS'
        spill = r['spill_stores'] + r['spill_loads']
        return f"{r['registers']} / {spill} / {r['shared'] / 1024:.1f}"

    lines = [header] if header else []
    lines += ['| kernel | config | dtype | launched by | ' + ' | '.join(targets) + ' |',
              '| --- | --- | --- | --- | ' + ' | '.join('---' for _ in targets) + ' |']
    for (kernel, config, dtype, origin), by_target in groups.items():
        lines.append(f'| {kernel} | {config} | {dtype} | {origin} | '
                     + ' | '.join(cell(by_target.get(t)) for t in targets) + ' |')
    return '\n'.join(lines) + '\n'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--models', nargs='*', default=None,
                        help='models whose scan launches are compiled (default: every registered model)')
    parser.add_argument('--targets', nargs='*', type=int, default=list(TARGETS),
                        help='compute capabilities to compile for')
    parser.add_argument('--img-size', type=int, default=64, help='input size of the recording forward')
    parser.add_argument('--workers', type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help='compiler processes')
    parser.add_argument('--no-edges', action='store_true', help="skip the edges of the tile rules")
    parser.add_argument('--every-specialisation', action='store_true',
                        help="compile every distinct specialisation of the arguments, not one launch per kernel, "
                             "configuration and dtype")
    parser.add_argument('--out', type=str, default=None, help='write the Markdown report here (and .json beside it)')
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    import triton

    from ..models import list_models
    from .machine import command_line, machine, write_report
    from .progress import Progress
    names = args.models if args.models else list_models()
    with Progress('triton-build', unit='kernel', quiet=args.quiet) as progress:
        progress.stage('recording the models\' scan calls')
        inputs = model_scan_inputs(names, args.img_size) + ([] if args.no_edges else edge_scan_inputs())
        launches = launches_for(inputs, args.every_specialisation)
        progress(f'{len(launches)} distinct launches x {len(args.targets)} targets')
        progress.stage('compiling')
        t = time.perf_counter()
        rows = build_matrix(launches, args.targets, args.workers, progress)
    bad = failures(rows)
    m = machine()
    header = (f'Compiled {len(rows)} kernels in {time.perf_counter() - t:.0f} s with triton {triton.__version__} '
              f'(torch {torch.__version__}) on {m["cpu"]}, {m["date"]}, no GPU: '
              f'`{command_line("scripts/triton_build.py", "triton-build", args)}`. '
              f'Each cell: registers per thread / spill stores + loads (bytes) / shared memory (KiB).\n')
    write_report(Path(args.out) if args.out else None, report(rows, header),
                 dict(machine=m, triton=triton.__version__, rows=rows, failures=bad))
    for line in bad:
        print('FAILED:', line)
    return 1 if bad else 0

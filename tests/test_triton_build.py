"""The Triton scan kernels built by Triton's real compiler for real GPU targets, without a GPU.

The interpreter tests (tests/test_triton_scan.py) check the kernels' numbers; only the compiler checks what a GPU
needs: loop-carried types, layouts, registers and shared memory. These tests compile the launches the package makes
(captured from the models' own scan calls, :mod:`gmamba_zoo.bench.triton_build`) and fail on a compile error, on
shared memory above a target's per-block limit and on more registers than a thread has. The default suite compiles
the models' two kernel configurations for one target; the slow set compiles every launch for every target.
"""
import importlib.util
import sys
import textwrap

import pytest
import torch

pytest.importorskip('triton')

from gmamba_zoo.bench import triton_build as tb  # noqa: E402


def _mixer_inputs(dim: int, dstate: int, gate: bool, dtype=torch.float32) -> tb.ScanInputs:
    """Scan inputs laid out as :class:`gmamba_zoo.layers.ssm.SelectiveSSM` passes them: u and z contiguous,
    delta, B and C transposed views of token-major linear outputs."""
    b, L = 2, 130
    xz = torch.randn(b, 2 * dim, L, dtype=dtype)
    u, z = xz.chunk(2, dim=1)
    dt = torch.randn(b, L, dim, dtype=dtype).transpose(1, 2)
    bc = torch.randn(b, L, 2 * dstate, dtype=dtype)
    B, C = (t.transpose(1, 2) for t in bc.split([dstate, dstate], dim=-1))
    return tb.ScanInputs(f'mixer d={dim} N={dstate}', u, dt, -torch.rand(dim, dstate), B, C, torch.randn(dim),
                         z if gate else None, torch.randn(dim), True)


def test_captured_launches_are_the_kernels_blocks():
    """The recorder sees what scan_fwd/scan_bwd launch: GSSM's mixer (N=8, no gate) and vGamba's (N=64, gate)."""
    gssm = tb.capture_launches(_mixer_inputs(256, 8, gate=False))
    vgamba = tb.capture_launches(_mixer_inputs(512, 64, gate=True))
    assert [launch.kernel for launch in gssm] == ['_fwd_kernel', '_bwd_kernel']
    assert [launch.config() for launch in gssm] == ['D16 N8 L32 chunk64 Dbs w8 r255',
                                                   'D8 N8 L32 chunk64 Dbs w8 r255']
    assert [launch.config() for launch in vgamba] == ['D2 N64 L32 chunk64 Dzbs w8 r255',
                                                     'D1 N64 L32 chunk64 Dzbs w8 r255']


@pytest.mark.parametrize('gate', [False, True], ids=['gssm', 'vgamba'])
def test_model_kernels_compile_for_sm90(gate):
    """Forward and backward as GSSM (N=8) and vGamba (N=64) launch them, fp32, for sm_90: they build, fit, and do
    not spill."""
    x = _mixer_inputs(512 if gate else 256, 64 if gate else 8, gate)
    rows = tb.build_matrix(tb.capture_launches(x), targets=(90,))
    assert tb.failures(rows) == []
    for row in rows:
        assert row['registers'] <= tb.MAX_REGISTERS and row['shared'] > 0
        assert row['spill_stores'] == row['spill_loads'] == 0, row


def _kernel_with_the_old_bug(tmp_path):
    """The backward kernel with the bug it had until 2026-12: pass 2 reassigning pass 1's loop-carried 2-D state
    ``h`` with a 3-D tile. It ran under the interpreter and failed to compile for every GPU."""
    from gmamba_zoo.ops import triton_scan as ts
    src = textwrap.dedent(ts._bwd_kernel.src)
    assert src.count('hs = a * h_prev') == 1
    src = src.replace('hs = a * h_prev', 'h = a * h_prev').replace('* hs', '* h')
    names = ', '.join(n for n in ('_FLOOR', '_affine_combine', '_channel_block', '_load_dt') if hasattr(ts, n))
    path = tmp_path / 'old_bwd_kernel.py'
    path.write_text(f'import triton\nimport triton.language as tl\nfrom gmamba_zoo.ops.triton_scan import {names}\n'
                    f'\n\n@triton.jit\n{src}')
    spec = importlib.util.spec_from_file_location('old_bwd_kernel', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules['old_bwd_kernel'] = module
    spec.loader.exec_module(module)
    return module._bwd_kernel


def test_a_kernel_that_only_the_interpreter_accepts_fails_here(tmp_path, monkeypatch):
    """The check catches what the interpreter missed: the old backward fails with the compiler's own message."""
    from gmamba_zoo.ops import triton_scan as ts
    launches = tb.capture_launches(_mixer_inputs(256, 8, gate=False))
    monkeypatch.setattr(ts, '_bwd_kernel', _kernel_with_the_old_bug(tmp_path))
    rows = tb.build_matrix([launches[1]], targets=(90,))
    bad = tb.failures(rows)
    assert len(bad) == 1 and 'Loop-carried variable h' in bad[0], bad


def test_failures_flag_shared_memory_and_registers():
    row = dict(kernel='fwd_kernel', target='sm_75', dtype='float32', config='c', origin='o', ok=True, error=None,
               shared=tb.TARGETS[75] + 1, shared_limit=tb.TARGETS[75], registers=100)
    assert 'above the target' in tb.failures([row])[0]
    assert 'registers per thread' in tb.failures([dict(row, shared=1024, registers=256)])[0]
    assert tb.failures([dict(row, shared=1024)]) == []


@pytest.mark.slow
def test_every_launch_compiles_for_every_target():
    """Every scan launch of every registered model (fp32, fp16 and bf16 under autocast) and the edges of the tile
    rules (fp32), compiled for sm_75 ... sm_120: no compile error, shared memory within each target's limit, and no spill
    at the launches the models make."""
    import gmamba_zoo
    inputs = tb.model_scan_inputs(gmamba_zoo.list_models(), img_size=64) + tb.edge_scan_inputs()
    launches = tb.launches_for(inputs)
    rows = tb.build_matrix(launches, workers=2)
    assert tb.failures(rows) == []
    spills = [r for r in rows if not r['origin'].startswith('edge') and r['spill_stores'] + r['spill_loads']]
    assert spills == []


@pytest.mark.slow
def test_cli_writes_the_table(tmp_path):
    """`gmamba-zoo triton-build` for one model and one target: the Markdown table and its JSON, exit 0."""
    import json

    from gmamba_zoo.cli import main
    out = tmp_path / 'build.md'
    assert main(['triton-build', '--models', 'resnet18_gmamba', '--targets', '90', '--no-edges', '--workers', '1',
                 '--quiet', '--out', str(out)]) == 0
    text = out.read_text()
    assert '| kernel | config | dtype | launched by | sm_90 |' in text
    rows = json.loads(out.with_suffix('.json').read_text())['rows']
    assert {r['dtype'] for r in rows} == {'float32', 'float16', 'bfloat16'} and all(r['ok'] for r in rows)
    assert {r['kernel'] for r in rows} == {'fwd_kernel', 'bwd_kernel'}

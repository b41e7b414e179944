"""scripts/bench_compile.py (``gmamba-zoo bench-compile``): each size's row, and the graph count it reports."""
import json

import pytest

from gmamba_zoo.bench.compile import bench_compile
from gmamba_zoo.cli import main

pytestmark = pytest.mark.usefixtures('one_thread')


def test_bench_compile_dynamic_reuses_the_graph():
    """backend='eager' (dynamo's graph run as traced): with dynamic=True the second size reuses the first's graph,
    and the compiled outputs equal eager's."""
    rows = bench_compile('vgamba_b', sizes=(64, 96), batch=2, backend='eager', dynamic=True, repeats=1)
    assert [r['size'] for r in rows] == [64, 96]
    assert [r['graphs'] for r in rows] == [1, 1]
    for r in rows:
        assert r['rel_diff'] < 1e-5 and r['eager_ms'] > 0 and r['compiled_ms'] > 0 and r['first_call_s'] > 0


def test_bench_compile_command_counts_a_recompile(capsys):
    """Without --dynamic the second size compiles a second graph (the count starts afresh in each call)."""
    assert main(['bench-compile', '--model', 'vgamba_b', '--sizes', '64', '96', '--batch', '2', '--backend', 'eager',
                 '--repeats', '1']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['model'] == 'vgamba_b' and out['dynamic'] is False and out['machine']['cores'] >= 1
    assert [r['graphs'] for r in out['runs']] == [1, 2]
    assert all(r['rel_diff'] < 1e-5 for r in out['runs'])

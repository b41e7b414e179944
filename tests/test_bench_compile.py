"""scripts/bench_compile.py (``gmamba-zoo bench-compile``): each size's row, and the graph count it reports."""
import json

import pytest

from gmamba_zoo.cli import main

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.mark.slow
def test_bench_compile_command_dynamic_reuses_the_graph(capsys):
    """backend='eager' (dynamo's graph run as traced): with --dynamic the second size reuses the first's graph (the
    count starts afresh in each call; test_robustness.py counts recompiles), and the outputs equal eager's."""
    assert main(['bench-compile', '--model', 'vgamba_b', '--sizes', '64', '96', '--batch', '2', '--backend', 'eager',
                 '--dynamic', '--repeats', '1']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['model'] == 'vgamba_b' and out['dynamic'] is True and out['machine']['cores'] >= 1
    assert [r['size'] for r in out['runs']] == [64, 96]
    assert [r['graphs'] for r in out['runs']] == [1, 1]
    for r in out['runs']:
        assert r['rel_diff'] < 1e-5 and r['eager_ms'] > 0 and r['compiled_ms'] > 0 and r['first_call_s'] > 0

"""A read-only install: the package directory, HOME and NUMBA_CACHE_DIR unwritable, so numba can cache nothing.

Every compiled function goes through :func:`gmamba_zoo.ops._numba_jit.cached_njit`, so the compiled modules still
import (compiled in every process, after one warning), the CPU scan still uses numba, and no message says numba is
missing while it is installed. Run in a subprocess on a read-only copy of the package. Root ignores file modes, so
every place numba could write also sits under (or is) a regular file, where no one can create a directory.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gmamba_zoo.ops.selective_scan as ss

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import json, os, warnings
    warnings.simplefilter('always')
    with warnings.catch_warnings(record=True) as caught:
        import torch
        import gmamba_zoo
        from gmamba_zoo.ops import selective_scan as ss
        assert gmamba_zoo.__file__.startswith(os.environ['EXPECT_PACKAGE_UNDER']), gmamba_zoo.__file__
        recurrence = ss.cpu_recurrence()
        backend = ss.resolve_scan_backend('cpu')
        loops = ss._numba_loops.module
        h, a = torch.rand(6, 5).numpy(), torch.rand(6, 5).numpy()
        expected = h.copy()
        for t in range(1, 6):
            expected[t] += a[t] * expected[t - 1]
        loops.recurrence_forward_(h, a, torch.zeros(5).numpy())
        assert abs(h - expected).max() < 1e-5
        os.environ[ss.ENV_CPU_RECURRENCE] = 'numba'
        forced = ss.cpu_recurrence()
    print(json.dumps(dict(recurrence=recurrence, backend=backend, forced=forced,
                          warnings=[str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])))
''')


def _read_only(path: Path) -> None:
    for p in [path, *path.rglob('*')]:
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (
            stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if p.is_dir() else 0))


@pytest.mark.slow
@pytest.mark.skipif(ss._numba_loops.get() is None, reason='numba does not import here')
def test_read_only_install_still_runs_numba(tmp_path):
    site, blocker = tmp_path / 'site', tmp_path / 'blocker'
    shutil.copytree(ROOT / 'gmamba_zoo', site / 'gmamba_zoo', ignore=shutil.ignore_patterns('__pycache__'))
    blocker.write_text('')
    for folder in [p for p in (site / 'gmamba_zoo').rglob('*') if p.is_dir()] + [site / 'gmamba_zoo']:
        (folder / '__pycache__').write_text('')  # numba's cache beside the module: never a directory
    _read_only(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('NUMBA_', 'GMAMBA_ZOO_', 'PYTHON'))}
    env.update(PYTHONPATH=str(site), HOME=str(blocker / 'home'), NUMBA_CACHE_DIR=str(blocker / 'numba'),
               XDG_CACHE_HOME=str(blocker / 'xdg'), PYTHONDONTWRITEBYTECODE='1', EXPECT_PACKAGE_UNDER=str(site),
               OMP_NUM_THREADS='1')
    try:
        res = subprocess.run([sys.executable, '-c', CHILD], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    finally:
        for p in [site, *site.rglob('*')]:
            if p.is_dir():
                p.chmod(0o755)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out['recurrence'] == out['forced'] == 'numba' and out['backend'] == 'numba', out
    assert len(out['warnings']) == 1 and 'NUMBA_CACHE_DIR' in out['warnings'][0], out['warnings']
    assert not any('not importable' in w or 'not installed' in w for w in out['warnings'])


def test_a_failing_compiled_module_never_blames_a_missing_numba(monkeypatch, tmp_path):
    """numba installed, the compiled module raising on import (as numba does when it cannot cache): the messages say
    the module does not load, not that numba is missing; a missing package still says so."""
    (tmp_path / 'gmz_failing_loops.py').write_text('raise RuntimeError("cannot cache function: no locator")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ss, '_numba_loops', ss._OptionalModule('gmz_failing_loops'))
    monkeypatch.setenv(ss.ENV_CPU_RECURRENCE, 'numba')
    with pytest.raises(RuntimeError) as err:
        ss.cpu_recurrence()
    msg = str(err.value)
    assert 'gmz_failing_loops' in msg and 'although numba is installed' in msg and 'cannot cache' in msg
    assert 'not importable' not in msg and 'pip install' not in msg
    monkeypatch.setattr(ss, '_KERNELS', dict(ss._KERNELS, numba=(ss._OptionalModule('gmz_failing_loops'),
                                                                  'numba (`pip install numba`)')))
    with pytest.raises(RuntimeError, match="'numba': gmz_failing_loops does not load although numba is installed"):
        ss.resolve_scan_backend('cpu', 'numba')
    monkeypatch.setattr(ss, '_numba_loops', ss._OptionalModule('gmz_no_such_module'))
    with pytest.raises(RuntimeError, match='numba is not importable'):
        ss.cpu_recurrence()


def test_every_compiled_function_goes_through_the_guarded_helper():
    import re
    pattern = re.compile(r'numba\.(njit|jit)\b|^\s*@\s*(njit|jit)\b|from numba import .*\b(njit|jit)\b', re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / 'gmamba_zoo').rglob('*.py')
                 if p.name != '_numba_jit.py' and pattern.search(p.read_text())]
    assert not offenders, f'numba.njit outside gmamba_zoo/ops/_numba_jit.py (use cached_njit): {offenders}'

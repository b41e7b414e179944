"""What a release carries: the licence and metadata of the wheel, one version, the typing marker, the ways to run the
command, and an sdist that holds what the tests need. Read from the source tree (no build here: ``.ci/package-check``
builds both and tests them from outside the repository)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gmamba_zoo
from gmamba_zoo.cli import main as cli_main

tomllib = pytest.importorskip('tomllib')

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())
PROJECT = PYPROJECT['project']


def test_licence_is_spdx_and_ships():
    assert PROJECT['license'] == 'Apache-2.0' and PROJECT['license-files'] == ['LICENSE']
    text = (ROOT / 'LICENSE').read_text()
    assert text.split()[:4] == ['Apache', 'License', 'Version', '2.0,'] and 'END OF TERMS AND CONDITIONS' in text
    # setuptools refuses a licence classifier beside an SPDX expression
    assert not [c for c in PROJECT['classifiers'] if c.startswith('License ::')]
    assert int(re.search(r'setuptools>=(\d+)', ' '.join(PYPROJECT['build-system']['requires'])).group(1)) >= 77


def test_index_metadata():
    assert PROJECT['authors'] and PROJECT['keywords'] and 'Typing :: Typed' in PROJECT['classifiers']
    urls = PROJECT['urls']
    assert {'Homepage', 'Documentation', 'Repository', 'Issues'} <= set(urls)
    assert all(u.startswith('https://github.com/') for u in urls.values())
    python = re.search(r'>=\s*3\.(\d+)', PROJECT['requires-python']).group(1)
    versions = [c.rsplit(':: ', 1)[1] for c in PROJECT['classifiers']
                if re.match(r'Programming Language :: Python :: 3\.\d+$', c)]
    assert versions and min(int(v.split('.')[1]) for v in versions) == int(python)


def test_one_version():
    """pyproject reads the version from the package; CITATION.cff repeats it."""
    assert 'version' not in PROJECT and 'version' in PROJECT['dynamic']
    assert PYPROJECT['tool']['setuptools']['dynamic']['version'] == {'attr': 'gmamba_zoo.__version__'}
    assert re.fullmatch(r'\d+\.\d+\.\d+([ab]\d+|rc\d+)?', gmamba_zoo.__version__)
    citation = re.search(r'^version: (\S+)$', (ROOT / 'CITATION.cff').read_text(), re.M).group(1)
    assert citation == gmamba_zoo.__version__


def test_typed_marker_is_package_data():
    assert (ROOT / 'gmamba_zoo' / 'py.typed').is_file()
    assert 'py.typed' in PYPROJECT['tool']['setuptools']['package-data']['gmamba_zoo']


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(['--version'])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f'gmamba-zoo {gmamba_zoo.__version__}'


@pytest.mark.slow
def test_python_dash_m():
    res = subprocess.run([sys.executable, '-m', 'gmamba_zoo', 'list'], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS='ignore'))
    assert res.returncode == 0 and res.stdout.split() == gmamba_zoo.list_models(), res.stderr


def test_sdist_holds_what_the_tests_need():
    """MANIFEST.in grafts tests/ (conftest.py, hub_cache.py, data/), scripts/ and docs/, which tests read."""
    manifest = (ROOT / 'MANIFEST.in').read_text().split('\n')
    for line in ('graft tests', 'graft scripts', 'graft docs'):
        assert line in manifest
    assert 'hubconf.py' in next(line for line in manifest if line.startswith('include '))


def test_package_reads_nothing_of_the_source_tree():
    """An installed package has no docs/, tests/ or scripts/ beside it: no module locates files from ``__file__``
    (what the package needs ships inside it, or is computed; a report is passed in by its caller)."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / 'gmamba_zoo').rglob('*.py') if '__file__' in p.read_text()]
    assert not offenders, offenders


def test_readme_links_resolve_on_the_package_index():
    """The README is the index page's description, where a relative link leads nowhere: every link is absolute (or
    an anchor), and those to the repository use pyproject's address."""
    readme = (ROOT / 'README.md').read_text()
    links = re.findall(r'\]\(([^)\s]+)\)', readme) + re.findall(r'(?:src|href)="([^"]+)"', readme)
    relative = [link for link in links if not re.match(r'(https?://|#|mailto:)', link)]
    assert not relative, f'relative links in README.md: {relative}'
    home = PROJECT['urls']['Repository']
    ours = [link for link in links if 'gmamba-zoo/gmamba_zoo' in link or 'gmamba_zoo/blob' in link]
    assert ours and all(link.startswith(home + '/') for link in ours), ours
    from gmamba_zoo.flops.counter import DOCS_URL
    assert DOCS_URL.startswith(home + '/')  # the generated models table links there too

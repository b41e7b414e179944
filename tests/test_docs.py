"""The docs' Python snippets run as a reader would: each ```python block of README.md and docs/*.md on its own, in a
fresh interpreter, in an empty folder, with the Hub offline.

A block that cannot run here says so in the docs, on the line before its fence:

* ``<!-- docs-test: skip (REASON) -->``: not run; the test is skipped with REASON (the network, a file of the
  reader's own, a framework with no wheels);
* ``<!-- docs-test: offline (REASON) -->``: run with ``pretrained=True`` (and ``pretrained_backbone=True``) set to
  False, since the tests cannot download weights; everything else in the block runs as written.
"""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r'^<!-- docs-test: (skip|offline) \((.+)\) -->$')
FENCE = re.compile(r'^```python\n(.*?)^```$', re.S | re.M)


class Snippet(NamedTuple):
    where: str  # file:line of the fence
    code: str
    mode: Optional[str]  # None (run as written), 'skip' or 'offline'
    reason: str


def snippets(root: Path = ROOT) -> List[Snippet]:
    """Every ```python block of README.md and docs/*.md, with the marker on the line before it, if any."""
    out = []
    for path in [root / 'README.md', *sorted((root / 'docs').glob('*.md'))]:
        text = path.read_text()
        for m in FENCE.finditer(text):
            before = text[:m.start()].rstrip('\n').rsplit('\n', 1)[-1]
            marker = MARKER.match(before)
            line = text[:m.start()].count('\n') + 1
            out.append(Snippet(f'{path.relative_to(root)}:{line}', m.group(1), marker and marker.group(1),
                               marker.group(2) if marker else ''))
    return out


SNIPPETS = snippets()


def _offline(code: str) -> str:
    return re.sub(r'\b(pretrained(?:_backbone)?)\s*=\s*True\b', r'\1=False', code)


def test_markers_are_well_formed():
    """Every docs-test comment is one of the two forms, right before a ```python fence (a typo would leave a block
    unmarked, and it would then fail, rather than be skipped silently)."""
    for path in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if 'docs-test' in line:
                assert MARKER.match(line), f'{path.name}:{i + 1}: malformed marker {line!r}'
                assert i + 1 < len(lines) and lines[i + 1] == '```python', f'{path.name}:{i + 1}: not before a block'
    assert len(SNIPPETS) >= 10 and sum(s.mode is None for s in SNIPPETS) >= 5


def test_offline_only_changes_the_downloads():
    code = "m = create('a', pretrained=True, x=1)\nd = build('b', pretrained_backbone = True)\npretrained=False\n"
    assert _offline(code) == "m = create('a', pretrained=False, x=1)\nd = build('b', pretrained_backbone=False)\n" \
                             "pretrained=False\n"


@pytest.mark.slow
@pytest.mark.parametrize('snippet', SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_snippet_runs(snippet, tmp_path):
    if snippet.mode == 'skip':
        pytest.skip(f'{snippet.where}: {snippet.reason}')
    code = _offline(snippet.code) if snippet.mode == 'offline' else snippet.code
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore')
    res = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, f'{snippet.where} does not run:\n{code}\n{res.stderr[-3000:]}'

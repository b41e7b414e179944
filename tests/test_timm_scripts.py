"""The launcher of timm's scripts: ``gmamba-zoo timm SCRIPT.py ...`` and ``python -m gmamba_zoo.timm SCRIPT.py ...``.

timm's own scripts are not in its wheel, so the tests write a small one that does what they do: parse its arguments
with argparse, build a model through timm's registry by name and exit with a status of its choosing. It also imports
a module beside it, as timm's scripts do only if their folder is at ``sys.path[0]``.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gmamba_zoo
from gmamba_zoo.cli import main as cli_main
from gmamba_zoo.integrations.timm_scripts import run_script

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = 'resnet18_gmamba'

pytestmark = pytest.mark.skipif(NAME not in gmamba_zoo.list_models(), reason=f'{NAME} is not registered')

SCRIPT = '''
import argparse
import json
import sys

import timm

import neighbour  # a module beside the script: found only with the script's folder at sys.path[0]

parser = argparse.ArgumentParser()
parser.add_argument('--model', required=True)
parser.add_argument('--num-classes', type=int, default=1000)
parser.add_argument('-x', '--exit-code', type=int, default=0)
args = parser.parse_args()
model = timm.create_model(args.model, num_classes=args.num_classes)
print(json.dumps(dict(name=__name__, argv=sys.argv, path0=sys.path[0], classes=model.num_classes,
                      neighbour=neighbour.VALUE)))
if args.exit_code >= 0:
    sys.exit(args.exit_code)
'''


@pytest.fixture()
def script(tmp_path) -> Path:
    folder = tmp_path / 'timm_scripts'
    folder.mkdir()
    (folder / 'neighbour.py').write_text("VALUE = 'beside'\n")
    path = folder / 'fake_train.py'
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def _report(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_cli_runs_the_script_as_main_with_its_arguments(script, capsys):
    argv, path = sys.argv[:], sys.path[:]
    args = ['--model', NAME, '--num-classes', '3', '-x', '7']
    with pytest.raises(SystemExit) as exit_info:
        cli_main(['timm', str(script), *args])
    assert exit_info.value.code == 7
    report = _report(capsys.readouterr().out)
    assert report == dict(name='__main__', argv=[str(script), *args], path0=str(script.parent), classes=3,
                          neighbour='beside')
    assert sys.argv == argv and sys.path == path  # restored
    # a script that ends without calling sys.exit: status 0
    assert run_script(script, ['--model', NAME, '--exit-code', '-1']) == 0
    assert _report(capsys.readouterr().out)['argv'][1:] == ['--model', NAME, '--exit-code', '-1']


@pytest.mark.slow
def test_python_m_gmamba_zoo_timm_keeps_the_exit_status(script, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, '-m', 'gmamba_zoo.timm', str(script), '--model', NAME, '--exit-code', '5'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 5, proc.stderr
    report = _report(proc.stdout)
    assert report['name'] == '__main__' and report['classes'] == 1000 and report['path0'] == str(script.parent)
    assert report['argv'] == [str(script), '--model', NAME, '--exit-code', '5']


def test_missing_script_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"gmamba-zoo timm: timm script '.*nope\.py' is not a file"):
        cli_main(['timm', str(tmp_path / 'nope.py'), '--model', NAME])

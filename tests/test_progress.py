"""Progress of the long commands (:mod:`gmamba_zoo.bench.progress`): a bar on stderr only where someone watches it.

The bar is drawn when stderr is a terminal (a stream whose ``isatty()`` is true here) or when ``GMAMBA_ZOO_PROGRESS=1``
forces it; never with ``--quiet``; and the command's stdout is the same either way.
"""
import io

import pytest

import gmamba_zoo
from gmamba_zoo.bench.progress import ENV, Progress, bar_enabled
from gmamba_zoo.cli import build_parser, main as cli_main

SMALL = 'resnet18_gmamba'
LONG_COMMANDS = ['flops', 'benchmark', 'bench-scan', 'bench-breakdown', 'bench-compile', 'export', 'erf', 'criterion',
                 'longrange', 'train', 'push-to-hub']


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream: io.StringIO, quiet: bool = False) -> str:
    with Progress('work', 3, 'model', quiet=quiet, stream=stream) as progress:
        progress('header line')
        for name in ('a', 'b', 'c'):
            progress.stage(name)
            progress.done(f'{name} measured')
    return stream.getvalue()


def test_bar_on_a_terminal_lines_elsewhere(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    on_terminal = _run(_Terminal())
    assert '3/3' in on_terminal and 'work' in on_terminal and 'c measured' in on_terminal
    assert on_terminal.count('\r') >= 3  # redrawn in place, step by step

    piped = _run(io.StringIO())
    assert piped == 'header line\na measured\nb measured\nc measured\n'  # the log reads as before: no bar
    assert _run(_Terminal(), quiet=True) == '' and _run(io.StringIO(), quiet=True) == ''

    monkeypatch.setenv(ENV, '1')
    assert '3/3' in _run(io.StringIO())
    monkeypatch.setenv(ENV, '0')
    assert '3/3' not in _run(_Terminal())
    monkeypatch.setenv(ENV, 'yes')
    with pytest.raises(ValueError, match=f'{ENV}=.yes.: expected 0'):
        bar_enabled(io.StringIO())


def test_result_lines_go_to_stdout_as_print_writes_them(capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with Progress('work', 1, stream=_Terminal()) as progress:
        progress.print('result 1')
        progress.done()
    with Progress('work', 1, quiet=True) as progress:
        progress.print('result 2')
    assert capsys.readouterr().out == 'result 1\nresult 2\n'


@pytest.mark.parametrize('command', LONG_COMMANDS)
def test_every_long_command_takes_quiet(command):
    args = [command, '--quiet'] + {'export': [SMALL, '--out', 'x.onnx'], 'erf': [SMALL], 'criterion': [SMALL],
                                   'train': ['data'], 'push-to-hub': [SMALL]}.get(command, [])
    assert build_parser(args).parse_args(args).quiet is True


@pytest.mark.skipif(SMALL not in gmamba_zoo.list_models(), reason=f'{SMALL} is not registered')
def test_flops_command_bar_and_quiet_leave_stdout_alone(capsys, monkeypatch):
    argv = ['flops', '--models', SMALL, '--no-det', '--no-baselines', '--size', '64', '64']
    monkeypatch.setenv(ENV, '1')
    assert cli_main(argv) == 0
    with_bar = capsys.readouterr()
    assert 'flops' in with_bar.err and '1/1' in with_bar.err and f'counting {SMALL}' in with_bar.err
    assert cli_main(argv + ['--quiet']) == 0
    quiet = capsys.readouterr()
    assert quiet.err == '' and quiet.out == with_bar.out and SMALL in quiet.out

"""Run timm's own scripts (``train.py``, ``validate.py``, ``benchmark.py``, ...) with the zoo's models registered.

timm's scripts build their model with ``timm.create_model(args.model)``, which knows a zoo model only once
``import gmamba_zoo`` has registered it; run as ``python train.py --model convnext_s_gmamba`` they stop at "Unknown
model". The launcher imports the package and then runs the script as Python would have:

    gmamba-zoo timm train.py --model resnet18_gmamba ...          # the command line
    python -m gmamba_zoo.timm train.py --model resnet18_gmamba ...  # the same, without the console script
    torchrun --nproc_per_node=2 -m gmamba_zoo.timm train.py ...     # one process per GPU (torchrun's -m: python -m)
    torchrun --nproc_per_node=2 --no-python gmamba-zoo timm train.py ...   # the same through the console script

The script runs as ``__main__`` (``runpy.run_path``) with ``sys.argv`` set to ``[SCRIPT, *ARGS]`` (its arguments
are passed on untouched, options included) and its own folder at ``sys.path[0]``, so its imports of neighbouring
files work; its exit status is the command's (``sys.exit(n)`` and exceptions propagate unchanged). Under torchrun
every process runs the launcher, and the script reads the ranks from torchrun's environment variables as usual.

timm's scripts are not in its wheel: take them from the timm repository at the tag of the installed timm
(``git clone --branch v$(python -c 'import timm; print(timm.__version__)')
https://github.com/huggingface/pytorch-image-models``).
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

__all__ = ['run_script', 'main', 'add_arguments', 'run']

USAGE = 'usage: python -m gmamba_zoo.timm SCRIPT.py [ARGS ...]   (or: gmamba-zoo timm SCRIPT.py [ARGS ...])'


def run_script(script: Union[str, Path], args: Sequence[str] = ()) -> int:
    """Register the zoo's models with timm and run ``script`` as ``__main__`` with ``args`` as its command line.

    Args:
        script: A Python file, e.g. timm's ``train.py``.
        args: Its arguments, passed on as given.

    Returns:
        0 when the script ends without calling ``sys.exit``; a ``SystemExit`` it raises (its exit status) and any
        other exception propagate unchanged. ``sys.argv`` and ``sys.path`` are restored either way.

    Raises:
        FileNotFoundError: ``script`` is not a file.
    """
    import gmamba_zoo  # noqa: F401  registers every zoo model with timm's registry
    path = _script_path(script)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(path), *args]
    # Python runs `python SCRIPT` with the script's folder, not the launcher's, at sys.path[0]
    if sys.path:
        sys.path[0] = str(path.resolve().parent)
    else:
        sys.path.insert(0, str(path.resolve().parent))
    try:
        runpy.run_path(str(path), run_name='__main__')
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
    return 0


def _script_path(script: Union[str, Path]) -> Path:
    path = Path(script)
    if not path.is_file():
        raise FileNotFoundError(f'timm script {str(script)!r} is not a file; expected a Python script such as timm\'s '
                                f'train.py (from the timm repository: the timm wheel does not include its scripts).')
    return path


def _launch(prog: str, script: str, args: Sequence[str]) -> int:
    try:
        _script_path(script)  # checked here so that a FileNotFoundError of the script itself keeps its traceback
    except FileNotFoundError as e:
        raise SystemExit(f'{prog}: {e}') from None
    return run_script(script, args)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m gmamba_zoo.timm SCRIPT.py [ARGS ...]`` (``argv``: default ``sys.argv[1:]``); :func:`run_script`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    return _launch('gmamba_zoo.timm', argv[0], argv[1:])


# ----------------------------------------------------------------------------------------------------------------------
# command line: gmamba-zoo timm

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('script', help="the script to run, e.g. timm's train.py, validate.py or benchmark.py (from "
                                       "the timm repository; the wheel does not include them)")
    parser.add_argument('args', nargs=argparse.REMAINDER, help="the script's own arguments, passed on untouched")


def run(args: argparse.Namespace) -> int:
    return _launch('gmamba-zoo timm', args.script, args.args)

"""Progress of the long commands on stderr: a tqdm bar with the steps done out of the total and the time left.

Every command that can run longer than a few seconds (``flops``, ``benchmark``, ``bench-scan``, ``bench-breakdown``,
``bench-compile``, ``export``, ``erf``, ``criterion``, ``longrange``, ``train``, ``push-to-hub``) reports through one
:class:`Progress`:

* ``progress.add(n)``: n more steps in the total (a command adds each phase's steps when it knows them);
* ``progress.stage(text)``: what is running now, shown beside the bar (the stages of a single long step such as an
  export: build, trace, write, check);
* ``progress.done(message=None)``: one step finished, with an optional line for the log;
* ``progress(message)``: a line on stderr (printed above the bar while it is shown), e.g. a command's header;
* ``progress.print(text)``: a result line on stdout, as ``print`` writes it (the bar steps aside for it).

The bar is drawn only where someone watches it: when stderr is a terminal (``GMAMBA_ZOO_PROGRESS=1`` forces it on,
``=0`` off). Otherwise the lines are printed as before, one per finished step, so a log file reads the same. With
``--quiet`` (``quiet=True``) neither the bar nor the lines appear. Results never go through here: they stay on stdout
and in the report files.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, TextIO

__all__ = ['Progress', 'add_quiet_argument', 'bar_enabled']

ENV = 'GMAMBA_ZOO_PROGRESS'


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: the same option on every long command."""
    parser.add_argument('--quiet', action='store_true',
                        help='no progress on stderr (the bar is drawn only when stderr is a terminal; '
                             f'{ENV}=1 forces it on)')


def bar_enabled(stream: Optional[TextIO] = None) -> bool:
    """Whether a bar is drawn on ``stream`` (default stderr): ``GMAMBA_ZOO_PROGRESS`` if set, else whether it is a
    terminal."""
    forced = os.environ.get(ENV)
    if forced in ('0', '1'):
        return forced == '1'
    if forced:
        raise ValueError(f'{ENV}={forced!r}: expected 0 (no bar) or 1 (a bar even when stderr is not a terminal).')
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A command's progress on stderr (see the module docstring); a context manager that closes the bar.

    Args:
        desc: What the command does, left of the bar (e.g. ``'flops'``).
        total: Steps known at the start; :meth:`add` adds more.
        unit: What a step is (``'model'``, ``'step'``, ``'stage'``).
        quiet: Nothing at all on stderr.
        stream: Where to write (default ``sys.stderr`` at construction).
        initial: Steps already done (a resumed run), left out of the rate and the time left.
    """

    def __init__(self, desc: str, total: int = 0, unit: str = 'step', quiet: bool = False,
                 stream: Optional[TextIO] = None, initial: int = 0):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.bar: Any = None
        if not quiet and bar_enabled(self.stream):
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, initial=initial)

    def __call__(self, message: str) -> None:
        """A line on stderr (above the bar)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def print(self, text: str) -> None:
        """A result line on stdout, exactly as ``print(text)`` (not silenced by ``quiet``)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(text, flush=True)

    def add(self, n: int) -> None:
        """``n`` more steps in the total."""
        if self.bar is not None and n:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    def stage(self, text: str) -> None:
        """Show what is running now beside the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def done(self, message: Optional[str] = None, n: int = 1) -> None:
        """``n`` steps finished; ``message`` goes to the log."""
        if message is not None:
            self(message)
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> 'Progress':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

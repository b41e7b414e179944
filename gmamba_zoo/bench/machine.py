"""What a report records about the run that made it: the machine, this process's memory, the command line."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..ops import cpu_recurrence

__all__ = ['machine', 'proc_status', 'command_line', 'load_average']


def proc_status(key: str) -> int:
    """A byte count from ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...); Linux only."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``); None where there is none. A 1-minute load well below
    1 means a quiet machine; timings taken above it are noisier."""
    try:
        with open('/proc/loadavg') as f:
            return [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def machine() -> Dict[str, Any]:
    """CPU model, cores, torch threads and versions, today's date and the scan's CPU loop."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'cpu': cpu, 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(), 'torch': torch.__version__,
            'python': platform.python_version(), 'date': datetime.date.today().isoformat(),
            'cpu_recurrence': cpu_recurrence()}


def command_line(script: str, subcommand: str, args: argparse.Namespace) -> str:
    """How this run was invoked, as the equivalent ``python scripts/...`` command, for a report's header."""
    argv = getattr(args, 'argv', None)
    if argv is None:
        argv = sys.argv[1:]
        argv = argv[1:] if argv[:1] == [subcommand] else argv
    return ' '.join(['python', script] + [shlex.quote(str(a)) for a in argv])


def write_report(out: Optional[Path], report: str, data: Dict[str, Any]) -> None:
    """Print a Markdown report and, with ``out``, write it there and ``data`` as JSON beside it (``.json``)."""
    print(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        out.with_suffix('.json').write_text(json.dumps(data, indent=2))

#!/usr/bin/env python
"""Speed and memory benchmark and scaling study: ``python scripts/benchmark.py --out docs/benchmark.md``.

The code lives in :mod:`gmamba_zoo.bench.models` so that ``gmamba-zoo benchmark`` runs the same thing. From a
checkout, the FLOPs of its latency-vs-FLOPs table are read from ``docs/flops.json`` (``--flops-report``) unless another
report is given; the installed command counts them.
"""
import sys
from pathlib import Path

from gmamba_zoo.cli import main

REPORT = Path(__file__).resolve().parents[1] / 'docs' / 'flops.json'

if __name__ == '__main__':
    argv = sys.argv[1:]
    if '--flops-report' not in argv and REPORT.is_file():
        argv += ['--flops-report', str(REPORT.relative_to(Path.cwd()) if REPORT.is_relative_to(Path.cwd()) else REPORT)]
    sys.exit(main(['benchmark'] + argv))

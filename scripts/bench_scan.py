#!/usr/bin/env python
"""Selective-scan speed and memory benchmark: ``python scripts/bench_scan.py --out docs/scan-benchmark.md``.

The code lives in :mod:`gmamba_zoo.bench.scan` so that ``gmamba-zoo bench-scan`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['bench-scan'] + sys.argv[1:]))

#!/usr/bin/env python
"""Selective-scan speed and memory benchmark: ``python scripts/bench_scan.py --out docs/scan-benchmark.md``.

The code lives in :mod:`gmamba_zoo.bench_scan` so that ``gmamba-zoo bench-scan`` runs the same thing.
"""
import sys

from gmamba_zoo.bench_scan import main

if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Speed and memory benchmark and scaling study: ``python scripts/benchmark.py --out docs/benchmark.md``.

The code lives in :mod:`gmamba_zoo.bench.models` so that ``gmamba-zoo benchmark`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['benchmark'] + sys.argv[1:]))

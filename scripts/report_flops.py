#!/usr/bin/env python
"""Params and FLOPs of every model: ``python scripts/report_flops.py --out docs/flops.md --models-md docs/models.md``.

The code lives in :mod:`gmamba_zoo.flops.counter` so that ``gmamba-zoo flops`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['flops'] + sys.argv[1:]))

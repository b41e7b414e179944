#!/usr/bin/env python
"""The paper's ablations as block options: ``python scripts/ablations.py --out docs/ablations.md``.

The code lives in :mod:`gmamba_zoo.analysis.ablations` so that ``gmamba-zoo ablations`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['ablations'] + sys.argv[1:]))

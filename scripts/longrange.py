#!/usr/bin/env python
"""Long-range benchmark (corner-colour task): ``python scripts/longrange.py --out docs/longrange.md``.

The code lives in :mod:`gmamba_zoo.analysis.longrange` so that ``gmamba-zoo longrange`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['longrange'] + sys.argv[1:]))

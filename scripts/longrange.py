#!/usr/bin/env python
"""Long-range benchmark (corner-colour task): ``python scripts/longrange.py --out docs/longrange.md``.

The code lives in :mod:`gmamba_zoo.longrange` so that ``gmamba-zoo longrange`` runs the same thing.
"""
import sys

from gmamba_zoo.longrange import main

if __name__ == '__main__':
    sys.exit(main())

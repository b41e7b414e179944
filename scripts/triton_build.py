#!/usr/bin/env python
"""The Triton scan kernels compiled for every GPU target, no GPU needed: ``python scripts/triton_build.py --out
docs/triton-build.md``.

The code lives in :mod:`gmamba_zoo.bench.triton_build`.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['triton-build'] + sys.argv[1:]))

#!/usr/bin/env python
"""torch.compile (inductor by default) vs eager for a zoo model: ``python scripts/bench_compile.py --model NAME``.

The code lives in :mod:`gmamba_zoo.bench.compile`.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['bench-compile'] + sys.argv[1:]))

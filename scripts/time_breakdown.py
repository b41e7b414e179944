#!/usr/bin/env python
"""Where a model's forward time goes, by kind of operation, beside its plain backbone:
``python scripts/time_breakdown.py --models resnet18_gmamba vgamba_b --img-size 224 224 --img-size 512 512
--out docs/time-breakdown.md``.

The code lives in :mod:`gmamba_zoo.bench.breakdown`.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['bench-breakdown'] + sys.argv[1:]))

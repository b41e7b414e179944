#!/usr/bin/env python
"""The GPU check in one run (sized for under 5 minutes): ``python scripts/check_gpu.py`` writes docs/gpu-check.md.

Every scan backend against the float64 oracle (all dtypes, all gradients), the scan's speed, an AMP training step of
four models and ``torch.compile`` of one. The code lives in :mod:`gmamba_zoo.bench.gpu_check` so that
``gmamba-zoo check-gpu`` runs the same thing; ``--help`` lists the options.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['check-gpu'] + sys.argv[1:]))

#!/usr/bin/env python
"""Former name of the scan-parity part of ``scripts/check_gpu.py``: runs ``gmamba-zoo check-gpu --sections parity``.

Every scan backend (Triton, mamba-ssm's kernel, the PyTorch scan) against the float64 oracle on a CUDA GPU; see
:mod:`gmamba_zoo.bench.gpu_check`. Extra arguments are passed on (e.g. ``--dtypes float32``).
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['check-gpu', '--sections', 'parity'] + sys.argv[1:]))

#!/usr/bin/env python
"""Effective receptive field maps: ``python scripts/erf.py resnet18_gmamba --size 224 --out docs``.

The code lives in :mod:`gmamba_zoo.analysis.perception` so that ``gmamba-zoo erf`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['erf'] + sys.argv[1:]))

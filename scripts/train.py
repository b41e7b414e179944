#!/usr/bin/env python
"""Fine-tune a zoo model on an ImageFolder data set: ``python scripts/train.py DATA --model resnet50_gmamba ...``.

DDP: ``torchrun --nproc_per_node=N scripts/train.py DATA ...`` (NCCL on GPUs, gloo on CPU). The code lives in
:mod:`gmamba_zoo.train.finetune` so that ``gmamba-zoo train`` runs the same thing.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['train'] + sys.argv[1:]))

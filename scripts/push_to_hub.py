#!/usr/bin/env python
"""Export a zoo model as a Hugging Face Hub folder with a model card, and upload it: ``python scripts/push_to_hub.py``.

    python scripts/push_to_hub.py resnet50_gmamba --checkpoint output/train/model_best.pth.tar --blocks-trained \\
        --num-classes 6 --repo-id my-org/resnet50_gmamba.vaihingen --dry-run

The code lives in :mod:`gmamba_zoo.hub.publish` so that ``gmamba-zoo push-to-hub`` runs the same thing; ``--help`` lists the
options.
"""
import sys

from gmamba_zoo.cli import main

if __name__ == '__main__':
    sys.exit(main(['push-to-hub'] + sys.argv[1:]))

"""``python -m gmamba_zoo.timm SCRIPT.py [ARGS ...]``: run one of timm's scripts with the zoo's models registered.

An entry point like ``cli.py`` (nothing imports it); the launcher is
:mod:`gmamba_zoo.integrations.timm_scripts`, which ``gmamba-zoo timm`` runs too. Under torchrun:
``torchrun --nproc_per_node=N -m gmamba_zoo.timm train.py ...``.
"""
import sys

from gmamba_zoo.integrations.timm_scripts import main

if __name__ == '__main__':
    sys.exit(main())

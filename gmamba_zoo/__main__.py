"""``python -m gmamba_zoo``: the ``gmamba-zoo`` command (:mod:`gmamba_zoo.cli`)."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())

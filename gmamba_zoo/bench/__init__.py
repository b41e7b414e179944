"""Benchmarks: the selective scan (:mod:`.scan`), whole models against their baselines and the GMamba-vs-attention
scaling study (:mod:`.models`), ``torch.compile`` against eager (:mod:`.compile`); :mod:`.machine` records the run.

Each runs from the command line (``gmamba-zoo bench-scan``, ``gmamba-zoo benchmark``) or ``scripts/``; the results
go to ``docs/`` with the machine and the date.
"""

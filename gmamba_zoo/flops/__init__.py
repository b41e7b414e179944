"""FLOP counting: fvcore with handles for the scan op, the FFTs and attention, an allow-list, and the report.

Importing this room imports fvcore; nothing below it does.
"""
from .counter import (
    CONVENTION, FLOP_FREE_OPS, FLOP_HANDLES, SkippedOpsError, ZooFlopCountAnalysis, baseline_name, build_report, count,
    count_params,
)

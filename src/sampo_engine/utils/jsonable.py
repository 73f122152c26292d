"""Strict JSON values from results that hold numpy scalars, tuples and NaN."""

from __future__ import annotations

import math

import numpy as np


def strict_jsonable(obj):
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON.

    NaN and ±inf become None, numpy scalars become Python numbers, tuples become lists and
    dictionary keys become strings; anything else is returned as it is.
    """
    if isinstance(obj, dict):
        return {str(k): strict_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj

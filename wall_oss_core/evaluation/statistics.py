"""The one summary of a list of numbers every evaluation output uses: count, mean, median, p95, max."""
from __future__ import annotations

import numpy as np


def summary_statistics(values) -> dict:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}

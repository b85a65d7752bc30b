"""The closed forms the network losses (losses.py) and the numpy theory (theory/) share, in a
module without torch: CCQL's default weight and each loss's value at zero outputs, the reference
of the normalized losses."""
from __future__ import annotations

import math


def default_ccql_weight(num_classes: int) -> float:
    """w = sqrt(K - 1) - 1: CCQL = QL at K = 2; 3.899 at K = 25; 8.950 at K = 100."""
    return math.sqrt(num_classes - 1) - 1.0


def zero_output_loss(name: str, num_classes: int, w: float = 0.0) -> float:
    """Per-sample loss at all-zero outputs (any label): log K for 'ce', 1/2 for 'ql', (w + 1)/2
    for 'ccql' with weight w. The reference of the normalized losses."""
    if name == "ce":
        return math.log(num_classes)
    if name == "ql":
        return 0.5
    if name == "ccql":
        return (float(w) + 1.0) / 2.0
    raise ValueError(f"zero_output_loss knows 'ce', 'ql' and 'ccql', got {name!r}")

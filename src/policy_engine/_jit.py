"""numba-compiled helpers of ``kernel.py`` (imported only where numba is used: large batches)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def narrow(pairs: Any, nulls: Any, out: Any) -> tuple[bool, int, int]:
    """Copy the low words of 128-bit integers (``pairs``: little-endian (low, high) rows) into
    ``out``; (every non-null value fits int64, min, max of the non-null values; 0, 0 if none).
    A null's slot is set to 0. ``nulls`` is empty when there are none."""
    fits = True
    lo = 0
    hi = 0
    first = True
    has_nulls = nulls.shape[0] > 0
    for k in range(pairs.shape[0]):
        if has_nulls and nulls[k]:
            out[k] = 0
            continue
        x = pairs[k, 0]
        if pairs[k, 1] != (x >> 63):
            fits = False
        out[k] = x
        if first:
            lo = x
            hi = x
            first = False
        elif x < lo:
            lo = x
        elif x > hi:
            hi = x
    return fits, lo, hi


@numba.njit(cache=True, nogil=True)
def owners_match(owner: Any, off: Any, start: int, end: int) -> bool:
    """Whether households ``start`` to ``end`` own their members: ``owner[j] == h`` for every
    member ``j`` from ``off[h]`` to ``off[h + 1]`` (members listed in household order)."""
    for h in range(start, end):
        if off[h + 1] < off[h]:
            return False
        for j in range(off[h], off[h + 1]):
            if owner[j] != h:
                return False
    return True


def decimal_words(array: Any) -> Any:
    """The (low, high) 64-bit words of an Arrow decimal128 array, as a numpy view (no copy)."""
    buffer = array.buffers()[1]
    return np.frombuffer(buffer, dtype=np.int64, count=2 * len(array), offset=array.offset * 16).reshape(-1, 2)

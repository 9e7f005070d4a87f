"""numba-compiled helpers of ``kernel.py`` (imported only where numba is used: large batches)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def narrow(pairs: Any, nulls: Any, out: Any) -> tuple[bool, int, int]:
    """Copy the low words of 128-bit integers (``pairs``: little-endian (low, high) rows) into
    ``out``; (every non-null value fits int64, min, max of the non-null values; 0, 0 if none).
    A null's slot is set to 0. ``nulls`` is empty when there are none; ``out`` is empty when
    only the bounds are wanted."""
    write = out.shape[0] > 0
    fits = True
    lo = 0
    hi = 0
    first = True
    has_nulls = nulls.shape[0] > 0
    for k in range(pairs.shape[0]):
        if has_nulls and nulls[k]:
            if write:
                out[k] = 0
            continue
        x = pairs[k, 0]
        if pairs[k, 1] != (x >> 63):
            fits = False
        if write:
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


#: multipliers of the text-code hash (odd 64-bit constants)
_H0 = np.uint64(0x9E3779B97F4A7C15)
_H1 = np.uint64(0xC2B2AE3D27D4EB4F)


@numba.njit(cache=True, nogil=True)
def _inline(w0: Any, w1: Any) -> tuple[Any, Any, bool]:
    """An Arrow string view's two words with the bytes past its length cleared, and whether the
    string is held in the view (12 bytes or fewer)."""
    n = w0 & np.uint64(0xFFFFFFFF)
    if n > 12:
        return w0, w1, False
    if n <= 4:
        if n < 4:
            w0 = w0 & ((np.uint64(1) << np.uint64(32 + 8 * n)) - np.uint64(1))
        return w0, np.uint64(0), True
    if n < 12:
        w1 = w1 & ((np.uint64(1) << np.uint64(8 * (n - 4))) - np.uint64(1))
    return w0, w1, True


@numba.njit(cache=True, nogil=True)
def view_codes(views: Any, keys: Any, codes: Any, out: Any) -> None:
    """The code of each string of an Arrow string-view array held in its view (``views``: its
    (n, 2) words as uint64), from the open-addressing table ``keys`` (slot: the two words of a
    text) / ``codes`` (-1: empty slot); -1 for a text not in the table, or one longer than 12
    bytes (the caller makes sure no text of the table is)."""
    mask = np.uint64(codes.shape[0] - 1)
    for k in range(views.shape[0]):
        w0, w1, held = _inline(views[k, 0], views[k, 1])
        code = -1 if held else -2
        if held:
            slot = ((w0 * _H0) ^ (w1 * _H1)) >> np.uint64(32) & mask
            while codes[slot] != -1:
                if keys[slot, 0] == w0 and keys[slot, 1] == w1:
                    code = codes[slot]
                    break
                slot = (slot + np.uint64(1)) & mask
        out[k] = code


def text_table(texts: dict[str, int]) -> tuple[Any, Any]:
    """The table ``view_codes`` looks texts up in: those of ``texts`` of 12 bytes or fewer."""
    size = 8
    while size < 2 * len(texts):
        size *= 2
    keys = np.zeros((size, 2), dtype=np.uint64)
    codes = np.full(size, -1, dtype=np.int64)
    full = (1 << 64) - 1
    for text, code in texts.items():
        data = text.encode()
        if len(data) > 12:
            continue
        word = len(data).to_bytes(4, "little") + data.ljust(12, b"\0")
        w0, w1 = int.from_bytes(word[:8], "little"), int.from_bytes(word[8:], "little")
        slot = (((w0 * int(_H0)) & full) ^ ((w1 * int(_H1)) & full)) >> 32 & (size - 1)
        while codes[slot] != -1:
            slot = (slot + 1) & (size - 1)
        keys[slot] = w0, w1
        codes[slot] = code
    return keys, codes

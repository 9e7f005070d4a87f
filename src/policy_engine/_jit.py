"""numba-compiled helpers of ``kernel.py`` (imported only where numba is used: large batches)."""

from __future__ import annotations

import functools
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


@numba.njit(cache=True, nogil=True)
def widest(off: Any) -> int:
    """The most members a household has (``off``: each household's first member, then the
    number of members), without the temporary array ``np.diff`` would make."""
    most = 0
    for h in range(off.shape[0] - 1):
        most = max(most, off[h + 1] - off[h])
    return most


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
def view_codes(views: Any, keys: Any, codes: Any, data: Any, starts: Any, texts: Any, long_codes: Any,
               out: Any) -> None:
    """The code of each string of an Arrow string-view array (``views``: its (n, 2) words as
    uint64): one of 12 bytes or fewer, held in its view, from the open-addressing table
    ``keys`` (slot: the two words of a text) / ``codes`` (-1: an empty slot); a longer one
    compared with each longer text of the table (``texts[starts[t]:starts[t + 1]]``, code
    ``long_codes[t]``) in ``data``, the array's one data buffer. -1 for a text without a code;
    -2 for a longer one this cannot read (in another data buffer, or beyond this one, as a
    null's view may say: it may hold anything): the caller looks it up."""
    mask = np.uint64(codes.shape[0] - 1)
    for k in range(views.shape[0]):
        w0, w1, held = _inline(views[k, 0], views[k, 1])
        code = -1
        if held:
            slot = ((w0 * _H0) ^ (w1 * _H1)) >> np.uint64(32) & mask
            while codes[slot] != -1:
                if keys[slot, 0] == w0 and keys[slot, 1] == w1:
                    code = codes[slot]
                    break
                slot = (slot + np.uint64(1)) & mask
        else:
            n = np.int64(w0 & np.uint64(0xFFFFFFFF))
            at = np.int64(w1 >> np.uint64(32))
            if (w1 & np.uint64(0xFFFFFFFF)) != 0 or at + n > data.shape[0]:
                code = -2
            else:
                for t in range(long_codes.shape[0]):
                    a = starts[t]
                    if starts[t + 1] - a != n:
                        continue
                    same = True
                    for b in range(n):
                        if data[at + b] != texts[a + b]:
                            same = False
                            break
                    if same:
                        code = long_codes[t]
                        break
        out[k] = code


@functools.lru_cache(maxsize=64)
def text_table(texts: tuple[tuple[str, int], ...]) -> tuple[Any, ...]:
    """The tables ``view_codes`` looks ``texts`` ((text, code) pairs) up in: (keys, codes) for
    those of 12 bytes or fewer, (starts, bytes, codes) for the longer ones. Kept per set of
    texts: a kernel's texts are the same for every column and chunk."""
    size = 8
    while size < 2 * len(texts):
        size *= 2
    keys = np.zeros((size, 2), dtype=np.uint64)
    codes = np.full(size, -1, dtype=np.int64)
    full = (1 << 64) - 1
    longer: list[tuple[bytes, int]] = []
    for text, code in texts:
        data = text.encode()
        if len(data) > 12:
            longer.append((data, code))
            continue
        word = len(data).to_bytes(4, "little") + data.ljust(12, b"\0")
        w0, w1 = int.from_bytes(word[:8], "little"), int.from_bytes(word[8:], "little")
        slot = (((w0 * int(_H0)) & full) ^ ((w1 * int(_H1)) & full)) >> 32 & (size - 1)
        while codes[slot] != -1:
            slot = (slot + 1) & (size - 1)
        keys[slot] = w0, w1
        codes[slot] = code
    starts = np.zeros(len(longer) + 1, dtype=np.int64)
    np.cumsum([len(data) for data, _ in longer], out=starts[1:])
    blob = np.frombuffer(b"".join(data for data, _ in longer) or b"\0", dtype=np.uint8)
    return keys, codes, starts, blob, np.array([code for _, code in longer], dtype=np.int64)

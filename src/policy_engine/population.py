"""Reading, generating and screening whole populations of households (docs/population.md).

* :func:`read_facts` yields ``(household id, facts dict)`` from a JSON Lines, Parquet or CSV file;
* :func:`read_batches` streams the same file as polars frames in the layout ``decide_batch``
  takes, ``chunk_size`` households at a time, skipping (and reporting) malformed rows;
* :func:`synth_households` / :func:`write_synth` make a seeded synthetic population;
* :func:`replay` re-decides one row of a file with the scalar ``Engine.decide``;
* :func:`screen` runs ``decide_batch`` over a file chunk by chunk and writes the results;
  :func:`roster_check` compares the results with a list of current recipients.

Row numbers are 1-based: for JSON Lines the line number, for Parquet the row, for CSV the data
row (the header is row 0).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import io
import json
import operator
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import polars as pl
from pydantic import AfterValidator, BaseModel

from . import facts as facts_models
from .diagnostics import Diagnostic, FactsError, PolicyEngineError, PolicyError, make
from .intake import NOT_UTF8, not_utf8_text, too_many_digits
from .intake import read_facts as _intake
from .intake import utf8 as _utf8

__all__ = [
    "PROVINCES",
    "RowError",
    "format_of",
    "read_batches",
    "read_facts",
    "read_roster",
    "replay",
    "roster_check",
    "screen",
    "synth_households",
    "write_synth",
]

ID_COLUMN, ROW_COLUMN = "household_id", "row"
_HOUSEHOLD_KEYS = frozenset(facts_models.Household.model_fields)
_MEMBER_KEYS = frozenset(facts_models.Member.model_fields)


def format_of(path: str | os.PathLike[str]) -> str:
    """``jsonl``, ``parquet`` or ``csv`` by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"{os.fspath(path)}: unknown format {suffix!r} (use .jsonl, .parquet or .csv)")


@dataclass(frozen=True)
class RowError:
    """A malformed row: its 1-based row number, the column (fact path) and the message."""

    row: int
    column: str
    message: str
    household_id: str | None = None

    def __str__(self) -> str:
        return f"{self.row}:{self.column}: {self.message}" if self.column else f"{self.row}: {self.message}"


# ------------------------------------------------------------------------------------------------
# Schema of the facts layout, derived from the facts models
# ------------------------------------------------------------------------------------------------


def _kind(annotation: Any) -> Any:
    """money | signed | int | bool | date | str | ('list', kind) | model class."""
    annotation = facts_models._strip_optional(annotation)
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        if base is Decimal:
            return "money" if any(isinstance(m, AfterValidator) for m in meta) else "signed"
        if base is dt.date:
            return "date"
        return _kind(base)
    if get_origin(annotation) is list:
        return ("list", _kind(get_args(annotation)[0]))
    if get_origin(annotation) is Literal or annotation is str:
        return "str"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return "str"


def _polars_type(kind: Any, typed: bool = False) -> pl.DataType:
    if isinstance(kind, tuple):
        return pl.List(_polars_type(kind[1], typed))
    if isinstance(kind, type):
        model: type[BaseModel] = kind
        return pl.Struct({name: _polars_type(_kind(f.annotation), typed) for name, f in model.model_fields.items()})
    if typed and kind in ("money", "signed"):
        return pl.Decimal(38, SYNTH_SCALE)
    if typed and kind == "date":
        return pl.Date()
    return {"int": pl.Int64(), "bool": pl.Boolean()}.get(kind, pl.String())


#: decimal places of the amounts ``synth`` writes (fen)
SYNTH_SCALE = 2
#: polars schema of the facts layout as text (money as exact decimal text, dates as ISO text):
#: how JSON facts are read
FACTS_SCHEMA: dict[str, pl.DataType] = {
    name: _polars_type(_kind(f.annotation)) for name, f in facts_models.Household.model_fields.items()}
#: the same with typed columns (money as exact Decimal(38, 2), dates as Date): what ``synth``
#: writes to Parquet; both are read by ``screen``
FACTS_SCHEMA_TYPED: dict[str, pl.DataType] = {
    name: _polars_type(_kind(f.annotation), typed=True) for name, f in facts_models.Household.model_fields.items()}


def _flat_kinds(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        kind = _kind(f.annotation)
        if isinstance(kind, type):
            out.update(_flat_kinds(kind, f"{prefix}{name}."))
        elif not (isinstance(kind, tuple) and isinstance(kind[1], type)):
            out[f"{prefix}{name}"] = kind
    return out


_CSV_HOUSEHOLD = _flat_kinds(facts_models.Household)
_CSV_MEMBER = _flat_kinds(facts_models.Member)
_TRUE, _FALSE = {"true", "1", "yes", "t", "y"}, {"false", "0", "no", "f", "n"}


def _csv_cell(text: str, kind: Any) -> Any:
    """A CSV cell by the fact's type; a cell that does not parse is passed on as text, so the
    intake reports it with its column."""
    if isinstance(kind, tuple):
        return [part.strip() for part in text.split(";") if part.strip()]
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "bool":
        low = text.strip().lower()
        return True if low in _TRUE else False if low in _FALSE else text
    return text


def _set(target: dict[str, Any], path: str, value: Any) -> str | None:
    """Put ``value`` at the dotted ``path`` of ``target``; or, when a cell already read makes a
    part of the path a value where it must be a group of facts (or the other way round), that
    part's path, and nothing is put."""
    *parents, last = path.split(".")
    for depth, part in enumerate(parents, 1):
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            return ".".join(parents[:depth])
    if isinstance(target.get(last), dict):
        return path
    target[last] = value
    return None


def _csv_facts(row: dict[str, str], kinds: dict[str, Any]) -> dict[str, Any] | tuple[str, str]:
    """A CSV row's cells (by fact path) as facts; or (column, message) when two of its cells
    make a fact both a value and a group of facts (``assets`` and ``assets.deposits``)."""
    out: dict[str, Any] = {}
    for column, text in row.items():
        if column is None or text is None or text == "" or column == "_household_id":
            continue
        clash = _set(out, column, _csv_cell(text, kinds.get(column, "str")))
        if clash is not None:
            return clash, f"one cell gives {clash} a value and another gives facts under it: it cannot be both"
    return out


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

_Raw = tuple[int, str | None, Any]  # row number, id (None: use the row number), facts or an error


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice raises (``json`` would keep the last silently)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return data


#: the longest JSON Lines line read (characters): one household, however many members, is far
#: shorter, and reading stays within bounded memory whatever the file holds
JSONL_LINE_LIMIT = 1 << 24


def _jsonl_rows(path: Path) -> Iterator[_Raw]:
    # bytes that are not UTF-8 are kept as surrogate escapes, so that one such line is reported
    # (it cannot be encoded back) and the lines after it are still read
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        number = 0
        while line := handle.readline(JSONL_LINE_LIMIT + 1):  # a line is held whole only up to the limit
            number += 1
            if len(line) > JSONL_LINE_LIMIT and not line.endswith("\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith("\n"):
                    pass  # the rest of the line, read past without holding it
                yield number, None, RowError(number, "", f"a line longer than {JSONL_LINE_LIMIT:,} characters "
                                                         "(is it one household?): not read")
                continue
            if not line.strip():
                continue
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as exc:
                yield number, None, RowError(number, "", f"not UTF-8 text (column {exc.start + 1})")
                continue
            try:
                data = json.loads(line, parse_float=Decimal, object_pairs_hook=_unique_keys)
            except _DuplicateKey as exc:
                yield number, None, RowError(number, "", f"not JSON facts: the key {exc.key!r} appears twice in one "
                                                         "object (which value is meant cannot be known)")
                continue
            except json.JSONDecodeError as exc:
                yield number, None, RowError(number, "", f"not JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:  # arrays or objects nested hundreds deep: no facts are
                yield number, None, RowError(number, "", "not JSON facts: nested too deeply")
                continue
            except ValueError:  # int() refuses a literal beyond sys.get_int_max_str_digits()
                yield number, None, RowError(number, "", "not JSON facts: a whole number with more than "
                                                         f"{sys.get_int_max_str_digits():,} digits")
                continue
            if not isinstance(data, dict):
                yield number, None, RowError(number, "", f"expected an object, not {type(data).__name__}")
                continue
            hid = data.get("household_id")
            yield number, str(hid) if hid is not None else None, data


def _is_facts_parquet(path: Path) -> bool:
    """A Parquet file in the facts layout (read column by column, and replayed by slicing)."""
    return format_of(path) == "parquet" and path.is_file() and _is_facts_layout(pl.Schema(pl.read_parquet_schema(path)))


def _member_fields(schema: pl.Schema) -> dict[str, pl.DataType]:
    """The fields of the member structs of a ``members`` list column (none when it is not one)."""
    members = schema.get("members")
    if isinstance(members, (pl.List, pl.Array)) and isinstance(members.inner, pl.Struct):
        return {f.name: f.dtype for f in members.inner.fields}  # type: ignore[misc]
    return {}


def _is_facts_layout(schema: pl.Schema) -> bool:
    """Whether a Parquet schema is the facts layout (else the input layout, columns by input name).
    Every column a ``Household`` field (members' fields ``Member`` fields); or, whatever other
    columns there are (ignored, as a JSON key the intake does not read), a group of facts: a
    struct column named as a ``Household`` field, or a member struct field named as a ``Member``
    one (``assets``, ``members[].income``), which the input layout never has."""
    fields = _member_fields(schema)
    if set(schema.names()) <= _HOUSEHOLD_KEYS and set(fields) <= _MEMBER_KEYS:
        return True
    return (any(isinstance(dtype, pl.Struct) and name in _HOUSEHOLD_KEYS for name, dtype in schema.items())
            or any(isinstance(dtype, pl.Struct) and name in _MEMBER_KEYS for name, dtype in fields.items()))


def _input_layout_check(path: Path, schema: pl.Schema, engine: Any) -> None:
    """A Parquet file read as the input layout names only the policy's inputs (and
    ``household_id``, ``row``, ``members``, as ``read_batches`` gives them): any other column
    would be dropped without a word, and is most likely a file in neither layout, so it is
    refused, naming them."""
    inputs = {n.name for n in engine.policy.inputs if n.entity == "household"} | {ID_COLUMN, ROW_COLUMN, "members"}
    fields = _member_fields(schema)
    member_inputs = {n.name for n in engine.policy.inputs if n.entity == "member"}
    unknown = [n for n in schema.names() if n not in inputs] + [f"members[].{f}" for f in fields if f not in member_inputs]
    if unknown:
        many = len(unknown) > 1
        raise ValueError(f"{path}: column{'s' if many else ''} {', '.join(unknown)} {'are' if many else 'is'} "
                         "neither a field of the facts layout nor an input of the policy (docs/population.md); "
                         "a file in the facts layout names groups as structs (assets.deposits, members[].income)")


def _parquet_rows(path: Path, engine: Any, clean: bool = True, chunk_size: int = 50_000) -> Iterator[_Raw]:
    schema = pl.read_parquet_schema(path)
    facts_layout = _is_facts_layout(pl.Schema(schema))
    if not facts_layout and engine is None:
        raise ValueError(f"{path}: a Parquet file in the population layout (input-name columns) needs "
                         "the policy to be read as facts")
    if not facts_layout:
        from .vector import _to_facts
        _input_layout_check(path, pl.Schema(schema), engine)
    number = 0
    for frame in pl.scan_parquet(path).collect_batches(chunk_size=chunk_size):
        for row in frame.iter_rows(named=True):
            number += 1
            hid = row.get("household_id")
            if facts_layout:  # the intake reads a null like an absent key: cleaning is for read_facts
                facts = _drop_nulls(row) if clean else row
            else:
                # members that are not a list of mappings are given as they are: the intake
                # refuses them as it refuses them in any file (not an empty household or member)
                listed = row.get("members")
                odd = listed is not None and (not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed))
                facts = _to_facts(engine.policy, {**row, "members": None} if odd else row, "household")
                if odd:
                    facts["members"] = listed
            if not facts_layout and hid is not None:
                facts["household_id"] = hid
            yield number, str(hid) if hid is not None else None, facts


def members_path(path: Path) -> Path:
    """The optional members table of a CSV household table: ``NAME.members.csv`` beside ``NAME.csv``."""
    return path.with_name(path.stem + ".members.csv")


def _not_utf8(row: dict[str, Any]) -> str | None:
    """The first column of a CSV row (read with surrogate escapes) whose cell is not UTF-8 text."""
    for column, text in row.items():
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return str(column)
    return None


#: a members-table row as member facts, or (column, message) when it cannot be read
_Member = dict[str, Any] | tuple[str, str]


def _csv_members(rows: Iterable[dict[str, Any]]) -> dict[str, list[_Member]]:
    """Members-table rows (cells as text) grouped by household id, in file order, as member facts;
    a member with a cell that is not UTF-8, or with cells that clash (``_csv_facts``), is that
    cell's (column, message) instead (its household is refused)."""
    members: dict[str, list[_Member]] = {}
    for row in rows:
        hid = row.get("household_id")
        if hid:
            bad = _not_utf8(row)
            members.setdefault(hid, []).append(
                (bad, "not UTF-8 text") if bad is not None
                else _csv_facts({k: v for k, v in row.items() if k != "household_id"}, _CSV_MEMBER))
    return members


def _csv_household(number: int, row: dict[str, Any], members: dict[str, list[_Member]] | None,
                   first_of: dict[str, int] | None = None) -> _Raw:
    """One household-table row (cells as text) as facts, with its members when there is a members
    table; or the error of its first cell that is not UTF-8 or that clashes (``_csv_facts``), or
    of its first member that cannot be read. ``first_of``: for a household id with members on
    more than one row, the first of those rows (found by a first pass over the ids), the only one
    given them: the others are refused (whose members they are cannot be known)."""
    hid = row.get("household_id") or None
    if first_of and hid in first_of and first_of[hid] != number:
        return number, hid, RowError(number, ID_COLUMN, f"{hid} is also the household id of row {first_of[hid]}, "
                                     "which was given its members: whose members they are cannot be known", hid)
    bad = _not_utf8(row)
    if bad is not None:
        return number, None, RowError(number, bad, "not UTF-8 text", hid if bad != "household_id" else None)
    facts = _csv_facts(row, _CSV_HOUSEHOLD)
    if isinstance(facts, tuple):
        return number, hid, RowError(number, facts[0], facts[1], hid)
    if members is not None:
        listed = members.get(hid, []) if hid else []
        for k, member in enumerate(listed):
            if isinstance(member, tuple):
                return number, hid, RowError(number, f"members[{k}].{member[0]}", member[1], hid)
        facts["members"] = listed
    return number, hid, facts


def _csv_records(handle: Any, require: str | None = None) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(record number from 1, the record's cells by header, or why it is not CSV) for each
    record. ``strict``: a quote left open at the end of the file, or text after a closing quote,
    is an error of that record (not the rest of the file read into one cell), and the records
    after it are read; so is a cell longer than ``csv.field_size_limit()``. A header that is not
    CSV, names a column twice, or lacks the ``require`` column is record 0's error, and nothing
    is read after it."""
    reader = csv.DictReader(handle, strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        yield 0, f"the header: {_csv_error(exc)}"
        return
    named = [name for name in header if name]
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:  # DictReader would keep the last of the cells silently
        yield 0, f"the header names {', '.join(twice)} twice: which cell to read cannot be known"
        return
    if require is not None and require not in header:
        yield 0, f"the header has no {require} column"
        return
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield number, _csv_error(exc)
            continue
        yield number, row


def _csv_error(exc: csv.Error) -> str:
    """The csv module's complaint in the user's terms."""
    text = str(exc)
    if text == "unexpected end of data":
        return "not CSV: a quote opened in this record is never closed (the rest of the file is in it)"
    if text.startswith("field larger than field limit"):
        return f"not CSV: a cell longer than {csv.field_size_limit():,} characters"
    if text.endswith("expected after '\"'"):
        return "not CSV: text after a closing quote (a quoted cell must be quoted whole)"
    return f"not CSV: {text}"


def _csv_rows(path: Path) -> Iterator[_Raw]:
    # bytes that are not UTF-8 are kept as surrogate escapes, so that the row holding them is
    # reported (a member's: its household) and the other rows are read
    members = None
    mpath = members_path(path)
    if mpath.exists():
        readable = []
        header = True
        with open(mpath, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            for number, record in _csv_records(handle, require="household_id"):
                if isinstance(record, str) and number == 0:  # the header: no member can be read
                    yield 0, None, RowError(0, "", f"{mpath.name}: {record}; no member is read, so every "
                                                   "household's members are unknown")
                    header = False
                elif isinstance(record, str):  # whose member it was cannot be known: the file's error (row 0)
                    yield 0, None, RowError(0, "", f"{mpath.name} record {number}: {record}; that member is not read")
                else:
                    readable.append(record)
        members = _csv_members(readable) if header else None
        if members is not None and "household_id" not in _csv_header(path):
            yield 0, None, RowError(0, "", _NO_JOIN.format(table=path.name, members=mpath.name))
            members = None
    first_of: dict[str, int] = {}  # household id given members on several rows -> the first
    taken: dict[str, int] = {}  # household id given members -> its first row
    if members:  # which rows take which members: a first pass over the ids only
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            for number, row in _csv_records(handle):
                hid = None if isinstance(row, str) else row.get("household_id") or None
                if hid is not None and hid in members:
                    if hid in taken:
                        first_of.setdefault(hid, taken[hid])
                    else:
                        taken[hid] = number
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        for number, row in _csv_records(handle):
            if isinstance(row, str):  # (number 0: the header, and nothing after it can be read)
                yield number, None, RowError(number, "", row)
            else:
                yield _csv_household(number, row, members, first_of)
    if members:
        yield from ((0, None, e) for e in _unjoined([hid for hid in members if hid not in taken], mpath, path))


#: a household table without ids beside a members table
_NO_JOIN = ("{table}: the header has no household_id column, so no household can be given its members from "
            "{members}; every household's members are unknown")


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header (none when it has no readable header)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        try:
            return next(csv.reader(handle), None) or []
        except csv.Error:
            return []


def _unjoined(left: list[str], mpath: Path, path: Path) -> list[RowError]:
    """The members-table household ids no household row took (``left``): their members are not
    read, and said so (row 0), not dropped without a word (an id typed differently in the two
    tables)."""
    if not left:
        return []
    shown = ", ".join(repr(h) for h in left[:5]) + (f" and {len(left) - 5:,} more" if len(left) > 5 else "")
    return [RowError(0, "", f"{mpath.name}: members filed under {len(left):,} household id"
                            f"{'s' if len(left) > 1 else ''} that no row of {path.name} has ({shown}); "
                            "they are not read")]


# --- CSV, column by column ------------------------------------------------------------------------
#
# ``screen`` reads a CSV file with polars when that cannot change what is read: the cells are text
# either way, a column is converted as ``_csv_cell`` converts its cells (integers, flags and lists;
# the other facts stay text, which ``batch_intake.read_chunk`` checks as ``decide`` does), and a
# file or chunk where polars and Python's csv module could differ goes row by row instead.

_CSV_ASCII_INT = r"^-?[0-9]+$"  # what both polars and int() read, to the same value
_CSV_ASCII_WORD = r"^[A-Za-z0-9]+$"  # nothing for str.strip() to remove, lower() is ASCII


def _csv_plain_file(path: Path, kinds: dict[str, Any]) -> bool:
    """Whether polars reads ``path`` exactly as ``csv.DictReader`` does: every header a fact path
    of ``kinds`` (or ``household_id`` / ``_household_id``), no header twice, and no quote, blank
    line or lone carriage return anywhere (where the two parsers could split records apart)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            header = next(csv.reader(handle), None)
        except (csv.Error, UnicodeDecodeError):
            return False
    allowed = set(kinds) | {"household_id", "_household_id"}
    if not header or len(set(header)) != len(header) or not set(header) <= allowed:
        return False
    tail = partial = b""  # the last bytes read, and the line they end
    utf8 = codecs.getincrementaldecoder("utf-8")()  # bytes that are not UTF-8: row by row, which reports them
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 24)
            try:
                utf8.decode(block, final=not block)
            except UnicodeDecodeError:
                return False
            text = tail + block
            if not tail and text[:1] in (b"\n", b"\r"):
                return False
            if b'"' in block or b"\n\n" in text or b"\n\r\n" in text:
                return False
            line_ends = partial + block  # the line the last block ended in, then this block
            if _longer_line(line_ends, csv.field_size_limit()):  # a cell csv would refuse
                return False
            partial = line_ends[line_ends.rfind(b"\n") + 1:]
            # a carriage return must start a CRLF; one that ends a block is seen again with the next
            seen = text[:-1] if block and text.endswith(b"\r") else text
            if b"\r" in seen.replace(b"\r\n", b""):
                return False
            if not block:
                return True
            tail = text[-2:]


def _longer_line(data: bytes, limit: int) -> bool:
    """Whether ``data`` has a line (its last one maybe unfinished) longer than ``limit`` bytes.
    Such a line holds a whole aligned window of ``limit // 2`` bytes without a newline, so the
    lines are measured only when some window has none."""
    step = max(limit // 2, 1)
    if all(b"\n" in data[i:i + step] for i in range(0, len(data) - step + 1, step)):
        return False
    return max(map(len, data.split(b"\n"))) > limit


def _csv_column(text: pl.Series, kind: Any) -> tuple[pl.Series, pl.Series | None]:
    """A column of CSV cells as ``_csv_cell`` converts each, for ``read_chunk``; and the cells it
    cannot hold (None: none), which only the row-by-row reading keeps: text that is not a flag,
    where a flag is expected."""
    given = text.is_not_null()
    if kind == "int":  # kept as text that read_chunk reads exactly as the intake reads the cell
        odd = (given & text.str.contains(_CSV_ASCII_INT).not_()).fill_null(False)
        if odd.any():
            index = odd.arg_true()
            cells = [_csv_cell(t, kind) for t in text.gather(index)]
            text = text.scatter(index, pl.Series([str(c) for c in cells], dtype=pl.String))
        return text, None
    if kind == "bool":
        low = text.str.to_lowercase()
        values = (pl.select(pl.when(low.is_in(sorted(_TRUE))).then(True).when(low.is_in(sorted(_FALSE)))
                            .then(False)).to_series().alias(text.name))
        odd = (given & (text.str.contains(_CSV_ASCII_WORD).not_() | values.is_null())).fill_null(False)
        if odd.any():  # " yes ", "Yes\u3000" ...: as _csv_cell reads them, or left to the row-by-row reading
            index = odd.arg_true()
            cells = [_csv_cell(t, kind) for t in text.gather(index)]
            read = [c if isinstance(c, bool) else None for c in cells]
            values = values.scatter(index, pl.Series(read, dtype=pl.Boolean))
            unread = [i for i, c in zip(index.to_list(), read) if c is None]
            if unread:
                return values, pl.repeat(False, len(text), dtype=pl.Boolean, eager=True).scatter(unread, True)
        return values, None
    if isinstance(kind, tuple):  # a list: split and stripped by Python itself
        return pl.Series(text.name, [None if t is None else _csv_cell(t, kind) for t in text],
                         dtype=pl.List(pl.String)), None
    return text, None


def _csv_structs(frame: pl.DataFrame, kinds: dict[str, Any], wanted: set[str]
                 ) -> tuple[pl.DataFrame, pl.Series | None]:
    """The facts layout of a frame of CSV cells (columns named by fact paths; only the ``wanted``
    paths, the policy's inputs: the intake reads no other), converted and nested as structs by
    path; and the rows with a cell only the row-by-row reading keeps (None: none)."""
    tree: dict[str, Any] = {}
    odd: pl.Series | None = None
    for name in frame.columns:
        if name not in wanted:
            continue
        column, unread = _csv_column(frame[name], kinds[name])
        if unread is not None:
            odd = unread if odd is None else odd | unread
        *parents, last = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = column.alias(last)

    def build(name: str, node: Any) -> pl.Series:
        if isinstance(node, pl.Series):
            return node
        return pl.DataFrame([build(k, v) for k, v in node.items()]).to_struct(name)

    columns = [build(k, v).alias(k) for k, v in tree.items()]
    if "household_id" in frame.columns:
        columns.insert(0, frame["household_id"])
    if not columns:  # nothing the policy reads: the rows still count (as members, or households)
        columns = [pl.repeat(True, frame.height, dtype=pl.Boolean, eager=True).alias("_member")]
    return pl.DataFrame(columns), odd


def _csv_chunks(path: Path, engine: Any, chunk_size: int, errors: list[RowError]
                ) -> Iterator[tuple[Any, pl.Series, pl.Series]] | None:
    """``_chunks`` for a CSV household table (and its members table), column by column; None when
    the files must be read row by row. A chunk with a cell only the row-by-row reading keeps
    (``"maybe"`` where a flag is expected) is read row by row."""
    mpath = members_path(path)
    if not _csv_plain_file(path, _CSV_HOUSEHOLD):
        return None
    inputs = engine.policy.inputs
    wanted = {".".join(n.path) for n in inputs if n.entity == "household"}
    members: pl.DataFrame | None = None  # household id -> its members as a list of structs
    raw_members: pl.DataFrame | None = None
    odd_households: pl.Series | None = None  # ids of households with a member read row by row
    if mpath.exists():
        if not _csv_plain_file(mpath, _CSV_MEMBER):
            return None
        raw_members = pl.read_csv(mpath, infer_schema=False, truncate_ragged_lines=True)  # as DictReader
        if "household_id" not in raw_members.columns or "household_id" not in _csv_header(path):
            return None  # no member can be given to a household: the row-by-row reading says so
        raw_members = raw_members.filter(pl.col("household_id").is_not_null())
        table, odd = _csv_structs(raw_members.drop("household_id"), _CSV_MEMBER,
                                  {".".join(n.path) for n in inputs if n.entity == "member"})
        if odd is not None:
            odd_households = raw_members["household_id"].filter(odd).unique()
        members = (pl.DataFrame([raw_members["household_id"], table.to_struct("members")])
                   .group_by("household_id", maintain_order=True).agg("members"))
    return _csv_chunks_of(path, engine, chunk_size, errors, wanted, members, raw_members, odd_households)


def _csv_chunks_of(path: Path, engine: Any, chunk_size: int, errors: list[RowError], wanted: set[str],
                   members: pl.DataFrame | None, raw_members: pl.DataFrame | None,
                   odd_households: pl.Series | None) -> Iterator[tuple[Any, pl.Series, pl.Series]]:
    from .batch_intake import read_chunk

    by_household: dict[str, list[_Member]] | None = None  # for chunks read row by row
    first_of: dict[str, int] = {}  # household id given members on several rows -> the first (as _csv_rows)
    left: list[str] = []  # members-table ids no row has
    cells_of = pl.scan_csv(path, infer_schema=False, truncate_ragged_lines=True)
    if members is not None and members.height:  # one pass over the ids: which rows take which members
        listed = members["household_id"]
        taking = (cells_of.select(ID_COLUMN).with_row_index("_row", offset=1)
                  .filter(pl.col(ID_COLUMN).is_in(listed.implode())).collect())
        repeated = taking.filter(pl.col(ID_COLUMN).is_duplicated())
        first_of = dict(repeated.group_by(ID_COLUMN, maintain_order=True).agg(pl.col("_row").min()).iter_rows())
        left = listed.filter(listed.is_in(taking[ID_COLUMN].implode()).not_()).to_list()
    again = pl.Series(list(first_of), dtype=pl.String).implode()
    first = 1
    # cells beyond the header are ignored, as csv.DictReader files them under None
    for cells in cells_of.collect_batches(chunk_size=chunk_size):
        frame, odd = _csv_structs(cells, _CSV_HOUSEHOLD, wanted)
        if odd_households is not None and "household_id" in cells.columns:
            odd = cells["household_id"].is_in(odd_households.implode()) | (odd if odd is not None else False)
        if first_of and "household_id" in cells.columns:
            # a row with a repeated id other than its first: this chunk row by row, which refuses it
            hits = cells["household_id"].is_in(again)
            for k, hid in zip(hits.arg_true().to_list(), cells["household_id"].filter(hits).to_list()):
                if first_of[hid] != first + k:
                    odd = hits if odd is None else odd | hits
                    break
        if odd is not None and odd.any():  # this chunk row by row, as _csv_rows reads it
            if raw_members is not None and by_household is None:
                by_household = _csv_members(raw_members.iter_rows(named=True))
            raw = [_csv_household(number, row, by_household, first_of)
                   for number, row in enumerate(cells.iter_rows(named=True), first)]
            yield from _read_rows(iter(raw), engine, max(len(raw), 1), errors)
            first += cells.height
            continue
        if members is not None:
            dtype = members.schema["members"]
            if "household_id" in frame.columns:
                frame = frame.join(members, on="household_id", how="left", maintain_order="left")
                frame = frame.with_columns(pl.col("members").fill_null(pl.lit([], dtype=dtype)))
            else:
                frame = frame.with_columns(pl.lit([], dtype=dtype).alias("members"))
        chunk = read_chunk(engine.policy, frame, first, ID_COLUMN)
        _report(chunk, frame, first, errors)
        first += cells.height
        if chunk.population.height:  # as the row-by-row reading, which has nothing to give then
            yield chunk.population, chunk.ids, chunk.rows
    errors.extend(_unjoined(left, members_path(path), path))


def _report(chunk: Any, frame: pl.DataFrame, first: int, errors: list[RowError]) -> None:
    """A columnar chunk's bad fields as row errors, in the order the row-by-row reading gives
    them (by row, then fact path)."""
    for b in sorted(chunk.bad, key=lambda b: (b.position, b.column)):
        hid = frame[ID_COLUMN][b.position] if ID_COLUMN in frame.columns else None
        errors.append(RowError(first + b.position, b.column, b.message, str(hid) if hid is not None else None))


def _raw_rows(path: str | os.PathLike[str], engine: Any = None, clean: bool = True) -> Iterator[_Raw]:
    p = Path(path)
    kind = format_of(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if kind == "jsonl":
        return _jsonl_rows(p)
    if kind == "parquet":
        return _parquet_rows(p, engine, clean)
    return _csv_rows(p)


def read_facts(path: str | os.PathLike[str], engine: Any = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(household id, facts dict)`` for every household of a JSON Lines, Parquet or CSV file.

    The id is the row's ``household_id``, else its row number. A line that is not a JSON object
    raises ``FactsError`` (naming the row); facts are not checked here (``read_batches`` and
    ``Engine.decide`` check them). ``engine`` is needed only for Parquet in the population layout.
    """
    for number, hid, facts in _raw_rows(path, engine):
        if isinstance(facts, RowError):
            raise FactsError([make("PE401", str(facts), path=f"[{number}]")])
        yield (hid if hid is not None else str(number)), facts


def _errors_of(number: int, hid: str | None, exc: PolicyEngineError) -> list[RowError]:
    out = []
    for d in exc.diagnostics:
        column = d.path or ""
        message = d.message
        if column and message.startswith(column + ": "):
            message = message[len(column) + 2:]
        if isinstance(exc, PolicyError):  # not the row's facts: the policy cannot decide this case
            message = f"the policy cannot decide this household ({d.code}): {d.message}"
            column = ""  # the diagnostic's path is in the policy, not a column of the file
        out.append(RowError(number, column, message, hid))
    return out


def read_batches(path: str | os.PathLike[str], engine: Any, chunk_size: int = 100_000,
                 errors: list[RowError] | None = None) -> Iterator[pl.DataFrame]:
    """Stream a population file as frames of at most ``chunk_size`` households in the layout of
    docs/population.md, plus ``household_id`` (text) and ``row`` (1-based row number) columns.

    Every row is checked with the scalar intake (as ``Engine.decide`` checks facts); a malformed
    row (wrong type, unknown enum value, negative money, a line that is not JSON or not UTF-8) is left out and
    each of its bad fields is appended to ``errors`` as a :class:`RowError`.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    sink = errors if errors is not None else []
    for population, ids, rows in _read_rows(_raw_rows(path, engine, clean=False), engine, chunk_size, sink):
        yield population.with_columns(ids.alias(ID_COLUMN), rows.alias(ROW_COLUMN))


def _read_rows(raw: Iterator[_Raw], engine: Any, chunk_size: int, sink: list[RowError]
               ) -> Iterator[tuple[pl.DataFrame, pl.Series, pl.Series]]:
    """Raw rows through the scalar intake, as (population, ids, row numbers) of at most
    ``chunk_size`` households; a malformed row is left out and its bad fields go to ``sink``."""
    from .vector import read_to_population

    inputs = engine.policy.inputs
    ids: list[str] = []
    rows: list[int] = []
    read: list[tuple[dict[str, Any], list[dict[str, Any]] | None]] = []

    def flush() -> tuple[pl.DataFrame, pl.Series, pl.Series]:
        made = (read_to_population(engine.policy, read), pl.Series(ID_COLUMN, ids, dtype=pl.String),
                pl.Series(ROW_COLUMN, rows, dtype=pl.Int64))
        ids.clear()
        rows.clear()
        read.clear()
        return made

    for number, hid, facts in raw:
        if isinstance(facts, RowError):
            sink.append(facts)
            continue
        try:
            case = _intake(inputs, facts, "household")
        except FactsError as exc:
            sink.extend(_errors_of(number, hid, exc))
            continue
        too_long = too_many_digits(inputs, *case)  # decide may not compute them; a population cannot hold them
        if too_long:
            sink.extend(_errors_of(number, hid, FactsError(too_long)))
            continue
        # text with a lone surrogate (JSON's "\ud800"): neither a population nor the output holds it
        if hid is not None and not _utf8(hid):
            sink.append(RowError(number, ID_COLUMN, NOT_UTF8))
            continue
        odd_text = not_utf8_text(inputs, *case)
        if odd_text:
            sink.extend(_errors_of(number, hid, FactsError(odd_text)))
            continue
        read.append(case)
        ids.append(hid if hid is not None else str(number))
        rows.append(number)
        if len(read) >= chunk_size:
            yield flush()
    if read:
        yield flush()


def _chunks(path: str | os.PathLike[str], engine: Any, chunk_size: int, errors: list[RowError]
            ) -> Iterator[tuple[Any, pl.Series, pl.Series]]:
    """(population, ids, row numbers) chunk by chunk, for ``screen``.

    Parquet in the facts layout is read column by column (``batch_intake``: polars converts and
    checks whole columns, ``coerce`` sees only the odd values); other files row by row
    (``read_batches``). Both accept and refuse exactly what ``Engine.decide`` does.
    """
    from .batch_intake import read_chunk

    p = Path(path)
    if _is_facts_parquet(p):
        first = 1
        for frame in pl.scan_parquet(p).collect_batches(chunk_size=chunk_size):
            chunk = read_chunk(engine.policy, frame, first, ID_COLUMN)
            _report(chunk, frame, first, errors)
            first += frame.height
            if chunk.population.height:
                yield chunk.population, chunk.ids, chunk.rows
        return
    if format_of(p) == "csv" and p.is_file():
        columnar = _csv_chunks(p, engine, chunk_size, errors)
        if columnar is not None:
            yield from columnar
            return
    yield from _read_rows(_raw_rows(path, engine, clean=False), engine, chunk_size, errors)


def _prefetched(chunks: Iterator[Any]) -> Generator[Any, None, None]:
    """The items of ``chunks``, the next one read in a background thread while the caller works
    on the current one (polars releases the GIL while it reads and converts: on two cores,
    reading chunk k + 1 overlaps deciding chunk k). At most one chunk is read ahead; an error
    in the reader is raised here, where the item would have been. Closing this generator (the
    caller stopped, or failed) stops the reader, which then closes ``chunks``."""
    import queue
    import threading

    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        """Hand ``message`` over, unless the consumer has stopped (then it is dropped)."""
        while not stop.is_set():
            try:
                box.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in chunks:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(("error", exc))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # its files, in this thread, which is the one running it

    thread = threading.Thread(target=read, name="policy-engine-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def count_rows(path: str | os.PathLike[str]) -> int | None:
    """Households in the file (cheap: Parquet metadata, or counting lines); None if unknown."""
    p = Path(path)
    kind = format_of(p)
    if kind == "parquet":
        return int(pl.scan_parquet(p).select(pl.len()).collect().item())
    count = 0
    with open(p, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return max(count - 1, 0) if kind == "csv" else count


def replay(engine: Any, path: str | os.PathLike[str], row_number: int, as_of: dt.date | str,
           decisions: list[str] | None = None) -> Any:
    """The scalar ``Engine.decide`` Decision of row ``row_number`` (1-based) of a population file:
    re-decides one screened row to explain it (``decision.explain()``)."""
    if isinstance(row_number, bool):
        raise TypeError(f"a row number is a whole number from 1, not {row_number!r}")
    try:
        row_number = operator.index(row_number)  # int, numpy integers; not floats or text
    except TypeError:
        raise TypeError(f"a row number is a whole number from 1, not {row_number!r}") from None
    p = Path(path)
    if _is_facts_parquet(p):
        if row_number < 1:
            raise IndexError(f"{os.fspath(path)} has no row {row_number}")
        picked = pl.scan_parquet(p).slice(row_number - 1, 1).collect()  # reads one row group, not the file
        if picked.height == 0:
            raise IndexError(f"{os.fspath(path)} has no row {row_number}")
        return engine.decide(_drop_nulls(picked.row(0, named=True)), as_of, decisions=decisions)
    for number, _hid, facts in _raw_rows(path, engine):
        if number == row_number:
            if isinstance(facts, RowError):
                raise FactsError([make("PE401", str(facts), path=f"[{number}]")])
            return engine.decide(facts, as_of, decisions=decisions)
        if number > row_number:
            break
    raise IndexError(f"{os.fspath(path)} has no row {row_number}")


# ------------------------------------------------------------------------------------------------
# Synthetic households
# ------------------------------------------------------------------------------------------------

REFERENCE_DATE = dt.date(2023, 7, 1)

#: province -> (GB/T 2260 county codes used, rural share, monthly wage scale in yuan)
PROVINCES: dict[str, tuple[tuple[str, ...], float, float]] = {
    "anhui": (("340321", "340302", "341621"), 0.62, 1.0),
    "hebei": (("130821", "130802", "130826"), 0.60, 1.0),
    "hunan": (("430603", "430621", "430681"), 0.55, 1.05),
    "shaanxi": (("610702", "610721", "610723"), 0.58, 0.95),
    "national": (("110101", "320102", "440104", "510104", "620102"), 0.5, 1.1),
}
_KINDS = ["physical", "visual", "hearing", "speech", "intellectual", "psychiatric", "multiple"]


def _money(x: float) -> str:
    return f"{max(x, 0.0):.2f}"


def _birth(rng: random.Random, age: int) -> str:
    return (REFERENCE_DATE - dt.timedelta(days=int(365.25 * age) + rng.randint(0, 364))).isoformat()


def _member(rng: random.Random, index: int, relation: str, age: int, wage_scale: float) -> dict[str, Any]:
    frail = 0.03 + (0.12 if age >= 65 else 0.0)
    m: dict[str, Any] = {"member_id": f"m{index}", "relation": relation, "birth_date": _birth(rng, age),
                         "hukou_local": rng.random() < 0.93, "lives_in_institution": False}
    if not m["hukou_local"]:
        m["residence_permit"] = rng.random() < 0.5
    grade = 0
    if rng.random() < frail:
        grade = rng.choice([1, 2, 2, 3, 3, 4])
        m["disability_kind"] = rng.choice(_KINDS)
    m["disability_grade"] = grade
    m["serious_illness"] = rng.random() < frail * 0.6
    m["received_major_illness_medical_aid"] = m["serious_illness"] and rng.random() < 0.4
    adl = 0
    if grade in (1, 2) or age >= 75 or m["serious_illness"]:
        adl = rng.randint(0, 6) if rng.random() < 0.6 else 0
    m["adl_failed"] = adl
    able = 18 <= age < 60 and grade not in (1, 2) and adl <= 3 and not m["serious_illness"]
    m["able_to_work"] = able
    m["has_able_supporter"] = rng.random() < (0.85 if age >= 60 else 0.97 if age >= 18 else 0.995)
    if age < 6:
        m["schooling"], m["employment"] = ("preschool" if age >= 3 else "none"), "student"
    elif age < 18:
        m["schooling"] = "primary" if age < 12 else ("junior_secondary" if age < 15 else "senior_secondary")
        m["employment"] = "student"
    elif age >= 60:
        m["employment"] = "retired"
    elif not able:
        m["employment"] = "unable_to_work"
    income: dict[str, str] = {k: "0" for k in (
        "wages", "business_gross", "business_costs", "productive_asset_depreciation", "property_net",
        "transfer_net", "other_counted", "income_tax_paid", "social_insurance_contributions")}
    if able:
        r = rng.random()
        if r < 0.72:  # wages: lognormal, heavy right tail
            wages = rng.lognormvariate(8.0, 0.7) * wage_scale
            income["wages"] = _money(wages)
            income["social_insurance_contributions"] = _money(wages * 0.03)
            if wages > 5000:
                income["income_tax_paid"] = _money((wages - 5000) * 0.03)
            m["employment"] = rng.choice(["employed", "employed", "flexible"])
        elif r < 0.93:
            gross = rng.lognormvariate(7.2, 0.9) * wage_scale
            income["business_gross"] = _money(gross)
            income["business_costs"] = _money(gross * rng.uniform(0.2, 0.5))
            m["employment"] = "farming"
        else:
            m["employment"] = "unemployed"
    if age >= 60 and rng.random() < 0.6:  # pensions and support from children, heavy tail
        income["transfer_net"] = _money(rng.lognormvariate(7.4, 0.7))
    elif rng.random() < 0.12:
        income["transfer_net"] = _money(rng.lognormvariate(5.0, 0.8))
    if rng.random() < 0.05:
        income["property_net"] = _money(rng.lognormvariate(4.5, 1.0))
    if age >= 60:
        income["basic_pension_central"] = "143"
        if age >= 80:
            income["old_age_allowance"] = "50"
    if grade:
        income["social_assistance_received"] = "90"
    m["income"] = income
    return m


def synth_household(rng: random.Random, index: int, province: str) -> dict[str, Any]:
    """One household: 1-6 members, ages, disability, illness, incomes (lognormal), assets."""
    codes, rural_share, wage_scale = PROVINCES[province]
    size = rng.choices([1, 2, 3, 4, 5, 6], weights=[18, 28, 24, 16, 9, 5])[0]
    head_age = rng.randint(60, 92) if size == 1 and rng.random() < 0.5 else rng.randint(25, 75)
    members = [_member(rng, 1, "head", head_age, wage_scale)]
    for i in range(2, size + 1):
        rel = rng.choice(["spouse", "child", "child", "parent", "grandchild"] if i > 2 else ["spouse", "child"])
        age = {"spouse": max(18, head_age + rng.randint(-6, 6)), "child": rng.randint(0, max(0, head_age - 18)),
               "parent": min(100, head_age + rng.randint(20, 32)), "grandchild": rng.randint(0, 14)}[rel]
        members.append(_member(rng, i, rel, age, wage_scale))
    wealth = rng.lognormvariate(0.0, 0.9)
    vehicles = 0 if rng.random() < 0.8 else rng.choice([1, 1, 2])
    assets: dict[str, Any] = {
        "cash": _money(rng.lognormvariate(6.0, 0.8)),
        "deposits": _money(rng.lognormvariate(9.0, 1.4) * wealth),
        "securities": "0" if rng.random() < 0.9 else _money(rng.lognormvariate(9.0, 1.2) * wealth),
        "vehicle_count": vehicles,
        "extra_real_estate_count": 0 if rng.random() < 0.94 else 1,
        "registered_business": rng.random() < 0.04,
    }
    if vehicles:
        assets["vehicle_value"] = _money(rng.lognormvariate(10.5, 0.7))
    receiving_dibao = rng.random() < 0.06
    benefits: dict[str, Any] = {"receiving_dibao": receiving_dibao, "receiving_marginal": rng.random() < 0.03,
                                "receiving_tekun": size <= 2 and rng.random() < 0.05}
    if receiving_dibao:
        benefits["dibao_since"] = _birth(rng, rng.randint(1, 6))
        benefits["dibao_coverage"] = "whole_household"
        benefits["dibao_monthly_amount"] = _money(rng.uniform(200, 1500))
        benefits["last_reviewed_on"] = (REFERENCE_DATE - dt.timedelta(days=rng.randint(20, 300))).isoformat()
        benefits["months_since_income_exceeded"] = rng.randint(0, 9)
        benefits["income_rose_from_employment"] = rng.random() < 0.6
    schooling = any("schooling" in m for m in members)
    f: dict[str, Any] = {
        "household_id": f"{province[:2].upper()}-{index:08d}",
        "jurisdiction_code": rng.choice(codes),
        "area_type": "rural" if rng.random() < rural_share else "urban",
        "members": members,
        "rigid_expenditure": {"medical": _money(rng.lognormvariate(4.5, 1.3)),
                              "education": _money(rng.lognormvariate(4.0, 0.7)) if schooling else "0"},
        "assets": assets,
        "monitoring_categories": [rng.choice(["unstable_ex_poor", "marginal_at_risk"])] if rng.random() < 0.08 else [],
        "current_benefits": benefits,
    }
    if province == "anhui":
        f["region"] = "north" if rng.random() < 0.6 else "south"
    if province == "shaanxi":
        f["assessment"] = {"dibao_tier": rng.choice(["A", "B", "C", "C", "D", "E"])}
    if rng.random() < 0.08:
        occurred = REFERENCE_DATE - dt.timedelta(days=rng.randint(5, 120))
        kind = rng.choice(["emergency", "expenditure"])
        h: dict[str, Any] = {
            "kind": kind, "occurred_on": occurred.isoformat(),
            "applied_on": (occurred + dt.timedelta(days=rng.randint(1, 30))).isoformat(),
            "occurred_in_jurisdiction": rng.random() < 0.9, "during_epidemic_or_disaster": rng.random() < 0.05,
            "applying_for_dibao_or_tekun": rng.random() < 0.4,
            "still_in_hardship_after_specialised_assistance": rng.random() < 0.6,
            "applications_this_year": rng.randint(1, 2),
            "amount_requested": _money(rng.choice([1000, 2000, 3000, 5000, 8000])),
            "income_12_months": _money(rng.lognormvariate(9.6, 0.7) * size ** 0.7),
        }
        if kind == "emergency":
            h["cause"] = rng.choice(["fire", "traffic_accident", "sudden_illness", "disaster", "other"])
        else:
            h["cause"] = rng.choice(["medical", "medical", "education", "other"])
            h["expenditure_12_months"] = _money(rng.lognormvariate(9.3, 0.8))
            h["medical_out_of_pocket_12_months"] = _money(rng.lognormvariate(9.0, 0.9))
            h["education_expenditure_12_months"] = _money(rng.lognormvariate(7.5, 0.8))
        f["hardship"] = h
    return f


def synth_households(n: int, province: str, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` households of ``province`` from ``random.Random(seed)``: the same seed gives the same
    households (no clock: ages are relative to REFERENCE_DATE, 2023-07-01)."""
    if province not in PROVINCES:
        raise ValueError(f"unknown province {province!r}: one of {', '.join(PROVINCES)}")
    rng = random.Random(seed)
    for i in range(n):
        yield synth_household(rng, i + 1, province)


def write_synth(out: str | os.PathLike[str], n: int, province: str, seed: int, chunk_size: int = 50_000) -> int:
    """Write ``n`` synthetic households to ``out`` (JSON Lines or Parquet in the facts layout)."""
    kind = format_of(out)
    households = synth_households(n, province, seed)
    if kind == "jsonl":
        with open(out, "w", encoding="utf-8", newline="\n") as handle:
            for f in households:
                handle.write(json.dumps(f, ensure_ascii=False, separators=(",", ":")))
                handle.write("\n")
        return n
    if kind != "parquet":
        raise ValueError(f"{os.fspath(out)}: synth writes .jsonl or .parquet")
    with tempfile.TemporaryDirectory(dir=Path(out).parent) as tmp:
        parts: list[str] = []
        lines: list[str] = []
        for f in households:
            lines.append(json.dumps(f, ensure_ascii=False, separators=(",", ":")))
            if len(lines) >= chunk_size:
                parts.append(_write_part(tmp, len(parts), lines))
                lines = []
        if lines or not parts:
            parts.append(_write_part(tmp, len(parts), lines))
        pl.concat([pl.scan_parquet(p) for p in parts]).sink_parquet(Path(out))
    return n


def _typed_expr(expr: pl.Expr, text: Any, typed: Any) -> pl.Expr:
    """``expr`` (of the text dtype) converted to the typed dtype, through structs and lists."""
    if text == typed:
        return expr
    if isinstance(typed, pl.Struct) and isinstance(text, pl.Struct):
        fields = {f.name: f.dtype for f in text.fields}
        return pl.when(expr.is_not_null()).then(pl.struct([
            _typed_expr(expr.struct.field(f.name), fields[f.name], f.dtype).alias(f.name) for f in typed.fields]))
    if isinstance(typed, pl.List) and isinstance(text, pl.List):
        return expr.list.eval(_typed_expr(pl.element(), text.inner, typed.inner))
    if typed == pl.Date:
        return expr.str.to_date("%Y-%m-%d")
    return expr.cast(typed)


def _write_part(tmp: str, index: int, lines: list[str]) -> str:
    """One chunk of facts (JSON lines) as Parquet in the facts layout, read by polars' JSON reader."""
    path = os.path.join(tmp, f"part-{index:05d}.parquet")
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    frame = pl.read_ndjson(io.BytesIO(data), schema=FACTS_SCHEMA) if lines else pl.DataFrame(
        schema=FACTS_SCHEMA)
    frame.select([_typed_expr(pl.col(name), FACTS_SCHEMA[name], FACTS_SCHEMA_TYPED[name]).alias(name)
                  for name in FACTS_SCHEMA]).write_parquet(path)
    return path


# ------------------------------------------------------------------------------------------------
# Screening
# ------------------------------------------------------------------------------------------------


@dataclass
class ScreenResult:
    households: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    fallback_rows: int = 0
    elapsed: float = 0.0
    eligible: dict[str, set[str]] = field(default_factory=dict)  # decision -> ids decided eligible
    decided: dict[str, set[str]] = field(default_factory=dict)  # decision -> ids decided (either way)
    ids: set[str] = field(default_factory=set)

    @property
    def per_second(self) -> float:
        return self.households / self.elapsed if self.elapsed else 0.0


def _jsonl_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Decimal columns as exact decimal text, dates as ISO text (for JSON Lines)."""
    return frame.with_columns([pl.col(name).cast(pl.String) for name, dtype in frame.schema.items()
                               if isinstance(dtype, (pl.Decimal, pl.Date))])


_ROSTER_DECISIONS = ("dibao", "tekun")


def _chunks_and_errors(path: str | os.PathLike[str], engine: Any, chunk_size: int
                       ) -> Iterator[tuple[tuple[Any, pl.Series, pl.Series] | None, list[RowError]]]:
    """`_chunks`, each chunk with the reader's errors found since the previous one; the errors
    found after the last chunk (e.g. members of no household) come last, with no chunk. The list
    is the reader's own, so the errors keep the file's order wherever the chunks are decided."""
    found: list[RowError] = []
    for chunk in _chunks(path, engine, chunk_size, found):
        errors, found[:] = list(found), []
        yield chunk, errors
    yield None, list(found)


def _decide_chunk(engine: Any, chunk: tuple[Any, pl.Series, pl.Series] | None, read_errors: list[RowError],
                  as_of: dt.date | str, decisions: list[str] | None) -> tuple[pl.DataFrame | None, list[RowError]]:
    """One chunk of ``screen``: its output table (id, row, outputs), and its errors: the reader's,
    then those of the rows ``decide`` refuses although their facts are well formed (those rows
    are left out of the table)."""
    from .vector import decide_batch

    if chunk is None:
        return None, read_errors
    population, ids, rows = chunk
    refused: list[tuple[int, PolicyEngineError]] = []  # well formed, but decide refuses them
    decided = decide_batch(engine, population, as_of, decisions=decisions, errors=refused)
    table = pl.concat([pl.DataFrame([ids.alias(ID_COLUMN), rows.alias(ROW_COLUMN)]), decided], how="horizontal")
    errors = list(read_errors)
    if refused:  # e.g. a computation beyond 34 digits: that row's error, the others go on
        for i, exc in sorted(refused, key=lambda r: r[0]):
            errors.extend(_errors_of(int(rows[i]), ids[i], exc))
        errors.sort(key=lambda e: e.row)  # in the file's order, with the reader's (stable: a row's own order kept)
        gone = pl.Series([i for i, _ in refused], dtype=pl.Int64)
        table = table.filter(pl.int_range(pl.len(), dtype=pl.Int64).is_in(gone.implode()).not_())
    return table, errors


def _decided_in_order(chunks: Iterator[Any], decide: Callable[..., Any], workers: int) -> Generator[Any, None, None]:
    """``decide(chunk)`` for each chunk, in the chunks' order. With ``workers`` > 1, that many
    chunks are decided at once in threads (polars computes without the GIL, mostly on one core per
    query, so chunks decided side by side use more cores); at most ``workers`` chunks are in
    flight, so memory stays bounded. An error is raised where its chunk's result would have been."""
    if workers <= 1:
        for chunk in chunks:
            yield decide(chunk)
        return
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: deque[Future[Any]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="policy-engine-decide") as pool:
        try:
            source = iter(chunks)
            while True:
                try:
                    chunk = next(source)
                except StopIteration:
                    break
                except Exception:
                    # the reader failed: the chunks read before it come first, as with one worker
                    # (their results, or the first of their errors, which is then raised instead)
                    while pending:
                        yield pending.popleft().result()
                    raise
                pending.append(pool.submit(decide, chunk))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def default_workers() -> int:
    """Chunks ``screen`` decides at once by default: one per core, at most 4 (each holds a chunk)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def screen(engine: Any, input_path: str | os.PathLike[str], out: str | os.PathLike[str],
           as_of: dt.date | str, decisions: list[str] | None = None, chunk_size: int = 100_000,
           progress: Callable[[int], None] | None = None, keep_ids: bool = False,
           workers: int | None = None) -> ScreenResult:
    """Decide every household of ``input_path`` with ``decide_batch`` and write ``out``.

    ``workers`` chunks are decided at once (default: `default_workers`); the output, its order,
    the errors and the counts are the same for any number of workers.
    """
    from .vector import decide_batch

    out_kind = format_of(out)
    if out_kind == "csv":
        raise ValueError("screen writes .parquet or .jsonl")
    if Path(out).resolve() == Path(input_path).resolve():
        raise ValueError(f"{os.fspath(input_path)}: the output file is the input file, which screen would "
                         "overwrite while reading it; write the results elsewhere")
    if workers is None:
        workers = default_workers()
    if workers < 1:
        raise ValueError(f"workers is {workers}: at least 1 chunk must be decided at a time")
    result = ScreenResult()
    start = time.perf_counter()

    def decide(item: tuple[Any, list[RowError]]) -> tuple[pl.DataFrame | None, list[RowError]]:
        return _decide_chunk(engine, item[0], item[1], as_of, decisions)

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=Path(out).parent)) \
            if out_kind == "parquet" else None
        handle = stack.enter_context(open(out, "w", encoding="utf-8", newline="\n")) \
            if out_kind == "jsonl" else None
        parts: list[str] = []
        # closed when screen ends, however it ends: the reader stops and closes the input file
        chunks = stack.enter_context(contextlib.closing(_prefetched(_chunks_and_errors(input_path, engine, chunk_size))))
        decided = stack.enter_context(contextlib.closing(_decided_in_order(chunks, decide, workers)))
        for table, errors in decided:
            result.errors.extend(errors)  # in the file's order, whatever the workers
            if table is None:
                continue
            result.households += table.height
            result.fallback_rows += int(table["_fallback"].sum())
            for column in table.columns:
                if column.endswith(".status"):
                    did = column[: -len(".status")]
                    result.counts.setdefault(did, Counter()).update(
                        dict(table[column].value_counts().iter_rows()))
                    if keep_ids and did in _ROSTER_DECISIONS and f"{did}.eligible" in table.columns:
                        ok = table.filter(pl.col(column) == "decided")
                        result.decided.setdefault(did, set()).update(ok[ID_COLUMN].to_list())
                        result.eligible.setdefault(did, set()).update(
                            ok.filter(pl.col(f"{did}.eligible").fill_null(False))[ID_COLUMN].to_list())
            if keep_ids:
                result.ids.update(table[ID_COLUMN].to_list())
            if handle is not None:
                handle.write(_jsonl_frame(table).write_ndjson())
            else:
                assert tmp is not None
                # temporary Arrow IPC parts, uncompressed: read back below without decoding, and
                # the Parquet file is encoded and compressed once
                parts.append(os.path.join(tmp, f"part-{len(parts):05d}.arrow"))
                table.write_ipc(parts[-1], compression="uncompressed")
            if progress is not None:
                progress(table.height)
        if tmp is not None:
            if parts:
                pl.concat([pl.scan_ipc(p) for p in parts], how="vertical_relaxed").sink_parquet(Path(out))
            else:  # no household decided: the columns a reader expects, with no rows
                empty = pl.DataFrame({ID_COLUMN: pl.Series([], dtype=pl.String), ROW_COLUMN: pl.Series([], dtype=pl.Int64)})
                pl.concat([empty, decide_batch(engine, [], as_of, decisions=decisions)], how="horizontal").write_parquet(
                    Path(out))
    result.elapsed = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------------------
# Roster of current recipients
# ------------------------------------------------------------------------------------------------

_BENEFITS = {"dibao": "dibao", "低保": "dibao", "tekun": "tekun", "特困": "tekun"}


class RosterError(ValueError):
    """A roster file that cannot be read as it stands (its line, and why)."""


def read_roster(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(household id, benefit)`` pairs: one id a line (blank lines and ``#`` comments, a line
    starting with ``#`` or text after whitespace and ``#``, are skipped), or CSV whose header is
    ``household_id`` and optionally ``benefit`` (``dibao``/``低保`` or ``tekun``/``特困`` in any
    case; empty: dibao). A roster decides what is reported as 应享未享 or 违规享受, so what cannot
    be read for sure (not UTF-8, not CSV, another column, a cell beyond the header, an unknown
    benefit) raises ``RosterError`` naming its row, rather than being skipped or guessed."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = exc.object[:exc.start].count(b"\n") + 1
        raise RosterError(f"line {where} is not UTF-8 text") from None
    lines = text.splitlines()
    header_line = bool(lines) and not lines[0].lstrip().startswith("#") and re.search(
        r"(^|[^\w])household_id([^\w]|$)", lines[0]) is not None
    if not header_line:  # a list of ids (a header names household_id, in any position)
        entries = []
        for line in lines:
            hid = re.split(r"\s#", line, maxsplit=1)[0].strip()
            if hid and not hid.startswith("#"):
                entries.append((hid, "dibao"))
        return entries
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] = []
    number = 0
    try:
        header = [name.strip() for name in next(reader)]
        unknown = [name for name in header if name not in ("household_id", "benefit")]
        if unknown or len(set(header)) != len(header):
            raise RosterError(f"the header is {', '.join(header)}: a roster has the columns household_id and "
                              "benefit, each once, separated by commas")
        position = {name: k for k, name in enumerate(header)}
        entries = []
        number = 0
        for cells in reader:
            number += 1
            if len(cells) > len(header):
                raise RosterError(f"row {number}: {len(cells)} cells under a header of {len(header)}")
            hid = cells[position["household_id"]].strip() if position["household_id"] < len(cells) else ""
            if not hid:
                continue
            given = cells[position["benefit"]].strip() if position.get("benefit", len(cells)) < len(cells) else ""
            benefit = _BENEFITS.get(given.lower(), _BENEFITS.get(given)) if given else "dibao"
            if benefit is None:
                raise RosterError(f"row {number}: benefit {given!r} is not one of "
                                  + ", ".join(_BENEFITS) + " (empty: dibao)")
            entries.append((hid, benefit))
    except csv.Error as exc:  # in the header, or the record after the last one read
        raise RosterError(f"row {number + 1 if header else 0}: {_csv_error(exc)}") from None
    return entries


def roster_check(result: ScreenResult, roster: list[tuple[str, str]], engine: Any) -> dict[str, Any]:
    """应享未享, 违规享受 and 重复享受 from a screen (run with ``keep_ids=True``) and a roster."""
    counts = Counter(roster)
    on_dibao = {hid for hid, b in roster if b == "dibao"}
    on_tekun = {hid for hid, b in roster if b == "tekun"}
    eligible = result.eligible.get("dibao", set())
    decided = result.decided.get("dibao", set())
    not_receiving = sorted(eligible - on_dibao)
    improper = sorted(hid for hid in on_dibao if hid in decided and hid not in eligible)
    undetermined = sorted(hid for hid in on_dibao if hid in result.ids and hid not in decided)
    malformed = {e.household_id for e in result.errors if e.household_id is not None} - result.ids
    listed = {hid for hid, _ in roster}
    unknown = sorted(listed - result.ids - malformed)
    refused = sorted(listed & malformed)
    duplicates = {hid for (hid, _b), n in counts.items() if n > 1}
    defines_both = {"dibao", "tekun"} <= set(engine.decision_ids("household"))
    if defines_both:
        duplicates |= on_dibao & on_tekun
    dup = sorted(duplicates)
    return {
        "应享未享": {"description": "eligible for dibao (decided) but not on the roster",
                     "count": len(not_receiving), "ids": not_receiving},
        "违规享受": {"description": "on the dibao roster but decided not eligible",
                     "count": len(improper), "ids": improper},
        "重复享受": {"description": "on the roster twice for the same benefit"
                     + (", or receiving both dibao and tekun" if defines_both else ""),
                     "count": len(dup), "ids": dup},
        "undetermined": {"description": "on the dibao roster, but dibao needs information", "count": len(undetermined), "ids": undetermined},
        "not_in_population": {"description": "on the roster but not in the screened file",
                              "count": len(unknown), "ids": unknown},
        "malformed_in_population": {"description": "on the roster, but its row in the screened file is malformed "
                                                   "(see the errors), so it was not decided",
                                    "count": len(refused), "ids": refused},
    }


def diagnostics_of(errors: list[RowError]) -> list[Diagnostic]:
    return [make("PE401", f"row {e.row}: {e.column}: {e.message}", path=f"[{e.row}].{e.column}") for e in errors]

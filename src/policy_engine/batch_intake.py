"""Columnar intake for the batch path: households in the facts layout to a split population.

``read_chunk(policy, frame, first_row)`` takes a polars frame of households in the **facts
layout** (one row per household, a column per top-level ``Household`` field, nested models as
structs, ``members`` as a list of structs: what ``policy-engine synth`` writes to Parquet) and
returns the :class:`~policy_engine.vector.Split` population that ``decide_batch`` evaluates,
with the household ids and row numbers, and every malformed field found.

Every fact is checked as the scalar intake (``intake.coerce``) checks it, so that a row is
accepted here exactly when ``Engine.decide`` accepts its facts, with the same values. The checks
are vectorised: a column of the declared type, or text that is a plain decimal / ISO date, is
converted by polars; only the values that are not (an unknown enum value, a negative amount,
text such as ``"1e3"`` or ``"abc"``, a value of another type) are handed to ``coerce`` one by
one, which either reads them (``"1e3"`` is 1000, as in ``decide``) or gives the error message.
A row with a bad field is left out of the population and each of its bad fields is reported;
the other rows go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import polars as pl

from . import ir
from .intake import (
    _SIGNED_MONEY,
    DECIMAL_DIGITS,
    INTEGER_LIMIT,
    NOT_MAPPING,
    TOO_MANY_DIGITS,
    coerce,
    fits_digits,
)

__all__ = ["BadField", "Chunk", "read_chunk"]

#: a decimal polars reads exactly, within intake.DECIMAL_DIGITS on both sides of the point
_PLAIN_DECIMAL = r"^\s*[+-]?\d{1,18}(\.\d{1,18})?\s*$"
_PLAIN_INTEGER = r"^\s*-?\d+\s*$"
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
#: 0001-01-01 as polars' day count: the first date Python (and so ``decide``) holds
_YEAR_ONE = -719162


@dataclass(frozen=True)
class BadField:
    """One malformed fact: the 0-based position of its household in the chunk, the fact path
    (``assets.deposits``, ``members[1].income.wages``) and the message ``coerce`` gives."""

    position: int
    column: str
    message: str


@dataclass
class Chunk:
    """A chunk read by :func:`read_chunk`: the accepted households, their ids and row numbers."""

    population: Any  # vector.Split
    ids: pl.Series
    rows: pl.Series
    bad: list[BadField]


def _leaf(frame: pl.DataFrame, path: tuple[str, ...]) -> tuple[pl.Series | None, list[tuple[int, str]]]:
    """The column at a facts path (``assets.deposits``), or None when the layout has no such
    field; and (row, group) for every row where a group on the path (``assets``) holds a value
    that is not a mapping, as the scalar intake refuses it."""
    if path[0] not in frame.columns:
        return None, []
    series = frame[path[0]]
    for depth, part in enumerate(path[1:], 1):
        dtype = series.dtype
        if not isinstance(dtype, pl.Struct):
            if dtype == pl.Null:
                return None, []
            group = ".".join(path[:depth])
            return None, [(i, group) for i in series.is_not_null().arg_true().to_list()]
        if part not in {f.name for f in dtype.fields}:
            return None, []
        series = series.struct.field(part)
    return series, []


def _decimal_dtype(values: list[Decimal]) -> pl.Decimal:
    scale = 0
    for v in values:
        exponent = v.as_tuple().exponent
        if isinstance(exponent, int):
            scale = max(scale, -exponent)
    return pl.Decimal(38, scale)


def _typed(series: pl.Series, node: ir.InputNode) -> tuple[pl.Series, pl.Series]:
    """(the values polars converts exactly, a mask of the values it cannot: handed to ``coerce``)."""
    kind, dtype = node.type, series.dtype
    given = series.is_not_null()
    none = pl.repeat(False, len(series), dtype=pl.Boolean, eager=True)
    if kind in ("money", "decimal"):
        odd = none
        if isinstance(dtype, pl.Decimal):
            values = series
        elif dtype.is_integer():
            values = series.cast(pl.Decimal(38, 0))
        elif dtype == pl.String:
            plain = series.str.contains(_PLAIN_DECIMAL).fill_null(False)
            stripped = series.str.strip_chars()
            fraction = stripped.filter(plain).str.extract(r"\.(\d+)$").str.len_chars().max()
            scale = int(fraction) if isinstance(fraction, int) else 0
            values = pl.select(pl.when(plain).then(stripped)).to_series().cast(pl.Decimal(38, scale), strict=False)
            odd = given & (plain.not_() | values.is_null())
        else:  # floats (read by their shortest repr), booleans, anything else: one by one
            return pl.repeat(None, len(series), dtype=pl.Decimal(38, 0), eager=True), given
        odd = odd | _beyond_digits(values)
        if kind == "money" and node.path[-1] not in _SIGNED_MONEY:
            odd = odd | (values < 0).fill_null(False)
        return values, odd
    if kind == "integer":
        # beyond ±INTEGER_LIMIT (an unsigned column's top half, Int64's lowest value, long text)
        # coerce gives the error
        if dtype.is_integer():
            values = series.cast(pl.Int64, strict=False)
            return values, given & (values.is_null() | (values < -INTEGER_LIMIT)).fill_null(True)
        if dtype == pl.String:
            plain = series.str.contains(_PLAIN_INTEGER).fill_null(False)
            values = pl.select(pl.when(plain).then(series.str.strip_chars())).to_series().cast(pl.Int64, strict=False)
            return values, given & (plain.not_() | values.is_null() | (values < -INTEGER_LIMIT).fill_null(True))
        return pl.repeat(None, len(series), dtype=pl.Int64, eager=True), given
    if kind == "boolean":
        if dtype == pl.Boolean:
            return series, none
        return pl.repeat(None, len(series), dtype=pl.Boolean, eager=True), given
    if kind == "date":  # a date before year 1 (which polars holds) is refused as decide refuses it
        if dtype == pl.Date:
            return series, given & (series.to_physical() < _YEAR_ONE).fill_null(False)
        if isinstance(dtype, pl.Datetime):
            dates = series.dt.date()
            return dates, given & (dates.to_physical() < _YEAR_ONE).fill_null(False)
        if dtype == pl.String:
            plain = series.str.contains(_ISO_DATE).fill_null(False)
            values = series.str.to_date("%Y-%m-%d", strict=False)  # year 0 too, which Python refuses
            return values, given & (plain.not_() | values.is_null() | (values.dt.year() < 1).fill_null(False))
        return pl.repeat(None, len(series), dtype=pl.Date, eager=True), given
    if kind in ("enum", "text"):
        if isinstance(dtype, (pl.Categorical, pl.Enum)):  # as text: checked by column, not one by one
            series = series.cast(pl.String)
            dtype = series.dtype
        if dtype == pl.String:
            if kind == "text":
                return series, none
            return series, given & series.is_in(list(node.values)).not_().fill_null(False)
        return pl.repeat(None, len(series), dtype=pl.String, eager=True), given
    if kind == "list":
        if isinstance(dtype, pl.List) and dtype.inner == pl.String:
            return series, none
        return pl.repeat(None, len(series), dtype=pl.List(pl.String), eager=True), given
    return series, none  # pragma: no cover - every declared type is handled above


def _beyond_digits(values: pl.Series) -> pl.Series:
    """Decimals a population cannot hold (``intake.fits_digits``): coerce reads them and the digit
    check refuses them, as the row-by-row reading does. A column with more places than allowed
    sends every value (whose exponent is the column's)."""
    assert isinstance(values.dtype, pl.Decimal)
    scale = values.dtype.scale or 0
    if scale > DECIMAL_DIGITS:
        return values.is_not_null()
    limit = pl.lit(10 ** (DECIMAL_DIGITS + scale), dtype=pl.Int128)
    return pl.select((pl.lit(values.to_physical()).abs() >= limit).fill_null(False)).to_series()


def read_column(series: pl.Series, node: ir.InputNode) -> tuple[pl.Series, list[tuple[int, str]]]:
    """One fact for every row: (the column in the dtype ``decide_batch`` reads, [(index, message)]
    for the values ``coerce`` refuses; those are null in the column)."""
    values, odd = _typed(series, node)
    bad: list[tuple[int, str]] = []
    if not odd.any():
        return values.alias(node.name), bad
    signed = node.path[-1] in _SIGNED_MONEY
    index = odd.arg_true().to_list()
    fixed: list[tuple[int, Any]] = []
    decimal = node.type in ("money", "decimal")
    for i in index:
        try:
            value = coerce(series[i], node, signed=signed)
        except ValueError as exc:
            bad.append((i, str(exc)))
            continue
        if decimal and not fits_digits(value):
            bad.append((i, TOO_MANY_DIGITS))
        else:
            fixed.append((i, value))
    if fixed and decimal:
        decimals = [v for _, v in fixed]
        present = values.drop_nulls()
        dtype = _decimal_dtype(decimals + ([present.max(), present.min()] if len(present) else []))
        if isinstance(values.dtype, pl.Decimal) and (values.dtype.scale or 0) > (dtype.scale or 0):
            dtype = values.dtype
        values = values.cast(dtype)
    elif fixed and node.type == "list":
        values = values.cast(pl.List(pl.String))
        fixed = [(i, [str(x) for x in v]) for i, v in fixed]
    # refused values become null (their rows are dropped); read ones take the value coerce gave
    refused = [i for i, _ in bad]
    if refused:
        values = values.scatter(refused, pl.Series([None] * len(refused), dtype=values.dtype))
    if fixed:
        values = values.scatter([i for i, _ in fixed], pl.Series([v for _, v in fixed], dtype=values.dtype))
    return values.alias(node.name), bad


def _read_inputs(policy: ir.CompiledPolicy, entity: str, frame: pl.DataFrame
                 ) -> tuple[list[pl.Series], list[tuple[int, str, str]]]:
    """Every input of ``entity`` that ``frame`` has, read; and (row, fact path, message) per bad value."""
    columns: list[pl.Series] = []
    errors: list[tuple[int, str, str]] = []
    groups: set[tuple[int, str]] = set()  # a group that is not a mapping is said once per row
    for node in policy.inputs:
        if node.entity != entity:
            continue
        source, not_mapping = _leaf(frame, node.path)
        for i, group in not_mapping:
            if (i, group) not in groups:
                groups.add((i, group))
                errors.append((i, group, NOT_MAPPING))
        if source is None:
            continue
        values, refused = read_column(source, node)
        columns.append(values)
        errors.extend((i, ".".join(node.path), message) for i, message in refused)
    return columns, errors


def read_chunk(policy: ir.CompiledPolicy, frame: pl.DataFrame, first_row: int,
               id_column: str = "household_id") -> Chunk:
    """Households of ``frame`` (facts layout) as a split population; ``first_row`` is the row
    number of the frame's first row (rows are numbered from 1)."""
    from .vector import Split

    n = frame.height
    rows = pl.Series("row", range(first_row, first_row + n), dtype=pl.Int64)
    ids = (frame[id_column].cast(pl.String) if id_column in frame.columns
           else pl.Series(id_column, [None] * n, dtype=pl.String))
    if ids.has_nulls():
        ids = ids.fill_null(rows.cast(pl.String))
    ids = ids.alias(id_column)
    bad: list[BadField] = []
    columns, errors = _read_inputs(policy, "household", frame)
    bad.extend(BadField(i, column, message) for i, column, message in errors)
    members = None
    lengths: pl.Series | None = None  # members per household, when they come as lists
    if "members" in frame.columns and isinstance(frame.schema["members"], pl.Array):  # fixed size: a list too
        frame = frame.with_columns(pl.col("members").arr.to_list())
    if "members" in frame.columns and isinstance(frame.schema["members"], pl.List):
        given = frame["members"].is_not_null()
        columns.append(pl.select(pl.when(pl.lit(given)).then(pl.lit(True))).to_series().alias("members"))
        lengths = frame["members"].list.len().fill_null(0).cast(pl.Int64)
        starts = lengths.cum_sum() - lengths  # the position of each household's first member
        exploded = (pl.DataFrame({"_hh": pl.int_range(n, dtype=pl.Int64, eager=True), "m": frame["members"]})
                    .filter(pl.lit(lengths) > 0).explode("m"))
        inner = exploded["m"]
        owner = exploded["_hh"]
        mcols = [owner]

        def position(i: int) -> int:  # a member's position in its household (for messages only)
            return i - int(starts[int(owner[i])])

        unnested = inner.struct.unnest() if isinstance(inner.dtype, pl.Struct) else pl.DataFrame()
        # a member that is null, or not a struct, is refused as decide refuses it
        not_mapping = inner.is_null() if isinstance(inner.dtype, pl.Struct) else inner.is_not_null() | inner.is_null()
        for i in not_mapping.arg_true().to_list():
            where = f"members[{position(i)}]"
            bad.append(BadField(int(owner[i]), where, f"{where} must be a mapping"))
        read, errors = _read_inputs(policy, "member", unnested)
        mcols.extend(read)
        bad.extend(BadField(int(owner[i]), f"members[{position(i)}].{column}", message)
                   for i, column, message in errors)
        members = pl.DataFrame(mcols)
    elif "members" in frame.columns:  # members of another shape: every row's members are refused
        for i in frame["members"].is_not_null().arg_true().to_list():
            bad.append(BadField(i, "members", "members must be a list"))
    households = pl.DataFrame(columns)
    if bad:
        # too many digits is said only of a household with no other bad fact, as the row-by-row
        # reading says it (after the intake has read the household)
        others = {b.position for b in bad if b.message != TOO_MANY_DIGITS}
        bad = [b for b in bad if b.message != TOO_MANY_DIGITS or b.position not in others]
        refused = sorted({b.position for b in bad})
        keep = pl.repeat(True, n, dtype=pl.Boolean, eager=True).scatter(refused, False)
        households = households.filter(keep)
        ids, rows = ids.filter(keep), rows.filter(keep)
        if members is not None:
            kept = pl.int_range(n, dtype=pl.Int64, eager=True).filter(keep)
            renumber = pl.DataFrame({"_hh": kept, "_new": pl.int_range(len(kept), dtype=pl.Int64, eager=True)})
            members = members.join(renumber, on="_hh", how="inner", maintain_order="left").drop("_hh").rename(
                {"_new": "_hh"}).select(members.columns)
    sizes = lengths  # passed on, so that decide_batch does not count them again
    if sizes is not None and bad:
        sizes = sizes.filter(keep)
    return Chunk(Split(households, members, len(ids), checked=True, sizes=sizes), ids, rows, bad)

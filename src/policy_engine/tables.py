"""DMN simple unary tests: the cells of decision-table input columns.

``parse_cell`` turns one cell (``< 700``, ``[3000..6000)``, ``"north","south"``, ``not(-)``, ``-``)
into an ``ir.Test``. Endpoints are expressions of the expression language, so a cell may name
another value (``< dibao_standard``) or compute one (``< 1.5 * dibao_standard``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal

from . import ir
from .expressions import ExpressionError

#: compiles endpoint text to IR, given the column's enum values (for bare enum literals)
EndpointCompiler = Callable[[str], ir.Expr]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTERVAL = re.compile(r"^([\[\]\(])(.*)\.\.(.*)([\[\]\)])$", re.DOTALL)


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on a separator outside quotes, brackets and parentheses."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current = ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0 and not _in_interval(current):
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def _in_interval(prefix: str) -> bool:
    # inside "[a..b" the comma rules do not apply (intervals have no commas anyway, but
    # "[1..2], [5..6]" must split at the comma after "]")
    stripped = prefix.strip()
    return bool(stripped) and stripped[0] in "[]" and ".." in stripped and not stripped.endswith(("]", ")", "["))


def literal_cell(value: object) -> ir.Test:
    """A non-string YAML cell: a number, boolean, date or null is an equality test."""
    if value is None:
        return ir.Test("null", "null")
    if isinstance(value, bool):
        return ir.Test("compare", "true" if value else "false", op="==", a=ir.Const(value, "boolean"))
    if isinstance(value, int):
        return ir.Test("compare", str(value), op="==", a=ir.Const(value, "integer"))
    if isinstance(value, Decimal):
        return ir.Test("compare", str(value), op="==", a=ir.Const(value, "decimal"))
    if isinstance(value, dt.date):
        return ir.Test("compare", value.isoformat(), op="==", a=ir.Const(value, "date"))
    raise ExpressionError("PE230", f"a cell cannot be {type(value).__name__}")


def parse_cell(text: str, endpoint: EndpointCompiler) -> ir.Test:
    """Parse a unary-test cell; raises ExpressionError with code PE230 (or an expression code)."""
    source = text.strip()
    if source in ("-", ""):
        return ir.Test("any", "-")
    items = split_top_level(source)
    if any(not item for item in items):
        raise ExpressionError("PE230", f"empty test in `{source}`", hint="remove the stray comma")
    if len(items) > 1:
        return ir.Test("one_of", source, tests=tuple(_single(item, endpoint) for item in items))
    return _single(source, endpoint)


def _single(source: str, endpoint: EndpointCompiler) -> ir.Test:
    if source == "-":
        raise ExpressionError("PE230", "`-` must stand alone in a cell")
    if source == "null":
        return ir.Test("null", source)
    if source.startswith("not(") and source.endswith(")"):
        inner = source[4:-1].strip()
        if not inner:
            raise ExpressionError("PE230", "not() needs at least one test")
        tests = tuple(_single(item, endpoint) for item in split_top_level(inner))
        return ir.Test("not", source, tests=tests)
    match = _INTERVAL.match(source)
    if match and source[0] in "[](" and ".." in source:
        opening, low, high, closing = match.groups()
        if not low.strip() or not high.strip():
            raise ExpressionError("PE230", f"interval `{source}` needs two endpoints")
        return ir.Test(
            "range",
            source,
            a=endpoint(low.strip()),
            b=endpoint(high.strip()),
            low_closed=opening == "[",
            high_closed=closing == "]",
        )
    for op in ("<=", ">=", "!=", "<", ">", "="):
        if source.startswith(op):
            rest = source[len(op):].strip()
            if not rest:
                raise ExpressionError("PE230", f"`{source}` needs a value after {op}")
            return ir.Test("compare", source, op="==" if op == "=" else op, a=endpoint(rest))
    if source.startswith(("[", "]", "(")) and ".." in source:
        raise ExpressionError("PE230", f"`{source}` is not a valid interval",
                              hint="write [a..b], (a..b), [a..b) or ]a..b[")
    return ir.Test("compare", source, op="==", a=endpoint(source))


def is_identifier(text: str) -> bool:
    return bool(_IDENT.match(text.strip()))

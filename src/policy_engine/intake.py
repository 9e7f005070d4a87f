"""Facts intake: a caller's dict or pydantic model to the typed values a policy reads.

Only the facts a policy declares as inputs are read; each is checked against its declared type
and every bad field is reported (``FactsError``), not only the first. An absent or null fact is
simply absent: the evaluator turns it into ``needs_information``, never into a zero.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from . import ir
from .diagnostics import Diagnostic, FactsError, make

_MISSING = object()
#: ISO text -> date, for `as_date` (dates are immutable; a pure function of the text)
_DATES: dict[str, dt.date] = {}


def as_date(value: Any, what: str = "as_of") -> dt.date:
    """``as_of`` as a date: a ``date`` or ISO text; never the wall clock."""
    if type(value) is str:  # the common case: ISO text, parsed once per distinct text
        day = _DATES.get(value)
        if day is not None:
            return day
    if isinstance(value, dt.datetime):
        raise FactsError([make("PE402", f"{what} must be a date, not a datetime", path=what,
                               hint="pass date(2023, 7, 1) or \"2023-07-01\"")])
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if type(value) is str:
                if len(_DATES) >= 256:
                    _DATES.clear()
                _DATES[value] = day
            return day
    raise FactsError([make("PE402", f"{what} must be a date such as \"2023-07-01\", not {value!r}", path=what)])


def to_plain(facts: Any) -> Any:
    """Accept a dict or a pydantic model (dumped without None fields)."""
    dump = getattr(facts, "model_dump", None)
    if callable(dump):
        return dump(mode="python", exclude_none=True)
    return facts


#: the largest whole number a fact may be, either way (a 64-bit integer, as population files hold them)
INTEGER_LIMIT = 2**63 - 1
#: the most digits a money or decimal fact can have before, and after, the point: what a
#: population's ``Decimal(38, s)`` columns hold exactly. (Arithmetic is exact within 34 digits and
#: rounded beyond them, as FEEL's decimal128; a batch decides such rows by the scalar path.)
DECIMAL_DIGITS = 18
#: a group of facts (``assets``, ``members[0].income``) given as a number, text or list
NOT_MAPPING = "expected a mapping of facts (an object), not a single value or a list"
TOO_MANY_DIGITS = (f"too many digits: at most {DECIMAL_DIGITS} before and {DECIMAL_DIGITS} after the point "
                   "can be computed exactly")


def fits_digits(value: Decimal) -> bool:
    """Whether a decimal fact is within ``DECIMAL_DIGITS`` on both sides of the point."""
    text = str(value)  # the common case first (6× faster than as_tuple): at most 18 characters in
    if len(text) <= DECIMAL_DIGITS and "E" not in text and value.is_finite():  # plain notation
        return True  # at most 18 digits, so at most 17 on either side of the point
    exponent = value.as_tuple().exponent
    return value.adjusted() < DECIMAL_DIGITS and isinstance(exponent, int) and exponent >= -DECIMAL_DIGITS


def beyond_digits(inputs: tuple[ir.InputNode, ...], values: dict[str, Any], members: list[dict[str, Any]] | None
                  ) -> Iterator[tuple[ir.InputNode, int | None, dict[str, Any]]]:
    """(input, member position or None, the row holding it) for every decimal fact of a read case
    beyond ``DECIMAL_DIGITS``."""
    for node in inputs:
        if node.type != "money" and node.type != "decimal":
            continue
        name = node.name
        if node.entity != "member":
            value = values.get(name)
            if type(value) is Decimal and not fits_digits(value):
                yield node, None, values
            continue
        for member, row in enumerate(members or ()):
            value = row.get(name)
            if type(value) is Decimal and not fits_digits(value):
                yield node, member, row


def too_many_digits(inputs: tuple[ir.InputNode, ...], values: dict[str, Any],
                    members: list[dict[str, Any]] | None) -> list[Diagnostic]:
    """A PE401 for every decimal fact of a read case beyond ``DECIMAL_DIGITS`` (by fact path)."""
    found = [_error(node, member, ValueError(TOO_MANY_DIGITS)) for node, member, _ in beyond_digits(inputs, values, members)]
    return sorted(found, key=lambda d: d.path or "")


#: what a text fact with a lone surrogate (JSON's ``"\ud800"``) is: no column or file holds it
NOT_UTF8 = "not UTF-8 text (a lone surrogate, such as JSON's \\ud800)"


def utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it has no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def holds_utf8(value: Any) -> bool:
    """Whether a fact or output value (text, or a tuple of them) is all UTF-8 text."""
    parts = (value,) if isinstance(value, str) else value if isinstance(value, tuple) else ()
    return all(utf8(part) for part in parts if isinstance(part, str))


def beyond_utf8(inputs: tuple[ir.InputNode, ...], values: dict[str, Any], members: list[dict[str, Any]] | None
                ) -> Iterator[tuple[ir.InputNode, int | None, dict[str, Any]]]:
    """(input, member position or None, the row holding it) for every text or list fact of a read
    case that is not UTF-8 text: ``decide`` reads it, a population column cannot hold it."""
    for node in inputs:
        if node.type != "text" and node.type != "list":
            continue
        rows = [(None, values)] if node.entity != "member" else list(enumerate(members or ()))
        for member, row in rows:
            if not holds_utf8(row.get(node.name)):
                yield node, member, row


def not_utf8_text(inputs: tuple[ir.InputNode, ...], values: dict[str, Any],
                  members: list[dict[str, Any]] | None) -> list[Diagnostic]:
    """A PE401 for every text fact of a read case that is not UTF-8 text (by fact path)."""
    found = [_error(node, member, ValueError(NOT_UTF8)) for node, member, _ in beyond_utf8(inputs, values, members)]
    return sorted(found, key=lambda d: d.path or "")


def coerce(value: Any, node: ir.InputNode, signed: bool = False) -> Any:
    """Convert one fact to its declared type; raises ValueError with a user-facing message."""
    kind = node.type
    if kind in ("money", "decimal"):
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        if isinstance(value, float):
            value = str(value)  # the shortest repr: 820.5 -> "820.5", exactly what was typed
        if isinstance(value, (int, Decimal, str)):
            try:
                number = Decimal(value) if not isinstance(value, str) else Decimal(value.strip())
            except InvalidOperation:
                raise ValueError(f"expected a number, not {value!r}") from None
            if not number.is_finite():
                raise ValueError("expected a finite number")
            if kind == "money" and number < 0 and not signed:
                raise ValueError(f"money cannot be negative ({number})")
            return number
        raise ValueError(f"expected a number, not {type(value).__name__}")
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError("expected a whole number, not a boolean")
        beyond = f"whole number out of range: at most {INTEGER_LIMIT} either way"
        whole: int | None = None
        if isinstance(value, int):
            whole = value
        elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
            if value.adjusted() >= 19:  # refused before int() builds it (1e999999 would take minutes)
                raise ValueError(beyond)
            whole = int(value)
        elif isinstance(value, str) and (digits := value.strip().lstrip("-")).isdigit():
            if len(digits.lstrip("0")) > 19:
                raise ValueError(beyond)
            whole = int(value)
        if whole is None:
            raise ValueError(f"expected a whole number, not {value!r}")
        if not -INTEGER_LIMIT <= whole <= INTEGER_LIMIT:
            raise ValueError(beyond)
        return whole
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, not {value!r}")
    if kind == "date":
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise ValueError(f"expected a date YYYY-MM-DD, not {value!r}")
    if kind == "enum":
        if isinstance(value, str) and value in node.values:
            return value
        raise ValueError(f"{value!r} is not one of {', '.join(node.values)}")
    if kind == "text":
        if isinstance(value, str):
            return value
        raise ValueError(f"expected text, not {type(value).__name__}")
    if kind == "list":
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ValueError(f"expected a list, not {type(value).__name__}")
    return value


#: money facts that are net differences and may be negative
_SIGNED_MONEY = {"property_net", "transfer_net"}
_ZERO = Decimal(0)
#: the commonest money strings, with their (immutable) Decimal: what `Decimal(text)` gives
_ZEROS = {text: Decimal(text) for text in ("0", "0.0", "0.00")}


def read_facts(policy_inputs: tuple[ir.InputNode, ...], facts: Any, entity: str
               ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Read and type-check every declared input; raise FactsError listing every bad field."""
    return _read(_plan(policy_inputs, entity), facts, entity)


def facts_reader(policy_inputs: tuple[ir.InputNode, ...], entity: str
                 ) -> Callable[[Any], tuple[dict[str, Any], list[dict[str, Any]] | None]]:
    """``read_facts`` for one (inputs, entity), with its reading plan looked up once, here."""
    plan = _plan(policy_inputs, entity)

    def read(facts: Any) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        return _read(plan, facts, entity)
    return read


def _read(plan: tuple[Plan, Plan], facts: Any, entity: str
          ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    facts = facts if type(facts) is dict else to_plain(facts)
    if not isinstance(facts, dict):
        raise FactsError([make("PE401", f"facts must be a mapping, not {type(facts).__name__}", path="")])
    errors: list[Diagnostic] = []
    values: dict[str, Any] = {}
    entity_plan, member_plan = plan
    _read_fields(facts, entity_plan, values, errors, None)
    members: list[dict[str, Any]] | None = None
    if entity == "household":
        raw_members = facts.get("members", _MISSING)
        if raw_members is not _MISSING and raw_members is not None:
            if not isinstance(raw_members, (list, tuple)):
                errors.append(make("PE401", "members must be a list", path="members"))
            else:
                members = []
                for i, member in enumerate(raw_members):
                    row: dict[str, Any] = {}
                    if type(member) is not dict:
                        member = to_plain(member)
                        if not isinstance(member, dict):
                            errors.append(make("PE401", f"members[{i}] must be a mapping", path=f"members[{i}]"))
                            members.append(row)
                            continue
                    _read_fields(member, member_plan, row, errors, i)
                    members.append(row)
    if errors:
        raise FactsError(errors)
    return values, members


def _read_fields(source: dict[str, Any], plan: Plan, row: dict[str, Any], errors: list[Diagnostic],
                 member: int | None) -> None:
    """Read the inputs of ``plan`` from ``source`` (the facts, or member number ``member``) into
    ``row``, in plan order; each bad value adds its error to ``errors``."""
    for first, fields, keyed in plan:
        container = source.get(first, _MISSING)  # read once for the inputs under one key
        if keyed and type(container) is dict:
            # the common case: inputs at `first.key`, read by key; absent and null are skipped
            for name, key, _rest, read, node, refuse_negative in fields:
                raw = container.get(key)
                if raw is None:
                    continue
                if refuse_negative is not None and type(raw) is str:
                    # the money reader's common case, inline (see `_reader`): a decimal string
                    # (Decimal strips surrounding whitespace as str.strip does); anything
                    # unusual goes to the reader, which redoes it and gives the value or the error
                    value = _ZEROS.get(raw)
                    if value is not None:  # "0", "0.00": the commonest amounts, converted once
                        row[name] = value
                        continue
                    try:
                        value = Decimal(raw)
                    except InvalidOperation:
                        pass
                    else:
                        if value.is_finite() and not (refuse_negative and value < _ZERO):
                            row[name] = value
                            continue
                try:
                    row[name] = read(raw, node)
                except ValueError as exc:
                    errors.append(_error(node, member, exc))
            continue
        for name, _key, rest, read, node, _refuse in fields:  # any path, any container
            raw = _walk(container, rest) if rest else container
            if raw is _MISSING or raw is None:
                continue
            if type(raw) is _NotMapping:  # a group of facts given as a value: said once per group
                group = ".".join(node.path[:raw])
                where = group if member is None else f"members[{member}].{group}"
                if not any(e.path == where for e in errors):
                    errors.append(make("PE401", f"{where}: {NOT_MAPPING}", path=where,
                                       hint=f"{'.'.join(node.path)} is read from it"))
                continue
            try:
                row[name] = read(raw, node)
            except ValueError as exc:
                errors.append(_error(node, member, exc))


def _error(node: ir.InputNode, member: int | None, exc: ValueError) -> Diagnostic:
    where = ".".join(node.path) if member is None else f"members[{member}].{'.'.join(node.path)}"
    return make("PE401", f"{where}: {exc}", path=where, hint=node.label.en)


class _NotMapping(int):
    """What ``_walk`` gives when a group on the path is a value: how many parts of the path lead
    to it (1: the value under the path's first key)."""


def _walk(data: Any, rest: tuple[str, ...]) -> Any:
    """The value at a dotted path, ``data`` being the value under its first part and ``rest``
    the parts after it: ``_MISSING`` when a part is absent or null, ``_NotMapping(k)`` when the
    value at the path's first ``k`` parts is neither a mapping nor null."""
    for depth, part in enumerate(rest, 1):
        if data is _MISSING or data is None:
            return _MISSING
        if not isinstance(data, dict):
            return _NotMapping(depth)
        data = data.get(part, _MISSING)
    return data


# -- the reading plan: which inputs to read for an entity, and a type-specialised reader each ------
#
# Built once per (inputs tuple, entity) and cached; a pure function of the declared inputs. Each
# reader handles the common exact types directly and hands anything else to ``_coerce_checked``,
# so values and error messages are exactly those of ``coerce``.

Reader = Any  # Callable[[Any, ir.InputNode], Any]
#: one input of a plan: name, path[1] when the path has exactly two parts (else None), path[1:],
#: reader, node, and for money/decimal whether negatives are refused (None for other types)
Field = tuple[str, "str | None", "tuple[str, ...]", Reader, ir.InputNode, "bool | None"]
#: a reading plan: the inputs in declaration order, in runs that share the first part of their
#: path (path[0], fields, keyed), so that the value under that key is looked up once per run;
#: keyed: every path of the run has exactly two parts
Plan = list[tuple[str, list[Field], bool]]
_PLANS: dict[int, tuple[tuple[ir.InputNode, ...], dict[str, tuple[Plan, Plan]]]] = {}


def _plan(policy_inputs: tuple[ir.InputNode, ...], entity: str) -> tuple[Plan, Plan]:
    global _LAST_PLAN
    last = _LAST_PLAN  # one tuple, replaced whole: safe to read while another thread replaces it
    if last is not None and last[0] is policy_inputs and last[1] == entity:
        return last[2]
    plan = _build_plan(policy_inputs, entity)
    _LAST_PLAN = (policy_inputs, entity, plan)
    return plan


#: (inputs, entity, plan) of the last `_plan` call: the common case is one policy, many calls
_LAST_PLAN: tuple[tuple[ir.InputNode, ...], str, tuple[Plan, Plan]] | None = None


def _build_plan(policy_inputs: tuple[ir.InputNode, ...], entity: str) -> tuple[Plan, Plan]:
    cached = _PLANS.get(id(policy_inputs))
    if cached is None or cached[0] is not policy_inputs:
        if len(_PLANS) >= 64:
            _PLANS.clear()
        cached = _PLANS[id(policy_inputs)] = (policy_inputs, {})
    by_entity = cached[1]
    plan = by_entity.get(entity)
    if plan is None:
        plan = by_entity[entity] = (_plan_of([n for n in policy_inputs if n.entity == entity]),
                                    _plan_of([n for n in policy_inputs if n.entity == "member"]))
    return plan


def _plan_of(nodes: list[ir.InputNode]) -> Plan:
    plan: Plan = []
    for n in nodes:
        refuse_negative = ((n.type == "money" and n.path[-1] not in _SIGNED_MONEY)
                           if n.type in ("money", "decimal") else None)
        field = (n.name, n.path[1] if len(n.path) == 2 else None, n.path[1:], _reader(n), n, refuse_negative)
        if plan and plan[-1][0] == n.path[0]:  # only consecutive inputs: the order stays as declared
            plan[-1][1].append(field)
        else:
            plan.append((n.path[0], [field], True))
    # a run is "keyed" when every input in it has a path of exactly two parts
    return [(first, fields, all(f[1] is not None for f in fields)) for first, fields, _ in plan]


def _reader(node: ir.InputNode) -> Reader:
    kind = node.type
    if kind in ("money", "decimal"):
        refuse_negative = kind == "money" and node.path[-1] not in _SIGNED_MONEY

        def number(raw: Any, node: ir.InputNode) -> Any:
            t = type(raw)
            if t is str or t is int or t is Decimal or t is float:
                try:
                    # a float as its shortest repr, exactly what was typed (as `coerce` reads it)
                    value = Decimal(raw.strip()) if t is str else Decimal(str(raw)) if t is float else Decimal(raw)
                except InvalidOperation:
                    return _coerce_checked(raw, node)
                if value.is_finite() and not (refuse_negative and value < 0):
                    return value
            return _coerce_checked(raw, node)
        return number
    if kind == "integer":
        return lambda raw, node: (raw if type(raw) is int and -INTEGER_LIMIT <= raw <= INTEGER_LIMIT
                                  else _coerce_checked(raw, node))
    if kind == "boolean":
        return lambda raw, node: raw if type(raw) is bool else _coerce_checked(raw, node)
    if kind == "date":
        return lambda raw, node: raw if type(raw) is dt.date else _coerce_checked(raw, node)
    if kind in ("enum", "text"):
        allowed = frozenset(node.values) if kind == "enum" else None

        def text(raw: Any, node: ir.InputNode) -> Any:
            if type(raw) is str and (allowed is None or raw in allowed):
                return raw
            return _coerce_checked(raw, node)
        return text
    return _coerce_checked


def _coerce_checked(raw: Any, node: ir.InputNode) -> Any:
    return coerce(raw, node, signed=node.path[-1] in _SIGNED_MONEY)

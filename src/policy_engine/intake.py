"""Facts intake: a caller's dict or pydantic model to the typed values a policy reads.

Only the facts a policy declares as inputs are read; each is checked against its declared type
and every bad field is reported (``FactsError``), not only the first. An absent or null fact is
simply absent: the evaluator turns it into ``needs_information``, never into a zero.
"""

from __future__ import annotations

import datetime as dt
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


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return _MISSING
        data = data.get(part, _MISSING)
        if data is _MISSING:
            return _MISSING
    return data


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
        if isinstance(value, int):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ValueError(f"expected a whole number, not {value!r}")
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


def read_facts(policy_inputs: tuple[ir.InputNode, ...], facts: Any, entity: str
               ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Read and type-check every declared input; raise FactsError listing every bad field."""
    facts = facts if type(facts) is dict else to_plain(facts)
    if not isinstance(facts, dict):
        raise FactsError([make("PE401", f"facts must be a mapping, not {type(facts).__name__}", path="")])
    errors: list[Diagnostic] = []
    values: dict[str, Any] = {}
    entity_plan, member_plan = _plan(policy_inputs, entity)
    for name, rest, first, read, node, _ in entity_plan:
        raw = facts.get(first, _MISSING)
        for part in rest:  # the rest of a dotted path, as _lookup reads it
            if not isinstance(raw, dict):
                raw = _MISSING
                break
            raw = raw.get(part, _MISSING)
        if raw is _MISSING or raw is None:
            continue
        try:
            values[name] = read(raw, node)
        except ValueError as exc:
            errors.append(make("PE401", f"{'.'.join(node.path)}: {exc}", path=".".join(node.path),
                               hint=node.label.en))
    members: list[dict[str, Any]] | None = None
    if entity == "household":
        raw_members = facts.get("members", _MISSING)
        if raw_members is not _MISSING and raw_members is not None:
            if not isinstance(raw_members, (list, tuple)):
                errors.append(make("PE401", "members must be a list", path="members"))
            else:
                members = []
                for i, member in enumerate(raw_members):
                    if type(member) is not dict:
                        member = to_plain(member)
                    row: dict[str, Any] = {}
                    if not isinstance(member, dict):
                        errors.append(make("PE401", f"members[{i}] must be a mapping", path=f"members[{i}]"))
                        members.append(row)
                        continue
                    for name, rest, first, read, node, refuse_negative in member_plan:
                        raw = member.get(first, _MISSING)
                        for part in rest:
                            if not isinstance(raw, dict):
                                raw = _MISSING
                                break
                            raw = raw.get(part, _MISSING)
                        if raw is _MISSING or raw is None:
                            continue
                        if refuse_negative is not None and type(raw) is str:
                            # the money reader's common case, inline (see `_reader`): a decimal
                            # string; anything unusual goes to the reader, which redoes it
                            try:
                                value = Decimal(raw.strip())
                            except InvalidOperation:
                                value = None
                            if value is not None and value.is_finite() and not (refuse_negative and value < _ZERO):
                                row[name] = value
                                continue
                        try:
                            row[name] = read(raw, node)
                        except ValueError as exc:
                            where = f"members[{i}].{'.'.join(node.path)}"
                            errors.append(make("PE401", f"{where}: {exc}", path=where, hint=node.label.en))
                    members.append(row)
    if errors:
        raise FactsError(errors)
    return values, members


# -- the reading plan: which inputs to read for an entity, and a type-specialised reader each ------
#
# Built once per (inputs tuple, entity) and cached; a pure function of the declared inputs. Each
# reader handles the common exact types directly and hands anything else to ``_coerce_checked``,
# so values and error messages are exactly those of ``coerce``.

Reader = Any  # Callable[[Any, ir.InputNode], Any]
#: name, path[1:], path[0], reader, node, and for money/decimal whether negatives are refused
#: (None for other types)
PlanRow = tuple[str, "tuple[str, ...]", str, Reader, ir.InputNode, "bool | None"]
_PLANS: dict[int, tuple[tuple[ir.InputNode, ...], dict[str, tuple[list[PlanRow], list[PlanRow]]]]] = {}


def _plan(policy_inputs: tuple[ir.InputNode, ...], entity: str) -> tuple[list[PlanRow], list[PlanRow]]:
    global _LAST_PLAN
    last = _LAST_PLAN  # one tuple, replaced whole: safe to read while another thread replaces it
    if last is not None and last[0] is policy_inputs and last[1] == entity:
        return last[2]
    plan = _build_plan(policy_inputs, entity)
    _LAST_PLAN = (policy_inputs, entity, plan)
    return plan


#: (inputs, entity, plan) of the last `_plan` call: the common case is one policy, many calls
_LAST_PLAN: tuple[Any, str, Any] | None = None


def _build_plan(policy_inputs: tuple[ir.InputNode, ...], entity: str) -> tuple[list[PlanRow], list[PlanRow]]:
    cached = _PLANS.get(id(policy_inputs))
    if cached is None or cached[0] is not policy_inputs:
        if len(_PLANS) >= 64:
            _PLANS.clear()
        cached = _PLANS[id(policy_inputs)] = (policy_inputs, {})
    by_entity = cached[1]
    plan = by_entity.get(entity)
    if plan is None:
        def rows(nodes: list[ir.InputNode]) -> list[PlanRow]:
            return [(n.name, n.path[1:], n.path[0], _reader(n), n,
                     (n.type == "money" and n.path[-1] not in _SIGNED_MONEY) if n.type in ("money", "decimal")
                     else None) for n in nodes]
        plan = by_entity[entity] = (rows([n for n in policy_inputs if n.entity == entity]),
                                    rows([n for n in policy_inputs if n.entity == "member"]))
    return plan


def _reader(node: ir.InputNode) -> Reader:
    kind = node.type
    if kind in ("money", "decimal"):
        refuse_negative = kind == "money" and node.path[-1] not in _SIGNED_MONEY

        def number(raw: Any, node: ir.InputNode) -> Any:
            t = type(raw)
            if t is str or t is int or t is Decimal:
                try:
                    value = Decimal(raw.strip()) if t is str else Decimal(raw)
                except InvalidOperation:
                    return _coerce_checked(raw, node)
                if value.is_finite() and not (refuse_negative and value < 0):
                    return value
            return _coerce_checked(raw, node)
        return number
    if kind == "integer":
        return lambda raw, node: raw if type(raw) is int else _coerce_checked(raw, node)
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

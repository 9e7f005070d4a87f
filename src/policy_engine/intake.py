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


def read_facts(policy_inputs: tuple[ir.InputNode, ...], facts: Any, entity: str
               ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Read and type-check every declared input; raise FactsError listing every bad field."""
    facts = facts if type(facts) is dict else to_plain(facts)
    if not isinstance(facts, dict):
        raise FactsError([make("PE401", f"facts must be a mapping, not {type(facts).__name__}", path="")])
    errors: list[Diagnostic] = []
    read_entity, read_members = _plan(policy_inputs, entity)
    values = read_entity(facts, errors)
    members: list[dict[str, Any]] | None = None
    if entity == "household":
        raw_members = facts.get("members", _MISSING)
        if raw_members is not _MISSING and raw_members is not None:
            if not isinstance(raw_members, (list, tuple)):
                errors.append(make("PE401", "members must be a list", path="members"))
            else:
                members = read_members(raw_members, errors)
    if errors:
        raise FactsError(errors)
    return values, members


# -- the reading plan: which inputs to read for an entity, and a type-specialised reader each ------
#
# Built once per (inputs tuple, entity) and cached; a pure function of the declared inputs. The
# plan is two generated functions, one reading the entity's inputs from the facts and one reading
# a member's inputs from one member mapping: straight-line code, one block per input, in the
# order of the declared inputs, that looks each path up exactly as ``_lookup`` does and converts
# the common exact types (a decimal string for money, an ``int``, a ``bool``, a ``date``, an enum
# string) inline. Anything else goes to the reader of ``_reader`` (which hands unusual values to
# ``_coerce_checked``), so values and error messages are exactly those of ``coerce``.
#
# Why executing the generated source is safe: it is made only of the fixed templates of
# ``_generate_reader``, of names it makes up (``_k3``, ``_r``...) and of nothing else: every path
# part, input name, node and helper is passed in the namespace dict under a generated name, never
# pasted into the source, so no text of a policy or of the facts can become code.

Reader = Any  # Callable[[Any, ir.InputNode], Any]
PlanReader = Any  # (facts, errors) -> values, or (members, errors) -> rows
_PLANS: dict[int, tuple[tuple[ir.InputNode, ...], dict[str, tuple[PlanReader, PlanReader]]]] = {}


def _plan(policy_inputs: tuple[ir.InputNode, ...], entity: str) -> tuple[PlanReader, PlanReader]:
    cached = _PLANS.get(id(policy_inputs))
    if cached is None or cached[0] is not policy_inputs:
        if len(_PLANS) >= 64:
            _PLANS.clear()
        cached = _PLANS[id(policy_inputs)] = (policy_inputs, {})
    by_entity = cached[1]
    plan = by_entity.get(entity)
    if plan is None:
        plan = by_entity[entity] = (
            _generate_reader([n for n in policy_inputs if n.entity == entity], member=False),
            _generate_reader([n for n in policy_inputs if n.entity == "member"], member=True))
    return plan


def _entity_error(errors: list[Diagnostic], node: ir.InputNode, exc: ValueError) -> None:
    errors.append(make("PE401", f"{'.'.join(node.path)}: {exc}", path=".".join(node.path), hint=node.label.en))


def _not_a_mapping(errors: list[Diagnostic], i: int) -> None:
    errors.append(make("PE401", f"members[{i}] must be a mapping", path=f"members[{i}]"))


def _member_error(errors: list[Diagnostic], i: int, node: ir.InputNode, exc: ValueError) -> None:
    where = f"members[{i}].{'.'.join(node.path)}"
    errors.append(make("PE401", f"{where}: {exc}", path=where, hint=node.label.en))


def _generate_reader(nodes: list[ir.InputNode], member: bool) -> PlanReader:
    ns: dict[str, Any] = {"_MISSING": _MISSING, "_Decimal": Decimal, "_InvalidOperation": InvalidOperation,
                          "_date": dt.date, "_entity_error": _entity_error, "_member_error": _member_error,
                          "_to_plain": to_plain, "_not_a_mapping": _not_a_mapping,
                          "_ZERO": Decimal(0)}
    consts: list[Any] = []

    def k(value: Any) -> str:
        consts.append(value)
        name = f"_k{len(consts)}"
        ns[name] = value
        return name

    if member:  # the list of members: each a mapping (or a model), read in turn
        lines = ["def _read(_members, _errors):",
                 "    _rows = []",
                 "    for _i, _src in enumerate(_members):",
                 "        if type(_src) is not dict:",
                 "            _src = _to_plain(_src)",
                 "        if not isinstance(_src, dict):",
                 "            _not_a_mapping(_errors, _i)",
                 "            _rows.append({})",
                 "            continue"]
        fail = "_member_error(_errors, _i, {node}, _exc)"
    else:
        lines = ["def _read(_src, _errors):"]
        fail = "_entity_error(_errors, {node}, _exc)"
    start = len(lines)
    lines.append("    _out = {}")
    for node in nodes:
        name, node_k, read = k(node.name), k(node), k(_reader(node))
        lines.append(f"    _r = _src.get({k(node.path[0])}, _MISSING)")
        for part in node.path[1:]:  # the rest of a dotted path, as _lookup reads it
            lines.append("    if isinstance(_r, dict):")
            lines.append(f"        _r = _r.get({k(part)}, _MISSING)")
            lines.append("    else:")
            lines.append("        _r = _MISSING")
        lines.append("    if _r is not _MISSING and _r is not None:")
        slow = ["    try:", f"        _out[{name}] = {read}(_r, {node_k})", "    except ValueError as _exc:",
                "        " + fail.format(node=node_k)]
        kind = node.type
        if kind in ("money", "decimal"):
            refuse_negative = kind == "money" and node.path[-1] not in _SIGNED_MONEY
            lines += ["        _v = None", "        if type(_r) is str:", "            try:",
                      "                _v = _Decimal(_r.strip())", "            except _InvalidOperation:",
                      "                _v = None",
                      "        if _v is not None and _v.is_finite()"
                      + (" and not _v < _ZERO:" if refuse_negative else ":"),
                      f"            _out[{name}] = _v", "        else:"]
            lines += ["        " + x for x in slow]
            continue
        fast = {"integer": "type(_r) is int", "boolean": "type(_r) is bool", "date": "type(_r) is _date",
                "text": "type(_r) is str"}.get(kind)
        if kind == "enum":
            fast = f"type(_r) is str and _r in {k(frozenset(node.values))}"
        if fast is None:
            lines += ["    " + x for x in slow]
            continue
        lines += [f"        if {fast}:", f"            _out[{name}] = _r", "        else:"]
        lines += ["        " + x for x in slow]
    if member:
        lines[start:] = ["    " + x for x in lines[start:]]
        lines += ["        _rows.append(_out)", "    return _rows"]
    else:
        lines.append("    return _out")
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<policy_engine generated: facts reader>", "exec"), ns)  # noqa: S102 - see above
    return ns["_read"]


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

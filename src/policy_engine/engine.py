"""The public objects: ``Engine`` (a compiled policy, ready to decide), ``Decision``, ``Outcome``."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from . import ir
from .compile import compile_or_raise
from .diagnostics import Diagnostic, FactsError, make
from .evaluate import Backend, Case, NotInForce, Unknown
from .intake import INTEGER_LIMIT, as_date, facts_reader, too_many_digits

Level = Literal["summary", "fails", "full"]
Lang = Literal["zh", "en"]

ENTITIES = ("household", "member", "village", "township", "county", "institution", "month")


class Outcome:
    """The result of one decision for one case: its outputs, status and reasons."""

    __slots__ = ("cites", "fired_rows", "id", "label", "missing", "outputs", "reason", "status")

    def __init__(self, id: str, status: str, outputs: dict[str, Any], missing: tuple[str, ...],
                 reason: str | None, label: ir.Label, cites: tuple[ir.Cite, ...], fired_rows: tuple[str, ...]):
        self.id = id
        #: "decided" | "needs_information" | "not_in_force"
        self.status = status
        self.outputs = outputs
        #: the facts that were needed and not given (paths such as ``members[0].income.wages``)
        self.missing = missing
        self.reason = reason
        self.label = label
        self.cites = cites
        #: ids of the rows that fired in this decision's table, in the order they fired
        self.fired_rows = fired_rows

    def __getattr__(self, name: str) -> Any:
        outputs = object.__getattribute__(self, "outputs")
        if name in outputs:
            value = outputs[name]
            return None if isinstance(value, Unknown) else value
        raise AttributeError(f"decision `{object.__getattribute__(self, 'id')}` has no output `{name}`"
                             f" (outputs: {', '.join(outputs) or 'none'})")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.outputs.items())
        return f"Outcome({self.id}: {self.status}{'; ' + shown if shown else ''})"


def _show(value: Any) -> str:
    if isinstance(value, Unknown):
        return "unknown"
    return str(value)


#: "not computed yet" for `Decision`'s optional arguments
_UNKNOWN = object()
#: not yet in `Engine._versions` (None is a kept value there: no version in force)
_UNSEEN: Any = object()


class Decision(Mapping[str, Outcome]):
    """Every decision of one entity for one case, as of one date. A value, not an error."""

    def __init__(self, engine: Engine, read: tuple[dict[str, Any], list[dict[str, Any]] | None], as_of: dt.date,
                 entity: str, outcomes: dict[str, Outcome],
                 events: tuple[tuple[Any, ...], ...] | list[tuple[Any, ...]] | None,
                 version: ir.Version | None | object = _UNKNOWN, status: str | None = None):
        # `read`: the facts as the engine read them (its own dicts, not the caller's, which may
        # change later); `version` and `status`, when given, are those computed below
        self._engine = engine
        self._read = read
        self.as_of = as_of
        self.entity = entity
        self._outcomes = outcomes
        self._events = events
        if version is _UNKNOWN:
            version = engine._version_at(as_of)
        self.policy_version = version.version if isinstance(version, ir.Version) else None
        if status is None:
            status = "decided"
            for outcome in outcomes.values():
                if outcome.status == "needs_information":
                    status = "needs_information"
                    break
        #: "needs_information" when any decision needs facts that were not given, else "decided"
        self.status = status

    def __getitem__(self, decision_id: str) -> Outcome:
        try:
            return self._outcomes[decision_id]
        except KeyError:
            from .diagnostics import did_you_mean

            hint = did_you_mean(decision_id, self._outcomes)
            raise KeyError(f"no decision `{decision_id}` for entity {self.entity}"
                           + (f"; {hint}" if hint else "")) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._outcomes)

    def __len__(self) -> int:
        return len(self._outcomes)

    @property
    def events(self) -> tuple[tuple[Any, ...], ...]:
        """The trace; recorded now if the decision was made with ``trace=False``."""
        events = self._events
        if events is None:  # the same facts (as read) and decisions, traced
            values, members = self._read
            wanted = self._engine.select(self.entity, list(self._outcomes))
            recorded = self._engine._decide_read(values, members, self.as_of, self.entity, wanted, True).events
        elif type(events) is list:  # as `Engine.decide` recorded it: made a tuple once, when first read
            recorded = tuple(events)
        else:
            return events  # type: ignore[return-value]  # a tuple: made above by an earlier read
        self._events = recorded
        return recorded

    @property
    def policy(self) -> ir.CompiledPolicy:
        return self._engine.policy

    def explain(self, lang: Lang = "zh", level: Level = "summary") -> str:
        """Plain sentences citing document and clause; ``fails`` and ``full`` show more."""
        from .explain import render

        return render(self, lang, level)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (schema: ``schemas/decision.schema.json``)."""
        from .explain import record

        return record(self)

    def __repr__(self) -> str:
        return f"Decision({self.entity} as of {self.as_of}: {self.status}, {list(self._outcomes.values())})"


class Engine:
    """A compiled policy package, ready to decide cases. Immutable and thread-safe to share."""

    def __init__(self, policy: ir.CompiledPolicy, diagnostics: list[Diagnostic] | None = None,
                 path: str | None = None):
        self.policy = policy
        #: warnings found while compiling (for example rules without a legal reference)
        self.diagnostics = list(diagnostics or [])
        self.path = path
        self._backends: dict[bool, Backend] = {}
        self._by_entity: dict[str, list[ir.DecisionNode]] = {}
        nodes: tuple[ir.DecisionNode | ir.DerivedNode, ...] = (*policy.decisions, *policy.derived)
        self._tables: dict[str, ir.Table] = {
            n.id if isinstance(n, ir.DecisionNode) else n.name: n.table for n in nodes if n.table is not None
        }
        for decision in policy.decisions:
            self._by_entity.setdefault(decision.entity, []).append(decision)
        #: decision id -> its whole-number outputs, which must fit 64 bits as facts do
        self._integer_outputs: dict[str, tuple[str, ...]] = {
            d.id: tuple(o.short for o in d.outputs if o.type == "integer")
            for d in policy.decisions if any(o.type == "integer" for o in d.outputs)}
        #: day -> the package version in force (a pure function of the immutable policy)
        self._versions: dict[dt.date, ir.Version | None] = {}
        #: entity -> `intake.read_facts` for this policy's inputs and that entity
        self._readers: dict[str, Any] = {}
        #: (table owner, fired row indices) -> the fired row ids
        self._fired_ids: dict[tuple[str, tuple[int, ...]], tuple[str, ...]] = {}

    def _version_at(self, day: dt.date) -> ir.Version | None:
        """``policy.version_at(day)``, kept per day."""
        try:
            return self._versions[day]
        except KeyError:
            version = self.policy.version_at(day)
            if len(self._versions) >= 1024:
                self._versions.clear()
            self._versions[day] = version
            return version

    def _fired_rows(self, owner: str, rows: tuple[int, ...]) -> tuple[str, ...]:
        key = (owner, rows)
        ids = self._fired_ids.get(key)
        if ids is None:
            table_rows = self._tables[owner].rows
            ids = tuple(table_rows[i].id for i in rows)
            if len(self._fired_ids) >= 4096:
                self._fired_ids.clear()
            self._fired_ids[key] = ids
        return ids

    def __repr__(self) -> str:
        return f"Engine({self.policy.id}, {len(self.policy.decisions)} decisions, {self.policy.content_hash[:19]})"

    def _backend(self, trace: bool) -> Backend:
        backend = self._backends.get(trace)
        if backend is None:
            backend = self._backends[trace] = Backend(self.policy, trace)
        return backend

    def select(self, entity: str, decisions: list[str] | None = None) -> list[ir.DecisionNode]:
        """The decisions of ``entity`` (all, or those named, in that order); FactsError PE403 otherwise."""
        wanted = self._by_entity.get(entity, [])
        if decisions is None:
            return list(wanted)
        known = {d.id: d for d in wanted}
        missing = [d for d in decisions if d not in known]
        if missing:
            from .diagnostics import did_you_mean

            raise FactsError([make("PE403", f"no decision `{d}` for entity {entity}", path="decisions",
                                   hint=did_you_mean(d, known)) for d in missing])
        return [known[d] for d in decisions]

    def decision_ids(self, entity: str | None = None) -> list[str]:
        return [d.id for d in self.policy.decisions if entity is None or d.entity == entity]

    def decide(self, facts: Any, as_of: dt.date | str, entity: str = "household",
               decisions: list[str] | None = None, trace: bool = True) -> Decision:
        """Decide every decision of ``entity`` (or the ``decisions`` named) for one case.

        ``as_of`` is required: the date whose rules and parameter values apply. ``trace=False``
        skips recording the explanation events (they are recorded on demand later).
        """
        day = as_date(as_of)
        if entity not in ENTITIES:
            from .diagnostics import did_you_mean

            raise FactsError([make("PE403", f"unknown entity `{entity}`", path="entity",
                                   hint=did_you_mean(entity, ENTITIES) or f"one of {', '.join(ENTITIES)}")])
        wanted = self._by_entity.get(entity, ()) if decisions is None else self.select(entity, decisions)
        reader = self._readers.get(entity)
        if reader is None:
            reader = self._readers[entity] = facts_reader(self.policy.inputs, entity)
        values, members = reader(facts)
        return self._decide_read(values, members, day, entity, wanted, trace)

    def _decide_read(self, values: dict[str, Any], members: list[dict[str, Any]] | None, day: dt.date, entity: str,
                     wanted: Sequence[ir.DecisionNode], trace: bool) -> Decision:
        """``decide`` on facts already read (``intake.read_facts``), for the decisions ``wanted``."""
        backend = self._backends.get(trace)
        runners = (backend if backend is not None else self._backend(trace)).runners
        events: list[tuple[Any, ...]] | None = [] if trace else None
        case = Case(values, members, day, events)
        case_outcomes, case_fired = case.outcomes, case.fired
        version = self._versions.get(day, _UNSEEN)  # one lookup: another thread may clear the dict
        if version is _UNSEEN:
            version = self._version_at(day)
        if version is None:  # before (or after) every version of the package
            windows = ", ".join(f"{v.version}: {v.start}..{v.end or ''}" for v in self.policy.versions)
            reason = f"package `{self.policy.id}` has no version in force on {day.isoformat()} ({windows})"
            for node in wanted:
                case_outcomes[node.id] = ("not_in_force", {}, reason, node.cites)
                if events is not None:
                    events.append(("decision", node.id, "not_in_force", reason))
        outcomes: dict[str, Outcome] = {}
        decision_status = "decided"
        for node in wanted:
            node_id = node.id
            if node_id not in case_outcomes:
                try:
                    runners[node_id](case)
                except NotInForce as stop:  # pragma: no cover - runners catch their own
                    case_outcomes[node_id] = ("not_in_force", {}, stop.reason, stop.cites)
                except InvalidOperation:  # a result beyond 34 digits: name the facts that caused it
                    raise FactsError(too_many_digits(self.policy.inputs, values, members) or [make(
                        "PE401", "a computation with these facts needs more than 34 digits", path="")]) from None
            # final now: a runner returns at once for a decision that has an outcome
            status, outputs, detail, cites = case_outcomes[node_id]
            whole = self._integer_outputs.get(node_id)
            if whole is not None and status == "decided":
                for short in whole:
                    value = outputs.get(short)
                    if type(value) is int and not -INTEGER_LIMIT <= value <= INTEGER_LIMIT:
                        raise FactsError([make("PE401", f"with these facts {node_id}.{short} is a whole number "
                                                        f"beyond ±{INTEGER_LIMIT:,}, which no output holds",
                                               path="")])
            # `outputs` is this case's own dict (made by the runner, or a fresh `{}`): no copy
            rows = case_fired.get(node_id)
            fired = self._fired_rows(node_id, rows) if rows is not None else ()
            if status == "decided":  # the runner gives no cites then: the decision's own
                outcomes[node_id] = Outcome(node_id, status, outputs, (), None, node.label, node.cites, fired)
                continue
            if status == "needs_information":
                decision_status = status
                missing: tuple[str, ...] = tuple(detail)
            else:
                missing = ()
            outcomes[node_id] = Outcome(node_id, status, outputs, missing,
                                        detail if status == "not_in_force" else None, node.label,
                                        tuple(cites) or node.cites, fired)
        # the events list is this case's own: `Decision.events` makes it a tuple when first read
        return Decision(self, (values, members), day, entity, outcomes, events, version, decision_status)

    def decide_batch(self, population: Any, as_of: dt.date | str, decisions: list[str] | None = None,
                     entity: str = "household") -> Any:
        """Decide a whole population at once (a polars DataFrame in the layout of
        docs/population.md, or a list of facts); equal, row by row, to ``decide``.

        Returns a polars DataFrame: ``<id>.status``, ``<id>.<output>``, ``<id>.fired_rows``.
        """
        from .vector import decide_batch

        return decide_batch(self, population, as_of, decisions=decisions, entity=entity)

    def explain_row(self, population: Any, row: int, as_of: dt.date | str,
                    decisions: list[str] | None = None) -> Decision:
        """The traced scalar ``Decision`` of one screened row, to explain it
        (``.explain("zh", "full")``): equal to the row ``decide_batch`` or ``screen`` wrote.

        ``population`` is a population file (JSON Lines, Parquet, CSV) and ``row`` its 1-based
        row number (the ``row`` column of the screen output), or a list of facts and ``row`` the
        1-based position in it.
        """
        if isinstance(population, (str, os.PathLike)):
            from .population import replay

            decision: Decision = replay(self, population, row, as_of, decisions=decisions)
            return decision
        facts = population if isinstance(population, Sequence) else list(population)
        if not 1 <= row <= len(facts):
            raise IndexError(f"the population has no row {row} (rows are numbered from 1)")
        return self.decide(facts[row - 1], as_of, decisions=decisions)

    def catalogue(self, as_of: dt.date | str | None = None) -> dict[str, Any]:
        """Decisions, inputs and parameters (with the value in force ``as_of``) as plain data."""
        from .explain import catalogue

        return catalogue(self.policy, as_date(as_of) if as_of is not None else None)


def load(path: str | os.PathLike[str]) -> Engine:
    """Load, validate and compile the policy package at ``path`` (layering resolved).

    Raises ``PolicyError`` carrying every diagnostic when the package has errors.
    """
    policy, diagnostics = compile_or_raise(path)
    return Engine(policy, diagnostics, os.fspath(path))


def json_value(value: Any) -> Any:
    """Exact JSON form of a value: money as a decimal string, dates ISO, lists as lists."""
    if isinstance(value, Unknown):
        return {"unknown": sorted(value.missing)}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)

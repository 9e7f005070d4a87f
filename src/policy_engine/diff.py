"""Diff two policies: what changed in the rules (structure), in force, and for real households.

A side is a package folder, ``folder@<git-rev>`` (the package as it was at that revision, bases
included), or the same folder at another date. ``diff_policies`` returns a plain-data result that
``render_text`` prints and the CLI dumps as JSON:

- ``structure``: items added, removed or changed by name — parameters (dated values by their
  start date), inputs, derived values, decisions (outputs; table rows by stable row id, with their
  cites), sources and versions;
- ``in_force``: when both sides have a date, the parameter values, package version, decision
  windows and table rows in force that day, where they differ;
- ``households``: the test households of both sides' suites (the union, by name) and an optional
  households file, decided on both sides; every household whose decision statuses or outputs
  differ, with old and new values, exact money differences and both records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import ir
from .compile import compile_package
from .diagnostics import PolicyEngineError, PolicyError
from .engine import Engine, json_value
from .evaluate import Unknown


class DiffUsageError(Exception):
    """A side or a households file cannot be read (exit code 3 in the CLI)."""


# --- sides ---------------------------------------------------------------------------------


@dataclass
class Side:
    spec: str  # what the user wrote
    path: Path  # the package folder (inside a temporary tree for a git revision)
    policy: ir.CompiledPolicy
    engine: Engine
    as_of: dt.date | None
    rev: str | None = None

    def describe(self) -> dict[str, Any]:
        version = self.policy.version_at(self.as_of) if self.as_of else None
        return {"spec": self.spec, "policy": self.policy.id, "rev": self.rev,
                "as_of": self.as_of.isoformat() if self.as_of else None,
                "version": version.version if version else None, "content_hash": self.policy.content_hash}


def _git(args: list[str], cwd: Path) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:
        raise DiffUsageError(f"cannot run git: {exc}") from exc
    if done.returncode != 0:
        raise DiffUsageError(f"git {' '.join(args)}: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


def materialise(path: str, rev: str, into: Path) -> Path:
    """Extract the whole repository at ``rev`` into ``into``; return the same relative package path."""
    target = (Path.cwd() / path).resolve()
    probe = target
    while not probe.is_dir():  # the folder may not exist in the working tree any more
        probe = probe.parent
    top = Path(_git(["rev-parse", "--show-toplevel"], probe).decode().strip()).resolve()
    try:
        relative = target.relative_to(top)
    except ValueError as exc:
        raise DiffUsageError(f"{path} is not inside the git repository {top}") from exc
    archive = _git(["archive", "--format=tar", rev], top)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:  # pragma: no cover - Python without extraction filters
            tar.extractall(into)
    folder = into / relative
    if not (folder / "package.yaml").is_file():
        raise DiffUsageError(f"{path} has no package.yaml at revision {rev}")
    return folder


def split_spec(spec: str) -> tuple[str, str | None]:
    """``folder`` or ``folder@rev`` (a folder whose own name has an @ is taken as a folder)."""
    if os.path.isdir(spec) or "@" not in spec:
        return spec, None
    path, rev = spec.rsplit("@", 1)
    if not rev:
        raise DiffUsageError(f"`{spec}`: name a git revision after @")
    return path or ".", rev


def open_side(spec: str, as_of: dt.date | None, stack: contextlib.ExitStack) -> Side:
    """Compile one side; raises DiffUsageError (missing folder, git) or PolicyError (invalid)."""
    path, rev = split_spec(spec)
    if rev is not None:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="policy-engine-diff-")))
        folder = materialise(path, rev, tmp)
    else:
        folder = Path(path)
        if not folder.is_dir():
            raise DiffUsageError(f"{spec}: no such package folder")
    policy, diagnostics = compile_package(folder)
    if policy is None:
        raise PolicyError(diagnostics)
    return Side(spec, folder, policy, Engine(policy, diagnostics, str(folder)), as_of, rev)


# --- structure -----------------------------------------------------------------------------


def _entries(entries: tuple[tuple[tuple[str, ...], Any], ...]) -> Any:
    if len(entries) == 1 and entries[0][0] == ():
        return json_value(entries[0][1])
    return {"/".join(k): json_value(v) for k, v in entries}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _cites(cites: tuple[ir.Cite, ...]) -> list[str]:
    return [c.render() for c in cites]


def _change(section: str, name: str, change: str, details: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"section": section, "name": name, "change": change, "details": details or [], **extra}


def _fields_differ(a: Any, b: Any, skip: tuple[str, ...] = ()) -> list[str]:
    return [f.name for f in dataclasses.fields(a) if f.name not in skip and getattr(a, f.name) != getattr(b, f.name)]


def _parameter_changes(a: ir.ParameterNode, b: ir.ParameterNode) -> list[str]:
    details = [f"{f} changed" for f in _fields_differ(a, b, ("values", "defined_in", "cites"))]
    if a.cites != b.cites:
        details.append(f"cite: {'; '.join(_cites(a.cites)) or '-'} → {'; '.join(_cites(b.cites)) or '-'}")
    old = {v.start: v for v in a.values}
    new = {v.start: v for v in b.values}
    for start in sorted(old.keys() | new.keys()):
        va, vb = old.get(start), new.get(start)
        if va is None and vb is not None:
            details.append(f"+ value from {start}: {_show(_entries(vb.entries))} ({vb.provenance})")
        elif vb is None and va is not None:
            details.append(f"- value from {start}: {_show(_entries(va.entries))} ({va.provenance})")
        elif va != vb and va is not None and vb is not None:
            parts = []
            if va.entries != vb.entries:
                parts.append(f"{_show(_entries(va.entries))} → {_show(_entries(vb.entries))}")
            if va.provenance != vb.provenance:
                parts.append(f"provenance {va.provenance} → {vb.provenance}")
            if va.end != vb.end:
                parts.append(f"until {va.end or '-'} → {vb.end or '-'}")
            others = [f for f in _fields_differ(va, vb, ("entries", "provenance", "end", "start"))]
            parts += [f"{f} changed" for f in others]
            details.append(f"~ value from {start}: {'; '.join(parts)}")
    return details


def _row(row: ir.Row) -> dict[str, Any]:
    return {"id": row.id, "when": [t.text for t in row.tests], "cites": _cites(row.cites),
            "in_force": [row.in_force.start.isoformat(), row.in_force.end.isoformat() if row.in_force.end else None]
            if row.in_force else None}


def _table_changes(a: ir.Table | None, b: ir.Table | None) -> list[str]:
    if a == b:
        return []
    if a is None or b is None:
        return ["table added" if a is None else "table removed"]
    details = []
    if a.hit != b.hit:
        details.append(f"hit policy {a.hit} → {b.hit}")
    if a.columns != b.columns or a.inputs != b.inputs:
        details.append(f"inputs {', '.join(a.columns)} → {', '.join(b.columns)}")
    if a.outputs != b.outputs:
        details.append(f"outputs {', '.join(a.outputs)} → {', '.join(b.outputs)}")
    if a.defaults != b.defaults:
        details.append("default changed")
    rows_a = {r.id: r for r in a.rows}
    rows_b = {r.id: r for r in b.rows}
    for r in b.rows:
        if r.id not in rows_a:
            details.append(f"+ row {r.id}: when {', '.join(t.text for t in r.tests) or '-'} "
                           f"[{'; '.join(_cites(r.cites))}]")
    for r in a.rows:
        if r.id not in rows_b:
            details.append(f"- row {r.id} [{'; '.join(_cites(r.cites))}]")
        elif rows_b[r.id] != r:
            n = rows_b[r.id]
            what = []
            if r.tests != n.tests:
                what.append(f"when {', '.join(t.text for t in r.tests)} → {', '.join(t.text for t in n.tests)}")
            if r.outputs != n.outputs:
                what.append("then changed")
            if r.cites != n.cites:
                what.append(f"cite {'; '.join(_cites(r.cites))} → {'; '.join(_cites(n.cites))}")
            if r.in_force != n.in_force:
                what.append("in_force changed")
            details.append(f"~ row {r.id}: {'; '.join(what) or 'changed'} [{'; '.join(_cites(n.cites))}]")
    order_a = [r for r in a.rows if r.id in rows_b]
    order_b = [r for r in b.rows if r.id in rows_a]
    if [r.id for r in order_a] != [r.id for r in order_b]:
        details.append("rows reordered")
    return details


def _decision_changes(a: ir.DecisionNode, b: ir.DecisionNode) -> list[str]:
    details = [f"{f} changed" for f in _fields_differ(a, b, ("outputs", "table", "cites", "depends_on", "defined_in"))]
    if a.cites != b.cites:
        details.append(f"cite: {'; '.join(_cites(a.cites))} → {'; '.join(_cites(b.cites))}")
    outs_a = {o.short: o for o in a.outputs}
    outs_b = {o.short: o for o in b.outputs}
    for name in outs_b.keys() - outs_a.keys():
        details.append(f"+ output {name}")
    for name in outs_a.keys() - outs_b.keys():
        details.append(f"- output {name}")
    for name in sorted(outs_a.keys() & outs_b.keys()):
        if outs_a[name] != outs_b[name]:
            details.append(f"~ output {name}: {', '.join(_fields_differ(outs_a[name], outs_b[name]))} changed")
    return details + _table_changes(a.table, b.table)


def structure(a: ir.CompiledPolicy, b: ir.CompiledPolicy) -> list[dict[str, Any]]:
    """Items added, removed or changed between two compiled policies (names in sorted order)."""
    out: list[dict[str, Any]] = []

    def compare(section: str, old: dict[str, Any], new: dict[str, Any], details: Any) -> None:
        for name in sorted(old.keys() | new.keys()):
            x, y = old.get(name), new.get(name)
            if x is None:
                out.append(_change(section, name, "added"))
            elif y is None:
                out.append(_change(section, name, "removed"))
            elif x != y:
                out.append(_change(section, name, "changed", details(x, y)))

    compare("parameters", {p.name: p for p in a.parameters}, {p.name: p for p in b.parameters}, _parameter_changes)
    compare("inputs", {i.name: i for i in a.inputs}, {i.name: i for i in b.inputs},
            lambda x, y: [f"{f} changed" for f in _fields_differ(x, y)])
    compare("derived", {d.name: d for d in a.derived}, {d.name: d for d in b.derived},
            lambda x, y: [f"{f} changed" for f in _fields_differ(x, y, ("table", "depends_on"))]
            + _table_changes(x.table, y.table))
    compare("decisions", {d.id: d for d in a.decisions}, {d.id: d for d in b.decisions}, _decision_changes)
    compare("sources", {s.id: s for s in a.sources}, {s.id: s for s in b.sources},
            lambda x, y: [f"{f} changed" for f in _fields_differ(x, y)])
    compare("versions", {v.version: v for v in a.versions}, {v.version: v for v in b.versions},
            lambda x, y: [f"{f} changed" for f in _fields_differ(x, y)])
    if a.rounding != b.rounding:
        rounding = f"{a.rounding.unit} {a.rounding.mode} → {b.rounding.unit} {b.rounding.mode}"
        out.append(_change("rounding", "rounding", "changed", [rounding]))
    if a.chain != b.chain:
        out.append(_change("chain", "chain", "changed", [f"{' → '.join(a.chain)} ⇒ {' → '.join(b.chain)}"]))
    return out


def _value_at(p: ir.ParameterNode, day: dt.date) -> ir.DatedValue | None:
    chosen = None
    for v in p.values:
        if v.start <= day and (v.end is None or day <= v.end):
            chosen = v
    return chosen


def in_force(a: ir.CompiledPolicy, day_a: dt.date, b: ir.CompiledPolicy, day_b: dt.date) -> list[dict[str, Any]]:
    """What is in force on each side's date, where it differs."""
    out: list[dict[str, Any]] = []
    va, vb = a.version_at(day_a), b.version_at(day_b)
    if (va.version if va else None) != (vb.version if vb else None):
        out.append(_change("versions", "version", "changed",
                           [f"{va.version if va else 'none'} → {vb.version if vb else 'none'}"],
                           old=va.version if va else None, new=vb.version if vb else None))
    params_a = {p.name: p for p in a.parameters}
    params_b = {p.name: p for p in b.parameters}
    for name in sorted(params_a.keys() & params_b.keys()):
        x, y = _value_at(params_a[name], day_a), _value_at(params_b[name], day_b)
        old = _entries(x.entries) if x else None
        new = _entries(y.entries) if y else None
        if old != new or (x and y and x.provenance != y.provenance):
            if old == new:
                detail = f"{_show(old)} (value unchanged)"
            else:
                detail = f"{_show(old) if x else 'no value'} → {_show(new) if y else 'no value'}"
            if x and y and x.provenance != y.provenance:
                detail += f"; provenance {x.provenance} → {y.provenance}"
            if y is not None:
                detail += f" [in force from {y.start}]"
            out.append(_change("parameters", name, "changed", [detail], old=old, new=new))
    decisions_a = {d.id: d for d in a.decisions}
    decisions_b = {d.id: d for d in b.decisions}
    for name in sorted(decisions_a.keys() & decisions_b.keys()):
        da, db = decisions_a[name], decisions_b[name]
        fa = da.in_force is None or da.in_force.contains(day_a)
        fb = db.in_force is None or db.in_force.contains(day_b)
        if fa != fb:
            out.append(_change("decisions", name, "changed",
                               [f"{'in force' if fa else 'not in force'} → {'in force' if fb else 'not in force'}"]))
        ta, tb = da.table, db.table
        if ta is not None and tb is not None:
            rows_a = {r.id for r in ta.rows if r.in_force is None or r.in_force.contains(day_a)}
            rows_b = {r.id for r in tb.rows if r.in_force is None or r.in_force.contains(day_b)}
            details = [f"+ row {r} in force" for r in sorted(rows_b - rows_a)]
            details += [f"- row {r} no longer in force" for r in sorted(rows_a - rows_b)]
            if details and day_a != day_b:
                out.append(_change("decisions", name, "changed", details))
    return out


# --- behaviour -----------------------------------------------------------------------------


@dataclass
class Household:
    name: str
    source: str  # the suite file or households file it came from
    facts: Any
    entity: str = "household"
    as_of: dt.date | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def suite_households(package: Path) -> list[Household]:
    """The (non-todo) test cases of the suites that test ``package``."""
    from pydantic import ValidationError

    from .lint import suites_for
    from .load import load_file
    from .testing import TestSuite

    out = []
    for suite in suites_for(package):
        loaded, problems = load_file(suite)
        if loaded is None or problems:
            continue
        data = loaded.data
        try:
            parsed = TestSuite.model_validate({"tests": data} if isinstance(data, list) else data)
        except ValidationError:
            continue
        for case in parsed.tests:
            if case.todo:
                continue
            facts = case.facts
            if case.facts_file:
                doc, problems = load_file(suite.parent / case.facts_file)
                if doc is None or problems:
                    continue
                facts = doc.data
            shown = os.path.relpath(suite, package)
            out.append(Household(case.name, shown, facts or {}, case.entity, case.as_of, dict(case.parameters)))
    return out


def read_households(path: str) -> list[Household]:
    """A YAML/JSON list of {id, facts[, as_of, entity]}, a mapping id -> facts, or one facts document."""
    from .load import load_file

    if not os.path.isfile(path):
        raise DiffUsageError(f"{path}: no such households file")
    loaded, problems = load_file(path)
    if loaded is None or problems:
        raise DiffUsageError("; ".join(p.gnu() for p in problems) or f"{path}: empty households file")
    data = loaded.data
    out = []
    if isinstance(data, dict) and not all(isinstance(v, dict) for v in data.values()):
        # one facts document (docs/facts.md), such as examples/anhui_household.yaml
        name = str(data.get("household_id") or data.get("id") or Path(path).stem)
        out.append(Household(name, path, data))
    elif isinstance(data, dict):
        for key, facts in data.items():
            out.append(Household(str(key), path, facts))
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or "facts" not in entry:
                raise DiffUsageError(f"{path}: entry {i} needs `id` and `facts`")
            as_of = entry.get("as_of")
            if isinstance(as_of, str):
                try:
                    as_of = dt.date.fromisoformat(as_of)
                except ValueError as exc:
                    raise DiffUsageError(f"{path}: entry {i}: invalid as_of {as_of!r}") from exc
            out.append(Household(str(entry.get("id", i)), path, entry["facts"], str(entry.get("entity", "household")),
                                 as_of))
    else:
        raise DiffUsageError(f"{path}: expected a list of {{id, facts}} or a mapping id -> facts")
    return out


def _output_types(policy: ir.CompiledPolicy) -> dict[str, str]:
    return {o.name: o.type for d in policy.decisions for o in d.outputs}


def _decide(side: Side, household: Household, day: dt.date) -> tuple[Any, str | None]:
    from .testing import with_parameters

    try:
        engine = with_parameters(side.engine, household.parameters)
        return engine.decide(household.facts, day, household.entity), None
    except PolicyEngineError as exc:
        return None, "; ".join(d.gnu() for d in exc.diagnostics)


def compare_household(a: Side, b: Side, household: Household, day_a: dt.date, day_b: dt.date,
                      lang: str) -> dict[str, Any] | None:
    """The changes for one household, or None when every status and output is the same."""
    decision_a, error_a = _decide(a, household, day_a)
    decision_b, error_b = _decide(b, household, day_b)
    changes: list[dict[str, Any]] = []
    if error_a or error_b:
        if error_a != error_b:
            changes.append({"decision": "*", "field": "error", "old": error_a, "new": error_b})
    else:
        types = {**_output_types(a.policy), **_output_types(b.policy)}
        for decision_id in list(decision_a) + [d for d in decision_b if d not in decision_a]:
            oa = decision_a._outcomes.get(decision_id)
            ob = decision_b._outcomes.get(decision_id)
            sa, sb = (oa.status if oa else None), (ob.status if ob else None)
            if sa != sb:
                changes.append({"decision": decision_id, "field": "status", "old": sa, "new": sb})
            outputs_a = oa.outputs if oa else {}
            outputs_b = ob.outputs if ob else {}
            for name in list(outputs_a) + [n for n in outputs_b if n not in outputs_a]:
                x, y = outputs_a.get(name), outputs_b.get(name)
                if isinstance(x, Unknown) and isinstance(y, Unknown):
                    continue  # unknown on both sides: the status says so (what is missing may differ)
                jx, jy = json_value(x), json_value(y)
                if jx == jy:
                    continue
                change: dict[str, Any] = {"decision": decision_id, "field": name, "old": jx, "new": jy}
                if (types.get(f"{decision_id}.{name}") == "money" and isinstance(x, Decimal)
                        and isinstance(y, Decimal)):
                    delta = y - x
                    change["delta"] = ("+" if delta > 0 else "") + str(delta)
                changes.append(change)
    if not changes:
        return None
    return {
        "name": household.name, "source": household.source, "entity": household.entity,
        "as_of_a": day_a.isoformat(), "as_of_b": day_b.isoformat(), "changes": changes,
        "a": decision_a.to_dict() if decision_a is not None else {"error": error_a},
        "b": decision_b.to_dict() if decision_b is not None else {"error": error_b},
        "explanation_a": decision_a.explain(lang=lang, level="summary") if decision_a is not None else error_a,
        "explanation_b": decision_b.explain(lang=lang, level="summary") if decision_b is not None else error_b,
    }


def diff_policies(a: Side, b: Side, households_file: str | None = None, lang: str = "zh",
                  use_suites: bool = True) -> dict[str, Any]:
    """The whole diff as plain data (see the module docstring)."""
    result: dict[str, Any] = {"a": a.describe(), "b": b.describe(), "structure": structure(a.policy, b.policy)}
    result["in_force"] = in_force(a.policy, a.as_of, b.policy, b.as_of) if a.as_of and b.as_of else []
    households: list[Household] = []
    seen: set[str] = set()
    for side in (a, b) if use_suites else ():
        for h in suite_households(side.path):
            if h.name not in seen:
                seen.add(h.name)
                households.append(h)
    extra = read_households(households_file) if households_file else []
    for h in extra:
        if h.as_of is None and a.as_of is None and b.as_of is None:
            raise DiffUsageError(f"{households_file}: household `{h.name}` has no as_of; give --as-of")
    changed = []
    for h in households + extra:
        day_a = a.as_of or h.as_of or b.as_of
        day_b = b.as_of or h.as_of or a.as_of
        assert day_a is not None and day_b is not None
        found = compare_household(a, b, h, day_a, day_b, lang)
        if found is not None:
            changed.append(found)
    result["households"] = {"replayed": len(households) + len(extra), "changed": changed}
    result["changed"] = bool(result["structure"] or result["in_force"] or changed)
    return result


# --- text ----------------------------------------------------------------------------------

_MARK = {"added": "+", "removed": "-", "changed": "~"}


def _side_line(d: dict[str, Any]) -> str:
    bits = [d["policy"]]
    if d["version"]:
        bits.append(f"version {d['version']}")
    if d["as_of"]:
        bits.append(f"as of {d['as_of']}")
    return f"{d['spec']} ({', '.join(bits)})"


def render_text(result: dict[str, Any]) -> str:
    lines = [f"A: {_side_line(result['a'])}", f"B: {_side_line(result['b'])}", ""]
    lines.append("structure:" if result["structure"] else "structure: no change")
    for c in result["structure"]:
        lines.append(f"  {_MARK[c['change']]} {c['section']} {c['name']}")
        lines += [f"      {d}" for d in c["details"]]
    if result["a"]["as_of"] and result["b"]["as_of"]:
        lines.append("in force:" if result["in_force"] else "in force: no change")
        for c in result["in_force"]:
            lines.append(f"  ~ {c['section']} {c['name']}: {c['details'][0]}" if len(c["details"]) == 1
                         else f"  ~ {c['section']} {c['name']}")
            if len(c["details"]) > 1:
                lines += [f"      {d}" for d in c["details"]]
    h = result["households"]
    lines.append(f"households: {h['replayed']} replayed, {len(h['changed'])} changed")
    for found in h["changed"]:
        lines.append("")
        lines.append(f"  {found['entity']} `{found['name']}` ({found['source']}; A as of {found['as_of_a']}, "
                     f"B as of {found['as_of_b']})")
        for c in found["changes"]:
            delta = f" ({c['delta']})" if "delta" in c else ""
            lines.append(f"    {c['decision']}.{c['field']}: {_show_value(c['old'])} → {_show_value(c['new'])}{delta}")
        for label, key in (("A", "explanation_a"), ("B", "explanation_b")):
            lines.append(f"    --- {label} ---")
            lines += [f"    {line}".rstrip() for line in str(found[key] or "").splitlines()]
    return "\n".join(lines)


def _show_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_json(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)


__all__ = ["DiffUsageError", "Side", "diff_policies", "in_force", "open_side", "read_households", "render_json",
           "render_text", "structure"]

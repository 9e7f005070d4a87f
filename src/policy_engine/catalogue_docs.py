"""Generate the policy catalogue pages ``docs/policies/<province>.md`` from the packages.

One page per top-level package folder under ``policies/``: the package itself and every overlay
package found below it (``policies/anhui`` and ``policies/anhui/bengbu/huaiyuan``). Each package
section lists what that package *defines or replaces*; what it inherits unchanged is listed by
name with the package that defines it.

The pages are built from the compiled policy (``engine.policy``, :mod:`policy_engine.ir`) plus the
manifest's free-text ``description`` and source ``note`` fields. The output is deterministic (no
generation date), so a test can compare the checked-in pages with a fresh rendering.

Regenerate with::

    python -m policy_engine.catalogue_docs            # policies/ -> docs/policies/
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from . import ir
from .engine import Engine, load

__all__ = ["main", "package_dirs", "render_index", "render_package_markdown", "write_all"]

REGENERATE = "python -m policy_engine.catalogue_docs"
WARN = "⚠"

try:  # display names of units (元/月, yuan per month); fall back to the raw unit id
    from .document import UNITS as _UNITS
except ImportError:  # pragma: no cover - defensive: the unit table moved
    _UNITS = {}


# --- small formatting helpers ------------------------------------------------------------


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    s = "" if text is None else str(text)
    s = " ".join(s.split())
    return s.replace("|", "\\|") or " "


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return out


def _label(label: ir.Label | None) -> str:
    if label is None:
        return ""
    if label.zh and label.en and label.zh != label.en:
        return f"{label.zh} / {label.en}"
    return label.zh or label.en


def _unit(unit: str | None) -> str:
    if not unit:
        return ""
    zh, en = _UNITS.get(unit, ("", ""))
    shown = " / ".join(x for x in dict.fromkeys((zh, en)) if x)
    return f"{unit} ({shown})" if shown and shown != unit else unit


def _date(day: dt.date | None) -> str:
    return day.isoformat() if day else ""


def _window(window: ir.Window | None) -> str:
    if window is None:
        return ""
    return f"{_date(window.start)} → {_date(window.end) if window.end else 'open'}"


def _value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _entries(dated: ir.DatedValue) -> str:
    if len(dated.entries) == 1 and dated.entries[0][0] == ():
        return _value(dated.entries[0][1])
    return "; ".join(f"{'/'.join(key)}: {_value(val)}" for key, val in dated.entries)


def _cite(c: ir.Cite) -> str:
    return c.render()


def _cites(cites: Iterable[ir.Cite]) -> str:
    return "; ".join(_cite(c) for c in cites)


_OPS = {"+": "+", "-": "-", "*": "×", "/": "÷", "//": "÷(int)", "%": "mod", "**": "^",
        "<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "=", "!=": "≠"}


def _expr(e: ir.Expr | None, top: bool = True) -> str:
    """An IR expression as compact text, names as written in the package."""
    if e is None:
        return ""
    if isinstance(e, ir.Const):
        return f'"{e.value}"' if isinstance(e.value, str) else _value(e.value)
    if isinstance(e, ir.Ref):
        return e.name
    if isinstance(e, ir.AsOf):
        return "as_of"
    if isinstance(e, ir.Unary):
        return ("not " if e.op == "not" else "-" if e.op == "neg" else "+") + _expr(e.operand, False)
    if isinstance(e, (ir.Binary, ir.Compare)):
        text = f"{_expr(e.left, False)} {_OPS.get(e.op, e.op)} {_expr(e.right, False)}"
        return text if top else f"({text})"
    if isinstance(e, ir.BoolOp):
        text = f" {e.op} ".join(_expr(o, False) for o in e.operands)
        return text if top else f"({text})"
    if isinstance(e, ir.IfElse):
        text = f"{_expr(e.then, False)} if {_expr(e.condition, False)} else {_expr(e.otherwise, False)}"
        return text if top else f"({text})"
    if isinstance(e, ir.In):
        return f"{_expr(e.item, False)} {'not in' if e.negate else 'in'} [{', '.join(_expr(o) for o in e.options)}]"
    if isinstance(e, ir.Call):
        return f"{e.function}({', '.join(_expr(a) for a in e.args)})"
    if isinstance(e, ir.Aggregate):
        inner = _expr(e.body) if e.body is not None else "members"
        where = f", where {_expr(e.where)}" if e.where is not None else ""
        return f"{e.function}({inner}{where})"
    return "?"  # pragma: no cover - a new IR node


_CN = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def _cn_number(text: str) -> int | None:
    """The leading clause number: §十一 -> 11, 第二十三条 -> 23, 第12项 -> 12, 三(一) -> 3, else None."""
    m = re.match(r"[§\s]*第?\s*(\d+)", text)
    if m:
        return int(m.group(1))
    m_cn = re.match(r"[§\s]*第?([零一二两三四五六七八九十百]+)(?:$|[条项款章节、.．(（\s])", text)
    if m_cn is None:
        return None
    s = m_cn.group(1)
    total, current = 0, 0
    for ch in s:
        if ch == "百":
            total += (current or 1) * 100
            current = 0
        elif ch == "十":
            total += (current or 1) * 10
            current = 0
        else:
            current = _CN[ch]
    return total + current


def _clause_key(clause: str) -> tuple[int, str]:
    n = _cn_number(clause)
    return (n if n is not None else 10**6, clause)


# --- packages ----------------------------------------------------------------------------


def package_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """The package at ``path`` and every package (folder with package.yaml) below it, sorted."""
    root = Path(path)
    found = [p.parent for p in root.rglob("package.yaml")
             if not ({"tests", "testdata"} & set(p.relative_to(root).parts[:-1]))]
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), p.as_posix()))


def _manifest(path: Path) -> dict[str, Any]:
    """The package manifest's free text (description, source notes); {} when unreadable."""
    try:
        data = yaml.safe_load((path / "package.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):  # pragma: no cover - the package compiled, so this is unusual
        return {}
    return data if isinstance(data, dict) else {}


def _repo_root(path: Path) -> Path:
    """The folder holding ``policies/`` (paths on the pages are shown relative to it)."""
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name == "policies":
            return folder.parent
    return resolved.parent


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


class _Pkg:
    """One compiled package and what it defines itself (vs. its base)."""

    def __init__(self, path: Path, engine: Engine, base: _Pkg | None):
        self.path = path
        self.engine = engine
        self.policy = engine.policy
        self.base = base
        self.manifest = _manifest(path)
        p = self.policy
        base_policy = base.policy if base else None
        self.own_sources = self._own(p.sources, base_policy.sources if base_policy else (), lambda s: s.id)
        self.own_inputs = self._own_located(p.inputs, "inputs", lambda i: i.name,
                                            base_policy.inputs if base_policy else ())
        self.own_derived = self._own_located(p.derived, "derived", lambda d: d.name,
                                             base_policy.derived if base_policy else ())
        self.own_parameters = sorted((x for x in p.parameters if x.defined_in == p.id), key=lambda x: x.name)
        self.own_decisions = sorted((x for x in p.decisions if x.defined_in == p.id), key=lambda x: x.id)
        self.own_not_modelled = [n for n in p.not_modelled if n.package == p.id]
        base_names: set[str] = set()
        if base_policy is not None:
            base_names = ({i.name for i in base_policy.inputs} | {x.name for x in base_policy.parameters}
                          | {d.name for d in base_policy.derived} | {d.id for d in base_policy.decisions})
        self.base_names = base_names

    @staticmethod
    def _own(items: Iterable[Any], base_items: Iterable[Any], key: Any) -> list[Any]:
        base = {key(b): b for b in base_items}
        return sorted((x for x in items if key(x) not in base or base[key(x)] != x), key=key)

    def _own_located(self, items: Iterable[Any], kind: str, key: Any, base_items: Iterable[Any]) -> list[Any]:
        """Items written in this package's folder (by their recorded location), else changed vs. the base."""
        here = self.path.resolve()
        base = {key(b): b for b in base_items}
        out = []
        for x in items:
            file, _, _ = self.policy.location(f"{kind}.{key(x)}")
            if file is not None:
                mine = Path(file).resolve().parent == here
            else:
                mine = key(x) not in base or base[key(x)] != x
            if mine:
                out.append(x)
        return sorted(out, key=key)


_ENGINES: dict[Path, Engine] = {}


def _engine(path: Path) -> Engine:
    key = path.resolve()
    if key not in _ENGINES:
        _ENGINES[key] = load(path)
    return _ENGINES[key]


def _base_dir(path: Path, manifest: dict[str, Any]) -> Path | None:
    extends = manifest.get("extends")
    if not isinstance(extends, str) or not extends:
        return None
    base = (path / extends).resolve()
    return base if (base / "package.yaml").is_file() else None


def _load_chain(root: Path) -> list[_Pkg]:
    """The packages at and below ``root``, each compared with the package it extends."""
    _ENGINES.clear()  # packages may have changed on disk since the last rendering
    pkgs: list[_Pkg] = []
    made: dict[Path, _Pkg] = {}

    def make(d: Path) -> _Pkg:
        key = d.resolve()
        if key not in made:
            base_dir = _base_dir(d, _manifest(d))
            base = make(base_dir) if base_dir is not None else None
            made[key] = _Pkg(d, _engine(d), base)
        return made[key]

    for d in package_dirs(root):
        pkgs.append(make(d))
    return pkgs


# --- rendering ---------------------------------------------------------------------------


def _anchor(pkg_id: str) -> str:
    return f"package-{pkg_id}"


def _page_for(pkg_id: str, page_packages: dict[str, str]) -> str:
    """A link to where package ``pkg_id`` is documented (this page or another)."""
    target = page_packages.get(pkg_id)
    if target is None:
        return f"`{pkg_id}`"
    return f"[`{pkg_id}`]({target}#{_anchor(pkg_id)})"


def _render_source_table(sources: list[ir.SourceDoc], notes: dict[str, str]) -> list[str]:
    rows = []
    for s in sorted(sources, key=lambda s: s.id):
        rows.append([f"`{s.id}`", s.number, s.title, s.issuer or "", _date(s.date),
                     _window(s.in_force) or "not stated", s.url or "", notes.get(s.id, "")])
    return _table(["id", "number 文号", "title 标题", "issuer 发文机关", "date 日期", "in force 有效期",
                   "url", "note 备注"], rows)


def _when(columns: tuple[str, ...], tests: tuple[ir.Test, ...]) -> str:
    parts = []
    for col, test in zip(columns, tests):
        if test.kind == "any":
            continue
        text = test.text.strip()
        if test.kind == "one_of":
            parts.append(f"{col} ∈ {{{text}}}")
        elif test.kind == "not" or text[:1] in "<>=![(]":
            parts.append(f"{col} {text}")
        else:
            parts.append(f"{col} = {text}")
    return "; ".join(parts) or "(always)"


def _rows_table(t: ir.Table) -> list[str]:
    rows = []
    for r in t.rows:
        then = "; ".join(f"{name} = {_expr(v)}" for name, v in zip(t.outputs, r.outputs))
        rows.append([f"`{r.id}`", _when(t.columns, r.tests), then, _cites(r.cites), _window(r.in_force)])
    out = _table(["row id", "when", "then", "cite", "in force"], rows)
    defaults = [f"{name} = {_expr(v)}" for name, v in zip(t.outputs, t.defaults) if v is not None]
    if defaults:
        out += ["", "Default when no row matches: " + "; ".join(defaults)]
    return out


def _render_decision(d: ir.DecisionNode) -> list[str]:
    out = [f"#### `{d.id}` — {_label(d.label)}", ""]
    facts = [f"- entity: `{d.entity}`",
             f"- cites: {_cites(d.cites) or '(none)'}",
             f"- in force: {_window(d.in_force) or 'whenever the package is in force'}"]
    if d.table is not None:
        facts.append(f"- decision table: hit policy `{d.table.hit}`, {len(d.table.rows)} rows")
    out += facts + [""]
    table_outputs = set(d.table.outputs) if d.table is not None else set()
    rows = []
    for o in d.outputs:
        if o.expr is not None:
            how = f"= {_expr(o.expr)}"
        else:
            how = "table column" if o.short in table_outputs else ""
        typ = o.type + (f" {{{', '.join(o.values)}}}" if o.values else "")
        rows.append([f"`{o.short}`", typ, _unit(o.unit), o.label.zh, o.label.en, how])
    out += ["Outputs:", ""] + _table(["output", "type", "unit", "label (zh)", "label (en)", "how"], rows) + [""]
    if d.table is not None:
        out += [f"Rules (in table order; hit policy `{d.table.hit}`):", ""] + _rows_table(d.table) + [""]
    return out


def _render_parameter(p: ir.ParameterNode) -> list[str]:
    illustrative = p.provenance == "illustrative" or any(v.provenance == "illustrative" for v in p.values)
    mark = f"{WARN} " if illustrative else ""
    out = [f"#### {mark}`{p.name}` — {_label(p.label)}", ""]
    facts = [f"- type: {p.type}" + (f", unit: {_unit(p.unit)}" if p.unit else ""),
             f"- cites: {_cites(p.cites) or '(none)'}"]
    if p.by:
        facts.append(f"- by: {', '.join(f'`{b}`' for b in p.by)}")
    if illustrative:
        facts.append(f"- {WARN} **illustrative**: at least one value is a placeholder, not a published figure; "
                     "a locality must replace it")
    out += facts + [""]
    rows = []
    for i, v in enumerate(p.values):
        later = [w.start for w in p.values[i + 1:] if w.start > v.start]
        if v.end:
            to = _date(v.end)
        elif later:
            to = f"(until {_date(min(later))})"
        else:
            to = "open"
        prov = f"{WARN} illustrative" if v.provenance == "illustrative" else v.provenance
        basis = []
        if v.source:
            basis.append(f"source: {v.source}")
        if v.formula:
            basis.append(f"formula: {v.formula}")
        if v.note:
            basis.append(f"note: {v.note}")
        note_en = getattr(v, "note_en", None)  # newer IRs carry an English note too
        if note_en and note_en != v.note:
            basis.append(f"note (en): {note_en}")
        rows.append([_date(v.start), to, _entries(v), prov,
                     "; ".join(basis)])
    out += _table(["from", "to", "value", "provenance", "source / formula / note"], rows) + [""]
    return out


def _clause_users(pkg: _Pkg) -> dict[tuple[str, str], list[str]]:
    """(source id, clause) -> the items of this package that cite it."""
    users: dict[tuple[str, str], list[str]] = {}

    def add(c: ir.Cite, who: str) -> None:
        users.setdefault((c.source, c.clause), [])
        if who not in users[(c.source, c.clause)]:
            users[(c.source, c.clause)].append(who)

    for d in pkg.own_decisions:
        for c in d.cites:
            add(c, f"decision `{d.id}`")
        if d.table is not None:
            for r in d.table.rows:
                for c in r.cites:
                    add(c, f"row `{d.id}/{r.id}`")
    for x in pkg.own_derived:
        for c in x.cites:
            add(c, f"derived `{x.name}`")
        if x.table is not None:
            for r in x.table.rows:
                for c in r.cites:
                    add(c, f"row `{x.name}/{r.id}`")
    for p in pkg.own_parameters:
        for c in p.cites:
            add(c, f"parameter `{p.name}`")
    return users


def _render_clauses(pkg: _Pkg, sources: dict[str, ir.SourceDoc]) -> list[str]:
    users = _clause_users(pkg)
    texts: dict[tuple[str, str], list[str]] = {}
    every: list[ir.Cite] = []
    for node in (*pkg.own_decisions, *pkg.own_derived):
        every += node.cites
        table = node.table
        every += [c for r in (table.rows if table is not None else ()) for c in r.cites]
    for x in pkg.own_parameters:
        every += x.cites
    for c in every:
        if c.text and c.text not in texts.setdefault((c.source, c.clause), []):
            texts[(c.source, c.clause)].append(c.text)
    if not users:
        return ["(no clause cited by this package's own items)", ""]
    out: list[str] = []
    for source_id in sorted({s for s, _ in users}):
        doc = sources.get(source_id)
        head = f"{doc.number} — {doc.title}" if doc else source_id
        out += [f"**{_cell(head)}** (`{source_id}`)", ""]
        clauses = sorted((c for s, c in users if s == source_id), key=_clause_key)
        rows = [[clause, "; ".join(sorted(users[(source_id, clause)])),
                 " / ".join(f"“{t}”" for t in sorted(texts.get((source_id, clause), [])))]
                for clause in clauses]
        out += _table(["clause 条款", "used by", "clause text (when quoted)"], rows) + [""]
    return out


def _render_package(pkg: _Pkg, page_packages: dict[str, str], repo_root: Path) -> list[str]:
    p = pkg.policy
    sources = {s.id: s for s in p.sources}
    out = [f'<a id="{_anchor(p.id)}"></a>', "",
           f"## Package `{p.id}` — {p.jurisdiction.zh} / {p.jurisdiction.en}", ""]
    out += [f"- title: {_label(p.title)}",
            f"- jurisdiction: {p.jurisdiction.zh} / {p.jurisdiction.en}, GB/T 2260 code `{p.jurisdiction_code}`",
            f"- folder: `{_rel(pkg.path, repo_root)}`",
            "- extends: " + (" → ".join(_page_for(c, page_packages) for c in p.chain)
                             if len(p.chain) > 1 else "(none: a base package)"),
            f"- money rounding: to {format(p.rounding.unit, 'f')} yuan, `{p.rounding.mode}`"]
    description = pkg.manifest.get("description")
    if isinstance(description, str) and description.strip():
        out += ["", "> " + " ".join(description.split())]
    out.append("")

    out += ["### Versions", ""]
    rows = []
    for i, v in enumerate(p.versions):
        nxt = p.versions[i + 1].start if i + 1 < len(p.versions) else None
        end = _date(v.end) if v.end else (f"(until {_date(nxt)})" if nxt else "open")
        rows.append([v.version, _date(v.start), end, v.note or ""])
    out += _table(["version", "effective from", "effective to", "note"], rows) + [""]

    notes: dict[str, str] = {}
    raw_sources = pkg.manifest.get("sources")
    if isinstance(raw_sources, dict):
        for sid, body in raw_sources.items():
            if isinstance(body, dict) and body.get("note"):
                notes[str(sid)] = str(body["note"])
    out += ["### Source documents", ""]
    if pkg.own_sources:
        out += ["Declared in this package:", ""] + _render_source_table(pkg.own_sources, notes) + [""]
    inherited = sorted(s.id for s in p.sources if s not in pkg.own_sources)
    if inherited:
        out += ["Inherited (citable here): " + ", ".join(f"`{s}`" for s in inherited), ""]

    # decisions
    out += ["### Decisions", ""]
    if pkg.own_decisions:
        replaced = [d.id for d in pkg.own_decisions if d.id in pkg.base_names]
        if replaced:
            out += ["Replaces the base's " + ", ".join(f"`{r}`" for r in replaced) + ".", ""]
        for d in pkg.own_decisions:
            out += _render_decision(d)
    else:
        out += ["(none defined or replaced here)", ""]
    inherited_dec = sorted((d for d in p.decisions if d.defined_in != p.id), key=lambda d: d.id)
    if inherited_dec:
        out += ["Inherited unchanged:", ""]
        out += _table(["decision", "label", "entity", "defined in"],
                      [[f"`{d.id}`", _label(d.label), d.entity, _page_for(d.defined_in, page_packages)]
                       for d in inherited_dec]) + [""]

    # inputs
    out += ["### Inputs (facts read)", ""]
    if pkg.own_inputs:
        readers: dict[str, set[str]] = {}
        for node in p.derived:
            for ref in node.depends_on:
                readers.setdefault(ref.split(".", 1)[0], set()).add(f"`{node.name}`")
        for dec in p.decisions:
            for ref in dec.depends_on:
                readers.setdefault(ref.split(".", 1)[0], set()).add(f"`{dec.id}`")
        for par in p.parameters:
            for dim in par.by:
                readers.setdefault(dim, set()).add(f"`{par.name}`")
        rows = []
        for i in pkg.own_inputs:
            typ = i.type + (f" {{{', '.join(i.values)}}}" if i.values else "")
            read_by = ", ".join(sorted(readers.get(i.name, ()))) or "(not read by any rule of this package)"
            rows.append([f"`{i.name}`", i.entity, ".".join(i.path), typ, _unit(i.unit), i.label.zh, i.label.en,
                         read_by, "yes" if i.name in pkg.base_names else ""])
        out += _table(["name", "entity", "path", "type", "unit", "label (zh)", "label (en)", "read by (directly)",
                       "replaces base"], rows) + [""]
    else:
        out += ["(none defined or replaced here)", ""]
    n_inherited = len(p.inputs) - len(pkg.own_inputs)
    if n_inherited:
        out += [f"{n_inherited} further inputs are inherited unchanged from "
                + ", ".join(_page_for(c, page_packages) for c in p.chain[:-1]) + ".", ""]

    # derived
    out += ["### Derived values", ""]
    if pkg.own_derived:
        rows = []
        for x in pkg.own_derived:
            if x.table is not None:
                how = f"table (hit `{x.table.hit}`, {len(x.table.rows)} rows)"
            else:
                how = f"= {_expr(x.expr)}"
            rows.append([f"`{x.name}`", x.entity, x.type, _unit(x.unit), _label(x.label), how, _cites(x.cites),
                         "yes" if x.name in pkg.base_names else ""])
        out += _table(["name", "entity", "type", "unit", "label", "how", "cites", "replaces base"], rows) + [""]
        for x in pkg.own_derived:
            if x.table is not None:
                out += [f"Rules of `{x.name}` (in table order; hit policy `{x.table.hit}`):", ""]
                out += _rows_table(x.table) + [""]
    else:
        out += ["(none defined or replaced here)", ""]

    # parameters
    out += ["### Parameters", ""]
    if pkg.own_parameters:
        illustrative = [x.name for x in pkg.own_parameters
                        if x.provenance == "illustrative" or any(v.provenance == "illustrative" for v in x.values)]
        summary = [f"{len(pkg.own_parameters)} parameters defined or replaced here"]
        if illustrative:
            summary.append(f"{WARN} {len(illustrative)} with illustrative (placeholder) values: "
                           + ", ".join(f"`{n}`" for n in illustrative))
        out += ["; ".join(summary) + ".", ""]
        rows = []
        for x in pkg.own_parameters:
            ill = x.provenance == "illustrative" or any(v.provenance == "illustrative" for v in x.values)
            provs = sorted({v.provenance for v in x.values})
            rows.append([f"{WARN + ' ' if ill else ''}`{x.name}`", _label(x.label), _unit(x.unit),
                         ", ".join(provs), "yes" if x.name in pkg.base_names else ""])
        out += _table(["parameter", "label", "unit", "provenance of values", "replaces base"], rows) + [""]
        for x in pkg.own_parameters:
            out += _render_parameter(x)
    else:
        out += ["(none defined or replaced here)", ""]
    inherited_par = sorted((x for x in p.parameters if x.defined_in != p.id), key=lambda x: x.name)
    if inherited_par:
        out += ["Inherited unchanged (values as in the defining package):", ""]
        rows = []
        for x in inherited_par:
            ill = x.provenance == "illustrative" or any(v.provenance == "illustrative" for v in x.values)
            rows.append([f"{WARN + ' ' if ill else ''}`{x.name}`", _label(x.label),
                         ", ".join(sorted({v.provenance for v in x.values})), _page_for(x.defined_in, page_packages)])
        out += _table(["parameter", "label", "provenance of values", "defined in"], rows) + [""]

    out += ["### Clauses encoded", "",
            ("Every clause cited by a decision, table row, derived value or parameter defined in this "
             "package, by source document."), ""]
    out += _render_clauses(pkg, sources)

    out += ["### Not modelled", ""]
    if pkg.own_not_modelled:
        rows = [[_cites(n.cites), n.reason] for n in pkg.own_not_modelled]
        out += _table(["cite", "reason"], rows) + [""]
    else:
        out += ["(nothing declared)", ""]
    return out


def render_package_markdown(path: str | os.PathLike[str], *, page_packages: dict[str, str] | None = None) -> str:
    """The catalogue page for the package at ``path`` and every overlay package below it.

    ``page_packages`` maps package ids to the page (file name) that documents them, for links to
    inherited items; by default the ids of the packages on this page link to ``#anchors`` here and
    ``national`` links to ``national.md``.
    """
    root = Path(path)
    pkgs = _load_chain(root)
    if not pkgs:
        raise FileNotFoundError(f"no package.yaml at or below {root}")
    links = {"national": "national.md"}
    links.update(page_packages or {})
    for pkg in pkgs:  # packages on this page link to their section here
        links[pkg.policy.id] = ""
    repo_root = _repo_root(root)
    top = pkgs[0].policy
    out = [f"# {top.title.zh} — {top.title.en}", "",
           f"<!-- Generated from `{_rel(root, repo_root)}` by `{REGENERATE}`; do not edit by hand. -->", "",
           (f"This page documents the package `{_rel(root, repo_root)}` and every overlay package below it. "
            "Each package section lists only what that package **defines or replaces**; items it inherits "
            f"unchanged are listed by name with the package that defines them. {WARN} marks an "
            "**illustrative** parameter value: a placeholder, not a published figure."), ""]
    rows = []
    for pkg in pkgs:
        p = pkg.policy
        rows.append([f"[`{p.id}`](#{_anchor(p.id)})", f"{p.jurisdiction.zh} / {p.jurisdiction.en}",
                     f"`{p.jurisdiction_code}`", f"`{_rel(pkg.path, repo_root)}`", " → ".join(p.chain),
                     ", ".join(v.version for v in p.versions)])
    out += _table(["package", "jurisdiction", "GB/T 2260", "folder", "extends chain", "versions"], rows) + [""]
    for pkg in pkgs:
        out += _render_package(pkg, links, repo_root)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def page_names(root: str | os.PathLike[str] = "policies") -> dict[str, Path]:
    """Page file name -> the top-level package folder it documents."""
    base = Path(root)
    return {f"{d.name}.md": d for d in sorted(base.iterdir()) if (d / "package.yaml").is_file()}


def render_index(root: str | os.PathLike[str] = "policies") -> str:
    out = ["# Policy catalogue", "",
           f"<!-- Generated by `{REGENERATE}`; do not edit by hand. -->", "",
           ("One page per top-level package under `policies/`, covering the package and its overlays. "
            f"Regenerate with `{REGENERATE}`; `tests/test_policy_docs.py` fails when a page is stale."), ""]
    rows = []
    repo_root = _repo_root(Path(root))
    for name, folder in page_names(root).items():
        for pkg_dir in package_dirs(folder):
            m = _manifest(pkg_dir)
            raw_title, raw_jur = m.get("title"), m.get("jurisdiction")
            title: dict[str, Any] = raw_title if isinstance(raw_title, dict) else {}
            jur: dict[str, Any] = raw_jur if isinstance(raw_jur, dict) else {}
            pid = str(m.get("id", pkg_dir.name))
            rows.append([f"[`{pid}`]({name}#{_anchor(pid)})", f"{title.get('zh', '')} / {title.get('en', '')}",
                         f"`{jur.get('code', '')}`", f"`{_rel(pkg_dir, repo_root)}`"])
    out += _table(["package", "title", "GB/T 2260", "folder"], rows)
    return "\n".join(out) + "\n"


def render_all(root: str | os.PathLike[str] = "policies") -> dict[str, str]:
    """Every page (file name -> Markdown), the index README.md included."""
    pages = {"README.md": render_index(root)}
    for name, folder in page_names(root).items():
        pages[name] = render_package_markdown(folder)
    return pages


def write_all(root: str | os.PathLike[str] = "policies", out: str | os.PathLike[str] = "docs/policies") -> list[Path]:
    """Regenerate every page under ``out``; returns the files written (stale pages are removed)."""
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    pages = render_all(root)
    written = []
    for name, text in pages.items():
        file = target / name
        file.write_text(text, encoding="utf-8")
        written.append(file)
    for old in target.glob("*.md"):
        if old.name not in pages:
            old.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m policy_engine.catalogue_docs",
                                     description="Regenerate docs/policies/*.md from policies/.")
    parser.add_argument("--root", default="policies", help="the policies folder (default: policies)")
    parser.add_argument("--out", default="docs/policies", help="the output folder (default: docs/policies)")
    args = parser.parse_args(argv)
    for file in write_all(args.root, args.out):
        print(file)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

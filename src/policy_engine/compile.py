"""Stage 3, compile: a layered policy package to one immutable ``CompiledPolicy``.

Resolves ``extends`` (base first, an overlay replaces exactly the items it names), parses every
expression and table cell, type-checks names, orders the dependency graph (a cycle is PE222)
and hashes the result. All problems are collected; nothing stops at the first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, fields, is_dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from . import document as doc
from . import ir
from .diagnostics import Diagnostic, PolicyError, did_you_mean, make, sort_unique
from .evaluate import EXACT
from .expressions import ExpressionError, Resolved, compile_expression, refs_of, table_refs
from .load import LoadedDocument, Path, load_file
from .tables import is_identifier, literal_cell, parse_cell

ENGINE_VERSION = "0.1.0"
_NUMERIC = ir.NUMERIC


@dataclass
class _Item:
    """One named item of a module, with where it was written."""

    kind: str  # inputs | parameters | derived | decisions
    name: str
    model: Any
    document: LoadedDocument
    path: Path
    package: str


@dataclass
class _Package:
    directory: FsPath
    manifest: doc.Manifest
    manifest_doc: LoadedDocument
    modules: list[tuple[LoadedDocument, doc.Module]]


class _Diagnostics:
    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def at(self, document: LoadedDocument, path: Path, code: str, message: str, **kw: Any) -> None:
        self.items.append(document.source_map.diagnostic(code, message, path, **kw))

    def expression(self, document: LoadedDocument, path: Path, error: ExpressionError, text: str) -> None:
        message = error.message
        if error.column is not None and "`" not in message:
            message += f" (column {error.column} of `{text.strip()}`)"
        self.at(document, path, error.code, message, hint=error.hint)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]


def _display(path: FsPath, root: FsPath) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # pragma: no cover - different drives on Windows
        return str(path)


def read_package_chain(directory: str | os.PathLike[str], diags: _Diagnostics,
                       root: FsPath | None = None) -> list[_Package]:
    """Read a package and the packages it extends, base first."""
    chain: list[_Package] = []
    seen: list[FsPath] = []
    current: FsPath | None = FsPath(directory).resolve()
    root = root or FsPath.cwd()
    referrer: tuple[LoadedDocument, Path] | None = None
    while current is not None:
        if current in seen:
            names = " -> ".join(str(_display(p, root)) for p in seen + [current])
            assert referrer is not None
            diags.at(referrer[0], referrer[1], "PE211", f"packages extend each other in a cycle: {names}")
            break
        seen.append(current)
        manifest_path = current / "package.yaml"
        if not manifest_path.is_file():
            if referrer is None:
                diags.items.append(make("PE100", f"no package.yaml in {_display(current, root)}",
                                        file=_display(current, root),
                                        hint="a policy package is a folder with a package.yaml"))
            else:
                diags.at(referrer[0], referrer[1], "PE210",
                         f"base package `{_display(current, root)}` has no package.yaml")
            break
        loaded, problems = load_file(manifest_path, _display(manifest_path, root))
        diags.items.extend(problems)
        if loaded is None:
            break
        manifest, problems = doc.validate(loaded, doc.Manifest)
        diags.items.extend(problems)
        if manifest is None:
            break
        assert isinstance(manifest, doc.Manifest)
        modules = []
        for module_path in sorted(current.glob("*.yaml")) + sorted(current.glob("*.yml")):
            if module_path.name in ("package.yaml", "package.yml") or module_path.stem.endswith("_test"):
                continue
            module_doc, problems = load_file(module_path, _display(module_path, root))
            diags.items.extend(problems)
            if module_doc is None:
                continue
            module, problems = doc.validate(module_doc, doc.Module)
            diags.items.extend(problems)
            if module is not None:
                assert isinstance(module, doc.Module)
                modules.append((module_doc, module))
        chain.append(_Package(current, manifest, loaded, modules))
        if manifest.extends:
            referrer = (loaded, ("extends",))
            current = (current / manifest.extends).resolve()
        else:
            current = None
    chain.reverse()
    return chain


class _Compiler:
    def __init__(self, chain: list[_Package], diags: _Diagnostics):
        self.chain = chain
        self.diags = diags
        self.leaf = chain[-1]
        self.sources: dict[str, ir.SourceDoc] = {}
        self.items: dict[str, dict[str, _Item]] = {k: {} for k in ("inputs", "parameters", "derived", "decisions")}
        self.kinds: dict[str, str] = {}  # name -> kind, for every name
        self.resolved: dict[str, Resolved] = {}  # entity-scope names (inputs, params, derived, outputs)
        self.entity_of: dict[str, str | None] = {}  # name -> entity (None for parameters)
        self.decision_ids: set[str] = set()
        declared = next((p.manifest.rounding for p in reversed(chain) if p.manifest.rounding), None)
        self.rounding = ir.Rounding(declared.unit, declared.mode) if declared else ir.Rounding(Decimal("0.01"), "half_up")

    # -- layering ---------------------------------------------------------------------------

    def merge(self) -> None:
        for package in self.chain:
            for source_id, source in package.manifest.sources.items():
                window = ir.Window(source.in_force.from_, source.in_force.to) if source.in_force else None
                self.sources[source_id] = ir.SourceDoc(
                    source_id, source.number, source.title, source.issuer, source.date, window, source.url
                )
            defined_here: dict[tuple[str, str], _Item] = {}
            for module_doc, module in package.modules:
                for kind in self.items:
                    for name, model in getattr(module, kind).items():
                        item = _Item(kind, name, model, module_doc, (kind, name), package.manifest.id)
                        other = defined_here.get((kind, name))
                        if other is not None:
                            self.diags.at(module_doc, (kind, name), "PE213",
                                          f"`{name}` is defined twice in package `{package.manifest.id}`",
                                          hint=f"also in {other.document.file}")
                            continue
                        defined_here[(kind, name)] = item
                        self.items[kind][name] = item  # an overlay replaces what it names
        seen: dict[str, _Item] = {}
        for kind, items in self.items.items():
            for name, item in items.items():
                if name in seen:
                    self.diags.at(item.document, item.path, "PE213",
                                  f"`{name}` is both {seen[name].kind[:-1] if seen[name].kind != 'derived' else 'a derived value'} and {kind[:-1] if kind != 'derived' else 'a derived value'}",
                                  hint=f"the other is in {seen[name].document.file}")
                    continue
                seen[name] = item
                self.kinds[name] = kind

    # -- citations ----------------------------------------------------------------------------

    def cites(self, raw: Any, item_doc: LoadedDocument, path: Path) -> tuple[ir.Cite, ...]:
        if raw is None:
            return ()
        entries = raw if isinstance(raw, list) else [raw]
        out: list[ir.Cite] = []
        for i, entry in enumerate(entries):
            where = path + (i,) if isinstance(raw, list) else path
            if isinstance(entry, str):
                source_id, _, clause = entry.strip().partition(" ")
                text = None
            else:
                source_id, clause, text = entry.source, entry.clause, entry.text
            source = self.sources.get(source_id)
            if source is None:
                self.diags.at(item_doc, where, "PE212", f"unknown source `{source_id}` in citation",
                              hint=did_you_mean(source_id, self.sources) or "declare it under `sources:` in package.yaml")
                continue
            out.append(ir.Cite(source_id, source.number, clause.strip(), text))
        return tuple(out)

    def need_cite(self, cites: tuple[ir.Cite, ...], raw: Any, item: _Item, path: Path, what: str) -> None:
        if raw is None:
            self.diags.at(item.document, path, "PE250", f"{what} has no legal reference (`cite`)",
                          hint="every rule cites the clause it implements")

    # -- names --------------------------------------------------------------------------------

    def declare_names(self) -> None:
        for name, item in self.items["inputs"].items():
            m: doc.Input = item.model
            self._declare(name, m.type, m.entity, tuple(m.values or ()))
        for name, item in self.items["parameters"].items():
            p: doc.Parameter = item.model
            self._declare(name, p.type, None, tuple(p.enum_values or ()))
        for name, item in self.items["derived"].items():
            d: doc.Derived = item.model
            self._declare(name, d.type, d.entity, tuple(d.values or ()))
        for name, item in self.items["decisions"].items():
            self.decision_ids.add(name)
            dec: doc.Decision = item.model
            for short, output in self.decision_outputs(dec).items():
                self._declare(f"{name}.{short}", output.type, dec.entity, tuple(output.values or ()))

    def _declare(self, name: str, kind: str, entity: str | None, values: tuple[str, ...]) -> None:
        scope = "member" if entity == "member" else "entity"
        self.resolved[name] = Resolved(name, kind, scope, values)
        self.entity_of[name] = entity

    @staticmethod
    def decision_outputs(dec: doc.Decision) -> dict[str, doc.Output]:
        if dec.outputs is not None:
            return dict(dec.outputs)
        if dec.value is not None or dec.type is not None:
            return {
                "value": doc.Output(
                    type=dec.type or "decimal", unit=dec.unit, values=dec.values, label=dec.label,
                    expr=dec.value,
                )
            }
        return {}

    def resolver(self, entity: str, siblings: dict[str, Resolved] | None = None) -> Any:
        siblings = siblings or {}

        def resolve(name: str, member: bool) -> Resolved | None:
            if name in siblings:
                return siblings[name]
            found = self.resolved.get(name)
            if found is None:
                return None
            owner = self.entity_of.get(name)
            if owner is None:  # parameters belong to every entity
                return found
            if owner == "member":
                return found if (member or entity == "member") else None
            if entity == "member":
                return found if owner == "household" else None
            return found if owner == entity else None

        def known(member: bool) -> set[str]:
            names = set(siblings) | {"as_of"}
            for name in self.resolved:
                if resolve(name, member) is not None:
                    names.add(name)
            return names

        return resolve, known

    def expression(self, text: Any, item: _Item, path: Path, entity: str,
                   siblings: dict[str, Resolved] | None = None) -> ir.Expr | None:
        if not isinstance(text, str):
            self.diags.at(item.document, path, "PE203", "an expression must be a string")
            return None
        resolve, known = self.resolver(entity, siblings)
        try:
            expr, _ = compile_expression(text, resolve, known, self.decision_ids, member=entity == "member")
        except ExpressionError as error:
            self.diags.expression(item.document, path, error, text)
            return None
        return expr

    # -- items --------------------------------------------------------------------------------

    def label(self, label: doc.Label | None, name: str) -> ir.Label:
        return ir.Label(label.zh, label.en) if label else ir.Label(name, name.replace("_", " "))

    @staticmethod
    def value_labels(values: Any) -> tuple[tuple[str, ir.Label], ...]:
        if isinstance(values, dict):
            return tuple((k, ir.Label(v.zh, v.en)) for k, v in values.items())
        return ()

    def input_node(self, item: _Item) -> ir.InputNode:
        m: doc.Input = item.model
        if m.type == "enum" and not m.values:
            self.diags.at(item.document, item.path + ("values",), "PE202", f"enum input `{item.name}` needs `values`")
        return ir.InputNode(
            item.name, m.type, m.entity, tuple((m.path or item.name).split(".")), self.label(m.label, item.name),
            m.unit, tuple(m.values or ()), self.value_labels(m.values),
        )

    def parameter_node(self, item: _Item) -> ir.ParameterNode | None:
        p: doc.Parameter = item.model
        cites = self.cites(p.cite, item.document, item.path + ("cite",))
        self.need_cite(cites, p.cite, item, item.path, f"parameter `{item.name}`")
        if p.provenance == "sourced" and not p.source:
            self.diags.at(item.document, item.path, "PE202",
                          f"sourced parameter `{item.name}` needs `source` (where the figure is published)")
        for dim in p.by:
            target = self.resolved.get(dim)
            if target is None or self.kinds.get(dim) not in ("inputs", "derived"):
                self.diags.at(item.document, item.path + ("by",), "PE241",
                              f"dimension `{dim}` of `{item.name}` is not an input or derived value",
                              hint=did_you_mean(dim, [n for n, k in self.kinds.items() if k in ("inputs", "derived")]))
            elif target.type not in ("enum", "text", "boolean", "integer"):
                self.diags.at(item.document, item.path + ("by",), "PE241",
                              f"dimension `{dim}` is {target.type}; dimensions are enum, text, boolean or integer")
        raw = p.values
        entries: list[tuple[Any, Path]] = []
        if isinstance(raw, dict):
            for key, value in raw.items():
                try:
                    start = dt.date.fromisoformat(str(key))
                except ValueError:
                    self.diags.at(item.document, item.path + ("values", key), "PE240",
                                  f"`{key}` is not a date (YYYY-MM-DD)")
                    continue
                entries.append(({"from": start, "value": value}, item.path + ("values", key)))
        elif isinstance(raw, list):
            entries = [(e, item.path + ("values", i)) for i, e in enumerate(raw)]
        else:
            self.diags.at(item.document, item.path + ("values",), "PE240",
                          f"parameter `{item.name}` needs dated `values`",
                          hint="for example values: {2022-07-01: 739}")
            return None
        dated: list[ir.DatedValue] = []
        for entry, where in entries:
            if not isinstance(entry, dict):
                self.diags.at(item.document, where, "PE240", "a dated value is {from: date, value: ...}")
                continue
            try:
                value = doc.ParameterValue.model_validate(entry)
            except ValidationError as exc:
                self.diags.at(item.document, where, "PE240", f"invalid dated value: {str(exc).splitlines()[-1].strip()}")
                continue
            pairs = self.parameter_entries(value.value, p, item, where + (("value",) if isinstance(raw, list) else ()))
            if pairs is None:
                continue
            dated.append(ir.DatedValue(
                value.from_, value.to, pairs, value.provenance or p.provenance,
                value.source or p.source, value.formula or p.formula,
                _note(value.note or p.note, "zh"), _note(value.note or p.note, "en"),
            ))
        dated.sort(key=lambda v: v.start)
        self.check_coverage(item, p, dated)
        for a, b in itertools.pairwise(dated):
            if a.start == b.start:
                self.diags.at(item.document, item.path + ("values",), "PE240",
                              f"two values of `{item.name}` start on {a.start}")
        return ir.ParameterNode(
            item.name, p.type, self.label(p.label, item.name), p.unit, tuple(p.by), tuple(dated),
            p.provenance, cites, p.source, _note(p.note, "zh"), item.package, _note(p.note, "en"),
        )

    def check_coverage(self, item: _Item, p: doc.Parameter, dated: list[ir.DatedValue]) -> None:
        """PE303 (warning): a dated value that leaves out some values of an enum dimension."""
        import itertools

        domains = []
        for dim in p.by:
            target = self.resolved.get(dim)
            if target is None or not target.values:
                return
            domains.append(target.values)
        for value in dated:
            keys = {k for k, _ in value.entries}
            missing = [k for k in itertools.product(*domains) if k not in keys]
            if missing:
                shown = "; ".join(", ".join(f"{d} = {k}" for d, k in zip(p.by, key)) for key in missing[:4])
                self.diags.at(item.document, item.path + ("values",), "PE303",
                              f"the value of `{item.name}` from {value.start} has no entry for {shown}"
                              + (f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""),
                              hint="decisions that need it are not in force for those cases on those dates")

    def parameter_entries(self, value: Any, p: doc.Parameter, item: _Item, where: Path
                          ) -> tuple[tuple[tuple[str, ...], Any], ...] | None:
        out: list[tuple[tuple[str, ...], Any]] = []
        ok = True

        def walk(node: Any, key: tuple[str, ...], path: Path) -> None:
            nonlocal ok
            if len(key) == len(p.by):
                converted = self.convert(node, p.type, tuple(p.enum_values or ()))
                if p.type == "money" and isinstance(converted, Decimal):
                    # 739 -> 739.00 for display; a value with more places than the unit is never altered
                    places, unit_places = int(converted.as_tuple().exponent), int(self.rounding.unit.as_tuple().exponent)
                    if places > unit_places:
                        converted = converted.quantize(self.rounding.unit, context=EXACT)
                if converted is _BAD:
                    ok = False
                    self.diags.at(item.document, path, "PE240",
                                  f"`{node}` is not a valid {p.type} value for `{item.name}`")
                else:
                    out.append((key, converted))
                return
            if not isinstance(node, dict):
                ok = False
                self.diags.at(item.document, path, "PE240",
                              f"`{item.name}` varies by {', '.join(p.by)}: give a mapping keyed by {p.by[len(key)]}")
                return
            dim = p.by[len(key)]
            allowed = self.resolved.get(dim)
            for k, v in node.items():
                if allowed is not None and allowed.values and str(k) not in allowed.values:
                    ok = False
                    self.diags.at(item.document, path + (k,), "PE241",
                                  f"`{k}` is not a value of `{dim}`",
                                  hint=did_you_mean(str(k), allowed.values) or f"one of {', '.join(allowed.values)}")
                walk(v, key + (str(k),), path + (k,))

        walk(value, (), where)
        return tuple(out) if ok else None

    def convert(self, value: Any, kind: str, values: tuple[str, ...] = ()) -> Any:
        if kind in ("money", "decimal"):
            if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
                return _BAD
            try:
                number = Decimal(str(value))
            except (InvalidOperation, ValueError):
                return _BAD
            return number if number.is_finite() else _BAD
        if kind == "integer":
            if isinstance(value, bool):
                return _BAD
            if isinstance(value, int):
                return value
            if isinstance(value, Decimal) and value == value.to_integral_value():
                return int(value)
            return _BAD
        if kind == "boolean":
            return value if isinstance(value, bool) else _BAD
        if kind == "date":
            return value if isinstance(value, dt.date) else _BAD
        if kind == "enum":
            return value if isinstance(value, str) and (not values or value in values) else _BAD
        if kind == "text":
            return value if isinstance(value, str) else _BAD
        return value

    def derived_node(self, item: _Item) -> ir.DerivedNode | None:
        d: doc.Derived = item.model
        cites = self.cites(d.cite, item.document, item.path + ("cite",))
        expr = table = None
        if (d.expr is None) == (d.table is None):
            self.diags.at(item.document, item.path, "PE234",
                          f"derived value `{item.name}` needs exactly one of `expr` or `table`")
            return None
        entity = d.entity
        if d.expr is not None:
            expr = self.expression(d.expr, item, item.path + ("expr",), entity)
            if expr is not None:
                self.check_assignable(expr.type, d.type, item, item.path + ("expr",), item.name)
        else:
            assert d.table is not None
            out = Resolved(item.name, d.type, "entity", tuple(d.values or ()))
            table = self.table(d.table, item, item.path + ("table",), entity, {item.name: out}, {})
        deps = refs_of(expr) | (self.table_refs(table) if table else set())
        return ir.DerivedNode(item.name, d.type, entity, self.label(d.label, item.name), expr, table, cites,
                              d.unit, tuple(d.values or ()), tuple(sorted(deps)), self.value_labels(d.values))

    def decision_node(self, item: _Item) -> ir.DecisionNode | None:
        dec: doc.Decision = item.model
        cites = self.cites(dec.cite, item.document, item.path + ("cite",))
        self.need_cite(cites, dec.cite, item, item.path, f"decision `{item.name}`")
        if dec.outputs is not None and dec.value is not None:
            self.diags.at(item.document, item.path, "PE203", f"decision `{item.name}` has both `outputs` and `value`")
        outputs = self.decision_outputs(dec)
        if not outputs:
            self.diags.at(item.document, item.path, "PE234", f"decision `{item.name}` has no outputs",
                          hint="give `value:` (one output) or `outputs:`")
            return None
        window = None
        if dec.in_force is not None:
            window = ir.Window(dec.in_force.from_, dec.in_force.to)
        elif cites and self.sources[cites[0].source].in_force is not None:
            window = self.sources[cites[0].source].in_force
        out_resolved = {
            short: Resolved(f"{item.name}.{short}", o.type, "entity", tuple(o.values or ()))
            for short, o in outputs.items()
        }
        table = None
        table_outputs: set[str] = set()
        if dec.table is not None:
            table_outputs = set(dec.table.outputs)
            table = self.table(dec.table, item, item.path + ("table",), dec.entity, out_resolved, outputs)
        nodes: list[ir.OutputNode] = []
        available: dict[str, Resolved] = {k: v for k, v in out_resolved.items() if k in table_outputs}
        for short, output in outputs.items():
            where = item.path + (("outputs", short) if dec.outputs is not None else ("value",))
            expr = None
            if output.expr is not None:
                if short in table_outputs:
                    self.diags.at(item.document, where, "PE234",
                                  f"output `{short}` is given both by the table and by `expr`")
                expr = self.output_cell(output.expr, output.type, tuple(output.values or ()), item,
                                        where + (("expr",) if dec.outputs is not None else ()),
                                        dec.entity, available)
                if expr is not None:
                    self.check_assignable(expr.type, output.type, item, where, f"{item.name}.{short}")
            elif short not in table_outputs:
                self.diags.at(item.document, where, "PE234",
                              f"output `{short}` of `{item.name}` has neither `expr` nor a table column")
            available[short] = out_resolved[short]
            nodes.append(ir.OutputNode(f"{item.name}.{short}", short, output.type,
                                       self.label(output.label, short), expr, output.unit or dec.unit,
                                       tuple(output.values or ()), self.value_labels(output.values)))
        deps = set().union(*(refs_of(o.expr) for o in nodes)) | (self.table_refs(table) if table else set())
        deps = {d for d in deps if not d.startswith(f"{item.name}.")}
        return ir.DecisionNode(item.name, dec.entity, self.label(dec.label, item.name), cites, window,
                               tuple(nodes), table, tuple(sorted(deps)), item.package)

    def check_assignable(self, got: str, want: str, item: _Item, path: Path, name: str) -> None:
        if got in ("null", "any") or got == want:
            return
        if got in _NUMERIC and want in _NUMERIC:
            if want == "integer" and got != "integer":
                self.diags.at(item.document, path, "PE221", f"`{name}` is declared integer but its expression gives {got}",
                              hint="use floor(), ceil() or // to get a whole number")
            return
        if {got, want} <= {"text", "enum"}:
            return
        self.diags.at(item.document, path, "PE221", f"`{name}` is declared {want} but its expression gives {got}")

    # -- tables -------------------------------------------------------------------------------

    def output_cell(self, cell: Any, kind: str, values: tuple[str, ...], item: _Item, path: Path,
                    entity: str, siblings: dict[str, Resolved]) -> ir.Expr | None:
        if isinstance(cell, str):
            text = cell.strip()
            if kind == "enum" and text in values:
                if self.resolver(entity, siblings)[0](text, False) is not None:
                    self.diags.at(item.document, path, "PE230",
                                  f"`{text}` is both an enum value and a name", hint=f'quote the value: "\\"{text}\\""')
                return ir.Const(text, "enum")
            expr = self.expression(text, item, path, entity, siblings)
            if expr is not None and kind == "enum" and isinstance(expr, ir.Const) and isinstance(expr.value, str):
                if values and expr.value not in values:
                    self.diags.at(item.document, path, "PE221", f"`{expr.value}` is not one of {', '.join(values)}")
                return ir.Const(expr.value, "enum")
            return expr
        converted = self.convert(cell, kind, values) if cell is not None else None
        if converted is _BAD:
            self.diags.at(item.document, path, "PE221", f"`{cell}` is not a valid {kind} value")
            return None
        if converted is None:
            return ir.Const(None, "null")
        return ir.Const(converted, kind)

    def table(self, table: doc.Table, item: _Item, path: Path, entity: str,
              outputs: dict[str, Resolved], declared: dict[str, doc.Output]) -> ir.Table | None:
        columns: list[str] = []
        inputs: list[ir.Expr] = []
        column_info: list[Resolved | None] = []
        ok = True
        for i, column in enumerate(table.inputs):
            text = column if isinstance(column, str) else column.expr
            name = column if isinstance(column, str) else column.name
            expr = self.expression(text, item, path + ("inputs", i), entity)
            if expr is None:
                ok = False
                continue
            columns.append(name.strip())
            inputs.append(expr)
            info = None
            if isinstance(expr, ir.Ref):
                info = self.resolver(entity)[0](expr.name, expr.scope == "member")
            column_info.append(info or Resolved(name, expr.type))
        output_names = list(table.outputs) or ([next(iter(outputs))] if len(outputs) == 1 else [])
        if not output_names:
            self.diags.at(item.document, path, "PE231", "the table needs `outputs` (the output columns)")
            return None
        for name in output_names:
            if name not in outputs:
                self.diags.at(item.document, path + ("outputs",), "PE234", f"`{name}` is not an output of `{item.name}`",
                              hint=did_you_mean(name, outputs))
                ok = False
        if not ok:
            return None
        output_types = tuple(outputs[n].type for n in output_names)
        hit = table.hit
        if hit in ("C+", "C<", "C>", "C#") and len(output_names) != 1:
            self.diags.at(item.document, path + ("hit",), "PE233", f"hit policy {hit} aggregates exactly one output")
        if hit == "C+" and output_types[0] not in _NUMERIC:
            self.diags.at(item.document, path + ("hit",), "PE233", "hit policy C+ sums numbers")
        if hit in ("C", "R", "O") and any(t != "list" for t in output_types):
            self.diags.at(item.document, path + ("hit",), "PE233",
                          f"hit policy {hit} gives a list: declare the outputs `type: list`")
        if hit == "C#" and output_types[0] != "integer":
            self.diags.at(item.document, path + ("hit",), "PE233", "hit policy C# counts: declare the output `type: integer`")
        priorities: tuple[tuple[Any, ...], ...] = ()
        if hit in ("P", "O"):
            pri = []
            for name in output_names:
                values = outputs[name].values
                if not values:
                    self.diags.at(item.document, path + ("hit",), "PE233",
                                  f"hit policy {hit} needs the output values of `{name}` in priority order (`values:`)")
                pri.append(tuple(values))
            priorities = tuple(pri)
        cell_types = {n: (outputs[n].type if outputs[n].type != "list" else "any") for n in output_names}
        rows: list[ir.Row] = []
        seen_ids: dict[str, int] = {}
        for r, row in enumerate(table.rows):
            rpath = path + ("rows", r)
            if row.id in seen_ids:
                self.diags.at(item.document, rpath + ("id",), "PE232", f"row id `{row.id}` is used twice in this table",
                              hint=f"row ids are stable public names; the first is row {seen_ids[row.id] + 1}")
            seen_ids.setdefault(row.id, r)
            cites = self.cites(row.cite, item.document, rpath + ("cite",))
            if row.cite is None and table.cite is None:
                self.need_cite(cites, None, item, rpath, f"row `{row.id}`")
            if not cites and table.cite is not None:
                cites = self.cites(table.cite, item.document, path + ("cite",))
            cells = self.row_cells(row.when, columns, item, rpath + ("when",))
            tests: list[ir.Test] = []
            for c, cell in enumerate(cells):
                cpath = rpath + ("when",) + ((c,) if isinstance(row.when, list) else (columns[c],))
                test = self.cell(cell, column_info[c], item, cpath, entity, inputs[c])
                tests.append(test if test is not None else ir.Test("any", "-"))
            then_cells = self.row_outputs(row.then, output_names, item, rpath + ("then",))
            outs: list[ir.Expr] = []
            for o, cell in enumerate(then_cells):
                name = output_names[o]
                kind = cell_types[name]
                expr = self.output_cell(cell, kind if kind != "any" else "text", outputs[name].values, item,
                                        rpath + ("then",), entity, {}) if kind != "any" or isinstance(cell, str) else \
                    ir.Const(cell, _literal_type(cell))
                outs.append(expr if expr is not None else ir.Const(None, "null"))
            in_force = ir.Window(row.in_force.from_, row.in_force.to) if row.in_force else None
            rows.append(ir.Row(row.id, tuple(tests), tuple(outs), cites, in_force, row.note))
        defaults: list[ir.Expr | None] = [None] * len(output_names)
        if table.default is not None:
            cells = self.row_outputs(table.default, output_names, item, path + ("default",))
            for o, cell in enumerate(cells):
                name = output_names[o]
                defaults[o] = self.output_cell(cell, cell_types[name] if cell_types[name] != "any" else "text",
                                               outputs[name].values, item, path + ("default",), entity, {})
        return ir.Table(item.name, hit, tuple(columns), tuple(inputs), tuple(output_names), output_types,
                        tuple(rows), tuple(defaults), priorities)

    def row_cells(self, when: Any, columns: list[str], item: _Item, path: Path) -> list[Any]:
        if isinstance(when, list):
            if len(when) != len(columns):
                self.diags.at(item.document, path, "PE231",
                              f"the row has {len(when)} input cells; the table has {len(columns)} columns ({', '.join(columns)})")
                return ["-"] * len(columns)
            return list(when)
        cells: list[Any] = ["-"] * len(columns)
        for key, cell in when.items():
            if key not in columns:
                self.diags.at(item.document, path + (key,), "PE231", f"`{key}` is not an input column of this table",
                              hint=did_you_mean(key, columns) or f"columns: {', '.join(columns)}")
                continue
            cells[columns.index(key)] = cell
        return cells

    def row_outputs(self, then: Any, names: list[str], item: _Item, path: Path) -> list[Any]:
        if isinstance(then, dict):
            out: list[Any] = []
            for key in then:
                if key not in names:
                    self.diags.at(item.document, path + (key,), "PE231", f"`{key}` is not an output column of this table",
                                  hint=did_you_mean(key, names))
            for name in names:
                if name not in then:
                    self.diags.at(item.document, path, "PE231", f"the row gives no value for output `{name}`")
                out.append(then.get(name))
            return out
        if isinstance(then, list):
            if len(then) != len(names):
                self.diags.at(item.document, path, "PE231",
                              f"the row has {len(then)} output cells; the table has {len(names)} outputs")
                return [None] * len(names)
            return list(then)
        if len(names) != 1:
            self.diags.at(item.document, path, "PE231", f"the table has {len(names)} outputs; give a list or a mapping")
            return [None] * len(names)
        return [then]

    def cell(self, cell: Any, column: Resolved | None, item: _Item, path: Path, entity: str,
             column_expr: ir.Expr) -> ir.Test | None:
        values = column.values if column else ()
        column_type = column_expr.type

        def endpoint(text: str) -> ir.Expr:
            text = text.strip()
            if values and is_identifier(text) and text in values:
                if self.resolver(entity)[0](text, False) is not None:
                    raise ExpressionError("PE230", f"`{text}` is both a value of the column and a name",
                                          hint=f'quote the value: "{text}"')
                return ir.Const(text, "enum")
            resolve, known = self.resolver(entity)
            expr, _ = compile_expression(text, resolve, known, self.decision_ids, member=entity == "member")
            if isinstance(expr, ir.Const) and isinstance(expr.value, str) and values and expr.value not in values:
                raise ExpressionError("PE221", f"`{expr.value}` is not a value of `{column.name if column else '?'}`",
                                      hint=did_you_mean(expr.value, values) or f"one of {', '.join(values)}")
            _check_cell_type(column_type, expr.type, text)
            return expr

        try:
            if isinstance(cell, str):
                return parse_cell(cell, endpoint)
            test = literal_cell(cell)
            if test.a is not None:
                _check_cell_type(column_type, test.a.type, str(cell))
            return test
        except ExpressionError as error:
            self.diags.expression(item.document, path, error, str(cell))
            return None

    @staticmethod
    def table_refs(table: ir.Table | None) -> set[str]:
        return table_refs(table)

    # -- whole policy --------------------------------------------------------------------------

    def check_windows(self) -> None:
        """PE252: every window ends on or after it starts; package versions do not overlap."""
        def check(document: LoadedDocument, path: Path, start: Any, end: Any, what: str) -> None:
            if start is not None and end is not None and end < start:
                self.diags.at(document, path, "PE252", f"{what} ends ({end}) before it starts ({start})",
                              hint="swap the dates, or remove the end date for an open window")

        for package in self.chain:
            m = package.manifest
            ordered = sorted(enumerate(m.versions), key=lambda iv: iv[1].effective_from)
            for i, v in enumerate(m.versions):
                check(package.manifest_doc, ("versions", i), v.effective_from, v.effective_to, f"version {v.version}")
            for (_, a), (j, b) in itertools.pairwise(ordered):
                # an open-ended version is superseded by the next one; an explicit end must not overlap
                if a.effective_to is not None and a.effective_to >= b.effective_from:
                    self.diags.at(package.manifest_doc, ("versions", j), "PE252",
                                  f"version {b.version} starts {b.effective_from} while version {a.version} "
                                  f"is still in force", hint=f"end version {a.version} the day before")
            for source_id, source in m.sources.items():
                if source.in_force is not None:
                    check(package.manifest_doc, ("sources", source_id, "in_force"), source.in_force.from_,
                          source.in_force.to, f"the window of source {source_id}")
        for kind in ("decisions", "derived", "parameters"):
            for item in self.items[kind].values():
                window = getattr(item.model, "in_force", None)
                if window is not None:
                    check(item.document, item.path + ("in_force",), window.from_, window.to, f"`{item.name}`")
                table = getattr(item.model, "table", None)
                for r, row in enumerate(table.rows if table is not None else ()):
                    if row.in_force is not None:
                        check(item.document, item.path + ("table", "rows", r, "in_force"), row.in_force.from_,
                              row.in_force.to, f"row `{row.id}`")
                values = getattr(item.model, "values", None) if kind == "parameters" else None
                for index, entry in enumerate(values if isinstance(values, list) else ()):
                    if isinstance(entry, dict):
                        check(item.document, item.path + ("values", index), entry.get("from"), entry.get("to"),
                              f"a value of `{item.name}`")

    def compile(self) -> ir.CompiledPolicy | None:
        self.merge()
        self.check_windows()
        self.declare_names()
        inputs = [self.input_node(i) for i in self.items["inputs"].values()]
        parameters = [p for p in (self.parameter_node(i) for i in self.items["parameters"].values()) if p]
        derived = [d for d in (self.derived_node(i) for i in self.items["derived"].values()) if d]
        decisions = [d for d in (self.decision_node(i) for i in self.items["decisions"].values()) if d]
        order = self.order(derived, decisions)
        if self.diags.errors:
            return None
        leaf = self.leaf.manifest
        not_modelled = []
        for package in self.chain:
            for i, entry in enumerate(package.manifest.not_modelled):
                cites = self.cites(entry.cite, package.manifest_doc, ("not_modelled", i, "cite"))
                not_modelled.append(ir.NotModelled(cites, entry.reason, package.manifest.id))
        rank = {name: i for i, name in enumerate(order)}
        policy = ir.CompiledPolicy(
            id=leaf.id,
            title=ir.Label(leaf.title.zh, leaf.title.en),
            jurisdiction_code=leaf.jurisdiction.code,
            jurisdiction=ir.Label(leaf.jurisdiction.zh, leaf.jurisdiction.en),
            chain=tuple(p.manifest.id for p in self.chain),
            versions=tuple(ir.Version(v.version, v.effective_from, v.effective_to, v.note) for v in leaf.versions),
            sources=tuple(sorted(self.sources.values(), key=lambda s: s.id)),
            rounding=self.rounding,
            inputs=tuple(sorted(inputs, key=lambda n: n.name)),
            parameters=tuple(sorted(parameters, key=lambda n: n.name)),
            derived=tuple(sorted(derived, key=lambda n: rank.get(n.name, 0))),
            decisions=tuple(sorted(decisions, key=lambda n: rank.get(n.id, 0))),
            not_modelled=tuple(not_modelled),
        )
        digest = hashlib.sha256(canonical_json(policy).encode("utf-8")).hexdigest()
        return ir.CompiledPolicy(**{**{f.name: getattr(policy, f.name) for f in fields(policy)},
                                    "content_hash": f"sha256:{digest}", "locations": self.locations()})

    def locations(self) -> tuple[tuple[str, tuple[str, int, int]], ...]:
        out: list[tuple[str, tuple[str, int, int]]] = []
        for kind, items in self.items.items():
            for name, item in items.items():
                line, column = item.document.source_map.locate(item.path)
                out.append((f"{kind}.{name}", (item.document.file, line or 1, column or 1)))
                table = getattr(item.model, "table", None)
                if table is not None:
                    for i, row in enumerate(table.rows):
                        line, column = item.document.source_map.locate(item.path + ("table", "rows", i))
                        out.append((f"{kind}.{name}.rows.{row.id}", (item.document.file, line or 1, column or 1)))
        return tuple(sorted(out))

    def order(self, derived: list[ir.DerivedNode], decisions: list[ir.DecisionNode]) -> list[str]:
        """Topological order of derived values and decisions; reports each cycle once (PE222)."""
        param_dims = {n: list(i.model.by) for n, i in self.items["parameters"].items()}
        graph: dict[str, list[str]] = {}
        for name, depends_on in [(d.name, d.depends_on) for d in derived] + [(d.id, d.depends_on) for d in decisions]:
            targets: list[str] = []
            for ref in depends_on:
                targets.append(ref.split(".", 1)[0])  # a decision output depends on its decision
                targets.extend(param_dims.get(ref, []))  # a parameter read depends on its dimensions
            graph[name] = sorted({t for t in targets if t in self.items["derived"] or t in self.items["decisions"]})
        order: list[str] = []
        state: dict[str, int] = {}
        reported: set[frozenset[str]] = set()
        stack: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            stack.append(name)
            for dep in graph.get(name, []):
                if dep not in graph:
                    continue
                if state.get(dep) == 1:
                    cycle = stack[stack.index(dep):] + [dep]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        item = self.items["derived"].get(dep) or self.items["decisions"][dep]
                        self.diags.at(item.document, item.path, "PE222",
                                      f"dependency cycle: {' -> '.join(cycle)}",
                                      hint="a value cannot depend on itself, directly or through others")
                elif state.get(dep) is None:
                    visit(dep)
            stack.pop()
            state[name] = 2
            order.append(name)

        for name in sorted(graph):
            if state.get(name) is None:
                visit(name)
        return order


def _note(note: Any, lang: str) -> str | None:
    """A note given as text (one language) or {zh, en}."""
    if note is None or isinstance(note, str):
        return note
    return str(getattr(note, lang))


class _Bad:
    def __repr__(self) -> str:
        return "<invalid>"


_BAD = _Bad()


def _literal_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, list):
        return "list"
    return "text"


def _check_cell_type(column: str, endpoint: str, text: str) -> None:
    if "null" in (column, endpoint) or "any" in (column, endpoint):
        return
    if column in _NUMERIC and endpoint in _NUMERIC:
        return
    if {column, endpoint} <= {"text", "enum"} or column == endpoint:
        return
    raise ExpressionError("PE221", f"the cell `{text}` gives {endpoint}, but the column is {column}")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)} | {"@": type(value).__name__}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    return value


def canonical_json(policy: ir.CompiledPolicy) -> str:
    """A canonical JSON form of the IR: the input of the content hash."""
    data = _plain(policy)
    data.pop("content_hash", None)
    data.pop("locations", None)
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def compile_package(directory: str | os.PathLike[str], root: FsPath | None = None
                    ) -> tuple[ir.CompiledPolicy | None, list[Diagnostic]]:
    """Load, validate and compile a package; returns the IR (None on errors) and all diagnostics."""
    diags = _Diagnostics()
    chain = read_package_chain(directory, diags, root)
    if not chain or len(diags.errors) > 0:
        return None, sort_unique(diags.items)
    compiler = _Compiler(chain, diags)
    policy = compiler.compile()
    return policy, sort_unique(diags.items)


def compile_or_raise(directory: str | os.PathLike[str]) -> tuple[ir.CompiledPolicy, list[Diagnostic]]:
    policy, diagnostics = compile_package(directory)
    if policy is None:
        raise PolicyError(diagnostics)
    return policy, diagnostics

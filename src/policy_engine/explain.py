"""Stage 5, explain: filters over the recorded trace, and renderers (zh/en text, JSON record).

``summary`` gives each decision's result, the rule that decided it with its citation, and for a
benefit not granted the conditions that failed and by how much. ``fails`` lists every failed
condition. ``full`` renders every event. All levels flag illustrative parameters.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import string
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from . import ir
from .compile import ENGINE_VERSION
from .document import UNITS
from .evaluate import CONTEXT, Unknown

if TYPE_CHECKING:
    from .engine import Decision

#: the evaluator's rounding and subtraction, for the numbers an explanation shows
_quantize = CONTEXT.quantize
_subtract = CONTEXT.subtract

_T = {
    "zh": {
        "decided": "", "needs_information": "需要补充信息", "not_in_force": "未生效",
        "missing": "缺少以下事实：{items}。", "basis": "依据：{cites}", "rule": "（规则 {row}）",
        "also": "计算依据：{items}", "also_item": "{label}：{cites}",
        "not_in_force_reason": "本项决定在 {day} 不适用：{reason}。",
        "illustrative": "注意：使用了示意性参数「{label}」= {value}{unit}（{note}），并非正式公布的数值，须由当地替换。",
        "nomatch": "「{owner}」没有规则适用，取默认值。",
        "true": "是", "false": "否", "null": "无", "unknown": "未知", "sep": "；", "colon": "：",
        "above": "高于", "below": "低于", "equal": "等于", "not_equal": "不等于",
        "fail_cmp": "{left} {actual}，{rel}{right}{limit}{margin}，不满足「{cell}」",
        "pass_cmp": "{left} {actual}，{rel}{right}{limit}", "pass_generic": "{left} 为 {actual}，满足「{cell}」",
        "pass_eq": "{left}：{actual}", "fail_eq": "{left}：{actual}，本规则要求「{expected}」",
        "values": "（{items}）", "item_sep": "，", "formula": "{label} = {formula}",
        "margin": " {amount}", "fail_generic": "{left} 为 {actual}，不满足「{cell}」",
        "row_line": "规则 {row}：{result}", "row_fired": "适用", "row_failed": "不适用", "row_unknown": "无法判断",
        "param": "参数「{label}」= {value}{unit}（自 {start} 起，{prov}）",
        "derived": "「{label}」= {value}{unit}", "input": "事实「{label}」= {value}{unit}",
        "output": "结果「{label}」= {value}{unit}", "sourced": "已公布", "derived_p": "推算", "illustrative_p": "示意",
        "period": "。", "fails_none": "没有不满足的条件。",
    },
    "en": {
        "decided": "", "needs_information": "needs information", "not_in_force": "not in force",
        "missing": "Missing facts: {items}.", "basis": "Basis: {cites}", "rule": " (rule {row})",
        "also": "Computed under: {items}", "also_item": "{label}: {cites}",
        "not_in_force_reason": "This decision does not apply on {day}: {reason}.",
        "illustrative": "Note: uses the illustrative parameter \"{label}\" = {value}{unit} ({note}), "
                        "not a published figure; a locality must replace it.",
        "nomatch": "No rule of \"{owner}\" applies; default used.",
        "true": "yes", "false": "no", "null": "none", "unknown": "unknown", "sep": "; ", "colon": ": ",
        "above": "is above", "below": "is below", "equal": "equals", "not_equal": "differs from",
        "fail_cmp": "{left} {actual} {rel} {right}{limit}{margin}, so \"{cell}\" does not hold",
        "pass_cmp": "{left} {actual} {rel} {right}{limit}", "pass_generic": "{left} is {actual}, so \"{cell}\" holds",
        "pass_eq": "{left}: {actual}", "fail_eq": "{left}: {actual}, this rule requires {expected}",
        "values": " ({items})", "item_sep": ", ", "formula": "{label} = {formula}",
        "margin": " by {amount}", "fail_generic": "{left} is {actual}, so \"{cell}\" does not hold",
        "row_line": "rule {row}: {result}", "row_fired": "applies", "row_failed": "does not apply",
        "row_unknown": "cannot be decided",
        "param": "parameter \"{label}\" = {value}{unit} (from {start}, {prov})",
        "derived": "\"{label}\" = {value}{unit}", "input": "fact \"{label}\" = {value}{unit}",
        "output": "result \"{label}\" = {value}{unit}", "sourced": "sourced", "derived_p": "derived",
        "illustrative_p": "illustrative", "period": ".", "fails_none": "No condition failed.",
    },
}


class _Names:
    """Labels, units and types of every name in a policy, for rendering."""

    def __init__(self, policy: ir.CompiledPolicy):
        self.policy = policy
        self.info: dict[str, tuple[ir.Label, str | None, str]] = {}
        for i in policy.inputs:
            self.info[i.name] = (i.label, i.unit, i.type)
        for p in policy.parameters:
            self.info[p.name] = (p.label, p.unit, p.type)
        for d in policy.derived:
            self.info[d.name] = (d.label, d.unit, d.type)
        self.decisions = {d.id: d for d in policy.decisions}
        self.tables: dict[str, ir.Table] = {}
        for dec in policy.decisions:
            for o in dec.outputs:
                self.info[o.name] = (o.label, o.unit, o.type)
            if dec.table is not None:
                self.tables[dec.id] = dec.table
        for d in policy.derived:
            if d.table is not None:
                self.tables[d.name] = d.table
        self.parameters = {p.name: p for p in policy.parameters}
        self.value_labels: dict[str, dict[str, ir.Label]] = {}
        everywhere: dict[str, ir.Label] = {}
        labelled: list[ir.InputNode | ir.DerivedNode | ir.OutputNode] = [
            *policy.inputs, *policy.derived, *(o for d in policy.decisions for o in d.outputs)]
        for node in labelled:
            if node.value_labels:
                self.value_labels[node.name] = dict(node.value_labels)
                for value, label in node.value_labels:
                    everywhere.setdefault(value, label)
        self.any_value_label = everywhere
        self.derived = {d.name: d for d in policy.derived}
        self.rounding = policy.rounding
        self._deps: dict[str, set[str]] = {}
        #: (id of an expression, lang) -> its `formula` text, on shared tables only (`_names_for`)
        self.formulas: dict[tuple[int, str], str] | None = None
        #: values seen in the trace being rendered (set by render)
        self.values: dict[str, Any] = {}

    def label(self, name: str, lang: str) -> str:
        info = self.info.get(name)
        if info is None:
            if name in self.decisions:
                return str(getattr(self.decisions[name].label, lang))
            return name
        return str(getattr(info[0], lang))

    def unit(self, name: str, lang: str) -> str:
        info = self.info.get(name)
        if info is None or info[1] is None:
            return ""
        text = UNITS[info[1]][0 if lang == "zh" else 1]
        return (" " + text) if text else ""

    def show(self, value: Any, name: str | None, kind: str, lang: str) -> str:
        """A value for people: enum values by their label, money to the unit."""
        if isinstance(value, str):
            label = self.value_labels.get(name or "", {}).get(value) or self.any_value_label.get(value)
            if label is not None:
                return str(getattr(label, lang))
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self.show(v, name, "", lang) for v in value) + "]"
        return fmt(value, kind, lang, self.rounding)

    def kind(self, name: str) -> str:
        info = self.info.get(name)
        return info[2] if info else ""

    def depends(self, name: str) -> set[str]:
        """Every name a decision or derived value depends on, transitively (itself included)."""
        if name in self._deps:
            return self._deps[name]
        if self.formulas is not None:  # a shared table (see `_names_for`): compute in a fresh one
            return _Names(self.policy).depends(name)
        out: set[str] = {name}
        self._deps[name] = out
        direct: tuple[str, ...] = ()
        if name in self.decisions:
            direct = self.decisions[name].depends_on
        elif name in self.derived:
            direct = self.derived[name].depends_on
        for ref in direct:
            base = ref.split(".", 1)[0]
            out.add(ref)
            out |= self.depends(base)
            for dim in self.parameters[ref].by if ref in self.parameters else ():
                out |= self.depends(dim)
        return out


#: policy -> its `_Names` with every dependency set computed: built once per compiled policy and
#: then only read (a render takes a copy with its own `values`), so safe to share between threads
_NAMES: dict[int, tuple[ir.CompiledPolicy, _Names]] = {}


def _names_for(policy: ir.CompiledPolicy) -> _Names:
    cached = _NAMES.get(id(policy))
    if cached is None or cached[0] is not policy:
        shared = _Names(policy)
        deps: dict[str, set[str]] = {}
        for name in [*shared.decisions, *shared.derived]:
            deps[name] = _Names(policy).depends(name)  # each in a fresh table, as a render computes it
        shared._deps = deps
        shared.formulas = {}
        if len(_NAMES) >= 64:
            _NAMES.clear()
        cached = _NAMES[id(policy)] = (policy, shared)
    names = copy.copy(cached[1])
    names.values = {}
    return names


def fixed(value: Decimal, unit: Decimal | None) -> str:
    """``value`` as plain text, with at least the places of ``unit`` when given (money: 739 ->
    739.00). Never rounded: an explanation shows the value that was used, so a fact with more
    places than the unit (10000.495) is shown as given, and so is its margin (0.005, not 0.00)."""
    if unit is not None:
        try:
            padded = _quantize(value, unit)  # in the evaluator's context, not the calling thread's
        except InvalidOperation:  # more than 34 digits at the unit's places
            padded = value
        if padded == value:
            value = padded
    text = str(value)  # twice as fast as format(value, "f"), and the same text without an exponent
    return text if "E" not in text else format(value, "f")


def _margin(a: int | Decimal, b: int | Decimal) -> Decimal:
    """``a - b`` in the evaluator's context (not the calling thread's)."""
    return _subtract(a if type(a) is Decimal else Decimal(a), b if type(b) is Decimal else Decimal(b))


def fmt(value: Any, kind: str, lang: str, rounding: ir.Rounding | None = None) -> str:
    t = _T[lang]
    if isinstance(value, Unknown):
        return t["unknown"]
    if value is None:
        return t["null"]
    if value is True:
        return t["true"]
    if value is False:
        return t["false"]
    if isinstance(value, Decimal):
        return fixed(value, rounding.unit if kind == "money" and rounding is not None else None)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v, "", lang, rounding) for v in value) + "]"
    return str(value)


_OPS = {"+": " + ", "-": " − ", "*": " × ", "/": " ÷ ", "//": " ÷ ", "%": " mod ", "**": "^",
        "<": " < ", "<=": " ≤ ", ">": " > ", ">=": " ≥ ", "==": " = ", "!=": " ≠ "}
_FN = {
    "zh": {"sum": "合计", "count": "人数", "any": "任一成员", "all": "全体成员", "min": "最小", "max": "最大",
           "collect": "成员列表", "members": "家庭成员人数", "floor": "向下取整", "ceil": "向上取整", "round_money": "取整到分", "round": "舍入",
           "abs": "绝对值", "age": "周岁", "months_between": "相隔月数", "days_between": "相隔天数",
           "add_months": "加月", "add_days": "加日", "if": "若 {c} 则 {a} 否则 {b}", "where": "，其中 ",
           "and": " 且 ", "or": " 或 ", "not": "非 ", "in": " 属于 ", "not in": " 不属于 ", "as_of": "评估日"},
    "en": {"sum": "sum", "count": "count", "any": "any member", "all": "every member", "min": "min", "max": "max",
           "collect": "list", "members": "number of members", "floor": "floor", "ceil": "ceil", "round_money": "round", "round": "round",
           "abs": "abs", "age": "age", "months_between": "months between", "days_between": "days between",
           "add_months": "add months", "add_days": "add days", "if": "{a} if {c} else {b}", "where": " where ",
           "and": " and ", "or": " or ", "not": "not ", "in": " in ", "not in": " not in ", "as_of": "as_of"},
}


def formula(names: _Names, e: ir.Expr | None, lang: str) -> str:
    """An IR expression in words: names by their labels, operators as symbols."""
    cache = names.formulas
    if cache is None or e is None:
        return _formula(names, e, lang)
    key = (id(e), lang)  # e belongs to the policy the table is kept with: its id is not reused
    text = cache.get(key)
    if text is None:
        text = cache[key] = _formula(names, e, lang)
    return text


def _formula(names: _Names, e: ir.Expr | None, lang: str) -> str:
    f = _FN[lang]

    def go(x: Any, top: bool = False) -> str:
        if x is None:
            return ""
        if isinstance(x, ir.Const):
            return names.show(x.value, None, x.type, lang)
        if isinstance(x, ir.AsOf):
            return f["as_of"]
        if isinstance(x, ir.Ref):
            return names.label(x.name, lang)
        if isinstance(x, ir.Unary):
            return (f["not"] if x.op == "not" else "−") + go(x.operand)
        if isinstance(x, ir.Binary) and x.op == "//":
            return f["floor"] + "(" + go(x.left) + " ÷ " + go(x.right) + ")"
        if isinstance(x, (ir.Binary, ir.Compare)):
            text = go(x.left) + _OPS[x.op] + go(x.right)
            return text if top else f"({text})"
        if isinstance(x, ir.BoolOp):
            text = f[x.op].join(go(o) for o in x.operands)
            return text if top else f"({text})"
        if isinstance(x, ir.IfElse):
            return f["if"].format(c=go(x.condition, True), a=go(x.then, True), b=go(x.otherwise, True))
        if isinstance(x, ir.In):
            return go(x.item) + f["not in" if x.negate else "in"] + "{" + ", ".join(go(o) for o in x.options) + "}"
        if isinstance(x, ir.Call):
            return f.get(x.function, x.function) + "(" + ", ".join(go(a, True) for a in x.args) + ")"
        if isinstance(x, ir.Aggregate):
            inner = go(x.body, True) if x.body is not None else ""
            where = (f["where"] + go(x.where, True)) if x.where is not None else ""
            if x.function in ("any", "all", "count") and x.body is None:
                if x.where is None:
                    return f["members"]
                return f[x.function] + "(" + go(x.where, True) + ")"
            return f[x.function] + "(" + inner + where + ")"
        return "?"

    return go(e, True)


def _cites_lang(cites: tuple[ir.Cite, ...], lang: str) -> str:
    joiner = "、" if lang == "zh" else "; "
    return joiner.join(c.render() for c in cites)


def _split(template: str, fields: tuple[str, ...]) -> tuple[str, ...]:
    """A ``str.format`` template as the literal text around its fields, which must be exactly
    ``fields`` in that order: ``template.format(**values)`` is then the pieces and the values
    interleaved (what the renderers below concatenate, without parsing the template per call)."""
    pieces: list[str] = []
    found: list[str] = []
    text = ""
    for literal, field, spec, conversion in string.Formatter().parse(template):
        text += literal
        if field is not None:
            if spec or conversion:  # pragma: no cover - the templates above use plain fields
                raise ValueError(f"template {template!r}: plain fields only")
            found.append(field)
            pieces.append(text)
            text = ""
    pieces.append(text)
    if tuple(found) != fields:  # pragma: no cover - a check on the templates above
        raise ValueError(f"template {template!r} must use the fields {', '.join(fields)} in that order")
    return tuple(pieces)


#: lang -> the templates of the trace and the summary lines, split (see `_split`)
_PIECES: dict[str, dict[str, tuple[str, ...]]] = {
    lang: {
        "input": _split(t["input"], ("label", "value", "unit")),
        "derived": _split(t["derived"], ("label", "value", "unit")),
        "output": _split(t["output"], ("label", "value", "unit")),
        "param": _split(t["param"], ("label", "value", "unit", "start", "prov")),
        "also": _split(t["also"], ("items",)),
        "values": _split(t["values"], ("items",)),
        "illustrative": _split(t["illustrative"], ("label", "value", "unit", "note")),
        "margin": _split(t["margin"], ("amount",)),
        "pass_cmp": _split(t["pass_cmp"], ("left", "actual", "rel", "right", "limit")),
        "fail_cmp": _split(t["fail_cmp"], ("left", "actual", "rel", "right", "limit", "margin", "cell")),
        "pass_eq": _split(t["pass_eq"], ("left", "actual")),
        "fail_eq": _split(t["fail_eq"], ("left", "actual", "expected")),
        "pass_generic": _split(t["pass_generic"], ("left", "actual", "cell")),
        "fail_generic": _split(t["fail_generic"], ("left", "actual", "cell")),
    }
    for lang, t in _T.items()
}


class _Plan:
    """What rendering one policy in one language needs, worked out once: labels, units, kinds,
    citations, formulas and the fixed parts of every line, per name, row and cell, filled in as
    they are first needed. Kept per compiled policy and language (`_plan_for`); only ever
    added to (each entry a pure function of the immutable policy and the language, so a
    concurrent fill computes the same text), and bounded by the size of the policy except the
    cache of value lines (`_lines`), which is cleared when it grows large."""

    def __init__(self, names: _Names, lang: str):
        self.names = names
        self.lang = lang
        self.t = t = _T[lang]
        self.p = _PIECES[lang]
        self.rounding = names.rounding
        self.quantum = names.rounding.unit if names.rounding is not None else None
        every = [*names.info, *names.decisions]
        self.labels: dict[str, str] = {n: names.label(n, lang) for n in every}
        self.units: dict[str, str] = {n: names.unit(n, lang) for n in every}
        self.kinds: dict[str, str] = {n: names.kind(n) for n in every}
        self.deps: dict[str, set[str]] = {n: names.depends(n) for n in names.decisions}
        self.provs = {"sourced": t["sourced"], "derived": t["derived_p"], "illustrative": t["illustrative_p"]}
        self.trace_title = "—" * 8 + (" 计算过程 " if lang == "zh" else " trace ") + "—" * 8
        self.enum_any = {value: str(getattr(label, lang)) for value, label in names.any_value_label.items()}
        #: name -> value -> its label (the name's own labels, then any name's)
        self.enums: dict[str | None, dict[str, str]] = {}
        # per name, row or cell: the fixed parts of its lines (see the methods below)
        self.heads: dict[tuple[str, str, str], tuple[str, str, str, str, str, Decimal | None]] = {}
        self.row_parts: dict[tuple[str, int], tuple[str, str, str, str, str, str, str, tuple[ir.Cite, ...]]] = {}
        self.cells: dict[tuple[str, int, int], tuple[Any, ...]] = {}
        self.details: dict[str, tuple[Any, ...] | None] = {}
        self.formula_parts: dict[str, tuple[str, tuple[tuple[str, str, str, str], ...]]] = {}
        self.decision_parts: dict[str, tuple[Any, ...]] = {}
        #: (what, key) -> (the value it was made for, the line): reused only for that same object
        self._lines: dict[tuple[Any, ...], tuple[Any, str]] = {}
        self.also_lines: dict[frozenset[str], str] = {}
        #: (decision, its fired rows) -> whether its own citations need a line (`basis_needed`)
        self.bases: dict[tuple[str, tuple[int, ...]], bool] = {}

    # --- values --------------------------------------------------------------------------

    def show(self, value: Any, name: str | None, kind: str) -> str:
        """`_Names.show`, with the common types first."""
        tp = type(value)
        if tp is Decimal:
            return fixed(value, self.quantum if kind == "money" else None)
        if tp is str:
            labels = self.enums.get(name)
            if labels is None:
                labels = dict(self.enum_any)
                for v, label in self.names.value_labels.get(name or "", {}).items():
                    labels[v] = str(getattr(label, self.lang))
                self.enums[name] = labels
            text = labels.get(value)
            return value if text is None else text
        if tp is bool:
            return self.t["true"] if value else self.t["false"]
        if tp is int:
            return str(value)
        if value is None:
            return self.t["null"]
        if tp is Unknown:
            return self.t["unknown"]
        if tp is dt.date:
            day: str = value.isoformat()
            return day
        if tp is list or tp is tuple:
            return "[" + ", ".join([self.show(v, name, "") for v in value]) + "]"
        return self.names.show(value, name, kind, self.lang)

    def fmt(self, value: Any, kind: str) -> str:
        """`fmt`, with a Decimal first."""
        if type(value) is Decimal:
            return fixed(value, self.quantum if kind == "money" else None)
        return fmt(value, kind, self.lang, self.rounding)

    def label(self, name: str) -> str:
        text = self.labels.get(name)
        if text is None:
            text = self.labels[name] = self.names.label(name, self.lang)
        return text

    def unit(self, name: str) -> str:
        text = self.units.get(name)
        if text is None:
            text = self.units[name] = self.names.unit(name, self.lang)
        return text

    def kind(self, name: str) -> str:
        text = self.kinds.get(name)
        if text is None:
            text = self.kinds[name] = self.names.kind(name)
        return text

    def depends(self, name: str) -> set[str]:
        deps = self.deps.get(name)
        if deps is None:
            deps = self.deps[name] = self.names.depends(name)
        return deps

    # --- the trace -----------------------------------------------------------------------

    def head(self, what: str, name: str, owner: str = "") -> tuple[str, str, str, str, str, Decimal | None]:
        """For an input, derived or output event of `name`: the text before the member index,
        the text between it and the value, the text after the value when it is known and when
        it is not; the name's type, and the rounding unit of its Decimal values (None: as is)."""
        parts = self.heads.get((what, name, owner))
        if parts is None:
            p = self.p[what]
            label = self.label(name)
            how = ""
            if what == "derived":
                node = self.names.derived.get(name)
                if node is not None and node.expr is not None:
                    how = f" = {formula(self.names, node.expr, self.lang)}"
            elif what == "output":
                label = self.label(owner) + "/" + label
            kind = self.kind(name)
            parts = ("· " + p[0] + label, p[1], p[2] + self.unit(name) + p[3] + how, p[2] + p[3] + how,
                     kind, self.quantum if kind == "money" else None)
            self.heads[(what, name, owner)] = parts
        return parts

    def param_line(self, e: tuple[Any, ...]) -> str:
        key = ("param", e[1], e[2], e[4], e[5])
        made = self._lines.get(key)
        value = e[3]
        if made is not None and made[0] is value:
            return made[1]
        p = self.p["param"]
        name = e[1]
        where = f"[{', '.join(e[2])}]" if e[2] else ""
        prov = self.provs[e[5]]
        line: str = ("· " + p[0] + self.label(name) + where + p[1] + self.fmt(value, self.kind(name)) + p[2]
                + self.unit(name) + p[3] + e[4].isoformat() + p[4] + prov + p[5])
        self._keep(key, value, line)
        return line

    def _keep(self, key: tuple[Any, ...], value: Any, line: str) -> None:
        if len(self._lines) >= 4096:
            self._lines.clear()
        self._lines[key] = (value, line)

    def row(self, owner: str, index: int) -> tuple[str, str, str, str, str, str, str, tuple[ir.Cite, ...]]:
        """A row's fixed texts: its trace line's start when it fired, failed and could not be
        decided, the citation after it, the start and end of its line among the failed rows
        (`_row_line`), and its basis line when it fired; and its citations."""
        parts = self.row_parts.get((owner, index))
        if parts is None:
            t = self.t
            row = self.names.tables[owner].rows[index]
            cites = _cites_lang(row.cites, self.lang)
            start = "· " + self.label(owner) + " "
            after = (f"（{cites}）" if self.lang == "zh" and cites else f" ({cites})" if cites else "")
            rule = t["rule"].format(row=row.id)
            where = (f"（{cites}）" if self.lang == "zh" else f" ({cites})") if cites else ""
            parts = (
                start + t["row_line"].format(row=row.id, result=t["row_fired"]),
                start + t["row_line"].format(row=row.id, result=t["row_failed"]),
                start + t["row_line"].format(row=row.id, result=t["row_unknown"]),
                after,
                rule.strip(" （）()") + t["colon"],
                where + t["period"],
                "  " + t["basis"].format(cites=cites or "-") + rule + t["period"],
                row.cites,
            )
            self.row_parts[(owner, index)] = parts
        return parts

    # --- cells ---------------------------------------------------------------------------

    def cell(self, owner: str, index: int, cell: tuple[Any, ...], values: dict[str, Any],
             memo: dict[Any, Any]) -> str:
        """One tested cell in words: what the value was, what the rule asked, and the margin.
        ``memo`` is the render's own (its `values` do not change, and its cells are alive)."""
        key = (owner, index, id(cell))
        known: str | None = memo.get(key)
        if known is not None:
            return known
        col, actual, passed, a, _b = cell
        text: str
        fixed = self.cells.get((owner, index, col))
        if fixed is None:
            fixed = self.cells[(owner, index, col)] = self._cell(owner, index, col)
        left, column, kind, unit, asked, ordered, right, limit_unit, expected = fixed
        p = self.p
        actual_text = self.show(actual, column, kind) + (unit if actual is not None else "")
        if ordered and isinstance(actual, (int, Decimal)) and isinstance(a, (int, Decimal)):
            t = self.t
            diff = _margin(actual, a)
            rel = t["above"] if diff > 0 else t["below"] if diff < 0 else t["equal"]
            limit = self.fmt(a, kind) + limit_unit
            if passed is True:
                q = p["pass_cmp"]
                text = q[0] + left + q[1] + actual_text + q[2] + rel + q[3] + right + q[4] + limit + q[5]
            else:
                amount = self.fmt(abs(diff), kind) + unit
                margin = "" if diff == 0 else (" " + amount if self.lang == "zh" else
                                              p["margin"][0] + amount + p["margin"][1])
                q = p["fail_cmp"]
                text = (q[0] + left + q[1] + actual_text + q[2] + rel + q[3] + right + q[4] + limit + q[5]
                        + margin + q[6] + asked + q[7])
        elif expected is not None:
            detail = self.detail(column, values, memo) if column else ""
            if passed is True:
                q = p["pass_eq"]
                text = q[0] + left + q[1] + actual_text + q[2] + detail
            else:
                q = p["fail_eq"]
                text = q[0] + left + q[1] + actual_text + q[2] + expected + q[3] + detail
        else:
            q = p["pass_generic" if passed is True else "fail_generic"]
            text = q[0] + left + q[1] + actual_text + q[2] + asked + q[3]
        memo[key] = text
        return text

    def _cell(self, owner: str, index: int, col: int) -> tuple[Any, ...]:
        names, lang = self.names, self.lang
        table = names.tables[owner]
        column_expr = table.inputs[col]
        test = table.rows[index].tests[col]
        kind = column_expr.type
        column = column_expr.name if isinstance(column_expr, ir.Ref) else None
        left = self.label(column) if column else formula(names, column_expr, lang)
        unit = self.unit(column) if column else ""
        ordered = test.kind == "compare" and test.op in ("<", "<=", ">", ">=")
        right = limit_unit = ""
        if ordered:
            if isinstance(test.a, ir.Ref):
                right, limit_unit = self.label(test.a.name), self.unit(test.a.name)
            elif isinstance(test.a, ir.Const):
                right, limit_unit = "", unit
            else:
                right, limit_unit = formula(names, test.a, lang), unit
            right = right + (" " if right else "")
        expected = None
        if test.kind == "compare" and test.op == "==" and isinstance(test.a, ir.Const):
            expected = self.show(test.a.value, column, kind)
        return (left, column, kind, unit, self.cell_words(test, column, kind, unit), ordered, right, limit_unit,
                expected)

    def cell_words(self, test: ir.Test, column: str | None, kind: str, unit: str) -> str:
        """What a cell asks, in labels: ``< standard`` -> "< 低保标准", ``"medical","sudden_illness"``
        -> "医疗支出 或 突发疾病", ``[3000..6000)`` -> "[3000.00 元/月, 6000.00 元/月)"."""
        def value(e: ir.Expr | None) -> str:
            if isinstance(e, ir.Const):
                v = e.value
                known = v is not None and not isinstance(v, bool)
                if kind == "money" and known and isinstance(v, int):
                    v = Decimal(v)  # 3000 -> 3000.00, as money is shown
                return self.show(v, column, kind) + (unit if known and kind in ("money", "decimal", "integer") else "")
            if isinstance(e, ir.Ref):
                return self.label(e.name)
            return formula(self.names, e, self.lang)

        def words(t: ir.Test) -> str:
            if t.kind == "any":
                return "-"
            if t.kind == "null":
                return self.t["null"]
            if t.kind == "compare":
                return ("" if t.op == "==" else _OPS[t.op or "=="].lstrip()) + value(t.a)
            if t.kind == "range":
                return ("[" if t.low_closed else "(") + value(t.a) + ", " + value(t.b) + ("]" if t.high_closed else ")")
            either = " 或 " if self.lang == "zh" else " or "
            inner = either.join(words(sub) for sub in t.tests)
            if t.kind == "not":
                return ("非（" + inner + "）") if self.lang == "zh" else ("not (" + inner + ")")
            return inner

        return words(test)

    def detail(self, name: str, values: dict[str, Any], memo: dict[Any, Any]) -> str:
        """For a yes/no value defined as a comparison of two numbers, the numbers and the margin
        (kept in the render's ``memo``: its `values` do not change)."""
        text: str | None = memo.get(name)
        if text is None:
            text = memo[name] = self._detail_text(name, values)
        return text

    def _detail_text(self, name: str, values: dict[str, Any]) -> str:
        if name in self.details:
            fixed = self.details[name]
        else:
            fixed = self.details[name] = self._detail(name)
        if fixed is None:
            return ""
        left, left_ref, left_const, unit, right, right_ref, right_const, right_unit, kind = fixed
        a = values.get(left_ref) if left_ref is not None else left_const
        b = values.get(right_ref) if right_ref is not None else right_const
        if not isinstance(a, (int, Decimal)) or not isinstance(b, (int, Decimal)) or isinstance(a, bool):
            return ""
        t = self.t
        diff = _margin(a, b)
        rel = t["above"] if diff > 0 else t["below"] if diff < 0 else t["equal"]
        amount = self.fmt(abs(diff), kind) + unit
        margin = "" if diff == 0 else (" " + amount if self.lang == "zh" else
                                      self.p["margin"][0] + amount + self.p["margin"][1])
        q = self.p["pass_cmp"]
        text = (q[0] + left + q[1] + self.fmt(a, kind) + unit + q[2] + rel + q[3] + right
                + (" " if right else "") + q[4] + self.fmt(b, kind) + (right_unit or unit) + q[5] + margin)
        return f"（{text}）" if self.lang == "zh" else f" ({text})"

    def _detail(self, name: str) -> tuple[Any, ...] | None:
        node = self.names.derived.get(name)
        expr = node.expr if node is not None else None
        if not isinstance(expr, ir.Compare) or expr.op not in ("<", "<=", ">", ">="):
            return None

        def side(e: ir.Expr) -> tuple[str, str | None, Any, str]:
            if isinstance(e, ir.Ref):
                return self.label(e.name), e.name, None, self.unit(e.name)
            if isinstance(e, ir.Const):
                return "", None, e.value, ""
            return formula(self.names, e, self.lang), None, None, ""

        left, left_ref, left_const, unit = side(expr.left)
        right, right_ref, right_const, right_unit = side(expr.right)
        return (left, left_ref, left_const, unit, right, right_ref, right_const, right_unit, expr.left.type)

    # --- the lines of a decision ---------------------------------------------------------

    def decision(self, decision_id: str) -> tuple[Any, ...]:
        """A decision's fixed texts and lists: its label, its outputs (short name, qualified
        name, type, label and unit), the tables whose failed rows summary and the other
        levels show, its citations and their basis line, and its outputs with a formula."""
        parts = self.decision_parts.get(decision_id)
        if parts is None:
            t, lang, names = self.t, self.lang, self.names
            node = names.decisions[decision_id]
            outputs = tuple((o.short, o.name, o.type, f"{getattr(o.label, lang)} ", self.unit(o.name))
                            for o in node.outputs)
            deps = self.depends(decision_id)
            mine = (decision_id,) if decision_id in names.tables else ()
            others = tuple(sorted(n for n in deps if n in names.tables and n != decision_id))
            basis = "  " + t["basis"].format(cites=_cites_lang(node.cites, lang)) + t["period"]
            with_formula = tuple(o for o in node.outputs if o.expr is not None and not isinstance(o.expr, ir.Const))
            parts = (getattr(node.label, lang), outputs, mine, mine + others, frozenset(node.cites), basis,
                     with_formula, names.tables.get(decision_id))
            self.decision_parts[decision_id] = parts
        return parts

    def basis_needed(self, decision_id: str, cites: frozenset[ir.Cite], fired_rows: tuple[int, ...]) -> bool:
        """Whether some of a decision's `cites` are not among those of the rows that fired, as
        shown (document and clause: a cite that also quotes the clause's text is the same line)."""
        key = (decision_id, fired_rows)
        needed = self.bases.get(key)
        if needed is None:
            shown: set[str] = set()
            for index in fired_rows:
                shown.update(c.render() for c in self.row(decision_id, index)[7])
            needed = not {c.render() for c in cites} <= shown
            if len(self.bases) >= 4096:
                self.bases.clear()
            self.bases[key] = needed
        return needed

    def formula_line(self, output: ir.OutputNode, values: dict[str, Any]) -> str:
        fixed = self.formula_parts.get(output.name)
        if fixed is None:
            from .expressions import refs_of

            refs = tuple((ref, self.label(ref), self.kind(ref), self.unit(ref))
                         for ref in sorted(refs_of(output.expr)) if self.kind(ref) != "list")
            text = self.t["formula"].format(label=getattr(output.label, self.lang),
                                            formula=formula(self.names, output.expr, self.lang))
            fixed = self.formula_parts[output.name] = (text, refs)
        text, refs = fixed
        items = []
        for ref, label, kind, unit in refs:
            if ref in values:
                value = values[ref]
                known = value is not None and not isinstance(value, Unknown)
                items.append(f"{label} {self.show(value, ref, kind)}{unit if known else ''}")
        if items:
            p = self.p["values"]
            return "  " + text + p[0] + self.t["item_sep"].join(items) + p[1] + self.t["period"]
        return "  " + text + self.t["period"]

    def also(self, used: frozenset[str]) -> str | None:
        """The line giving the clauses of the values used (sorted by name); None without any."""
        line = self.also_lines.get(used)
        if line is None:
            t, names = self.t, self.names
            extra = []
            for used_name in sorted(used):
                item = names.derived.get(used_name) or names.parameters.get(used_name)
                if item is not None and item.cites:
                    extra.append(t["also_item"].format(label=self.label(used_name),
                                                       cites=_cites_lang(item.cites, self.lang)))
            p = self.p["also"]
            line = ("  " + p[0] + t["sep"].join(extra) + p[1] + t["period"]) if extra else ""
            if len(self.also_lines) >= 1024:
                self.also_lines.clear()
            self.also_lines[used] = line
        return line or None

    def illustrative(self, param_name: str, event: tuple[Any, ...]) -> str:
        key = ("illustrative", param_name, event[4])
        made = self._lines.get(key)
        if made is not None and made[0] is event[3]:
            return made[1]
        t, lang = self.t, self.lang
        param = self.names.parameters[param_name]
        dated = next((v for v in param.values if v.start == event[4]), None)
        if lang == "en":
            note = (dated.note_en if dated and dated.note_en else param.note_en) or \
                (dated.note if dated and dated.note else param.note)
        else:
            note = dated.note if dated and dated.note else param.note
        note = note or t["illustrative_p"]
        p = self.p["illustrative"]
        line: str = ("  " + p[0] + getattr(param.label, lang) + p[1] + self.fmt(event[3], param.type) + p[2]
                + self.unit(param_name) + p[3] + note + p[4])
        self._keep(key, event[3], line)
        return line


#: (id of a compiled policy, lang) -> the policy and its `_Plan` (the policy kept to check the id)
_PLANS: dict[tuple[int, str], tuple[ir.CompiledPolicy, _Plan]] = {}


def _plan_for(policy: ir.CompiledPolicy, lang: str) -> _Plan:
    cached = _PLANS.get((id(policy), lang))
    if cached is None or cached[0] is not policy:
        plan = _Plan(_names_for(policy), lang)
        if len(_PLANS) >= 128:
            _PLANS.clear()
        cached = _PLANS[(id(policy), lang)] = (policy, plan)
    return cached[1]


def render(decision: Decision, lang: str = "zh", level: str = "summary") -> str:
    """summary: result, deciding rule, its conditions, why better rules failed, placeholders.
    fails: also every failed condition of every table used, and each output's formula.
    full: also the clauses of every value used, and the whole trace."""
    if lang not in _T:
        raise ValueError(f"lang must be zh or en, not {lang!r}")
    if level not in ("summary", "fails", "full"):
        raise ValueError(f"level must be summary, fails or full, not {level!r}")
    t = _T[lang]
    plan = _plan_for(decision.policy, lang)
    events = decision.events
    lines: list[str] = []
    add = lines.append
    #: table owner -> row index -> the row's (last) event
    row_events: dict[str, dict[int, tuple[Any, ...]]] = {}
    fired: dict[str, tuple[int, ...]] = {}
    illustrative: dict[str, tuple[Any, ...]] = {}
    #: the value of every entity-level name as read or computed in the trace
    values: dict[str, Any] = {}
    #: every derived value and parameter in the trace
    used_all: set[str] = set()
    #: this render's cell and comparison texts (see `_Plan.cell`)
    memo: dict[Any, Any] = {}
    for e in events:
        kind = e[0]
        if kind == "input":
            if e[2] is None:
                values[e[1]] = e[3]
        elif kind == "derived":
            used_all.add(e[1])
            if e[2] is None:
                values[e[1]] = e[3]
        elif kind == "param":
            used_all.add(e[1])
            values[e[1]] = e[3]
            if e[5] == "illustrative" and e[1] not in illustrative:
                illustrative[e[1]] = e
        elif kind == "row":
            owned = row_events.get(e[1])
            if owned is None:
                owned = row_events[e[1]] = {}
            owned[e[2]] = e
        elif kind == "fired":
            fired[e[1]] = e[2]
        elif kind == "output":
            values[f"{e[1]}.{e[2]}"] = e[3]
    summary = level == "summary"
    colon, period = t["colon"], t["period"]
    for decision_id, outcome in decision.items():
        label, outputs, mine, all_owners, node_cites, basis, with_formula, table = plan.decision(decision_id)
        if outcome.status == "not_in_force":
            add(f"{label}{colon}{t['not_in_force']}{period}")
            reason = outcome.reason or ""
            add("  " + t["not_in_force_reason"].format(day=decision.as_of.isoformat(),
                                                      reason=_reason_zh(reason, plan) if lang == "zh" else reason))
            if outcome.cites:
                add("  " + t["basis"].format(cites=_cites_lang(outcome.cites, lang)) + period)
            continue
        if outcome.status == "needs_information":
            add(f"{label}{colon}{t['needs_information']}{period}")
            add("  " + t["missing"].format(items=", ".join(outcome.missing)))
        else:
            parts = []
            got = outcome.outputs
            for short, name, output_type, output_label, unit in outputs:
                value = got.get(short)
                known = value is not None and not isinstance(value, Unknown)
                parts.append(output_label + plan.show(value, name, output_type) + (unit if known else ""))
            add(label + colon + t["sep"].join(parts) + period)
        deps = plan.depends(decision_id)
        # the rule that decided, with its clause and the conditions it checked
        fired_rows: tuple[int, ...] = ()
        if table is not None and decision_id in fired:
            fired_rows = fired[decision_id]
            for index in fired_rows:
                row_parts = plan.row(decision_id, index)
                add(row_parts[6])
                event = row_events.get(decision_id, {}).get(index)
                for cell in event[4] if event else ():
                    add("    " + plan.cell(decision_id, index, cell, values, memo) + period)
        # the decision's own clauses, unless the rules shown cite them all
        if node_cites and plan.basis_needed(decision_id, node_cites, fired_rows):
            add(basis)
        # why the rules before it did not apply (summary), or every failed condition (fails, full)
        for owner in mine if summary else all_owners:
            owned = row_events.get(owner)
            if owned is None:  # no row of its table tested
                continue
            owner_rows = len(plan.names.tables[owner].rows)
            first_fired = min(fired.get(owner, (owner_rows,)))
            for index in sorted(owned) if len(owned) > 1 else owned:
                event = owned[index]
                if event[3] is not False or index >= owner_rows:
                    continue
                if summary and index > first_fired:
                    continue
                if event[4]:
                    row_parts = plan.row(owner, index)
                    add("  " + row_parts[4] + plan.cell(owner, index, event[4][-1], values, memo) + row_parts[5])
        if (not summary or table is None) and outcome.status == "decided":
            for output in with_formula:
                add(plan.formula_line(output, values))
        if level == "full":
            line = plan.also(frozenset(used_all & deps))
            if line is not None:
                add(line)
        for param_name, event in illustrative.items():
            if param_name in deps:
                add(plan.illustrative(param_name, event))
    if level == "full":
        add("")
        add(plan.trace_title)
        _trace(plan, events, values, memo, add)
    return "\n".join(lines)


#: the reasons the engine gives for "not in force" (engine.py, evaluate.py), and their Chinese
_REASONS_ZH: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], _Plan], str]], ...] = (
    (re.compile(r"package `(?P<id>[^`]+)` has no version in force on (?P<day>\S+) \((?P<windows>.*)\)"),
     lambda m, plan: f"政策包「{m['id']}」在 {m['day']} 没有生效的版本（各版本施行期：{m['windows']}）"),
    (re.compile(r"not in force on (?P<day>\S+) \(in force (?P<start>\S+) to (?P<end>\S+)\)"),
     lambda m, plan: f"施行期为 {m['start']} 至 {m['end']}" if m["end"] != "open" else f"自 {m['start']} 起施行"),
    (re.compile(r"parameter `(?P<name>[^`]+)` has no value in force on (?P<day>\S+) \(values start (?P<first>\S+)\)"),
     lambda m, plan: f"参数「{plan.label(m['name'])}」在 {m['day']} 没有生效的取值"
                     + (f"（最早的取值自 {m['first']} 起）" if m["first"] != "ever" else "（没有任何取值）")),
    (re.compile(r"parameter `(?P<name>[^`]+)` has no value for (?P<key>.+) on (?P<day>\S+)"),
     lambda m, plan: f"参数「{plan.label(m['name'])}」在 {m['day']} 没有{_key_zh(m['key'], plan)}的取值"),
)


def _key_zh(key: str, plan: _Plan) -> str:
    """``tekun_care_setting = institutional, tekun_self_care_level = None`` (a parameter's key,
    as the engine's reason gives it) in labels: 「特困人员供养方式」为「集中供养」、…"""
    words = []
    for item in key.split(", "):
        name, _, value = item.partition(" = ")
        shown = (plan.t["null"] if value == "None" else plan.t[value] if value in ("true", "false")
                 else plan.show(value, name, plan.kind(name)))
        words.append(f"「{plan.label(name)}」为「{shown}」")
    return "、".join(words)


def _reason_zh(reason: str, plan: _Plan) -> str:
    """A "not in force" reason in Chinese (the English one, as given, if it is not one of ours)."""
    for pattern, words in _REASONS_ZH:
        m = pattern.fullmatch(reason)
        if m is not None:
            return words(m, plan)
    return reason


def _trace(plan: _Plan, events: tuple[tuple[Any, ...], ...], values: dict[str, Any],
           memo: dict[Any, Any], add: Any) -> None:
    """The trace, a line per event (each parameter value once)."""
    heads = plan.heads
    show = plan.show
    colon = plan.t["colon"]
    shown_params: set[tuple[Any, ...]] = set()
    for e in events:
        what = e[0]
        if what == "input" or what == "derived":
            name = e[1]
            parts = heads.get((what, name, "")) or plan.head(what, name)
            value = e[3]
            m = e[2]
            if type(value) is Decimal:  # `_Plan.show`, inline
                text = fixed(value, parts[5])
                tail = parts[2]
            else:
                text = show(value, name, parts[4])
                tail = parts[3] if value is None or isinstance(value, Unknown) else parts[2]
            add(parts[0] + ("" if m is None else f"[{m}]") + parts[1] + text + tail)
        elif what == "param":
            key = (e[1], e[2], e[4])
            if key in shown_params:
                continue
            shown_params.add(key)
            add(plan.param_line(e))
        elif what == "row":
            owner, index, result = e[1], e[2], e[3]
            row_parts = plan.row(owner, index)
            if result is True:
                add(row_parts[0] + row_parts[3])
            elif result is False:
                if e[4]:
                    add(row_parts[1] + colon + plan.cell(owner, index, e[4][-1], values, memo) + row_parts[3])
                else:
                    add(row_parts[1] + row_parts[3])
            else:
                add(row_parts[2] + row_parts[3])
        elif what == "nomatch":
            add("· " + plan.t["nomatch"].format(owner=plan.label(e[1])))
        elif what == "output":
            name = f"{e[1]}.{e[2]}"
            parts = heads.get(("output", name, e[1])) or plan.head("output", name, e[1])
            value = e[3]
            add(parts[0] + parts[1] + show(value, name, parts[4])
                + (parts[3] if value is None or isinstance(value, Unknown) else parts[2]))


# --- the JSON record ------------------------------------------------------------------------

RECORD_SCHEMA = "policy_engine/decision/v1"


def _event_dict(names: _Names, e: tuple[Any, ...]) -> dict[str, Any]:
    from .engine import json_value

    kind = e[0]
    if kind == "input":
        return {"event": "input_read", "name": e[1], "member": e[2], "value": json_value(e[3])}
    if kind == "param":
        return {"event": "parameter_read", "name": e[1], "key": list(e[2]), "value": json_value(e[3]),
                "effective_from": e[4].isoformat(), "provenance": e[5]}
    if kind == "derived":
        return {"event": "value_derived", "name": e[1], "member": e[2], "value": json_value(e[3]),
                "from": sorted(r for r in names.derived[e[1]].depends_on) if e[1] in names.derived else []}
    if kind == "row":
        table = names.tables[e[1]]
        return {
            "event": "row_tested", "table": e[1], "row": table.rows[e[2]].id,
            "result": "matched" if e[3] is True else "failed" if e[3] is False else "unknown",
            "cells": [{"column": table.columns[c[0]], "actual": json_value(c[1]),
                       "test": table.rows[e[2]].tests[c[0]].text,
                       "passed": c[2] if isinstance(c[2], bool) else None,
                       "endpoint": json_value(c[3])} for c in e[4]],
        }
    if kind == "fired":
        table = names.tables[e[1]]
        return {"event": "row_fired", "table": e[1], "rows": [table.rows[i].id for i in e[2]], "hit": e[3]}
    if kind == "nomatch":
        return {"event": "no_row_matched", "table": e[1]}
    if kind == "skip_row":
        return {"event": "row_not_in_force", "table": e[1], "row": names.tables[e[1]].rows[e[2]].id}
    if kind == "output":
        return {"event": "output_produced", "decision": e[1], "output": e[2], "value": json_value(e[3])}
    if kind == "decision":
        detail = list(e[3]) if isinstance(e[3], tuple) else e[3]
        return {"event": "decision_status", "decision": e[1], "status": e[2], "detail": detail}
    return {"event": kind}  # pragma: no cover


def record(decision: Decision) -> dict[str, Any]:
    from .engine import json_value

    policy = decision.policy
    names = _names_for(policy)
    version = policy.version_at(decision.as_of)
    outcomes = {}
    for decision_id, outcome in decision.items():
        outcomes[decision_id] = {
            "status": outcome.status,
            "outputs": {k: json_value(v) for k, v in outcome.outputs.items()},
            "missing": list(outcome.missing),
            "reason": outcome.reason,
            "fired_rows": list(outcome.fired_rows),
            "cites": [c.render() for c in outcome.cites],
        }
    return {
        "schema": RECORD_SCHEMA,
        "engine_version": ENGINE_VERSION,
        "as_of": decision.as_of.isoformat(),
        "entity": decision.entity,
        "status": decision.status,
        "policy": {
            "id": policy.id,
            "chain": list(policy.chain),
            "jurisdiction_code": policy.jurisdiction_code,
            "version": version.version if version else None,
            "effective_from": version.start.isoformat() if version else None,
            "effective_to": version.end.isoformat() if version and version.end else None,
            "content_hash": policy.content_hash,
        },
        "decisions": outcomes,
        "events": [_event_dict(names, e) for e in decision.events],
    }


# --- the catalogue --------------------------------------------------------------------------


def catalogue(policy: ir.CompiledPolicy, as_of: dt.date | None) -> dict[str, Any]:
    from .engine import json_value

    def value_at(p: ir.ParameterNode) -> Any:
        if as_of is None:
            return None
        chosen = None
        for v in p.values:
            if v.start <= as_of and (v.end is None or as_of <= v.end):
                chosen = v
        if chosen is None:
            return None
        entries = {"/".join(k) if k else "": json_value(val) for k, val in chosen.entries}
        return {"effective_from": chosen.start.isoformat(), "provenance": chosen.provenance,
                "values": entries[""] if list(entries) == [""] else entries, "source": chosen.source,
                "note": chosen.note}

    return {
        "policy": {"id": policy.id, "title": {"zh": policy.title.zh, "en": policy.title.en},
                   "jurisdiction_code": policy.jurisdiction_code, "chain": list(policy.chain),
                   "content_hash": policy.content_hash,
                   "versions": [{"version": v.version, "effective_from": v.start.isoformat(),
                                 "effective_to": v.end.isoformat() if v.end else None} for v in policy.versions]},
        "as_of": as_of.isoformat() if as_of else None,
        "decisions": [
            {"id": d.id, "entity": d.entity, "label": {"zh": d.label.zh, "en": d.label.en},
             "cites": [c.render() for c in d.cites],
             "in_force": ({"from": d.in_force.start.isoformat(),
                           "to": d.in_force.end.isoformat() if d.in_force.end else None} if d.in_force else None),
             "outputs": [{"name": o.short, "type": o.type, "unit": o.unit,
                          "label": {"zh": o.label.zh, "en": o.label.en}} for o in d.outputs],
             "rows": [{"id": r.id, "cites": [c.render() for c in r.cites]} for r in d.table.rows] if d.table else []}
            for d in policy.decisions
        ],
        "inputs": [
            {"name": i.name, "entity": i.entity, "path": ".".join(i.path), "type": i.type, "unit": i.unit,
             "values": list(i.values) or None, "label": {"zh": i.label.zh, "en": i.label.en}}
            for i in policy.inputs
        ],
        "parameters": [
            {"name": p.name, "type": p.type, "unit": p.unit, "by": list(p.by), "provenance": p.provenance,
             "label": {"zh": p.label.zh, "en": p.label.en}, "source": p.source, "note": p.note,
             "cites": [c.render() for c in p.cites], "value": value_at(p),
             "history": [{"effective_from": v.start.isoformat(), "provenance": v.provenance,
                          "values": {"/".join(k) if k else "": json_value(val) for k, val in v.entries}}
                         for v in p.values]}
            for p in policy.parameters
        ],
        "not_modelled": [{"cites": [c.render() for c in n.cites], "reason": n.reason, "package": n.package}
                         for n in policy.not_modelled],
    }

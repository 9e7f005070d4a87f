"""Stage 5, explain: filters over the recorded trace, and renderers (zh/en text, JSON record).

``summary`` gives each decision's result, the rule that decided it with its citation, and for a
benefit not granted the conditions that failed and by how much. ``fails`` lists every failed
condition. ``full`` renders every event. All levels flag illustrative parameters.
"""

from __future__ import annotations

import copy

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import ir
from .compile import ENGINE_VERSION
from .document import UNITS
from .evaluate import Unknown

if TYPE_CHECKING:
    from .engine import Decision

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
        if kind == "money" and rounding is not None:
            value = value.quantize(rounding.unit)
        text = format(value, "f")
        return text
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


def _cites(cites: tuple[ir.Cite, ...]) -> str:
    return "、".join(c.render() for c in cites) if cites else ""


def _cites_lang(cites: tuple[ir.Cite, ...], lang: str) -> str:
    joiner = "、" if lang == "zh" else "; "
    return joiner.join(c.render() for c in cites)


def _cell_text(names: _Names, table: ir.Table, row: ir.Row, cell: tuple[Any, ...], lang: str) -> str:
    """One tested cell in words: what the value was, what the rule asked, and the margin."""
    t = _T[lang]
    col, actual, passed, a, _b = cell
    column_expr = table.inputs[col]
    test = row.tests[col]
    kind = column_expr.type
    column = column_expr.name if isinstance(column_expr, ir.Ref) else None
    left = names.label(column, lang) if column else formula(names, column_expr, lang)
    unit = names.unit(column, lang) if column else ""
    actual_text = names.show(actual, column, kind, lang) + (unit if actual is not None else "")
    if test.kind == "compare" and test.op in ("<", "<=", ">", ">=") and \
            isinstance(actual, (int, Decimal)) and isinstance(a, (int, Decimal)):
        if isinstance(test.a, ir.Ref):
            right, limit_unit = names.label(test.a.name, lang), names.unit(test.a.name, lang)
        elif isinstance(test.a, ir.Const):
            right, limit_unit = "", unit
        else:
            right, limit_unit = formula(names, test.a, lang), unit
        diff = Decimal(actual) - Decimal(a)
        rel = t["above"] if diff > 0 else t["below"] if diff < 0 else t["equal"]
        amount = fmt(abs(diff), kind, lang, names.rounding) + unit
        margin = "" if diff == 0 else (" " + amount if lang == "zh" else t["margin"].format(amount=amount))
        return t["pass_cmp" if passed is True else "fail_cmp"].format(
            left=left, actual=actual_text, rel=rel, right=right + (" " if right else ""),
            limit=fmt(a, kind, lang, names.rounding) + limit_unit, margin=margin, cell=test.text)
    if test.kind == "compare" and test.op == "==" and isinstance(test.a, ir.Const):
        expected = names.show(test.a.value, column, kind, lang)
        detail = _comparison_detail(names, column, lang) if column else ""
        if passed is True:
            return t["pass_eq"].format(left=left, actual=actual_text) + detail
        return t["fail_eq"].format(left=left, actual=actual_text, expected=expected) + detail
    return t["pass_generic" if passed is True else "fail_generic"].format(left=left, actual=actual_text,
                                                                           cell=test.text)


def _comparison_detail(names: _Names, name: str, lang: str) -> str:
    """For a yes/no value defined as a comparison of two numbers, the numbers and the margin."""
    node = names.derived.get(name)
    expr = node.expr if node is not None else None
    if not isinstance(expr, ir.Compare) or expr.op not in ("<", "<=", ">", ">="):
        return ""

    def value_of(e: ir.Expr) -> tuple[str, Any, str]:
        if isinstance(e, ir.Ref):
            return names.label(e.name, lang), names.values.get(e.name), names.unit(e.name, lang)
        if isinstance(e, ir.Const):
            return "", e.value, ""
        return formula(names, e, lang), None, ""

    left, a, unit = value_of(expr.left)
    right, b, right_unit = value_of(expr.right)
    if not isinstance(a, (int, Decimal)) or not isinstance(b, (int, Decimal)) or isinstance(a, bool):
        return ""
    t = _T[lang]
    kind = expr.left.type
    diff = Decimal(a) - Decimal(b)
    rel = t["above"] if diff > 0 else t["below"] if diff < 0 else t["equal"]
    amount = fmt(abs(diff), kind, lang, names.rounding) + unit
    margin = "" if diff == 0 else (" " + amount if lang == "zh" else t["margin"].format(amount=amount))
    text = t["pass_cmp"].format(left=left, actual=fmt(a, kind, lang, names.rounding) + unit, rel=rel,
                                right=right + (" " if right else ""),
                                limit=fmt(b, kind, lang, names.rounding) + (right_unit or unit)) + margin
    return f"（{text}）" if lang == "zh" else f" ({text})"


def _last_values(events: tuple[tuple[Any, ...], ...]) -> dict[str, Any]:
    """The value of every entity-level name as read or computed in the trace."""
    out: dict[str, Any] = {}
    for e in events:
        if e[0] in ("input", "derived") and e[2] is None:
            out[e[1]] = e[3]
        elif e[0] == "param":
            out[e[1]] = e[3]
        elif e[0] == "output":
            out[f"{e[1]}.{e[2]}"] = e[3]
    return out


def _formula_line(names: _Names, output: ir.OutputNode, values: dict[str, Any], lang: str) -> str:
    t = _T[lang]
    from .expressions import refs_of

    items = []
    for ref in sorted(refs_of(output.expr)):
        if ref in values and names.kind(ref) != "list":
            value = values[ref]
            shown = names.show(value, ref, names.kind(ref), lang)
            known = value is not None and not isinstance(value, Unknown)
            items.append(f"{names.label(ref, lang)} {shown}{names.unit(ref, lang) if known else ''}")
    text = t["formula"].format(label=getattr(output.label, lang), formula=formula(names, output.expr, lang))
    return text + (t["values"].format(items=t["item_sep"].join(items)) if items else "")


def _row_line(names: _Names, table: ir.Table, row: ir.Row, event: tuple[Any, ...], lang: str) -> str | None:
    """A failed row: its id, the first cell that failed, and the row's clause."""
    t = _T[lang]
    if not event[4]:
        return None
    text = _cell_text(names, table, row, event[4][-1], lang)
    cites = _cites_lang(row.cites, lang)
    label = t["rule"].format(row=row.id).strip(" （）()")
    where = (f"（{cites}）" if lang == "zh" else f" ({cites})") if cites else ""
    return f"{label}{t['colon']}{text}{where}{t['period']}"


def render(decision: Decision, lang: str = "zh", level: str = "summary") -> str:
    """summary: result, deciding rule, its conditions, why better rules failed, placeholders.
    fails: also every failed condition of every table used, and each output's formula.
    full: also the clauses of every value used, and the whole trace."""
    if lang not in _T:
        raise ValueError(f"lang must be zh or en, not {lang!r}")
    if level not in ("summary", "fails", "full"):
        raise ValueError(f"level must be summary, fails or full, not {level!r}")
    t = _T[lang]
    names = _names_for(decision.policy)
    events = decision.events
    lines: list[str] = []
    row_events: dict[tuple[str, int], tuple[Any, ...]] = {}
    fired: dict[str, tuple[int, ...]] = {}
    illustrative: dict[str, tuple[Any, ...]] = {}
    for e in events:
        if e[0] == "row":
            row_events[(e[1], e[2])] = e
        elif e[0] == "fired":
            fired[e[1]] = e[2]
        elif e[0] == "param" and e[5] == "illustrative":
            illustrative.setdefault(e[1], e)
    values = _last_values(events)
    names.values = values
    for decision_id, outcome in decision.items():
        node = names.decisions[decision_id]
        label = getattr(node.label, lang)
        if outcome.status == "not_in_force":
            lines.append(f"{label}{t['colon']}{t['not_in_force']}{t['period']}")
            lines.append("  " + t["not_in_force_reason"].format(day=decision.as_of.isoformat(), reason=outcome.reason))
            if outcome.cites:
                lines.append("  " + t["basis"].format(cites=_cites_lang(outcome.cites, lang)) + t["period"])
            continue
        if outcome.status == "needs_information":
            lines.append(f"{label}{t['colon']}{t['needs_information']}{t['period']}")
            lines.append("  " + t["missing"].format(items=", ".join(outcome.missing)))
        else:
            parts = []
            for output in node.outputs:
                value = outcome.outputs.get(output.short)
                known = value is not None and not isinstance(value, Unknown)
                parts.append(f"{getattr(output.label, lang)} {names.show(value, output.name, output.type, lang)}"
                             f"{names.unit(output.name, lang) if known else ''}")
            lines.append(f"{label}{t['colon']}" + t["sep"].join(parts) + t["period"])
        deps = names.depends(decision_id)
        table = names.tables.get(decision_id)
        # the rule that decided, with its clause and the conditions it checked
        shown_cites: set[ir.Cite] = set()
        if table is not None and decision_id in fired:
            for index in fired[decision_id]:
                row = table.rows[index]
                shown_cites.update(row.cites)
                lines.append("  " + t["basis"].format(cites=_cites_lang(row.cites, lang) or "-")
                             + t["rule"].format(row=row.id) + t["period"])
                event = row_events.get((decision_id, index))
                for cell in event[4] if event else ():
                    lines.append("    " + _cell_text(names, table, row, cell, lang) + t["period"])
        if node.cites and not set(node.cites) <= shown_cites:
            lines.append("  " + t["basis"].format(cites=_cites_lang(node.cites, lang)) + t["period"])
        # why the rules before it did not apply (summary), or every failed condition (fails, full)
        owners = [decision_id] if decision_id in names.tables else []
        if level != "summary":
            owners += sorted(n for n in deps if n in names.tables and n != decision_id)
        for owner in owners:
            owner_table = names.tables[owner]
            first_fired = min(fired.get(owner, (len(owner_table.rows),)))
            for index, row in enumerate(owner_table.rows):
                event = row_events.get((owner, index))
                if event is None or event[3] is not False:
                    continue
                if level == "summary" and index > first_fired:
                    continue
                text = _row_line(names, owner_table, row, event, lang)
                if text:
                    lines.append("  " + text)
        if (level != "summary" or table is None) and outcome.status == "decided":
            for output in node.outputs:
                if output.expr is not None and not isinstance(output.expr, ir.Const):
                    lines.append("  " + _formula_line(names, output, values, lang) + t["period"])
        if level == "full" and outcome.status != "not_in_force":
            used = {e[1] for e in events if e[0] in ("derived", "param")} & deps
            extra = []
            for used_name in sorted(used):
                item = names.derived.get(used_name) or names.parameters.get(used_name)
                if item is not None and item.cites:
                    extra.append(t["also_item"].format(label=names.label(used_name, lang),
                                                       cites=_cites_lang(item.cites, lang)))
            if extra:
                lines.append("  " + t["also"].format(items=t["sep"].join(extra)) + t["period"])
        for param_name, event in illustrative.items():
            if param_name in deps:
                param = names.parameters[param_name]
                dated = next((v for v in param.values if v.start == event[4]), None)
                if lang == "en":
                    note = (dated.note_en if dated and dated.note_en else param.note_en) or \
                        (dated.note if dated and dated.note else param.note)
                else:
                    note = dated.note if dated and dated.note else param.note
                note = note or t["illustrative_p"]
                lines.append("  " + t["illustrative"].format(
                    label=getattr(param.label, lang), value=fmt(event[3], param.type, lang, names.rounding),
                    unit=names.unit(param_name, lang), note=note))
    if level == "full":
        lines.append("")
        lines.append("—" * 8 + (" 计算过程 " if lang == "zh" else " trace ") + "—" * 8)
        shown_params: set[tuple[Any, ...]] = set()
        for e in events:
            if e[0] == "param":
                key = (e[1], e[2], e[4])
                if key in shown_params:
                    continue
                shown_params.add(key)
            line = _event_line(names, e, lang)
            if line:
                lines.append(line)
    return "\n".join(lines)


def _event_line(names: _Names, e: tuple[Any, ...], lang: str) -> str | None:
    t = _T[lang]
    kind = e[0]
    if kind == "input":
        where = f"[{e[2]}]" if e[2] is not None else ""
        return "· " + t["input"].format(label=names.label(e[1], lang) + where,
                                        value=names.show(e[3], e[1], names.kind(e[1]), lang),
                                        unit=names.unit(e[1], lang) if not isinstance(e[3], Unknown) else "")
    if kind == "param":
        prov = {"sourced": t["sourced"], "derived": t["derived_p"], "illustrative": t["illustrative_p"]}[e[5]]
        key = f"[{', '.join(e[2])}]" if e[2] else ""
        return "· " + t["param"].format(label=names.label(e[1], lang) + key,
                                        value=fmt(e[3], names.kind(e[1]), lang, names.rounding),
                                        unit=names.unit(e[1], lang), start=e[4].isoformat(), prov=prov)
    if kind == "derived":
        where = f"[{e[2]}]" if e[2] is not None else ""
        node = names.derived.get(e[1])
        how = f" = {formula(names, node.expr, lang)}" if node is not None and node.expr is not None else ""
        return "· " + t["derived"].format(label=names.label(e[1], lang) + where,
                                          value=names.show(e[3], e[1], names.kind(e[1]), lang),
                                          unit=names.unit(e[1], lang) if not isinstance(e[3], Unknown) else "") + how
    if kind == "row":
        table = names.tables[e[1]]
        row = table.rows[e[2]]
        result = t["row_fired"] if e[3] is True else t["row_failed"] if e[3] is False else t["row_unknown"]
        text = "· " + names.label(e[1], lang) + " " + t["row_line"].format(row=row.id, result=result)
        if e[3] is False and e[4]:
            text += t["colon"] + _cell_text(names, table, row, e[4][-1], lang)
        cites = _cites_lang(row.cites, lang)
        return text + (f"（{cites}）" if lang == "zh" and cites else f" ({cites})" if cites else "")
    if kind == "nomatch":
        return "· " + t["nomatch"].format(owner=names.label(e[1], lang))
    if kind == "output":
        name = f"{e[1]}.{e[2]}"
        return "· " + t["output"].format(label=names.label(e[1], lang) + "/" + names.label(name, lang),
                                         value=names.show(e[3], name, names.kind(name), lang),
                                         unit=names.unit(name, lang) if not isinstance(e[3], Unknown) else "")
    return None


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

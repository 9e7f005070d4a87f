"""The expression language: a whitelisted subset of Python expression syntax.

Text is parsed with ``ast.parse(mode="eval")`` and every node is checked against a whitelist,
then translated into IR nodes (``ir.py``) and type-checked against the declared names. Nothing
is ever evaluated here, and policy text never reaches ``eval`` or ``exec``.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from . import ir
from .ir import NUMERIC

MAX_EXPRESSION_LENGTH = 2000
MAX_EXPONENT = 100
MAX_DEPTH = 40

AGGREGATES = {"sum", "count", "any", "all", "min", "max", "collect"}
FUNCTIONS = {
    "min", "max", "abs", "floor", "ceil", "round_money", "round", "date", "age",
    "months_between", "days_between", "add_months", "add_days",
} | AGGREGATES
_CONSTANT_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class ExpressionError(Exception):
    """A problem in one expression; ``code`` is a registered diagnostic code."""

    def __init__(self, code: str, message: str, hint: str | None = None, column: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.column = column


@dataclass(frozen=True)
class Resolved:
    """What a name means in the current scope."""

    name: str  # the qualified name to reference at run time
    type: str
    scope: str = "entity"  # "entity" or "member"
    values: tuple[str, ...] = ()  # enum values


#: (name, in_member_scope) -> Resolved | None; raises nothing.
Resolver = Callable[[str, bool], Resolved | None]


class _Compiler:
    def __init__(self, text: str, resolve: Resolver, known_names: Callable[[bool], set[str]],
                 decision_ids: set[str]):
        self.text = text
        self.resolve = resolve
        self.known_names = known_names
        self.decision_ids = decision_ids
        self.refs: set[str] = set()

    def fail(self, code: str, message: str, node: ast.AST | None = None, hint: str | None = None) -> ExpressionError:
        column = getattr(node, "col_offset", None)
        return ExpressionError(code, message, hint, None if column is None else column + 1)

    def compile(self, node: ast.AST, member: bool, depth: int = 0) -> ir.Expr:
        if depth > MAX_DEPTH:
            raise self.fail("PE223", f"expression nested more than {MAX_DEPTH} levels", node)
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node.id, node, member)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, member)
        if isinstance(node, ast.UnaryOp):
            operand = self.compile(node.operand, member, d)
            if isinstance(node.op, ast.Not):
                self.expect_boolean(operand, node, "`not`")
                return ir.Unary("not", operand, "boolean")
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                self.expect_numeric(operand, node, "a sign")
                if isinstance(operand, ir.Const) and isinstance(node.op, ast.USub):
                    return ir.Const(-operand.value, operand.type)
                return ir.Unary("neg" if isinstance(node.op, ast.USub) else "pos", operand, operand.type)
            raise self.fail("PE223", "bitwise operators are not allowed", node)
        if isinstance(node, ast.BinOp):
            return self.binary(node, member, d)
        if isinstance(node, ast.BoolOp):
            operands = tuple(self.compile(v, member, d) for v in node.values)
            op = "and" if isinstance(node.op, ast.And) else "or"
            for operand in operands:
                self.expect_boolean(operand, node, f"`{op}`")
            return ir.BoolOp(op, operands)
        if isinstance(node, ast.Compare):
            return self.compare(node, member, d)
        if isinstance(node, ast.IfExp):
            condition = self.compile(node.test, member, d)
            self.expect_boolean(condition, node.test, "the condition of `if`")
            then = self.compile(node.body, member, d)
            otherwise = self.compile(node.orelse, member, d)
            return ir.IfElse(condition, then, otherwise, self.join(then, otherwise, node))
        if isinstance(node, ast.Call):
            return self.call(node, member, d)
        raise self.fail("PE223", f"{_describe(node)} is not allowed in policy expressions", node,
                        hint="see docs/expression-language.md for what is allowed")

    # -- leaves -----------------------------------------------------------------------------

    def constant(self, node: ast.Constant) -> ir.Const:
        value = node.value
        if value is None:
            return ir.Const(None, "null")
        if isinstance(value, bool):
            return ir.Const(value, "boolean")
        if isinstance(value, int):
            return ir.Const(value, "integer")
        if isinstance(value, float):
            segment = ast.get_source_segment(self.text, node) or repr(value)
            try:
                return ir.Const(Decimal(segment.replace("_", "")), "decimal")
            except InvalidOperation:  # pragma: no cover - ast accepted it as a float
                raise self.fail("PE226", f"cannot read the number {segment}", node) from None
        if isinstance(value, str):
            return ir.Const(value, "text")
        raise self.fail("PE223", f"{type(value).__name__} literals are not allowed", node)

    def name(self, name: str, node: ast.AST, member: bool) -> ir.Expr:
        if name.startswith("_"):
            raise self.fail("PE223", f"names starting with `_` are not allowed (`{name}`)", node)
        if name in _CONSTANT_NAMES:
            value = _CONSTANT_NAMES[name]
            return ir.Const(value, "null" if value is None else "boolean")
        if name == "as_of":
            return ir.AsOf()
        if name == "members":
            raise self.fail("PE221", "`members` can only be the first argument of an aggregate", node,
                            hint="for example sum(members, wages) or count(members)")
        resolved = self.resolve(name, member)
        if resolved is None:
            hint = _did_you_mean(name, self.known_names(member))
            raise self.fail("PE220", f"unknown name `{name}`", node, hint=hint)
        self.refs.add(resolved.name)
        return ir.Ref(resolved.name, resolved.type, resolved.scope)

    def attribute(self, node: ast.Attribute, member: bool) -> ir.Expr:
        # `decision.output` names a decision output; anything else is attribute access.
        if isinstance(node.value, ast.Name) and node.value.id in self.decision_ids:
            if node.attr.startswith("_"):
                raise self.fail("PE223", "names starting with `_` are not allowed", node)
            return self.name(f"{node.value.id}.{node.attr}", node, member)
        raise self.fail("PE223", "attribute access is not allowed", node,
                        hint="only `decision_id.output` names are allowed with a dot")

    # -- operators --------------------------------------------------------------------------

    def binary(self, node: ast.BinOp, member: bool, depth: int) -> ir.Expr:
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
               ast.Mod: "%", ast.Pow: "**"}
        op = ops.get(type(node.op))
        if op is None:
            raise self.fail("PE223", f"the operator {type(node.op).__name__} is not allowed", node)
        if op == "**":
            exponent = node.right
            if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub):
                exponent = exponent.operand
            if not (isinstance(exponent, ast.Constant) and type(exponent.value) is int):
                raise self.fail("PE225", "the exponent of ** must be a whole-number constant", node,
                                hint=f"at most {MAX_EXPONENT}")
            if abs(exponent.value) > MAX_EXPONENT:
                raise self.fail("PE225", f"exponent {exponent.value} is larger than {MAX_EXPONENT}", node)
        left = self.compile(node.left, member, depth)
        right = self.compile(node.right, member, depth)
        self.expect_numeric(left, node, f"`{op}`")
        self.expect_numeric(right, node, f"`{op}`")
        kind = _arith_type(op, left.type, right.type)
        if op == "**" and kind == "integer" and not (isinstance(right, ir.Const) and right.value >= 0):
            kind = "decimal"  # a whole number to a negative power is a fraction (3 ** -1)
        return ir.Binary(op, left, right, kind)

    def compare(self, node: ast.Compare, member: bool, depth: int) -> ir.Expr:
        parts: list[ir.Expr] = []
        left = self.compile(node.left, member, depth)
        for op_node, right_node in zip(node.ops, node.comparators):
            if isinstance(op_node, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                    raise self.fail("PE223", "`in` needs a literal list such as (\"urban\", \"rural\")",
                                    right_node)
                options = tuple(self.compile(e, member, depth) for e in right_node.elts)
                for option in options:
                    self.expect_comparable(left, option, node)
                parts.append(ir.In(left, options, isinstance(op_node, ast.NotIn)))
                left = None  # type: ignore[assignment]
                continue
            symbols = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
            op = symbols.get(type(op_node))
            if op is None:
                raise self.fail("PE223", f"`{type(op_node).__name__}` comparisons are not allowed", node)
            if left is None:
                raise self.fail("PE223", "a comparison cannot follow `in`", node)
            right = self.compile(right_node, member, depth)
            self.expect_comparable(left, right, node, ordered=op not in ("==", "!="))
            parts.append(ir.Compare(op, left, right))
            left = right
        return parts[0] if len(parts) == 1 else ir.BoolOp("and", tuple(parts))

    def call(self, node: ast.Call, member: bool, depth: int) -> ir.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail("PE223", "only the documented functions can be called", node)
        fn = node.func.id
        if fn not in FUNCTIONS:
            raise self.fail("PE224", f"unknown function `{fn}`", node,
                            hint=_did_you_mean(fn, FUNCTIONS) or "see docs/expression-language.md")
        for kw in node.keywords:
            if kw.arg != "where" or fn not in {"sum", "min", "max", "collect"}:
                raise self.fail("PE224", f"`{fn}` takes no keyword argument `{kw.arg}`", node)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail("PE223", "starred arguments are not allowed", node)
        args = node.args
        if fn in AGGREGATES and args and isinstance(args[0], ast.Name) and args[0].id == "members":
            return self.aggregate(fn, node, member, depth)
        if node.keywords:
            raise self.fail("PE224", "`where=` only goes with an aggregate over members", node)
        if fn in ("sum", "count", "any", "all", "collect"):
            raise self.fail("PE224", f"`{fn}` takes `members` as its first argument", node,
                            hint=f"for example {fn}(members, ...)")

        def arity(low: int, high: int | None = None) -> None:
            high = low if high is None else high
            if not (low <= len(args) <= high):
                want = str(low) if low == high else f"{low} to {high}"
                raise self.fail("PE224", f"`{fn}` takes {want} arguments, not {len(args)}", node)

        if fn == "date":
            arity(1)
            arg = args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise self.fail("PE224", "date() takes a literal such as date(\"2022-06-01\")", node)
            try:
                return ir.Const(dt.date.fromisoformat(arg.value), "date")
            except ValueError:
                raise self.fail("PE224", f"`{arg.value}` is not a date (YYYY-MM-DD)", node) from None
        if fn == "round":
            arity(2)
            unit = args[1]
            if not (isinstance(unit, ast.Constant) and isinstance(unit.value, str)):
                raise self.fail("PE224", "round() takes a unit literal such as round(x, \"0.01\")", node)
            try:
                quantum = Decimal(unit.value)
            except InvalidOperation:
                raise self.fail("PE224", f"`{unit.value}` is not a number", node) from None
            value = self.compile(args[0], member, depth)
            self.expect_numeric(value, node, "round()")
            return ir.Call("round", (value, ir.Const(quantum, "decimal")), value.type)
        compiled = tuple(self.compile(a, member, depth) for a in args)
        if fn in ("min", "max"):
            if len(compiled) < 2:
                raise self.fail("PE224", f"`{fn}` takes two or more values (or members, ...)", node)
            result = compiled[0].type
            for arg_ir in compiled[1:]:
                self.expect_comparable(compiled[0], arg_ir, node, ordered=True)
                result = _join_numeric(result, arg_ir.type)
            return ir.Call(fn, compiled, result)
        if fn in ("abs", "floor", "ceil", "round_money"):
            arity(1)
            self.expect_numeric(compiled[0], node, f"{fn}()")
            kind = {"abs": compiled[0].type, "floor": "integer", "ceil": "integer", "round_money": "money"}[fn]
            return ir.Call(fn, compiled, kind)
        if fn == "age":
            arity(1)
            self.expect(compiled[0], "date", node, "age()")
            return ir.Call(fn, compiled, "integer")
        if fn in ("months_between", "days_between"):
            arity(2)
            for a in compiled:
                self.expect(a, "date", node, f"{fn}()")
            return ir.Call(fn, compiled, "integer")
        # add_months / add_days
        arity(2)
        self.expect(compiled[0], "date", node, f"{fn}()")
        self.expect(compiled[1], "integer", node, f"{fn}()")
        return ir.Call(fn, compiled, "date")

    def aggregate(self, fn: str, node: ast.Call, member: bool, depth: int) -> ir.Expr:
        if member:
            raise self.fail("PE223", "aggregates over members cannot be nested", node)
        args = node.args[1:]
        where_node = next((kw.value for kw in node.keywords if kw.arg == "where"), None)
        body: ir.Expr | None = None
        where: ir.Expr | None = None
        if fn == "count":
            if len(args) > 1:
                raise self.fail("PE224", "count(members) or count(members, condition)", node)
            if args:
                where = self.compile(args[0], True, depth)
                self.expect_boolean(where, node, "the condition of count()")
            return ir.Aggregate(fn, None, where, "integer")
        if fn in ("any", "all"):
            if len(args) != 1:
                raise self.fail("PE224", f"{fn}(members, condition)", node)
            where = self.compile(args[0], True, depth)
            self.expect_boolean(where, node, f"the condition of {fn}()")
            return ir.Aggregate(fn, None, where, "boolean")
        if len(args) != 1:
            raise self.fail("PE224", f"{fn}(members, value, where=condition)", node)
        body = self.compile(args[0], True, depth)
        if where_node is not None:
            where = self.compile(where_node, True, depth)
            self.expect_boolean(where, node, "`where=`")
        if fn == "collect":
            return ir.Aggregate(fn, body, where, "list")
        if fn == "sum":
            self.expect_numeric(body, node, "sum()")
        elif body.type not in NUMERIC | {"date"}:
            raise self.fail("PE221", f"{fn}() needs numbers or dates, not {body.type}", node)
        return ir.Aggregate(fn, body, where, body.type)

    # -- type checks ------------------------------------------------------------------------

    def expect(self, value: ir.Expr, kind: str, node: ast.AST, what: str) -> None:
        if value.type not in (kind, "null", "any"):
            raise self.fail("PE221", f"{what} needs {_a(kind)}, not {_a(value.type)}", node)

    def expect_boolean(self, value: ir.Expr, node: ast.AST, what: str) -> None:
        self.expect(value, "boolean", node, what)

    def expect_numeric(self, value: ir.Expr, node: ast.AST, what: str) -> None:
        if value.type not in NUMERIC | {"null", "any"}:
            raise self.fail("PE221", f"{what} needs numbers, not {_a(value.type)}", node)

    def expect_comparable(self, left: ir.Expr, right: ir.Expr, node: ast.AST, ordered: bool = False) -> None:
        a, b = left.type, right.type
        if "null" in (a, b) or "any" in (a, b):
            return
        if a in NUMERIC and b in NUMERIC:
            return
        textual = {"text", "enum"}
        if a in textual and b in textual:
            self._check_enum_literal(left, right, node)
            self._check_enum_literal(right, left, node)
            if ordered:
                raise self.fail("PE221", "text values can only be compared with == and !=", node)
            return
        if a == b and a in ("date", "boolean"):
            if a == "boolean" and ordered:
                raise self.fail("PE221", "booleans can only be compared with == and !=", node)
            return
        raise self.fail("PE221", f"cannot compare {_a(a)} with {_a(b)}", node)

    def _check_enum_literal(self, enum_side: ir.Expr, literal: ir.Expr, node: ast.AST) -> None:
        if isinstance(enum_side, ir.Ref) and isinstance(literal, ir.Const) and isinstance(literal.value, str):
            resolved = self.resolve(enum_side.name, enum_side.scope == "member")
            if resolved is not None and resolved.values and literal.value not in resolved.values:
                raise self.fail(
                    "PE221",
                    f"`{literal.value}` is not a value of `{enum_side.name}`",
                    node,
                    hint=_did_you_mean(literal.value, resolved.values) or f"one of {', '.join(resolved.values)}",
                )

    def join(self, a: ir.Expr, b: ir.Expr, node: ast.AST) -> str:
        if a.type == "null":
            return b.type
        if b.type == "null" or a.type == b.type:
            return a.type
        if a.type in NUMERIC and b.type in NUMERIC:
            return _join_numeric(a.type, b.type)
        if {a.type, b.type} <= {"text", "enum"}:
            return "text"
        raise self.fail("PE221", f"the two branches give {_a(a.type)} and {_a(b.type)}", node)


def _a(kind: str) -> str:
    return {"integer": "an integer", "enum": "an enum value", "any": "any value", "null": "null"}.get(
        kind, f"a {kind}" if kind != "money" else "money"
    )


def _join_numeric(a: str, b: str) -> str:
    if "null" in (a, b):
        return b if a == "null" else a
    if a == b:
        return a
    if "money" in (a, b):
        return "money"
    return "decimal"


def _arith_type(op: str, a: str, b: str) -> str:
    if op == "//":
        return "integer"
    if op in ("%", "**"):
        return a if a != "null" else b
    if op in ("+", "-"):
        return _join_numeric(a, b)
    if op == "*":
        if "money" in (a, b):
            return "money"
        return "integer" if a == b == "integer" else "decimal"
    # division
    if a == "money" and b != "money":
        return "money"
    return "decimal"


def _describe(node: ast.AST) -> str:
    names = {
        ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
        ast.Subscript: "subscripting", ast.JoinedStr: "an f-string", ast.NamedExpr: "`:=`",
        ast.Await: "await", ast.Yield: "yield", ast.Dict: "a dict literal", ast.Starred: "`*`",
        ast.List: "a list literal", ast.Tuple: "a tuple literal", ast.Set: "a set literal",
        ast.Slice: "a slice",
    }
    return names.get(type(node), type(node).__name__)


def _did_you_mean(name: str, candidates: Any) -> str | None:
    from .diagnostics import did_you_mean

    return did_you_mean(name, candidates)


def parse(text: str) -> ast.expr:
    """Parse expression text with the standard library; raises ExpressionError (PE226)."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError("PE226", f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError("PE226", f"cannot parse `{text.strip()}`: {exc.msg}",
                              column=exc.offset) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError("PE226", f"cannot parse `{text.strip()}`: {exc}") from None
    return tree.body


def compile_expression(text: str, resolve: Resolver, known_names: Callable[[bool], set[str]],
                       decision_ids: set[str], member: bool = False) -> tuple[ir.Expr, set[str]]:
    """Compile expression text to IR; returns the IR and the set of names it references."""
    node = parse(text)
    compiler = _Compiler(text.strip(), resolve, known_names, decision_ids)
    expr = compiler.compile(node, member)
    return expr, compiler.refs


def refs_of(expr: ir.Expr | None) -> set[str]:
    """Every name an IR expression references (used for dependency ordering)."""
    out: set[str] = set()

    def walk(e: Any) -> None:
        if e is None:
            return
        if isinstance(e, ir.Ref):
            out.add(e.name)
        elif isinstance(e, (ir.Unary,)):
            walk(e.operand)
        elif isinstance(e, (ir.Binary, ir.Compare)):
            walk(e.left)
            walk(e.right)
        elif isinstance(e, ir.BoolOp):
            for o in e.operands:
                walk(o)
        elif isinstance(e, ir.IfElse):
            walk(e.condition)
            walk(e.then)
            walk(e.otherwise)
        elif isinstance(e, ir.In):
            walk(e.item)
            for o in e.options:
                walk(o)
        elif isinstance(e, ir.Call):
            for a in e.args:
                walk(a)
        elif isinstance(e, ir.Aggregate):
            walk(e.body)
            walk(e.where)

    walk(expr)
    return out


def table_refs(table: ir.Table | None) -> set[str]:
    """Every name a decision table references: input columns, cell endpoints, outputs, defaults."""
    if table is None:
        return set()
    out: set[str] = set()
    for e in (*table.inputs, *table.defaults):
        out |= refs_of(e)

    def test_refs(t: ir.Test) -> None:
        out.update(refs_of(t.a))
        out.update(refs_of(t.b))
        for sub in t.tests:
            test_refs(sub)

    for row in table.rows:
        for t in row.tests:
            test_refs(t)
        for o in row.outputs:
            out |= refs_of(o)
    return out

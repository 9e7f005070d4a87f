"""Code generation: the compiled, type-checked IR as straight-line Python functions.

This is the only module of the library that calls the builtins compile and exec, and it does so only
on source it generated itself (see `run`). Two generators live here:

- `_Gen`: one function per derived value, per decision table and per decision runner of a
  `evaluate.Backend` (instead of one closure per IR node);
- `facts_reader`: one function reading and type-checking a policy's declared inputs from the
  facts of an entity or of its members (used by `intake`).

Both are optimisations only: the generated functions do exactly what the closures of
``evaluate`` and the reading loop of ``intake`` did, in the same order (same values, same trace
events, same errors). ``evaluate.Backend(..., generate=False)`` (or ``evaluate.GENERATE = False``)
gives the closures, the reference.

Why executing the generated source is safe (see also docs/expression-language.md, "How policies
are executed"):

1. The source is assembled only from the fixed templates of this module, from identifiers it
   makes up (``_k12``, ``_t3``, ``_d4``...), from operator tokens taken from fixed whitelists
   (``_COMPARE_OPS``, ``_INT_OPS``) and from decimal digits of ints it counts. No text of a
   policy or of the facts (no name, string, number, label or path) is pasted into the source:
   every value from the IR and every helper is bound in the namespace under a generated name
   (the constants table, ``_Gen.const``).
2. Before it is compiled, the source is parsed with ``ast`` and checked by `verify` against a
   whitelist: only the node types the generators emit; every name a generated identifier or one
   of a fixed set of helper names; attributes only from a fixed set (never a dunder); no string
   or float constant, only ``None``/``True``/``False``/small ints; no import, lambda,
   comprehension, class, ``global``, ``with``, ``yield``, etc. A source that fails is never
   compiled: `CodegenError` (an internal error) is raised.
3. It runs with ``__builtins__`` set to an explicit small dict (`_BUILTINS`).
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import DivisionByZero, InvalidOperation, Decimal
from typing import Any

from . import ir
from .evaluate import (
    _ABSENT,
    _UNSET,
    CONTEXT,
    Backend,
    ROUNDING_MODES,
    NotInForce,
    Unknown,
    _age,
    _apply_hit,
    _call_impl,
    _merge,
    _raw_binary,
)


class CodegenError(Exception):
    """Internal error: generated source failed verification (it is never compiled or run)."""


class Unsupported(Exception):
    """A node kind the generator leaves to the closures (never raised to callers)."""


_Unsupported = Unsupported


# -- verification -------------------------------------------------------------------------------

#: the builtins the generated code may use (the exec namespace's ``__builtins__``)
_BUILTINS: dict[str, Any] = {"int": int, "bool": bool, "str": str, "type": type, "isinstance": isinstance,
                             "enumerate": enumerate, "len": len, "dict": dict, "list": list, "tuple": tuple,
                             "range": range, "frozenset": frozenset, "sorted": sorted,
                             "ValueError": ValueError, "TypeError": TypeError, "KeyError": KeyError,
                             "OverflowError": OverflowError, "ZeroDivisionError": ZeroDivisionError}

#: generated identifiers: an underscore, one letter, digits (``_k12``, ``_d4``, ``_T7``)
_GENERATED = re.compile(r"^_[A-Za-z]\d+$")
#: fixed helper and local names the templates use (besides the generated identifiers)
_FIXED_NAMES = frozenset(_BUILTINS) | frozenset((
    # evaluate helpers (see _HELPERS)
    "_Unknown", "_merge", "_ABSENT", "_UNSET", "_MEMBERS", "_DivisionByZero", "_InvalidOperation",
    "_add", "_sub", "_mul", "_div", "_min", "_max", "_abs", "_age", "_Decimal", "_CONTEXT", "_ZERO",
    "_apply_hit", "_NotInForce", "_date", "_member_path", "_present", "_unknown_outs", "_row_indices",
    "_unknowns",
    # intake helpers (see facts_reader)
    "_MISSING", "_entity_error", "_member_error", "_to_plain", "_not_a_mapping", "_read",
    # fixed locals and parameters of the templates
    "_c", "_m", "_v", "_t", "_u", "_r", "_q", "_w", "_x", "_i", "_passed", "_result", "_matched",
    "_values", "_unknown_rows", "_unknown", "_stop", "_indices", "_cells", "_missing", "_outs",
    "_test", "_ta", "_tb", "_tv", "_mi", "_mo", "_uo", "_src", "_out", "_errors", "_exc", "_rows",
    "_members", "c", "m", "as_of", "trace", "memo", "values", "members",
))
#: attributes the templates read or call (on the case, its trace, dicts, lists, decimals)
_ATTRIBUTES = frozenset((
    "trace", "as_of", "values", "members", "memo", "outcomes", "fired", "append", "get", "strip",
    "is_finite", "quantize", "missing", "cites", "reason", "contains",
))
#: keyword arguments the templates pass (``Decimal.quantize``)
_KEYWORDS = frozenset(("rounding", "context"))
_SMALL_INT = 1 << 20
_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.If, ast.For,
    ast.While, ast.Break, ast.Continue, ast.Try, ast.ExceptHandler, ast.Expr, ast.BoolOp, ast.BinOp,
    ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.Starred, ast.IfExp, ast.Name, ast.Attribute,
    ast.Subscript, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Load, ast.Store,
    ast.And, ast.Or, ast.Not, ast.USub, ast.Add, ast.Sub, ast.Mult,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
)
_NODE_TYPES = frozenset(_NODES)


def verify(source: str) -> ast.Module:
    """Parse ``source`` and check it against the whitelist; raise `CodegenError` if it fails."""
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        raise CodegenError(f"generated source does not parse: {exc}") from None
    for top in tree.body:  # at the top level: function definitions only
        if not isinstance(top, ast.FunctionDef):
            raise CodegenError(f"generated source: {type(top).__name__} at the top level")
    allowed, names = _NODE_TYPES, set(_FIXED_NAMES)
    node: Any  # the checks below read the fields of the exact node type tested
    for node in ast.walk(tree):
        kind = type(node)  # exact types: no subclass of an allowed node passes
        if kind not in allowed:
            raise CodegenError(f"generated source: {kind.__name__} is not allowed")
        if kind is ast.Name:
            if node.id not in names:
                _check_name(node.id)
                names.add(node.id)
        elif kind is ast.Constant:
            value = node.value
            if not (value is None or value is True or value is False
                    or (type(value) is int and -_SMALL_INT <= value <= _SMALL_INT)):
                raise CodegenError(f"generated source: constant {value!r} is not allowed")
        elif kind is ast.Attribute:
            attr = node.attr
            if attr.startswith("_") or attr not in _ATTRIBUTES:
                raise CodegenError(f"generated source: attribute {attr!r} is not allowed")
        elif kind is ast.FunctionDef:
            _check_name(node.name)
            if node.decorator_list or node.returns is not None:
                raise CodegenError("generated source: decorated or annotated function")
        elif kind is ast.arguments:
            if (node.vararg or node.kwarg or node.kwonlyargs or node.kw_defaults
                    or node.defaults or node.posonlyargs):
                raise CodegenError("generated source: only plain positional parameters")
        elif kind is ast.arg:
            _check_name(node.arg)
            if node.annotation is not None:
                raise CodegenError("generated source: annotated parameter")
        elif kind is ast.keyword:
            if node.arg not in _KEYWORDS:
                raise CodegenError(f"generated source: keyword argument {node.arg!r} is not allowed")
        elif kind is ast.Starred:
            if type(node.value) is not ast.Name:
                raise CodegenError("generated source: starred argument that is not a name")
        elif kind is ast.ExceptHandler:
            if node.name is not None:
                _check_name(node.name)
    return tree


def _check_name(name: str) -> None:
    if name not in _FIXED_NAMES and not _GENERATED.match(name):
        raise CodegenError(f"generated source: name {name!r} is not allowed")


def run(source: str, namespace: dict[str, Any], filename: str) -> dict[str, Any]:
    """Verify ``source`` (generated by this module), then compile and execute it in ``namespace``
    with the explicit small builtins; the namespace, now holding the generated functions."""
    tree = verify(source)
    for key in namespace:
        if key != "__builtins__":
            _check_name(key)
    namespace["__builtins__"] = _BUILTINS
    code = compile(tree, filename, "exec")
    exec(code, namespace)  # noqa: S102 - verified generated source only, see the module docstring
    return namespace


# -- the evaluation backend ---------------------------------------------------------------------

_COMPARE_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}
_INT_OPS = {"+": "+", "-": "-", "*": "*"}
_DECIMAL_CALLS = {"+": "_add", "-": "_sub", "*": "_mul"}
#: IR type -> the exact Python type of its known values (as the intake and the arithmetic give them)
_TYPE_TESTS = {"money": "_Decimal", "decimal": "_Decimal", "integer": "int", "boolean": "bool",
               "date": "_date", "text": "str", "enum": "str"}
_HELPERS: dict[str, Any] = {}  # filled below, after the helpers are defined


def _op(table: dict[str, str], op: str | None) -> str:
    if op not in table:
        raise _Unsupported(f"operator {op!r}")
    return table[op]


def _digits(n: int) -> str:
    if type(n) is not int:  # only counted ints are formatted into the source
        raise _Unsupported(f"not an int: {n!r}")
    return str(n)


class _Gen:
    """Generated source for one Backend: functions share one namespace (the constants table)."""

    #: a derived value referenced once is generated inline at its reference (as well as in its own
    #: function); one referenced twice too, but only this deep (the code grows with each copy)
    INLINE_DEPTH = 2

    def __init__(self, backend: Backend):
        self.b = backend
        self.tracing = backend.tracing
        self.ns: dict[str, Any] = dict(_HELPERS)
        self._const_ids: dict[int, str] = {}
        self.chunks: list[str] = []
        self.fallbacks: list[tuple[str, Callable[[], Any]]] = []  # (ns name, build closure later)
        self.fn_names: dict[str, str] = {}  # derived name -> generated function name
        self.counter = 0
        self.refs: dict[str, int] = {}
        self.inline_depth = 0
        # per function being generated
        self.lines: list[str] = []
        self.indent = 1
        self.uses: set[str] = set()
        #: values already computed in an enclosing (dominating) block: key -> local holding it
        self.scopes: list[dict[tuple[Any, ...], Any]] = [{}]
        #: member variable -> local holding ``members[var]`` (inside aggregate loops)
        self.rows: dict[str, str] = {}

    # -- helpers --------------------------------------------------------------------------
    def new(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any) -> str:
        """The generated name bound to ``value`` in the namespace (the constants table)."""
        key = id(value)
        name = self._const_ids.get(key)
        if name is None or self.ns.get(name) is not value:
            name = self.new("_k")
            self.ns[name] = value
            self._const_ids[key] = name
        return name

    def fallback(self, build: Callable[[], Any]) -> str:
        """A closure of the old backend, built after every getter exists; called from the code."""
        name = self.new("_x")
        self.fallbacks.append((name, build))
        return name

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    @contextmanager
    def block(self, header: str | None = None) -> Iterator[None]:
        """A nested block: what is computed inside is not known after it."""
        if header is not None:
            self.emit(header)
        self.indent += 1
        self.scopes.append({})
        try:
            yield
        finally:
            self.scopes.pop()
            self.indent -= 1

    def known(self, key: tuple[Any, ...]) -> Any:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def use(self, local: str) -> str:
        self.uses.add(local)
        return local

    def start(self) -> None:
        self.lines = []
        self.indent = 1
        self.uses = set()
        self.scopes = [{}]
        self.rows = {}

    def save(self) -> tuple[Any, ...]:
        return (self.lines, self.indent, self.uses, self.scopes, self.rows, self.inline_depth)

    def restore(self, saved: tuple[Any, ...]) -> None:
        self.lines, self.indent, self.uses, self.scopes, self.rows, self.inline_depth = saved

    def finish(self, header: str, prologue_first: list[str] | None = None, defined: tuple[str, ...] = ()) -> None:
        pro = list(prologue_first or [])
        for local, attr in (("memo", "c.memo"), ("trace", "c.trace"), ("as_of", "c.as_of"),
                            ("members", "c.members"), ("values", "c.values")):
            if local in self.uses and local not in defined:
                pro.append(f"    {local} = {attr}")
        self.chunks.append("\n".join([header, *pro, *self.lines]) + "\n")

    def round(self, v: str) -> str:
        """A new local: ``v`` rounded to the policy's money unit (as `_round`)."""
        rounding = self.b.policy.rounding
        unit, mode = self.const(rounding.unit), self.const(ROUNDING_MODES[rounding.mode])
        t = self.new("_t")
        self.emit(f"if type({v}) is _Decimal:")
        self.emit(f"    {t} = {v}.quantize({unit}, rounding={mode}, context=_CONTEXT)")
        self.emit(f"elif type({v}) is int:")
        self.emit(f"    {t} = _Decimal({v}).quantize({unit}, rounding={mode}, context=_CONTEXT)")
        self.emit("else:")
        self.emit(f"    {t} = {v}")
        return t

    def fast(self, operands: list[tuple[ir.Expr, str]]) -> str | None:
        """A test that every operand holds a value of its declared type (so neither unknown nor
        null): the common case, tested first; None when some type has no such test."""
        tests = []
        for e, atom in operands:
            if isinstance(e, ir.Const):
                if e.value is None:
                    return None
                continue  # a constant: known, never unknown
            check = _TYPE_TESTS.get(e.type)
            if check is None:
                return None
            tests.append(f"type({atom}) is {check}")
        return " and ".join(tests) if tests else "True"

    # -- expressions ------------------------------------------------------------------------
    def expr(self, e: ir.Expr, mv: str) -> str:  # noqa: C901 - one dispatch over the node kinds
        """Emit statements computing ``e`` for member variable ``mv``; return the atom holding it.

        The atom is a constant's name, ``as_of`` or a local assigned once (never reassigned)."""
        if isinstance(e, ir.Const):
            return self.const(e.value)
        if isinstance(e, ir.AsOf):
            return self.use("as_of")
        if isinstance(e, ir.Ref):
            return self.ref(e, mv)
        t = self.new("_t")
        if isinstance(e, ir.Unary):
            v = self.expr(e.operand, mv)
            if e.op == "not":
                self.emit(f"{t} = {v} if type({v}) is _Unknown or {v} is None else not {v}")
            elif e.op == "neg":
                self.emit(f"{t} = {v} if type({v}) is _Unknown or {v} is None else -{v}")
            else:
                return v
            return t
        if isinstance(e, ir.Binary):
            a = self.expr(e.left, mv)
            b = self.expr(e.right, mv)
            integer = e.type == "integer" and e.left.type == "integer" and e.right.type == "integer"
            if integer and e.op in _INT_OPS:
                op = f"{a} {_INT_OPS[e.op]} {b}"
            elif not integer and e.op in _DECIMAL_CALLS:
                op = f"{_DECIMAL_CALLS[e.op]}({a}, {b})"
            elif e.op == "/":
                op = f"_div({a}, {b})"
            else:  # //, %, **: the closures' functions
                op = f"{self.const(_raw_binary(e))}({a}, {b})"
            fast = self.fast([(e.left, a), (e.right, b)])
            if fast is not None:  # the same arithmetic, without the tests for unknown and null
                self.emit(f"if {fast}:")
                self.emit("    try:")
                self.emit(f"        {t} = {op}")
                self.emit("    except (_DivisionByZero, _InvalidOperation, ZeroDivisionError):")
                self.emit(f"        {t} = None")
                self.emit(f"elif type({a}) is _Unknown or type({b}) is _Unknown:")
            else:
                self.emit(f"if type({a}) is _Unknown or type({b}) is _Unknown:")
            self.emit(f"    {t} = _merge({a}, {b})")
            self.emit(f"elif {a} is None or {b} is None:")
            self.emit(f"    {t} = None")
            self.emit("else:")
            self.emit("    try:")
            self.emit(f"        {t} = {op}")
            self.emit("    except (_DivisionByZero, _InvalidOperation, ZeroDivisionError):")
            self.emit(f"        {t} = None")
            return t
        if isinstance(e, ir.Compare):
            a = self.expr(e.left, mv)
            b = self.expr(e.right, mv)
            op = _op(_COMPARE_OPS, e.op)
            fast = self.fast([(e.left, a), (e.right, b)])
            if fast is not None:  # the same comparison, without the tests for unknown and null
                self.emit(f"if {fast}:")
                self.emit("    try:")
                self.emit(f"        {t} = bool({a} {op} {b})")
                self.emit("    except TypeError:")
                self.emit(f"        {t} = None")
                self.emit(f"elif type({a}) is _Unknown or type({b}) is _Unknown:")
            else:
                self.emit(f"if type({a}) is _Unknown or type({b}) is _Unknown:")
            self.emit(f"    {t} = _merge({a}, {b})")
            self.emit(f"elif {a} is None or {b} is None:")
            self.emit(f"    {t} = None")
            self.emit("else:")
            self.emit("    try:")
            self.emit(f"        {t} = bool({a} {op} {b})")
            self.emit("    except TypeError:")
            self.emit(f"        {t} = None")
            return t
        if isinstance(e, ir.BoolOp):
            stop_s = "True" if e.op == "or" else "False"
            other_s = "False" if e.op == "or" else "True"
            unk, null = self.new("_u"), self.new("_n")
            self.emit(f"{unk} = []")
            self.emit(f"{null} = False")
            self.emit(f"{t} = _UNSET")
            for operand in e.operands:
                with self.block(f"if {t} is _UNSET:"):
                    v = self.expr(operand, mv)
                    self.emit(f"if {v} is {stop_s}:")
                    self.emit(f"    {t} = {stop_s}")
                    self.emit(f"elif type({v}) is _Unknown:")
                    self.emit(f"    {unk}.append({v})")
                    self.emit(f"elif {v} is None:")
                    self.emit(f"    {null} = True")
            self.emit(f"if {t} is _UNSET:")
            self.emit(f"    {t} = _merge(*{unk}) if {unk} else (None if {null} else {other_s})")
            return t
        if isinstance(e, ir.IfElse):
            cond = self.expr(e.condition, mv)
            self.emit(f"if type({cond}) is _Unknown:")
            self.emit(f"    {t} = {cond}")
            with self.block(f"elif {cond} is True:"):
                v = self.expr(e.then, mv)
                self.emit(f"{t} = {v}")
            with self.block("else:"):
                v = self.expr(e.otherwise, mv)
                self.emit(f"{t} = {v}")
            return t
        if isinstance(e, ir.In):
            item = self.expr(e.item, mv)
            unk = self.new("_u")
            negate = "True" if e.negate else "False"
            self.emit(f"if type({item}) is _Unknown or {item} is None:")
            self.emit(f"    {t} = {item}")
            with self.block("else:"):
                self.emit(f"{unk} = []")
                self.emit(f"{t} = _UNSET")
                for option in e.options:
                    with self.block(f"if {t} is _UNSET:"):
                        o = self.expr(option, mv)
                        self.emit(f"if type({o}) is _Unknown:")
                        self.emit(f"    {unk}.append({o})")
                        self.emit(f"elif {o} == {item}:")
                        self.emit(f"    {t} = not {negate}")
                self.emit(f"if {t} is _UNSET:")
                self.emit(f"    {t} = _merge(*{unk}) if {unk} else {negate}")
            return t
        if isinstance(e, ir.Call):
            return self.call(e, mv, t)
        if isinstance(e, ir.Aggregate):
            return self.aggregate(e, mv, t)
        raise _Unsupported(repr(e))

    def ref(self, e: ir.Ref, mv: str) -> str:  # noqa: C901
        b = self.b
        name = e.name
        if not b._unique_names:  # the closures' lookup per call, whatever the name resolves to
            t = self.new("_t")
            self.emit(f"{t} = {self.const(b.getters)}[{self.const(name)}](c, {mv})")
            return t
        kind = b._kinds.get(name)
        k = self.const(name)
        node: Any  # the input, parameter or derived node the name refers to
        seen: Any
        if kind == "input":
            seen = self.known(("input", name, mv))
            if seen is not None:  # read above, in this block or an enclosing one: same value, traced
                return str(seen)
            t = self.new("_t")
            node = b._inputs[name]
            if node.entity == "member":
                row = self.rows.get(mv)
                if row is not None:  # inside an aggregate loop: members[mv] is known
                    self.emit(f"{t} = {row}.get({k}, _ABSENT)")
                    inner = ""
                else:
                    members = self.use("members")
                    self.emit(f"if {members} is None:")
                    self.emit(f"    {t} = _Unknown(_MEMBERS)")
                    self.emit("else:")
                    self.emit(f"    {t} = {members}[{mv}].get({k}, _ABSENT)")
                    inner = "    "
                path = self.const(".".join(node.path))
                self.emit(f"{inner}if {t} is _ABSENT:")
                self.emit(f"{inner}    {t} = _Unknown(frozenset((_member_path({mv}, {path}),)))")
                if self.tracing:
                    trace, memo = self.use("trace"), self.use("memo")
                    key = self.new("_q")
                    self.emit(f"{inner}if {trace} is not None:")
                    self.emit(f"{inner}    {key} = ({self.const('i')}, {k}, {mv})")
                    self.emit(f"{inner}    if {key} not in {memo}:")
                    self.emit(f"{inner}        {memo}[{key}] = True")
                    self.emit(f"{inner}        {trace}.append(({self.const('input')}, {k}, {mv}, {t}))")
            else:
                values = self.use("values")
                self.emit(f"{t} = {values}.get({k}, _ABSENT)")
                self.emit(f"if {t} is _ABSENT:")
                self.emit(f"    {t} = _Unknown(frozenset(({self.const('.'.join(node.path))},)))")
                if self.tracing:
                    trace, memo = self.use("trace"), self.use("memo")
                    key = self.const(("i", name))
                    self.emit(f"if {trace} is not None and {key} not in {memo}:")
                    self.emit(f"    {memo}[{key}] = True")
                    self.emit(f"    {trace}.append(({self.const('input')}, {k}, None, {t}))")
            self.scopes[-1][("input", name, mv)] = t
            return t
        if kind == "param":
            param = b._params[name]
            t = self.new("_t")
            if param.by:
                self.emit(f"{t} = {self.const(b.getters[name])}(c, {mv})")
                return t
            seen = self.known(("param", name))
            if seen is not None:  # looked up above: the same value and event; the event again
                t, ev = seen
            else:
                table = self.const(b._param_in_force(param))
                fill = self.const(b._param_fill(param))
                as_of = self.use("as_of")
                ev = self.new("_e")
                self.emit("try:")
                self.emit(f"    {t}, {ev} = {table}[{as_of}]")
                self.emit("except KeyError:")
                self.emit(f"    {t}, {ev} = {fill}({as_of})")
                self.scopes[-1][("param", name)] = (t, ev)
            if self.tracing:
                trace = self.use("trace")
                self.emit(f"if {trace} is not None:")
                self.emit(f"    {trace}.append({ev})")
            return t
        if kind == "derived":
            node = b._derived_nodes[name]
            scope_mv = mv if node.entity == "member" else None
            seen = self.known(("derived", name, scope_mv))
            if seen is not None:  # computed or read above: the memo holds this value now
                return str(seen)
            t = self.new("_t")
            memo = self.use("memo")
            key = f"({k}, {mv})" if node.entity == "member" else k
            self.emit(f"{t} = {memo}.get({key}, _ABSENT)")
            refs = self.refs.get(name, 0)
            inline = node.table is None and (refs <= 1 or refs == 2 and self.inline_depth < self.INLINE_DEPTH)
            with self.block(f"if {t} is _ABSENT:"):
                if inline:  # the body of its function, here (same statements, same memo and events)
                    self.inline_depth += 1
                    v = self.derived_body(node, mv if node.entity == "member" else "None")
                    self.inline_depth -= 1
                    self.emit(f"{t} = {v}")
                else:
                    self.emit(f"{t} = {self.fn_names[name]}(c, {mv})")
            self.scopes[-1][("derived", name, scope_mv)] = t
            return t
        if kind == "output":  # another decision's output: the memo, else its getter runs it
            t = self.new("_t")
            getters = b.getters
            memo = self.use("memo")
            self.emit(f"{t} = {memo}.get({k}, _ABSENT)")
            self.emit(f"if {t} is _ABSENT:")
            self.emit(f"    {t} = {self.fallback(lambda: getters[name])}(c, {mv})")
            return t
        t = self.new("_t")  # a name the generator does not know: the closure, as before
        self.emit(f"{t} = {self.fallback(lambda: b.expr(e))}(c, {mv})")
        return t

    def call(self, e: ir.Call, mv: str, t: str) -> str:
        fn = e.function
        args = [self.expr(a, mv) for a in e.args]
        if not args:
            raise _Unsupported("call without arguments")
        unknown = " or ".join(f"type({a}) is _Unknown" for a in args)
        null = " or ".join(f"{a} is None" for a in args)
        impl = {"min": "_min", "max": "_max", "abs": "_abs"}.get(fn)
        fast = self.fast(list(zip(e.args, args))) if impl is not None else None
        if fast is not None:  # the same call, without the tests for unknown and null
            self.emit(f"if {fast}:")
            self.emit("    try:")
            self.emit(f"        {t} = {impl}({', '.join(args)})")
            self.emit("    except (OverflowError, ValueError, _InvalidOperation):")
            self.emit(f"        {t} = None")
            self.emit(f"elif {unknown}:")
        else:
            self.emit(f"if {unknown}:")
        self.emit(f"    {t} = _merge({', '.join(args)})")
        self.emit(f"elif {null}:")
        self.emit(f"    {t} = None")
        self.emit("else:")
        if fn == "age":
            self.emit(f"    {t} = _age({args[0]}, {self.use('as_of')})")
            return t
        if impl is None:
            impl = self.const(_call_impl(fn, self.b.policy.rounding))
        self.emit("    try:")
        self.emit(f"        {t} = {impl}({', '.join(args)})")
        self.emit("    except (OverflowError, ValueError, _InvalidOperation):")
        self.emit(f"        {t} = None")
        return t

    def aggregate(self, e: ir.Aggregate, mv: str, t: str) -> str:
        fn = e.function
        if fn not in ("sum", "count", "any", "all", "min", "max", "collect"):
            raise _Unsupported(fn)
        members = self.use("members")
        integer = e.body is not None and e.body.type == "integer"
        self.emit(f"if {members} is None:")
        self.emit(f"    {t} = _Unknown(_MEMBERS)")
        if e.where is None and e.body is None and fn == "count":
            self.emit("else:")
            self.emit(f"    {t} = len({members})")
            return t
        i, row, unk, picked = self.new("_i"), self.new("_r"), self.new("_u"), self.new("_p")
        with self.block("else:"):
            self.emit(f"{unk} = []")
            self.emit(f"{picked} = []")
            self.emit(f"{t} = _UNSET")
            with self.block(f"for {i} in range(len({members})):"):
                self.emit(f"{row} = {members}[{i}]")
                self.rows[i] = row
                if e.where is not None:
                    ok = self.expr(e.where, i)
                    self.emit(f"if type({ok}) is _Unknown:")
                    self.emit(f"    {unk}.append({ok})")
                    self.emit("    continue")
                    if fn == "any":
                        self.emit(f"if {ok} is True:")
                        self.emit(f"    {t} = True")
                        self.emit("    break")
                        self.emit("continue")
                    elif fn == "all":
                        self.emit(f"if {ok} is not True:")
                        self.emit(f"    {t} = False")
                        self.emit("    break")
                        self.emit("continue")
                    else:
                        self.emit(f"if {ok} is not True:")
                        self.emit("    continue")
                if fn not in ("any", "all") or e.where is None:
                    if e.body is None:
                        self.emit(f"{picked}.append(1)")
                    else:
                        v = self.expr(e.body, i)
                        self.emit(f"if type({v}) is _Unknown:")
                        self.emit(f"    {unk}.append({v})")
                        if fn == "sum" and e.where is None:  # as the closures' sum loop: nulls left out here
                            self.emit(f"elif {v} is not None:")
                            self.emit(f"    {picked}.append({v})")
                        else:
                            self.emit("else:")
                            self.emit(f"    {picked}.append({v})")
                del self.rows[i]
            self.emit(f"if {t} is _UNSET:")
            self.emit(f"    if {unk}:")
            self.emit(f"        {t} = _merge(*{unk})")
            self.emit("    else:")
            if fn == "count":
                self.emit(f"        {t} = len({picked})")
            elif fn == "any":
                self.emit(f"        {t} = False")
            elif fn == "all":
                self.emit(f"        {t} = True")
            elif fn == "collect":
                self.emit(f"        {t} = tuple({picked})")
            elif fn == "sum":
                self.emit(f"        {t} = {'0' if integer else '_ZERO'}")
                self.emit(f"        for _v in {picked}:")
                if e.where is not None:
                    self.emit("            if _v is None:")
                    self.emit("                continue")
                self.emit(f"            {t} = {t} + _v" if integer else f"            {t} = _add({t}, _v)")
            else:
                vals = self.new("_w")
                self.emit(f"        {vals} = _present({picked})")
                self.emit(f"        {t} = ({'_min' if fn == 'min' else '_max'}({vals}) if {vals} else None)")
        return t

    # -- functions ---------------------------------------------------------------------------
    def derived_body(self, node: ir.DerivedNode, mv: str) -> str:
        """Compute a derived value (memo known not to hold it), store it in the memo, trace it."""
        k = self.const(node.name)
        if node.table is not None:
            table = self.table_fn(node.table)
            v = self.new("_t")
            self.emit(f"{v} = {table}(c, {mv})[0]")
        else:
            assert node.expr is not None
            v = self.expr(node.expr, mv)
        if node.type == "money":
            v = self.round(v)
        memo = self.use("memo")
        self.emit(f"{memo}[{f'({k}, {mv})' if node.entity == 'member' else k}] = {v}")
        if self.tracing:
            trace = self.use("trace")
            self.emit(f"if {trace} is not None:")
            self.emit(f"    {trace}.append(({self.const('derived')}, {k}, {mv}, {v}))")
        return v

    def derived(self, node: ir.DerivedNode) -> None:
        fn = self.fn_names[node.name]
        self.start()
        k = self.const(node.name)
        if node.entity == "member":
            first = ["    memo = c.memo", f"    if ({k}, m) in memo:", f"        return memo[({k}, m)]"]
            v = self.derived_body(node, "m")
        else:
            first = ["    memo = c.memo", f"    if {k} in memo:", f"        return memo[{k}]"]
            v = self.derived_body(node, "None")
        self.emit(f"return {v}")
        self.finish(f"def {fn}(c, m):", first, defined=("memo",))

    def table_fn(self, table: ir.Table) -> str:  # noqa: C901 - the closures' table loop, unrolled
        """A function (c, m) -> outputs tuple, generated in its own chunk."""
        saved = self.save()
        fn = self.new("_T")
        self.start()
        self.inline_depth = 0
        tracing = self.tracing
        owner = self.const(table.owner)
        hit = table.hit
        n_out = len(table.outputs)
        cols = [self.new("_a") for _ in table.inputs]
        trace = self.use("trace") if tracing else None
        for a in cols:
            self.emit(f"{a} = _UNSET")
        single = hit == "F"
        if single:
            self.emit("_mi = None")
        else:
            self.emit("_matched = []")
        self.emit("_unknown_rows = []")
        with self.block("while True:  # one pass over the rows; `break` leaves them"):
            for index, row in enumerate(table.rows):
                r = _digits(index)
                body_indent = self.indent
                if row.in_force is not None:
                    self.emit(f"if not {self.const(row.in_force)}.contains({self.use('as_of')}):")
                    if tracing:
                        self.emit(f"    if {trace} is not None:")
                        self.emit(f"        {trace}.append(({self.const('skip_row')}, {owner}, {r}))")
                    else:
                        self.emit("    pass")
                    self.emit("else:")
                    self.indent += 1
                    self.scopes.append({})
                self.emit("_result = True")
                if tracing:
                    self.emit("_cells = []")
                first = True
                for col, test in enumerate(row.tests):
                    if test.kind == "any":
                        continue
                    if not first:
                        self.emit("if _result is not False:")
                        self.indent += 1
                        self.scopes.append({})
                    a = cols[col]
                    with self.block(f"if {a} is _UNSET:"):
                        v = self.expr(table.inputs[col], "m")
                        self.emit(f"{a} = {v}")
                    self.test(test, a)
                    if tracing:
                        self.emit(f"if {trace} is not None:")
                        self.emit(f"    _cells.append(({_digits(col)}, {a}, _passed, _ta, _tb))")
                    self.emit("if _passed is False:")
                    self.emit("    _result = False")
                    self.emit("elif type(_passed) is _Unknown:")
                    self.emit("    _result = _passed if _result is True else _merge(_result, _passed)")
                    if not first:
                        self.indent -= 1
                        self.scopes.pop()
                    first = False
                if tracing:
                    self.emit(f"if {trace} is not None:")
                    self.emit(f"    {trace}.append(({self.const('row')}, {owner}, {r}, _result, tuple(_cells)))")
                with self.block("if _result is True:"):
                    if single:
                        self.emit("if _unknown_rows:")
                        self.emit("    break")
                    outs = [self.expr(o, "m") for o in row.outputs]
                    if single:
                        self.emit(f"_mi = {r}")
                        self.emit(f"_mo = ({''.join(o + ', ' for o in outs)})")
                        self.emit("break")
                    else:
                        self.emit(f"_matched.append(({r}, [{', '.join(outs)}]))")
                self.emit("elif _result is not False:")
                self.emit("    _unknown_rows.append(_result)")
                if row.in_force is not None:
                    self.scopes.pop()
                self.indent = body_indent
            self.emit("break")
        self.emit("if _unknown_rows:")
        self.emit("    _u = _merge(*_unknown_rows)")
        self.emit(f"    return ({'_u, ' * n_out})")
        with self.block("if _mi is None:" if single else "if not _matched:"):
            if tracing:
                self.emit(f"if {trace} is not None:")
                self.emit(f"    {trace}.append(({self.const('nomatch')}, {owner}))")
            defaults = [self.expr(d, "m") if d is not None else "None" for d in table.defaults]
            self.emit(f"return ({''.join(d + ', ' for d in defaults)})")
        if single:
            self.emit("_indices = (_mi,)")
        else:
            self.emit(f"if len(_matched) > 1 or {'True' if hit in ('C+', 'C<', 'C>') else 'False'}:")
            self.emit("    _uo = _unknown_outs(_matched)")
            self.emit("    if _uo:")
            self.emit("        _u = _merge(*_uo)")
            self.emit(f"        return ({'_u, ' * n_out})")
            self.emit("_indices = _row_indices(_matched)")
        self.emit("if m is None:")
        self.emit(f"    c.fired[{owner}] = _indices")
        if tracing:
            self.emit(f"if {trace} is not None:")
            self.emit(f"    {trace}.append(({self.const('fired')}, {owner}, _indices, {self.const(hit)}))")
        if single:
            self.emit("return _mo")
        else:
            priorities = [{v: i for i, v in enumerate(p)} for p in table.priorities]
            self.emit(f"return _apply_hit({self.const(hit)}, _matched, {_digits(n_out)}, "
                      f"{self.const(priorities)}, {owner}, {self.const([r.id for r in table.rows])}, "
                      f"{self.const(self.b.policy)})")
        self.finish(f"def {fn}(c, m):")
        self.restore(saved)
        return fn

    def test(self, test: ir.Test, v: str) -> None:
        """Emit a table cell test of value ``v``: sets ``_passed``, ``_ta``, ``_tb``."""
        if test.kind == "null":
            self.emit(f"_passed = {v} if type({v}) is _Unknown else {v} is None")
            self.emit("_ta = _tb = None")
            return
        if test.kind == "compare" and test.a is not None:
            op = _op(_COMPARE_OPS, test.op or "==")
            a = self.expr(test.a, "m")
            self.emit(f"_ta = {a}")
            self.emit("_tb = None")
            self.emit(f"if type({v}) is _Unknown or type({a}) is _Unknown:")
            self.emit(f"    _passed = _merge({v}, {a})")
            self.emit(f"elif {v} is None or {a} is None:")
            self.emit("    _passed = False")
            self.emit("else:")
            self.emit("    try:")
            self.emit(f"        _passed = bool({v} {op} {a})")
            self.emit("    except TypeError:")
            self.emit("        _passed = False")
            return
        backend = self.b
        closure = self.fallback(lambda: backend._test(test))
        self.emit(f"_passed, _ta, _tb = {closure}(c, m, {v})")

    def runner(self, node: ir.DecisionNode) -> str:
        """The decision's runner (as `Backend._decision`), its output expressions inline."""
        fn = self.new("_R")
        table = self.table_fn(node.table) if node.table is not None else None
        table_index = {name: i for i, name in enumerate(node.table.outputs)} if node.table else {}
        self.start()
        tracing = self.tracing
        d = self.const(node.id)
        trace = self.use("trace") if tracing else None
        memo = self.use("memo")
        self.emit(f"if {d} in c.outcomes:")
        self.emit("    return")
        if node.in_force is not None:
            backend = self.b
            stop = self.fallback(lambda: backend._not_in_force(node))
            self.emit(f"if not {self.const(node.in_force)}.contains(c.as_of):")
            self.emit(f"    {stop}(c)")
            self.emit("    return")
        self.emit(f"c.outcomes[{d}] = ({self.const('running')}, {{}}, None, ())")
        self.emit("_values = {}")
        with self.block("try:"):
            if any(o.expr is None for o in node.outputs):
                if table is None:
                    raise _Unsupported("a table output without a table")
                self.emit(f"_tv = {table}(c, None)")
                # the table's outputs first, so that expressions may name any of them
                for o in node.outputs:
                    if o.expr is None:
                        if o.short not in table_index:
                            raise _Unsupported(f"no table output {o.short}")
                        v = self.new("_t")
                        self.emit(f"{v} = _tv[{_digits(table_index[o.short])}]")
                        if o.type == "money":
                            v = self.round(v)
                        self.emit(f"{memo}[{self.const(o.name)}] = {v}")
            elif table is not None:
                self.emit(f"{table}(c, None)")
            for o in node.outputs:
                q = self.const(o.name)
                if o.expr is None:
                    v = self.new("_t")
                    self.emit(f"{v} = {memo}[{q}]")
                else:
                    v = self.expr(o.expr, "None")
                if o.type == "money":
                    v = self.round(v)
                self.emit(f"{memo}[{q}] = {v}")
                self.emit(f"_values[{self.const(o.short)}] = {v}")
                if tracing:
                    self.emit(f"if {trace} is not None:")
                    self.emit(f"    {trace}.append(({self.const('output')}, {d}, {self.const(o.short)}, {v}))")
        self.emit("except _NotInForce as _stop:")
        self.emit(f"    c.outcomes[{d}] = ({self.const('not_in_force')}, {{}}, _stop.reason, _stop.cites)")
        if tracing:
            self.emit(f"    if {trace} is not None:")
            self.emit(f"        {trace}.append(({self.const('decision')}, {d}, {self.const('not_in_force')}, _stop.reason))")
        self.emit("    return")
        self.emit("_unknown = None")
        self.emit("for _v in _values.values():")
        self.emit("    if type(_v) is _Unknown:")
        self.emit("        _unknown = _unknowns(_values)")
        self.emit("        break")
        self.emit("if _unknown:")
        self.emit("    _missing = tuple(sorted(_merge(*_unknown).missing))")
        self.emit(f"    c.outcomes[{d}] = ({self.const('needs_information')}, _values, _missing, ())")
        if tracing:
            self.emit(f"    if {trace} is not None:")
            self.emit(f"        {trace}.append(({self.const('decision')}, {d}, {self.const('needs_information')}, _missing))")
        self.emit("else:")
        self.emit(f"    c.outcomes[{d}] = ({self.const('decided')}, _values, None, ())")
        if tracing:
            self.emit(f"    if {trace} is not None:")
            self.emit(f"        {trace}.append(({self.const('decision')}, {d}, {self.const('decided')}, None))")
        self.finish(f"def {fn}(c):")
        return fn

    # -- the whole backend ---------------------------------------------------------------------
    def count_refs(self) -> None:
        def walk(x: Any) -> None:
            if isinstance(x, ir.Ref):
                self.refs[x.name] = self.refs.get(x.name, 0) + 1
            elif isinstance(x, tuple):
                for y in x:
                    walk(y)
            elif dataclasses.is_dataclass(x) and not isinstance(x, type):
                for f in dataclasses.fields(x):
                    walk(getattr(x, f.name))
        policy = self.b.policy
        walk(policy.derived)
        walk(policy.decisions)

    def build(self) -> None:
        b = self.b
        policy = b.policy
        self.count_refs()
        for d in policy.derived:
            self.fn_names[d.name] = self.new("_d")
        for d in policy.derived:
            self.derived(d)
        runners = [(node, self.runner(node)) for node in policy.decisions]
        source = "\n".join(self.chunks)
        run(source, self.ns, f"<policy_engine generated: {'traced' if self.tracing else 'plain'}>")
        for d in policy.derived:
            b.getters[d.name] = self.ns[self.fn_names[d.name]]
        for node, runner in runners:
            b.runners[node.id] = self.ns[runner]
            for output in node.outputs:
                b.getters[output.name] = b._output_getter(node.id, output.name)
        for name, build in self.fallbacks:
            self.ns[name] = build()
        b.source = source


def _member_path(i: int, path: str) -> str:
    """The path of a member's missing fact, as the closures spell it."""
    return f"members[{i}].{path}"


def _present(values: list[Any]) -> list[Any]:
    return [v for v in values if v is not None]


def _unknown_outs(matched: list[tuple[int, list[Any]]]) -> list[Any]:
    return [v for _, outs in matched for v in outs if type(v) is Unknown]


def _row_indices(matched: list[tuple[int, list[Any]]]) -> tuple[int, ...]:
    return tuple(i for i, _ in matched)


def _unknowns(values: dict[str, Any]) -> list[Any]:
    return [v for v in values.values() if type(v) is Unknown]


_HELPERS.update({
    "_member_path": _member_path, "_present": _present, "_unknown_outs": _unknown_outs,
    "_row_indices": _row_indices, "_unknowns": _unknowns,
    "_Unknown": Unknown, "_merge": _merge, "_ABSENT": _ABSENT, "_UNSET": _UNSET,
    "_MEMBERS": frozenset(("members",)), "_DivisionByZero": DivisionByZero,
    "_InvalidOperation": InvalidOperation, "_add": CONTEXT.add, "_sub": CONTEXT.subtract,
    "_mul": CONTEXT.multiply, "_div": CONTEXT.divide, "_min": min, "_max": max, "_abs": abs,
    "_age": _age, "_Decimal": Decimal, "_CONTEXT": CONTEXT, "_ZERO": Decimal(0), "_apply_hit": _apply_hit,
    "_NotInForce": NotInForce, "_date": dt.date,
})


def generate_backend(backend: Backend) -> None:
    """Generate, verify and install the functions of ``backend`` (its getters and runners)."""
    _Gen(backend).build()


# -- the facts reader ---------------------------------------------------------------------------

#: IR type -> the test of the common exact type a facts reader keeps as it is
_FACT_TESTS = {"integer": "type(_r) is int", "boolean": "type(_r) is bool", "date": "type(_r) is _date",
               "text": "type(_r) is str"}


def facts_reader(nodes: list[ir.InputNode], member: bool, helpers: dict[str, Any],
                 reader: Callable[[ir.InputNode], Any], signed_money: frozenset[str] | set[str]) -> Any:
    """One generated function reading ``nodes`` (for ``intake``): ``(facts, errors) -> values``, or
    with ``member``, ``(members, errors) -> rows``. Straight-line code, one block per input in the
    order given, that looks each path up exactly as ``intake._lookup`` does and keeps the common
    exact types (a decimal string for money, an ``int``, a ``bool``, a ``date``, an enum string);
    anything else goes to ``reader(node)``, and a ``ValueError`` to ``helpers``' error functions,
    so values and error messages are those of the reading loop it replaces."""
    ns: dict[str, Any] = {"_MISSING": helpers["_MISSING"], "_Decimal": Decimal,
                          "_InvalidOperation": InvalidOperation, "_date": dt.date,
                          "_entity_error": helpers["_entity_error"], "_member_error": helpers["_member_error"],
                          "_to_plain": helpers["_to_plain"], "_not_a_mapping": helpers["_not_a_mapping"],
                          "_ZERO": Decimal(0)}
    count = 0

    def k(value: Any) -> str:
        nonlocal count
        count += 1
        name = f"_k{count}"
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
        name, node_k, read = k(node.name), k(node), k(reader(node))
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
            refuse_negative = kind == "money" and node.path[-1] not in signed_money
            lines += ["        _v = None", "        if type(_r) is str:", "            try:",
                      "                _v = _Decimal(_r.strip())", "            except _InvalidOperation:",
                      "                _v = None",
                      "        if _v is not None and _v.is_finite()"
                      + (" and not _v < _ZERO:" if refuse_negative else ":"),
                      f"            _out[{name}] = _v", "        else:"]
            lines += ["        " + x for x in slow]
            continue
        fast = _FACT_TESTS.get(kind)
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
    return run(source, ns, "<policy_engine generated: facts reader>")["_read"]

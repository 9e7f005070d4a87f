"""Random small policy packages and facts, for the differential test of the two evaluators
(``tests/test_differential.py``): every hit policy, cell form, operator, function, member
aggregate, dated and keyed parameter, rounding mode and in-force window, and facts that are
missing, zero, negative, at thresholds, with many places or huge. Seeded: a seed is a policy."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

L = {"zh": "x", "en": "x"}
REG = ["north", "south", "east"]
REL = ["head", "child", "other"]
PRI = ["high", "mid", "low"]
HH_NUM = {"a": "money", "s": "money", "b": "decimal", "n": "integer"}
M_NUM = {"w": "money", "k": "integer", "r": "decimal"}
HITS = ["U", "A", "P", "F", "R", "O", "C", "C+", "C<", "C>", "C#"]
AS_OFS = ["2023-01-01", "2023-07-01", "2024-02-29", "2019-06-01"]


def inputs() -> dict[str, Any]:
    return {
        "a": {"path": "a", "type": "money", "label": L},
        "s": {"path": "transfer_net", "type": "money", "label": L},
        "b": {"path": "b", "type": "decimal", "label": L},
        "n": {"path": "n", "type": "integer", "label": L},
        "flag": {"path": "flag", "type": "boolean", "label": L},
        "reg": {"path": "reg", "type": "enum", "values": REG, "label": L},
        "d": {"path": "d", "type": "date", "label": L},
        "w": {"entity": "member", "path": "w", "type": "money", "label": L},
        "k": {"entity": "member", "path": "k", "type": "integer", "label": L},
        "r": {"entity": "member", "path": "r", "type": "decimal", "label": L},
        "mf": {"entity": "member", "path": "mf", "type": "boolean", "label": L},
        "rel": {"entity": "member", "path": "rel", "type": "enum", "values": REL, "label": L},
        "bd": {"entity": "member", "path": "bd", "type": "date", "label": L},
    }


NUMLITS = ["0", "1", "2", "3", "-1", "0.5", "0.1", "1.5", "3.333", "0.001", "100", "700", "0.125", "12", "7", "-2.5",
           "0.3", "1000000", "0.0000001"]
class G:
    def __init__(self, rnd):
        self.r = rnd
        self.hh_num = dict(HH_NUM)   # name -> type
        self.hh_bool = ["flag"]
        self.hh_enum = {"reg": REG}
        self.hh_date = ["d"]
        self.m_num = dict(M_NUM)
        self.m_bool = ["mf"]
        self.m_enum = {"rel": REL}
        self.m_date = ["bd"]

    def c(self, *xs):
        return self.r.choice(xs)

    # numeric expression
    def num(self, depth, member=False):
        r = self.r
        if depth <= 0 or r.random() < 0.3:
            roll = r.random()
            if roll < 0.3:
                return r.choice(NUMLITS) if not r.random() < 0.3 else f"({r.choice(NUMLITS)})"
            names = list(self.hh_num) + (list(self.m_num) * 2 if member else [])
            return r.choice(names)
        k = r.random()
        if k < 0.35:
            op = r.choice(["+", "-", "*", "/", "//", "%", "+", "-", "*", "/"])
            return f"({self.num(depth-1, member)} {op} {self.num(depth-1, member)})"
        if k < 0.42:
            return f"({self.num(depth-1, member)} ** {r.choice([1, 2, 3, 2, 0, -1, -2])})"
        if k < 0.55:
            fn = r.choice(["min", "max"])
            args = [self.num(depth-1, member) for _ in range(r.choice([2, 2, 3]))]
            return f"{fn}({', '.join(args)})"
        if k < 0.68:
            fn = r.choice(["abs", "floor", "ceil", "round_money", "round"])
            if fn == "round":
                return f'round({self.num(depth-1, member)}, "{r.choice(["0.01", "1", "0.1", "10", "0.001", "0.05", "0.5"])}")'
            return f"{fn}({self.num(depth-1, member)})"
        if k < 0.76:
            return f"({self.num(depth-1, member)} if {self.boolean(depth-1, member)} else {self.num(depth-1, member)})"
        if k < 0.9 and not member:
            fn = r.choice(["sum", "sum", "count", "min", "max"])
            if fn == "count":
                return "count(members)" if r.random() < 0.3 else f"count(members, {self.boolean(depth-1, True)})"
            body = self.num(depth-1, True)
            if r.random() < 0.5:
                return f"{fn}(members, {body}, where={self.boolean(depth-1, True)})"
            return f"{fn}(members, {body})"
        if k < 0.95:
            dates = self.hh_date + (self.m_date if member else [])
            fn = r.choice(["age", "months_between", "days_between"])
            if fn == "age":
                return f"age({r.choice(dates)})"
            return f'{fn}({r.choice(dates)}, {self.date_lit() if r.random() < 0.5 else r.choice(dates)})'
        return f"(-{self.num(depth-1, member)})"

    def date_lit(self):
        return f'date("{self.r.choice(["2020-02-29", "2023-01-01", "2022-12-31", "1990-06-15", "2023-03-31"])}")'

    def boolean(self, depth, member=False):
        r = self.r
        if depth <= 0 or r.random() < 0.25:
            names = self.hh_bool + (self.m_bool * 2 if member else [])
            if r.random() < 0.1:
                return r.choice(["true", "false"])
            return r.choice(names)
        k = r.random()
        if k < 0.4:
            op = r.choice(["<", "<=", ">", ">=", "==", "!="])
            return f"({self.num(depth-1, member)} {op} {self.num(depth-1, member)})"
        if k < 0.5:
            enums = dict(self.hh_enum)
            if member:
                enums.update(self.m_enum)
            name = r.choice(list(enums))
            vals = r.sample(enums[name], r.choice([1, 2]))
            if r.random() < 0.5:
                return f"({name} {'not in' if r.random() < 0.3 else 'in'} ({', '.join(repr(v).replace(chr(39), chr(34)) for v in vals)},))"
            return f'({name} {r.choice(["==", "!="])} "{vals[0]}")'
        if k < 0.7:
            op = r.choice(["and", "or"])
            return f"({self.boolean(depth-1, member)} {op} {self.boolean(depth-1, member)})"
        if k < 0.78:
            return f"(not {self.boolean(depth-1, member)})"
        if k < 0.9 and not member:
            fn = r.choice(["any", "all"])
            return f"{fn}(members, {self.boolean(depth-1, True)})"
        if k < 0.95:
            dates = self.hh_date + (self.m_date if member else [])
            return f"({r.choice(dates)} {r.choice(['<', '>=', '=='])} {self.date_lit()})"
        return f"({self.num(depth-1, member)} < {self.num(depth-1, member)} <= {self.num(depth-1, member)})"

    # table cells
    def endpoint(self):
        r = self.r
        if r.random() < 0.6:
            return r.choice(NUMLITS[:16])
        return self.num(1)

    def num_cell(self):
        r = self.r
        k = r.random()
        e = self.endpoint
        if k < 0.15:
            return "-"
        if k < 0.4:
            return f"{r.choice(['<', '<=', '>', '>='])} {e()}"
        if k < 0.55:
            lo, hi = e(), e()
            return f"{r.choice('[](')}{lo}..{hi}{r.choice('[])')}"
        if k < 0.62:
            return f"{e()}"
        if k < 0.67:
            return f"= {e()}"
        if k < 0.72:
            return f"!= {e()}"
        if k < 0.82:
            return f"not({r.choice(['<', '>='])} {e()})"
        if k < 0.9:
            return f"{r.choice(['<', '>'])} {e()}, {e()}"
        if k < 0.95:
            return "null"
        return f"[{e()}..{e()}], null"

    def cell(self, kind):
        r = self.r
        if kind == "num":
            return self.num_cell()
        if kind == "bool":
            return r.choice(["-", "true", "false", "true", "false", "null", "not(true)"])
        if kind == "enum":
            k = r.random()
            if k < 0.2:
                return "-"
            if k < 0.5:
                return r.choice(REG)
            if k < 0.7:
                return f'"{r.choice(REG)}"'
            if k < 0.85:
                return ", ".join(f'"{v}"' for v in r.sample(REG, 2))
            if k < 0.93:
                return f'not("{r.choice(REG)}")'
            return "null"
        if kind == "date":
            k = r.random()
            if k < 0.3:
                return "-"
            if k < 0.7:
                return f"{r.choice(['<', '>='])} {self.date_lit()}"
            return f"[{self.date_lit()}..{self.date_lit()})"
        raise ValueError(kind)


def table_column(g):
    r = g.r
    k = r.random()
    if k < 0.25:
        return r.choice(list(g.hh_num)), "num"
    if k < 0.45:
        return g.num(2), "num"
    if k < 0.55:
        return "reg", "enum"
    if k < 0.65:
        return r.choice(g.hh_bool), "bool"
    if k < 0.72:
        return g.boolean(2), "bool"
    if k < 0.8:
        return "d", "date"
    return r.choice(list(g.hh_num)), "num"


def numtype(r):
    return r.choice(["money", "decimal", "integer"])


def out_value(g, typ, simple=False):
    r = g.r
    if typ == "integer":
        if simple or r.random() < 0.5:
            return r.choice([0, 1, 2, 3, -1, 5, 10])
        return f"floor({g.num(2)})"
    if r.random() < 0.5 or simple:
        return r.choice([0, 1, 2.5, "0.125", -3, 100, "700.005", "0.3333"])
    return g.num(2)


def make_policy(seed):
    r = random.Random(seed)
    g = G(r)
    mod = {"inputs": inputs(), "parameters": {}, "derived": {}, "decisions": {}}
    # parameters
    std_vals = {v: r.choice([700, "650.5", 0, "0.01", "1e2", 600, "739.125"]) for v in REG}
    if r.random() < 0.15:
        del std_vals[r.choice(REG)]
    vals = {"2020-01-01": std_vals}
    if r.random() < 0.3:
        vals["2023-06-01"] = {v: r.choice([800, "0.5", 900]) for v in REG}
    mod["parameters"]["std"] = {"type": "money", "label": L, "by": ["reg"], "values": vals,
                                "provenance": "illustrative", "note": "x"}
    g.hh_num["std"] = "money"
    mod["parameters"]["rate"] = {"type": "decimal", "label": L,
                                 "values": {r.choice(["2020-01-01", "2020-01-01", "2024-01-01"]): r.choice(["0.2", "1.5", "0.3333", "0", "-0.5"])},
                                 "provenance": "illustrative", "note": "x"}
    g.hh_num["rate"] = "decimal"
    if r.random() < 0.5:
        mod["parameters"]["lim"] = {"type": "integer", "label": L, "by": ["flag"],
                                    "values": {"2020-01-01": {True: r.randint(0, 5), False: r.randint(-2, 5)}},
                                    "provenance": "illustrative", "note": "x"}
        g.hh_num["lim"] = "integer"
    # member derived
    if r.random() < 0.5:
        t = numtype(r)
        e = g.num(2, True)
        if t == "integer":
            e = f"floor({e})"
        mod["derived"]["mv"] = {"entity": "member", "type": t, "label": L, "expr": e}
        g.m_num["mv"] = t
    if r.random() < 0.3:
        mod["derived"]["mb"] = {"entity": "member", "type": "boolean", "label": L, "expr": g.boolean(2, True)}
        g.m_bool.append("mb")
    # household derived
    for i in range(r.randint(0, 3)):
        name = f"h{i}"
        if r.random() < 0.75:
            t = numtype(r)
            e = g.num(3)
            if t == "integer":
                e = f"floor({e})"
            mod["derived"][name] = {"type": t, "label": L, "expr": e}
            g.hh_num[name] = t
        else:
            mod["derived"][name] = {"type": "boolean", "label": L, "expr": g.boolean(3)}
            g.hh_bool.append(name)
    # decisions
    for j in range(r.randint(1, 3)):
        did = f"d{j}"
        if r.random() < 0.25:
            t = r.choice(["money", "decimal", "integer", "boolean"])
            if t == "boolean":
                e = g.boolean(3)
            else:
                e = g.num(3)
                if t == "integer":
                    e = f"floor({e})"
            mod["decisions"][did] = {"label": L, "cite": "s §1", "value": e, "type": t}
            continue
        hit = r.choice(HITS)
        ncol = r.randint(1, 3)
        cols = [table_column(g) for _ in range(ncol)]
        outputs = {}
        table = {"hit": hit, "inputs": [c for c, _ in cols], "rows": []}
        if hit in ("C+", "C<", "C>"):
            ot = numtype(r)
            outputs["o"] = {"type": ot, "label": L}
            onames = [("o", ot)]
        elif hit == "C#":
            outputs["o"] = {"type": "integer", "label": L}
            onames = [("o", "c#")]
        elif hit in ("R", "C", "O"):
            outputs["o"] = {"type": "list", "label": L}
            if hit == "O":
                outputs["o"]["values"] = PRI
            onames = [("o", "listenum")]
        else:
            onames = []
            for q in range(r.randint(1, 2)):
                if hit == "P":
                    ot = "enum"
                elif q == 0 or r.random() < 0.5:
                    ot = r.choice(["enum", "enum", "money", "decimal", "integer", "boolean"])
                else:
                    ot = r.choice(["money", "decimal", "integer"])
                o = {"type": ot, "label": L}
                if ot == "enum":
                    o["values"] = PRI
                outputs[f"o{q}"] = o
                onames.append((f"o{q}", ot))
        table["outputs"] = [n for n, _ in onames]
        nrows = r.randint(1, 5)
        agree = hit == "A" and r.random() < 0.6
        fixed = None
        for i in range(nrows):
            when = [g.cell(kind) for _, kind in cols]
            if r.random() < 0.2 and ncol > 1:
                when = {f"c{q}": w for q, w in enumerate(when) if r.random() < 0.6}
            then = []
            for n, ot in onames:
                if ot == "enum":
                    then.append(r.choice(PRI))
                elif ot == "boolean":
                    then.append(r.choice([True, False]))
                elif ot == "c#":
                    then.append(r.choice([0, 1, 2]))
                elif ot == "listenum":
                    then.append(f'"{r.choice(PRI)}"')
                else:
                    then.append(out_value(g, ot))
            if agree:
                if fixed is None:
                    fixed = then
                then = fixed
            row = {"id": f"r{i}", "when": when, "then": then, "cite": "s §1"}
            if r.random() < 0.07:
                row["in_force"] = {"from": r.choice(["2020-01-01", "2024-01-01"])}
            table["rows"].append(row)
        if isinstance(table["rows"][0]["when"], dict) or any(isinstance(rw["when"], dict) for rw in table["rows"]):
            table["inputs"] = [{"name": f"c{q}", "expr": c} for q, (c, _) in enumerate(cols)]
        if r.random() < 0.4:
            dflt = {}
            for n, ot in onames:
                if ot == "enum":
                    dflt[n] = r.choice(PRI)
                elif ot == "boolean":
                    dflt[n] = r.choice([True, False])
                elif ot == "c#":
                    dflt[n] = 0
                elif ot == "listenum":
                    continue
                else:
                    dflt[n] = out_value(g, ot, simple=True)
            if dflt:
                table["default"] = dflt
        # extra output expressions
        if r.random() < 0.5 and onames[0][1] not in ("listenum",):
            ot = r.choice(["money", "decimal", "integer"])
            base = onames[0][0]
            bt = onames[0][1]
            if bt in ("money", "decimal", "integer", "c#"):
                e = f"({base} * {g.num(1)} + {g.num(2)})"
            elif bt == "enum":
                e = f"({g.num(2)} if {base} == \"high\" else {g.num(1)})"
            else:
                e = f"({g.num(2)} if {base} else {g.num(1)})"
            if ot == "integer":
                e = f"floor({e})"
            outputs["x"] = {"type": ot, "label": L, "expr": e}
        dec = {"label": L, "cite": "s §1", "outputs": outputs, "table": table}
        mod["decisions"][did] = dec
        # allow later derived/decisions to reference earlier decision outputs
        for n, ot in onames:
            if ot in ("money", "decimal", "integer"):
                g.hh_num[f"{did}.{n}"] = ot
            elif ot == "boolean":
                g.hh_bool.append(f"{did}.{n}")
    if not mod["derived"]:
        del mod["derived"]
    if r.random() < 0.5:
        mod["_rounding"] = {"unit": r.choice(["1", "0.1", "0.01", "0.001", "10"]),
                            "mode": r.choice(["half_up", "half_even", "down", "up", "floor", "ceiling"])}
    for did in mod["decisions"]:
        if r.random() < 0.08:
            mod["decisions"][did]["in_force"] = {"from": r.choice(["2020-01-01", "2023-06-01"]), "to": "2023-12-31"}
    return mod


def money(r, signed=False):
    k = r.random()
    if k < 0.15:
        v = Decimal(0)
    elif k < 0.35:
        v = Decimal(r.choice([700, "650.5", "0.01", "739.125", 600, 800, 900, "0.5", 100, 1000]))
        v += Decimal(r.randint(-2, 2)) / 100
    elif k < 0.5:
        v = Decimal(r.randint(0, 10**6)) / 1000
    elif k < 0.6:
        v = Decimal(r.randint(0, 10**12)) / Decimal(10) ** r.randint(0, 12)
    elif k < 0.63:
        v = Decimal(r.randint(0, 10**18 - 1)) / Decimal(10) ** r.randint(0, 18)
    else:
        v = Decimal(r.randint(0, 500000)) / 100
    if signed and r.random() < 0.3:
        v = -v
    if not signed:
        v = abs(v)
    return str(v) if r.random() < 0.5 else v


def decimal(r):
    k = r.random()
    if k < 0.2:
        return Decimal(0)
    if k < 0.5:
        return Decimal(r.randint(-300, 3000)) / 100
    if k < 0.7:
        return Decimal(r.choice(["0.2", "1.5", "0.3333", "-0.5", "1", "3"]))
    return Decimal(r.randint(-10**9, 10**9)) / Decimal(10) ** r.randint(0, 15)


def integer(r):
    k = r.random()
    if k < 0.6:
        return r.randint(-3, 6)
    if k < 0.9:
        return r.randint(0, 1000)
    return r.randint(-10**9, 10**9)


def date(r):
    if r.random() < 0.4:
        return r.choice([dt.date(2020, 2, 29), dt.date(2023, 1, 1), dt.date(2022, 12, 31), dt.date(1960, 3, 1), dt.date(2005, 7, 1), dt.date(2023, 7, 1)])
    return dt.date(2023, 7, 1) - dt.timedelta(days=r.randint(-400, 80 * 365))


def make_facts(r: random.Random, pmiss: float) -> dict[str, Any]:
    """A household's facts; each fact left out with probability ``pmiss``."""
    def given(target: dict[str, Any], name: str, value: Any) -> None:
        if r.random() >= pmiss:
            target[name] = value

    f: dict[str, Any] = {}
    given(f, "a", money(r))
    given(f, "transfer_net", money(r, True))
    given(f, "b", decimal(r))
    given(f, "n", integer(r))
    given(f, "flag", r.random() < 0.5)
    given(f, "reg", r.choice(REG))
    given(f, "d", date(r))
    if r.random() < 0.05:  # no member list at all
        return f
    members = []
    for _ in range(r.choice([0, 0, 1, 1, 2, 2, 3, 4])):
        m: dict[str, Any] = {}
        given(m, "w", money(r))
        given(m, "k", integer(r))
        given(m, "r", decimal(r))
        given(m, "mf", r.random() < 0.5)
        given(m, "rel", r.choice(REL))
        given(m, "bd", date(r))
        members.append(m)
    f["members"] = members
    return f

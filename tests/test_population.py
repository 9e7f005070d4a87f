"""Population plumbing: reading files, synthetic households, ``screen`` and the roster check."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine import population as P
from policy_engine.cli import main
from policy_engine.facts import Household
from policy_engine.intake import NOT_MAPPING, NOT_UTF8

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2023-07-01"


@pytest.fixture(scope="module")
def anhui() -> pe.Engine:
    return pe.load(ROOT / "policies" / "anhui")


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pop") / "anhui.jsonl"
    P.write_synth(path, 2000, "anhui", seed=11)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policy_engine", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def test_read_facts_round_trip(tmp_path: Path) -> None:
    households = list(P.synth_households(30, "hunan", seed=3))
    households[4].pop("household_id")
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in households), encoding="utf-8")
    read = list(P.read_facts(path))
    assert [f for _, f in read] == [json.loads(json.dumps(h), parse_float=Decimal) for h in households]
    assert read[4][0] == "5" and read[0][0] == households[0]["household_id"]
    # the same households through Parquet (facts layout, typed: money Decimal(38, 2), dates Date)
    P.write_synth(tmp_path / "h.parquet", 30, "hunan", seed=3)
    parquet = list(P.read_facts(tmp_path / "h.parquet"))
    jsonl = list(P.synth_households(30, "hunan", seed=3))
    assert [hid for hid, _ in parquet] == [h["household_id"] for h in jsonl]
    assert pl.read_parquet_schema(tmp_path / "h.parquet")["assets"].to_schema()["deposits"] == pl.Decimal(38, 2)
    hunan = pe.load(ROOT / "policies" / "hunan")
    for (_, typed), text in zip(parquet, jsonl):
        a, b = hunan.decide(typed, AS_OF), hunan.decide(text, AS_OF)
        assert {d: (o.status, o.outputs) for d, o in a.items()} == {d: (o.status, o.outputs) for d, o in b.items()}
        assert typed["members"][0]["income"]["wages"] == Decimal(text["members"][0]["income"]["wages"])


def test_read_csv_with_members_table(tmp_path: Path, anhui: pe.Engine) -> None:
    (tmp_path / "h.csv").write_text(
        "household_id,area_type,assets.deposits,assets.vehicle_count,current_benefits.receiving_dibao\n"
        "A,rural,1000,0,true\n"
        "B,urban,-5,0,false\n"
        "C,rural,,x,false\n", encoding="utf-8")
    (tmp_path / "h.members.csv").write_text(
        "household_id,member_id,birth_date,income.wages,disability_grade\n"
        "A,m1,1960-01-01,300,0\nA,m2,1990-05-05,0,2\nC,m1,1970-01-01,100,0\n", encoding="utf-8")
    facts = dict(P.read_facts(tmp_path / "h.csv"))
    assert facts["A"]["assets"] == {"deposits": "1000", "vehicle_count": 0}
    assert facts["A"]["current_benefits"] == {"receiving_dibao": True}
    assert facts["A"]["members"][1] == {"member_id": "m2", "birth_date": "1990-05-05",
                                        "income": {"wages": "0"}, "disability_grade": 2}
    assert facts["B"]["members"] == []
    errors: list[P.RowError] = []
    frames = list(P.read_batches(tmp_path / "h.csv", anhui, 10, errors))
    assert frames[0][P.ID_COLUMN].to_list() == ["A"]
    assert [(e.row, e.column) for e in errors] == [(2, "assets.deposits"), (3, "assets.vehicle_count")]


def test_synth_is_deterministic_and_valid(tmp_path: Path) -> None:
    for suffix in ("jsonl", "parquet"):
        a, b, c = (tmp_path / f"{n}.{suffix}" for n in "abc")
        P.write_synth(a, 200, "shaanxi", seed=5)
        P.write_synth(b, 200, "shaanxi", seed=5)
        P.write_synth(c, 200, "shaanxi", seed=6)
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()
    for province in P.PROVINCES:
        households = list(P.synth_households(150, province, seed=1))
        for h in households:
            Household.model_validate(h)
        sizes = {len(h["members"]) for h in households}
        assert sizes <= set(range(1, 7)) and len(sizes) >= 5
        assert all(("dibao_tier" in h.get("assessment", {})) == (province == "shaanxi") for h in households)


def test_screen_equals_decide(tmp_path: Path, anhui: pe.Engine, synth_file: Path) -> None:
    out = tmp_path / "out.parquet"
    result = P.screen(anhui, synth_file, out, AS_OF, chunk_size=700)
    assert result.households == 2000 and not result.errors
    table = pl.read_parquet(out)
    assert table.height == 2000 and table["row"].to_list() == list(range(1, 2001))
    facts = [f for _, f in P.read_facts(synth_file)]
    for k, i in enumerate(random.Random(2).sample(range(2000), 60)):
        row = table.row(i, named=True)
        decision = (P.replay(anhui, synth_file, row["row"], AS_OF) if k < 5
                    else anhui.decide(facts[row["row"] - 1], AS_OF))
        for did, outcome in decision.items():
            assert row[f"{did}.status"] == outcome.status, (i, did)
            assert row[f"{did}.fired_rows"] == list(outcome.fired_rows)
            if outcome.status == "decided":
                for name, value in outcome.outputs.items():
                    assert row[f"{did}.{name}"] == (list(value) if isinstance(value, tuple) else value), (i, did)
    # JSON Lines output: money as exact decimal strings
    P.screen(anhui, synth_file, tmp_path / "out.jsonl", AS_OF, decisions=["dibao"], chunk_size=5000)
    first = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert isinstance(first["dibao.amount"], str | None) and "tekun.status" not in first
    assert first["dibao.amount"] == (None if table["dibao.amount"][0] is None else str(table["dibao.amount"][0]))


def test_malformed_rows_reported_rest_decided(tmp_path: Path, anhui: pe.Engine) -> None:
    lines = [json.dumps(h) for h in P.synth_households(20, "anhui", seed=2)]
    bad = json.loads(lines[3])
    bad["assets"]["deposits"] = "-10"
    lines[3] = json.dumps(bad)
    bad = json.loads(lines[7])
    bad["members"][0]["income"]["wages"] = "abc"
    bad["area_type"] = "suburban"
    lines[7] = json.dumps(bad)
    lines[11] = "{not json"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "o.parquet", AS_OF)
    assert result.households == 17
    where = [(e.row, e.column) for e in result.errors]
    assert (4, "assets.deposits") in where and (12, "") in where
    assert {(8, "area_type"), (8, "members[0].income.wages")} <= set(where)
    assert pl.read_parquet(tmp_path / "o.parquet")["row"].to_list() == [
        n for n in range(1, 21) if n not in (4, 8, 12)]


def test_roster_categories(tmp_path: Path, anhui: pe.Engine) -> None:
    households = [
        {"household_id": "ok-dibao", "area_type": "rural", "assets": {"deposits": "0", "cash": "0", "securities": "0",
         "vehicle_count": 0}, "members": [{"member_id": "m1", "birth_date": "1980-01-01", "income": {"wages": "0"}}]},
        *[h for h in P.synth_households(40, "anhui", seed=9)],
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in households), encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "r.parquet", AS_OF, keep_ids=True)
    table = pl.read_parquet(tmp_path / "r.parquet")
    eligible = table.filter(pl.col("dibao.eligible") == True)["household_id"].to_list()
    not_eligible = table.filter(pl.col("dibao.eligible") == False)["household_id"].to_list()
    assert len(eligible) >= 2 and not_eligible
    roster = tmp_path / "roster.csv"
    roster.write_text("household_id,benefit\n"
                      f"{eligible[0]},dibao\n{not_eligible[0]},dibao\n{eligible[1]},dibao\n{eligible[1]},特困\n"
                      f"{eligible[0]},dibao\nghost,dibao\n", encoding="utf-8")
    report = P.roster_check(result, P.read_roster(roster), anhui)
    assert report["应享未享"]["ids"] == sorted(set(eligible) - {eligible[0], eligible[1]})
    assert report["违规享受"]["ids"] == [not_eligible[0]]
    assert report["重复享受"]["ids"] == sorted({eligible[0], eligible[1]})
    assert report["not_in_population"]["ids"] == ["ghost"]
    plain = tmp_path / "roster.txt"
    plain.write_text(f"{eligible[0]}\n{eligible[0]}\n", encoding="utf-8")
    assert P.read_roster(plain) == [(eligible[0], "dibao")] * 2


@pytest.mark.parametrize(("content", "message"), [
    (b"A\xff\nB\n", "line 1 is not UTF-8 text"),
    (b"household_id\nA\n" + b"x" * 200_000 + b"\n", "row 2: not CSV: a cell longer than 131,072 characters"),
    (b'household_id,benefit\n"A,dibao\nB,dibao\n', "row 1: not CSV: a quote opened in this record is never closed"),
    (b"household_id,benefit\nA,Dibao\nB,pension\n", "row 2: benefit 'pension' is not one of dibao, 低保, tekun, 特困"),
    (b"household_id,household_id\nA,B\n", "the header is household_id, household_id: a roster has the columns"),
    (b"household_id, benefit\nA, tekun\n", None),  # spaces around names and cells: read
    (b"benefit,household_id\ntekun,A\n", None),  # either order
    (b"\xef\xbb\xbfhousehold_id,benefit\nA,tekun\n", None),  # a BOM, as Excel writes
    (b"household_id\nA,tekun\n", "row 1: 2 cells under a header of 1"),
    (b"household_id;benefit\nA;tekun\n", "the header is household_id;benefit: a roster has the columns"),
    (b"household_id,benefit,note\nA,tekun,x\n", "the header is household_id, benefit, note"),
])
def test_a_roster_line_that_cannot_be_read_for_sure_is_refused_with_its_line(
        tmp_path: Path, content: bytes, message: str | None) -> None:
    """A roster decides who is reported as 应享未享 or 违规享受: a line is not skipped or guessed."""
    path = tmp_path / "roster.csv"
    path.write_bytes(content)
    if message is None:
        assert P.read_roster(path) == [("A", "tekun")]
        return
    with pytest.raises(P.RosterError, match=message.replace("(", r"\(")):
        P.read_roster(path)


def test_roster_benefits_in_any_case_comments_and_malformed_rows(tmp_path: Path, anhui: pe.Engine) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("household_id,benefit\nA,Dibao\nB,TEKUN\nC,\nD, 低保 \n", encoding="utf-8")
    assert P.read_roster(path) == [("A", "dibao"), ("B", "tekun"), ("C", "dibao"), ("D", "dibao")]
    plain = tmp_path / "roster.txt"
    plain.write_text("# recipients, 2023-07\nA # moved in May\n  # B left\n\nC\t# by tab\n", encoding="utf-8")
    assert P.read_roster(plain) == [("A", "dibao"), ("C", "dibao")]
    for text, ids in [("# ids by household_id\nA\n", ["A"]), ("household_id_7\nA\n", ["household_id_7", "A"])]:
        plain.write_text(text, encoding="utf-8")  # a comment or an id that mentions household_id: still a list
        assert [hid for hid, _ in P.read_roster(plain)] == ids
    households = [h for h in P.synth_households(3, "anhui", seed=5)]
    households[1]["area_type"] = "suburb"  # malformed: refused, not "absent from the file"
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_text("".join(json.dumps(h) + "\n" for h in households), encoding="utf-8")
    result = P.screen(anhui, jsonl, tmp_path / "o.parquet", AS_OF, keep_ids=True)
    roster = [(households[1]["household_id"], "dibao"), ("ghost", "dibao")]
    report = P.roster_check(result, roster, anhui)
    assert report["malformed_in_population"]["ids"] == [households[1]["household_id"]]
    assert report["not_in_population"]["ids"] == ["ghost"]


def test_jsonl_lines_python_cannot_hold_are_their_rows_errors(tmp_path: Path, anhui: pe.Engine) -> None:
    """A 4,301-digit number (int() refuses it) or a lone surrogate escape (no Arrow column or
    file holds it) is one row's error; the lines around it are decided."""
    good = list(P.synth_households(2, "anhui", seed=3))
    huge = '{"household_id": "H", "assets": {"deposits": ' + "9" * 4301 + "}}"
    lone_id = '{"household_id": "\\ud800", "members": []}'
    member = dict(good[0], household_id="M", members=[dict(good[0]["members"][0], member_id="PLACEHOLDER")])
    lone_member = json.dumps(member).replace("PLACEHOLDER", "m\\udc80")
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join([json.dumps(good[0]), huge, lone_id, lone_member, json.dumps(good[1])]) + "\n",
                    encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "o.parquet", AS_OF)
    assert result.households == 2
    assert [(e.row, e.column) for e in result.errors] == [(2, ""), (3, "household_id"), (4, "members[0].member_id")]
    assert "more than 4,300 digits" in result.errors[0].message
    twice = tmp_path / "twice.jsonl"  # json.loads keeps the last of two values silently
    twice.write_text('{"household_id": "T", "assets": {"deposits": "1", "deposits": "999999"}}\n' + json.dumps(good[1]) + "\n",
                     encoding="utf-8")
    result = P.screen(anhui, twice, tmp_path / "o2.parquet", AS_OF)
    assert result.households == 1
    assert [(e.row, e.message) for e in result.errors] == [
        (1, "not JSON facts: the key 'deposits' appears twice in one object (which value is meant cannot be known)")]
    assert all(e.message == NOT_UTF8 for e in result.errors[1:])
    facts = json.loads(lone_member)  # decide reads it; decide_batch decides it by the scalar path
    batch = anhui.decide_batch([facts], AS_OF)
    assert batch["_fallback"].to_list() == [True]
    assert batch["dibao.status"].to_list() == [anhui.decide(facts, AS_OF)["dibao"].status]


def test_a_facts_layout_parquet_file_with_extra_columns_is_still_read_as_facts(tmp_path: Path) -> None:
    """An extra column (or member field) is ignored, as a JSON key the intake does not read: the
    file is not taken for the input layout, which would drop every nested fact without a word."""
    shared = pe.load(ROOT / "benchmarks" / "policies" / "shared_dibao")
    facts = {"assets": {"deposits": "100"}, "members": [{"income": {"wages": "500", "other_counted": "0"}}]}
    pl.DataFrame({"household_id": ["A"], "assets": [{"deposits": Decimal(100)}],
                  "members": [[{"income": {"wages": Decimal(500), "other_counted": Decimal(0)}, "note": 1}]],
                  "note": ["moved in May"]}).write_parquet(tmp_path / "h.parquet")
    result = P.screen(shared, tmp_path / "h.parquet", tmp_path / "o.parquet", AS_OF)
    assert result.errors == [] and result.households == 1
    row = pl.read_parquet(tmp_path / "o.parquet").row(0, named=True)
    expected = shared.decide(facts, AS_OF)["dibao"]
    assert (row["dibao.status"], row["dibao.amount"]) == (expected.status, expected.amount) == ("decided", Decimal("300.00"))
    assert shared.explain_row(tmp_path / "h.parquet", 1, AS_OF)["dibao"].amount == expected.amount


@pytest.mark.parametrize(("members", "dtype", "error"), [
    (["abc"], pl.String, "1:members: members must be a list"),
    ([[1]], pl.List(pl.Int64), "1:members[0]: members[0] must be a mapping"),
    ([[None, {"wages": Decimal(5), "other_income": Decimal(0)}]], None, "1:members[0]: members[0] must be a mapping"),
])
def test_input_layout_members_that_are_not_mappings_are_refused_not_crashed_on(
        tmp_path: Path, members: list[Any], dtype: Any, error: str) -> None:
    shared = pe.load(ROOT / "benchmarks" / "policies" / "shared_dibao")
    column = pl.Series("members", members, dtype=dtype) if dtype is not None else members
    pl.DataFrame({"household_id": ["A"], "deposits": [Decimal(100)], "members": column}).write_parquet(
        tmp_path / "h.parquet")
    result = P.screen(shared, tmp_path / "h.parquet", tmp_path / "o.parquet", AS_OF)
    assert [str(e) for e in result.errors] == [error] and result.households == 0


def test_read_batches_output_written_to_parquet_screens_as_it_did(tmp_path: Path, synth_file: Path,
                                                                    anhui: pe.Engine) -> None:
    """The input layout plus read_batches' household_id and row columns (review: refused once)."""
    frame = next(P.read_batches(synth_file, anhui, chunk_size=50))
    frame.write_parquet(tmp_path / "batch.parquet")
    result = P.screen(anhui, tmp_path / "batch.parquet", tmp_path / "o.parquet", AS_OF)
    assert result.errors == [] and result.households == 50


def test_an_input_layout_parquet_file_naming_other_columns_is_refused(tmp_path: Path) -> None:
    shared = pe.load(ROOT / "benchmarks" / "policies" / "shared_dibao")
    pl.DataFrame({"household_id": ["A"], "deposits": [Decimal(100)], "note": ["x"]}).write_parquet(tmp_path / "h.parquet")
    with pytest.raises(ValueError, match="column note is neither a field of the facts layout nor an input"):
        P.screen(shared, tmp_path / "h.parquet", tmp_path / "o.parquet", AS_OF)


def test_a_jsonl_line_over_the_limit_is_its_rows_error_and_not_held(
        tmp_path: Path, anhui: pe.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [json.dumps(h) for h in P.synth_households(3, "anhui", seed=2)]
    monkeypatch.setattr(P, "JSONL_LINE_LIMIT", max(len(lines[0]), len(lines[2])) + 1)
    lines[1] = lines[1][:-1] + ', "note": "' + "x" * (3 << 20) + '"}'  # over the limit, read past in pieces
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")  # the last line without its newline: still read
    result = P.screen(anhui, path, tmp_path / "o.parquet", AS_OF)
    assert result.households == 2
    assert [(e.row, e.column) for e in result.errors] == [(2, "")]
    assert result.errors[0].message.startswith("a line longer than")


def test_members_as_a_fixed_size_parquet_list_are_read_as_decide_reads_them(tmp_path: Path) -> None:
    shared = pe.load(ROOT / "benchmarks" / "policies" / "shared_dibao")
    inner = pl.Struct({"income": pl.Struct({"wages": pl.Decimal(38, 2), "other_counted": pl.Decimal(38, 2)})})
    members = [[{"income": {"wages": Decimal(500), "other_counted": Decimal(0)}}],
               [{"income": {"wages": Decimal(900), "other_counted": Decimal(0)}}]]
    pl.DataFrame({"household_id": ["A", "B"], "assets": [{"deposits": Decimal(100)}, {"deposits": Decimal(5)}],
                  "members": pl.Series(members, dtype=pl.Array(inner, 1))}).write_parquet(tmp_path / "h.parquet")
    result = P.screen(shared, tmp_path / "h.parquet", tmp_path / "o.parquet", AS_OF)
    assert result.errors == []
    got = pl.read_parquet(tmp_path / "o.parquet")["dibao.amount"].to_list()
    assert got == [shared.decide(f, AS_OF)["dibao"].amount for _, f in P.read_facts(tmp_path / "h.parquet")]
    assert got == [Decimal("300.00"), Decimal("0.00")]


def test_a_screen_that_decides_no_household_writes_the_usual_columns(tmp_path: Path, anhui: pe.Engine) -> None:
    (tmp_path / "h.jsonl").write_text('{"household_id": "A", "area_type": "x"}\n', encoding="utf-8")
    result = P.screen(anhui, tmp_path / "h.jsonl", tmp_path / "o.parquet", AS_OF)
    assert result.households == 0 and [str(e) for e in result.errors] == ["1:area_type: 'x' is not one of urban, rural"]
    empty = pl.read_parquet(tmp_path / "o.parquet")
    full = anhui.decide_batch([{"members": []}], AS_OF)
    assert empty.height == 0 and empty.columns == ["household_id", "row", *full.columns]
    with pytest.raises(TypeError, match="a row number is a whole number"):
        anhui.explain_row(tmp_path / "h.jsonl", 1.0, AS_OF)  # type: ignore[arg-type]


def test_cli_exit_codes(tmp_path: Path, synth_file: Path) -> None:
    out = tmp_path / "s.jsonl"
    done = _cli("synth", "--households", "50", "--province", "hebei", "--seed", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 50
    roster = tmp_path / "roster.txt"
    roster.write_text("HE-00000001\nHE-00000001\n", encoding="utf-8")
    result = tmp_path / "res.parquet"
    done = _cli("screen", str(out), "--policy", "policies/hebei", "--as-of", AS_OF, "--out", str(result),
                "--roster", str(roster), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "dibao" in done.stdout and "households/s" in done.stdout and "malformed rows: 0" in done.stdout
    report = json.loads(Path(str(result) + ".roster.json").read_text(encoding="utf-8"))
    assert report["重复享受"]["ids"] == ["HE-00000001"]
    # malformed rows still exit 0 and are listed row:column
    lines = out.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace('"area_type":"', '"area_type":"x')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _cli("screen", str(bad), "--policy", "policies/hebei", "--as-of", AS_OF, "--out", str(tmp_path / "b.jsonl"))
    assert done.returncode == 0 and "malformed rows: 1" in done.stdout and "3:area_type" in done.stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "package.yaml").write_text("id: [\n", encoding="utf-8")
    assert _cli("screen", str(out), "--policy", str(broken), "--as-of", AS_OF, "--out",
                str(tmp_path / "x.jsonl")).returncode == 2
    assert _cli("screen", str(tmp_path / "missing.jsonl"), "--policy", "policies/hebei", "--as-of", AS_OF,
                "--out", str(tmp_path / "x.jsonl")).returncode == 3
    assert main(["screen", str(out), "--policy", str(ROOT / "policies/hebei"), "--as-of", AS_OF, "--out",
                 str(tmp_path / "x.txt")]) == 3
    cut = tmp_path / "cut.parquet"  # a Parquet file cut short: a clear message, not a traceback
    P.write_synth(tmp_path / "whole.parquet", 50, "hebei", seed=1)
    cut.write_bytes((tmp_path / "whole.parquet").read_bytes()[:300])
    done = _cli("screen", str(cut), "--policy", "policies/hebei", "--as-of", AS_OF, "--out", str(tmp_path / "c.jsonl"))
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"policy-engine: cannot read {cut}: ")
    stray = tmp_path / "stray.parquet"  # neither layout: one line naming the column, exit 3
    pl.DataFrame({"household_id": ["A"], "nonsense": [1]}).write_parquet(stray)
    done = _cli("screen", str(stray), "--policy", "policies/hebei", "--as-of", AS_OF, "--out", str(tmp_path / "stray-out.jsonl"))
    assert done.returncode == 3 and done.stderr.startswith(f"policy-engine: {stray}: column nonsense is neither")
    done = _cli("screen", str(out), "--policy", "policies/hebei", "--as-of", AS_OF, "--out", str(out))
    assert done.returncode == 3 and "the output file is the input file" in done.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 50  # not overwritten
    bad_roster = tmp_path / "bad-roster.csv"
    bad_roster.write_text("household_id,benefit\nA,pension\n", encoding="utf-8")
    done = _cli("screen", str(out), "--policy", "policies/hebei", "--as-of", AS_OF, "--out", str(tmp_path / "r.jsonl"),
                "--roster", str(bad_roster))
    assert done.returncode == 3 and done.stderr.startswith(f"policy-engine: cannot read roster {bad_roster}: row 1")
    assert _cli("screen", str(out), "--policy", "policies/hebei", "--as-of", AS_OF, "--out",
                str(tmp_path / "x.jsonl"), "--decisions", "nope").returncode == 3
    assert main(["synth", "--households", "5", "--province", "mars", "--out", str(tmp_path / "m.jsonl")]) == 3
    assert main(["screen", str(out), "--policy", str(ROOT / "policies/hebei"), "--as-of", AS_OF, "--out",
                 str(tmp_path / "x.jsonl"), "--workers", "0"]) == 3
    assert main(["screen", str(out), "--policy", str(ROOT / "policies/hebei"), "--as-of", AS_OF, "--out",
                 str(tmp_path / "w3.jsonl"), "--workers", "3", "--chunk-size", "7", "--no-progress"]) == 0
    assert main(["screen", str(out), "--policy", str(ROOT / "policies/hebei"), "--as-of", AS_OF, "--out",
                 str(tmp_path / "w1.jsonl"), "--workers", "1", "--chunk-size", "7", "--no-progress"]) == 0
    three = (tmp_path / "w3.jsonl").read_text(encoding="utf-8")
    assert len(three.splitlines()) == 50 and three == (tmp_path / "w1.jsonl").read_text(encoding="utf-8")


def test_prefetched_chunks_keep_order_and_raise_the_readers_error_in_place() -> None:
    """screen reads the next chunk in a thread: items come in order, an error in the reader is
    raised where its item would have come, and stopping early ends the reader."""
    assert list(P._prefetched(iter(range(50)))) == list(range(50))

    def failing() -> Any:
        yield 1
        yield 2
        raise ValueError("bad chunk")

    seen: list[int] = []
    with pytest.raises(ValueError, match="bad chunk"):
        seen.extend(P._prefetched(failing()))
    assert seen == [1, 2]
    pulled: list[int] = []

    def counting() -> Any:
        for i in range(1000):
            pulled.append(i)
            yield i

    for item in P._prefetched(counting()):
        if item == 3:
            break
    assert len(pulled) <= 6  # read ahead by at most about one item, then stopped


def test_a_consumer_that_stops_while_the_reader_is_done_does_not_hang(tmp_path: Path, synth_file: Path) -> None:
    """Found by review: the reader's last message ("end", or an error) was put without checking
    whether the consumer had stopped, so closing the generator after the reader had read
    everything (a one-chunk file whose deciding failed) waited for the reader forever."""
    import threading
    import time

    closed: list[str] = []

    def source() -> Any:
        try:
            yield from range(2)
        finally:
            closed.append("source")

    items = P._prefetched(source())
    assert next(items) == 0
    time.sleep(0.3)  # the reader has read everything: item 1 waits in the box, "end" after it
    done = threading.Event()
    threading.Thread(target=lambda: (items.close(), done.set()), daemon=True).start()
    assert done.wait(10), "closing the reader hung"
    assert closed == ["source"]
    assert not [t for t in threading.enumerate() if t.name == "policy-engine-reader"]
    # the same through screen and the CLI: a decision name it refuses, on a file of one chunk
    done_cli = _cli("screen", str(synth_file), "--policy", "policies/anhui", "--as-of", AS_OF, "--out",
                    str(tmp_path / "o.jsonl"), "--decisions", "no_such_decision", "--workers", "1", "--no-progress")
    assert done_cli.returncode == 3 and "no_such_decision" in done_cli.stderr


# --- CSV read column by column (screen) ----------------------------------------------------------


def _flat(facts: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif key == "members" or value is None:
            continue
        elif isinstance(value, list):
            out[prefix + key] = ";".join(map(str, value))
        elif isinstance(value, bool):
            out[prefix + key] = "true" if value else "false"
        else:
            out[prefix + key] = str(value)
    return out


def _write_csv(path: Path, rows: list[dict[str, str]], newline: str = "\n") -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text(newline.join(lines) + newline, encoding="utf-8")


#: cells a clerk's export may hold, in any column: read (or refused) as the row-by-row reading does
_ODD_CELLS = ["abc", " 12 ", "+5", "1_000", "\u0661\u0662", "99999999999999999999", "-0", "007", " yes ", "Y",
              "N", "t", "maybe", "1e3", "-5", "12.50", " 5.5", ".5", "1E+2", "NaN", "2023-13-01", "2023-02-29",
              "1964-04-26", "urban", "RURAL", "north", "x;y", "a; ;b", "  "]


#: flags written as people write them (read, not refused)
_FLAG_CELLS = [" yes ", "Y", "N", "t", "TRUE", "0", "1", "No"]


def _csv_population(tmp_path: Path, seed: int, rate: float, newline: str = "\n", flags_read: bool = False) -> Path:
    """300 synthetic households as CSV tables, a ``rate`` of their cells replaced by odd text
    (with ``flags_read``, text in a flag column is always a readable flag, so that every chunk
    is read column by column)."""
    rng = random.Random(seed)
    households, members = [], []
    for h in P.synth_households(300, "anhui", seed=seed):
        households.append(_flat(h))
        for m in h.get("members") or []:
            members.append({**_flat(m), "household_id": h["household_id"]})
    for rows, kinds in ((households, P._CSV_HOUSEHOLD), (members, P._CSV_MEMBER)):
        for row in rows:
            for column in list(row):
                if column != "household_id" and rng.random() < rate:
                    flag = flags_read and kinds.get(column) == "bool"
                    row[column] = rng.choice(_FLAG_CELLS if flag else _ODD_CELLS)
    households[7]["household_id"] = households[3]["household_id"]  # a repeated id: refused (whose members?)
    households[9].pop("household_id")  # no id: the row number, and no members
    path = tmp_path / f"h{seed}.csv"
    _write_csv(path, households, newline)
    _write_csv(P.members_path(path), members, newline)
    return path


def _screen_both(path: Path, engine: pe.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[P.ScreenResult, pl.DataFrame, P.ScreenResult, pl.DataFrame]:
    columnar = P.screen(engine, path, tmp_path / "columnar.parquet", AS_OF, chunk_size=50)
    with monkeypatch.context() as patch:
        patch.setattr(P, "_csv_chunks", lambda *args: None)  # the row-by-row reading
        rows = P.screen(engine, path, tmp_path / "rows.parquet", AS_OF, chunk_size=50)
    return (columnar, pl.read_parquet(tmp_path / "columnar.parquet"),
            rows, pl.read_parquet(tmp_path / "rows.parquet"))


@pytest.mark.parametrize(("seed", "rate", "newline", "flags_read"),
                         [(1, 0.0, "\n", False), (2, 0.002, "\r\n", False), (3, 0.01, "\n", False),
                          (5, 0.01, "\n", True), (6, 0.03, "\r\n", True)])
def test_csv_column_by_column_equals_row_by_row(tmp_path: Path, anhui: pe.Engine, monkeypatch: pytest.MonkeyPatch,
                                                seed: int, rate: float, newline: str, flags_read: bool) -> None:
    path = _csv_population(tmp_path, seed, rate, newline, flags_read)
    assert P._csv_chunks(path, anhui, 50, []) is not None  # the file is read column by column
    columnar, a, rows, b = _screen_both(path, anhui, tmp_path, monkeypatch)
    assert a.equals(b)
    assert columnar.errors == rows.errors
    assert columnar.households == rows.households > 100
    if rate:
        assert rows.errors  # the odd cells did reach the intake


def test_csv_cells_only_the_row_reading_keeps_send_their_chunk_row_by_row(
        tmp_path: Path, anhui: pe.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _csv_population(tmp_path, 4, 0.0)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[120].split(",")
    cells[header.index("current_benefits.receiving_dibao")] = "maybe"  # not a flag: the intake says so
    lines[120] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    columnar, a, rows, b = _screen_both(path, anhui, tmp_path, monkeypatch)
    assert a.equals(b) and columnar.errors == rows.errors
    # row 8 repeats row 4's id (_csv_population); the members of the households whose ids were
    # changed (rows 8 and 10) are filed under ids no row has: the end of the file says so
    assert [(e.row, e.column) for e in columnar.errors] == [
        (8, "household_id"), (120, "current_benefits.receiving_dibao"), (0, "")]
    assert "also the household id of row 4" in columnar.errors[0].message
    assert "expected true or false" in columnar.errors[1].message
    assert "members filed under 2 household ids that no row of h4.csv has" in columnar.errors[2].message


@pytest.mark.parametrize("chunk_size", [1, 2, 50])
def test_csv_members_that_join_no_household_or_two_are_reported(
        tmp_path: Path, anhui: pe.Engine, monkeypatch: pytest.MonkeyPatch, chunk_size: int) -> None:
    """Members filed under an id no household has (" A " for "A", a typo) are reported, not
    dropped; a second household with an id that was given members is refused, not given them
    again; both readings agree, chunk boundaries or not."""
    path = tmp_path / "h.csv"
    path.write_text("household_id,area_type\nA,rural\nB,rural\nA,urban\nC,rural\nB,urban\n", encoding="utf-8")
    P.members_path(path).write_text("household_id,member_id,income.wages\nA,a1,100\n A ,a2,100\nB,b1,100\n"
                                    "Z,z1,100\n", encoding="utf-8")
    results = []
    for columnar in (True, False):
        with monkeypatch.context() as patch:
            if not columnar:
                patch.setattr(P, "_csv_chunks", lambda *args: None)
            else:
                assert P._csv_chunks(path, anhui, chunk_size, []) is not None
            result = P.screen(anhui, path, tmp_path / "o.parquet", AS_OF, chunk_size=chunk_size, keep_ids=True)
        results.append(([(e.row, e.column, e.message) for e in result.errors], result.households,
                        pl.read_parquet(tmp_path / "o.parquet")))
    (errors, households, table), (errors_rows, households_rows, table_rows) = results
    assert errors == errors_rows and households == households_rows == 3 and table.equals(table_rows)
    assert errors == [
        (3, "household_id", ("A is also the household id of row 1, which was given its members: "
                            "whose members they are cannot be known")),
        (5, "household_id", ("B is also the household id of row 2, which was given its members: "
                            "whose members they are cannot be known")),
        (0, "", ("h.members.csv: members filed under 2 household ids that no row of h.csv has (' A ', 'Z'); "
                "they are not read"))]


def test_csv_tables_saved_with_a_bom_are_joined(tmp_path: Path, anhui: pe.Engine,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Excel writes UTF-8 CSV with a byte-order mark: the first header is still household_id,
    column by column (polars drops the mark) as row by row."""
    path = tmp_path / "h.csv"
    path.write_text("\ufeffhousehold_id,area_type\nA,rural\nB,urban\n", encoding="utf-8")
    P.members_path(path).write_text("\ufeffhousehold_id,member_id,income.wages\nA,a1,100\nB,b1,5000\n",
                                    encoding="utf-8")
    assert P._csv_plain_file(path, P._CSV_HOUSEHOLD)
    columnar, a, rows, b = _screen_both(path, anhui, tmp_path, monkeypatch)
    assert a.equals(b) and columnar.errors == rows.errors == [] and a["household_id"].to_list() == ["A", "B"]
    facts = dict(P.read_facts(path))["A"]
    assert [m["member_id"] for m in facts["members"]] == ["a1"]


def test_a_household_table_without_ids_beside_a_members_table_leaves_members_unknown(
        tmp_path: Path, anhui: pe.Engine) -> None:
    path = tmp_path / "h.csv"
    path.write_text("area_type\nrural\n", encoding="utf-8")
    P.members_path(path).write_text("household_id,member_id\nA,a1\n", encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "o.parquet", AS_OF)
    assert [(e.row, e.message) for e in result.errors] == [
        (0, ("h.csv: the header has no household_id column, so no household can be given its members from "
            "h.members.csv; every household's members are unknown"))]
    assert pl.read_parquet(tmp_path / "o.parquet")["dibao.status"].to_list() == ["needs_information"]


@pytest.mark.parametrize("text", ['h,"quoted"\n', "household_id,area_type\n\nA,rural\n", "household_id\rA\r",
                                  "household_id,nonsense\nA,1\n", "household_id,area_type,area_type\nA,x,y\n",
                                  "\nhousehold_id\nA\n"])
def test_csv_files_polars_could_split_differently_are_read_row_by_row(tmp_path: Path, text: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    assert not P._csv_plain_file(path, P._CSV_HOUSEHOLD)


def test_csv_plain_file_accepts_crlf(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b"household_id,area_type\r\nA,rural\r\nB,urban\r\n")
    assert P._csv_plain_file(path, P._CSV_HOUSEHOLD)


def test_whole_numbers_beyond_64_bits_are_refused_everywhere(tmp_path: Path, anhui: pe.Engine) -> None:
    facts = {"area_type": "rural", "assets": {"vehicle_count": 2**63}, "members": []}
    with pytest.raises(pe.FactsError, match="whole number out of range"):
        anhui.decide(facts, AS_OF)
    anhui.decide({**facts, "assets": {"vehicle_count": 2**63 - 1}}, AS_OF)  # the largest allowed
    # a Parquet column of unsigned counts: the row beyond the limit is reported, the others go on
    frame = pl.DataFrame({"household_id": ["A", "B"], "area_type": ["rural", "rural"],
                          "assets": pl.DataFrame({"vehicle_count": pl.Series([1, 2**63], dtype=pl.UInt64)})
                          .to_struct("assets")})
    frame.write_parquet(tmp_path / "u.parquet")
    result = P.screen(anhui, tmp_path / "u.parquet", tmp_path / "out.parquet", AS_OF)
    assert result.households == 1
    assert [(e.row, e.column) for e in result.errors] == [(2, "assets.vehicle_count")]
    assert "out of range" in result.errors[0].message


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_decimals_too_long_for_a_population_are_reported_and_the_rest_go_on(
        tmp_path: Path, anhui: pe.Engine, suffix: str) -> None:
    huge, tiny = "1" + "0" * 40, "0." + "0" * 30 + "1"
    rows = [{"household_id": "A", "area_type": "rural", "assets.deposits": "1000"},
            {"household_id": "B", "area_type": "rural", "assets.deposits": huge},
            {"household_id": "C", "area_type": "urban", "assets.deposits": tiny},
            {"household_id": "D", "area_type": "urban", "assets.deposits": "123456789012345678.5"}]
    path = tmp_path / f"h{suffix}"
    if suffix == ".csv":
        _write_csv(path, rows)
    else:
        path.write_text("".join(json.dumps({"household_id": r["household_id"], "area_type": r["area_type"],
                                            "assets": {"deposits": r["assets.deposits"]}}) + "\n" for r in rows),
                        encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF)
    assert result.households == 2
    assert [(e.row, e.column) for e in result.errors] == [(2, "assets.deposits"), (3, "assets.deposits")]
    assert all("too many digits" in e.message for e in result.errors)
    # decide reads them where it can compute exactly, and decide_batch on facts decides those with it
    assets = {"cash": "0", "securities": "0", "vehicle_count": 0, "vehicle_value": "0"}
    facts = [{"area_type": "rural", "assets": {**assets, "deposits": value}, "members": []} for value in (tiny, "5")]
    batch = anhui.decide_batch(facts, AS_OF, decisions=["dibao"])
    assert batch["_fallback"].to_list() == [True, False]
    for k, f in enumerate(facts):
        outcome = anhui.decide(f, AS_OF)["dibao"]
        assert batch["dibao.status"][k] == outcome.status == "decided"
        assert batch["dibao.eligible"][k] == outcome.outputs["eligible"]
        assert batch["dibao.fired_rows"][k].to_list() == list(outcome.fired_rows)
    # where the arithmetic would need more than 34 digits, decide names the fact (as PE401)
    beyond = {"area_type": "rural", "assets": {**assets, "deposits": huge}, "members": []}
    for call in (lambda: anhui.decide(beyond, AS_OF), lambda: anhui.decide_batch([beyond], AS_OF)):
        with pytest.raises(pe.FactsError, match=r"PE401 (\[0\]\.)?assets\.deposits: too many digits"):
            call()


@pytest.mark.parametrize(("households", "members"), [
    ("household_id,area_type\nA,rural,extra\nB,urban\n", None),  # a cell beyond the header: ignored
    ("household_id,area_type\nA,rural,\n", "household_id,adl_failed\nA,1,2\n"),
    ("household_id,area_type\nA,rural\nB,urban\n", "household_id\nA\nA\n"),  # members with no facts
    ("household_id,area_type\nA,rural\n", "household_id,relation\nA,head\nA,spouse\n"),  # none the policy reads
    ("jurisdiction_code\nx\ny\n", None),  # no column the policy reads, no id
    ("household_id,area_type\nA,rural\nB,urban\n", "household_id,birth_date\nA,0000-01-01\nB,1960-01-01\n"),
])
def test_csv_shapes_read_column_by_column_as_row_by_row(tmp_path: Path, anhui: pe.Engine,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         households: str, members: str | None) -> None:
    path = tmp_path / "h.csv"
    path.write_text(households, encoding="utf-8")
    if members is not None:
        P.members_path(path).write_text(members, encoding="utf-8")
    columnar, a, rows, b = _screen_both(path, anhui, tmp_path, monkeypatch)
    assert a.equals(b) and columnar.errors == rows.errors and columnar.households == rows.households


def test_all_rows_refused_writes_the_same_file_either_way(tmp_path: Path, anhui: pe.Engine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.csv"
    path.write_text("household_id,area_type\nA,north\nB,south\n", encoding="utf-8")
    columnar, a, rows, b = _screen_both(path, anhui, tmp_path, monkeypatch)
    assert columnar.households == rows.households == 0 and len(columnar.errors) == 2
    assert a.schema == b.schema


@pytest.mark.parametrize(("dtype", "value"), [
    (pl.Int64, 5 * 10**18), (pl.UInt64, 18 * 10**18), (pl.Decimal(38, 2), Decimal("12345678901234567890.12")),
    (pl.Decimal(38, 20), Decimal("1E-20")), (pl.Decimal(38, 0), Decimal(10**36)),
])
def test_numeric_parquet_columns_keep_the_digit_limit_as_text_does(tmp_path: Path, anhui: pe.Engine,
                                                                   dtype: pl.DataType, value: Any) -> None:
    base = Decimal(1000) if isinstance(dtype, pl.Decimal) else 1000
    deposits = pl.Series("deposits", [base, value] if dtype != pl.Decimal(38, 20) else [None, value], dtype=dtype)
    frame = pl.DataFrame({"household_id": ["A", "B"], "area_type": ["rural", "rural"],
                          "assets": pl.DataFrame([deposits]).to_struct("assets")})
    frame.write_parquet(tmp_path / "h.parquet")
    text = tmp_path / "h.jsonl"
    text.write_text("".join(json.dumps({"household_id": h, "area_type": "rural", "assets": {"deposits": str(v)}}) + "\n"
                            for h, v in zip("AB", deposits.to_list()) if v is not None)
                    + ("" if deposits[0] is not None else json.dumps({"household_id": "A", "area_type": "rural"}) + "\n"),
                    encoding="utf-8")
    parquet = P.screen(anhui, tmp_path / "h.parquet", tmp_path / "p.parquet", AS_OF)
    jsonl = P.screen(anhui, text, tmp_path / "j.parquet", AS_OF)
    assert parquet.households == jsonl.households == 1
    assert [(e.column, e.message) for e in parquet.errors] == [(e.column, e.message) for e in jsonl.errors]
    assert "too many digits" in parquet.errors[0].message


def test_whole_numbers_with_huge_exponents_are_refused_at_once(anhui: pe.Engine) -> None:
    from policy_engine.intake import coerce

    node = next(n for n in anhui.policy.inputs if n.name == "months_since_income_exceeded")
    for value in (Decimal("1e999999999"), "9" * 5000, "-" + "1" * 30):
        with pytest.raises(ValueError, match="out of range"):
            coerce(value, node)
    assert coerce("0" * 30 + "7", node) == 7


def test_a_json_line_that_is_not_utf8_is_reported_and_the_rest_go_on(tmp_path: Path, anhui: pe.Engine) -> None:
    lines = [json.dumps(h, ensure_ascii=False).encode("utf-8") for h in P.synth_households(3, "anhui", seed=2)]
    lines.insert(1, b'{"household_id": "X", "area_type": "rural\xff\xfe"}')
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF)
    assert result.households == 3
    assert [(e.row, e.column) for e in result.errors] == [(2, "")]
    assert result.errors[0].message == "not UTF-8 text (column 42)"  # the first byte that is not


def test_a_json_line_nested_too_deeply_is_reported_and_the_rest_go_on(tmp_path: Path, anhui: pe.Engine) -> None:
    path = tmp_path / "h.jsonl"
    deep = '{"household_id": "B", "note": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = ['{"household_id": "A", "area_type": "rural"}', deep, '{"household_id": "C", "area_type": "urban"}']
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF)
    assert result.households == 2
    assert [(e.row, e.column, e.message) for e in result.errors] == [(2, "", "not JSON facts: nested too deeply")]
    with pytest.raises(pe.FactsError, match="2: not JSON facts: nested too deeply"):
        list(P.read_facts(path))


def test_csv_cells_that_are_not_utf8_are_reported_and_the_rest_go_on(tmp_path: Path, anhui: pe.Engine) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b"household_id,area_type,assets.deposits\nA,rural,10\nB,rur\xe9al,10\nC,urban,10\nD,urban,10\n")
    P.members_path(path).write_bytes(b"household_id,member_id,income.wages\nA,m1,100\nC,m\xff1,100\nD,m1,5\n")
    assert not P._csv_plain_file(path, P._CSV_HOUSEHOLD)  # read row by row, which reports the bytes
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF)
    assert result.households == 2
    assert [(e.row, e.column, e.message, e.household_id) for e in result.errors] == [
        (2, "area_type", "not UTF-8 text", "B"), (3, "members[0].member_id", "not UTF-8 text", "C")]


@pytest.mark.parametrize(("text", "households", "errors"), [
    ('household_id,area_type\nA,rural\n"B"x,urban\nC,urban\n', 2,
     [(2, "not CSV: text after a closing quote (a quoted cell must be quoted whole)")]),
    ('household_id,area_type\n"A",rural\nB,' + "x" * 200_000 + "\nC,urban\n", 2,
     [(2, "not CSV: a cell longer than 131,072 characters")]),
    ('household_id,area_type\nA,rural\nB,' + "x" * 200_000 + "\nC,urban\n", 2,  # no quote: the same
     [(2, "not CSV: a cell longer than 131,072 characters")]),
    ('household_id,area_type\nA,rural\n"B,urban\nC,urban\n', 1,
     [(2, "not CSV: a quote opened in this record is never closed (the rest of the file is in it)")]),
    ('"household_id"x,area_type\nA,rural\n', 0,
     [(0, "the header: not CSV: text after a closing quote (a quoted cell must be quoted whole)")]),
])
def test_csv_records_that_are_not_csv_are_reported_and_the_rest_go_on(
        tmp_path: Path, anhui: pe.Engine, text: str, households: int, errors: list[tuple[int, str]]) -> None:
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF)
    assert result.households == households
    assert [(e.row, e.message) for e in result.errors] == errors


def test_a_members_record_that_is_not_csv_is_the_files_error(tmp_path: Path, anhui: pe.Engine) -> None:
    path = tmp_path / "h.csv"
    path.write_text("household_id,area_type\nA,rural\nB,urban\n", encoding="utf-8")
    P.members_path(path).write_text('household_id,member_id\nA,m1\n"B"x,m1\nB,m2\n', encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF, keep_ids=True)
    assert result.households == 2
    assert [(e.row, e.message) for e in result.errors] == [
        (0, ("h.members.csv record 2: not CSV: text after a closing quote (a quoted cell must be quoted whole); "
            "that member is not read"))]
    with pytest.raises(pe.FactsError, match="h.members.csv record 2: not CSV"):  # read_facts refuses it
        list(P.read_facts(path))


@pytest.mark.parametrize(("text", "households", "errors"), [
    # a cell for a group of facts and one for a fact under it, in either order: that row only
    ("household_id,assets,assets.deposits,area_type\nA,5,100,rural\nB,,100,rural\n", 1,
     [(1, "assets", "one cell gives assets a value and another gives facts under it: it cannot be both")]),
    ("household_id,assets.deposits,assets,area_type\nA,100,5,rural\nB,100,,rural\n", 1,
     [(1, "assets", "one cell gives assets a value and another gives facts under it: it cannot be both")]),
    # a group given a value on its own: the intake's error
    ("household_id,assets,area_type\nA,5,rural\nB,,rural\n", 1, [(1, "assets", NOT_MAPPING)]),
    # a column named twice: which cell is meant cannot be known, so nothing is read
    ("household_id,assets.deposits,area_type,assets.deposits\nA,100,rural,200\n", 0,
     [(0, "", "the header names assets.deposits twice: which cell to read cannot be known")]),
])
def test_csv_cells_that_clash_are_reported_not_crashed_on_or_dropped(
        tmp_path: Path, anhui: pe.Engine, text: str, households: int, errors: list[tuple[int, str, str]]) -> None:
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF)
    assert result.households == households
    assert [(e.row, e.column, e.message) for e in result.errors] == errors


@pytest.mark.parametrize(("members", "message"), [
    ("hh,member_id\nA,m1\n", "the header has no household_id column"),
    ("household_id,member_id,member_id\nA,m1,m2\n", "the header names member_id twice: which cell to read cannot be known"),
])
def test_a_members_table_that_cannot_be_joined_leaves_members_unknown(
        tmp_path: Path, anhui: pe.Engine, members: str, message: str) -> None:
    """Not a household of no members (that would decide its per-capita income on nobody)."""
    path = tmp_path / "h.csv"
    path.write_text("household_id,area_type\nA,rural\n", encoding="utf-8")
    P.members_path(path).write_text(members, encoding="utf-8")
    result = P.screen(anhui, path, tmp_path / "out.parquet", AS_OF, keep_ids=True)
    assert [(e.row, e.message) for e in result.errors] == [
        (0, f"h.members.csv: {message}; no member is read, so every household's members are unknown")]
    assert pl.read_parquet(tmp_path / "out.parquet")["dibao.status"].to_list() == ["needs_information"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 45), max_size=8), st.integers(1, 20))
def test_longer_line_finds_exactly_the_lines_over_the_limit(lengths: list[int], limit: int) -> None:
    data = b"\n".join(b"x" * n for n in lengths)
    assert P._longer_line(data, limit) == (max(map(len, data.split(b"\n"))) > limit)


def test_screen_gives_the_same_output_errors_and_counts_whatever_the_workers(
        tmp_path: Path, anhui: pe.Engine) -> None:
    """Chunks decided side by side (``workers``) change nothing a caller sees: the output rows
    and their order, the errors in the file's order (the reader's, then a chunk's refused rows,
    then what the file says at its end), the counts and the roster ids."""
    lines = [json.dumps(h) for h in P.synth_households(300, "anhui", seed=21)]
    for k in (3, 40, 41, 177, 299):  # malformed rows spread over many chunks
        bad = json.loads(lines[k])
        bad["assets"]["deposits"] = "-1"
        lines[k] = json.dumps(bad)
    lines[90] = "{not json"
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen = []
    for workers in (1, 2, 3):
        out = tmp_path / f"o{workers}.parquet"
        result = P.screen(anhui, path, out, AS_OF, chunk_size=13, keep_ids=True, workers=workers)
        seen.append((pl.read_parquet(out), [(e.row, e.column, e.message) for e in result.errors], result.counts,
                     result.households, result.eligible, result.ids))
    (table, errors, counts, households, eligible, ids) = seen[0]
    assert households == 294 and table["row"].to_list() == [n for n in range(1, 301) if n not in (4, 41, 42, 91, 178, 300)]
    assert [row for row, _, _ in errors] == [4, 41, 42, 91, 178, 300]
    for other in seen[1:]:
        assert other[0].equals(table) and other[1:] == (errors, counts, households, eligible, ids)


def test_decided_in_order_keeps_the_order_and_raises_where_the_error_is() -> None:
    import threading
    import time

    delays = [random.Random(5).random() / 200 for _ in range(12)]
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    def work(k: int) -> int:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(delays[k])
        with lock:
            running["now"] -= 1
        if k == 9:
            raise ValueError("chunk 9")
        return k * k

    for workers in (1, 2, 4):
        got = []
        with pytest.raises(ValueError, match="chunk 9"):
            for value in P._decided_in_order(iter(range(12)), work, workers):
                got += [value]
        assert got == [k * k for k in range(9)]  # every chunk before the failing one, in order
        assert running["most"] <= workers
        running["most"] = 0
    assert list(P._decided_in_order(iter(range(5)), lambda k: -k, 3)) == [0, -1, -2, -3, -4]

    def reader(fail_at: int) -> Any:
        yield from range(fail_at)
        raise OSError(f"reader failed at chunk {fail_at}")

    def deciding(fail_at: int | None) -> Any:
        def decide(k: int) -> int:
            if k == fail_at:
                raise ValueError(f"decide failed at chunk {k}")
            return k
        return decide

    for workers in (1, 2, 4):  # the first error in the file's order, whatever the workers
        got = []
        with pytest.raises(ValueError, match="chunk 1"):
            for value in P._decided_in_order(reader(3), deciding(1), workers):
                got += [value]
        assert got == [0]
        got = []
        with pytest.raises(OSError, match="chunk 3"):
            for value in P._decided_in_order(reader(3), deciding(None), workers):
                got += [value]
        assert got == [0, 1, 2]  # every chunk read before the reader failed


def test_screen_refuses_fewer_than_one_worker(tmp_path: Path, anhui: pe.Engine, synth_file: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        P.screen(anhui, synth_file, tmp_path / "o.parquet", AS_OF, workers=0)
    assert 1 <= P.default_workers() <= 4


def test_default_workers_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert P.default_workers() == 4  # at most 4: each worker holds a chunk in memory
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert P.default_workers() == 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert P.default_workers() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # cannot be known
    assert P.default_workers() == 1


def _overlapping_u_table() -> pe.Engine:
    """A unique (U) table whose rows overlap on 3..4: a household with n = 3 or 4 cannot be
    decided (PE301)."""
    from tests.helpers import engine_for

    label = {"zh": "x", "en": "x"}
    return engine_for({
        "inputs": {"n": {"path": "n", "type": "integer", "label": label}},
        "decisions": {"d": {"label": label, "cite": "s §1", "type": "integer",
                            "table": {"hit": "U", "inputs": ["n"], "outputs": ["value"], "rows": [
                                {"id": "low", "when": ["< 5"], "then": [1]},
                                {"id": "mid", "when": ["[3..9]"], "then": [2]}]}}}})


def test_a_household_the_policy_cannot_decide_is_reported_and_the_others_are_decided(tmp_path: Path) -> None:
    """Two rows of a unique (U) table matching one household is a defect of the policy for that
    case (PE301): ``decide`` raises PolicyError. ``screen`` used to stop on it, deciding no one;
    it now reports that household as its row's error, with the code, and decides the others."""
    from policy_engine.diagnostics import PolicyError
    from policy_engine.vector import decide_batch

    engine = _overlapping_u_table()
    rows = [{"household_id": "A", "n": 1}, {"household_id": "B", "n": 4}, {"household_id": "C", "n": 7}]
    (tmp_path / "h.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(PolicyError, match="PE301"):
        engine.decide(rows[1], AS_OF)
    with pytest.raises(PolicyError, match=r"\[1\]"):
        decide_batch(engine, rows, AS_OF)
    result = P.screen(engine, tmp_path / "h.jsonl", tmp_path / "o.parquet", AS_OF, workers=1)
    assert [(e.row, e.household_id) for e in result.errors] == [(2, "B")]
    assert "the policy cannot decide this household (PE301)" in result.errors[0].message
    table = pl.read_parquet(tmp_path / "o.parquet")
    assert table["household_id"].to_list() == ["A", "C"] and table["d.value"].to_list() == [1, 2]


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_come_in_the_files_order_within_a_chunk_too(tmp_path: Path, workers: int) -> None:
    """Found by review: a chunk's refused rows (here PE301) were reported after the reader's
    errors for later rows of the same chunk."""
    engine = _overlapping_u_table()
    lines = ['{"household_id": "A", "n": 1}', '{"household_id": "B", "n": 4}', '{"household_id": "C", "n": 7}',
             '{"household_id": "D", "n": "x"}', '{"household_id": "E", "n": 3}', '{"household_id": "F", "n": 8}']
    (tmp_path / "h.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = P.screen(engine, tmp_path / "h.jsonl", tmp_path / "o.parquet", AS_OF, chunk_size=4, workers=workers)
    assert [(e.row, e.column) for e in result.errors] == [(2, ""), (4, "n"), (5, "")]
    assert pl.read_parquet(tmp_path / "o.parquet")["household_id"].to_list() == ["A", "C", "F"]

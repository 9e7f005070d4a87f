"""Lint checks PE260-PE265: each proved on a small table, and each silent where it must be."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy_engine.compile import compile_package
from policy_engine.lint import lint, suites_for
from tests.helpers import write_package

ROOT = Path(__file__).resolve().parent.parent
DAY = dt.date(2023, 7, 1)


def _table_module(hit: str, rows: list[dict[str, Any]], *, columns: list[str] | None = None,
                  column_types: dict[str, dict[str, Any]] | None = None, default: Any = None,
                  parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    inputs = column_types or {
        "income": {"type": "money", "label": {"zh": "收入", "en": "income"}},
        "area": {"type": "enum", "values": ["urban", "rural"], "label": {"zh": "城乡", "en": "area"}},
    }
    table: dict[str, Any] = {"hit": hit, "inputs": columns or list(inputs), "outputs": ["level"],
                             "rows": [{**r, "cite": "s 一"} for r in rows]}
    if default is not None:
        table["default"] = {"level": default}
    module: dict[str, Any] = {
        "inputs": inputs,
        "decisions": {"band": {"label": {"zh": "档次", "en": "band"}, "cite": "s 一",
                               "outputs": {"level": {"type": "integer", "label": {"zh": "档", "en": "level"}}},
                               "table": table}},
    }
    if parameters:
        module["parameters"] = parameters
    return module


def _lint(tmp_path: Path, module: dict[str, Any], suites: list[Path] | None = None,
          as_of: dt.date | None = DAY) -> list[str]:
    folder = write_package(tmp_path / "pkg", module)
    policy, diagnostics = compile_package(folder)
    assert policy is not None, [d.gnu() for d in diagnostics]
    return [f"{d.code} {d.message}" for d in lint(policy, as_of, diagnostics, suites)]


def _codes(lines: list[str], code: str) -> list[str]:
    return [line for line in lines if line.startswith(code)]


STANDARD = {"standard": {"type": "money", "values": {"2020-01-01": 700}, "provenance": "sourced",
                         "source": "测试", "cite": "s 一"}}


# --- PE260 overlapping rows under U ----------------------------------------------------------


def test_overlap_is_found_with_a_witness(tmp_path: Path) -> None:
    found = _codes(_lint(tmp_path, _table_module("U", [
        {"id": "low", "when": ["< 500", "-"], "then": [1]},
        {"id": "mid", "when": ["[400..800)", "urban"], "then": [2]},
        {"id": "rest", "when": [">= 800", "-"], "then": [3]},
        {"id": "mid-rural", "when": ["[500..800)", "rural"], "then": [2]},
    ])), "PE260")
    assert found == [("PE260 rows `low` and `mid` of `band` (hit policy U) can both match, e.g. income = 400, "
                      "area = urban")]


@pytest.mark.parametrize("rows", [
    # exclusive intervals, closed/open endpoints meeting
    [{"id": "a", "when": ["< 700", "-"], "then": [1]}, {"id": "b", "when": [">= 700", "-"], "then": [2]}],
    # exclusive on the enum column only
    [{"id": "a", "when": ["-", "urban"], "then": [1]}, {"id": "b", "when": ["-", "rural"], "then": [2]}],
    # the same named endpoint on both sides: compared symbolically
    [{"id": "a", "when": ["< standard", "-"], "then": [1]}, {"id": "b", "when": [">= standard", "-"], "then": [2]}],
    # different named endpoints: cannot be decided, so not reported
    [{"id": "a", "when": ["< standard", "-"], "then": [1]},
     {"id": "b", "when": ["> 1.5 * standard", "-"], "then": [2]}],
    # not(): the complement within the column
    [{"id": "a", "when": ["-", "urban"], "then": [1]}, {"id": "b", "when": ["-", "not(urban)"], "then": [2]}],
])
def test_exclusive_or_undecidable_rows_are_not_overlaps(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    assert _codes(_lint(tmp_path, _table_module("U", rows, parameters=STANDARD)), "PE260") == []


def test_overlap_between_constant_and_named_endpoint_is_reported_when_one_cell_is_a_dash(tmp_path: Path) -> None:
    rows = [{"id": "a", "when": ["< standard", "urban"], "then": [1]}, {"id": "b", "when": ["-", "urban"], "then": [2]}]
    assert len(_codes(_lint(tmp_path, _table_module("U", rows, parameters=STANDARD)), "PE260")) == 1


def test_integer_columns_count_whole_numbers(tmp_path: Path) -> None:
    types = {"n": {"type": "integer", "label": {"zh": "人数", "en": "people"}}}
    rows = [{"id": "few", "when": ["<= 2"], "then": [1]}, {"id": "many", "when": [">= 3"], "then": [2]}]
    found = _lint(tmp_path, _table_module("U", rows, column_types=types))
    assert _codes(found, "PE260") == [] and _codes(found, "PE261") == []
    rows = [{"id": "few", "when": ["<= 2"], "then": [1]}, {"id": "many", "when": ["[2..5]"], "then": [2]}]
    assert "n = 2" in _codes(_lint(tmp_path, _table_module("U", rows, column_types=types)), "PE260")[0]


def test_overlap_is_not_reported_for_other_hit_policies_or_disjoint_windows(tmp_path: Path) -> None:
    rows = [{"id": "a", "when": ["< 700", "-"], "then": [1]}, {"id": "b", "when": ["< 900", "-"], "then": [1]}]
    assert _codes(_lint(tmp_path, _table_module("F", rows)), "PE260") == []
    windowed = [{**rows[0], "in_force": {"from": "2020-01-01", "to": "2021-12-31"}},
                {**rows[1], "in_force": {"from": "2022-01-01"}}]
    assert _codes(_lint(tmp_path, _table_module("U", windowed), as_of=None), "PE260") == []


# --- PE261 gaps ------------------------------------------------------------------------------


def test_gap_lists_the_uncovered_values(tmp_path: Path) -> None:
    rows = [{"id": "urban-low", "when": ["< 700", "urban"], "then": [1]},
            {"id": "urban-high", "when": [">= 700", "urban"], "then": [2]},
            {"id": "rural-low", "when": ["< 600", "rural"], "then": [1]},
            {"id": "rural-high", "when": ["> 600", "rural"], "then": [2]}]
    found = _codes(_lint(tmp_path, _table_module("F", rows)), "PE261")
    assert len(found) == 1 and "income = 600, area = rural" in found[0]


def test_missing_enum_value_is_a_gap(tmp_path: Path) -> None:
    rows = [{"id": "u", "when": ["-", "urban"], "then": [1]}]
    found = _codes(_lint(tmp_path, _table_module("U", rows)), "PE261")
    assert len(found) == 1 and "area = rural" in found[0]


@pytest.mark.parametrize("hit,rows,default", [
    ("U", [{"id": "u", "when": ["-", "urban"], "then": [1]}], 0),  # a default fills the gap
    ("F", [{"id": "u", "when": ["-", "urban"], "then": [1]}, {"id": "rest", "when": {}, "then": [0]}], None),
    ("U", [{"id": "a", "when": ["< standard", "-"], "then": [1]},
           {"id": "b", "when": [">= standard", "-"], "then": [2]}], None),
    ("C+", [{"id": "u", "when": ["-", "urban"], "then": [1]}], None),  # multiple hit: no-match is normal
    ("F", [{"id": "a", "when": ["< standard", "-"], "then": [1]},
           {"id": "b", "when": ["> 2 * standard", "-"], "then": [2]}], None),  # not analysable: silent
])
def test_no_gap(tmp_path: Path, hit: str, rows: list[dict[str, Any]], default: Any) -> None:
    assert _codes(_lint(tmp_path, _table_module(hit, rows, default=default, parameters=STANDARD)), "PE261") == []


def test_gap_depends_on_rows_in_force(tmp_path: Path) -> None:
    rows = [{"id": "old", "when": ["< 700", "-"], "then": [1], "in_force": {"from": "2020-01-01", "to": "2021-12-31"}},
            {"id": "new", "when": ["< 800", "-"], "then": [1], "in_force": {"from": "2022-01-01"}},
            {"id": "high", "when": [">= 800", "-"], "then": [2]}]
    assert _codes(_lint(tmp_path, _table_module("F", rows), as_of=dt.date(2023, 1, 1)), "PE261") == []
    found = _codes(_lint(tmp_path, _table_module("F", rows), as_of=dt.date(2021, 1, 1)), "PE261")
    assert len(found) == 1 and "income in (700..800)" in found[0] and "income = 700" in found[0]


# --- PE262 rows that never fire under F ------------------------------------------------------


def test_row_covered_by_one_earlier_row(tmp_path: Path) -> None:
    rows = [{"id": "poor", "when": ["< 700", "-"], "then": [1]},
            {"id": "very-poor-urban", "when": ["< 300", "urban"], "then": [2]},
            {"id": "rest", "when": {}, "then": [0]}]
    found = _codes(_lint(tmp_path, _table_module("F", rows)), "PE262")
    assert found == [("PE262 row `very-poor-urban` of `band` (hit policy F) can never fire: earlier row `poor` "
                      "matches everything it matches")]


def test_row_covered_by_earlier_rows_together(tmp_path: Path) -> None:
    rows = [{"id": "urban", "when": ["-", "urban"], "then": [1]},
            {"id": "rural", "when": ["-", "rural"], "then": [2]},
            {"id": "rest", "when": {}, "then": [0]}]
    found = _codes(_lint(tmp_path, _table_module("F", rows)), "PE262")
    assert len(found) == 1 and "`rest`" in found[0] and "`urban`, `rural`" in found[0]


@pytest.mark.parametrize("hit,rows", [
    ("F", [{"id": "poor", "when": ["< 700", "-"], "then": [1]}, {"id": "b", "when": ["< 900", "urban"], "then": [2]}]),
    ("F", [{"id": "a", "when": ["< standard", "-"], "then": [1]},
           {"id": "b", "when": ["< 1.5 * standard", "-"], "then": [2]}]),
    ("F", [{"id": "a", "when": ["< standard", "-"], "then": [1]}, {"id": "b", "when": ["< standard", "-"], "then": [2]},
           {"id": "c", "when": {}, "then": [2]}][1:]),
    ("U", [{"id": "a", "when": ["-", "-"], "then": [1]}, {"id": "b", "when": ["< 5", "-"], "then": [2]}]),
])
def test_row_that_can_fire_is_not_reported(tmp_path: Path, hit: str, rows: list[dict[str, Any]]) -> None:
    assert _codes(_lint(tmp_path, _table_module(hit, rows, parameters=STANDARD)), "PE262") == []


def test_identical_named_cell_is_covered(tmp_path: Path) -> None:
    rows = [{"id": "a", "when": ["< standard", "-"], "then": [1]}, {"id": "b", "when": ["< standard", "urban"], "then": [2]}]
    assert len(_codes(_lint(tmp_path, _table_module("F", rows, parameters=STANDARD)), "PE262")) == 1


# --- PE263 / PE264 unused names --------------------------------------------------------------


def test_unused_inputs_and_parameters(tmp_path: Path) -> None:
    module = {
        "inputs": {
            "income": {"type": "money", "label": {"zh": "收入", "en": "income"}},
            "area": {"type": "enum", "values": ["urban", "rural"], "label": {"zh": "城乡", "en": "area"}},
            "deposits": {"type": "money", "label": {"zh": "存款", "en": "deposits"}},
        },
        "parameters": {
            # `area` is read only as this parameter's dimension: that counts as a use
            "standard": {"type": "money", "by": ["area"], "values": {"2020-01-01": {"urban": 700, "rural": 600}},
                         "provenance": "sourced", "source": "测试", "cite": "s 一"},
            "asset_limit": {"type": "money", "values": {"2020-01-01": 5000}, "provenance": "sourced",
                            "source": "测试", "cite": "s 一"},
        },
        "decisions": {"dibao": {"label": {"zh": "低保", "en": "dibao"}, "cite": "s 一", "type": "boolean",
                                "value": "income < standard"}},
    }
    found = _lint(tmp_path, module)
    assert [line.split(" ")[1] for line in _codes(found, "PE263")] == ["input"]
    assert "`deposits`" in _codes(found, "PE263")[0]
    assert len(_codes(found, "PE264")) == 1 and "`asset_limit`" in _codes(found, "PE264")[0]


def test_names_used_only_in_table_cells_count(tmp_path: Path) -> None:
    rows = [{"id": "a", "when": ["< standard", "-"], "then": [1]}, {"id": "b", "when": {}, "then": [2]}]
    found = _lint(tmp_path, _table_module("F", rows, parameters=STANDARD))
    assert _codes(found, "PE263") == [] and _codes(found, "PE264") == []


# --- PE265 untested decisions ----------------------------------------------------------------


def test_untested_decisions_need_suites(tmp_path: Path) -> None:
    module = {"inputs": {"income": {"type": "money", "label": {"zh": "收入", "en": "income"}}},
              "decisions": {
                  "dibao": {"label": {"zh": "低保", "en": "dibao"}, "cite": "s 一", "type": "boolean",
                            "value": "income < 700"},
                  "marginal": {"label": {"zh": "边缘", "en": "marginal"}, "cite": "s 一", "type": "boolean",
                               "value": "income < 1050"},
                  "tekun": {"label": {"zh": "特困", "en": "tekun"}, "cite": "s 一", "type": "boolean",
                            "value": "income < 100"}}}
    folder = write_package(tmp_path / "pkg", module)
    (folder / "tests").mkdir()
    (folder / "tests" / "a_test.yaml").write_text(yaml.safe_dump([
        {"name": "one", "as_of": "2023-07-01", "facts": {"income": 500}, "expect": {"dibao": True}},
        {"name": "later", "as_of": "2023-07-01", "facts": {"income": 500}, "expect": {"tekun": False},
         "todo": "not yet"},
    ]), encoding="utf-8")
    # a sub-package's suite tests the sub-package, not this one
    sub = write_package(folder / "sub", module, {**yaml.safe_load((folder / "package.yaml").read_text()),
                                                 "id": "sub", "extends": ".."})
    (sub / "tests").mkdir()
    (sub / "tests" / "b_test.yaml").write_text(yaml.safe_dump([
        {"name": "sub", "as_of": "2023-07-01", "facts": {"income": 500}, "expect": {"marginal": True}}]),
        encoding="utf-8")
    assert [p.resolve() for p in suites_for(folder)] == [(folder / "tests" / "a_test.yaml").resolve()]
    policy, diagnostics = compile_package(folder)
    assert policy is not None
    found = [d for d in lint(policy, DAY, diagnostics, suites_for(folder)) if d.code == "PE265"]
    assert sorted(d.path for d in found) == ["decisions.marginal", "decisions.tekun"]
    assert all("1 suite of `t`" in d.message for d in found)
    assert [d for d in lint(policy, DAY, diagnostics) if d.code == "PE265"] == []  # no suites given: no check
    none = [d for d in lint(policy, DAY, diagnostics, []) if d.code == "PE265"]
    assert len(none) == 3 and "has no test suite" in none[0].message


# --- the shipped policies and the CLI ----------------------------------------------------------

PACKAGES = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "policies").rglob("package.yaml"))


def test_shipped_policies_lint_fast_with_known_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    started = time.perf_counter()
    gaps = set()
    for package in PACKAGES:
        policy, diagnostics = compile_package(package)
        assert policy is not None, package
        found = lint(policy, None, diagnostics, suites_for(package))
        assert not [d for d in found if d.severity == "error"], package
        gaps |= {d.path for d in found if d.code == "PE261"}
        # no overlaps and no dead rows in the shipped tables
        assert not [d.gnu() for d in found if d.code in ("PE260", "PE262")], package
    assert time.perf_counter() - started < 10
    # tekun_adl_failed counts 0-6 failed activities; the table leaves < 0 and > 6 without a row
    assert gaps <= {"derived.tekun_self_care_level"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LANG="C.UTF-8")
    return subprocess.run([sys.executable, "-m", "policy_engine", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def test_cli_lint_reads_the_suites_under_the_package() -> None:
    done = _cli("lint", "tests/fixtures/diagnostics/PE265", "--format", "gnu")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(" PE265 ") == 1 and "`marginal`" in done.stdout


def test_cli_lint_select_and_exit_codes() -> None:
    done = _cli("lint", "tests/fixtures/diagnostics/PE260", "--select", "PE260", "--format", "json")
    assert done.returncode == 0
    import json

    assert [d["code"] for d in json.loads(done.stdout)] == ["PE260"]
    assert _cli("lint", "tests/fixtures/diagnostics/PE220").returncode == 2
    assert _cli("lint", "no/such/folder").returncode == 3

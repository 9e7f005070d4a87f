"""`policy-engine diff`: structural and behavioural diffs, git revisions, exit codes, a text golden."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy_engine.diff import diff_policies, open_side, read_households, render_text, structure
from tests.helpers import MANIFEST, write_package

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "tests" / "goldens" / "cli"
HUAIYUAN = "policies/anhui/bengbu/huaiyuan"
HOUSEHOLDS = "tests/goldens/cli/diff_households.yaml"

MODULE: dict[str, Any] = {
    "inputs": {
        "income": {"type": "money", "label": {"zh": "人均收入", "en": "per-capita income"}},
        "size": {"type": "integer", "label": {"zh": "人数", "en": "household size"}},
    },
    "parameters": {
        "standard": {"type": "money", "label": {"zh": "低保标准", "en": "standard"},
                     "values": {"2022-01-01": 700}, "provenance": "sourced", "source": "测试", "cite": "s 一"},
    },
    "decisions": {
        "dibao": {
            "label": {"zh": "低保", "en": "dibao"}, "cite": "s 一",
            "outputs": {
                "eligible": {"type": "boolean", "label": {"zh": "符合", "en": "eligible"}},
                "amount": {"type": "money", "label": {"zh": "金额", "en": "amount"},
                           "expr": "(standard - income) * size if eligible else 0"},
            },
            "table": {"hit": "F", "inputs": ["income"], "outputs": ["eligible"], "rows": [
                {"id": "below", "when": ["< standard"], "then": [True], "cite": "s 一"},
                {"id": "otherwise", "when": {}, "then": [False], "cite": "s 一"},
            ]},
        },
    },
}

SUITE = [
    {"name": "poor pair", "as_of": "2023-07-01", "facts": {"income": 500, "size": 2},
     "expect": {"dibao": {"eligible": True, "amount": "400.00"}}},
    {"name": "better off", "as_of": "2023-07-01", "facts": {"income": 900, "size": 1},
     "expect": {"dibao": {"eligible": False}}},
]


def _package(folder: Path, module: dict[str, Any], suite: list[dict[str, Any]] | None = SUITE) -> Path:
    write_package(folder, module, MANIFEST)
    # keep the written order: `amount` names the earlier output `eligible`
    (folder / "module.yaml").write_text(yaml.safe_dump(module, allow_unicode=True, sort_keys=False), encoding="utf-8")
    if suite is not None:
        (folder / "tests").mkdir(exist_ok=True)
        (folder / "tests" / "dibao_test.yaml").write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return folder


def _raised(module: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(module)
    changed["parameters"]["standard"]["values"] = {"2022-01-01": 700, "2023-01-01": 760}
    rows = changed["decisions"]["dibao"]["table"]["rows"]
    rows[0]["cite"] = "s 二"
    rows.insert(1, {"id": "near", "when": ["< 1.1 * standard"], "then": [False], "cite": "s 二"})
    changed["inputs"]["deposits"] = {"type": "money", "label": {"zh": "存款", "en": "deposits"}}
    return changed


def _diff(a: str | Path, b: str | Path, as_of: dt.date | None = None, as_of_b: dt.date | None = None,
          households: str | None = None, use_suites: bool = True) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        side_a = open_side(str(a), as_of, stack)
        side_b = open_side(str(b), as_of_b or as_of, stack)
        return diff_policies(side_a, side_b, households, "en", use_suites)


def test_structure_lists_parameters_rows_and_inputs(tmp_path: Path) -> None:
    old = _package(tmp_path / "old", MODULE)
    new = _package(tmp_path / "new", _raised(MODULE))
    result = _diff(old, new)
    changes = {(c["section"], c["name"], c["change"]): c["details"] for c in result["structure"]}
    assert ("inputs", "deposits", "added") in changes
    assert changes[("parameters", "standard", "changed")] == ["+ value from 2023-01-01: 760.00 (sourced)"]
    rows = changes[("decisions", "dibao", "changed")]
    assert "+ row near: when < 1.1 * standard [测试文件 二]" in rows
    assert "~ row below: cite 测试文件 一 → 测试文件 二 [测试文件 二]" in rows
    # the same package against itself: nothing at all
    same = _diff(old, old)
    assert same["structure"] == [] and same["households"]["changed"] == [] and not same["changed"]


def test_structure_of_removed_items(tmp_path: Path) -> None:
    old = _package(tmp_path / "old", _raised(MODULE))
    new = _package(tmp_path / "new", MODULE)
    from policy_engine.compile import compile_package

    a, _ = compile_package(old)
    b, _ = compile_package(new)
    assert a is not None and b is not None
    changes = {(c["section"], c["name"], c["change"]): c["details"] for c in structure(a, b)}
    assert ("inputs", "deposits", "removed") in changes
    assert "- row near [测试文件 二]" in changes[("decisions", "dibao", "changed")]
    assert changes[("parameters", "standard", "changed")] == ["- value from 2023-01-01: 760.00 (sourced)"]


def test_behaviour_replays_suite_households_with_exact_money_deltas(tmp_path: Path) -> None:
    old = _package(tmp_path / "old", MODULE)
    new = _package(tmp_path / "new", _raised(MODULE), suite=SUITE[:1] + [
        {"name": "only in B", "as_of": "2023-07-01", "facts": {"income": 740, "size": 3},
         "expect": {"dibao": {"eligible": True}}}])
    result = _diff(old, new)
    assert result["households"]["replayed"] == 3  # the union by name
    changed = {h["name"]: h for h in result["households"]["changed"]}
    assert set(changed) == {"poor pair", "only in B"}  # 900 is above both standards
    poor = changed["poor pair"]["changes"]
    assert poor == [{"decision": "dibao", "field": "amount", "old": "400.00", "new": "520.00", "delta": "+120.00"}]
    only = changed["only in B"]["changes"]
    assert {"decision": "dibao", "field": "eligible", "old": False, "new": True} in only
    assert {"decision": "dibao", "field": "amount", "old": "0.00", "new": "60.00", "delta": "+60.00"} in only
    assert changed["poor pair"]["a"]["decisions"]["dibao"]["outputs"]["amount"] == "400.00"
    assert changed["poor pair"]["b"]["decisions"]["dibao"]["outputs"]["amount"] == "520.00"
    assert Decimal(poor[0]["new"]) - Decimal(poor[0]["old"]) == Decimal(poor[0]["delta"])


def test_same_package_at_two_dates_across_the_bengbu_2022_standard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = _diff(HUAIYUAN, HUAIYUAN, dt.date(2022, 6, 30), dt.date(2022, 7, 1), households=HOUSEHOLDS)
    assert result["structure"] == []
    in_force = {c["name"]: c for c in result["in_force"]}
    assert in_force["dibao_standard"]["old"] == {"urban": "690.00", "rural": "690.00"}
    assert in_force["dibao_standard"]["new"] == {"urban": "739.00", "rural": "722.00"}
    changed = {h["name"]: h for h in result["households"]["changed"]}
    rural = [c for c in changed["rural-two-people-income-600"]["changes"] if c["field"] == "amount"]
    assert rural == [{"decision": "dibao", "field": "amount", "old": "180.00", "new": "244.00", "delta": "+64.00"}]
    # the suite households that straddle the change are listed too
    assert any("22.00" in json.dumps(h["changes"]) for h in changed.values())
    assert result["households"]["replayed"] > 2


def test_households_file_forms(tmp_path: Path) -> None:
    mapping = tmp_path / "h.json"
    mapping.write_text(json.dumps({"x": {"income": 1}, "y": {"income": 2}}), encoding="utf-8")
    assert [h.name for h in read_households(str(mapping))] == ["x", "y"]
    listed = tmp_path / "h.yaml"
    listed.write_text("- {id: z, as_of: 2023-07-01, facts: {income: 3}}\n", encoding="utf-8")
    (h,) = read_households(str(listed))
    assert (h.name, h.as_of, h.facts) == ("z", dt.date(2023, 7, 1), {"income": 3})
    # one facts document, as in examples/
    (single,) = read_households(str(ROOT / "examples" / "anhui_household.yaml"))
    assert single.name == "HY-2023-0417" and single.facts["area_type"] == "rural"


def test_example_household_across_the_bengbu_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = _diff(HUAIYUAN, HUAIYUAN, dt.date(2022, 6, 30), dt.date(2022, 7, 1),
                   households="examples/anhui_household.yaml", use_suites=False)
    (household,) = result["households"]["changed"]
    amount = [c for c in household["changes"] if (c["decision"], c["field"]) == ("dibao", "amount")]
    # rural standard 690 -> 722, two covered members: +32 each
    assert amount == [{"decision": "dibao", "field": "amount", "old": "1300.00", "new": "1364.00", "delta": "+64.00"}]


def test_text_golden(tmp_path: Path, update_goldens: bool) -> None:
    # small packages built here (the shipped policies change too often to pin their explanations)
    _package(tmp_path / "old", MODULE)
    _package(tmp_path / "new", _raised(MODULE))
    (tmp_path / "extra.yaml").write_text("- {id: single-600, facts: {income: 600, size: 1}}\n", encoding="utf-8")
    done = _cli("diff", "old", "new", "--as-of", "2023-07-01", "--households", "extra.yaml", "--lang", "en",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = GOLDENS / "diff.raised-standard.en.txt"
    if update_goldens:
        path.write_text(done.stdout, encoding="utf-8")
    assert path.is_file(), f"missing {path}: run pytest --update-goldens"
    assert done.stdout == path.read_text(encoding="utf-8")
    assert "dibao.amount: 100.00 → 160.00 (+60.00)" in done.stdout


def test_huaiyuan_dates_text() -> None:
    done = _cli("diff", HUAIYUAN, HUAIYUAN, "--as-of", "2022-06-30", "--as-of-b", "2022-07-01",
                "--households", HOUSEHOLDS, "--no-suites", "--lang", "en")
    assert done.returncode == 0, done.stderr
    assert 'parameters dibao_standard: {"urban": "690.00", "rural": "690.00"} → {"urban": "739.00", "rural": "722.00"}' \
        in done.stdout
    assert "dibao.amount: 180.00 → 244.00 (+64.00)" in done.stdout
    assert "households: 2 replayed, 2 changed" in done.stdout


# --- the CLI: git revisions and exit codes -----------------------------------------------------


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LANG="C.UTF-8", PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "policy_engine", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false",
                    *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_against_the_working_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    base = _package(repo / "base", MODULE, suite=None)
    overlay = repo / "base" / "county"
    overlay.mkdir()
    (overlay / "package.yaml").write_text(yaml.safe_dump({**MANIFEST, "id": "county", "extends": ".."},
                                                         allow_unicode=True), encoding="utf-8")
    (overlay / "tests").mkdir()
    (overlay / "tests" / "dibao_test.yaml").write_text(yaml.safe_dump(SUITE, allow_unicode=True), encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    # change the base (outside the overlay folder): the revision side must carry its own base
    _package(base, _raised(MODULE), suite=None)
    unchanged = _cli("diff", "base/county@HEAD", "base/county@HEAD", "--fail-on-change", cwd=repo)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "households: 2 replayed, 0 changed" in unchanged.stdout
    done = _cli("diff", "base/county@HEAD", "base/county", "--fail-on-change", "--lang", "en", cwd=repo)
    assert done.returncode == 1, done.stderr
    assert "+ value from 2023-01-01" in done.stdout
    assert "dibao.amount: 400.00 → 520.00 (+120.00)" in done.stdout
    js = _cli("diff", "base/county@HEAD", "base/county", "--format", "json", cwd=repo)
    assert js.returncode == 0
    data = json.loads(js.stdout)
    assert data["changed"] is True and data["a"]["rev"] == "HEAD" and data["b"]["rev"] is None
    assert data["households"]["changed"][0]["b"]["decisions"]["dibao"]["outputs"]["amount"] == "520.00"
    bad = _cli("diff", "base/county@no-such-rev", "base/county", cwd=repo)
    assert bad.returncode == 3 and "no-such-rev" in bad.stderr


def test_exit_codes(tmp_path: Path) -> None:
    assert _cli("diff", "tests/fixtures/diagnostics/PE220", HUAIYUAN, "--no-suites").returncode == 2
    assert _cli("diff", "no/such/folder", HUAIYUAN).returncode == 3
    assert _cli("diff", HUAIYUAN, HUAIYUAN, "--as-of", "2022-13-01").returncode == 3
    assert _cli("diff", HUAIYUAN, HUAIYUAN, "--households", "no/such/file.yaml").returncode == 3
    undated = tmp_path / "undated.yaml"
    undated.write_text("x: {area_type: rural}\n", encoding="utf-8")
    assert _cli("diff", HUAIYUAN, HUAIYUAN, "--no-suites", "--households", str(undated)).returncode == 3
    same = _cli("diff", HUAIYUAN, HUAIYUAN, "--as-of", "2023-07-01", "--fail-on-change")
    assert same.returncode == 0 and "households: " in same.stdout and ", 0 changed" in same.stdout
    moved = _cli("diff", HUAIYUAN, HUAIYUAN, "--as-of", "2022-06-30", "--as-of-b", "2022-07-01", "--no-suites",
                 "--households", HOUSEHOLDS, "--fail-on-change")
    assert moved.returncode == 1


def test_render_text_marks_every_section(tmp_path: Path) -> None:
    old = _package(tmp_path / "old", MODULE)
    new = _package(tmp_path / "new", _raised(MODULE))
    text = render_text(_diff(old, new))
    assert "structure:\n" in text and "  + inputs deposits" in text and "  ~ parameters standard" in text
    assert "--- A ---" in text and "--- B ---" in text

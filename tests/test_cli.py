"""The CLI: documented exit codes (subprocess) and pinned output (goldens)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "tests" / "fixtures" / "cli"
SMALL = "tests/fixtures/policies/dibao_small"
GOLDENS = ROOT / "tests" / "goldens" / "cli"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LANG="C.UTF-8")
    return subprocess.run([sys.executable, "-m", "policy_engine", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def golden(name: str, text: str, update: bool) -> None:
    path = GOLDENS / name
    if update:
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing {path}: run pytest --update-goldens"
    assert text == path.read_text(encoding="utf-8")


def test_decide_explains_in_both_languages(update_goldens: bool) -> None:
    for lang in ("zh", "en"):
        done = run("decide", "tests/fixtures/cli/good_facts.yaml", "--policy", SMALL, "--as-of", "2023-07-01",
                   "--lang", lang, "--explain", "fails")
        assert done.returncode == 0, done.stderr
        golden(f"decide.{lang}.txt", done.stdout, update_goldens)


def test_decide_json_is_the_record() -> None:
    done = run("decide", "tests/fixtures/cli/good_facts.yaml", "--policy", SMALL, "--as-of", "2023-07-01",
               "--format", "json")
    assert done.returncode == 0
    record = json.loads(done.stdout)
    assert record["decisions"]["dibao"]["outputs"]["amount"] == "518.00"


def test_a_wrong_expectation_exits_1_and_shows_the_failing_condition(update_goldens: bool) -> None:
    done = run("test", "tests/fixtures/cli/wrong_suite")
    assert done.returncode == 1
    assert "dibao_test.yaml:7: FAIL wrong on purpose" in done.stdout
    assert "dibao.eligible: expected True, got False" in done.stdout
    assert "高于低保标准 739.00 元/月 61.00 元/月" in done.stdout
    golden("test_wrong_suite.txt", done.stdout, update_goldens)


def test_junit_output_is_xml() -> None:
    from xml.etree import ElementTree

    done = run("test", "tests/fixtures/cli/wrong_suite", "--format", "junit")
    assert done.returncode == 1
    suite = ElementTree.fromstring(done.stdout)
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"


@pytest.mark.parametrize(("folder", "code", "where"), [
    ("syntax_error", "PE101", "tests/fixtures/cli/syntax_error/dibao.yaml:3:"),
    ("unknown_name", "PE220", "tests/fixtures/cli/unknown_name/dibao.yaml:29:"),
])
def test_an_invalid_policy_exits_2_with_file_line_col(folder: str, code: str, where: str) -> None:
    done = run("decide", "tests/fixtures/cli/good_facts.yaml", "--policy", f"tests/fixtures/cli/{folder}",
               "--as-of", "2023-07-01")
    assert done.returncode == 2
    line = next(line for line in done.stderr.splitlines() if f" {code} " in line)
    assert line.startswith(where), line
    lint = run("lint", f"tests/fixtures/cli/{folder}", "--format", "gnu")
    assert lint.returncode == 2 and code in lint.stdout


def test_unknown_name_suggests_the_right_one() -> None:
    done = run("lint", "tests/fixtures/cli/unknown_name", "--format", "gnu")
    assert "unknown name `househld_size` (did you mean `household_size`?)" in done.stdout


def test_malformed_facts_exit_3_naming_the_field() -> None:
    done = run("decide", "tests/fixtures/cli/bad_facts.yaml", "--policy", SMALL, "--as-of", "2023-07-01")
    assert done.returncode == 3
    assert "PE401 members[1].income.wages: expected a number, not '12O0'" in done.stderr


@pytest.mark.parametrize("args", [
    ("decide", "no-such-file.yaml", "--policy", SMALL, "--as-of", "2023-07-01"),
    ("decide", "tests/fixtures/cli/good_facts.yaml", "--policy", SMALL, "--as-of", "someday"),
    ("decide", "tests/fixtures/cli/good_facts.yaml", "--policy", SMALL, "--as-of", "2023-07-01", "--entity", "famly"),
    ("no-such-command",),
    ("test", "does/not/exist"),
])
def test_usage_and_io_problems_exit_3(args: tuple[str, ...]) -> None:
    assert run(*args).returncode == 3


def test_catalogue_lists_provenance() -> None:
    done = run("catalogue", f"{SMALL}/county", "--as-of", "2023-07-01", "--lang", "en")
    assert done.returncode == 0
    assert "dibao_standard" in done.stdout and "illustrative" in done.stdout

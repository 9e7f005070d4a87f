"""Every code sample in README.md and docs/ runs: Python blocks, console commands, YAML samples."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import policy_engine as pe
from policy_engine.testing import run_suite

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[tuple[str, int, str]]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if match.group(1) == kind:
                line = text[: match.start()].count("\n") + 1
                out.append((f"{page.relative_to(ROOT)}:{line}", line, match.group(2)))
    return out


@pytest.mark.parametrize(("where", "line", "code"), blocks("python"), ids=lambda v: str(v)[:40])
def test_python_samples_run(where: str, line: int, code: str, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"__name__": "__doc_sample__"}
    exec(compile(code, where, "exec"), namespace)  # noqa: S102 - our own documentation, in tests


def _commands() -> list[tuple[str, str]]:
    out = []
    for where, _, code in blocks("console"):
        for command in code.splitlines():
            command = command.strip()
            if "&&" in command:
                command = command.split("&&", 1)[1].strip()
            if command.startswith("policy-engine "):
                out.append((where, command))
    return out


@pytest.mark.parametrize(("where", "command"), _commands(), ids=lambda v: str(v)[:60])
def test_console_samples_exit_zero(where: str, command: str) -> None:
    args = shlex.split(command)[1:]
    env = dict(os.environ, LANG="C.UTF-8")
    done = subprocess.run([sys.executable, "-m", "policy_engine", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, f"{where}: {command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert done.stdout.strip()


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = next(m.group(2) for m in BLOCK.finditer(section)).strip().splitlines()
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_yaml_samples_compile_or_pass(tmp_path: Path) -> None:
    """Policy snippets compile as an overlay of policies/anhui; test-suite snippets pass."""
    checked = 0
    for where, _, code in blocks("yaml"):
        data = yaml.safe_load(code)
        if isinstance(data, dict) and "decisions" in data and "id" not in data:
            package = tmp_path / f"overlay{checked}"
            package.mkdir()
            (package / "package.yaml").write_text(yaml.safe_dump({
                "id": "docs-sample", "title": {"zh": "示例", "en": "sample"},
                "jurisdiction": {"code": "340321", "zh": "怀远县", "en": "Huaiyuan"},
                "extends": str(ROOT / "policies" / "anhui"),
                "versions": [{"version": "1", "effective_from": "2022-06-01"}]}, allow_unicode=True), encoding="utf-8")
            (package / "sample.yaml").write_text(code, encoding="utf-8")
            try:
                pe.load(package)
            except pe.PolicyError as exc:
                pytest.fail(f"{where}: {exc}")
            checked += 1
        elif isinstance(data, list) and data and isinstance(data[0], dict) and "expect" in data[0]:
            suite = ROOT / "policies" / "anhui" / "tests" / f"zz_docs_sample_{checked}_test.yaml"
            suite.write_text(code, encoding="utf-8")
            try:
                results = run_suite(suite)
            finally:
                suite.unlink()
            assert [r.result for r in results] == ["PASS"] * len(results), f"{where}: {results}"
            checked += 1
    assert checked >= 2

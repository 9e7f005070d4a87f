"""One broken fixture per diagnostic code, with a golden of what the user sees.

Each folder tests/fixtures/diagnostics/<CODE>/ holds a policy package that triggers <CODE>,
optionally `testdata/case.yaml` ({facts, as_of, entity}) for codes raised while deciding, and
optionally `testdata/fixture.yaml` ({max_file_bytes: N} to lower the file-size limit,
{lint_as_of: date} to lint; add {lint_suites: true} to pass the package's test suites). Both live in `testdata/` because every `*.yaml` file directly in a
package folder is read as a module (docs/policy-format.md).
`expected.txt` is the golden: every diagnostic in GNU form. Update with --update-goldens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import policy_engine as pe
from policy_engine import load as load_module  # noqa: F401 - the public entry point
from policy_engine.compile import compile_package
from policy_engine.diagnostics import CODES, PolicyEngineError
from policy_engine.lint import lint

FIXTURES = Path(__file__).parent / "fixtures" / "diagnostics"
ROOT = Path(__file__).resolve().parent.parent


def _diagnostics(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for stray in ("case.yaml", "fixture.yaml"):
        assert not (folder / stray).exists(), f"move {stray} to testdata/: it would be read as a module"
    options = {}
    if (folder / "testdata" / "fixture.yaml").is_file():
        options = yaml.safe_load((folder / "testdata" / "fixture.yaml").read_text(encoding="utf-8")) or {}
    if "max_file_bytes" in options:
        import importlib

        # not `import policy_engine.load as loader`: that binds the attribute `policy_engine.load`,
        # which is the public load() function, not the module
        loader = importlib.import_module("policy_engine.load")

        monkeypatch.setattr(loader, "MAX_FILE_BYTES", int(options["max_file_bytes"]))
        monkeypatch.setattr(loader.load_file, "__defaults__", (None, int(options["max_file_bytes"])))
    monkeypatch.chdir(ROOT)
    policy, diagnostics = compile_package(folder.relative_to(ROOT))
    found = list(diagnostics)
    if policy is not None and "lint_as_of" in options:
        from policy_engine.lint import suites_for

        suites = suites_for(folder) if options.get("lint_suites") else None
        found = lint(policy, options["lint_as_of"], diagnostics, suites)
    case = folder / "testdata" / "case.yaml"
    if policy is not None and case.is_file():
        spec = yaml.safe_load(case.read_text(encoding="utf-8"))
        engine = pe.Engine(policy, diagnostics)
        try:
            engine.decide(spec.get("facts", {}), spec.get("as_of", "2023-07-01"), spec.get("entity", "household"))
        except PolicyEngineError as exc:
            found.extend(exc.diagnostics)
    return [d.gnu() for d in found]


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_has_a_fixture_and_a_docs_page(code: str) -> None:
    assert (FIXTURES / code).is_dir(), f"no broken fixture for {code} in {FIXTURES / code}"
    assert (ROOT / "docs" / "errors" / f"{code}.md").is_file(), f"no docs/errors/{code}.md"


@pytest.mark.parametrize("folder", sorted(p for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else [],
                         ids=lambda p: p.name)
def test_fixture_raises_its_code(folder: Path, monkeypatch: pytest.MonkeyPatch, update_goldens: bool) -> None:
    lines = _diagnostics(folder, monkeypatch)
    text = "\n".join(lines) + "\n"
    golden = folder / "expected.txt"
    if update_goldens:
        golden.write_text(text, encoding="utf-8")
    assert any(f" {folder.name} " in line for line in lines), f"{folder.name} not raised; got:\n{text}"
    assert golden.is_file(), f"missing golden {golden}; run pytest --update-goldens"
    assert text == golden.read_text(encoding="utf-8")

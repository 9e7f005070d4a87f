"""pytest plugin: ``pytest policies/`` collects every ``*_test.yaml`` suite, one test per case.

Registered through the ``pytest11`` entry point, so it is active wherever policy_engine is installed.
FAIL shows the difference and the ``fails`` explanation; ERROR shows the diagnostics; ``todo``
cases are skipped. Results are the same as ``policy-engine test``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith("_test.yaml"):
        return PolicySuite.from_parent(parent, path=file_path)
    return None


class PolicySuite(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from .testing import run_suite

        results = run_suite(self.path)
        for index, result in enumerate(results):
            yield PolicyCase.from_parent(self, name=f"{result.name} [{index}]", result=result)


class PolicyCase(pytest.Item):
    def __init__(self, *, result: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    def runtest(self) -> None:
        if self.result.result == "SKIP":
            pytest.skip(f"todo: {'; '.join(self.result.messages)}")
        if self.result.result != "PASS":
            raise PolicyCaseFailure(self.result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, PolicyCaseFailure):
            r = excinfo.value.result
            text = f"{r.location}: {r.result} {r.name}\n" + "\n".join(f"    {m}" for m in r.messages)
            if r.explanation:
                text += "\n    " + r.explanation.replace("\n", "\n    ")
            return text
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.result.line or 1) - 1, self.name


class PolicyCaseFailure(Exception):
    def __init__(self, result: Any) -> None:
        super().__init__(result.name)
        self.result = result

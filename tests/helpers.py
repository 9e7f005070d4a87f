"""Build small policy packages on the fly for semantic tests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

import policy_engine as pe

MANIFEST = {
    "id": "t",
    "title": {"zh": "测试", "en": "test"},
    "jurisdiction": {"code": "340000", "zh": "安徽省", "en": "Anhui"},
    "versions": [{"version": "1", "effective_from": "2020-01-01"}],
    "sources": {"s": {"number": "测试文件", "title": "测试"}},
}


def write_package(directory: Path, module: dict[str, Any], manifest: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "package.yaml").write_text(yaml.safe_dump(manifest or MANIFEST, allow_unicode=True), encoding="utf-8")
    (directory / "module.yaml").write_text(yaml.safe_dump(module, allow_unicode=True), encoding="utf-8")
    return directory


def engine_for(module: dict[str, Any], manifest: dict[str, Any] | None = None) -> pe.Engine:
    with tempfile.TemporaryDirectory() as tmp:
        return pe.load(write_package(Path(tmp), module, manifest))


def same_value(got: Any, want: Any) -> bool:
    """Whether a batch cell ``got`` is the scalar output ``want`` (an unknown is a null there,
    a tuple a list; booleans are not numbers)."""
    from policy_engine.evaluate import Unknown

    if isinstance(want, Unknown):
        want = None
    if isinstance(got, list):
        got = tuple(got)
    if isinstance(want, list):
        want = tuple(want)
    if want is None or got is None:
        return got is None and want is None
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    return bool(got == want)

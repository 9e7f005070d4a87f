"""Stage 1: untrusted YAML is parsed safely, with positions, within bounded size, depth and aliases."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from policy_engine.load import load_file, load_text


def codes(diagnostics: list) -> list[str]:
    return [d.code for d in diagnostics]


def test_floats_are_exact_decimals_and_positions_are_recorded() -> None:
    doc, problems = load_text("a:\n  rate: 0.1\n  list: [1, 2.50]\n", "x.yaml")
    assert problems == [] and doc is not None
    assert doc.data["a"]["rate"] == Decimal("0.1") and isinstance(doc.data["a"]["rate"], Decimal)
    assert doc.data["a"]["list"] == [1, Decimal("2.50")]
    assert doc.source_map.locate(("a", "rate")) == (2, 3)
    assert doc.source_map.locate(("a", "list", 1)) == (3, 13)
    assert doc.source_map.locate(("a", "missing", 4)) == (1, 1)  # the nearest ancestor


def test_syntax_error_has_line_and_column() -> None:
    doc, problems = load_text("a: [1, 2\nb: 3\n", "bad.yaml")
    assert doc is None and codes(problems) == ["PE101"]
    assert problems[0].file == "bad.yaml" and problems[0].line == 2


def test_alias_bomb_fails_fast_in_bounded_memory() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 10) + "]")
    started = time.perf_counter()
    doc, problems = load_text("\n".join(lines) + "\n", "bomb.yaml")
    assert doc is None and codes(problems) == ["PE104"]
    assert time.perf_counter() - started < 5


def test_large_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.write(b"a: " + b"x" * (50 * 1024 * 1024) + b"\n")
    started = time.perf_counter()
    doc, problems = load_file(big)
    assert doc is None and codes(problems) == ["PE102"]
    assert time.perf_counter() - started < 1


def test_deep_nesting_is_refused() -> None:
    text = "a: " + "[" * 200 + "]" * 200 + "\n"
    doc, problems = load_text(text, "deep.yaml")
    assert doc is None and codes(problems) == ["PE103"]


def test_python_tags_and_duplicate_keys_are_refused() -> None:
    _, problems = load_text("a: !!python/object/apply:os.system ['echo pwned']\nb: 1\nb: 2\n", "t.yaml")
    assert sorted(codes(problems)) == ["PE105", "PE106"]
    assert [p.line for p in sorted(problems, key=lambda d: d.line or 0)] == [1, 3]


def test_merge_keys_and_non_finite_numbers_are_refused() -> None:
    _, problems = load_text("base: &b {x: 1}\nc:\n  <<: *b\nd: .nan\n", "m.yaml")
    assert codes(problems) == ["PE106", "PE106"]

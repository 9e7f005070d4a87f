"""docs/policies/*.md are generated from policies/ and must not go stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_engine import load
from policy_engine.catalogue_docs import REGENERATE, WARN, package_dirs, page_names, render_all

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
DOCS = ROOT / "docs" / "policies"

PAGES = render_all(POLICIES)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_is_up_to_date(name: str) -> None:
    page = DOCS / name
    assert page.is_file(), f"docs/policies/{name} is missing: run `{REGENERATE}`"
    assert page.read_text(encoding="utf-8") == PAGES[name], (
        f"docs/policies/{name} is stale (the policy packages changed): run `{REGENERATE}`")


def test_no_orphan_pages() -> None:
    extra = sorted(p.name for p in DOCS.glob("*.md") if p.name not in PAGES)
    assert not extra, f"pages without a package: {extra}; run `{REGENERATE}`"


def test_rendering_is_deterministic() -> None:
    assert render_all(POLICIES) == PAGES


def test_every_package_has_a_page() -> None:
    covered = set()
    for name, folder in page_names(POLICIES).items():
        for d in package_dirs(folder):
            covered.add(d.resolve())
            assert f'<a id="package-{load(d).policy.id}"></a>' in PAGES[name]
    every = {p.parent.resolve() for p in POLICIES.rglob("package.yaml")
             if not ({"tests", "testdata"} & set(p.relative_to(POLICIES).parts[:-1]))}
    assert every == covered


def _sections(page: str) -> dict[str, str]:
    """package id -> its section of the page."""
    out: dict[str, str] = {}
    parts = page.split('<a id="package-')
    for part in parts[1:]:
        pid, _, body = part.partition('"></a>')
        out[pid] = body
    return out


@pytest.mark.parametrize("name", sorted(n for n in PAGES if n != "README.md"))
def test_illustrative_and_not_modelled_shown(name: str) -> None:
    sections = _sections(PAGES[name])
    for d in package_dirs(POLICIES / name.removesuffix(".md")):
        policy = load(d).policy
        section = sections[policy.id]
        for p in policy.parameters:
            if p.defined_in != policy.id:
                continue
            if p.provenance == "illustrative" or any(v.provenance == "illustrative" for v in p.values):
                assert f"#### {WARN} `{p.name}`" in section, f"{policy.id}: {p.name} not marked {WARN}"
                for v in p.values:
                    if v.provenance == "illustrative":
                        assert f"{WARN} illustrative" in section
            else:
                assert f"#### `{p.name}`" in section
        for n in policy.not_modelled:
            if n.package == policy.id:
                reason = " ".join(n.reason.split()).replace("|", "\\|")
                assert reason in section, f"{policy.id}: not_modelled reason missing: {n.reason[:60]}"

"""The bundled example households are valid facts and get decided by their province's policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import policy_engine as pe
from policy_engine.facts import Household

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {  # example -> (policy package, as_of: the date in the example's own header)
    "anhui_household.yaml": ("policies/anhui/bengbu/huaiyuan", "2023-07-01"),
    "hebei_household.yaml": ("policies/hebei/chengde/gaoxin", "2023-09-01"),
    "hunan_household.yaml": ("policies/hunan/yueyang/yunxi", "2023-08-01"),
    "shaanxi_household.yaml": ("policies/shaanxi/hanzhong/lueyang", "2023-07-01"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_is_valid_and_decided(name: str) -> None:
    text = (ROOT / "examples" / name).read_text(encoding="utf-8")
    package, as_of = EXAMPLES[name]
    assert f"--policy {package} --as-of {as_of}" in text  # the command in the header works
    facts = yaml.safe_load(text)
    model = Household.model_validate(facts)
    engine = pe.load(ROOT / package)
    decision = engine.decide(model, as_of=as_of)
    assert decision["dibao"].status == "decided", decision["dibao"].missing
    from_dict = engine.decide(facts, as_of=as_of)
    assert decision.to_dict()["decisions"] == from_dict.to_dict()["decisions"]


def test_every_example_is_listed() -> None:
    households = {p.name for p in (ROOT / "examples").glob("*_household.yaml")}
    assert households == set(EXAMPLES)

"""Published JSON Schemas, generated from the models; ``python -m policy_engine.schemas`` rewrites them.

- ``package.schema.json``: a package manifest (``package.yaml``)
- ``module.schema.json``: a policy module (any other ``*.yaml`` in a package)
- ``test-suite.schema.json``: a test suite (``*_test.yaml``)
- ``decision.schema.json``: the record ``Decision.to_dict()`` returns
- ``facts.<entity>.schema.json``: the facts of each entity (see ``policy_engine.facts``)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def generated() -> dict[str, dict[str, Any]]:
    from ..document import Manifest, Module
    from ..record import DecisionRecord
    from ..testing import TestSuite

    return {
        "package.schema.json": Manifest.model_json_schema(by_alias=True),
        "module.schema.json": Module.model_json_schema(by_alias=True),
        "test-suite.schema.json": TestSuite.model_json_schema(by_alias=True),
        "decision.schema.json": DecisionRecord.model_json_schema(by_alias=True),
    }


def text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write(directory: Path = HERE) -> list[Path]:
    out = []
    for name, schema in generated().items():
        path = directory / name
        path.write_text(text(schema), encoding="utf-8")
        out.append(path)
    return out



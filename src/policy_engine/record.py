"""The decision record (``Decision.to_dict()``) as a pydantic model: its published schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyRef(_Record):
    id: str
    chain: list[str] = Field(description="package ids, base first (national -> province -> county)")
    jurisdiction_code: str
    version: str | None = Field(description="the package version in force on as_of")
    effective_from: str | None
    effective_to: str | None
    content_hash: str = Field(description="sha256 of the compiled policy: the exact rules applied")


class OutcomeRecord(_Record):
    status: Literal["decided", "needs_information", "not_in_force"]
    outputs: dict[str, Any] = Field(description="money as exact decimal strings, dates ISO")
    missing: list[str] = Field(description="facts needed and not given")
    reason: str | None
    fired_rows: list[str]
    cites: list[str]


class DecisionRecord(_Record):
    schema_: Literal["policy_engine/decision/v1"] = Field(alias="schema")
    engine_version: str
    as_of: str
    entity: str
    status: Literal["decided", "needs_information"]
    policy: PolicyRef
    decisions: dict[str, OutcomeRecord]
    events: list[dict[str, Any]] = Field(description="the trace: input_read, parameter_read, value_derived, "
                                         "row_tested, row_fired, no_row_matched, output_produced, decision_status")

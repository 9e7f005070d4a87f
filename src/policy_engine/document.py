"""Stage 2, validate: the structure of policy files, as pydantic models.

These models are the policy format. ``schemas/package.schema.json`` and
``schemas/module.schema.json`` are generated from them (``python -m policy_engine.schemas``) and a
test fails when the checked-in files are stale. Validation errors become ``Diagnostic``s with
the file:line:column that the loader recorded.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from .diagnostics import Diagnostic, did_you_mean
from .load import LoadedDocument, Path

NAME = r"^[a-z][a-z0-9_]*$"
ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

TypeName = Literal["money", "decimal", "integer", "boolean", "date", "text", "enum", "list"]
Entity = Literal["household", "member", "village", "township", "county", "institution", "month"]
Provenance = Literal["sourced", "derived", "illustrative"]
HitPolicy = Literal["U", "A", "P", "F", "R", "O", "C", "C+", "C<", "C>", "C#"]
RoundingMode = Literal["half_up", "half_even", "down", "up", "floor", "ceiling"]

#: unit -> (zh, en) display forms.
UNITS: dict[str, tuple[str, str]] = {
    "yuan": ("元", "yuan"),
    "yuan_per_month": ("元/月", "yuan per month"),
    "yuan_per_year": ("元/年", "yuan per year"),
    "person": ("人", "people"),
    "household": ("户", "households"),
    "case": ("件", "cases"),
    "village": ("个", "villages"),
    "month": ("个月", "months"),
    "day": ("日", "days"),
    "year": ("年", "years"),
    "times": ("倍", "times"),
    "occasion": ("次", "times"),
    "ratio": ("", ""),
    "count": ("", ""),
    "activity": ("项", "activities"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Label(_Strict):
    zh: str
    en: str


class CiteRef(_Strict):
    source: str = Field(description="a source id declared in a package manifest")
    clause: str = Field(description="the clause, e.g. §十一 or 第九条")
    text: str | None = Field(default=None, description="the clause text, quoted")


Cite = str | CiteRef | list[str | CiteRef]


class Window(_Strict):
    from_: dt.date = Field(alias="from")
    to: dt.date | None = None


class Version(_Strict):
    version: str
    effective_from: dt.date
    effective_to: dt.date | None = None
    note: str | None = None


class Source(_Strict):
    number: str = Field(description="document number, e.g. 皖民社救字〔2022〕46号")
    title: str
    issuer: str | None = None
    date: dt.date | None = None
    in_force: Window | None = None
    url: str | None = None
    note: str | None = None


class Rounding(_Strict):
    # an explicit schema: pydantic versions differ in how they publish Decimal
    unit: Annotated[Decimal, WithJsonSchema({"type": ["number", "string"], "examples": ["0.01", "1"]})] = \
        Decimal("0.01")
    mode: RoundingMode = "half_up"

    @field_validator("unit")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("the rounding unit must be positive, e.g. 0.01")
        return value


class Jurisdiction(_Strict):
    code: str = Field(pattern=r"^\d{6}$", description="GB/T 2260 administrative division code")
    zh: str
    en: str


class NotModelled(_Strict):
    cite: Cite
    reason: str


class Manifest(_Strict):
    """``package.yaml``."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$")
    title: Label
    jurisdiction: Jurisdiction
    extends: str | None = Field(default=None, description="path of the base package, relative")
    versions: list[Version] = Field(min_length=1)
    sources: dict[str, Source] = Field(default_factory=dict)
    rounding: Rounding | None = None
    not_modelled: list[NotModelled] = Field(default_factory=list)
    description: str | None = None


class _Typed(_Strict):
    type: TypeName
    unit: str | None = None
    values: list[str] | dict[str, Label] | None = Field(
        default=None, description="the allowed values of an enum: a list, or a mapping value -> {zh, en} label")
    label: Label | None = None
    description: str | None = None

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str | None) -> str | None:
        if value is not None and value not in UNITS:
            hint = did_you_mean(value, UNITS) or f"one of {', '.join(UNITS)}"
            raise ValueError(f"unknown unit `{value}`; {hint}")
        return value


class Input(_Typed):
    entity: Entity = "household"
    path: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class ParameterValue(_Strict):
    from_: dt.date = Field(alias="from")
    to: dt.date | None = None
    value: Any
    provenance: Provenance | None = None
    source: str | None = None
    formula: str | None = None
    note: str | Label | None = Field(default=None, description="why the figure is a placeholder; text or {zh, en}")
    cite: Cite | None = None


class Parameter(_Typed):
    by: list[str] = Field(default_factory=list)
    values: Any = None  # dated values; see ParameterValue
    enum_values: list[str] | None = Field(default=None, description="allowed values of an enum parameter")
    provenance: Provenance
    source: str | None = None
    formula: str | None = None
    note: str | Label | None = Field(default=None, description="why the figure is a placeholder; text or {zh, en}")
    cite: Cite | None = None


class Column(_Strict):
    name: str = Field(pattern=NAME)
    expr: str
    label: Label | None = None


class Row(_Strict):
    id: str = Field(pattern=ID)
    when: list[Any] | dict[str, Any] = Field(default_factory=dict)
    then: Any = None
    cite: Cite | None = None
    note: str | None = None
    in_force: Window | None = None


class Table(_Strict):
    hit: HitPolicy = "U"
    inputs: list[str | Column] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    rows: list[Row] = Field(min_length=1)
    default: Any = None
    cite: Cite | None = None


class Derived(_Typed):
    entity: Entity = "household"
    expr: str | None = None
    table: Table | None = None
    cite: Cite | None = None


class Output(_Typed):
    expr: Any = None
    cite: Cite | None = None


class Decision(_Strict):
    entity: Entity = "household"
    label: Label
    cite: Cite | None = None
    description: str | None = None
    in_force: Window | None = None
    outputs: dict[str, Output] | None = None
    table: Table | None = None
    value: Any = None
    type: TypeName | None = None
    unit: str | None = None
    values: list[str] | dict[str, Label] | None = None


class Module(_Strict):
    """Any policy file other than ``package.yaml`` and ``*_test.yaml``."""

    inputs: dict[str, Input] = Field(default_factory=dict)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    derived: dict[str, Derived] = Field(default_factory=dict)
    decisions: dict[str, Decision] = Field(default_factory=dict)
    description: str | None = None


_NAME_RE = re.compile(NAME)


def validate(document: LoadedDocument, model: type[BaseModel]) -> tuple[BaseModel | None, list[Diagnostic]]:
    """Validate loaded data against a model; every error becomes a located diagnostic."""
    data = document.data if document.data is not None else {}
    diagnostics: list[Diagnostic] = []
    if isinstance(data, dict):
        diagnostics.extend(_check_names(data, document))
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            diagnostics.append(_to_diagnostic(error, document, model))
        return None, diagnostics
    return (parsed if not diagnostics else None), diagnostics


def _check_names(data: dict[str, Any], document: LoadedDocument) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for section in ("inputs", "parameters", "derived", "decisions"):
        items = data.get(section)
        if isinstance(items, dict):
            for name in items:
                if not _NAME_RE.match(name):
                    out.append(
                        document.source_map.diagnostic(
                            "PE203",
                            f"`{name}` is not a valid name",
                            (section, name),
                            hint="names are snake_case: lower-case letters, digits and _",
                        )
                    )
    return out


def _to_diagnostic(error: Any, document: LoadedDocument, model: type[BaseModel]) -> Diagnostic:
    loc: Path = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    loc = tuple(_strip_union_tags(loc))
    kind = error["type"]
    where = ".".join(str(p) for p in loc) or "document"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        allowed = _allowed_fields(model, loc[:-1])
        return document.source_map.diagnostic(
            "PE201",
            f"unknown field `{name}`",
            loc,
            hint=did_you_mean(name, allowed) or (f"allowed: {', '.join(sorted(allowed))}" if allowed else None),
        )
    if kind == "missing":
        return document.source_map.diagnostic("PE202", f"`{where}` is required", loc)
    return document.source_map.diagnostic("PE203", f"`{where}`: {error['msg']}", loc)


def _strip_union_tags(loc: Path) -> list[str | int]:
    # pydantic adds the union member's name to the location (e.g. "str", "CiteRef",
    # "list[...]", "function-after[...]"); they are not part of the document's path.
    tags = {"str", "CiteRef", "Column", "int", "date", "dict", "list"}
    return [p for p in loc if not (isinstance(p, str) and (p in tags or p.startswith(("list[", "function-"))))]


def _allowed_fields(model: type[BaseModel], loc: Path) -> set[str]:
    """The field names allowed at ``loc``, for "did you mean" hints."""
    from typing import get_args, get_origin

    current: Any = model
    skip_key = False
    for part in loc:
        if isinstance(part, int):
            continue
        if skip_key:  # the key of a dict[str, Model]: a user-chosen name
            skip_key = False
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return set()
        annotation = fields[part].annotation
        skip_key = get_origin(annotation) is dict or any(
            get_origin(a) is dict for a in get_args(annotation)
        )
        current = _model_of(annotation)
        if current is None:
            return set()
    fields = getattr(current, "model_fields", None)
    if fields is None:
        return set()
    return {f.alias or n for n, f in fields.items()}


def _model_of(annotation: Any) -> Any:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None

"""Stage 1, load: untrusted YAML to plain data plus a source map.

Only the safe YAML schema is used, through ``yaml.compose`` (which never constructs objects),
and this module builds the plain data itself so that it can (a) remember the line and column
of every key and value, keyed by logical path, (b) refuse duplicate keys, unknown tags and merge
keys, (c) bound file size, nesting depth and alias expansion, and (d) read YAML floats as exact
``Decimal``s from their text.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from .diagnostics import Diagnostic, make

try:  # the C composer is several times faster; both give the same marks
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 500_000  # values visited, counting every alias expansion

Path = tuple[str | int, ...]

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


def path_text(path: Path) -> str:
    """``("decisions", "dibao", "rows", 2)`` -> ``decisions.dibao.rows[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass
class SourceMap:
    """file:line:column of every key and value of one document, by logical path."""

    file: str
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path) -> tuple[int | None, int | None]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while True:
            pos = self.positions.get(p)
            if pos is not None:
                return pos
            if not p:
                return (None, None)
            p = p[:-1]

    def diagnostic(self, code: str, message: str, path: Path, **kwargs: Any) -> Diagnostic:
        line, column = self.locate(path)
        return make(
            code, message, file=self.file, line=line, column=column, path=path_text(path), **kwargs
        )


@dataclass
class LoadedDocument:
    file: str
    data: Any
    source_map: SourceMap


class _Limits(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


class _Builder:
    def __init__(self, file: str, source_map: SourceMap) -> None:
        self.file = file
        self.source_map = source_map
        self.nodes = 0
        self.errors: list[Diagnostic] = []
        self._scalars = yaml.SafeLoader("")  # used only for its scalar constructors

    def _diag(self, code: str, message: str, node: yaml.Node, path: Path, **kw: Any) -> Diagnostic:
        return make(
            code,
            message,
            file=self.file,
            line=node.start_mark.line + 1,
            column=node.start_mark.column + 1,
            path=path_text(path),
            **kw,
        )

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Limits(
                self._diag(
                    "PE104",
                    f"the document expands to more than {MAX_NODES} values (alias bomb?)",
                    node,
                    path,
                    hint="remove the anchors and aliases (&name / *name) that multiply values",
                )
            )
        if depth > MAX_DEPTH:
            raise _Limits(
                self._diag(
                    "PE103",
                    f"values are nested more than {MAX_DEPTH} levels deep",
                    node,
                    path,
                )
            )
        self.source_map.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self.errors.append(self._diag("PE106", f"unsupported tag {node.tag}", node, path))
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MAP:
                    self.errors.append(self._diag("PE106", "keys must be plain scalars", key_node, path))
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(
                        self._diag(
                            "PE106",
                            "merge keys (<<) are not supported",
                            key_node,
                            path,
                            hint="write the keys out; policies are read by people",
                        )
                    )
                    continue
                key = self.scalar(key_node, path)
                if isinstance(key, dt.date):
                    key = key.isoformat()
                elif isinstance(key, (int, Decimal)) and not isinstance(key, bool):
                    key = str(key)
                elif not isinstance(key, str):
                    key = str(key).lower() if isinstance(key, bool) else str(key)
                child = path + (key,)
                if key in result:
                    self.errors.append(
                        self._diag("PE105", f"duplicate key `{key}`", key_node, child,
                                   hint="the later value would silently replace the earlier one")
                    )
                    continue
                self.source_map.positions[child] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                result[key] = self.build(value_node, child, depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.errors.append(self._diag("PE106", f"unsupported tag {node.tag}", node, path))
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: Any, path: Path) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return self._scalars.construct_yaml_bool(node)
        if tag == _INT:
            return self._scalars.construct_yaml_int(node)
        if tag == _FLOAT:
            text = str(node.value).replace("_", "")
            try:
                value = Decimal(text)
            except InvalidOperation:
                value = None
            if value is None or not value.is_finite():
                self.errors.append(
                    self._diag("PE106", f"`{node.value}` is not a finite number", node, path)
                )
                return None
            return value
        if tag == _TIMESTAMP:
            stamp = self._scalars.construct_yaml_timestamp(node)
            return stamp
        self.errors.append(
            self._diag(
                "PE106",
                f"unsupported tag {tag}",
                node,
                path,
                hint="policies use plain YAML: strings, numbers, booleans, dates, lists and maps",
            )
        )
        return None


def load_text(text: str, file: str) -> tuple[LoadedDocument | None, list[Diagnostic]]:
    """Parse YAML text; returns the document (None when unusable) and all diagnostics."""
    source_map = SourceMap(file)
    try:
        # Depth first, with the event parser: composing a deeply nested document recurses in C
        # and can crash the interpreter before any Python-level limit is reached.
        depth = 0
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    start: Any = event.start_mark
                    return None, [make("PE103", f"values are nested more than {MAX_DEPTH} levels deep",
                                       file=file, line=start.line + 1, column=start.column + 1)]
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark: Any = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        if exc.context_mark is not None and exc.problem_mark is not None and \
                exc.context_mark.line != exc.problem_mark.line:
            message += f" (the construct started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        return None, [
            make(
                "PE101",
                message,
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        ]
    except yaml.YAMLError as exc:
        return None, [make("PE101", str(exc).splitlines()[0], file=file)]
    except RecursionError:
        return None, [make("PE103", "values are nested too deeply to parse", file=file)]
    if node is None:
        return LoadedDocument(file, None, source_map), []
    builder = _Builder(file, source_map)
    try:
        data = builder.build(node, (), 0)
    except _Limits as limit:
        return None, [limit.diagnostic]
    return LoadedDocument(file, data, source_map), builder.errors


def load_file(path: str | os.PathLike[str], display: str | None = None,
              max_bytes: int = MAX_FILE_BYTES) -> tuple[LoadedDocument | None, list[Diagnostic]]:
    """Read and parse one YAML file, refusing oversized files before reading them."""
    name = display or os.fspath(path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return None, [make("PE100", f"cannot read file: {exc.strerror}", file=name)]
    if size > max_bytes:
        return None, [
            make(
                "PE102",
                f"file is {size} bytes; the limit is {max_bytes}",
                file=name,
                hint="split the policy into modules, or raise the limit for trusted files",
            )
        ]
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
        text = raw.decode("utf-8")
    except OSError as exc:
        return None, [make("PE100", f"cannot read file: {exc.strerror}", file=name)]
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, [make("PE100", f"file is not UTF-8 ({exc.reason})", file=name, line=line, column=column,
                           hint="save the file as UTF-8 (files saved as GBK or GB18030 fail here)")]
    return load_text(text, name)

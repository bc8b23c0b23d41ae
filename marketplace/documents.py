"""Read listing and inventory files (YAML, TOML or JSON: one schema) into validated models.

Every problem in a file is reported at once, each naming the file, the path inside it
(``skus[2].accelerators[0].memory``), the line when the format gives one, the value, and what is
accepted. Nothing here touches the store: an invalid file raises before anything is written.
Other packages (billing's price books) load their files through :func:`load_model` too.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from marketplace.catalog import PATTERN_HELP, Listing
from marketplace.errors import _MISSING, InvalidInput, Problem
from marketplace.inventory import Inventory

M = TypeVar("M", bound=BaseModel)

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}
MAX_FILE_BYTES = 512 * 2**20


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads only true/false as booleans.

    YAML 1.1 turns ``no``/``on``/``yes`` into booleans, and ``NO`` is Norway's country code.
    """


_StrictYamlLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_StrictYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_lines(
    node: yaml.Node | None, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Map each path inside a YAML document to its 1-based line."""
    if node is None:
        return
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _yaml_lines(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _yaml_lines(item, (*path, i))


def read_document(path: str | Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse a YAML, TOML or JSON file; return its data and a path -> line map (YAML only)."""
    p = Path(path)
    source = str(path)
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise InvalidInput(
            f"unknown file type {p.suffix!r}; accepted: .yaml, .yml, .toml, .json", source=source
        )
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"file larger than {MAX_FILE_BYTES // 2**20} MiB", source=source)
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput("no such file", source=source) from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=source
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror}", source=source) from None
    return parse_document(text, kind, source)


def parse_document(
    text: str, kind: str, source: str = "<text>"
) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML, TOML or JSON ``text``; return its data and a path -> line map (YAML only).

    Syntax errors raise :class:`InvalidInput` naming ``source`` and the line.
    """
    lines: dict[tuple[Any, ...], int] = {}
    try:
        if kind == "yaml":
            node = yaml.compose(text, Loader=_StrictYamlLoader)
            lines = dict(_yaml_lines(node))
            data = yaml.load(text, Loader=_StrictYamlLoader)
        elif kind == "toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"YAML syntax error: {exc.problem or exc}"
        raise InvalidInput([Problem("", message, _MISSING, source, line)], source) from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"YAML syntax error: {exc}", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        raise InvalidInput(
            [Problem("", f"TOML syntax error: {exc}", _MISSING, source, line)], source
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            [
                Problem(
                    "",
                    f"JSON syntax error: {exc.msg} (column {exc.colno})",
                    _MISSING,
                    source,
                    exc.lineno,
                )
            ],
            source,
        ) from None
    return data, lines


def format_path(loc: tuple[Any, ...]) -> str:
    """``('skus', 2, 'accelerators', 0, 'memory')`` -> ``'skus[2].accelerators[0].memory'``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TYPE_TAG = re.compile(
    r"[\[\](]|^(int|str|float|bool|none|decimal|list|dict|literal|function-\w+)$"
)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Unions and wrapped validators add their own names to the location; they are not keys.
    return tuple(p for p in loc if isinstance(p, int) or not _TYPE_TAG.search(str(p)))


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the field at ``loc`` (to list its accepted keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def problems_from(
    exc: ValidationError,
    model: type[BaseModel],
    source: str | None,
    lines: dict[tuple[Any, ...], int],
) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` values a person can act on."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input", _MISSING)
        if err["type"] == "extra_forbidden":
            holder = _model_at(model, loc[:-1])
            accepted = ", ".join(holder.model_fields) if holder else "see `hwmarket schema`"
            message = f"unknown key {loc[-1]!r}; accepted keys: {accepted}"
        elif err["type"] == "string_pattern_mismatch":
            pattern = str((err.get("ctx") or {}).get("pattern", ""))
            message = PATTERN_HELP.get(pattern, message)
        elif err["type"] == "missing":
            message = "required key is missing"
            value = _MISSING
        if _may_hold_secret(loc):
            value = _mask(value)
        problems.append(Problem(format_path(loc), message, value, source, _line_of(loc, lines)))
    return problems


#: Keys of a BMC entry whose values are not secret; anything else under ``bmc`` may be a
#: password, misspelt keys included (``pasword: hunter2``), so its value is never echoed.
_BMC_PUBLIC_KEYS = {"protocol", "address", "port", "username", "method", "verify_tls"}


def _may_hold_secret(loc: tuple[Any, ...]) -> bool:
    if "bmc" not in loc:
        return False
    after = loc[loc.index("bmc") + 1 :]
    return not after or str(after[0]) not in _BMC_PUBLIC_KEYS


def _mask(value: Any) -> Any:
    if value is _MISSING:
        return value
    if isinstance(value, dict):
        return {k: (v if k in _BMC_PUBLIC_KEYS else "**********") for k, v in value.items()}
    return "**********"


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def validate_data(
    model: type[M],
    data: Any,
    source: str | None = None,
    lines: dict[tuple[Any, ...], int] | None = None,
) -> M:
    """Validate ``data`` as ``model``; raise :class:`InvalidInput` listing every problem."""
    lines = lines or {}
    cross: list[tuple[str, str, object]] = []
    if not isinstance(data, dict):
        raise InvalidInput(
            [
                Problem(
                    "", "expected a mapping at the top of the document", type(data).__name__, source
                )
            ],
            source,
        )
    try:
        result = model.model_validate(data, context={"problems": cross})
    except ValidationError as exc:
        raise InvalidInput(problems_from(exc, model, source, lines), source) from None
    if cross:
        raise InvalidInput(
            [
                Problem(path, message, value, source, _line_of(_parse_path(path), lines))
                for path, message, value in cross
            ],
            source,
        )
    return result


def _parse_path(path: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return tuple(parts)


def load_model(model: type[M], path: str | Path) -> M:
    """Read ``path`` (YAML/TOML/JSON) and validate it as ``model``."""
    data, lines = read_document(path)
    return validate_data(model, data, str(path), lines)


def load_listing(path: str | Path) -> Listing:
    """Read a vendor listing file; raise :class:`InvalidInput` naming every problem."""
    return load_model(Listing, path)


def load_inventory(path: str | Path) -> Inventory:
    """Read an operator inventory file (regions, hosts, or both)."""
    return load_model(Inventory, path)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a ``listing`` or ``inventory`` file, for editors to validate against."""
    models: dict[str, type[BaseModel]] = {"listing": Listing, "inventory": Inventory}
    if kind not in models:
        raise InvalidInput(f"unknown schema {kind!r}; accepted: listing, inventory")
    schema = models[kind].model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"hwmarket {kind} file"
    return schema


__all__ = [
    "format_path",
    "json_schema",
    "load_inventory",
    "load_listing",
    "load_model",
    "parse_document",
    "read_document",
    "validate_data",
]

"""The one base of every pydantic configuration model in pandalab.

`StrictModel` forbids unknown keys, freezes the instance and refuses non-finite numbers (NaN,
+inf, -inf) anywhere in the input, also inside free-form ``dict[str, Any]`` fields such as
backend options, and strings such as ``"nan"`` that pydantic would otherwise read into a float
field (``allow_inf_nan=False``): one mechanism for every config, so a NaN table height or an
infinite workspace corner can never reach the filter.  The error names the field by its dotted
path (``safety.table_height``).

It lives in safety/ because safety/ is the leaf every other package imports (DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

MAX_CONFIG_NODES = 100_000
"""Most values (mappings, lists, numbers, strings) one config may hold; a larger one (e.g. a YAML
alias bomb) is refused before it is walked or validated."""


class ConfigTooLarge(ValueError):
    """A configuration with more than `MAX_CONFIG_NODES` values."""


def non_finite_paths(value: Any, path: str = "") -> list[str]:
    """Dotted paths (``a.b[2]``) of every non-finite number inside ``value`` (mappings, lists,
    tuples, floats, numpy scalars and arrays), each with its value.  Raises `ConfigTooLarge` past
    `MAX_CONFIG_NODES` values."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    visited = 0
    while stack:
        where, item = stack.pop()
        visited += 1
        if visited > MAX_CONFIG_NODES:
            raise ConfigTooLarge(f"more than {MAX_CONFIG_NODES} values; a configuration is never that large")
        if isinstance(item, bool | int | str | bytes | BaseModel) or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                found.append(f"{where or '(value)'} = {item}")
            continue
        if isinstance(item, Mapping):
            stack.extend((f"{where}.{key}" if where else str(key), sub) for key, sub in reversed(list(item.items())))
            continue
        if isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
            continue
        tolist = getattr(item, "tolist", None)  # numpy scalars and arrays, without importing numpy
        if callable(tolist):
            stack.append((where, tolist()))
    return found


class StrictModel(BaseModel):
    """Unknown keys refused, frozen, every number finite (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers_only(cls, data: Any) -> Any:
        bad = non_finite_paths(data)
        if bad:
            raise ValueError("numbers must be finite; refused " + ", ".join(bad[:8]))
        return data


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One ``field: what is wrong`` line per problem of a pydantic error (no pydantic boilerplate);
    a model-level check names its field itself."""
    lines = []
    for item in error.errors():
        location = (prefix + ".".join(str(part) for part in item["loc"])).rstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return lines

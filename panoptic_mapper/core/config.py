"""Configuration dataclasses: the shared machinery.

Every component has one ``@dataclass`` config deriving from :class:`ConfigBase`:

* each field has a default and an attribute docstring (a string literal right under the field)
  that states its meaning and unit; :func:`field_docs` reads those docstrings at run time so the
  same text documents YAML files, CLI help and ROS ``ParameterDescriptor``\\ s;
* ``validate()`` (called from ``__post_init__``) raises :class:`ConfigError` naming the field;
* nested configs are fields whose type is another ``ConfigBase``; YAML nesting equals dataclass
  nesting, and ROS parameters are the flattened dotted names (``tsdf.voxel_size_m``);
* unknown keys are errors, except the settings a config lists in its ``REMOVED_SETTINGS`` (name
  -> what replaced it): those are ignored with a warning, so YAML files, parameter files and
  saved maps written before a setting was removed still load.

Owns: conversion between dataclasses, nested dicts, flat dotted dicts and YAML; docstring lookup.
Does not own: ROS parameter declaration (``panoptic_mapper.ros.params``) or component logic.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import textwrap
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from panoptic_mapper.core.errors import ConfigError

C = TypeVar("C", bound="ConfigBase")
LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass
class ConfigBase:
    """Base class of all config dataclasses (see module docstring)."""

    REMOVED_SETTINGS: ClassVar[dict[str, str]] = {}
    """Keys this config no longer has, each with what replaced it: :meth:`from_dict` ignores
    them with a warning instead of rejecting them (a subclass lists its own)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range. Override and call super()."""

    # ---- dict conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (lists for tuples), suitable for YAML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ConfigBase):
                out[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, path: str = "") -> C:
        """Build from a nested dict; unknown keys and wrong types raise :class:`ConfigError`
        (removed settings, ``REMOVED_SETTINGS``, are dropped with a warning)."""
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        for name in sorted(set(data) & set(cls.REMOVED_SETTINGS) - names):
            LOGGER.warning("config key '%s' (value %r) was removed and is ignored: %s",
                           _join(path, name), data.pop(name), cls.REMOVED_SETTINGS[name])
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(_join(path, unknown[0]), data[unknown[0]],
                              f"unknown key for {cls.__name__}; known keys: {sorted(names)}")
        for f in dataclasses.fields(cls):
            if not f.init or f.name not in data:
                continue
            key = _join(path, f.name)
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], key)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            if path and not exc.field.startswith(path + "."):
                raise ConfigError(_join(path, exc.field), exc.value, exc.reason) from exc
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(path or cls.__name__, data, str(exc)) from exc

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # ---- flat dotted names (ROS parameters) ----------------------------------------------------
    def to_flat_dict(self, prefix: str = "") -> dict[str, Any]:
        """``{"tsdf.voxel_size_m": 0.02, ...}``: one entry per leaf field."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            key = _join(prefix, f.name)
            if isinstance(value, ConfigBase):
                out.update(value.to_flat_dict(key))
            elif isinstance(value, tuple):
                out[key] = list(value)
            else:
                out[key] = value
        return out

    @classmethod
    def from_flat_dict(cls: type[C], flat: dict[str, Any]) -> C:
        """Inverse of :meth:`to_flat_dict` (missing keys keep their defaults)."""
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            node = nested
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(key, value, "conflicts with a non-nested key")
            node[parts[-1]] = value
        return cls.from_dict(nested)

    # ---- YAML ------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls: type[C], path: str | Path, section: str | None = None) -> C:
        """Load from a YAML file, optionally from a (dotted) sub-section.

        A ROS parameter file (``node_name: {ros__parameters: {...}}``) is also accepted when
        ``section`` is ``"<node_name>"``; the ``ros__parameters`` level is skipped.
        """
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if section:
            for part in section.split("."):
                if not isinstance(data, dict) or part not in data:
                    raise ConfigError(section, str(path), "section not found in YAML file")
                data = data[part]
            if isinstance(data, dict) and "ros__parameters" in data:
                data = data["ros__parameters"]
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---- helpers --------------------------------------------------------------------------------
def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Convert a YAML/ROS value to the field type, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if inspect.isclass(hint) and issubclass(hint, ConfigBase):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(key, value, f"expected a mapping for {hint.__name__}")
        return hint.from_dict(value, key)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(key, value, "; ".join(errors) or "no matching type")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(key, value, f"must be one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, "expected a list")
        item_hint = args[0] if args else Any
        items = [_coerce(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "expected true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(key, value, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, value, "expected a string")
        return value
    return value


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (and its bases): ``{field_name: text}``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        class_def = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if class_def is None:
            continue
        body = class_def.body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def flat_field_docs(cls: type, prefix: str = "") -> dict[str, str]:
    """Attribute docstrings of all leaf fields of a nested config, keyed by dotted name."""
    out: dict[str, str] = {}
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        key = _join(prefix, f.name)
        if inspect.isclass(hint) and issubclass(hint, ConfigBase):
            out.update(flat_field_docs(hint, key))
        else:
            out[key] = docs.get(f.name, "")
    return out


def require(condition: bool, key: str, value: Any, reason: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds (for ``validate()``)."""
    if not condition:
        raise ConfigError(key, value, reason)

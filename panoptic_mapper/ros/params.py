"""Config dataclasses <-> ROS 2 parameters.

Every leaf field of a (nested) config dataclass becomes one parameter named by its dotted path
(``map.tsdf.voxel_size_m``), so a ROS parameter file nests exactly like the dataclass and the
YAML files of the tools. Each parameter's ``ParameterDescriptor.description`` is the field's
attribute docstring (``core.config.flat_field_docs``), so ``ros2 param describe`` documents it.

Parameters are declared with dynamic typing and validated by building the dataclass: an
integer is accepted for a float field (``rate_hz: 2`` in YAML), an empty YAML list for a tuple
field, and a wrong value is rejected with a message naming the parameter. Fields listed as
``dynamic`` may be changed at run time (``ros2 param set``), validated the same way; the others
are read-only once the node has started.

Owns: declaration, read-back, run-time validation and change notification.
Does not own: what the values mean (the config dataclasses) or their defaults.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Generic, Iterable, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from panoptic_mapper.core.config import ConfigBase, flat_field_docs
from panoptic_mapper.core.errors import ConfigError

C = TypeVar("C", bound=ConfigBase)


def flat_field_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Type hints of all leaf fields of a nested config, keyed by dotted name."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        key = f"{prefix}.{f.name}" if prefix else f.name
        if inspect.isclass(hint) and issubclass(hint, ConfigBase):
            out.update(flat_field_types(hint, key))
        else:
            out[key] = hint
    return out


def type_description(hint: Any) -> tuple[int, str]:
    """``(ParameterType, constraint text)`` describing a field type for a descriptor."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return ParameterType.PARAMETER_STRING, "one of: " + ", ".join(str(a) for a in args)
    if origin is typing.Union or str(origin) == "types.UnionType":
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            code, text = type_description(inner[0])
            return code, (text + "; " if text else "") + "may be left unset"
        return ParameterType.PARAMETER_NOT_SET, ""
    if origin in (tuple, list):
        item = args[0] if args else str
        codes = {bool: ParameterType.PARAMETER_BOOL_ARRAY,
                 int: ParameterType.PARAMETER_INTEGER_ARRAY,
                 float: ParameterType.PARAMETER_DOUBLE_ARRAY,
                 str: ParameterType.PARAMETER_STRING_ARRAY}
        return codes.get(item, ParameterType.PARAMETER_NOT_SET), "a list"
    codes = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    if hint in codes:
        text = "a number (integers accepted)" if hint is float else ""
        return codes[hint], text
    return ParameterType.PARAMETER_NOT_SET, ""


def parameter_descriptors(config_cls: type[ConfigBase], namespace: str = "",
                          dynamic: Iterable[str] = ()) -> dict[str, ParameterDescriptor]:
    """One descriptor per leaf field: description = attribute docstring; read-only unless the
    field's dotted name (relative to ``config_cls``) is in ``dynamic``."""
    dynamic = set(dynamic)
    docs = flat_field_docs(config_cls)
    unknown = dynamic - set(docs)
    if unknown:
        raise ConfigError("dynamic", sorted(unknown), f"not fields of {config_cls.__name__}")
    out = {}
    for key, hint in flat_field_types(config_cls).items():
        _, constraints = type_description(hint)
        out[_join(namespace, key)] = ParameterDescriptor(
            name=_join(namespace, key), description=docs.get(key, ""),
            additional_constraints=constraints, read_only=key not in dynamic,
            dynamic_typing=True)
    return out


def declare_config(node: Node, config_cls: type[C], namespace: str = "",
                   dynamic: Iterable[str] = (), defaults: C | None = None) -> C:
    """Declare every leaf field of ``config_cls`` as a parameter and read the values back.

    Values come from parameter overrides (``--params-file``, ``-p``) when present, else from
    ``defaults`` (the dataclass defaults when None).

    Raises:
        ConfigError: a value has the wrong type or fails validation; the error names the
            parameter (``namespace.section.field``).
    """
    defaults = config_cls() if defaults is None else defaults
    descriptors = parameter_descriptors(config_cls, namespace, dynamic)
    values = defaults.to_flat_dict()
    node.declare_parameters("", [(name, _to_parameter_value(values[_strip(namespace, name)]),
                                  descriptor) for name, descriptor in descriptors.items()])
    return read_config(node, config_cls, namespace)


def read_config(node: Node, config_cls: type[C], namespace: str = "") -> C:
    """Build ``config_cls`` from the node's (declared) parameters; raises naming the parameter."""
    types = flat_field_types(config_cls)
    flat = {key: node.get_parameter(_join(namespace, key)).value for key in types}
    return config_from_flat_values(config_cls, flat, namespace)


def config_from_flat_values(config_cls: type[C], flat: dict[str, Any], namespace: str = "") -> C:
    """``{dotted field: parameter value}`` -> validated config (ROS value quirks normalised)."""
    types = flat_field_types(config_cls)
    normalized = {key: _from_parameter_value(value, types[key]) for key, value in flat.items()}
    try:
        return config_cls.from_flat_dict(normalized)
    except ConfigError as exc:
        raise ConfigError(_join(namespace, exc.field), exc.value, exc.reason) from exc


class ConfigParameters(Generic[C]):
    """A config dataclass kept in sync with a node's parameters.

    Declares the parameters, holds the current validated config, rejects run-time changes that
    do not validate (``ros2 param set`` then reports the reason) and calls listeners with the
    new config after an accepted change.
    """

    def __init__(self, node: Node, config_cls: type[C], namespace: str = "",
                 dynamic: Iterable[str] = (), defaults: C | None = None):
        self._node = node
        self._cls = config_cls
        self._namespace = namespace
        self._listeners: list[Callable[[C], None]] = []
        self._pending: C | None = None
        self.config: C = declare_config(node, config_cls, namespace, dynamic, defaults)
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)

    def add_listener(self, callback: Callable[[C], None]) -> None:
        """Call ``callback(new_config)`` after every accepted run-time change."""
        self._listeners.append(callback)

    def _owned(self, parameters: list[Parameter]) -> dict[str, Any]:
        prefix = f"{self._namespace}." if self._namespace else ""
        fields = flat_field_types(self._cls)
        return {p.name[len(prefix):]: p.value for p in parameters
                if p.name.startswith(prefix) and p.name[len(prefix):] in fields}

    def _validate(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = self._owned(parameters)
        if not changes:
            return SetParametersResult(successful=True)
        flat = {**self.config.to_flat_dict(), **changes}
        try:
            self._pending = config_from_flat_values(self._cls, flat, self._namespace)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply(self, parameters: list[Parameter]) -> None:
        if not self._owned(parameters) or self._pending is None:
            return
        self.config, self._pending = self._pending, None
        for listener in self._listeners:
            listener(self.config)


def _join(namespace: str, key: str) -> str:
    return f"{namespace}.{key}" if namespace else key


def _strip(namespace: str, name: str) -> str:
    return name[len(namespace) + 1:] if namespace else name


def _to_parameter_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_parameter_value(value: Any, hint: Any) -> Any:
    """Undo ROS quirks: arrays come back as ``array.array``; an empty YAML list and an unset
    parameter come back as None or a byte array."""
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        if value is None:
            return []
        if not isinstance(value, str) and hasattr(value, "__len__") and len(value) == 0:
            return []
        if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
            return list(value)
    return value

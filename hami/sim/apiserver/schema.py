"""The shapes of the served types, read at run time from the official `kubernetes` client's models.

The client (a dependency already) is generated from the real server's OpenAPI document, so its
pydantic models carry every field's JSON name, type, requiredness and description. This module
turns them into a small type graph and uses it the way kube-apiserver uses its Go structs:

- `decode()` checks a body against the type (a string where a list belongs is a 400 naming the
  field, in the real decoder's words), drops unknown fields (reporting them for
  `fieldValidation`), and writes quantities, times and micro-times in canonical form;
- `hami.sim.apiserver.openapi` renders the same graph as OpenAPI v2/v3 for kubectl.

What the models do not say comes from small tables here: which string fields are quantities or
micro-times, and the list merge strategies (`x-kubernetes-patch-*`) kubectl's apply reads.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import models

from hami.sim.apiserver import quantities

# (model class, python attribute) -> special string kinds the generated models type as plain str/datetime
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"), ("V1VolumeResourceRequirements", "requests"),
    ("V1NodeStatus", "capacity"), ("V1NodeStatus", "allocatable"),
    ("V1PodSpec", "overhead"), ("V1EmptyDirVolumeSource", "size_limit"),
    ("V1ContainerStatus", "allocated_resources"), ("V1ResourceFieldSelector", "divisor"),
}
MICROTIME_FIELDS = {("V1LeaseSpec", "acquire_time"), ("V1LeaseSpec", "renew_time"), ("CoreV1Event", "event_time")}

# (model class, python attribute) -> (patch strategy, merge key or "", list map keys)
PATCH_STRATEGIES: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    ("V1PodSpec", "containers"): ("merge", "name", ("name",)),
    ("V1PodSpec", "init_containers"): ("merge", "name", ("name",)),
    ("V1PodSpec", "ephemeral_containers"): ("merge", "name", ("name",)),
    ("V1PodSpec", "volumes"): ("merge,retainKeys", "name", ("name",)),
    ("V1PodSpec", "image_pull_secrets"): ("merge", "name", ()),
    ("V1PodSpec", "host_aliases"): ("merge", "ip", ("ip",)),
    ("V1PodSpec", "topology_spread_constraints"): ("merge", "topologyKey", ("topologyKey", "whenUnsatisfiable")),
    ("V1PodSpec", "resource_claims"): ("merge,retainKeys", "name", ("name",)),
    ("V1PodSpec", "scheduling_gates"): ("merge", "name", ("name",)),
    ("V1Container", "env"): ("merge", "name", ("name",)),
    ("V1Container", "ports"): ("merge", "containerPort", ("containerPort", "protocol")),
    ("V1Container", "volume_mounts"): ("merge", "mountPath", ("mountPath",)),
    ("V1Container", "volume_devices"): ("merge", "devicePath", ("devicePath",)),
    ("V1EphemeralContainer", "env"): ("merge", "name", ("name",)),
    ("V1EphemeralContainer", "volume_mounts"): ("merge", "mountPath", ("mountPath",)),
    ("V1EphemeralContainer", "volume_devices"): ("merge", "devicePath", ("devicePath",)),
    ("V1PodStatus", "conditions"): ("merge", "type", ("type",)),
    ("V1PodStatus", "pod_ips"): ("merge", "ip", ("ip",)),
    ("V1PodStatus", "host_ips"): ("merge", "ip", ("ip",)),
    ("V1NodeStatus", "conditions"): ("merge", "type", ("type",)),
    ("V1NodeStatus", "addresses"): ("merge", "type", ("type",)),
    ("V1NodeSpec", "pod_cidrs"): ("merge", "", ()),
    ("V1ObjectMeta", "finalizers"): ("merge", "", ()),
    ("V1ObjectMeta", "owner_references"): ("merge", "uid", ("uid",)),
}

_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_VERSION_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)*?(V\d+(?:(?:alpha|beta)\d+)?)(?=[A-Z])")


@dataclass(frozen=True)
class Type:
    """One field type: a scalar kind, or a list/map of `item`, or a `model` (class name)."""

    kind: str  # string integer number boolean time microtime bytes quantity int-or-string any model list map
    item: Type | None = None
    model: str = ""


@dataclass
class Field:
    name: str  # JSON name
    attr: str  # the model's attribute (for the tables above)
    type: Type
    required: bool
    description: str


@dataclass
class Model:
    """One generated model: its JSON fields in order, and what the tables add."""

    cls: str
    kind: str  # the Go type name without version prefix: "PodSpec"
    description: str
    fields: dict[str, Field] = field(default_factory=dict)


def short_name(cls: str) -> str:
    """The Go type name of a generated class: V1PodSpec -> PodSpec, CoreV1Event -> Event."""
    return _VERSION_PREFIX.sub("", cls)


def version_of(cls: str) -> str:
    """The API version of a generated class: V1PodSpec -> v1, V1beta1Foo -> v1beta1."""
    m = _VERSION_PREFIX.match(cls)
    return m.group(1).lower() if m else "v1"


def _parse_type(text: str, annotation: Any) -> Type:
    text = text.strip()
    if text.startswith("List[") and text.endswith("]"):
        return Type("list", _parse_type(text[5:-1], None))
    if text.startswith("Dict[str,") and text.endswith("]"):
        return Type("map", _parse_type(text[9:-1], None))
    scalar = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "datetime": "time",
              "bytes": "bytes"}.get(text)
    if scalar:
        return Type(scalar)
    if text == "object":
        return Type("int-or-string" if _is_int_or_string(annotation) else "any")
    if not hasattr(models, text):
        raise KeyError(f"unknown model type {text!r}")
    return Type("model", model=text)


def _is_int_or_string(annotation: Any) -> bool:
    def leaves(tp: Any) -> set[Any]:
        args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Annotated:
            return leaves(args[0])
        if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
            return set().union(*(leaves(a) for a in args))
        return {tp}

    found = leaves(annotation) - {type(None)} if annotation is not None else set()
    return found == {int, str}


def _special(cls: str, attr: str, base: Type) -> Type:
    if (cls, attr) in QUANTITY_FIELDS:
        return Type("map", Type("quantity")) if base.kind == "map" else Type("quantity")
    if (cls, attr) in MICROTIME_FIELDS:
        return Type("microtime")
    return base


@functools.cache
def model(cls: str) -> Model:
    """The Model of a generated class name (`V1Pod`), built once."""
    klass = getattr(models, cls)
    doc = (klass.__doc__ or "").split("Attributes:")[0].strip()
    result = Model(cls, short_name(cls), " ".join(doc.split()))
    for attr, type_text in klass.openapi_types.items():
        info = klass.model_fields.get(attr)
        annotation = info.annotation if info is not None else None
        base = _parse_type(type_text, annotation)
        json_name = klass.attribute_map[attr]
        result.fields[json_name] = Field(json_name, attr, _special(cls, attr, base),
                                         bool(info is not None and info.is_required()),
                                         (info.description or "") if info is not None else "")
    return result


def reachable(roots: list[str]) -> list[str]:
    """Every model class reachable from `roots`, roots first, in a stable order."""
    seen: dict[str, None] = {}
    stack = list(reversed(roots))
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen[cls] = None
        for f in reversed(list(model(cls).fields.values())):
            tp = f.type
            while tp.item is not None:
                tp = tp.item
            if tp.kind == "model":
                stack.append(tp.model)
    return list(seen)


# ----------------------------------------------------------------------------------------------
# decoding


class DecodeError(ValueError):
    """A body the Go decoder would refuse; the message is its wording."""


_ZERO = {"model": dict, "string": str, "integer": int, "boolean": bool, "number": float, "quantity": lambda: "0"}
_JSON_KIND = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}
_GO_SCALAR = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool", "bytes": "[]uint8",
              "time": "v1.Time", "microtime": "v1.MicroTime", "int-or-string": "intstr.IntOrString"}


def _go_type(tp: Type) -> str:
    if tp.kind == "list":
        return "[]" + _go_type(tp.item)  # type: ignore[arg-type]
    if tp.kind == "map":
        return "map[string]" + _go_type(tp.item)  # type: ignore[arg-type]
    if tp.kind == "model":
        return "v1." + short_name(tp.model)
    return _GO_SCALAR.get(tp.kind, "interface {}")


def _canonical_time(text: str, micro: bool) -> str:
    m = _TIME_RE.match(text)
    if m is None:
        raise DecodeError(f'parsing time "{text}" as "2006-01-02T15:04:05Z07:00": cannot parse "{text}" as RFC 3339')
    try:
        zone = m.group(8).upper()
        when = dt.datetime.fromisoformat(text[:19].replace("t", "T") + (m.group(7) or "")[:7]
                                         + ("+00:00" if zone == "Z" else zone))
    except ValueError as exc:
        raise DecodeError(f'parsing time "{text}": {exc}') from exc
    when = when.astimezone(dt.UTC)
    if micro:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Walk:
    root: str
    unknown: list[str]

    def fail(self, value: Any, tp: Type, struct: str, path: str) -> DecodeError:
        got = _JSON_KIND.get(type(value), "value")
        if isinstance(value, bool):
            got = "bool"
        return DecodeError(f"json: cannot unmarshal {got} into Go struct field {struct}.{path} of type "
                           f"{_go_type(tp)}")

    def value(self, value: Any, tp: Type, struct: str, path: str, where: str) -> Any:
        if value is None:
            return None
        kind = tp.kind
        if kind == "model":
            if not isinstance(value, dict):
                raise self.fail(value, tp, struct, path)
            return self.object(value, tp.model, path, where)
        if kind == "list":
            if not isinstance(value, list):
                raise self.fail(value, tp, struct, path)
            return [self.element(v, tp.item, struct, path, f"{where}[{i}]")  # type: ignore[arg-type]
                    for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise self.fail(value, tp, struct, path)
            return {k: self.element(v, tp.item, struct, path, f"{where}.{k}")  # type: ignore[arg-type]
                    for k, v in value.items()}
        if kind == "quantity":
            try:
                return quantities.canonical(value)
            except quantities.QuantityError as exc:
                raise DecodeError(str(exc)) from exc
        if kind == "string":
            ok = isinstance(value, str)
        elif kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind == "boolean":
            ok = isinstance(value, bool)
        elif kind == "int-or-string":
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        elif kind in ("time", "microtime"):
            if not isinstance(value, str):
                raise self.fail(value, tp, struct, path)
            return _canonical_time(value, kind == "microtime")
        elif kind == "bytes":
            if not isinstance(value, str):
                raise self.fail(value, tp, struct, path)
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DecodeError(f"illegal base64 data in {where}: {exc}") from exc
            return value
        else:
            return value
        if not ok:
            raise self.fail(value, tp, struct, path)
        return value

    def element(self, value: Any, tp: Type, struct: str, path: str, where: str) -> Any:
        """A list or map element: Go decodes null there into the element type's zero value."""
        if value is None:
            return _ZERO.get(tp.kind)() if tp.kind in _ZERO else None
        return self.value(value, tp, struct, path, where)

    def object(self, obj: dict[str, Any], cls: str, path: str, where: str) -> dict[str, Any]:
        shape = model(cls)
        out: dict[str, Any] = {}
        for key, value in obj.items():
            spec = shape.fields.get(key)
            here = f"{where}.{key}" if where else key
            if spec is None:
                self.unknown.append(here)
                continue
            sub = f"{path}.{key}" if path else key
            out[key] = self.value(value, spec.type, shape.kind, sub, here)
        return out


def decode(cls: str, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(a canonical copy of `obj` without unknown fields, the unknown fields' paths); DecodeError if malformed."""
    walk = _Walk(cls, [])
    return walk.object(obj, cls, "", ""), walk.unknown

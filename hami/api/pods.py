"""Parsing a Pod (the Kubernetes API's JSON, as a plain dict) into the engine's `Request`.

HAMi semantics (hami-behaviour §3.1, §2.6), with one difference in kind: where HAMi silently
drops a malformed ask (a fractional `nvidia.com/gpu` makes HAMi treat the container as asking
for nothing), we raise `RequestError` naming the container, the resource, the allowed range and
what to write instead. Choices where HAMi offers no single rule:

- `nvidia.com/gpucores` above 100 is clamped to 100 here (HAMi clamps later, in Fit; same result).
- `nvidia.com/gpumem-percentage` above 100 is clamped to 100, at or below 0 ignored (as HAMi).
- When both `gpumem` and `gpumem-percentage` are given, `gpumem` wins (HAMi's Fit does the same).
- `nvidia.com/vgpu-mode` is a comma list of `mig` / `hami-core` (HAMi tests "value contains the
  device's mode"; both listed = any mode); an empty value means no constraint (HAMi would match
  nothing); other modes (e.g. `mps`) are rejected.
- `hami.io/gpu-scheduler-policy`: `binpack` or `spread`; HAMi's `topology-aware`, `mutex` and
  `numa` (alone or in a chain) are rejected with the supported values and an alternative.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

from hami.api import names
from hami.api._wire import INT32_MAX, INT64_MAX, INT64_MIN
from hami.api.errors import RequestError
from hami.api.requests import ContainerRequest, GpuPolicy, Mode, NodePolicy, Request


@dataclass(frozen=True)
class RequestDefaults:
    """The `nvidia:` settings of the device config that shape a request (HAMi chart defaults)."""

    resource_count_name: str = names.RESOURCE_COUNT
    resource_memory_name: str = names.RESOURCE_MEMORY
    resource_memory_percentage_name: str = names.RESOURCE_MEMORY_PERCENTAGE
    resource_core_name: str = names.RESOURCE_CORES
    default_memory: int = 0  # MiB when neither gpumem nor percentage is given; 0 → 100 %
    default_cores: int = 0
    default_gpu_num: int = 1  # count when only gpumem / gpucores / percentage is given
    memory_factor: int = 1  # gpumem is multiplied by this

    def __post_init__(self) -> None:
        for name in (
            "resource_count_name",
            "resource_memory_name",
            "resource_memory_percentage_name",
            "resource_core_name",
        ):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty resource name")
        for name, hi in (
            ("default_memory", INT32_MAX),
            ("default_cores", 100),
            ("default_gpu_num", INT32_MAX),
            ("memory_factor", INT32_MAX),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise ValueError(f"{name} must be an integer 0..{hi}, got {value!r}")

    @classmethod
    def from_config(cls, nvidia_config: Any) -> RequestDefaults:
        """Read the same-named attributes of `hami.devices` NvidiaConfig (absent → chart default)."""
        kwargs = {}
        for field in fields(cls):
            value = getattr(nvidia_config, field.name, None)
            if value is not None:
                kwargs[field.name] = value
        return cls(**kwargs)


def parse_pod(pod: Mapping[str, Any], defaults: RequestDefaults | None = None) -> Request:
    """The whole ask of `pod`: every container (init containers first, their index in that order)
    plus the pod-level annotations. A Pod that asks for no GPU gives `wants_gpus == False`."""
    defaults = defaults or RequestDefaults()
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}

    containers: list[ContainerRequest] = []
    for init, key in ((True, "initContainers"), (False, "containers")):
        for container in spec.get(key) or ():
            containers.append(_parse_container(container, len(containers), init, defaults))

    return Request(
        containers=tuple(containers),
        mode=_parse_mode(annotations.get(names.VGPU_MODE)),
        use_gpu_types=_comma_list(annotations.get(names.USE_GPU_TYPE)),
        nouse_gpu_types=_comma_list(annotations.get(names.NOUSE_GPU_TYPE)),
        use_gpu_uuids=_comma_list(annotations.get(names.USE_GPU_UUID)),
        nouse_gpu_uuids=_comma_list(annotations.get(names.NOUSE_GPU_UUID)),
        node_policy=_parse_node_policy(annotations.get(names.NODE_SCHEDULER_POLICY)),
        gpu_policy=_parse_gpu_policy(annotations.get(names.GPU_SCHEDULER_POLICY)),
    )


# --- containers ----------------------------------------------------------------------------------


def _parse_container(
    container: Mapping[str, Any], index: int, init: bool, d: RequestDefaults
) -> ContainerRequest:
    name = str(container.get("name") or f"#{index}")
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}

    def lookup(resource: str) -> object:
        """Limits first, then requests (per resource, as HAMi reads them)."""
        return limits[resource] if resource in limits else requests.get(resource)

    raw_count = lookup(d.resource_count_name)
    raw_memory = lookup(d.resource_memory_name)
    raw_percent = lookup(d.resource_memory_percentage_name)
    raw_cores = lookup(d.resource_core_name)

    if raw_count is None:
        asks_share = any(v is not None for v in (raw_memory, raw_percent, raw_cores))
        count = d.default_gpu_num if asks_share else 0
    else:
        count = _integer(
            raw_count,
            name,
            d.resource_count_name,
            0,
            INT32_MAX,
            "devices",
            'write a whole number of GPUs, e.g. "1"',
        )
    if count == 0:
        return ContainerRequest(name=name, index=index, init=init, count=0)

    factor = max(d.memory_factor, 1)
    memory = 0
    if raw_memory is not None:
        memory = (
            _integer(
                raw_memory,
                name,
                d.resource_memory_name,
                0,
                INT32_MAX // factor,
                "MiB",
                'gpumem is a plain number of MiB per GPU, e.g. "8192" (not "8Gi")'
                + (f"; memoryFactor {factor} multiplies it" if factor > 1 else ""),
            )
            * factor
        )

    percent = 0
    if raw_percent is not None:
        percent = _integer(
            raw_percent,
            name,
            d.resource_memory_percentage_name,
            INT64_MIN,
            INT64_MAX,
            "percent",
            "write a whole percentage of the GPU's memory, 1..100",
            allowed="1..100 percent (above 100 reads as 100; 0 or less is ignored)",
        )
        percent = min(percent, 100) if percent > 0 else 0  # HAMi: >100 clamped, <=0 ignored

    if memory == 0 and percent == 0:
        if d.default_memory:
            memory = d.default_memory
        else:
            percent = 100
    if memory:
        percent = 0  # gpumem wins over a percentage, as in HAMi's Fit

    cores = d.default_cores
    if raw_cores is not None:
        cores = _integer(
            raw_cores,
            name,
            d.resource_core_name,
            0,
            INT32_MAX,
            "percent",
            "gpucores is a percentage of one GPU's SMs (100 = the whole GPU)",
            allowed="0..100 percent (above 100 reads as 100)",
        )
    cores = min(cores, 100)

    return ContainerRequest(
        name=name, index=index, init=init, count=count, memory_mib=memory, memory_percent=percent, cores=cores
    )


_QUANTITY = re.compile(
    r"(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_SUFFIX = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def parse_quantity(value: object) -> Fraction | None:
    """A Kubernetes resource.Quantity ("1", "8k", "2Gi", "500m", "1e3") as an exact number; None
    when it is not one. Plain ints are accepted too (hand-built dicts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if not isinstance(value, str):
        return None
    match = _QUANTITY.fullmatch(value.strip())
    if not match:
        return None
    suffix = match.group("suffix") or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        exponent = int(suffix[1:])
        if abs(exponent) > 100:
            return None
        scale = Fraction(10) ** exponent
    else:
        scale = _SUFFIX[suffix]
    return Fraction(match.group("num")) * scale


def _integer(
    raw: object, container: str, resource: str, lo: int, hi: int, unit: str, hint: str, allowed: str = ""
) -> int:
    """The whole number `raw` stands for, within lo..hi; RequestError saying what to write otherwise."""
    quantity = parse_quantity(raw)
    shown = raw if isinstance(raw, str) else str(raw)
    allowed = allowed or f"{lo}..{hi} {unit}"
    if quantity is None:
        raise RequestError(
            container=container,
            resource=resource,
            allowed=allowed,
            value=shown,
            problem="is not a Kubernetes quantity",
            hint=hint,
        )
    if quantity.denominator != 1:
        raise RequestError(
            container=container,
            resource=resource,
            allowed=allowed,
            value=shown,
            problem="is not a whole number",
            hint=hint,
        )
    value = int(quantity)
    if value < lo:
        raise RequestError(
            container=container,
            resource=resource,
            allowed=allowed,
            value=shown,
            problem="is negative",
            hint=hint,
        )
    if value > hi:
        raise RequestError(
            container=container,
            resource=resource,
            allowed=allowed,
            value=shown,
            problem=f"is {value} {unit}, out of range",
            hint=hint,
        )
    return value


# --- annotations ---------------------------------------------------------------------------------


def _comma_list(value: str | None) -> tuple[str, ...]:
    """HAMi's list annotations: comma separated, blanks trimmed; empty means no constraint."""
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


_MODES = {names.MODE_MIG: Mode.MIG, names.MODE_HAMI_CORE: Mode.HAMI_CORE}


def _parse_mode(value: str | None) -> Mode:
    items = set(_comma_list(value))
    if not items:
        return Mode.ANY
    unknown = sorted(items - set(_MODES))
    if unknown:
        raise RequestError(
            container=None,
            resource=names.VGPU_MODE,
            allowed="'mig', 'hami-core', or both as 'mig,hami-core'",
            value=value,
            problem=f"names a mode hami does not schedule ({', '.join(unknown)})",
            hint="remove the annotation to accept either kind of GPU",
        )
    return Mode.ANY if len(items) > 1 else _MODES[items.pop()]


def _parse_node_policy(value: str | None) -> NodePolicy | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        return NodePolicy(text)
    except ValueError:
        raise RequestError(
            container=None,
            resource=names.NODE_SCHEDULER_POLICY,
            allowed="'binpack' or 'spread'",
            value=value,
            problem="is not a node scheduler policy",
            hint="remove it to use the scheduler's default",
        ) from None


_UNSUPPORTED_GPU_POLICIES = {
    "topology-aware": "hami has no NVLink pair scores; use 'binpack' or 'spread'",
    "mutex": "for a GPU of its own request nvidia.com/gpucores: 100",
    "numa": "NUMA-aware device ordering is not implemented; use 'binpack' or 'spread'",
}


def _parse_gpu_policy(value: str | None) -> GpuPolicy | None:
    """`binpack` or `spread`; HAMi also allows a comma chain, accepted when it names one policy."""
    items = _comma_list(value)
    if not items:
        return None
    allowed = "'binpack' or 'spread'"
    chosen: set[GpuPolicy] = set()
    for item in items:
        if item in _UNSUPPORTED_GPU_POLICIES:
            raise RequestError(
                container=None,
                resource=names.GPU_SCHEDULER_POLICY,
                allowed=allowed,
                value=value,
                problem=f"uses HAMi policy {item!r}, which hami does not support",
                hint=_UNSUPPORTED_GPU_POLICIES[item],
            )
        try:
            chosen.add(GpuPolicy(item))
        except ValueError:
            raise RequestError(
                container=None,
                resource=names.GPU_SCHEDULER_POLICY,
                allowed=allowed,
                value=value,
                problem=f"names an unknown policy {item!r}",
                hint="remove it to use the scheduler's default",
            ) from None
    if len(chosen) > 1:
        raise RequestError(
            container=None,
            resource=names.GPU_SCHEDULER_POLICY,
            allowed=allowed,
            value=value,
            problem="names both binpack and spread",
            hint="choose one",
        )
    return chosen.pop()


def container_names(pod: Mapping[str, Any]) -> Sequence[str]:
    """Container names in HAMi's index order (init containers first): the device string's order."""
    spec = pod.get("spec") or {}
    return [str(c.get("name") or "") for key in ("initContainers", "containers") for c in spec.get(key) or ()]


__all__ = ["RequestDefaults", "container_names", "parse_pod", "parse_quantity"]

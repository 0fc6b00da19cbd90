"""Codecs of the pod annotations that record a scheduling decision (hami-behaviour §1.6, §1.7).

- `hami.io/vgpu-devices-allocated` / `hami.io/vgpu-devices-to-allocate`: the HAMi device string.
  One entry per container (init containers first), each terminated by `;` (a container without
  devices is an empty entry); inside an entry every device is `UUID,Type,MemoryMiB,Cores`
  terminated by `:`. Example: `GPU-0fc3..,NVIDIA,3000,0:;GPU-0fc3..,NVIDIA,5000,0:;`. Legacy MIG
  (v2.5-v2.9) suffixed the uuid with `[tidx-slot]`; that is decoded, never written.
- `hami.io/vgpu-mig-allocations`: HAMi v2.10 JSON reservations, validated as HAMi validates them.
- `hami.io/bind-phase`: allocating | success | failed; `hami.io/bind-time`, `hami.io/vgpu-time`:
  unix seconds.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hami.api import names
from hami.api._wire import (
    INT32_MAX,
    INT64_MAX,
    UINT32_MAX,
    Fields,
    Placement,
    check_int,
    decode_placement,
    dump_json,
    load_json_array,
    parse_go_int,
    require_aware,
)
from hami.api.errors import AnnotationError

# Decoded annotation values kept (each memo): a pod's events repeat its values close together,
# and pods of one size on one GPU share theirs. Bounded small: values of pods long gone are
# nearly all unique (MIG uuids), about 1.5 KB each, and a 65,536-entry memo grew a soak's
# scheduler by 0.5 MiB a minute of churn until it would have held some 190 MiB.
DECODE_MEMO = 4096

# ---------------------------------------------------------------------------------------------
# the HAMi device string
# ---------------------------------------------------------------------------------------------

_SEPARATORS = frozenset(",:;")
_LEGACY_MIG = re.compile(r"(?P<uuid>[^\[\]]+)\[(?P<tidx>[0-9]+)-(?P<slot>[0-9]+)\]")


@dataclass(frozen=True)
class ContainerDevice:
    """One device given to one container: the GPU, and the memory/cores charged to it.

    For MIG, `memory_mib`/`cores` are the chosen profile's; the profile and placement live in
    `hami.io/vgpu-mig-allocations`. `legacy_mig` is `(template index, slot)` of a v2.5-v2.9 MIG
    entry (`GPU-…[tidx-slot]`), None otherwise; `uuid` never carries the suffix.
    """

    uuid: str
    type: str = names.DEVICE_TYPE_NVIDIA
    memory_mib: int = 0
    cores: int = 0
    legacy_mig: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for what, text in (("uuid", self.uuid), ("type", self.type)):
            if not isinstance(text, str) or not text:
                raise ValueError(f"device {what} must be a non-empty string, got {text!r}")
            if _SEPARATORS & set(text) or "[" in text or "]" in text:
                raise ValueError(
                    f"device {what} {text!r} contains one of , : ; [ ] (the string's separators)"
                )
        check_int(self.memory_mib, 0, INT32_MAX, "memory")
        check_int(self.cores, 0, INT32_MAX, "cores")
        if self.legacy_mig is not None:
            if not isinstance(self.legacy_mig, tuple) or len(self.legacy_mig) != 2:
                raise ValueError(f"legacy_mig must be (template index, slot), got {self.legacy_mig!r}")
            for n in self.legacy_mig:
                check_int(n, 0, INT64_MAX, "legacy MIG index")

    def encode(self) -> str:
        """The current form (a legacy `[tidx-slot]` suffix is not written back)."""
        return f"{self.uuid},{self.type},{self.memory_mib},{self.cores}:"


PodDevices = tuple[tuple[ContainerDevice, ...], ...]
"""Per container (HAMi's container index), the devices given to it."""


def encode_pod_devices(devices: Sequence[Sequence[ContainerDevice]]) -> str:
    """Every container's entry terminated by `;` (so `((),)` is `;` and `()` is empty)."""
    return "".join("".join(d.encode() for d in container) + ";" for container in devices)


@functools.lru_cache(maxsize=DECODE_MEMO)
def decode_pod_devices(value: str, annotation: str = names.VGPU_DEVICES_ALLOCATED) -> PodDevices:
    """Decode either devices annotation; `annotation` names it in errors.

    One final `;` terminates the last entry; a value without it (hand-written) still decodes.
    Fields after the fourth are ignored, as HAMi ignores them. Memoised (the result is
    immutable): a scheduler sees the same value on every event of a pod, and pods of one size on
    one GPU share it.
    """
    if value.endswith(";"):
        value = value[:-1]
    elif not value:
        return ()
    return tuple(_decode_container(entry, ci, annotation) for ci, entry in enumerate(value.split(";")))


def _decode_container(entry: str, ci: int, annotation: str) -> tuple[ContainerDevice, ...]:
    out = []
    for di, item in enumerate(s for s in entry.split(":") if s):
        part = f"container {ci} device {di} {item!r}"
        fields = item.split(",")
        if len(fields) < 4:
            raise AnnotationError(
                annotation, part, f"has {len(fields)} fields; expected 'UUID,Type,MemoryMiB,Cores'"
            )
        uuid, dev_type, mem, cores = fields[:4]
        if not uuid:
            raise AnnotationError(annotation, part, "uuid is empty; expected the GPU uuid")
        if not dev_type:
            raise AnnotationError(annotation, part, "type is empty; expected 'NVIDIA'")
        memory = parse_go_int(mem, 0, INT32_MAX)
        if memory is None:
            raise AnnotationError(annotation, part, f"memory {mem!r} is not an integer 0..{INT32_MAX} (MiB)")
        core = parse_go_int(cores, 0, INT32_MAX)
        if core is None:
            raise AnnotationError(
                annotation, part, f"cores {cores!r} is not an integer 0..{INT32_MAX} (percent)"
            )
        legacy = None
        if "[" in uuid or "]" in uuid:
            match = _LEGACY_MIG.fullmatch(uuid)
            if not match:
                raise AnnotationError(
                    annotation, part, f"uuid {uuid!r} is neither a uuid nor legacy 'GPU-…[tidx-slot]'"
                )
            uuid, legacy = match.group("uuid"), (int(match.group("tidx")), int(match.group("slot")))
        try:
            out.append(ContainerDevice(uuid, dev_type, memory, core, legacy))
        except ValueError as err:
            raise AnnotationError(annotation, part, str(err)) from None
    return tuple(out)


def next_pending_container(devices: PodDevices) -> int | None:
    """The first container whose entry is not empty: the one the agent allocates next."""
    return next((i for i, container in enumerate(devices) if container), None)


def erase_container(devices: PodDevices, index: int) -> PodDevices:
    """`devices` with container `index`'s entry emptied (the agent's step after Allocate)."""
    if not 0 <= index < len(devices):
        raise IndexError(f"container index {index} is outside the {len(devices)} entries")
    return (*devices[:index], (), *devices[index + 1 :])


# ---------------------------------------------------------------------------------------------
# hami.io/vgpu-mig-allocations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigAllocation:
    """The scheduler's reservation of one MIG device: which profile at which placement on which GPU.

    The agent adds the runtime identity (`mig_uuid`, `gpu_instance_id`, `compute_instance_id`)
    once the instance exists: all three or none.
    """

    container_index: int
    device_index: int
    gpu_uuid: str
    profile: str
    placement: Placement
    mig_uuid: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None

    def __post_init__(self) -> None:
        problem = _allocation_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def realised(self) -> bool:
        return self.mig_uuid is not None

    def with_runtime(self, mig_uuid: str, gpu_instance_id: int, compute_instance_id: int) -> MigAllocation:
        """This reservation with the realised instance's identity filled in."""
        return replace(
            self, mig_uuid=mig_uuid, gpu_instance_id=gpu_instance_id, compute_instance_id=compute_instance_id
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "containerIndex": self.container_index,
            "deviceIndex": self.device_index,
            "gpuUUID": self.gpu_uuid,
            "profile": self.profile,
            "placement": self.placement.to_json(),
        }
        if self.mig_uuid is not None:
            out["migUUID"] = self.mig_uuid
            out["gpuInstanceID"] = self.gpu_instance_id
            out["computeInstanceID"] = self.compute_instance_id
        return out


def _allocation_problem(a: MigAllocation) -> str | None:
    """HAMi's decode rules, in HAMi's order, phrased with what is expected."""
    for what, n in (("containerIndex", a.container_index), ("deviceIndex", a.device_index)):
        if isinstance(n, bool) or not isinstance(n, int):
            return f"{what} {n!r} is not an integer"
        if n < 0:
            return f"{what} {n} is negative; expected an index >= 0"
    if not isinstance(a.gpu_uuid, str) or not a.gpu_uuid:
        return "gpuUUID is empty; expected the parent GPU's uuid"
    if not isinstance(a.profile, str) or not a.profile:
        return "profile is empty; expected a MIG profile name such as 2g.20gb"
    if not isinstance(a.placement, Placement):
        return f"placement {a.placement!r} is not a Placement"
    if a.placement.size == 0:
        return "placement size is 0; expected the profile's slice count (>= 1)"
    if a.mig_uuid == "":
        return "migUUID is empty; leave it out until the instance exists"
    present = [a.mig_uuid is not None, a.gpu_instance_id is not None, a.compute_instance_id is not None]
    if any(present) and not all(present):
        return (
            "partial runtime identity; expected migUUID, gpuInstanceID and computeInstanceID together or none"
        )
    if a.mig_uuid is not None and not isinstance(a.mig_uuid, str):
        return f"migUUID {a.mig_uuid!r} is not a string"
    for what, n in (("gpuInstanceID", a.gpu_instance_id), ("computeInstanceID", a.compute_instance_id)):
        if n is not None:
            try:
                check_int(n, 0, UINT32_MAX, what)
            except ValueError as err:
                return str(err)
    return None


def encode_mig_allocations(allocations: Iterable[MigAllocation]) -> str:
    allocations = tuple(allocations)
    _check_unique_slots(allocations, lambda i, problem: ValueError(problem))
    return dump_json([a.to_json() for a in allocations])


@functools.lru_cache(maxsize=DECODE_MEMO)
def decode_mig_allocations(value: str) -> tuple[MigAllocation, ...]:
    """Decode and validate like HAMi: an empty value means no reservations; negative indices,
    an empty uuid or profile, a zero-size placement, a partial runtime identity, or a repeated
    (containerIndex, deviceIndex) raise AnnotationError."""
    annotation = names.VGPU_MIG_ALLOCATIONS
    if not value:
        return ()
    out = []
    for i, raw in enumerate(load_json_array(value, annotation)):
        f = Fields(raw, annotation, f"allocation {i}")
        mig_uuid = f.str("migUUID")  # HAMi: "" counts as absent
        kwargs = dict(
            container_index=f.int("containerIndex", -(2**63), INT64_MAX),
            device_index=f.int("deviceIndex", -(2**63), INT64_MAX),
            gpu_uuid=f.str("gpuUUID"),
            profile=f.str("profile"),
            placement=decode_placement(f, required=False),
            mig_uuid=mig_uuid or None,
            gpu_instance_id=f.optional_int("gpuInstanceID", 0, UINT32_MAX),
            compute_instance_id=f.optional_int("computeInstanceID", 0, UINT32_MAX),
        )
        try:
            out.append(MigAllocation(**kwargs))
        except ValueError as err:
            raise f.fail(str(err)) from None
    allocations = tuple(out)

    def fail(i: int, problem: str) -> AnnotationError:
        return AnnotationError(annotation, f"allocation {i}", problem)

    _check_unique_slots(allocations, fail)
    return allocations


def _check_unique_slots(allocations: tuple[MigAllocation, ...], error: Any) -> None:
    seen: set[tuple[int, int]] = set()
    for i, a in enumerate(allocations):
        key = (a.container_index, a.device_index)
        if key in seen:
            raise error(
                i, f"duplicate reservation for container {key[0]} device {key[1]}; expected one per device"
            )
        seen.add(key)


# ---------------------------------------------------------------------------------------------
# hami.io/bind-phase, hami.io/bind-time, hami.io/vgpu-time
# ---------------------------------------------------------------------------------------------


class BindPhase(enum.StrEnum):
    ALLOCATING = names.BIND_PHASE_ALLOCATING  # scheduler, at bind
    SUCCESS = names.BIND_PHASE_SUCCESS  # agent, after every container's Allocate
    FAILED = names.BIND_PHASE_FAILED  # agent, on any failure


def decode_bind_phase(value: str) -> BindPhase:
    try:
        return BindPhase(value)
    except ValueError:
        raise AnnotationError(
            names.BIND_PHASE, repr(value), "expected 'allocating', 'success' or 'failed'"
        ) from None


def encode_unix_time(moment: datetime | int) -> str:
    """Whole unix seconds, as HAMi writes `bind-time` and `vgpu-time`."""
    if isinstance(moment, datetime):
        return str(int(require_aware(moment, "time").timestamp()))
    return str(check_int(moment, 0, INT64_MAX, "unix time"))


def decode_unix_time(value: str, annotation: str = names.BIND_TIME) -> int:
    seconds = parse_go_int(value, 0, INT64_MAX)
    if seconds is None:
        raise AnnotationError(annotation, repr(value), "is not unix seconds; expected a non-negative integer")
    return seconds


__all__ = [
    "BindPhase",
    "ContainerDevice",
    "MigAllocation",
    "PodDevices",
    "decode_bind_phase",
    "decode_mig_allocations",
    "decode_pod_devices",
    "decode_unix_time",
    "encode_mig_allocations",
    "encode_pod_devices",
    "encode_unix_time",
    "erase_container",
    "next_pending_container",
]

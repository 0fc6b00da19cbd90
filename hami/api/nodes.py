"""Codecs of the node annotations: device registration, handshake, per-GPU cordon, and our
`hami.io/node-mig-instances` (the MIG instances that exist on a node).

Formats (hami-behaviour §1.5 and ARCHITECTURE §3):

- `hami.io/node-nvidia-register`: HAMi v2.8+ JSON, keys in Go struct order with omitempty
  (`id, index, count, devmem, devcore, type, numa, mode, migProfiles, health`; zero, false and
  empty values are left out), `migProfiles` only on `mode: "mig"` GPUs, each profile with HAMi's
  keys plus ours when set (`computeSlices`, `memorySlices`, `flags`). The v2.5-v2.7 colon form
  `id,count,devmem,devcore,type,numa,health[,index,mode]:` is decoded (7 fields: mode hami-core).
- `hami.io/node-handshake`: `Reported <Go time.String()>`, `Requesting_<YYYY-MM-DD hh:mm:ss>`,
  `Deleted_<YYYY-MM-DD hh:mm:ss>`.
- `hami.io/device-cordon`: comma list of GPU uuids.
- `hami.io/node-mig-instances` (ours): JSON array of
  `{gpuUUID, profile, placement{start,size}, gpuInstanceID, computeInstanceID, migUUID, state,
  pod | since}`; `state` is `in-use` (with `pod: "<ns>/<name>"`) or `idle` (with `since`, RFC3339).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hami.api import names
from hami.api._wire import (
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    UINT32_MAX,
    Fields,
    Placement,
    check_int,
    decode_placement,
    dump_json,
    format_rfc3339,
    load_json_array,
    parse_go_int,
    parse_rfc3339,
    require_aware,
)
from hami.api.errors import AnnotationError

# ---------------------------------------------------------------------------------------------
# hami.io/node-nvidia-register
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigProfileInfo:
    """One MIG profile a GPU offers, as the agent read it from NVML (HAMi v2.10 `migProfiles`).

    `memory_mb` is NVML's memorySizeMB (reported, not matched: see ARCHITECTURE §7), `core` the
    share of SMs in percent, `slice_count` the memory slices one instance spans, `placements`
    every legal start.
    """

    name: str
    memory_mb: int
    core: int
    slice_count: int
    placements: tuple[Placement, ...] = ()
    # Ours (HAMi ignores unknown keys), so a scheduler can place on a model its catalog lacks:
    compute_slices: int = 0  # `computeSlices`: the g of 3g.40gb (NVML's sliceCount)
    memory_slices: int = 0  # `memorySlices`: memory slices one instance spans
    flags: tuple[str, ...] = ()  # `flags`: "+me", "-me", "+me.all", "+gfx"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"MIG profile name must be a non-empty string, got {self.name!r}")
        check_int(self.memory_mb, 0, INT32_MAX, "memoryMB")
        check_int(self.core, 0, INT32_MAX, "core")
        check_int(self.slice_count, 0, UINT32_MAX, "sliceCount")
        check_int(self.compute_slices, 0, UINT32_MAX, "computeSlices")
        check_int(self.memory_slices, 0, UINT32_MAX, "memorySlices")
        object.__setattr__(self, "placements", tuple(self.placements))
        for placement in self.placements:
            if not isinstance(placement, Placement):
                raise ValueError(f"placements must be Placement values, got {placement!r}")
        object.__setattr__(self, "flags", tuple(self.flags))
        for flag in self.flags:
            if not isinstance(flag, str) or not flag:
                raise ValueError(f"flags must be non-empty strings such as '+me', got {flag!r}")

    def to_json(self) -> dict[str, Any]:
        # No omitempty on MigProfile in HAMi: every key of HAMi's is always written; ours only when set.
        out: dict[str, Any] = {
            "name": self.name,
            "memoryMB": self.memory_mb,
            "core": self.core,
            "sliceCount": self.slice_count,
            "placements": [p.to_json() for p in self.placements],
        }
        if self.compute_slices:
            out["computeSlices"] = self.compute_slices
        if self.memory_slices:
            out["memorySlices"] = self.memory_slices
        if self.flags:
            out["flags"] = list(self.flags)
        return out


@dataclass(frozen=True)
class NodeDevice:
    """One GPU of a node as registered by the agent (HAMi's DeviceInfo, scheduler-visible part).

    `mode` is `hami-core` or `mig` (HAMi also knows others, e.g. `mps`; kept verbatim). A JSON
    entry without `mode` decodes to "" exactly as HAMi does; the 7-field colon form means
    `hami-core`.
    """

    id: str
    index: int = 0
    count: int = 0
    devmem: int = 0  # MiB
    devcore: int = 0  # percent
    type: str = ""
    numa: int = 0
    mode: str = ""
    health: bool = False
    mig_profiles: tuple[MigProfileInfo, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"device id must be a non-empty string (the GPU uuid), got {self.id!r}")
        check_int(self.index, 0, INT64_MAX, "index")
        check_int(self.count, 0, INT32_MAX, "count")
        check_int(self.devmem, 0, INT32_MAX, "devmem")
        check_int(self.devcore, 0, INT32_MAX, "devcore")
        check_int(self.numa, INT64_MIN, INT64_MAX, "numa")
        if not isinstance(self.type, str) or not isinstance(self.mode, str):
            raise ValueError("type and mode must be strings")
        if not isinstance(self.health, bool):
            raise ValueError(f"health must be a bool, got {self.health!r}")
        object.__setattr__(self, "mig_profiles", tuple(self.mig_profiles))
        if self.mig_profiles and self.mode != names.MODE_MIG:
            raise ValueError(f"migProfiles are only valid on mode {names.MODE_MIG!r} GPUs, not {self.mode!r}")
        for profile in self.mig_profiles:
            if not isinstance(profile, MigProfileInfo):
                raise ValueError(f"mig_profiles must be MigProfileInfo values, got {profile!r}")

    @property
    def is_mig(self) -> bool:
        return self.mode == names.MODE_MIG

    def to_json(self) -> dict[str, Any]:
        """HAMi's omitempty rendering, in Go struct field order."""
        out: dict[str, Any] = {"id": self.id}
        for key, value in (
            ("index", self.index),
            ("count", self.count),
            ("devmem", self.devmem),
            ("devcore", self.devcore),
            ("type", self.type),
            ("numa", self.numa),
            ("mode", self.mode),
        ):
            if value:
                out[key] = value
        if self.mig_profiles:
            out["migProfiles"] = [p.to_json() for p in self.mig_profiles]
        if self.health:
            out["health"] = True
        return out


def encode_node_register(devices: Iterable[NodeDevice]) -> str:
    """The JSON device list the agent writes (HAMi v2.10 `MarshalNodeDevices` layout)."""
    devices = tuple(devices)
    _check_unique_ids(devices, lambda problem: ValueError(problem))
    return dump_json([d.to_json() for d in devices])


def decode_node_register(value: str) -> tuple[NodeDevice, ...]:
    """Either form: JSON (v2.8+) when the value starts with `[` (or `{`, to report it), else the
    colon form (v2.5-v2.7).

    An empty value means no devices. Duplicate GPU ids are rejected (HAMi does not check; two rows
    for one uuid would corrupt the scheduler's per-GPU state).
    """
    text = value.strip()
    if not text:
        return ()
    if text.startswith(("[", "{")) or text == "null":
        devices = _decode_register_json(text)
    else:
        devices = _decode_register_colon(text)

    def fail(problem: str) -> AnnotationError:
        return AnnotationError(names.NODE_REGISTER, "device list", problem)

    _check_unique_ids(devices, fail)
    return devices


def _check_unique_ids(devices: tuple[NodeDevice, ...], error: Any) -> None:
    seen: set[str] = set()
    for device in devices:
        if device.id in seen:
            raise error(f"GPU id {device.id!r} is listed twice; expected one entry per GPU")
        seen.add(device.id)


def _decode_register_json(text: str) -> tuple[NodeDevice, ...]:
    annotation = names.NODE_REGISTER
    out = []
    for i, raw in enumerate(load_json_array(text, annotation)):
        f = Fields(raw, annotation, f"device {i}")
        profiles = []
        for j, raw_profile in enumerate(f.list("migProfiles")):
            p = Fields(raw_profile, annotation, f"device {i} migProfiles[{j}]")
            placements = []
            for k, raw_placement in enumerate(p.list("placements")):
                q = Fields(raw_placement, annotation, f"device {i} migProfiles[{j}] placements[{k}]")
                placements.append(Placement(q.int("start", 0, UINT32_MAX), q.int("size", 0, UINT32_MAX)))
            profiles.append(
                _build(
                    MigProfileInfo,
                    p,
                    name=p.str("name", required=True),
                    memory_mb=p.int("memoryMB", 0, INT32_MAX),
                    core=p.int("core", 0, INT32_MAX),
                    slice_count=p.int("sliceCount", 0, UINT32_MAX),
                    placements=tuple(placements),
                    compute_slices=p.int("computeSlices", 0, UINT32_MAX),
                    memory_slices=p.int("memorySlices", 0, UINT32_MAX),
                    flags=tuple(_flags(p)),
                )
            )
        out.append(
            _build(
                NodeDevice,
                f,
                id=f.str("id", required=True),
                index=f.int("index", 0, INT64_MAX),
                count=f.int("count", 0, INT32_MAX),
                devmem=f.int("devmem", 0, INT32_MAX),
                devcore=f.int("devcore", 0, INT32_MAX),
                type=f.str("type"),
                numa=f.int("numa", INT64_MIN, INT64_MAX),
                mode=f.str("mode"),
                health=f.bool("health"),
                mig_profiles=tuple(profiles),
            )
        )
    return tuple(out)


def _flags(fields: Fields) -> list[str]:
    flags = fields.list("flags")
    for flag in flags:
        if not isinstance(flag, str):
            raise fields.fail(f"'flags' holds {flag!r}; expected strings such as \"+me\"")
    return flags


def _build(cls: Any, fields: Fields, **kwargs: Any) -> Any:
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise fields.fail(str(err)) from None


def _build_wire(cls: Any, fields: Fields, **kwargs: Any) -> Any:
    """`_build` for a type whose wire form needs more than the type itself (`check_wire`)."""
    obj = _build(cls, fields, **kwargs)
    try:
        obj.check_wire()
    except ValueError as err:
        raise fields.fail(str(err)) from None
    return obj


_COLON_HELP = "expected 'id,count,devmem,devcore,type,numa,health[,index,mode]:'"


def _decode_register_colon(text: str) -> tuple[NodeDevice, ...]:
    annotation = names.NODE_REGISTER
    if ":" not in text:
        raise AnnotationError(
            annotation, repr(text), f"neither a JSON array nor a ':'-terminated list; {_COLON_HELP}"
        )
    out = []
    for i, segment in enumerate(s for s in text.split(":") if s):
        part = f"device {i} {segment!r}"
        items = segment.split(",")
        if len(items) not in (7, 9):
            raise AnnotationError(annotation, part, f"has {len(items)} fields; {_COLON_HELP}")

        def number(field: int, what: str, lo: int, hi: int, *, items=items, part=part) -> int:
            parsed = parse_go_int(items[field], lo, hi)
            if parsed is None:
                raise AnnotationError(
                    annotation, part, f"{what} {items[field]!r} is not an integer {lo}..{hi}"
                )
            return parsed

        health = _GO_BOOL.get(items[6])
        if health is None:
            raise AnnotationError(
                annotation, part, f"health {items[6]!r} is not a boolean; expected true or false"
            )
        device = dict(
            id=items[0],
            count=number(1, "count", 0, INT32_MAX),
            devmem=number(2, "devmem", 0, INT32_MAX),
            devcore=number(3, "devcore", 0, INT32_MAX),
            type=items[4],
            numa=number(5, "numa", INT64_MIN, INT64_MAX),
            health=health,
            index=number(7, "index", 0, INT64_MAX) if len(items) == 9 else 0,
            mode=items[8] if len(items) == 9 else names.MODE_HAMI_CORE,
        )
        try:
            out.append(NodeDevice(**device))
        except ValueError as err:
            raise AnnotationError(annotation, part, str(err)) from None
    return tuple(out)


# strconv.ParseBool
_GO_BOOL = {s: True for s in ("1", "t", "T", "TRUE", "true", "True")} | {
    s: False for s in ("0", "f", "F", "FALSE", "false", "False")
}

# ---------------------------------------------------------------------------------------------
# hami.io/node-handshake
# ---------------------------------------------------------------------------------------------


class HandshakeKind(enum.StrEnum):
    REPORTED = "Reported"  # agent: alive (v2.5-v2.7 refresh every 30 s)
    REQUESTING = "Requesting"  # scheduler: "prove you are alive"
    DELETED = "Deleted"  # scheduler (v2.5): the node's devices were dropped


_GO_DATETIME = "%Y-%m-%d %H:%M:%S"  # Go's time.DateTime
_GO_TIME_STRING = re.compile(
    r"(?P<dt>[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]+))? (?P<off>[+-][0-9]{4})"
)


@dataclass(frozen=True)
class Handshake:
    """A handshake value: who spoke last and when (the timestamp is kept verbatim)."""

    kind: HandshakeKind
    timestamp: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", HandshakeKind(self.kind))
        if not isinstance(self.timestamp, str):
            raise ValueError(f"handshake timestamp must be a string, got {self.timestamp!r}")

    @classmethod
    def reported(cls, now: datetime) -> Handshake:
        """The agent's value, timestamped like Go's `time.Time.String()`."""
        return cls(HandshakeKind.REPORTED, _go_time_string(require_aware(now, "now")))

    @classmethod
    def requesting(cls, now: datetime) -> Handshake:
        """The scheduler's value; HAMi writes the wall clock as `YYYY-MM-DD hh:mm:ss`."""
        return cls(HandshakeKind.REQUESTING, now.strftime(_GO_DATETIME))

    @classmethod
    def deleted(cls, now: datetime) -> Handshake:
        return cls(HandshakeKind.DELETED, now.strftime(_GO_DATETIME))

    def time(self) -> datetime | None:
        """The timestamp as a datetime, None when unreadable.

        Requesting/Deleted carry a wall-clock time without zone (HAMi reads it in the
        scheduler's local zone): a naive datetime. Reported carries an offset: an aware one.
        """
        if self.kind is HandshakeKind.REPORTED:
            match = _GO_TIME_STRING.match(self.timestamp)
            if not match:
                return None
            frac = (match.group("frac") or "")[:6].ljust(6, "0")
            try:
                text = f"{match.group('dt')}.{frac} {match.group('off')}"
                return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f %z")
            except ValueError:
                return None
        try:
            return datetime.strptime(self.timestamp, _GO_DATETIME)
        except ValueError:
            return None


def _go_time_string(moment: datetime) -> str:
    """Go's `time.Time.String()` without the monotonic reading: `2006-01-02 15:04:05.999999999 -0700 MST`."""
    text = moment.strftime(_GO_DATETIME)
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.strftime("%z")
    zone = moment.tzname() or offset
    if moment.utcoffset() == timedelta(0) and moment.tzinfo is UTC:
        zone = "UTC"
    return f"{text} {offset} {zone}"


def encode_handshake(handshake: Handshake) -> str:
    if handshake.kind is HandshakeKind.REPORTED:
        return f"Reported {handshake.timestamp}"
    return f"{handshake.kind.value}_{handshake.timestamp}"


def decode_handshake(value: str) -> Handshake:
    for kind, prefix in (
        (HandshakeKind.REPORTED, "Reported "),
        (HandshakeKind.REQUESTING, "Requesting_"),
        (HandshakeKind.DELETED, "Deleted_"),
    ):
        if value.startswith(prefix):
            return Handshake(kind, value[len(prefix) :])
    raise AnnotationError(
        names.NODE_HANDSHAKE,
        repr(value),
        "expected 'Reported <time>', 'Requesting_<time>' or 'Deleted_<time>'",
    )


# ---------------------------------------------------------------------------------------------
# hami.io/device-cordon
# ---------------------------------------------------------------------------------------------


def decode_device_cordon(value: str) -> tuple[str, ...]:
    """GPU uuids to skip: comma list, blanks trimmed, empty items and repeats dropped."""
    out: dict[str, None] = {}
    for item in value.split(","):
        item = item.strip()
        if item:
            out[item] = None
    return tuple(out)


def encode_device_cordon(uuids: Iterable[str]) -> str:
    out: dict[str, None] = {}
    for uuid in uuids:
        if not isinstance(uuid, str) or not uuid.strip() or "," in uuid or uuid != uuid.strip():
            raise ValueError(f"cordoned GPU uuid {uuid!r} must be non-empty, without commas or blanks")
        out[uuid] = None
    return ",".join(out)


# ---------------------------------------------------------------------------------------------
# hami.io/node-mig-instances (ours)
# ---------------------------------------------------------------------------------------------


class InstanceState(enum.StrEnum):
    IN_USE = "in-use"  # serves a live pod
    IDLE = "idle"  # exists, no pod: reusable by the next decision, reclaimable


_MIG_UUID = re.compile(r"MIG-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class RealisedInstance:
    """A MIG instance (one GI with its CI) on a GPU: the one type the agent writes, the cache
    decodes and the engine folds (ARCHITECTURE §3, §4).

    The wire form needs every field (`check_wire`). The engine also holds instances known by
    their placement only: one a pod released that the agent has not reported yet, or one a test
    builds (`expected`); those carry no ids (None) and no `pod` name or `since` time, and the
    encoder refuses them.
    """

    gpu_uuid: str
    profile: str
    placement: Placement
    gpu_instance_id: int | None
    compute_instance_id: int | None
    mig_uuid: str | None
    state: InstanceState
    pod: str | None = None  # "<namespace>/<name>", in-use only (for people)
    since: datetime | None = None  # when it became idle, idle only
    pod_uid: str | None = None  # the pod's uid, in-use only: the identity that matches an instance to its pod

    def __post_init__(self) -> None:
        if not isinstance(self.gpu_uuid, str) or not self.gpu_uuid:
            raise ValueError(f"gpuUUID must be a non-empty string, got {self.gpu_uuid!r}")
        if not isinstance(self.profile, str) or not self.profile:
            raise ValueError(f"profile must be a non-empty string, got {self.profile!r}")
        if not isinstance(self.placement, Placement) or self.placement.size == 0:
            raise ValueError(f"placement must be a Placement of size >= 1, got {self.placement!r}")
        if self.gpu_instance_id is not None:
            check_int(self.gpu_instance_id, 0, UINT32_MAX, "gpuInstanceID")
        if self.compute_instance_id is not None:
            check_int(self.compute_instance_id, 0, UINT32_MAX, "computeInstanceID")
        if self.mig_uuid is not None and (not isinstance(self.mig_uuid, str) or not _MIG_UUID.fullmatch(self.mig_uuid)):
            raise ValueError(f"migUUID {self.mig_uuid!r} is not 'MIG-' followed by a uuid")
        try:
            object.__setattr__(self, "state", InstanceState(self.state))
        except ValueError:
            raise ValueError(f"state {self.state!r} is not 'in-use' or 'idle'") from None
        if self.state is InstanceState.IN_USE:
            if self.pod is not None and (not isinstance(self.pod, str) or self.pod.count("/") != 1
                                         or "" in self.pod.split("/")):
                raise ValueError(f"pod {self.pod!r} is not '<namespace>/<name>'")
            if self.since is not None:
                raise ValueError("since is only written for idle instances")
            if self.pod_uid is not None and (not isinstance(self.pod_uid, str) or not self.pod_uid):
                raise ValueError(f"podUID must be a non-empty string, got {self.pod_uid!r}")
        else:
            if self.pod is not None:
                raise ValueError("pod is only written for in-use instances")
            if self.pod_uid is not None:
                raise ValueError("podUID is only written for in-use instances")
            if self.since is not None:
                require_aware(self.since, "since")

    @classmethod
    def expected(cls, gpu_uuid: str, profile: str, placement: Placement, *, in_use: bool = False,
                 pod_uid: str | None = None) -> RealisedInstance:
        """An instance known by its placement only (no NVML ids yet): the engine's view of one
        a pod released before the agent reports it, and what tests feed the engine."""
        return cls(gpu_uuid, profile, placement, None, None, None,
                   InstanceState.IN_USE if in_use else InstanceState.IDLE, pod_uid=pod_uid)

    @property
    def start(self) -> int:
        return self.placement.start

    @property
    def in_use(self) -> bool:
        return self.state is InstanceState.IN_USE

    def check_wire(self) -> None:
        """ValueError unless every field `hami.io/node-mig-instances` requires is present."""
        missing = [name for name, value in (("gpuInstanceID", self.gpu_instance_id),
                                            ("computeInstanceID", self.compute_instance_id),
                                            ("migUUID", self.mig_uuid)) if value is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)} missing: only an instance the agent found in NVML is written")
        if self.state is InstanceState.IN_USE and self.pod is None:
            raise ValueError("an in-use instance needs pod '<namespace>/<name>'")
        if self.state is InstanceState.IDLE and self.since is None:
            raise ValueError("an idle instance needs since (RFC3339 time it became idle)")

    def to_json(self) -> dict[str, Any]:
        self.check_wire()
        out: dict[str, Any] = {
            "gpuUUID": self.gpu_uuid,
            "profile": self.profile,
            "placement": self.placement.to_json(),
            "gpuInstanceID": self.gpu_instance_id,
            "computeInstanceID": self.compute_instance_id,
            "migUUID": self.mig_uuid,
            "state": self.state.value,
        }
        if self.state is InstanceState.IN_USE:
            out["pod"] = self.pod
            if self.pod_uid is not None:
                out["podUID"] = self.pod_uid
        else:
            out["since"] = format_rfc3339(self.since)
        return out


def encode_node_mig_instances(instances: Iterable[RealisedInstance]) -> str:
    instances = tuple(instances)
    for inst in instances:
        inst.check_wire()
    problem = _instances_conflict(instances)
    if problem:
        raise ValueError(problem[1])
    return dump_json([i.to_json() for i in instances])


def decode_node_mig_instances(value: str) -> tuple[RealisedInstance, ...]:
    """Decode and validate; an empty value means no instances."""
    annotation = names.NODE_MIG_INSTANCES
    if not value.strip():
        return ()
    out = []
    for i, raw in enumerate(load_json_array(value, annotation)):
        f = Fields(raw, annotation, f"instance {i}")
        since_text = f.str("since")
        since = None
        if since_text:
            since = parse_rfc3339(since_text)
            if since is None:
                raise f.fail(f"since {since_text!r} is not an RFC3339 time (e.g. 2024-05-01T12:00:00Z)")
        out.append(
            _build_wire(
                RealisedInstance,
                f,
                gpu_uuid=f.str("gpuUUID", required=True),
                profile=f.str("profile", required=True),
                placement=decode_placement(f),
                gpu_instance_id=f.int("gpuInstanceID", 0, UINT32_MAX, required=True),
                compute_instance_id=f.int("computeInstanceID", 0, UINT32_MAX, required=True),
                mig_uuid=f.str("migUUID", required=True),
                state=f.str("state", required=True),
                pod=f.str("pod") or None,
                since=since,
                pod_uid=f.str("podUID") or None,
            )
        )
    instances = tuple(out)
    problem = _instances_conflict(instances)
    if problem:
        raise AnnotationError(annotation, f"instance {problem[0]}", problem[1])
    return instances


def _instances_conflict(instances: tuple[RealisedInstance, ...]) -> tuple[int, str] | None:
    """Duplicate MIG uuid or (GPU, GI, CI), or two GPU instances on overlapping slices."""
    seen_uuid: dict[str, int] = {}
    seen_ids: dict[tuple[str, int, int], int] = {}
    for i, inst in enumerate(instances):
        if inst.mig_uuid in seen_uuid:
            return i, f"migUUID {inst.mig_uuid} repeats instance {seen_uuid[inst.mig_uuid]}"
        seen_uuid[inst.mig_uuid] = i
        key = (inst.gpu_uuid, inst.gpu_instance_id, inst.compute_instance_id)
        if key in seen_ids:
            return i, f"GPU {key[0]} GI {key[1]} CI {key[2]} repeats instance {seen_ids[key]}"
        seen_ids[key] = i
        for j, other in enumerate(instances[:i]):
            if (
                other.gpu_uuid == inst.gpu_uuid
                and other.gpu_instance_id != inst.gpu_instance_id
                and other.placement.overlaps(inst.placement)
            ):
                return i, (
                    f"placement {inst.placement.start}+{inst.placement.size} overlaps instance {j} "
                    f"(GI {other.gpu_instance_id}) on GPU {inst.gpu_uuid}"
                )
    return None


__all__ = [
    "Handshake",
    "HandshakeKind",
    "InstanceState",
    "MigProfileInfo",
    "NodeDevice",
    "RealisedInstance",
    "decode_device_cordon",
    "decode_handshake",
    "decode_node_mig_instances",
    "decode_node_register",
    "encode_device_cordon",
    "encode_handshake",
    "encode_node_mig_instances",
    "encode_node_register",
]

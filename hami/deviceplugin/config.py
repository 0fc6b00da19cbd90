"""Node config: HAMi's `hami-device-plugin` ConfigMap (`config.json`: `{"nodeconfig": [...]}`)
merged over the `nvidia:` defaults of the device config, validated at load.

The entry whose `name` equals this node's name applies (reference hami-behaviour §2.4); keys are
HAMi's lower-case ones. Beyond HAMi, `devicemodes` sets the operating mode per GPU, so MIG and
hami-core GPUs can share a node:

    {"nodeconfig": [{"name": "gpu-7", "operatingmode": "hami-core",
                     "devicemodes": [{"index": [0, 1], "operatingmode": "mig"}],
                     "filterdevices": {"uuid": [], "index": [7]}}]}

Keys HAMi defines but this agent does not use (`migstrategy`, `enablenumatopology`, …) are
accepted and logged; unknown keys are logged as warnings (a typo should be visible); a value of
the wrong type or range raises `NodeConfigError` naming the entry and the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hami.api import names
from hami.devices import NvidiaConfig

log = logging.getLogger(__name__)

MODES = (names.MODE_HAMI_CORE, names.MODE_MIG)
_HAMI_UNUSED = {"migstrategy", "enablenumatopology"}


class NodeConfigError(ValueError):
    """The node config cannot be used as written; the message names the entry, key and fix."""


@dataclass(frozen=True)
class DeviceSelector:
    """GPUs named by uuid or by NVML index (HAMi's `filterdevices` shape)."""

    uuids: frozenset[str] = frozenset()
    indices: frozenset[int] = frozenset()

    def matches(self, uuid: str, index: int) -> bool:
        return uuid in self.uuids or index in self.indices

    def __bool__(self) -> bool:
        return bool(self.uuids or self.indices)


@dataclass(frozen=True)
class NodeConfig:
    """What this node's agent does with its GPUs. Defaults are HAMi's."""

    name: str = ""
    operating_mode: str = names.MODE_HAMI_CORE
    """`hami-core` or `mig`: the mode of every GPU no `device_modes` entry names."""
    device_modes: tuple[tuple[DeviceSelector, str], ...] = ()
    """Ours: (GPUs, mode) pairs; the first that names a GPU decides its mode."""
    device_split_count: int = 10
    """Tasks that may share one hami-core GPU (its replicas in ListAndWatch)."""
    device_memory_scaling: float = 1.0
    """Advertised hami-core memory = NVML total × this; > 1 sets CUDA_OVERSUBSCRIBE."""
    device_core_scaling: float = 1.0
    """Advertised hami-core cores = 100 × this."""
    preconfigured_device_memory: int = 0
    """MiB to register when NVML cannot tell the memory (unified-memory parts); 0 = none."""
    filter_devices: DeviceSelector = field(default_factory=DeviceSelector)
    """GPUs not registered and not advertised to kubelet."""
    enable_get_preferred_allocation: bool = True
    """Steer kubelet to the decided GPUs' device IDs. HAMi's default is off; ours on, because
    kubelet's own choice is arbitrary (the IDs only feed a count check here either way)."""
    libcuda_log_level: int | None = None
    """LIBCUDA_LOG_LEVEL for hami-core containers; None leaves it out."""
    disable_core_limit: bool = False
    """GPU_CORE_UTILIZATION_POLICY=disable for hami-core containers."""

    def mode_of(self, uuid: str, index: int) -> str:
        for selector, mode in self.device_modes:
            if selector.matches(uuid, index):
                return mode
        return self.operating_mode

    def filtered(self, uuid: str, index: int) -> bool:
        return self.filter_devices.matches(uuid, index)


def defaults_from(nvidia: NvidiaConfig, node_name: str = "") -> NodeConfig:
    """The node config when no entry names this node: the device config's `nvidia:` defaults."""
    return NodeConfig(
        name=node_name,
        device_split_count=nvidia.device_split_count,
        device_memory_scaling=nvidia.device_memory_scaling,
        device_core_scaling=nvidia.device_core_scaling,
    )


def load_node_config(text: str | bytes | Mapping[str, Any] | None, node_name: str, base: NodeConfig) -> NodeConfig:
    """The entry of `text` (the ConfigMap's `config.json`) for `node_name` merged over `base`;
    `base` itself when no entry names the node. Raises NodeConfigError."""
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        return replace(base, name=node_name)
    if isinstance(text, Mapping):
        data: Any = text
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NodeConfigError(
                f"node config is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
                'expected {"nodeconfig": [{"name": "<node>", ...}]}'
            ) from None
    if not isinstance(data, Mapping):
        raise NodeConfigError(f'node config: expected a JSON object {{"nodeconfig": [...]}}, got {_type(data)}')
    entries = data.get("nodeconfig")
    if entries is None:
        return replace(base, name=node_name)
    if not isinstance(entries, list):
        raise NodeConfigError(f"node config: nodeconfig must be a list of node entries, got {_type(entries)}")
    chosen: tuple[int, Mapping[str, Any]] | None = None
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise NodeConfigError(f"node config: nodeconfig[{i}] must be an object, got {_type(entry)}")
        if entry.get("name") == node_name:
            if chosen is not None:
                raise NodeConfigError(
                    f"node config: nodeconfig[{chosen[0]}] and nodeconfig[{i}] both name node {node_name!r}; "
                    "keep one entry per node"
                )
            chosen = (i, entry)
    if chosen is None:
        return replace(base, name=node_name)
    return _merge(chosen[1], f"nodeconfig[{chosen[0]}] (node {node_name})", replace(base, name=node_name))


def _merge(entry: Mapping[str, Any], where: str, base: NodeConfig) -> NodeConfig:
    values: dict[str, Any] = {}
    for key, value in entry.items():
        at = f"node config: {where}.{key}"
        if key == "name":
            continue
        if value is None:
            continue
        if key == "operatingmode":
            values["operating_mode"] = _mode(value, at)
        elif key == "devicemodes":
            values["device_modes"] = _device_modes(value, at)
        elif key == "devicesplitcount":
            values["device_split_count"] = _int(value, at, 1, 10_000, "the number of tasks sharing one GPU")
        elif key == "devicememoryscaling":
            values["device_memory_scaling"] = _positive(value, at, "a factor > 0 (1 = the real memory)")
        elif key == "devicecorescaling":
            values["device_core_scaling"] = _positive(value, at, "a factor > 0 (1 = 100 % cores)")
        elif key == "preconfigureddevicememory":
            values["preconfigured_device_memory"] = _int(value, at, 0, 2**31 - 1, "MiB")
        elif key == "filterdevices":
            values["filter_devices"] = _selector(value, at)
        elif key == "enablegetpreferredallocation":
            values["enable_get_preferred_allocation"] = _bool(value, at)
        elif key == "libcudaloglevel":
            values["libcuda_log_level"] = _int(value, at, 0, 100, "a log level (0-4)")
        elif key == "disablecorelimit":
            values["disable_core_limit"] = _bool(value, at)
        elif key in _HAMI_UNUSED:
            log.info("%s is a HAMi setting this agent does not use; ignored", at)
        else:
            log.warning("%s is not a known node config key; ignored", at)
    return replace(base, **values)


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _mode(value: Any, at: str) -> str:
    if value not in MODES:
        extra = " (mps is not implemented)" if value == "mps" else ""
        raise NodeConfigError(f"{at}: {value!r} is not an operating mode{extra}; write one of {', '.join(MODES)}")
    return str(value)


def _int(value: Any, at: str, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise NodeConfigError(f"{at}: expected an integer ({what}), got {value!r}")
    if not lo <= value <= hi:
        raise NodeConfigError(f"{at}: {value} is out of range {lo}..{hi} ({what})")
    return int(value)


def _positive(value: Any, at: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise NodeConfigError(f"{at}: expected {what}, got {value!r}")
    return float(value)


def _bool(value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise NodeConfigError(f"{at}: expected true or false, got {value!r}")
    return value


def _selector(value: Any, at: str, *, extra: frozenset[str] = frozenset()) -> DeviceSelector:
    if not isinstance(value, Mapping):
        raise NodeConfigError(f'{at}: expected {{"uuid": [...], "index": [...]}}, got {_type(value)}')
    unknown = set(value) - {"uuid", "index"} - extra
    if unknown:
        raise NodeConfigError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}; GPUs are named by uuid or index")
    uuids = value.get("uuid") or []
    indices = value.get("index") or []
    if not isinstance(uuids, list) or not all(isinstance(u, str) and u.strip() for u in uuids):
        raise NodeConfigError(f"{at}.uuid: expected a list of GPU uuids (GPU-…), got {uuids!r}")
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                for i in indices):
        raise NodeConfigError(f"{at}.index: expected a list of GPU indices (integers ≥ 0), got {indices!r}")
    return DeviceSelector(frozenset(u.strip() for u in uuids), frozenset(indices))


def _device_modes(value: Any, at: str) -> tuple[tuple[DeviceSelector, str], ...]:
    fix = 'write [{"index": [0, 1], "operatingmode": "mig"}, {"uuid": ["GPU-…"], "operatingmode": "hami-core"}]'
    if not isinstance(value, list):
        raise NodeConfigError(f"{at}: expected a list; {fix}")
    out = []
    for i, item in enumerate(value):
        here = f"{at}[{i}]"
        if not isinstance(item, Mapping) or "operatingmode" not in item:
            raise NodeConfigError(f"{here}: each entry names GPUs and an operatingmode; {fix}")
        selector = _selector(item, here, extra=frozenset({"operatingmode"}))
        if not selector:
            raise NodeConfigError(f"{here}: names no GPU; give uuid or index")
        out.append((selector, _mode(item["operatingmode"], f"{here}.operatingmode")))
    return tuple(out)


__all__ = ["MODES", "DeviceSelector", "NodeConfig", "NodeConfigError", "defaults_from", "load_node_config"]

"""Every annotation codec in one import: `from hami.api.codecs import decode_pod_devices`.

The codecs live in `nodes` (register, handshake, cordon, realised MIG instances), `lock` (node
lock) and `allocations` (device string, MIG reservations, bind phase, unix times); this module
only gathers them. Decoders raise `AnnotationError`; encoders write the current form and raise
`ValueError` for values that could not be decoded again.
"""

from __future__ import annotations

from hami.api._wire import Placement, format_rfc3339, parse_rfc3339
from hami.api.allocations import (
    BindPhase,
    ContainerDevice,
    MigAllocation,
    PodDevices,
    decode_bind_phase,
    decode_mig_allocations,
    decode_pod_devices,
    decode_unix_time,
    encode_mig_allocations,
    encode_pod_devices,
    encode_unix_time,
    erase_container,
    next_pending_container,
)
from hami.api.lock import NodeLock, decode_node_lock, encode_node_lock
from hami.api.nodes import (
    Handshake,
    HandshakeKind,
    InstanceState,
    MigProfileInfo,
    NodeDevice,
    RealisedInstance,
    decode_device_cordon,
    decode_handshake,
    decode_node_mig_instances,
    decode_node_register,
    encode_device_cordon,
    encode_handshake,
    encode_node_mig_instances,
    encode_node_register,
)

__all__ = [
    "BindPhase",
    "ContainerDevice",
    "Handshake",
    "HandshakeKind",
    "InstanceState",
    "MigAllocation",
    "MigProfileInfo",
    "NodeDevice",
    "NodeLock",
    "Placement",
    "PodDevices",
    "RealisedInstance",
    "decode_bind_phase",
    "decode_device_cordon",
    "decode_handshake",
    "decode_mig_allocations",
    "decode_node_lock",
    "decode_node_mig_instances",
    "decode_node_register",
    "decode_pod_devices",
    "decode_unix_time",
    "encode_device_cordon",
    "encode_handshake",
    "encode_mig_allocations",
    "encode_node_lock",
    "encode_node_mig_instances",
    "encode_node_register",
    "encode_pod_devices",
    "encode_unix_time",
    "erase_container",
    "format_rfc3339",
    "next_pending_container",
    "parse_rfc3339",
]

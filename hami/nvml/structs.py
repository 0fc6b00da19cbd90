"""ctypes mirrors of the NVML structs we use, field for field (reference §B.3–B.4), and constants.

Versioned structs stamp their version word in `__init__` (`sizeof | version << 24`); the
`VERSION_*` words are checked against the sizes at import. Nothing here leaves the package: the
binding converts every struct into a frozen dataclass (`results`).
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_uint, c_ulonglong, c_void_p

# Handles are opaque pointers (nvmlDevice_t, nvmlGpuInstance_t, nvmlComputeInstance_t).
Handle = c_void_p

DEVICE_MIG_DISABLE = 0
DEVICE_MIG_ENABLE = 1
GPU_INSTANCE_PROFILE_COUNT = 0x12
COMPUTE_INSTANCE_PROFILE_COUNT = 0x9
COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0x0
GPU_INSTANCE_PROFILE_CAPS_P2P = 0x1
GPU_INSTANCE_PROFILE_CAPS_GFX = 0x2
COMPUTE_INSTANCE_PROFILE_CAPS_GFX = 0x1
NO_INSTANCE_ID = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of a process when MIG is off
VALUE_NOT_AVAILABLE_ULL = 0xFFFFFFFFFFFFFFFF

DEVICE_NAME_V2_BUFFER_SIZE = 96
DEVICE_UUID_V2_BUFFER_SIZE = 96
SYSTEM_DRIVER_VERSION_BUFFER_SIZE = 80

# NVML_COMPUTE_INSTANCE_PROFILE_* by compute slices of the instance
COMPUTE_INSTANCE_PROFILE_BY_SLICES = {1: 0x0, 2: 0x1, 3: 0x2, 4: 0x3, 7: 0x4, 8: 0x5, 6: 0x6}


def _version(struct: type[ctypes.Structure], v: int) -> int:
    return ctypes.sizeof(struct) | v << 24


class GpuInstancePlacement(ctypes.Structure):
    _fields_ = [("start", c_uint), ("size", c_uint)]


class ComputeInstancePlacement(ctypes.Structure):
    _fields_ = [("start", c_uint), ("size", c_uint)]


_GI_COUNTS = [
    ("sliceCount", c_uint),
    ("instanceCount", c_uint),
    ("multiprocessorCount", c_uint),
    ("copyEngineCount", c_uint),
    ("decoderCount", c_uint),
    ("encoderCount", c_uint),
    ("jpegCount", c_uint),
    ("ofaCount", c_uint),
]


class GpuInstanceProfileInfo(ctypes.Structure):
    """nvmlGpuInstanceProfileInfo_t (v1, unversioned)."""

    _fields_ = [("id", c_uint), ("isP2pSupported", c_uint), *_GI_COUNTS, ("memorySizeMB", c_ulonglong)]


class GpuInstanceProfileInfoV2(ctypes.Structure):
    _fields_ = [
        ("version", c_uint),
        ("id", c_uint),
        ("isP2pSupported", c_uint),
        *_GI_COUNTS,
        ("memorySizeMB", c_ulonglong),
        ("name", c_char * 96),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.version = VERSION_GPU_INSTANCE_PROFILE_INFO_V2


class GpuInstanceProfileInfoV3(ctypes.Structure):
    _fields_ = [
        ("version", c_uint),
        ("id", c_uint),
        *_GI_COUNTS,
        ("memorySizeMB", c_ulonglong),
        ("name", c_char * 96),
        ("capabilities", c_uint),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.version = VERSION_GPU_INSTANCE_PROFILE_INFO_V3


class GpuInstanceInfo(ctypes.Structure):
    _fields_ = [("device", Handle), ("id", c_uint), ("profileId", c_uint), ("placement", GpuInstancePlacement)]


_CI_COUNTS = [
    ("id", c_uint),
    ("sliceCount", c_uint),
    ("instanceCount", c_uint),
    ("multiprocessorCount", c_uint),
    ("sharedCopyEngineCount", c_uint),
    ("sharedDecoderCount", c_uint),
    ("sharedEncoderCount", c_uint),
    ("sharedJpegCount", c_uint),
    ("sharedOfaCount", c_uint),
]


class ComputeInstanceProfileInfo(ctypes.Structure):
    """nvmlComputeInstanceProfileInfo_t (v1, unversioned)."""

    _fields_ = _CI_COUNTS


class ComputeInstanceProfileInfoV2(ctypes.Structure):
    _fields_ = [("version", c_uint), *_CI_COUNTS, ("name", c_char * 96)]

    def __init__(self) -> None:
        super().__init__()
        self.version = VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V2


class ComputeInstanceProfileInfoV3(ctypes.Structure):
    _fields_ = [("version", c_uint), *_CI_COUNTS, ("name", c_char * 96), ("capabilities", c_uint)]

    def __init__(self) -> None:
        super().__init__()
        self.version = VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V3


class ComputeInstanceInfo(ctypes.Structure):
    _fields_ = [
        ("device", Handle),
        ("gpuInstance", Handle),
        ("id", c_uint),
        ("profileId", c_uint),
        ("placement", ComputeInstancePlacement),
    ]


class Memory(ctypes.Structure):
    """nvmlMemory_t (bytes)."""

    _fields_ = [("total", c_ulonglong), ("free", c_ulonglong), ("used", c_ulonglong)]


class MemoryV2(ctypes.Structure):
    _fields_ = [
        ("version", c_uint),
        ("total", c_ulonglong),
        ("reserved", c_ulonglong),
        ("free", c_ulonglong),
        ("used", c_ulonglong),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.version = VERSION_MEMORY_V2


class PciInfo(ctypes.Structure):
    """nvmlPciInfo_t as filled by nvmlDeviceGetPciInfo_v3."""

    _fields_ = [
        ("busIdLegacy", c_char * 16),
        ("domain", c_uint),
        ("bus", c_uint),
        ("device", c_uint),
        ("pciDeviceId", c_uint),
        ("pciSubSystemId", c_uint),
        ("busId", c_char * 32),
    ]


class ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t (= _v2_t), as filled by nvmlDeviceGetComputeRunningProcesses_v3."""

    _fields_ = [
        ("pid", c_uint),
        ("usedGpuMemory", c_ulonglong),
        ("gpuInstanceId", c_uint),
        ("computeInstanceId", c_uint),
    ]


class ProcessInfoV1(ctypes.Structure):
    """nvmlProcessInfo_v1_t, as filled by the unversioned nvmlDeviceGetComputeRunningProcesses."""

    _fields_ = [("pid", c_uint), ("usedGpuMemory", c_ulonglong)]


VERSION_GPU_INSTANCE_PROFILE_INFO_V2 = _version(GpuInstanceProfileInfoV2, 2)
VERSION_GPU_INSTANCE_PROFILE_INFO_V3 = _version(GpuInstanceProfileInfoV3, 3)
VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V2 = _version(ComputeInstanceProfileInfoV2, 2)
VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V3 = _version(ComputeInstanceProfileInfoV3, 3)
VERSION_MEMORY_V2 = _version(MemoryV2, 2)

# The words NVML's header defines for x86-64; a layout mistake above fails at import, not on a GPU.
_EXPECTED = {
    "VERSION_GPU_INSTANCE_PROFILE_INFO_V2": (VERSION_GPU_INSTANCE_PROFILE_INFO_V2, 0x02000098),
    "VERSION_GPU_INSTANCE_PROFILE_INFO_V3": (VERSION_GPU_INSTANCE_PROFILE_INFO_V3, 0x03000098),
    "VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V2": (VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V2, 0x02000088),
    "VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V3": (VERSION_COMPUTE_INSTANCE_PROFILE_INFO_V3, 0x0300008C),
    "VERSION_MEMORY_V2": (VERSION_MEMORY_V2, 0x02000028),
}
for _name, (_got, _want) in _EXPECTED.items():
    if ctypes.sizeof(c_void_p) == 8 and _got != _want:  # pragma: no cover - layout guard
        raise ImportError(f"{_name} is {_got:#010x}, NVML defines {_want:#010x}: a struct layout is wrong")

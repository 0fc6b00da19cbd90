"""Every NVML function the binding calls, as data: name → (argtypes, restype).

`Nvml` applies argtypes, restype and its `errcheck` when it first resolves a symbol, so ctypes
checks every argument and no integer or pointer is converted by guesswork. Functions returning
`nvmlReturn_t` (restype `RETURN`) get the errcheck that raises `errors.NvmlError` subclasses.
Unversioned names that NVML's header maps to a suffixed symbol are listed by the suffixed name
(reference §B.1): a ctypes binding must call `nvmlInit_v2`, not `nvmlInit`. The older symbols
are listed too, for `FALLBACKS`: what the binding calls when a driver lacks the newer one.
"""

from __future__ import annotations

from ctypes import POINTER, c_char_p, c_int, c_uint, c_void_p

from hami.nvml import structs as s

RETURN = c_int  # nvmlReturn_t
H = s.Handle
UINT_P = POINTER(c_uint)
HANDLE_P = POINTER(H)

SIGNATURES: dict[str, tuple[tuple[type, ...], type | None]] = {
    # init / system
    "nvmlInit_v2": ((), RETURN),
    "nvmlInit": ((), RETURN),
    "nvmlInitWithFlags": ((c_uint,), RETURN),
    "nvmlShutdown": ((), RETURN),
    "nvmlErrorString": ((c_int,), c_char_p),
    "nvmlSystemGetDriverVersion": ((c_char_p, c_uint), RETURN),
    # enumeration and identity
    "nvmlDeviceGetCount_v2": ((UINT_P,), RETURN),
    "nvmlDeviceGetCount": ((UINT_P,), RETURN),
    "nvmlDeviceGetHandleByIndex_v2": ((c_uint, HANDLE_P), RETURN),
    "nvmlDeviceGetHandleByIndex": ((c_uint, HANDLE_P), RETURN),
    "nvmlDeviceGetHandleByUUID": ((c_char_p, HANDLE_P), RETURN),
    "nvmlDeviceGetName": ((H, c_char_p, c_uint), RETURN),
    "nvmlDeviceGetUUID": ((H, c_char_p, c_uint), RETURN),
    "nvmlDeviceGetMemoryInfo": ((H, POINTER(s.Memory)), RETURN),
    "nvmlDeviceGetMemoryInfo_v2": ((H, POINTER(s.MemoryV2)), RETURN),
    "nvmlDeviceGetPciInfo_v3": ((H, POINTER(s.PciInfo)), RETURN),
    "nvmlDeviceGetArchitecture": ((H, UINT_P), RETURN),
    "nvmlDeviceGetCudaComputeCapability": ((H, POINTER(c_int), POINTER(c_int)), RETURN),
    "nvmlDeviceGetComputeRunningProcesses_v3": ((H, UINT_P, POINTER(s.ProcessInfo)), RETURN),
    "nvmlDeviceGetComputeRunningProcesses_v2": ((H, UINT_P, POINTER(s.ProcessInfo)), RETURN),  # same struct
    "nvmlDeviceGetComputeRunningProcesses": ((H, UINT_P, POINTER(s.ProcessInfoV1)), RETURN),
    # MIG mode
    "nvmlDeviceGetMigMode": ((H, UINT_P, UINT_P), RETURN),
    "nvmlDeviceSetMigMode": ((H, c_uint, POINTER(c_int)), RETURN),
    # GPU-instance profiles, placements, instances
    "nvmlDeviceGetGpuInstanceProfileInfo": ((H, c_uint, POINTER(s.GpuInstanceProfileInfo)), RETURN),
    "nvmlDeviceGetGpuInstanceProfileInfoV": ((H, c_uint, c_void_p), RETURN),  # v2 or v3 struct
    "nvmlDeviceGetGpuInstanceProfileInfoByIdV": ((H, c_uint, c_void_p), RETURN),
    "nvmlDeviceGetGpuInstancePossiblePlacements_v2": ((H, c_uint, POINTER(s.GpuInstancePlacement), UINT_P), RETURN),
    "nvmlDeviceGetGpuInstancePossiblePlacements": ((H, c_uint, POINTER(s.GpuInstancePlacement), UINT_P), RETURN),
    "nvmlDeviceGetGpuInstanceRemainingCapacity": ((H, c_uint, UINT_P), RETURN),
    "nvmlDeviceCreateGpuInstance": ((H, c_uint, HANDLE_P), RETURN),
    "nvmlDeviceCreateGpuInstanceWithPlacement": ((H, c_uint, POINTER(s.GpuInstancePlacement), HANDLE_P), RETURN),
    "nvmlGpuInstanceDestroy": ((H,), RETURN),
    "nvmlDeviceGetGpuInstances": ((H, c_uint, HANDLE_P, UINT_P), RETURN),
    "nvmlDeviceGetGpuInstanceById": ((H, c_uint, HANDLE_P), RETURN),
    "nvmlGpuInstanceGetInfo": ((H, POINTER(s.GpuInstanceInfo)), RETURN),
    # compute instances
    "nvmlGpuInstanceGetComputeInstanceProfileInfo": (
        (H, c_uint, c_uint, POINTER(s.ComputeInstanceProfileInfo)),
        RETURN,
    ),
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV": ((H, c_uint, c_uint, c_void_p), RETURN),  # v2 or v3
    "nvmlGpuInstanceGetComputeInstanceRemainingCapacity": ((H, c_uint, UINT_P), RETURN),
    "nvmlGpuInstanceGetComputeInstancePossiblePlacements": (
        (H, c_uint, POINTER(s.ComputeInstancePlacement), UINT_P),
        RETURN,
    ),
    "nvmlGpuInstanceCreateComputeInstance": ((H, c_uint, HANDLE_P), RETURN),
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement": (
        (H, c_uint, POINTER(s.ComputeInstancePlacement), HANDLE_P),
        RETURN,
    ),
    "nvmlComputeInstanceDestroy": ((H,), RETURN),
    "nvmlGpuInstanceGetComputeInstances": ((H, c_uint, HANDLE_P, UINT_P), RETURN),
    "nvmlGpuInstanceGetComputeInstanceById": ((H, c_uint, HANDLE_P), RETURN),
    "nvmlComputeInstanceGetInfo_v2": ((H, POINTER(s.ComputeInstanceInfo)), RETURN),
    "nvmlComputeInstanceGetInfo": ((H, POINTER(s.ComputeInstanceInfo)), RETURN),  # .device = the parent GPU
    # MIG device handles
    "nvmlDeviceGetMaxMigDeviceCount": ((H, UINT_P), RETURN),
    "nvmlDeviceGetMigDeviceHandleByIndex": ((H, c_uint, HANDLE_P), RETURN),
    "nvmlDeviceIsMigDeviceHandle": ((H, UINT_P), RETURN),
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle": ((H, HANDLE_P), RETURN),
    "nvmlDeviceGetGpuInstanceId": ((H, UINT_P), RETURN),
    "nvmlDeviceGetComputeInstanceId": ((H, UINT_P), RETURN),
}

FALLBACKS: dict[str, tuple[str, ...]] = {
    "nvmlInit_v2": ("nvmlInit",),
    "nvmlDeviceGetCount_v2": ("nvmlDeviceGetCount",),
    "nvmlDeviceGetHandleByIndex_v2": ("nvmlDeviceGetHandleByIndex",),
    "nvmlDeviceGetComputeRunningProcesses_v3": (
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetComputeRunningProcesses",
    ),
    "nvmlDeviceGetGpuInstancePossiblePlacements_v2": ("nvmlDeviceGetGpuInstancePossiblePlacements",),
    "nvmlComputeInstanceGetInfo_v2": ("nvmlComputeInstanceGetInfo",),
    "nvmlDeviceGetGpuInstanceProfileInfoV": ("nvmlDeviceGetGpuInstanceProfileInfo",),
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV": ("nvmlGpuInstanceGetComputeInstanceProfileInfo",),
}
"""Newer symbol → the older symbols with the same meaning, newest first (go-nvml's versioned-symbol
table does the same). Where the older one fills a smaller struct the binding converts it;
`nvmlDeviceGetGpuInstanceProfileInfoByIdV` has no older symbol and is emulated by walking the
profile constants. docs/nvml.md lists the minimum driver."""

"""`Nvml`: one loaded libnvidia-ml, its symbols, and a typed method per NVML call we use.

The object owns its `CDLL` (nothing is global: a test can hold the real library and a simulated
one side by side), resolves symbols lazily through `signatures.SIGNATURES` and caches them per
instance. Every call returning `nvmlReturn_t` goes through one errcheck that raises the
`errors.NvmlError` subclass of the code with NVML's own message. Out-parameters stay inside:
methods return values, tuples or frozen dataclasses from `results`.

Older drivers: a symbol the library does not export falls back to the older one with the same
meaning (`signatures.FALLBACKS`), and a versioned struct the driver does not know (v3 profile
info) falls back to v2 on INVALID_ARGUMENT as well as ARGUMENT_VERSION_MISMATCH. MIG management
needs `MINIMUM_DRIVER` or newer (docs/nvml.md).

    with Nvml.from_environment() as nvml:        # HAMI_NVML_LIBRARY or libnvidia-ml.so.1
        gpu = nvml.device_by_index(0)
        print(nvml.name(gpu), nvml.mig_mode(gpu))
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Mapping
from ctypes import byref, c_int, c_uint
from typing import Any

from hami.nvml import errors, results, signatures, structs

DEFAULT_LIBRARY = "libnvidia-ml.so.1"
LIBRARY_ENV = "HAMI_NVML_LIBRARY"
"""Environment variable naming the NVML library to load (a path, or a soname)."""

MINIMUM_DRIVER = "R470"
"""The oldest driver branch MIG management works on: the first whose NVML reference lists
nvmlDeviceCreateGpuInstanceWithPlacement and nvmlDeviceGetGpuInstancePossiblePlacements_v2
(creating an instance at a decided placement has no older equivalent)."""

_NUL = b"\0"


def _text(raw: bytes) -> str:
    return raw.split(_NUL, 1)[0].decode("utf-8", "replace")


class Nvml:
    """A handle on one NVML library. Use as a context manager (init on enter, shutdown on exit)."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_LIBRARY, *, loader: Callable[[str], Any] = ctypes.CDLL):
        self.path = os.fspath(path)
        self._loader = loader
        self._lib: Any = None
        self._functions: dict[str, Any] = {}
        self._absent: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Nvml:
        """The library named by HAMI_NVML_LIBRARY in `environ` (default os.environ), else the soname."""
        env = os.environ if environ is None else environ
        return cls(env.get(LIBRARY_ENV) or DEFAULT_LIBRARY)

    def __repr__(self) -> str:
        return f"Nvml({self.path!r})"

    # -- loading and symbols -----------------------------------------------------------------

    def _library(self) -> Any:
        if self._lib is None:
            with self._lock:
                if self._lib is None:
                    try:
                        self._lib = self._loader(self.path)
                    except OSError as exc:
                        raise errors.LibraryNotFound(
                            f"cannot load the NVML library {self.path!r} ({exc}); install the NVIDIA driver "
                            f"(it provides libnvidia-ml.so.1), or set {LIBRARY_ENV} to the library's full path "
                            "when it is installed outside the loader's search path",
                            function="dlopen",
                        ) from exc
        return self._lib

    def _lookup(self, name: str) -> Any | None:
        """The typed symbol (argtypes, restype, errcheck), cached; None when the library lacks it."""
        fn = self._functions.get(name)
        if fn is not None or name in self._absent:
            return fn
        argtypes, restype = signatures.SIGNATURES[name]
        try:
            fn = getattr(self._library(), name)
        except AttributeError:
            self._absent.add(name)
            return None
        fn.argtypes = list(argtypes)
        fn.restype = restype
        if restype is signatures.RETURN:
            fn.errcheck = self._errcheck
        self._functions[name] = fn
        return fn

    def _fn(self, name: str) -> Any:
        fn = self._lookup(name)
        if fn is None:
            raise errors.FunctionNotFound(self._missing(name), function=name)
        return fn

    def _fn_any(self, name: str) -> tuple[str, Any]:
        """(the symbol used, the function): `name`, else its older equivalents (FALLBACKS)."""
        for candidate in (name, *signatures.FALLBACKS.get(name, ())):
            fn = self._lookup(candidate)
            if fn is not None:
                return candidate, fn
        raise errors.FunctionNotFound(self._missing(name, signatures.FALLBACKS.get(name, ())), function=name)

    def has_function(self, name: str) -> bool:
        """Whether the loaded library exports `name` (a symbol of `signatures.SIGNATURES`)."""
        return self._lookup(name) is not None

    def _missing(self, name: str, older: tuple[str, ...] = ()) -> str:
        nor = f" (nor the older {', '.join(older)})" if older else ""
        return (
            f"{name}{nor} is not exported by {self.path} (driver {self._driver_version_or_unknown()}); "
            f"this call needs a newer NVIDIA driver (MIG management needs {MINIMUM_DRIVER} or newer)"
        )

    def _errcheck(self, result: int, func: Any, args: tuple) -> int:
        if result != 0:
            raise errors.from_code(result, self.error_string(result), function=func.__name__)
        return result

    def _driver_version_or_unknown(self) -> str:
        """For error messages: never raises, never recurses (the version symbol may be missing too)."""
        fn = self._lookup("nvmlSystemGetDriverVersion")
        if fn is None:
            return "unknown"
        buf = ctypes.create_string_buffer(structs.SYSTEM_DRIVER_VERSION_BUFFER_SIZE)
        try:
            fn(buf, len(buf))
        except errors.NvmlError:
            return "unknown"
        return _text(buf.raw) or "unknown"

    def error_string(self, code: int) -> str:
        """NVML's own text for a return code (nvmlErrorString)."""
        try:
            raw = self._fn("nvmlErrorString")(code)
        except errors.NvmlError:
            return ""
        return raw.decode("utf-8", "replace") if raw else ""

    # -- init / system -----------------------------------------------------------------------

    def init(self, flags: int = 0) -> None:
        """nvmlInit_v2 (or nvmlInitWithFlags when flags are given). Reference-counted by NVML."""
        if flags:
            self._fn("nvmlInitWithFlags")(flags)
        else:
            self._fn_any("nvmlInit_v2")[1]()

    def shutdown(self) -> None:
        self._fn("nvmlShutdown")()

    def __enter__(self) -> Nvml:
        self.init()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def driver_version(self) -> str:
        buf = ctypes.create_string_buffer(structs.SYSTEM_DRIVER_VERSION_BUFFER_SIZE)
        self._fn("nvmlSystemGetDriverVersion")(buf, len(buf))
        return _text(buf.raw)

    # -- enumeration and identity ---------------------------------------------------------------

    def device_count(self) -> int:
        """Physical GPUs (MIG devices are not counted)."""
        n = c_uint()
        self._fn_any("nvmlDeviceGetCount_v2")[1](byref(n))
        return n.value

    def device_by_index(self, index: int) -> results.Device:
        h = structs.Handle()
        self._fn_any("nvmlDeviceGetHandleByIndex_v2")[1](index, byref(h))
        return results.Device(h.value or 0)

    def devices(self) -> list[results.Device]:
        return [self.device_by_index(i) for i in range(self.device_count())]

    def device_by_uuid(self, uuid: str) -> results.Device:
        """A GPU (GPU-…) or MIG device (MIG-…) by UUID; NotFound if none matches."""
        h = structs.Handle()
        self._fn("nvmlDeviceGetHandleByUUID")(uuid.encode(), byref(h))
        return results.Device(h.value or 0)

    def name(self, device: results.Device) -> str:
        buf = ctypes.create_string_buffer(structs.DEVICE_NAME_V2_BUFFER_SIZE)
        self._fn("nvmlDeviceGetName")(device, buf, len(buf))
        return _text(buf.raw)

    def uuid(self, device: results.Device) -> str:
        buf = ctypes.create_string_buffer(structs.DEVICE_UUID_V2_BUFFER_SIZE)
        self._fn("nvmlDeviceGetUUID")(device, buf, len(buf))
        return _text(buf.raw)

    def memory(self, device: results.Device, *, version: int = 1) -> results.Memory:
        """Memory of a GPU or (per instance) of a MIG device. version=2 adds `reserved`."""
        if version == 2:
            m2 = structs.MemoryV2()
            self._fn("nvmlDeviceGetMemoryInfo_v2")(device, byref(m2))
            return results.Memory(m2.total, m2.free, m2.used, m2.reserved)
        m = structs.Memory()
        self._fn("nvmlDeviceGetMemoryInfo")(device, byref(m))
        return results.Memory(m.total, m.free, m.used)

    def pci_info(self, device: results.Device) -> results.PciInfo:
        p = structs.PciInfo()
        self._fn("nvmlDeviceGetPciInfo_v3")(device, byref(p))
        return results.PciInfo(_text(p.busId), p.domain, p.bus, p.device, p.pciDeviceId, p.pciSubSystemId)

    def architecture(self, device: results.Device) -> int:
        """nvmlDeviceArchitecture_t (7 Ampere, 9 Hopper, 10 Blackwell, …)."""
        arch = c_uint()
        self._fn("nvmlDeviceGetArchitecture")(device, byref(arch))
        return arch.value

    def cuda_compute_capability(self, device: results.Device) -> tuple[int, int]:
        major, minor = c_int(), c_int()
        self._fn("nvmlDeviceGetCudaComputeCapability")(device, byref(major), byref(minor))
        return major.value, minor.value

    def compute_running_processes(self, device: results.Device) -> tuple[results.ProcessInfo, ...]:
        """Compute processes on a GPU (all of them) or on one MIG device. From the unversioned
        call (drivers before `_v2`) the instance ids are None."""
        name, fn = self._fn_any("nvmlDeviceGetComputeRunningProcesses_v3")
        entry = structs.ProcessInfoV1 if name == "nvmlDeviceGetComputeRunningProcesses" else structs.ProcessInfo
        count = c_uint(0)
        for _ in range(4):  # the list can grow between the probe and the read
            try:
                if count.value == 0:
                    fn(device, byref(count), None)
                    return ()
                buf = (entry * count.value)()
                fn(device, byref(count), buf)
            except errors.InsufficientSize:
                count.value = count.value * 2 + 4
                continue
            return tuple(_process(buf[i]) for i in range(count.value))
        raise errors.InsufficientSize(
            "the process list kept growing", function="nvmlDeviceGetComputeRunningProcesses_v3"
        )

    # -- MIG mode ----------------------------------------------------------------------------

    def mig_mode(self, device: results.Device) -> results.MigMode:
        """Current and pending mode; NotSupported on a GPU without MIG."""
        current, pending = c_uint(), c_uint()
        self._fn("nvmlDeviceGetMigMode")(device, byref(current), byref(pending))
        return results.MigMode(bool(current.value), bool(pending.value))

    def set_mig_mode(self, device: results.Device, enabled: bool) -> results.MigModeChange:
        """Ask for a mode change. The call can succeed while the activation failed: read
        `activation` (SUCCESS, RESET_REQUIRED: pending until a GPU reset, IN_USE: refused)."""
        status = c_int(0)
        mode = structs.DEVICE_MIG_ENABLE if enabled else structs.DEVICE_MIG_DISABLE
        self._fn("nvmlDeviceSetMigMode")(device, mode, byref(status))
        message = self.error_string(status.value) if status.value else "Success"
        return results.MigModeChange(status.value, message, self.mig_mode(device))

    # -- GPU-instance profiles and placements -------------------------------------------------------

    def gpu_instance_profile_info(
        self, device: results.Device, profile: int, *, version: int | None = None
    ) -> results.GpuInstanceProfileInfo:
        """Info of profile constant `profile` (NVML_GPU_INSTANCE_PROFILE_*). version None = the
        newest struct the driver accepts (v3, then v2; the unversioned v1 call, without a name,
        on a driver without the `V` call); 1 = the unversioned call."""
        if version is None and not self.has_function("nvmlDeviceGetGpuInstanceProfileInfoV"):
            version = 1
        return self._gi_profile("nvmlDeviceGetGpuInstanceProfileInfoV", device, profile, version)

    def gpu_instance_profile_info_by_id(
        self, device: results.Device, profile_id: int, *, version: int | None = None
    ) -> results.GpuInstanceProfileInfo:
        """Info of the profile with device-specific id `profile_id` (v2 or v3 struct). On a driver
        without the `ByIdV` call (and version None) the profile constants are walked instead."""
        if version == 1:
            raise ValueError("nvmlDeviceGetGpuInstanceProfileInfoByIdV has no v1 form")
        if version is None and not self.has_function("nvmlDeviceGetGpuInstanceProfileInfoByIdV"):
            return self._gi_profile_by_walking(device, profile_id)
        return self._gi_profile("nvmlDeviceGetGpuInstanceProfileInfoByIdV", device, profile_id, version)

    def _gi_profile_by_walking(self, device: results.Device, profile_id: int) -> results.GpuInstanceProfileInfo:
        for constant in range(structs.GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self.gpu_instance_profile_info(device, constant)
            except (errors.NotSupported, errors.InvalidArgument):
                continue
            if info.id == profile_id:
                return info
        raise errors.InvalidArgument(
            f"no GPU-instance profile has id {profile_id}", function="nvmlDeviceGetGpuInstanceProfileInfoByIdV"
        )

    def _gi_profile(self, symbol: str, device: results.Device, key: int, version: int | None):
        if version == 1:
            v1 = structs.GpuInstanceProfileInfo()
            self._fn("nvmlDeviceGetGpuInstanceProfileInfo")(device, key, byref(v1))
            return _gi_info(v1, "", v1.isP2pSupported, None, 1)
        for v in (3, 2) if version is None else (version,):
            info = structs.GpuInstanceProfileInfoV3() if v == 3 else structs.GpuInstanceProfileInfoV2()
            try:
                self._fn(symbol)(device, key, byref(info))
            except (errors.ArgumentVersionMismatch, errors.InvalidArgument):
                # NVML's header documents INVALID_ARGUMENT for a struct version these calls do not
                # know (other calls answer ARGUMENT_VERSION_MISMATCH): either way, try v2
                if version is None and v == 3:
                    continue
                raise
            if v == 3:
                return _gi_info(info, _text(info.name), None, info.capabilities, 3)
            return _gi_info(info, _text(info.name), info.isP2pSupported, None, 2)
        raise AssertionError("unreachable")  # pragma: no cover

    def gpu_instance_profiles(self, device: results.Device) -> dict[int, results.GpuInstanceProfileInfo]:
        """Every profile the device supports, by profile constant (skips NOT_SUPPORTED and
        INVALID_ARGUMENT, as NVML's enumeration contract says). A transient error of either code
        drops a row: the MIG manager reads the table its own way (confirming every denial)."""
        found = {}
        for constant in range(structs.GPU_INSTANCE_PROFILE_COUNT):
            try:
                found[constant] = self.gpu_instance_profile_info(device, constant)
            except (errors.NotSupported, errors.InvalidArgument):
                continue
        return found

    def gpu_instance_possible_placements(
        self, device: results.Device, profile_id: int
    ) -> tuple[results.Placement, ...]:
        """Legal placements of a profile (memory slices), answered whether MIG is on or not."""
        fn = self._fn_any("nvmlDeviceGetGpuInstancePossiblePlacements_v2")[1]
        count = c_uint(0)
        fn(device, profile_id, None, byref(count))
        buf = (structs.GpuInstancePlacement * max(count.value, 1))()
        fn(device, profile_id, buf, byref(count))
        return tuple(results.Placement(buf[i].start, buf[i].size) for i in range(count.value))

    def gpu_instance_remaining_capacity(self, device: results.Device, profile_id: int) -> int:
        n = c_uint()
        self._fn("nvmlDeviceGetGpuInstanceRemainingCapacity")(device, profile_id, byref(n))
        return n.value

    # -- GPU instances -----------------------------------------------------------------------

    def create_gpu_instance(
        self, device: results.Device, profile_id: int, placement: results.Placement | None = None
    ) -> results.GpuInstance:
        """Create a GPU instance at `placement` (the driver chooses when None).
        InsufficientResources when it overlaps, exceeds a cap, or already exists."""
        h = structs.Handle()
        if placement is None:
            self._fn("nvmlDeviceCreateGpuInstance")(device, profile_id, byref(h))
        else:
            p = structs.GpuInstancePlacement(placement.start, placement.size)
            self._fn("nvmlDeviceCreateGpuInstanceWithPlacement")(device, profile_id, byref(p), byref(h))
        return results.GpuInstance(h.value or 0)

    def gpu_instances(self, device: results.Device, profile_id: int) -> tuple[results.GpuInstance, ...]:
        buf = (structs.Handle * 32)()  # NVML wants room for instanceCount handles (at most 7 today)
        count = c_uint(len(buf))
        self._fn("nvmlDeviceGetGpuInstances")(device, profile_id, buf, byref(count))
        return tuple(results.GpuInstance(buf[i] or 0) for i in range(count.value))

    def gpu_instance_by_id(self, device: results.Device, gi_id: int) -> results.GpuInstance:
        h = structs.Handle()
        self._fn("nvmlDeviceGetGpuInstanceById")(device, gi_id, byref(h))
        return results.GpuInstance(h.value or 0)

    def gpu_instance_info(self, gpu_instance: results.GpuInstance) -> results.GpuInstanceInfo:
        i = structs.GpuInstanceInfo()
        self._fn("nvmlGpuInstanceGetInfo")(gpu_instance, byref(i))
        return results.GpuInstanceInfo(
            results.Device(i.device or 0), i.id, i.profileId, results.Placement(i.placement.start, i.placement.size)
        )

    def destroy_gpu_instance(self, gpu_instance: results.GpuInstance) -> None:
        """InUse while it still has compute instances or processes."""
        self._fn("nvmlGpuInstanceDestroy")(gpu_instance)

    # -- compute instances ---------------------------------------------------------------------

    def compute_instance_profile_info(
        self, gpu_instance: results.GpuInstance, profile: int, eng_profile: int = 0, *, version: int | None = None
    ) -> results.ComputeInstanceProfileInfo:
        """Info of compute-instance profile constant `profile` inside a GPU instance (v3, then v2;
        the unversioned v1 call on a driver without the `V` call)."""
        if version is None and not self.has_function("nvmlGpuInstanceGetComputeInstanceProfileInfoV"):
            version = 1
        if version == 1:
            v1 = structs.ComputeInstanceProfileInfo()
            self._fn("nvmlGpuInstanceGetComputeInstanceProfileInfo")(gpu_instance, profile, eng_profile, byref(v1))
            return _ci_info(v1, "", None, 1)
        fn = self._fn("nvmlGpuInstanceGetComputeInstanceProfileInfoV")
        for v in (3, 2) if version is None else (version,):
            info = structs.ComputeInstanceProfileInfoV3() if v == 3 else structs.ComputeInstanceProfileInfoV2()
            try:
                fn(gpu_instance, profile, eng_profile, byref(info))
            except (errors.ArgumentVersionMismatch, errors.InvalidArgument):  # as in _gi_profile
                if version is None and v == 3:
                    continue
                raise
            return _ci_info(info, _text(info.name), info.capabilities if v == 3 else None, v)
        raise AssertionError("unreachable")  # pragma: no cover

    def compute_instance_remaining_capacity(self, gpu_instance: results.GpuInstance, profile_id: int) -> int:
        n = c_uint()
        self._fn("nvmlGpuInstanceGetComputeInstanceRemainingCapacity")(gpu_instance, profile_id, byref(n))
        return n.value

    def compute_instance_possible_placements(
        self, gpu_instance: results.GpuInstance, profile_id: int
    ) -> tuple[results.Placement, ...]:
        fn = self._fn("nvmlGpuInstanceGetComputeInstancePossiblePlacements")
        count = c_uint(0)
        fn(gpu_instance, profile_id, None, byref(count))
        buf = (structs.ComputeInstancePlacement * max(count.value, 1))()
        fn(gpu_instance, profile_id, buf, byref(count))
        return tuple(results.Placement(buf[i].start, buf[i].size) for i in range(count.value))

    def create_compute_instance(
        self, gpu_instance: results.GpuInstance, profile_id: int, placement: results.Placement | None = None
    ) -> results.ComputeInstance:
        h = structs.Handle()
        if placement is None:
            self._fn("nvmlGpuInstanceCreateComputeInstance")(gpu_instance, profile_id, byref(h))
        else:
            p = structs.ComputeInstancePlacement(placement.start, placement.size)
            self._fn("nvmlGpuInstanceCreateComputeInstanceWithPlacement")(gpu_instance, profile_id, byref(p), byref(h))
        return results.ComputeInstance(h.value or 0)

    def compute_instances(
        self, gpu_instance: results.GpuInstance, profile_id: int
    ) -> tuple[results.ComputeInstance, ...]:
        buf = (structs.Handle * 32)()
        count = c_uint(len(buf))
        self._fn("nvmlGpuInstanceGetComputeInstances")(gpu_instance, profile_id, buf, byref(count))
        return tuple(results.ComputeInstance(buf[i] or 0) for i in range(count.value))

    def compute_instance_by_id(self, gpu_instance: results.GpuInstance, ci_id: int) -> results.ComputeInstance:
        h = structs.Handle()
        self._fn("nvmlGpuInstanceGetComputeInstanceById")(gpu_instance, ci_id, byref(h))
        return results.ComputeInstance(h.value or 0)

    def compute_instance_info(self, compute_instance: results.ComputeInstance) -> results.ComputeInstanceInfo:
        """nvmlComputeInstanceGetInfo_v2: `device` is the MIG device (no scan needed for its UUID).
        The unversioned call of older drivers reports the parent GPU there; the MIG device is then
        found among the parent's MIG devices by GPU-instance and compute-instance id."""
        i = structs.ComputeInstanceInfo()
        name, fn = self._fn_any("nvmlComputeInstanceGetInfo_v2")
        fn(compute_instance, byref(i))
        device, gpu_instance = results.Device(i.device or 0), results.GpuInstance(i.gpuInstance or 0)
        if name != "nvmlComputeInstanceGetInfo_v2":
            device = self._mig_device_of(device, gpu_instance, i.id)
        return results.ComputeInstanceInfo(
            device, gpu_instance, i.id, i.profileId, results.Placement(i.placement.start, i.placement.size)
        )

    def _mig_device_of(self, parent: results.Device, gpu_instance: results.GpuInstance, ci_id: int) -> results.Device:
        gi_id = self.gpu_instance_info(gpu_instance).id
        for mig in self.mig_devices(parent):
            if self.gpu_instance_id(mig) == gi_id and self.compute_instance_id(mig) == ci_id:
                return mig
        raise errors.NotFound(
            f"no MIG device of GPU instance {gi_id} / compute instance {ci_id}", function="nvmlComputeInstanceGetInfo"
        )

    def destroy_compute_instance(self, compute_instance: results.ComputeInstance) -> None:
        """InUse while processes run on it."""
        self._fn("nvmlComputeInstanceDestroy")(compute_instance)

    # -- MIG device handles -------------------------------------------------------------------

    def max_mig_device_count(self, device: results.Device) -> int:
        n = c_uint()
        self._fn("nvmlDeviceGetMaxMigDeviceCount")(device, byref(n))
        return n.value

    def mig_device_by_index(self, device: results.Device, index: int) -> results.Device:
        """NotFound for an index with no MIG device (the index space has holes)."""
        h = structs.Handle()
        self._fn("nvmlDeviceGetMigDeviceHandleByIndex")(device, index, byref(h))
        return results.Device(h.value or 0)

    def mig_devices(self, device: results.Device) -> list[results.Device]:
        """Every MIG device of a GPU, walking 0..max-1 and skipping the holes."""
        found = []
        for index in range(self.max_mig_device_count(device)):
            try:
                found.append(self.mig_device_by_index(device, index))
            except (errors.NotFound, errors.InvalidArgument):
                continue
        return found

    def is_mig_device(self, device: results.Device) -> bool:
        flag = c_uint()
        self._fn("nvmlDeviceIsMigDeviceHandle")(device, byref(flag))
        return bool(flag.value)

    def parent_device(self, mig_device: results.Device) -> results.Device:
        h = structs.Handle()
        self._fn("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")(mig_device, byref(h))
        return results.Device(h.value or 0)

    def gpu_instance_id(self, mig_device: results.Device) -> int:
        n = c_uint()
        self._fn("nvmlDeviceGetGpuInstanceId")(mig_device, byref(n))
        return n.value

    def compute_instance_id(self, mig_device: results.Device) -> int:
        n = c_uint()
        self._fn("nvmlDeviceGetComputeInstanceId")(mig_device, byref(n))
        return n.value


def _gi_info(info: Any, name: str, p2p: int | None, caps: int | None, version: int) -> results.GpuInstanceProfileInfo:
    return results.GpuInstanceProfileInfo(
        id=info.id,
        slice_count=info.sliceCount,
        instance_count=info.instanceCount,
        multiprocessor_count=info.multiprocessorCount,
        copy_engine_count=info.copyEngineCount,
        decoder_count=info.decoderCount,
        encoder_count=info.encoderCount,
        jpeg_count=info.jpegCount,
        ofa_count=info.ofaCount,
        memory_mib=info.memorySizeMB,
        name=name,
        p2p_supported=None if p2p is None else bool(p2p),
        capabilities=caps,
        version=version,
    )


def _ci_info(info: Any, name: str, caps: int | None, version: int) -> results.ComputeInstanceProfileInfo:
    return results.ComputeInstanceProfileInfo(
        id=info.id,
        slice_count=info.sliceCount,
        instance_count=info.instanceCount,
        multiprocessor_count=info.multiprocessorCount,
        shared_copy_engine_count=info.sharedCopyEngineCount,
        shared_decoder_count=info.sharedDecoderCount,
        shared_encoder_count=info.sharedEncoderCount,
        shared_jpeg_count=info.sharedJpegCount,
        shared_ofa_count=info.sharedOfaCount,
        name=name,
        capabilities=caps,
        version=version,
    )


def _process(p: structs.ProcessInfo | structs.ProcessInfoV1) -> results.ProcessInfo:
    def opt(v: int | None) -> int | None:
        return None if v is None or v == structs.NO_INSTANCE_ID else v

    used = None if p.usedGpuMemory == structs.VALUE_NOT_AVAILABLE_ULL else p.usedGpuMemory
    return results.ProcessInfo(
        p.pid, used, opt(getattr(p, "gpuInstanceId", None)), opt(getattr(p, "computeInstanceId", None))
    )

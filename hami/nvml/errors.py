"""NVML's return codes and one exception class per code.

`Return` is `nvmlReturn_t` (reference §B.2). Every failing call raises the subclass of
`NvmlError` for its code (`errors.InUse`, `errors.InsufficientResources`, …), carrying `.code`,
`.nvml_message` (NVML's own text from `nvmlErrorString`) and the function that failed. The
classes are written out, not generated, so that type checkers and readers see them.
"""

from __future__ import annotations

import enum


class Return(enum.IntEnum):
    """nvmlReturn_t."""

    SUCCESS = 0
    UNINITIALIZED = 1
    INVALID_ARGUMENT = 2
    NOT_SUPPORTED = 3
    NO_PERMISSION = 4
    ALREADY_INITIALIZED = 5
    NOT_FOUND = 6
    INSUFFICIENT_SIZE = 7
    INSUFFICIENT_POWER = 8
    DRIVER_NOT_LOADED = 9
    TIMEOUT = 10
    IRQ_ISSUE = 11
    LIBRARY_NOT_FOUND = 12
    FUNCTION_NOT_FOUND = 13
    CORRUPTED_INFOROM = 14
    GPU_IS_LOST = 15
    RESET_REQUIRED = 16
    OPERATING_SYSTEM = 17
    LIB_RM_VERSION_MISMATCH = 18
    IN_USE = 19
    MEMORY = 20
    NO_DATA = 21
    VGPU_ECC_NOT_SUPPORTED = 22
    INSUFFICIENT_RESOURCES = 23
    FREQ_NOT_SUPPORTED = 24
    ARGUMENT_VERSION_MISMATCH = 25
    DEPRECATED = 26
    NOT_READY = 27
    GPU_NOT_FOUND = 28
    INVALID_STATE = 29
    RESET_TYPE_NOT_SUPPORTED = 30
    UNKNOWN = 999


class NvmlError(Exception):
    """A failed NVML call. Subclasses fix `code`; an unlisted code yields this base class."""

    code: int = Return.UNKNOWN

    def __init__(self, nvml_message: str = "", *, function: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.nvml_message = nvml_message or _FALLBACK.get(self.code, "Unknown Error")
        self.function = function
        super().__init__(str(self))

    @property
    def code_name(self) -> str:
        """NVML_ERROR_IN_USE etc. (the C constant's name)."""
        try:
            return "NVML_ERROR_" + Return(self.code).name if self.code else "NVML_SUCCESS"
        except ValueError:
            return f"nvmlReturn_t {self.code}"

    def __str__(self) -> str:
        where = f"{self.function}: " if self.function else ""
        return f"{where}{self.nvml_message} ({self.code_name} = {self.code})"

    def __reduce__(self):  # picklable across processes (multiprocessing, test workers)
        return (_rebuild, (self.code, self.nvml_message, self.function))


def _rebuild(code: int, message: str, function: str) -> NvmlError:
    return from_code(code, message, function=function)


class Uninitialized(NvmlError):
    code = Return.UNINITIALIZED


class InvalidArgument(NvmlError):
    code = Return.INVALID_ARGUMENT


class NotSupported(NvmlError):
    code = Return.NOT_SUPPORTED


class NoPermission(NvmlError):
    code = Return.NO_PERMISSION


class AlreadyInitialized(NvmlError):
    code = Return.ALREADY_INITIALIZED


class NotFound(NvmlError):
    code = Return.NOT_FOUND


class InsufficientSize(NvmlError):
    code = Return.INSUFFICIENT_SIZE


class InsufficientPower(NvmlError):
    code = Return.INSUFFICIENT_POWER


class DriverNotLoaded(NvmlError):
    code = Return.DRIVER_NOT_LOADED


class Timeout(NvmlError):
    code = Return.TIMEOUT


class IrqIssue(NvmlError):
    code = Return.IRQ_ISSUE


class LibraryNotFound(NvmlError):
    code = Return.LIBRARY_NOT_FOUND


class FunctionNotFound(NvmlError):
    code = Return.FUNCTION_NOT_FOUND


class CorruptedInforom(NvmlError):
    code = Return.CORRUPTED_INFOROM


class GpuIsLost(NvmlError):
    code = Return.GPU_IS_LOST


class ResetRequired(NvmlError):
    code = Return.RESET_REQUIRED


class OperatingSystem(NvmlError):
    code = Return.OPERATING_SYSTEM


class LibRmVersionMismatch(NvmlError):
    code = Return.LIB_RM_VERSION_MISMATCH


class InUse(NvmlError):
    code = Return.IN_USE


class Memory(NvmlError):
    code = Return.MEMORY


class NoData(NvmlError):
    code = Return.NO_DATA


class VgpuEccNotSupported(NvmlError):
    code = Return.VGPU_ECC_NOT_SUPPORTED


class InsufficientResources(NvmlError):
    code = Return.INSUFFICIENT_RESOURCES


class FreqNotSupported(NvmlError):
    code = Return.FREQ_NOT_SUPPORTED


class ArgumentVersionMismatch(NvmlError):
    code = Return.ARGUMENT_VERSION_MISMATCH


class Deprecated(NvmlError):
    code = Return.DEPRECATED


class NotReady(NvmlError):
    code = Return.NOT_READY


class GpuNotFound(NvmlError):
    code = Return.GPU_NOT_FOUND


class InvalidState(NvmlError):
    code = Return.INVALID_STATE


class ResetTypeNotSupported(NvmlError):
    code = Return.RESET_TYPE_NOT_SUPPORTED


class Unknown(NvmlError):
    code = Return.UNKNOWN


BY_CODE: dict[int, type[NvmlError]] = {
    cls.code: cls
    for cls in (
        Uninitialized, InvalidArgument, NotSupported, NoPermission, AlreadyInitialized, NotFound,
        InsufficientSize, InsufficientPower, DriverNotLoaded, Timeout, IrqIssue, LibraryNotFound,
        FunctionNotFound, CorruptedInforom, GpuIsLost, ResetRequired, OperatingSystem,
        LibRmVersionMismatch, InUse, Memory, NoData, VgpuEccNotSupported, InsufficientResources,
        FreqNotSupported, ArgumentVersionMismatch, Deprecated, NotReady, GpuNotFound, InvalidState,
        ResetTypeNotSupported, Unknown,
    )
}  # fmt: skip
"""Exception class of each nvmlReturn_t."""

# Used only when the library cannot be asked (nvmlErrorString missing or the library not loaded).
_FALLBACK = {
    Return.UNINITIALIZED: "Uninitialized",
    Return.INVALID_ARGUMENT: "Invalid Argument",
    Return.NOT_SUPPORTED: "Not Supported",
    Return.NOT_FOUND: "Not Found",
    Return.DRIVER_NOT_LOADED: "Driver Not Loaded",
    Return.LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    Return.FUNCTION_NOT_FOUND: "Function Not Found",
    Return.IN_USE: "In use by another client",
    Return.INSUFFICIENT_RESOURCES: "Insufficient Resources",
}


def from_code(code: int, nvml_message: str = "", *, function: str = "") -> NvmlError:
    """The exception for `code` (the base class, with the code set, for codes NVML added later)."""
    cls = BY_CODE.get(code)
    if cls is None:
        return NvmlError(nvml_message, function=function, code=code)
    return cls(nvml_message, function=function)

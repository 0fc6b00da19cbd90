"""Errors raised by `hami.devices`.

Each message says what the user must do, not only what went wrong: these errors end up in
start-up logs and in `hami inspect` output, read by people who did not write the config.
"""

from __future__ import annotations


class DevicesError(Exception):
    """Base class of every error raised by `hami.devices`."""


class UnknownModelError(DevicesError, LookupError):
    """A GPU name that matches no model of the built-in catalog.

    `name` is the string that was looked up; `suggestions` are the closest known names, best
    first (possibly empty).
    """

    def __init__(self, name: str, suggestions: tuple[str, ...] = ()) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; closest known names: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(
            f"unknown GPU model {name!r}{hint}. To support a new model, add a GpuModel entry "
            "(NVML name, memory, and for MIG parts the profile table from `nvidia-smi mig -lgip` "
            "and placements from `nvidia-smi mig -lgipp`) to hami/devices/catalog.py"
        )

    def __reduce__(self):  # keep the two-argument constructor picklable
        return (type(self), (self.name, self.suggestions))


class UnknownProfileError(DevicesError, LookupError):
    """A MIG profile name that is neither a profile of the model nor an alias of one."""


class ConfigError(DevicesError, ValueError):
    """A device config (HAMi's `device-config.yaml`) that cannot be used as written."""

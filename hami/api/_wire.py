"""Shared pieces of the codecs: Go-compatible integer and time parsing, strict JSON field access,
and the `Placement` value type used by node and pod annotations alike.

Go's decoders are the other side of every annotation, so numbers follow `strconv.ParseInt`
(optional sign, ASCII digits, nothing else) and JSON integers must be integers of the Go field's
width; times follow Go's `time.RFC3339`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from hami.api.errors import AnnotationError

INT32_MAX: Final = 2**31 - 1
INT32_MIN: Final = -(2**31)
UINT32_MAX: Final = 2**32 - 1
INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)

_GO_INT = re.compile(r"[+-]?[0-9]+")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]+))?(?P<tz>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def check_int(value: object, lo: int, hi: int, what: str) -> int:
    """Validate a Python int field of a dataclass (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} {value} is out of range {lo}..{hi}")
    return value


def parse_go_int(text: str, lo: int, hi: int) -> int | None:
    """`strconv.ParseInt` semantics: None when `text` is not a plain integer within lo..hi."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    return value if lo <= value <= hi else None


def parse_rfc3339(text: str) -> datetime | None:
    """Go's `time.Parse(time.RFC3339, …)`: a timezone is required; fractions are accepted
    (truncated to microseconds). None when `text` is not RFC3339."""
    match = _RFC3339.fullmatch(text)
    if not match:
        return None
    frac = (match.group("frac") or "")[:6].ljust(6, "0")
    tz = match.group("tz")
    tz = "+00:00" if tz in ("Z", "z") else tz
    try:
        return datetime.fromisoformat(f"{match.group('date')}T{match.group('time')}.{frac}{tz}")
    except ValueError:
        return None


def format_rfc3339(moment: datetime) -> str:
    """Go's `time.Format(time.RFC3339)`: whole seconds, `Z` for UTC, else the `±hh:mm` offset."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"time {moment!r} has no timezone; RFC3339 needs one (use timezone.utc)")
    if offset % timedelta(minutes=1):
        raise ValueError(f"time {moment!r} has a sub-minute UTC offset, which RFC3339 cannot write")
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if offset == timedelta(0) else text


def require_aware(moment: object, what: str) -> datetime:
    if not isinstance(moment, datetime):
        raise ValueError(f"{what} must be a datetime, got {moment!r}")
    if moment.utcoffset() is None:
        raise ValueError(f"{what} must carry a timezone (e.g. timezone.utc), got {moment!r}")
    return moment


_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def dump_json(value: Any) -> str:
    """Compact JSON byte-for-byte like Go's `json.Marshal` (UTF-8 kept, `<>&` and U+2028/9
    escaped); key order is the caller's dict order. Those characters only occur inside JSON
    strings, so translating the whole text is safe."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)


def load_json_array(value: str, annotation: str) -> list[Any]:
    """Parse `value` as a JSON array; AnnotationError naming the position otherwise."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError as err:
        raise AnnotationError(
            annotation,
            f"at line {err.lineno} column {err.colno}",
            f"invalid JSON ({err.msg}); expected a JSON array",
        ) from None
    if data is None:
        return []  # Go unmarshals `null` into a nil slice
    if not isinstance(data, list):
        raise AnnotationError(annotation, "top level", f"expected a JSON array, got {type(data).__name__}")
    return data


class Fields:
    """Typed, Go-compatible access to one JSON object of an annotation.

    Absent keys and JSON null give the Go zero value; wrong types and out-of-range integers raise
    AnnotationError naming the annotation, `part` and the key. Unknown keys are ignored, as Go does.
    """

    __slots__ = ("annotation", "part", "raw")

    def __init__(self, raw: object, annotation: str, part: str) -> None:
        if not isinstance(raw, Mapping):
            raise AnnotationError(annotation, part, f"expected a JSON object, got {_json_type(raw)}")
        self.raw = raw
        self.annotation = annotation
        self.part = part

    def fail(self, problem: str) -> AnnotationError:
        return AnnotationError(self.annotation, self.part, problem)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def int(self, key: str, lo: int, hi: int, *, required: bool = False) -> int:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(f"{key!r} is missing; expected an integer {lo}..{hi}")
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key!r} is {_json_type(value)} {value!r}; expected an integer {lo}..{hi}")
        if not lo <= value <= hi:
            raise self.fail(f"{key!r} {value} is out of range; expected an integer {lo}..{hi}")
        return value

    def optional_int(self, key: str, lo: int, hi: int) -> int | None:
        return self.int(key, lo, hi) if self.has(key) else None

    def str(self, key: str, *, required: bool = False) -> str:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(f"{key!r} is missing; expected a non-empty string")
            return ""
        if not isinstance(value, str):
            raise self.fail(f"{key!r} is {_json_type(value)} {value!r}; expected a string")
        if required and not value:
            raise self.fail(f"{key!r} is empty; expected a non-empty string")
        return value

    def bool(self, key: str) -> bool:
        value = self.raw.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(f"{key!r} is {_json_type(value)} {value!r}; expected true or false")
        return value

    def list(self, key: str) -> list[Any]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{key!r} is {_json_type(value)}; expected a JSON array")
        return value

    def obj(self, key: str, *, required: bool = False) -> Fields | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(f"{key!r} is missing; expected a JSON object")
            return None
        return Fields(value, self.annotation, f"{self.part} {key}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True, order=True)
class Placement:
    """A run of MIG memory slices: `size` slices from slice `start` (NVML's placement).

    Used by `migProfiles` (legal placements), `hami.io/vgpu-mig-allocations` (the reservation)
    and `hami.io/node-mig-instances` (what exists). Both fields are Go uint32s.
    """

    start: int
    size: int

    def __post_init__(self) -> None:
        check_int(self.start, 0, UINT32_MAX, "placement start")
        check_int(self.size, 0, UINT32_MAX, "placement size")

    @property
    def end(self) -> int:
        """One past the last slice."""
        return self.start + self.size

    def overlaps(self, other: Placement) -> bool:
        return self.start < other.end and other.start < self.end

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "size": self.size}


def decode_placement(fields: Fields, key: str = "placement", *, required: bool = True) -> Placement:
    sub = fields.obj(key, required=required)
    if sub is None:
        return Placement(0, 0)
    return Placement(sub.int("start", 0, UINT32_MAX), sub.int("size", 0, UINT32_MAX))

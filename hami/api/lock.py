"""Codec of the node lock `hami.io/mutex.lock` (hami-behaviour §1.8).

Current form `<RFC3339>,<namespace>,<pod>` (what we write); legacy form: a bare RFC3339 time with
no owner (decoded). The lock only says who holds it since when; taking, waiting and releasing
live in the scheduler and the agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hami.api import names
from hami.api._wire import format_rfc3339, parse_rfc3339, require_aware
from hami.api.errors import AnnotationError


@dataclass(frozen=True)
class NodeLock:
    """Who holds a node's bind lock (`namespace`/`name` are None in the legacy form) and since when.

    `time` is timezone-aware; the wire keeps whole seconds.
    """

    time: datetime
    namespace: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        require_aware(self.time, "lock time")
        if (self.namespace is None) != (self.name is None):
            raise ValueError("a node lock names both the namespace and the pod, or neither")
        for part in (self.namespace, self.name):
            if part is not None and (not isinstance(part, str) or not part or "," in part):
                raise ValueError(f"lock owner part {part!r} must be a non-empty string without commas")

    @property
    def owner(self) -> str | None:
        """`<namespace>/<name>`, or None for a legacy lock."""
        return None if self.name is None else f"{self.namespace}/{self.name}"

    def owned_by(self, namespace: str, name: str) -> bool:
        return self.namespace == namespace and self.name == name

    def expired(self, now: datetime, ttl: timedelta) -> bool:
        """HAMi's rule: a lock older than `ttl` may be broken."""
        return require_aware(now, "now") - self.time > ttl


def encode_node_lock(lock: NodeLock) -> str:
    stamp = format_rfc3339(lock.time)
    return stamp if lock.name is None else f"{stamp},{lock.namespace},{lock.name}"


def decode_node_lock(value: str) -> NodeLock:
    """Either form; an owner with empty namespace and name (`<time>,,`) reads as no owner."""
    annotation = names.NODE_LOCK
    parts = value.split(",")
    if len(parts) not in (1, 3):
        raise AnnotationError(
            annotation,
            repr(value),
            f"has {len(parts)} comma-separated parts; expected '<RFC3339>,<namespace>,<pod>'",
        )
    moment = parse_rfc3339(parts[0])
    if moment is None:
        raise AnnotationError(
            annotation, f"time {parts[0]!r}", "is not an RFC3339 time; expected e.g. 2024-05-01T12:00:00Z"
        )
    if len(parts) == 1 or parts[1:] == ["", ""]:
        return NodeLock(moment)
    namespace, name = parts[1], parts[2]
    if not namespace or not name:
        raise AnnotationError(
            annotation, repr(value), "names only half an owner; expected '<RFC3339>,<namespace>,<pod>'"
        )
    return NodeLock(moment, namespace, name)


__all__ = ["NodeLock", "decode_node_lock", "encode_node_lock"]

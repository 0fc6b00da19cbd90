"""Watch machinery: the per-resource event log (the "watch cache") and one queue per watcher.

A watch from resourceVersion N replays the logged events after N and then follows live ones;
when N is older than the log's window it gets one ERROR event carrying a 410 `Expired` Status,
as the real server reports a compacted version. Events are pushed to watchers while the store
lock is held, so replay-then-follow never loses or duplicates an event. A watcher with a selector
sees an object that starts matching as ADDED and one that stops matching as DELETED (the old
object at the new resourceVersion), as the real watch cache does.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"


@dataclass
class Event:
    """One committed change. `old` is the previous state (None for ADDED)."""

    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None
    _encoded: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def line(self, as_type: str | None = None, obj: dict[str, Any] | None = None) -> bytes:
        """The newline-terminated JSON line a watch stream carries (cached per type for fan-out)."""
        kind = as_type or self.type
        if obj is not None:
            return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        cached = self._encoded.get(kind)
        if cached is None:
            cached = json.dumps({"type": kind, "object": self.obj}, separators=(",", ":")).encode() + b"\n"
            self._encoded[kind] = cached
        return cached


class EventLog:
    """The bounded history of one resource type; `compacted` is the newest version dropped from it."""

    def __init__(self, capacity: int) -> None:
        self.events: collections.deque[Event] = collections.deque()
        self.capacity = capacity
        self.compacted = 0

    def append(self, event: Event) -> None:
        self.events.append(event)
        while len(self.events) > self.capacity:
            self.compacted = self.events.popleft().rv

    def since(self, rv: int) -> list[Event]:
        return [e for e in self.events if e.rv > rv]


def initial_events_end(kind: str, api_version: str, rv: int) -> bytes:
    """The BOOKMARK that ends the initial events of a `sendInitialEvents=true` watch (watch-list)."""
    obj = {"kind": kind, "apiVersion": api_version,
           "metadata": {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}}
    return json.dumps({"type": BOOKMARK, "object": obj}, separators=(",", ":")).encode() + b"\n"


Matcher = Callable[[dict[str, Any]], bool]


class Watcher:
    """A watch subscription: filtered events in commit order, read with `next(timeout)`."""

    CLOSED = object()

    def __init__(self, namespace: str | None, matches: Matcher, on_close: Callable[[Watcher], None]) -> None:
        self.namespace = namespace
        self.matches = matches
        self._on_close = on_close
        self._queue: collections.deque[bytes | tuple[str, dict[str, Any], int]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.last_rv = 0
        self.created = time.monotonic()

    # -- producer side (called with the store lock held)

    def _in_scope(self, obj: dict[str, Any]) -> bool:
        return self.namespace is None or (obj.get("metadata") or {}).get("namespace") == self.namespace

    def offer(self, event: Event) -> None:
        """Translate `event` for this watcher's selector and queue it (or drop it)."""
        now = self._in_scope(event.obj) and self.matches(event.obj)
        before = event.old is not None and self._in_scope(event.old) and self.matches(event.old)
        if event.type == ADDED:
            item = (ADDED, event) if now else None
        elif event.type == DELETED:
            item = (DELETED, event) if (now or before) else None
        elif now and before:
            item = (MODIFIED, event)
        elif now:
            item = (ADDED, event)
        elif before:
            assert event.old is not None
            gone = dict(event.old)
            gone["metadata"] = {**gone.get("metadata", {}), "resourceVersion": str(event.rv)}
            item = (DELETED, event, gone)
        else:
            item = None
        if item is not None:
            self._put(item)

    def offer_line(self, line: bytes) -> None:
        """Queue a ready-made stream line (the initial-events-end BOOKMARK)."""
        self._put(line)

    def offer_error(self, status: dict[str, Any]) -> None:
        self._put(json.dumps({"type": ERROR, "object": status}, separators=(",", ":")).encode() + b"\n")
        self.close()

    def _put(self, item: Any) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append(item)
            self._cond.notify()

    # -- consumer side

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def next_item(self, timeout: float | None) -> Any:
        """The next queued item, None on timeout, or Watcher.CLOSED once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    return Watcher.CLOSED
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._queue.popleft()

    def next_line(self, timeout: float | None) -> bytes | object | None:
        """The next event as a watch-stream line (for the HTTP layer)."""
        item = self.next_item(timeout)
        if item is None or item is Watcher.CLOSED or isinstance(item, bytes):
            return item
        if len(item) == 3:
            kind, event, obj = item
            self.last_rv = event.rv
            return event.line(kind, obj)
        kind, event = item
        self.last_rv = event.rv
        return event.line(kind)

    def next_event(self, timeout: float | None, copy: bool = True) -> tuple[str, dict[str, Any]] | object | None:
        """The next event as (type, object) for in-process consumers; ERROR gives ("ERROR", status).

        `copy=False` hands out the stored object itself, for a caller that only serialises it."""
        item = self.next_item(timeout)
        if item is None or item is Watcher.CLOSED:
            return item
        if isinstance(item, bytes):
            parsed = json.loads(item)
            return parsed["type"], parsed["object"]
        if len(item) == 3:
            kind, event, obj = item
        else:
            (kind, event), obj = item, item[1].obj
        self.last_rv = event.rv
        return kind, deepcopy(obj) if copy else obj

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

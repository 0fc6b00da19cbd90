"""List-then-watch of one kind as raw JSON, through the official client.

The client's model objects cost more than the requests at 50,000 pods, so the list body and
every watch line are decoded with msgspec into plain dicts. The informer lists, hands every item
to the handler, says it is synced, then watches from the list's resourceVersion; a 410 Gone (the
version fell out of the server's window) or a broken stream relists — the handler receives every
current object again (it must be idempotent) and a `deleted` for objects that vanished meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
from kubernetes import client

from hami.k8s.client import Kube, Obj

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder().decode

# kind -> (api class, list-all method)
_LISTS = {
    "nodes": (client.CoreV1Api, "list_node"),
    "pods": (client.CoreV1Api, "list_pod_for_all_namespaces"),
}

Handler = Callable[[str, Obj], None]  # ("upsert" | "deleted", object)


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Informer:
    """Keeps one handler told of every object of `kind`; runs in a daemon thread."""

    def __init__(self, kube: Kube, kind: str, handler: Handler, *, watch_timeout_s: int = 300,
                 page_size: int = 5000) -> None:
        api_class, method = _LISTS[kind]
        self.kind = kind
        self._list = getattr(api_class(kube.api_client), method)
        self._timeout = kube.timeout
        self._handler = handler
        self._watch_timeout_s = watch_timeout_s
        self._page_size = page_size
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: dict[str, Obj] = {}  # key -> identity (uid, namespace, name) of what exists
        self._response: Any = None
        self.listing = False  # handing a list's items to the handler: the handler has seen part of it

    def start(self) -> Informer:
        if self._stop.is_set():
            return self
        thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        thread.start()
        self._thread = thread
        return self

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # shutdown interrupts a read blocked in another thread
                response.shutdown()
        thread = self._thread
        if thread is not None and thread.ident is not None:  # started (stop may race a start)
            thread.join(timeout=5)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                version = self._relist()
                self.synced.set()
                delay = 0.2
                while not self._stop.is_set() and version is not None:
                    version = self._watch(version)
            except Exception as exc:  # the informer outlives any one failure
                if self._stop.is_set():
                    return
                log.warning("informer kind=%s error=%s; relisting in %.1fs", self.kind, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _relist(self) -> str:
        items: list[Obj] = []
        cont = None
        while True:
            kw = {"limit": self._page_size, "_continue": cont} if cont else {"limit": self._page_size}
            response = self._list(_preload_content=False, _request_timeout=max(self._timeout, 30), **kw)
            body = _decode(response.data)
            items += body.get("items") or []
            meta = body.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                version = meta.get("resourceVersion") or ""
                break
        seen: dict[str, Obj] = {}
        self.listing = True
        try:
            with gc_paused():  # a list's objects live on in the handler's cache: no use collecting meanwhile
                for obj in items:
                    seen[object_key(obj)] = _identity(obj)
                    self._handler("upsert", obj)
            for key, identity in self._known.items():  # gone while we were not watching
                if key not in seen:
                    self._handler("deleted", {"metadata": identity})
        finally:
            self.listing = False
        self._known = seen
        log.info("informer kind=%s listed=%d resourceVersion=%s", self.kind, len(items), version)
        return version

    def _watch(self, version: str) -> str | None:
        """Follow the watch until it ends; the version to resume from, None to relist."""
        response = self._list(watch=True, resource_version=version, allow_watch_bookmarks=True,
                              timeout_seconds=self._watch_timeout_s, _preload_content=False,
                              _request_timeout=self._watch_timeout_s + 30)
        self._response = response
        buffer = b""
        try:
            for chunk in response.stream(65536, decode_content=True):
                if self._stop.is_set():
                    return None
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = _decode(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        log.info("informer kind=%s watch error=%s; relisting", self.kind, obj.get("message"))
                        return None
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    if kind == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if kind == "DELETED":
                        self._known.pop(key, None)
                        self._handler("deleted", obj)
                    else:
                        self._known[key] = _identity(obj)
                        self._handler("upsert", obj)
        finally:
            self._response = None
            response.release_conn()
        return version


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector around a bulk load: at 50,000 pods its full
    collections, triggered by the allocation count and each scanning everything alive, took
    half of the time of folding a list into the scheduler's cache."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _identity(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in ("uid", "namespace", "name") if k in meta}


def wait_synced(informers: list[Informer], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    return all(i.synced.wait(max(deadline - time.monotonic(), 0)) for i in informers)

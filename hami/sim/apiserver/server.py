"""The HTTP face of the simulated API server: Kubernetes REST paths on a loopback port.

Stdlib `ThreadingHTTPServer` speaking HTTP/1.1 (keep-alive, as urllib3 and kubectl expect), one
thread per connection. Watches stream newline-delimited JSON events with chunked transfer
encoding, end after `timeoutSeconds` (by default a random time between `min_watch_timeout` and
twice that, as the real server does), send BOOKMARK events when asked (`allowWatchBookmarks`),
and report a too-old resourceVersion as an ERROR event carrying a 410 Status. A request without
Content-Type is read as JSON (the official client sends POST bodies without one).

`stop()` ends every watch, closes every open connection and joins every handler thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import select
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from hami.sim.apiserver import errors, printing, resources, watch
from hami.sim.apiserver.store import Store

log = logging.getLogger(__name__)

_TRUE = ("true", "1")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # listen() backlog: the stdlib default of 5 resets connections when dozens of clients
    # connect at once on a busy machine (the load test's 55 clients)
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], api: ApiServer) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.handler_threads: set[threading.Thread] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_one, args=(request, client_address),
                                  name=f"apiserver-conn-{client_address[1]}", daemon=True)
        with self.conn_lock:
            self.connections.add(request)
            self.handler_threads.add(thread)
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            log.debug("connection from %s ended with an error", client_address, exc_info=True)
        finally:
            self.shutdown_request(request)
            with self.conn_lock:
                self.connections.discard(request)
                self.handler_threads.discard(threading.current_thread())

    def close_connections(self, timeout: float) -> None:
        with self.conn_lock:
            conns, threads = list(self.connections), list(self.handler_threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if content_type in ("application/yaml", "application/apply-patch+yaml"):
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise errors.bad_request(f"invalid YAML body: {exc}") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise errors.bad_request(f"invalid JSON body: {exc}") from exc

    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.server.api.record(self.command, self.path, code)

    def _send_error(self, exc: errors.StatusError) -> None:
        self._send_json(exc.code, exc.status())

    def _dispatch(self) -> None:
        try:
            self._route()
        except errors.StatusError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            log.exception("internal error serving %s %s", self.command, self.path)
            self._send_error(errors.StatusError(500, "InternalError", f"Internal error occurred: {exc}"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    # -- routing

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [p for p in url.path.split("/") if p]
        method = self.command
        if method in ("GET", "HEAD"):
            doc = self._discovery(parts)
            if doc is not None:
                self._send_json(200, doc)
                return
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            api_version, rest = "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise errors.path_not_found(url.path)
        watching = False
        if rest and rest[0] == "watch":
            watching, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise errors.path_not_found(url.path)
        res = resources.lookup(api_version, rest[0])
        if res is None or (res.namespaced and namespace is None and len(rest) > 1) or \
                (not res.namespaced and namespace is not None):
            raise errors.path_not_found(url.path)
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if "dryRun" in query:
            raise errors.bad_request("dryRun is not supported by the simulated API server")
        store = self.server.api.store
        if res.plural == "bindings":
            if method != "POST" or name is not None or namespace is None:
                raise errors.method_not_allowed()
            body = self._body() or {}
            pod = (body.get("metadata") or {}).get("name", "")
            self._send_json(201, store.bind(namespace, pod, body))
            return
        if sub is not None and sub not in res.subresources:
            raise errors.path_not_found(url.path)
        if name is None:
            self._collection(method, res, namespace, query, watching)
        elif sub == "binding":
            if method != "POST":
                raise errors.method_not_allowed()
            body = self._body() or {}
            body_name = (body.get("metadata") or {}).get("name")
            if body_name and body_name != name:
                raise errors.bad_request(f"the name of the object ({body_name}) does not match the name on the "
                                         f"URL ({name})")
            self._send_json(201, store.bind(namespace or "", name, body))
        else:
            self._item(method, res, namespace, name, sub, query)

    def _discovery(self, parts: list[str]) -> dict[str, Any] | None:
        if parts == ["version"]:
            return resources.SERVER_VERSION
        if parts == ["api"]:
            return resources.api_versions()
        if parts == ["apis"]:
            return resources.api_group_list()
        if parts == ["api", "v1"]:
            return resources.resource_list("v1")
        if len(parts) == 2 and parts[0] == "apis":
            return resources.api_group(parts[1])
        if len(parts) == 3 and parts[0] == "apis":
            return resources.resource_list(f"{parts[1]}/{parts[2]}")
        if parts and parts[0] in ("healthz", "readyz", "livez"):
            return {"status": "ok"}
        return None

    def _collection(self, method: str, res: resources.Resource, namespace: str | None, query: dict[str, str],
                    watching: bool) -> None:
        store = self.server.api.store
        if method in ("GET", "HEAD"):
            if watching or query.get("watch", "").lower() in _TRUE:
                self._watch(res, namespace, query)
                return
            limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
            listed = store.list(res.plural, namespace, label_selector=query.get("labelSelector"),
                                field_selector=query.get("fieldSelector"), limit=limit,
                                continue_token=query.get("continue") or None)
            table = printing.wants_table(self.headers.get("Accept"))
            self._send_json(200, printing.table(res, listed, table) if table else listed)
        elif method == "POST":
            if namespace is None and res.namespaced:
                raise errors.method_not_allowed()
            self._send_json(201, store.create(res.plural, namespace, self._body()))
        elif method == "DELETE":
            body = self._body() or {}
            listed = store.list(res.plural, namespace, label_selector=query.get("labelSelector"),
                                field_selector=query.get("fieldSelector"))
            for item in listed["items"]:
                try:
                    store.delete(res.plural, namespace, item["metadata"]["name"],
                                 grace_period_seconds=_grace(query, body))
                except errors.StatusError as exc:
                    if exc.code != 404:
                        raise
            self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        else:
            raise errors.method_not_allowed()

    def _item(self, method: str, res: resources.Resource, namespace: str | None, name: str, sub: str | None,
              query: dict[str, str]) -> None:
        store = self.server.api.store
        if method in ("GET", "HEAD"):
            obj = store.get(res.plural, namespace, name)
            table = printing.wants_table(self.headers.get("Accept"))
            if table:
                obj = printing.table(res, {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                           "items": [obj]}, table)
            self._send_json(200, obj)
        elif method == "PUT":
            self._send_json(200, store.update(res.plural, namespace, name, self._body(), sub))
        elif method == "PATCH":
            content_type = self.headers.get("Content-Type") or "application/merge-patch+json"
            self._send_json(200, store.patch(res.plural, namespace, name, self._body(), content_type, sub))
        elif method == "DELETE" and sub is None:
            body = self._body() or {}
            result = store.delete(res.plural, namespace, name, grace_period_seconds=_grace(query, body),
                                  preconditions=body.get("preconditions"))
            self._send_json(200, result)
        else:
            raise errors.method_not_allowed()

    def _watch(self, res: resources.Resource, namespace: str | None, query: dict[str, str]) -> None:
        api = self.server.api
        watcher = api.store.watch(res.plural, namespace, resource_version=query.get("resourceVersion"),
                                  label_selector=query.get("labelSelector"),
                                  field_selector=query.get("fieldSelector"))
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else \
                random.uniform(api.min_watch_timeout, 2 * api.min_watch_timeout)
            bookmarks = query.get("allowWatchBookmarks", "").lower() in _TRUE
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            api.record(self.command, self.path, 200)
            self._stream(watcher, res, timeout, bookmarks)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            watcher.close()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, watcher: watch.Watcher, res: resources.Resource, timeout: float, bookmarks: bool) -> None:
        api = self.server.api
        now = time.monotonic()
        deadline = now + timeout
        next_bookmark = now + api.bookmark_interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                if bookmarks:
                    self._bookmark(watcher, res)
                return
            wait = min(deadline, next_bookmark if bookmarks else deadline, now + 1.0) - now
            line = watcher.next_line(max(wait, 0.0))
            if line is watch.Watcher.CLOSED:
                return
            if isinstance(line, bytes):
                self._chunk(line)
                continue
            now = time.monotonic()
            if bookmarks and now >= next_bookmark:
                self._bookmark(watcher, res)
                next_bookmark = now + api.bookmark_interval
            elif self._client_gone():
                return

    def _bookmark(self, watcher: watch.Watcher, res: resources.Resource) -> None:
        rv = self.server.api.store.bookmark(watcher)
        if rv is not None:
            obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"resourceVersion": str(rv)}}
            self._chunk(json.dumps({"type": watch.BOOKMARK, "object": obj}, separators=(",", ":")).encode() + b"\n")


def _grace(query: dict[str, str], body: dict[str, Any]) -> int | None:
    if body.get("gracePeriodSeconds") is not None:
        return int(body["gracePeriodSeconds"])
    if query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
        return int(query["gracePeriodSeconds"])
    return None


class ApiServer:
    """The simulated API server: a Store behind a loopback HTTP port, plus its kubeconfig."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, store: Store | None = None, history: int = 1000,
                 bookmark_interval: float = 60.0, min_watch_timeout: float = 1800.0) -> None:
        self.store = store or Store(history=history)
        self.bookmark_interval = bookmark_interval
        self.min_watch_timeout = min_watch_timeout
        self._address = (host, port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=10000)

    def record(self, method: str, path: str, code: int) -> None:
        """Remember a request (method, path, status) for tests and debugging."""
        self.requests.append((method, path, code))

    def start(self) -> ApiServer:
        if self._httpd is not None:
            return self
        self._httpd = _Server(self._address, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="apiserver", daemon=True)
        self._thread.start()
        log.info("api server listening url=%s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._httpd is None:
            return
        self.store.close()
        self._httpd.shutdown()
        self._httpd.close_connections(timeout)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._httpd, self._thread = None, None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the API server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    def write_kubeconfig(self, path: str | Path, context: str = "hami-sim") -> Path:
        """A kubeconfig the official client and kubectl use unchanged (plain HTTP, a dummy token)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "hami-sim"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
            "current-context": context,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

"""The HTTP face of the simulated API server: Kubernetes REST paths on a loopback port.

Stdlib `ThreadingHTTPServer` speaking HTTP/1.1 (keep-alive, as urllib3 and kubectl expect), one
thread per connection. What a client on a kept-alive connection can rely on, as with
kube-apiserver:
- every request body is read (or the connection closed) before the answer, whatever the answer,
  so a rejected request never leaves bytes that the next request would read as its request line;
- a request line, headers or a body that stop arriving are abandoned after `read_timeout`
  (a body: 408 and close); a bad `Content-Length` is 400 (and close); a body over 3 MiB is 413
  (read past and discarded up to 64 MiB so the client sees the answer; beyond that, closed);
- each response is one write on a `TCP_NODELAY` socket (no delayed-ACK stall between headers
  and body);
- malformed input is a 4xx `Status` naming what is wrong; a 500 means a bug here.

Watches stream newline-delimited JSON events with chunked transfer encoding, end after
`timeoutSeconds` (by default a random time between `min_watch_timeout` and twice that, as the
real server does), send BOOKMARK events when asked (`allowWatchBookmarks`), report a too-old
resourceVersion as an ERROR event carrying a 410 Status, and carry `meta.k8s.io` Tables when the
Accept header asks (`kubectl get -w`: column definitions in the first event only). A request
without Content-Type is read as JSON (the official client sends POST bodies without one).

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
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from hami.sim.apiserver import admission, errors, openapi, patching, printing, resources, schema, watch
from hami.sim.apiserver.store import FIELD_VALIDATION, Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's MaxRequestBodyBytes
DISCARD_LIMIT = 64 * 1024 * 1024  # a larger body is not read past: 413 and close at once
_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
         "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_JSON_TYPES = ("application/json", "*/*", "application/*")
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


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


class _BodyError(Exception):
    """The request body could not be used; unless `keep` the connection cannot be reused either."""

    def __init__(self, error: errors.StatusError, keep: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.keep = keep


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: see the module docstring
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- one request

    def handle_one_request(self) -> None:
        """BaseHTTPRequestHandler's loop body, with timeouts once a request starts and every method routed."""
        try:
            self.connection.settimeout(None)
            if not self.rfile.peek(1):  # idle keep-alive: wait for the next request (or the close)
                self.close_connection = True
                return
            self.connection.settimeout(self.server.api.read_timeout)
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline, self.request_version, self.command = "", "", ""
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self._dispatch()
            self.wfile.flush()
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("connection abandoned: %r", exc)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, headers): it closes the connection, as Go's server does."""
        self.close_connection = True
        super().send_error(code, message, explain)

    # -- plumbing

    def _read_body(self) -> bytes:
        """The whole body (Content-Length or chunked), or _BodyError; called before anything is answered."""
        length_headers = self.headers.get_all("Content-Length") or []
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if chunked and length_headers:
            raise _BodyError(errors.bad_request("a request may not carry both Content-Length and Transfer-Encoding"))
        if chunked:
            return self._read_chunked()
        if not length_headers:
            return b""
        values = {v.strip() for v in length_headers}
        text = values.pop()
        if values or not text.isdigit():
            raise _BodyError(errors.bad_request(f"invalid Content-Length {', '.join(length_headers)!r}: send the "
                                                f"body's size in bytes, once"))
        length = int(text)
        if length > MAX_BODY_BYTES:
            if length > DISCARD_LIMIT:
                raise _BodyError(errors.too_large(MAX_BODY_BYTES))
            self._read_exactly(length, keep=False)  # read past it, so the client sees the 413
            raise _BodyError(errors.too_large(MAX_BODY_BYTES), keep=True)
        return self._read_exactly(length)

    def _read_exactly(self, length: int, keep: bool = True) -> bytes:
        chunks, got = [], 0
        try:
            while got < length:
                chunk = self.rfile.read1(min(length - got, 65536))
                if not chunk:
                    break
                if keep:
                    chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            pass
        if got < length:
            raise _BodyError(errors.StatusError(408, "Timeout", f"the request body ended or stalled after {got} of "
                                                f"the {length} bytes its Content-Length declared; send the whole "
                                                f"body, or a Content-Length that matches it"))
        return b"".join(chunks)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        try:
            while True:
                line = self.rfile.readline(1024)
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _BodyError(errors.bad_request(f"malformed chunked body: bad chunk size {size_text!r}")) \
                        from None
                if size < 0:
                    raise _BodyError(errors.bad_request("malformed chunked body: negative chunk size"))
                if len(body) + size > MAX_BODY_BYTES:
                    raise _BodyError(errors.too_large(MAX_BODY_BYTES))
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return bytes(body)
                body += self._read_exactly(size)
                if self.rfile.readline(1024).strip():
                    raise _BodyError(errors.bad_request("malformed chunked body: chunk longer than its size"))
        except TimeoutError:
            raise _BodyError(errors.StatusError(408, "Timeout", "the chunked request body stalled; send it whole")) \
                from None

    def _content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _body(self, media: tuple[str, ...] = errors.BODY_MEDIA_TYPES) -> Any:
        """The request body parsed as JSON or YAML (415 for other media types); None when empty."""
        raw = self._raw_body
        content_type = self._content_type()
        if content_type in ("", *_JSON_TYPES) or content_type in patching.PATCH_TYPES:
            if not raw:
                return None
            try:
                return json.loads(raw, parse_constant=_no_constant)
            except (ValueError, RecursionError) as exc:
                raise errors.bad_request(f"the request body is not valid JSON: {exc}") from exc
        if content_type in _YAML_TYPES:
            if not raw:
                return None
            try:
                return _as_json(yaml.safe_load(raw))
            except (yaml.YAMLError, RecursionError, ValueError) as exc:
                raise errors.bad_request(f"the request body is not valid YAML: {exc}") from exc
        raise errors.unsupported_media_type(content_type, media)

    def _send(self, code: int, data: bytes, content_type: str = "application/json",
              extra: list[tuple[str, str]] | None = None) -> None:
        """One response, headers and body in a single write."""
        self.log_request(code)
        self._headers_buffer = [b"%s %d %s\r\n" % (self.protocol_version.encode(), code,
                                                   self.responses.get(code, ("",))[0].encode("latin-1", "replace"))]
        headers = [("Date", self.date_time_string()), ("Content-Type", content_type),
                   ("Content-Length", str(len(data))), ("Cache-Control", "no-cache, private"),
                   *(extra or []), *[("Warning", _warning(w)) for w in self._warnings]]
        if self.close_connection:
            headers.append(("Connection", "close"))
        for key, value in headers:
            self._headers_buffer.append(f"{key}: {value}\r\n".encode("latin-1", "replace"))
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()
        self.server.api.record(self.command, self.path, code)

    def _send_json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body, separators=(",", ":")).encode())

    def _send_error(self, exc: errors.StatusError) -> None:
        self._send_json(exc.code, exc.status())

    def _dispatch(self) -> None:
        self._warnings: list[str] = []
        try:
            self._raw_body = self._read_body()
        except _BodyError as exc:
            self.close_connection = self.close_connection or not exc.keep
            self._send_error(exc.error)
            return
        try:
            self._route()
        except errors.StatusError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            log.exception("internal error serving %s %s", self.command, self.path)
            self._send_error(errors.StatusError(500, "InternalError", f"Internal error occurred: {exc}"))

    # -- routing

    def _route(self) -> None:
        url = urlsplit(self.path)
        try:
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            dry_run_values = parse_qs(url.query).get("dryRun", [])
        except ValueError as exc:
            raise errors.bad_request(f"malformed query string: {exc}") from exc
        parts = [unquote(p) for p in url.path.split("/") if p]
        method = self.command
        if method not in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
            raise errors.method_not_allowed()
        if method in ("GET", "HEAD"):
            if parts[:1] == ["openapi"]:
                self._openapi(parts[1:])
                return
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
        options = _Options(method, query, dry_run_values)
        store = self.server.api.store
        if res.plural == "bindings":
            if method != "POST" or name is not None or namespace is None:
                raise errors.method_not_allowed()
            body = self._object_body()
            pod = (body.get("metadata") or {}).get("name", "") if isinstance(body.get("metadata"), dict) else ""
            self._send_json(201, store.bind(namespace, pod, body, dry_run=options.dry_run))
            return
        if sub is not None and sub not in res.subresources:
            raise errors.path_not_found(url.path)
        if name is None:
            self._collection(method, res, namespace, options, watching)
        elif sub == "binding":
            if method != "POST":
                raise errors.method_not_allowed()
            body = self._object_body()
            meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            if meta.get("name") and meta["name"] != name:
                raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the "
                                         f"URL ({name})")
            self._send_json(201, store.bind(namespace or "", name, body, dry_run=options.dry_run))
        else:
            if watching:
                raise errors.path_not_found(url.path)
            self._item(method, res, namespace, name, sub, options)

    def _object_body(self) -> dict[str, Any]:
        body = self._body()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return body

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

    def _openapi(self, parts: list[str]) -> None:
        accept = self.headers.get("Accept") or ""
        if parts == ["v2"]:
            if "protobuf" in accept and "json" not in accept:
                raise errors.StatusError(406, "NotAcceptable", "only application/json is served for /openapi/v2")
            self._send(200, openapi.v2_bytes())
            return
        if parts == ["v3"]:
            self._send(200, openapi.v3_index_bytes())
            return
        if len(parts) >= 2 and parts[0] == "v3":
            doc = openapi.v3_bytes("/".join(parts[1:]))
            if doc is not None:
                self._send(200, doc, extra=[("Cache-Control", "public, immutable"),
                                            ("Etag", f'"{openapi.v3_hash("/".join(parts[1:]))}"')])
                return
        raise errors.path_not_found("/openapi/" + "/".join(parts))

    def _collection(self, method: str, res: resources.Resource, namespace: str | None, options: _Options,
                    watching: bool) -> None:
        store = self.server.api.store
        if method in ("GET", "HEAD"):
            if watching or options.boolean("watch"):
                self._watch(res, namespace, options)
                return
            listed = store.list(res.plural, namespace, label_selector=options.get("labelSelector"),
                                field_selector=options.get("fieldSelector"), limit=options.integer("limit"),
                                continue_token=options.get("continue") or None,
                                resource_version=options.resource_version(),
                                resource_version_match=options.get("resourceVersionMatch") or None)
            table = printing.wants_table(self.headers.get("Accept"))
            self._send_json(200, printing.table(res, listed, table) if table else listed)
        elif method == "POST":
            if namespace is None and res.namespaced:
                raise errors.method_not_allowed()
            body = self._body()
            created = store.create(res.plural, namespace, body, dry_run=options.dry_run,
                                   field_validation=options.field_validation("CreateOptions"),
                                   warnings=self._warnings)
            self._send_json(201, created)
        elif method == "DELETE":
            delete = options.delete_options(self._body())
            listed = store.list(res.plural, namespace, label_selector=options.get("labelSelector"),
                                field_selector=options.get("fieldSelector"))
            for item in listed["items"]:
                try:
                    store.delete(res.plural, namespace, item["metadata"]["name"], **delete)
                except errors.StatusError as exc:
                    if exc.code != 404:
                        raise
            self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        else:
            raise errors.method_not_allowed()

    def _item(self, method: str, res: resources.Resource, namespace: str | None, name: str, sub: str | None,
              options: _Options) -> None:
        store = self.server.api.store
        if method in ("GET", "HEAD"):
            options.resource_version()
            obj = store.get(res.plural, namespace, name)
            table = printing.wants_table(self.headers.get("Accept"))
            if table:
                obj = printing.table(res, {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                           "items": [obj]}, table)
            self._send_json(200, obj)
        elif method == "PUT":
            body = self._body()
            self._send_json(200, store.update(res.plural, namespace, name, body, sub, dry_run=options.dry_run,
                                              field_validation=options.field_validation("UpdateOptions"),
                                              warnings=self._warnings))
        elif method == "PATCH":
            content_type = self._content_type() or patching.MERGE
            if content_type not in patching.PATCH_TYPES:
                accepted = errors.PATCH_MEDIA_TYPES
                raise errors.unsupported_media_type(content_type, accepted)
            body = self._body(errors.PATCH_MEDIA_TYPES)
            self._send_json(200, store.patch(res.plural, namespace, name, body, content_type, sub,
                                             dry_run=options.dry_run,
                                             field_validation=options.field_validation("PatchOptions"),
                                             warnings=self._warnings))
        elif method == "DELETE" and sub is None:
            delete = options.delete_options(self._body())
            self._send_json(200, store.delete(res.plural, namespace, name, **delete))
        else:
            raise errors.method_not_allowed()

    # -- watch

    def _watch(self, res: resources.Resource, namespace: str | None, options: _Options) -> None:
        api = self.server.api
        send_initial = options.boolean("sendInitialEvents")
        bookmarks = bool(options.boolean("allowWatchBookmarks"))
        _check_watch_options(options, send_initial, bookmarks)
        timeout_seconds = options.integer("timeoutSeconds")
        watcher = api.store.watch(res.plural, namespace, resource_version=options.resource_version(),
                                  label_selector=options.get("labelSelector"),
                                  field_selector=options.get("fieldSelector"), send_initial_events=send_initial)
        try:
            timeout = max(0, timeout_seconds) if timeout_seconds is not None else \
                random.uniform(api.min_watch_timeout, 2 * api.min_watch_timeout)
            self.send_response_only(200)
            self.send_header("Date", self.date_time_string())
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            api.record(self.command, self.path, 200)
            if self.command == "HEAD":
                return
            self._stream(watcher, res, timeout, bookmarks, printing.wants_table(self.headers.get("Accept")))
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

    def _stream(self, watcher: watch.Watcher, res: resources.Resource, timeout: float, bookmarks: bool,
                table: str | None) -> None:
        api = self.server.api
        now = time.monotonic()
        deadline = now + timeout
        next_bookmark = now + api.bookmark_interval
        columns = True
        while True:
            now = time.monotonic()
            if now >= deadline:
                if bookmarks:
                    self._bookmark(watcher, res)
                return
            wait = min(deadline, next_bookmark if bookmarks else deadline, now + 1.0) - now
            if table:
                item = watcher.next_event(max(wait, 0.0), copy=False)
                if isinstance(item, tuple):
                    kind, obj = item
                    if kind not in (watch.ERROR, watch.BOOKMARK):
                        rv = (obj.get("metadata") or {}).get("resourceVersion", "")
                        obj = printing.table(res, {"metadata": {"resourceVersion": rv}, "items": [obj]}, table,
                                             columns=columns)
                        columns = False
                    line: Any = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
                else:
                    line = item
            else:
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


def _warning(text: str) -> str:
    """A Warning header value (RFC 7234 warn-code 299, the warn-text a quoted string)."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'299 - "{quoted}"'


def _as_json(value: Any) -> Any:
    """YAML data as JSON data (sigs.k8s.io/yaml's conversion): timestamps as strings, keys as strings."""
    if isinstance(value, dict):
        return {str(k).lower() if isinstance(k, bool) else str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if (isinstance(value, float) and value != value) or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value} cannot be represented in JSON")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise ValueError(f"a YAML {type(value).__name__} cannot be represented in JSON")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_watch_options(options: _Options, send_initial: bool | None, bookmarks: bool) -> None:
    causes = []
    match = options.get("resourceVersionMatch")
    if send_initial:
        if match != "NotOlderThan":
            causes.append(("resourceVersionMatch", "Forbidden: sendInitialEvents requires setting "
                                                   "resourceVersionMatch to NotOlderThan"))
        if not bookmarks:
            causes.append(("allowWatchBookmarks", "Forbidden: sendInitialEvents requires setting "
                                                  "allowWatchBookmarks to true"))
    elif match:
        causes.append(("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden for watch unless "
                                               "sendInitialEvents is provided"))
    if causes:
        raise errors.invalid("ListOptions.meta.k8s.io", "", causes)


class _Options:
    """Query parameters (and DeleteOptions bodies) read as kube-apiserver reads them: bad values are 400/422."""

    def __init__(self, method: str, query: dict[str, str], dry_run: list[str]) -> None:
        self.method = method
        self.query = query
        self.dry_run = self._dry_run(dry_run)

    def get(self, key: str) -> str | None:
        return self.query.get(key)

    def _kind(self) -> str:
        return {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions",
                "DELETE": "DeleteOptions"}.get(self.method, "ListOptions")

    def _dry_run(self, values: list[str]) -> bool:
        bad = [v for v in values if v != "All"]
        if bad:
            raise errors.invalid(f"{self._kind()}.meta.k8s.io", "", [(
                "dryRun", f'Unsupported value: {json.dumps(bad)}: supported values: "All"')])
        return bool(values)

    def integer(self, key: str) -> int | None:
        text = self.query.get(key)
        if text is None or text == "":
            return None
        try:
            return int(text, 10)
        except ValueError:
            raise errors.bad_request(f'invalid value "{text}" for query parameter {key}: strconv.ParseInt: '
                                     f'parsing "{text}": invalid syntax; send a whole number') from None

    def boolean(self, key: str) -> bool | None:
        text = self.query.get(key)
        if text is None:
            return None
        if text == "":
            return True  # a bare flag (?watch)
        if text not in _BOOL:
            raise errors.bad_request(f'invalid value "{text}" for query parameter {key}: strconv.ParseBool: '
                                     f'parsing "{text}": invalid syntax; send true or false')
        return _BOOL[text]

    def resource_version(self) -> str | None:
        text = self.query.get("resourceVersion")
        if text and not text.isdigit():
            raise errors.bad_request(f'invalid resource version "{text}": expected a non-negative integer, such as '
                                     f"the metadata.resourceVersion of a list or an object")
        return text

    def field_validation(self, kind: str) -> str:
        value = self.query.get("fieldValidation") or "Warn"
        if value not in FIELD_VALIDATION:
            raise errors.invalid(f"{kind}.meta.k8s.io", "", [(
                "fieldValidation", f'Unsupported value: "{value}": supported values: "", "Ignore", "Strict", '
                                   f'"Warn"')])
        return value

    def delete_options(self, body: Any) -> dict[str, Any]:
        """Keyword arguments for Store.delete from the query and a DeleteOptions body (the body wins)."""
        options: dict[str, Any] = {"grace_period_seconds": self.integer("gracePeriodSeconds"),
                                   "propagation_policy": self.query.get("propagationPolicy") or None,
                                   "dry_run": self.dry_run}
        orphan = self.boolean("orphanDependents")
        if body is not None:
            if not isinstance(body, dict):
                raise errors.bad_request("a DELETE body must be a DeleteOptions object")
            if body.get("kind") not in (None, "DeleteOptions"):
                raise errors.bad_request(f"a DELETE body must be a DeleteOptions object, not a {body.get('kind')}")
            try:
                decoded, _ = schema.decode("V1DeleteOptions", {k: v for k, v in body.items()
                                                               if k not in ("kind", "apiVersion")})
            except schema.DecodeError as exc:
                raise errors.cannot_handle("DeleteOptions", "meta.k8s.io/v1", str(exc)) from exc
            if decoded.get("gracePeriodSeconds") is not None:
                options["grace_period_seconds"] = decoded["gracePeriodSeconds"]
            if decoded.get("propagationPolicy") is not None:
                options["propagation_policy"] = decoded["propagationPolicy"]
            if decoded.get("orphanDependents") is not None:
                orphan = decoded["orphanDependents"]
            if decoded.get("dryRun") is not None:
                options["dry_run"] = self._dry_run(decoded["dryRun"]) or options["dry_run"]
            options["preconditions"] = decoded.get("preconditions")
        if orphan is not None:
            if options["propagation_policy"] is not None:
                raise errors.invalid("DeleteOptions", "", [("propagationPolicy", "Invalid value: orphanDependents "
                                                                                 "and propagationPolicy cannot both "
                                                                                 "be set")])
            options["propagation_policy"] = "Orphan" if orphan else "Background"
        return options


class ApiServer:
    """The simulated API server: a Store behind a loopback HTTP port, plus its kubeconfig.

    Mutating admission webhooks registered as `MutatingWebhookConfiguration` objects are called
    for the writes they match (`hami.sim.apiserver.admission`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, store: Store | None = None, history: int = 1000,
                 bookmark_interval: float = 60.0, min_watch_timeout: float = 1800.0,
                 read_timeout: float = 30.0) -> None:
        self.store = store or Store(history=history)
        if type(self.store.admission) is not admission.WebhookAdmission:
            self.store.admission = admission.WebhookAdmission(self.store)
        self.bookmark_interval = bookmark_interval
        self.min_watch_timeout = min_watch_timeout
        self.read_timeout = read_timeout
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
        self.store.admission.close()
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

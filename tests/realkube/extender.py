"""A tiny scheduler extender for the smoke tests: answers /filter, /prioritize and /bind as the
extender protocol says (PascalCase JSON, reference §1.4), with rules a test sets, and records
every call. /bind creates the Binding through the pods/binding subresource, as HAMi's does.

It stands where our scheduler extender will: the plane's KubeSchedulerConfiguration points at
`url` through the same `hami_extender()` stanza the chart uses.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client as k8s


@dataclass
class TestExtender:
    """Rules: `reject` nodes fail /filter; `scores` (node -> 0..10) answer /prioritize."""

    __test__ = False  # not a test class

    reject: dict[str, str] = field(default_factory=dict)  # node -> reason
    scores: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    api: k8s.ApiClient | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> TestExtender:
        extender = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                verb = self.path.strip("/")
                try:
                    args = json.loads(self.rfile.read(length) or b"{}")
                    answer = extender.answer(verb, args)
                    code = 200
                except Exception as exc:  # the protocol carries errors in the body
                    answer, code = {"Error": f"{type(exc).__name__}: {exc}"}, 200
                body = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="test-extender", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, verb: str, args: dict[str, Any]) -> Any:
        with self._lock:
            self.calls.append((verb, args))
        if verb == "filter":
            names = args.get("NodeNames") or []
            return {"NodeNames": [n for n in names if n not in self.reject],
                    "FailedNodes": {n: self.reject[n] for n in names if n in self.reject}, "Error": ""}
        if verb == "prioritize":
            names = args.get("NodeNames") or []
            return [{"Host": n, "Score": self.scores.get(n, 0)} for n in names]
        if verb == "bind":
            assert self.api is not None, "give the extender an ApiClient to bind with"
            body = {"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": args["PodName"], "namespace": args["PodNamespace"], "uid": args["PodUID"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": args["Node"]}}
            k8s.CoreV1Api(self.api).create_namespaced_binding(args["PodNamespace"], body, _preload_content=False)
            return {"Error": ""}
        raise ValueError(f"unknown verb {verb!r}")

    def verbs_for(self, pod: str) -> list[str]:
        """The verbs called for pod `pod` (its name), in order."""
        with self._lock:
            calls = list(self.calls)
        out = []
        for verb, args in calls:
            name = args.get("PodName") or ((args.get("Pod") or {}).get("metadata") or {}).get("name")
            if name == pod:
                out.append(verb)
        return out

    def args_for(self, pod: str, verb: str) -> list[dict[str, Any]]:
        with self._lock:
            calls = list(self.calls)
        return [a for v, a in calls if v == verb
                and (a.get("PodName") or ((a.get("Pod") or {}).get("metadata") or {}).get("name")) == pod]

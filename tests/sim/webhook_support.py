"""A tiny HTTPS admission webhook for the control-plane tests, with its CA from trustme."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

Decide = Callable[[dict[str, Any]], dict[str, Any]]


def add_label(key: str, value: str) -> Decide:
    """A webhook decision: allow, adding one label with a JSON patch."""
    def decide(request: dict[str, Any]) -> dict[str, Any]:
        labels = ((request.get("object") or {}).get("metadata") or {}).get("labels")
        ops: list[dict[str, Any]] = [] if labels is not None else [
            {"op": "add", "path": "/metadata/labels", "value": {}}]
        ops.append({"op": "add", "path": f"/metadata/labels/{key.replace('/', '~1')}", "value": value})
        return {"allowed": True, "patch": ops}
    return decide


class TinyWebhook:
    """Answers AdmissionReviews over TLS (certificate for 127.0.0.1) with what `decide` returns; records reviews."""

    def __init__(self, decide: Decide, ca: trustme.CA | None = None, delay: float = 0.0) -> None:
        self.ca = ca or trustme.CA()
        self.decide = decide
        self.delay = delay
        self.reviews: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.reviews.append({**review, "path": self.path})
                time.sleep(hook.delay)
                answer = dict(hook.decide(review["request"]))
                if "patch" in answer:
                    answer["patch"] = base64.b64encode(json.dumps(answer["patch"]).encode()).decode()
                    answer["patchType"] = "JSONPatch"
                body = json.dumps({"apiVersion": review["apiVersion"], "kind": "AdmissionReview",
                                   "response": {"uid": review["request"]["uid"], **answer}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the API server gave up waiting

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/mutate"

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.cert_pem.bytes()).decode()

    def configuration(self, name: str = "hooks", *, hook_name: str = "mutate.hami.io", operations: tuple[str, ...] = (
            "CREATE",), resources: tuple[str, ...] = ("pods",), failure_policy: str = "Fail", timeout: int = 10,
            ca_bundle: str | None = None, **extra: Any) -> dict[str, Any]:
        """A MutatingWebhookConfiguration pointing at this webhook."""
        hook = {"name": hook_name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": failure_policy, "timeoutSeconds": timeout,
                "clientConfig": {"url": self.url, "caBundle": self.ca_bundle if ca_bundle is None else ca_bundle},
                "rules": [{"operations": list(operations), "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": list(resources)}], **extra}
        return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name}, "webhooks": [hook]}

    def __enter__(self) -> TinyWebhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

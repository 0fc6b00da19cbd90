"""The API server's HTTP layer on raw sockets: kept-alive connections stay in step whatever the request,
bodies that lie about their length, size and media-type limits, TCP_NODELAY, and a bounded fuzz of all of it."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hami.sim.apiserver import ApiServer
from hami.sim.apiserver.server import DISCARD_LIMIT, MAX_BODY_BYTES
from tests.sim.cp_support import Raw, server

__all__ = ["server"]

POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}


def _version_ok(raw: Raw) -> None:
    raw.request("GET", "/version")
    resp = raw.response()
    assert resp is not None and resp.status == 200 and resp.json()["major"] == "1"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/api/v1/nope", 404),  # no such resource
    ("PUT", "/api/v1/namespaces/default/pods", 405),  # PUT on a collection
    ("POST", "/api/v1/namespaces/default/pods?dryRun=Sometimes", 422),  # refused before the body is used
    ("POST", "/api/v1/namespaces/default/pods?fieldValidation=Loose", 422),
    ("FOO", "/api/v1/pods", 405),  # a method the server has no use for
    ("GET", "/api/v1/pods?limit=abc", 400),
])
def test_a_rejected_request_leaves_nothing_in_the_socket(server: ApiServer, method: str, path: str,
                                                         status: int) -> None:
    body = json.dumps(POD).encode()
    with Raw(server.port) as raw:
        raw.request(method, path, body)
        first = raw.response()
        assert first is not None and first.status == status and first.json()["kind"] == "Status"
        _version_ok(raw)  # the same connection: the old body was not read as a request line
        _version_ok(raw)


def test_a_body_shorter_than_declared_times_out_instead_of_hanging() -> None:
    with ApiServer(read_timeout=0.3) as srv, Raw(srv.port) as raw:
        raw.request("POST", "/api/v1/namespaces/default/configmaps", b'{"metadata":', length=500)
        resp = raw.response()  # Raw's socket timeout (5 s) fails the test if the server hangs
        assert resp is not None and resp.status == 408 and resp.closes
        assert "declared" in resp.json()["message"]
        assert raw.closed()
        assert srv.requests[-1][2] == 408


def test_a_stalled_request_line_is_dropped() -> None:
    with ApiServer(read_timeout=0.3) as srv, Raw(srv.port) as raw:
        raw.send(b"GET /api/v1/po")
        assert raw.closed(wait=5)
        with Raw(srv.port) as again:
            _version_ok(again)  # the server itself is fine


@pytest.mark.parametrize(("length", "status"), [("-1", 400), ("abc", 400), ("1e3", 400), ("5, 6", 400),
                                                 (str(10**30), 413), (str(DISCARD_LIMIT + 1), 413)])
def test_bad_content_length_is_a_client_error_and_closes(server: ApiServer, length: str, status: int) -> None:
    with Raw(server.port) as raw:
        raw.send(f"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                 f"\r\n{{}}".encode())
        resp = raw.response()
        assert resp is not None and resp.status == status
        assert resp.json()["reason"] in ("BadRequest", "RequestEntityTooLarge")
        assert raw.closed()


def test_a_body_over_3_mib_is_413(server: ApiServer) -> None:
    big = json.dumps({"metadata": {"name": "big"}, "data": {"x": "y" * (MAX_BODY_BYTES + 10)}}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/api/v1/namespaces/default/configmaps", big, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        status = json.loads(resp.read())
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server reset the connection instead of answering 413")
    finally:
        conn.close()
    assert resp.status == 413 and status["reason"] == "RequestEntityTooLarge"
    assert status["message"] == f"Request entity too large: limit is {MAX_BODY_BYTES}"
    conn.request("GET", "/version")  # read past, so the connection is still in step
    assert conn.getresponse().status == 200


def test_chunked_request_bodies_are_read(server: ApiServer) -> None:
    body = json.dumps({"metadata": {"name": "chunky"}}).encode()
    with Raw(server.port) as raw:
        raw.send(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Type: application/json\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        resp = raw.response()
        assert resp is not None and resp.status == 201 and resp.json()["metadata"]["name"] == "chunky"
        _version_ok(raw)


@pytest.mark.parametrize(("content_type", "method", "path"), [
    ("text/plain", "POST", "/api/v1/namespaces/default/configmaps"),
    ("application/vnd.kubernetes.protobuf", "POST", "/api/v1/namespaces/default/configmaps"),
    ("application/apply-patch+yaml", "PATCH", "/api/v1/namespaces/default/configmaps/cm"),
    ("application/json", "PATCH", "/api/v1/namespaces/default/configmaps/cm"),
])
def test_unsupported_media_types_are_415(server: ApiServer, content_type: str, method: str, path: str) -> None:
    server.store.create("configmaps", "default", {"metadata": {"name": "cm"}})
    with Raw(server.port) as raw:
        raw.request(method, path, b'{"metadata": {"name": "cm"}}', {"Content-Type": content_type})
        resp = raw.response()
        assert resp is not None and resp.status == 415
        assert resp.json()["reason"] == "UnsupportedMediaType" and "accepted media types include" in \
            resp.json()["message"]
        _version_ok(raw)


def test_responses_go_out_on_a_no_delay_socket_in_one_write(server: ApiServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    original = socket.socket.sendall

    def recording(sock: socket.socket, data: bytes, *args: object) -> None:
        if sock.getsockname()[1] == server.port:
            writes.append(bytes(data))
        original(sock, data, *args)

    with Raw(server.port) as raw:
        _version_ok(raw)  # the connection exists now
        with server._httpd.conn_lock:  # type: ignore[union-attr]
            conns = list(server._httpd.connections)  # type: ignore[union-attr]
        assert conns and all(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in conns)
        monkeypatch.setattr(socket.socket, "sendall", recording)
        raw.request("GET", "/api/v1/namespaces/default")
        resp = raw.response()
        assert resp is not None and resp.status == 200
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(resp.body)


# ------------------------------------------------------------------------------------------------
# fuzz: random requests on one kept-alive connection


_PATHS = ["/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods/p", "/api/v1/pods",
          "/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/default/configmaps/cm", "/api/v1/nodes",
          "/api/v1/nodes/n", "/api/v1/namespaces/default/pods/p/status", "/api/v1/namespaces/default/pods/p/binding",
          "/apis/coordination.k8s.io/v1/namespaces/default/leases", "/version", "/openapi/v3", "/api", "/apis",
          "/api/v1/namespaces/default/events", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"]
_QUERIES = ["", "?watch=1&timeoutSeconds=0", "?limit=1", "?limit=-3", "?timeoutSeconds=abc", "?dryRun=All",
            "?labelSelector=a%20in%20(", "?fieldSelector=spec.nodeName%3D", "?gracePeriodSeconds=x",
            "?propagationPolicy=Sideways", "?resourceVersion=1&resourceVersionMatch=Exact", "?continue=%%%",
            "?fieldValidation=Strict", "?resourceVersionMatch=Exact", "?orphanDependents=maybe"]
_CONTENT_TYPES = [None, "application/json", "application/yaml", "application/merge-patch+json",
                  "application/json-patch+json", "application/strategic-merge-patch+json", "text/plain"]
_scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _mutate(draw: st.DrawFn) -> bytes:
    """A body: a valid pod with one part replaced by random JSON, random JSON, or random bytes."""
    kind = draw(st.sampled_from(["pod", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(_json)).encode()
    pod = json.loads(json.dumps(POD))
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    target = draw(st.sampled_from([("metadata",), ("spec",), ("spec", "containers"), ("spec", "containers", 0),
                                   ("spec", "containers", 0, "resources"),
                                   ("spec", "containers", 0, "resources", "limits"), ("metadata", "labels")]))
    parent: object = pod
    for step in target[:-1]:
        parent = parent[step]  # type: ignore[index]
    parent[target[-1]] = draw(_json)  # type: ignore[index]
    return json.dumps(pod).encode()


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes, int | None]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW"]))
    path = draw(st.sampled_from(_PATHS)) + draw(st.sampled_from(_QUERIES))
    headers: dict[str, str] = {}
    content_type = draw(st.sampled_from(_CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Accept"] = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    body = _mutate(draw) if draw(st.booleans()) else b""
    length = draw(st.sampled_from([None, None, None, len(body) + 7]))  # sometimes a truncated body
    return method, path, headers, body, length


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(_requests(), min_size=1, max_size=4))
def test_fuzz_never_500_never_hangs_and_the_connection_stays_usable(sequence: list) -> None:
    with ApiServer(read_timeout=0.2) as srv, Raw(srv.port, timeout=10) as raw:
        srv.store.create("pods", "default", {**POD})
        srv.store.create("configmaps", "default", {"metadata": {"name": "cm"}})
        srv.store.create("nodes", None, {"metadata": {"name": "n"}})
        for method, path, headers, body, length in sequence:
            raw.request(method, path, body, headers, length)
            resp = raw.response()
            if resp is None:
                break  # closed: allowed, as long as it did not hang
            assert resp.status < 500, (method, path, headers, body, resp.body[:300])
            if resp.status >= 400 and resp.body and method != "HEAD":
                assert resp.json()["kind"] == "Status"
            if resp.closes:
                assert raw.closed()
                break
        else:
            _version_ok(raw)

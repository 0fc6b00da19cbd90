"""The extender over HTTP: the verbs' wire format, bad input answered (never a 500 or a hang), TLS and
certificate reload, readiness, and the metrics exposition (HAMi's names and the seed's form)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.api import codecs, names
from hami.scheduler.app import Scheduler, SchedulerConfig
from hami.scheduler.extender import extender_score
from hami.sim.apiserver import ApiServer
from tests.scheduler.conftest import gpu_pod, local_scheduler, wait_for


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduler]:
    with local_scheduler(tmp_path_factory.mktemp("sched")) as scheduler:
        yield scheduler


def post(s: Scheduler, path: str, body: Any, conn: http.client.HTTPConnection | None = None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", s.server.server_address[1], timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if own:
        conn.close()
    return response.status, json.loads(payload) if payload else None


def args(pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    pod = dict(pod)
    pod["metadata"] = {**pod["metadata"], "uid": "uid-" + pod["metadata"]["name"], "namespace": "default"}
    return {"Pod": pod, "Nodes": None, "NodeNames": nodes}


def test_filter_returns_every_fitting_node_and_reasons_for_the_rest(sched: Scheduler) -> None:
    pod = gpu_pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"})
    status, reply = post(sched, "/filter", args(pod, ["mig-a", "core-a", "ghost"]))
    assert status == 200 and reply["Error"] == ""
    assert sorted(reply["NodeNames"]) == ["core-a", "mig-a"]
    assert "no GPUs registered" in reply["FailedAndUnresolvableNodes"]["ghost"]
    big = gpu_pod("big", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "60000"})
    _, reply = post(sched, "/filter", args(big, ["mig-a", "core-a"]))
    assert reply["NodeNames"] == ["mig-a"]  # 7g fits one A100; an A10 never holds 60000 MiB
    assert "exceeds the GPU's total memory" in reply["FailedAndUnresolvableNodes"]["core-a"]


def test_failed_nodes_say_what_the_pod_asks_and_a_node_too_small_says_its_size(sched: Scheduler) -> None:
    gpus = int(sched.engine.gpu_counts(sched.engine.node_ids(["core-a"]))[0])
    many = gpu_pod("many", {"nvidia.com/gpu": str(gpus + 1), "nvidia.com/gpumem": "10000"},
                   annotations={"nvidia.com/vgpu-mode": "hami-core"})
    _, reply = post(sched, "/filter", args(many, ["core-a"]))
    # more shares than the node has GPUs (a share per GPU): never fits there, and says the numbers
    reason = reply["FailedAndUnresolvableNodes"]["core-a"]
    assert f"asks {gpus + 1} GPUs × 10000 MiB" in reason and f"the node has {gpus} GPU" in reason
    assert not reply["FailedNodes"]
    big = gpu_pod("big", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "60000"})
    _, reply = post(sched, "/filter", args(big, ["core-a"]))
    assert "(asks 1 GPU × 60000 MiB)" in reply["FailedAndUnresolvableNodes"]["core-a"]


def test_rejection_metrics_are_labelled_by_reason_never_by_the_pods_numbers(sched: Scheduler) -> None:
    from hami._core.results import REASON_TEXT

    for mem in ("60000", "61000", "62000"):
        post(sched, "/filter", args(gpu_pod(f"big{mem}", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": mem}),
                                    ["core-a", "ghost"]))
    text = sched.metrics.render()
    labels = {line.split('reason="', 1)[1].split('"', 1)[0] for line in text.splitlines()
              if line.startswith("hami_scheduler_node_rejections_total{")}
    assert labels and labels <= set(REASON_TEXT.values()), labels  # bounded: no "asks 1 GPU × 60000 MiB"


def test_prioritize_maps_scores_to_0_10(sched: Scheduler) -> None:
    pod = gpu_pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"})
    status, reply = post(sched, "/prioritize", args(pod, ["mig-a", "core-a", "ghost"]))
    assert status == 200
    scores = {h["Host"]: h["Score"] for h in reply}
    assert scores["ghost"] == 0 and 0 <= scores["core-a"] <= 10 and 0 <= scores["mig-a"] <= 10
    assert scores["mig-a"] > scores["core-a"]  # the unified pool: MIG nodes rank above shares
    assert [extender_score(s) for s in (0, 4, 5, 14, 15, 95, 100)] == [0, 0, 1, 1, 2, 10, 10]


def test_pods_without_gpus_pass_through(sched: Scheduler) -> None:
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    _, reply = post(sched, "/filter", args(pod, ["mig-a", "ghost"]))
    assert reply["NodeNames"] == ["mig-a", "ghost"]


def test_a_malformed_request_is_reported_per_node(sched: Scheduler) -> None:
    pod = gpu_pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "-1"})
    _, reply = post(sched, "/filter", args(pod, ["mig-a"]))
    assert reply["NodeNames"] == [] and "gpumem" in reply["FailedAndUnresolvableNodes"]["mig-a"]


@pytest.mark.parametrize(("body", "error"), [
    ({}, "Pod"), ({"Pod": "x"}, "Pod"), ({"Pod": {"metadata": {}}, "NodeNames": "n"}, "NodeNames"),
    ([1, 2], "ExtenderArgs"),
])
def test_bad_extender_args_get_an_error_reply(sched: Scheduler, body: Any, error: str) -> None:
    status, reply = post(sched, "/filter", body)
    assert status == 200 and error in reply["Error"]


def test_bad_binding_args_and_transport_errors(sched: Scheduler) -> None:
    status, reply = post(sched, "/bind", {"PodName": "p"})
    assert status == 200 and "PodNamespace" in reply["Error"]
    status, reply = post(sched, "/bind", {"PodName": "p", "PodNamespace": "default", "PodUID": "u", "Node": "mig-a"})
    assert "no longer exists" in reply["Error"]
    status, reply = post(sched, "/filter", b"{not json")
    assert status == 400 and "not JSON" in reply["Error"]
    status, reply = post(sched, "/nowhere", {})
    assert status == 404


def _raw(s: Scheduler, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", s.server.server_address[1]), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_length_problems_are_4xx_and_the_connection_closes(sched: Scheduler) -> None:
    assert b" 411 " in _raw(sched, b"POST /filter HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 400 " in _raw(sched, b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n")
    assert b" 413 " in _raw(sched, b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    # a body shorter than declared: the server gives up on it and closes, no answer, no hang
    assert _raw(sched, b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}") == b""


def test_keep_alive_survives_errors(sched: Scheduler) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sched.server.server_address[1], timeout=10)
    pod = gpu_pod("p", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"})
    for _ in range(3):
        status, reply = post(sched, "/filter", args(pod, ["mig-a"]), conn)
        assert status == 200 and reply["NodeNames"] == ["mig-a"]
        status, _ = post(sched, "/filter", {"Pod": 1}, conn)
        assert status == 200
    conn.close()


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["Pod", "NodeNames", "Nodes", "metadata", "spec", "containers", "uid",
                                         "PodName", "PodNamespace", "PodUID", "Node", "items", "name"]),
                        inner, max_size=4), max_leaves=25),
       st.sampled_from(["/filter", "/prioritize", "/bind", "/webhook"]))
def test_fuzzed_bodies_never_crash_the_server(sched: Scheduler, body: Any, path: str) -> None:
    status, reply = post(sched, path, body)
    assert status == 200
    assert reply is not None


def test_readyz_and_healthz(sched: Scheduler) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sched.server.server_address[1], timeout=5)
    conn.request("GET", "/readyz")
    assert conn.getresponse().read() == b"ok"
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200


def test_metrics_show_hami_names_and_the_seed_mig_form(sched: Scheduler) -> None:
    post(sched, "/filter", args(gpu_pod("m", {"nvidia.com/gpu": "1"}), ["mig-a"]))  # one latency sample
    text = sched.metrics.render()
    assert 'hami_gpu_memory_limit_bytes{device_index="0",device_type="NVIDIA A10",device_uuid="GPU-c-0"' in text
    assert "# HELP nodeGPUMigInstance GPU Sharing mode. 0 for hami-core, 1 for mig, 2 for mps" in text
    # GPU-a-0 holds 3g.40gb at 4 (in use): the earliest default geometry holding it is 3g x 2
    seed = [line for line in text.splitlines() if line.startswith("nodeGPUMigInstance{") and "GPU-a-0" in line]
    assert seed == [
        'nodeGPUMigInstance{deviceidx="0",deviceuuid="GPU-a-0",migname="3g.40gb-0",nodeid="mig-a",zone="vGPU"} 0.0',
        'nodeGPUMigInstance{deviceidx="0",deviceuuid="GPU-a-0",migname="3g.40gb-1",nodeid="mig-a",zone="vGPU"} 1.0',
    ]
    assert 'hami_node_gpu_mig_instance_info{compute_instance_id="0",device_index="0",device_uuid="GPU-a-0"' in text
    assert "hami_scheduler_request_duration_seconds_bucket" in text


def test_the_metrics_port_streams_text_prometheus_parses_with_escaped_labels() -> None:
    """The GPU families are written as text, not through prometheus_client's objects: what a
    scraper reads over HTTP must parse back to the engine's numbers, odd label values included."""
    from prometheus_client.parser import text_string_to_metric_families

    from hami._core import Engine
    from hami.scheduler.cache import ClusterCache
    from hami.scheduler.metrics import SchedulerMetrics

    odd = 'NVIDIA "odd" A10\\x'
    devs = [codecs.NodeDevice(f"GPU-q-{i}", i, 10, 24576, 100, odd, mode=names.MODE_HAMI_CORE, health=True)
            for i in range(2)]
    cache = ClusterCache(Engine())
    cache.node_event("upsert", {"metadata": {"name": "node-q", "uid": "u", "resourceVersion": "1", "annotations": {
        names.NODE_REGISTER: codecs.encode_node_register(devs)}}})
    metrics = SchedulerMetrics(cache.engine, cache)
    server, _thread = metrics.serve("127.0.0.1", 0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = reply.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        server.shutdown()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    limits = {s.labels["device_uuid"]: (s.labels["device_type"], s.value)
              for s in families["hami_gpu_memory_limit_bytes"].samples}
    assert limits == {"GPU-q-0": (odd, 24576 * 2**20), "GPU-q-1": (odd, 24576 * 2**20)}
    assert [s.labels["devicetype"] for s in families["GPUDeviceSharedNum"].samples] == [odd, odd]
    assert "hami_scheduler_filter_nodes" in families  # the event metrics come first, in the same body
    # handed over in pieces of at most BATCH_LINES samples, never a family at once
    import hami.scheduler.metrics as M

    old, M.BATCH_LINES = M.BATCH_LINES, 1
    try:
        pieces = list(metrics.gpus.chunks())
    finally:
        M.BATCH_LINES = old
    assert max(sum(1 for line in piece.splitlines() if not line.startswith("#")) for piece in pieces) == 1
    assert "".join(pieces) == "".join(metrics.gpus.chunks())  # the same text, cut differently


def test_tls_serves_and_reloads_its_certificate(tmp_path: Path) -> None:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"

    def issue(ca: trustme.CA) -> None:
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))

    first, second = trustme.CA(), trustme.CA()
    issue(first)
    s = Scheduler(SchedulerConfig(kubeconfig=str(kubeconfig), http_bind="127.0.0.1:0", metrics_bind="127.0.0.1:0",
                                  cert_file=str(cert_file), key_file=str(key_file))).start()
    try:
        def get(ca: trustme.CA) -> int:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            conn = http.client.HTTPSConnection("127.0.0.1", s.server.server_address[1], context=context, timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
            return status

        assert get(first) == 200
        time.sleep(1.1)  # mtime granularity and the once-a-second check
        issue(second)
        wait_for(lambda: _trusts(get, second), 10, "the rotated certificate served")
        with pytest.raises(ssl.SSLError):
            get(first)
    finally:
        s.stop()
        api.stop()


def _trusts(get, ca) -> bool:
    try:
        return get(ca) == 200
    except ssl.SSLError:
        return False


def test_stop_cuts_kept_alive_connections(tmp_path: Path) -> None:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    s = Scheduler(SchedulerConfig(kubeconfig=str(kubeconfig), http_bind="127.0.0.1:0",
                                  metrics_bind="127.0.0.1:0")).start()
    conn = http.client.HTTPConnection("127.0.0.1", s.server.server_address[1], timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok"
    s.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    api.stop()


def test_get_on_a_verb_is_405(sched: Scheduler) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sched.server.server_address[1], timeout=5)
    conn.request("GET", "/filter")
    response = conn.getresponse()
    assert response.status == 405 and b"POST" in response.read()


def test_start_up_errors_are_messages_on_stderr_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hami.cli import main

    assert main(["scheduler", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "pass --kubeconfig" in capsys.readouterr().err
    assert main(["scheduler", "--kubeconfig", "x", "--http-bind", "nonsense"]) == 2
    assert "--http-bind 'nonsense'" in capsys.readouterr().err
    bad = tmp_path / "device-config.yaml"
    bad.write_text("nvidia:\n  deviceSplitCount: -3\n")
    assert main(["scheduler", "--kubeconfig", "x", "--device-config-file", str(bad)]) == 2
    assert "deviceSplitCount" in capsys.readouterr().err

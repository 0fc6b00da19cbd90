"""The agent's HTTP endpoint: /healthz, /readyz and the metrics, scraped over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from hami.api import names
from hami.api.codecs import decode_mig_allocations
from hami.deviceplugin.config import NodeConfig
from hami.deviceplugin.metrics import HttpEndpoint
from hami.deviceplugin.state import AgentState
from hami.nvml import Return
from tests.deviceplugin.conftest import Dev


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, name: str, **labels: str) -> float:
    hits = [v for (n, ls), v in found.items() if n == name and all((k, v_) in ls for k, v_ in labels.items())]
    assert len(hits) == 1, f"{name} {labels}: {len(hits)} samples"
    return hits[0]


def test_readyz_waits_for_registration_and_reconciliation() -> None:
    from prometheus_client import CollectorRegistry

    state = AgentState("n", NodeConfig())
    endpoint = HttpEndpoint(state, CollectorRegistry(), "127.0.0.1", 0).start()
    try:
        assert get(endpoint.port, "/healthz") == (200, "ok\n")
        code, body = get(endpoint.port, "/readyz")
        assert code == 503 and "not registered with kubelet" in body
        state.registered = True
        code, body = get(endpoint.port, "/readyz")
        assert code == 503 and "reconciliation" in body
        state.reconciled = True
        assert get(endpoint.port, "/readyz")[0] == 200
        code, body = get(endpoint.port, "/nope")
        assert code == 404 and "/metrics" in body
    finally:
        endpoint.stop()


def test_metrics_report_gpus_instances_allocations_and_nvml_errors(mig_node) -> None:
    node = mig_node
    agent = node.start_agent(metrics_port=0, metrics_address="127.0.0.1")
    assert agent.http is not None
    port = agent.http.port
    assert get(port, "/readyz")[0] == 200
    node.decided_pod("m", [[Dev(0, 19968, 100, "2g.20gb", 0, 2)]])
    node.wait_phase("m", "Running")
    node.decided_pod("idle", [[Dev(1, 9728, 100, "1g.10gb", 0, 1)]])
    node.wait_phase("idle", "Running")
    node.delete_pod("idle")
    agent.sync()
    node.fake.inject_fault("nvmlDeviceGetMemoryInfo", Return.UNKNOWN)
    agent.sync()
    code, text = get(port, "/metrics")
    assert code == 200
    found = samples(text)
    gpu0 = node.uuid(0)
    total = node.fake.read().gpus[0].memory_mib * 1024 * 1024
    assert value(found, "hami_host_gpu_memory_total_bytes", device_uuid=gpu0, node="gpu-node") == total
    assert value(found, "hami_host_gpu_memory_used_bytes", device_uuid=gpu0) >= 0
    assert value(found, "hami_gpu_mig_mode", device_uuid=gpu0) == 1
    assert value(found, "hami_gpu_mig_mode", device_uuid=node.uuid(2)) == 0
    assert value(found, "hami_mig_instances", device_uuid=gpu0, profile="2g.20gb", state="in-use") == 1
    assert value(found, "hami_mig_instances", device_uuid=node.uuid(1), profile="1g.10gb", state="idle") == 1
    [a] = decode_mig_allocations(node.annotations("m")[names.VGPU_MIG_ALLOCATIONS])
    assert value(found, "hami_mig_device_info", namespace="default", pod="m", container="c0", vdevice_index="0",
                 device_uuid=gpu0, mig_uuid=a.mig_uuid, profile="2g.20gb", gpu_instance_id=str(a.gpu_instance_id),
                 compute_instance_id=str(a.compute_instance_id)) == 1
    assert value(found, "hami_allocations_total", result="success") == 2
    assert value(found, "hami_nvml_errors_total", function="nvmlDeviceGetMemoryInfo",
                 code="NVML_ERROR_UNKNOWN") == 1
    assert value(found, "hami_gpu_health", device_uuid=gpu0) == 1

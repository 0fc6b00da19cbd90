"""`hami sim up` starts our node agent (`hami device-plugin`, a subprocess) on every node: each
registers its GPUs with its kubelet and the API server, and serves decided pods."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from kubernetes import client, config

from hami.api import names
from hami.api.codecs import (
    ContainerDevice,
    MigAllocation,
    Placement,
    decode_mig_allocations,
    decode_node_register,
    encode_mig_allocations,
    encode_pod_devices,
)
from hami.sim.cluster import sim_up
from tests.deviceplugin.conftest import wait_for


def test_sim_up_runs_a_node_agent_per_node(tmp_path: Path) -> None:
    out, stop = io.StringIO(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        sim_up("(1 x A100-SXM4-80GB, mode=mig), (1 x A10)", workdir=tmp_path, out=out, stop=stop)))
    thread.start()
    try:
        wait_for(lambda: "try: kubectl" in out.getvalue(), 30)
        api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
        core = client.CoreV1Api(api)

        def registered() -> dict[str, str]:
            found = {}
            for n in core.list_node().items:
                value = (n.metadata.annotations or {}).get(names.NODE_REGISTER)
                allocatable = (n.status.allocatable or {}).get(names.RESOURCE_COUNT)
                if value and allocatable not in (None, "0"):
                    found[n.metadata.name] = value
            return found if len(found) == 2 else {}

        found = wait_for(registered, 60, "both agents registered")
        [mig_gpu] = decode_node_register(found["node-0"])
        [core_gpu] = decode_node_register(found["node-1"])
        assert mig_gpu.mode == "mig" and mig_gpu.mig_profiles and core_gpu.mode == "hami-core"
        uuid = mig_gpu.id
        entry = encode_pod_devices([(ContainerDevice(uuid, "NVIDIA", 19968, 100),)])
        now = str(int(time.time()))
        core.create_namespaced_pod("default", {"metadata": {"name": "m", "annotations": {
            names.VGPU_NODE: "node-0", names.VGPU_TIME: now, names.VGPU_DEVICES_ALLOCATED: entry,
            names.VGPU_DEVICES_TO_ALLOCATE: entry, names.BIND_PHASE: "allocating", names.BIND_TIME: now,
            names.VGPU_MIG_ALLOCATIONS: encode_mig_allocations(
                [MigAllocation(0, 0, uuid, "2g.20gb", Placement(2, 2))])}},
            "spec": {"nodeName": "node-0", "containers": [{"name": "c", "image": "cuda", "resources": {
                "limits": {names.RESOURCE_COUNT: "1"}}}]}})
        wait_for(lambda: core.read_namespaced_pod("m", "default").status.phase in ("Running", "Failed"), 30)
        pod = core.read_namespaced_pod("m", "default")
        assert pod.status.phase == "Running", pod.status.message
        [allocation] = decode_mig_allocations(pod.metadata.annotations[names.VGPU_MIG_ALLOCATIONS])
        assert allocation.realised and allocation.placement == Placement(2, 2)
        api.close()
    finally:
        stop.set()
        thread.join(60)
    assert result == [0]
    assert (tmp_path / "nodes" / "node-0" / "agent.log").exists()

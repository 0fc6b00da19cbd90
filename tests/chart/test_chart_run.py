"""The rendered Deployment's extender and DaemonSet's agent run: our installed `hami` entry point with
exactly the rendered flags, files and environment (tests/chart/pods.py), on the local control plane
with a simulated A100 node (its kubelet, its NVML). Their readiness probes answer 200, and a GPU pod
is placed by kube-scheduler through the rendered extender stanza and realised on a MIG instance by
the rendered agent."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from hami.api import names
from hami.k8s import Kube
from hami.sim import fakenvml
from hami.sim.cluster import ControlPlane, SimNode, fakenvml_attacher, fakenvml_state, parse_nodes
from hami.sim.kubescheduler import ExtenderConfig, ManagedResource
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig
from tests.chart.conftest import NAMESPACE, configmap_data, find, render
from tests.chart.pods import LocalContainer
from tests.scheduler.conftest import wait_for

NODE = "gpu-0"
POD = "hami-scheduler-7d9f-abcde"  # the scheduler Pod's name (downward API); kube-scheduler's identity prefix
VALUES = {"devicePlugin": {"nodeConfig": [{"name": NODE, "operatingmode": "mig"}]}}


def extender_from_rendered(objects: list[dict[str, Any]], url: str) -> ExtenderConfig:
    """The rendered KubeSchedulerConfiguration's extender, at the port the extender really listens on."""
    (e,) = yaml.safe_load(configmap_data(objects, "hami-scheduler-config", "config.yaml"))["extenders"]
    return ExtenderConfig(url_prefix=url, filter_verb=e["filterVerb"], prioritize_verb=e["prioritizeVerb"],
                          bind_verb=e["bindVerb"], weight=e["weight"],
                          http_timeout=float(e["httpTimeout"].removesuffix("s")),
                          node_cache_capable=e["nodeCacheCapable"], ignorable=e["ignorable"],
                          tls_insecure=e["tlsConfig"]["insecure"],
                          managed_resources=tuple(ManagedResource(m["name"], m["ignoredByScheduler"])
                                                  for m in e["managedResources"]))


class LeaseHolder:
    """Stands in for the scheduler Pod's kube-scheduler: holds the Lease the rendered
    --leader-lease names, as "<pod name>_<uuid>", renewing every 2 s (the chart's retryPeriod)."""

    def __init__(self, kube: Kube, lease: str) -> None:
        self.kube = kube
        self.namespace, _, self.name = lease.partition("/")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.kube.hold_lease(self.name, self.namespace, f"{POD}_0b7c", 15)
            self._stop.wait(2.0)

    def start(self) -> LeaseHolder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def release(tmp_path: Path) -> Iterator[dict[str, Any]]:
    objects = render(VALUES)
    deployment = find(objects, "Deployment", "hami-scheduler")
    daemonset = find(objects, "DaemonSet", "hami-device-plugin")
    ca = trustme.CA()
    cert = ca.issue_cert("hami-scheduler.kube-system.svc", "127.0.0.1")
    secret = {"cert": cert.cert_chain_pems[0].bytes(), "key": cert.private_key_pem.bytes()}  # certgen's keys
    extender = LocalContainer(objects, deployment, "extender",
                              {"metadata.name": POD, "metadata.namespace": NAMESPACE},
                              secrets={"hami-scheduler-tls": secret}, log=tmp_path / "extender.log")
    url = extender.url("extender", scheme="HTTPS")
    agents: list[LocalContainer] = []

    def start_agent(node: SimNode, kubeconfig: Path) -> LocalContainer:
        agent = LocalContainer(objects, daemonset, "agent", {"spec.nodeName": node.name},
                               host_paths={"/var/lib/kubelet/device-plugins": node.plugin_dir,
                                           "/usr/local/vgpu": tmp_path / "host" / "vgpu",
                                           "/tmp/vgpulock": tmp_path / "host" / "vgpulock"},
                               # what the NVIDIA runtime provides on a GPU node: NVML (here the simulated one)
                               env={"KUBECONFIG": str(kubeconfig), "HAMI_NVML_LIBRARY": str(fakenvml.library_path()),
                                    fakenvml.STATE_ENV: str(node.state_path)},
                               log=tmp_path / f"agent-{node.name}.log")
        agents.append(agent)
        return agent.start()

    plane = ControlPlane(parse_nodes("1 x (1 x A100-SXM4-80GB, mode=mig, name=gpu)"), tmp_path / "plane",
                         scheduler=KubeSchedulerConfig(extenders=(extender_from_rendered(objects, url),),
                                                       initial_backoff=0.2, max_backoff=1.0),
                         create_state=fakenvml_state, start_plugin=start_agent, attacher=fakenvml_attacher)
    plane.start()
    kube = Kube.connect(plane.kubeconfig)
    holder: LeaseHolder | None = None
    try:
        # the scheduler Pod itself (the leader labels it), bound already so no scheduler touches it
        kube.create("pods", {"metadata": {"name": POD, "labels": {"app.kubernetes.io/component": "scheduler"}},
                             "spec": {"nodeName": NODE, "containers": [{"name": "extender", "image": "hami"}]}},
                    NAMESPACE)
        extender.env = {"KUBECONFIG": str(plane.kubeconfig)}
        extender.start()
        lease = next(a.split("=", 1)[1] for a in extender.container["command"] if a.startswith("--leader-lease="))
        holder = LeaseHolder(kube, lease).start()
        yield {"kube": kube, "extender": extender, "agents": agents, "plane": plane, "deployment": deployment}
    finally:
        if holder is not None:
            holder.stop()
        extender.stop()
        plane.stop()
        for agent in agents:
            agent.stop()
        kube.close()


def test_rendered_scheduler_and_agent_become_ready_and_place_a_mig_pod(release: dict[str, Any]) -> None:
    extender, (agent,) = release["extender"], release["agents"]
    extender.wait_probe("readinessProbe")
    extender.wait_probe("livenessProbe")
    kube_scheduler = next(c for c in release["deployment"]["spec"]["template"]["spec"]["containers"]
                          if c["name"] == "kube-scheduler")
    assert extender.probe("", kube_scheduler["livenessProbe"]) == 200  # the extender's health, for kube-scheduler
    agent.wait_probe("readinessProbe")
    agent.wait_probe("livenessProbe")
    kube: Kube = release["kube"]
    wait_for(lambda: '"mode":"mig"' in kube.get("nodes", NODE)["metadata"]["annotations"].get(
        names.NODE_REGISTER, "").replace(" ", ""), 30, "the agent registered its GPU in MIG mode (the node config)")
    kube.create("pods", {"metadata": {"name": "trainer"}, "spec": {
        "schedulerName": names.SCHEDULER_NAME,
        "containers": [{"name": "main", "image": "cuda",
                        "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}}}]}}, "default")

    def realised() -> dict[str, str] | None:
        pod = kube.get("pods", "trainer", "default")
        ann = pod["metadata"].get("annotations") or {}
        return ann if ann.get(names.BIND_PHASE) == names.BIND_PHASE_SUCCESS else None

    ann = wait_for(realised, 60, "the pod bound by the rendered extender and allocated by the rendered agent")
    assert '"migUUID"' in ann[names.VGPU_MIG_ALLOCATIONS]
    role = kube.get("pods", POD, NAMESPACE)["metadata"]["labels"].get("hami.io/scheduler-role")
    assert role == "leader"  # what the rendered webhook Service selects
    metrics = extender.url("metrics", "/metrics")
    wait_for(lambda: "hami_node_gpu_mig_instance_info{" in urllib.request.urlopen(metrics, timeout=5).read().decode(),
             30, "the realised instance in the scheduler's metrics (the agent's report folded in)")

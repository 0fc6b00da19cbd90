"""A node for the agent: the local API server, the simulated kubelet (real gRPC over unix sockets),
a fakenvml node, and our agent in this process, with its loops slowed down so tests drive the
reconciler by hand (`agent.sync()`) and fault injection counts only the calls a test makes.

Decided pods are written with the scheduler's annotations directly (hami/api codecs): the
scheduler is another issue's.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from hami.api import names
from hami.api.codecs import (
    ContainerDevice,
    MigAllocation,
    NodeLock,
    Placement,
    encode_mig_allocations,
    encode_node_lock,
    encode_pod_devices,
)
from hami.deviceplugin.agent import NodeAgent
from hami.deviceplugin.options import AgentOptions
from hami.k8s import Kube
from hami.nvml import Nvml
from hami.sim import fakenvml
from hami.sim.apiserver import ApiServer
from hami.sim.cluster import FakeNvmlAttacher
from hami.sim.kubelet import Kubelet, short_socket_dir
from tests.nvml.helpers import library

NODE = "gpu-node"


def nodeconfig(**entry: Any) -> str:
    """The `hami-device-plugin` ConfigMap's config.json with one entry for the test node."""
    return json.dumps({"nodeconfig": [{"name": NODE, **entry}]})


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s")


@dataclass
class Dev:
    """One decided device: a hami-core share, or a MIG profile at a placement."""

    gpu: int
    memory: int = 0
    cores: int = 0
    profile: str | None = None
    start: int = 0
    size: int = 0


@dataclass
class Node:
    """Everything one test node is made of; `start_agent()` / `stop_agent()` may repeat."""

    tmp: Path
    fake: fakenvml.FakeNode
    api: ApiServer
    kube: Kube
    kubelet: Kubelet
    plugin_dir: Path
    options: AgentOptions
    agent: NodeAgent | None = None
    agents: list[NodeAgent] = field(default_factory=list)

    @property
    def store(self):
        return self.api.store

    def uuid(self, index: int) -> str:
        return self.fake.read().gpus[index].uuid

    def start_agent(self, **overrides: Any) -> NodeAgent:
        options = replace(self.options, **overrides)
        agent = NodeAgent(options, self.kube, Nvml(library())).start()
        self.agent = agent
        self.agents.append(agent)
        return agent

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    # -- the API objects -------------------------------------------------------------------------

    def node(self) -> dict[str, Any]:
        return self.store.get("nodes", None, NODE)

    def node_annotations(self) -> dict[str, str]:
        return self.node()["metadata"].get("annotations") or {}

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        try:
            return self.store.get("pods", namespace, name)
        except Exception:
            return None

    def phase(self, name: str) -> str | None:
        pod = self.pod(name)
        return None if pod is None else (pod.get("status") or {}).get("phase")

    def annotations(self, name: str) -> dict[str, str]:
        return (self.pod(name) or {}).get("metadata", {}).get("annotations") or {}

    def lock(self, name: str, namespace: str = "default") -> None:
        from datetime import UTC, datetime

        value = encode_node_lock(NodeLock(datetime.now(UTC).replace(microsecond=0), namespace, name))
        self.store.patch("nodes", None, NODE, {"metadata": {"annotations": {names.NODE_LOCK: value}}},
                         "application/merge-patch+json")

    def decided_pod(self, name: str, containers: Sequence[Sequence[Dev]], *, lock: bool = True,
                    init: Sequence[Sequence[Dev]] = (), env: dict[str, str] | None = None,
                    bind: bool = True, counts: Sequence[int] | None = None) -> dict[str, Any]:
        """A pod bound to the node with the scheduler's decision annotations (init containers first)."""
        entries, allocations = [], []
        for ci, devices in enumerate([*init, *containers]):
            entry = []
            for di, d in enumerate(devices):
                uuid = self.uuid(d.gpu)
                entry.append(ContainerDevice(uuid, names.DEVICE_TYPE_NVIDIA, d.memory, d.cores))
                if d.profile is not None:
                    allocations.append(MigAllocation(ci, di, uuid, d.profile, Placement(d.start, d.size)))
            entries.append(tuple(entry))
        annotations = {
            names.VGPU_NODE: NODE, names.VGPU_TIME: str(int(time.time())),
            names.VGPU_DEVICES_ALLOCATED: encode_pod_devices(entries),
            names.VGPU_DEVICES_TO_ALLOCATE: encode_pod_devices(entries),
            names.BIND_PHASE: names.BIND_PHASE_ALLOCATING, names.BIND_TIME: str(int(time.time())),
        }
        if allocations:
            annotations[names.VGPU_MIG_ALLOCATIONS] = encode_mig_allocations(allocations)

        def spec(prefix: str, groups: Sequence[Sequence[Dev]]) -> list[dict[str, Any]]:
            out = []
            for i, devices in enumerate(groups):
                c: dict[str, Any] = {"name": f"{prefix}{i}", "image": "cuda"}
                n = counts[i] if counts is not None and prefix == "c" else len(devices)
                if n:
                    c["resources"] = {"limits": {names.RESOURCE_COUNT: str(n)}}
                if env:
                    c["env"] = [{"name": k, "value": v} for k, v in env.items()]
                out.append(c)
            return out

        pod = {"metadata": {"name": name, "namespace": "default", "annotations": annotations},
               "spec": {"schedulerName": names.SCHEDULER_NAME, "containers": spec("c", containers)}}
        if init:
            pod["spec"]["initContainers"] = spec("init", init)
        if bind:
            pod["spec"]["nodeName"] = NODE
        if lock:
            self.lock(name)
        return self.store.create("pods", "default", pod)

    def wait_phase(self, name: str, *phases: str, timeout: float = 15.0) -> str:
        return wait_for(lambda: self.phase(name) in phases and self.phase(name), timeout, f"pod {name} in {phases}")

    def runtime(self, name: str):
        return self.kubelet.runtime("default", name)

    def delete_pod(self, name: str) -> None:
        self.store.delete("pods", "default", name)
        wait_for(lambda: self.pod(name) is None, 10, f"pod {name} gone")


def make_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpus: Sequence[fakenvml.GpuSpec | str],
              config: str | None = None, **options: Any) -> Iterator[Node]:
    fake = fakenvml.FakeNode.create(tmp_path / "state", gpus, node=NODE)
    monkeypatch.setenv(fakenvml.STATE_ENV, str(fake.path))
    before = set(threading.enumerate())
    api = ApiServer().start()
    kube = Kube.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
    plugin_dir = short_socket_dir("hdp-")
    kubelet = Kubelet(NODE, api.store, plugin_dir, attacher=FakeNvmlAttacher(fake.path), rpc_timeout=20).start()
    if config is not None:
        api.store.create("configmaps", "kube-system", {"metadata": {"name": "hami-device-plugin"},
                                                       "data": {"config.json": config}})
    defaults = dict(node_name=NODE, plugin_dir=plugin_dir, hook_path=tmp_path / "hook",
                    vgpu_lock_dir=tmp_path / "vgpulock", metrics_port=None, sync_interval=3600.0,
                    handshake_interval=3600.0, kubelet_poll=0.05, idle_destroy_after=0.0)
    node = Node(tmp_path, fake, api, kube, kubelet, plugin_dir, AgentOptions(**{**defaults, **options}))
    try:
        yield node
    finally:
        for agent in node.agents:
            agent.stop()
        kubelet.stop()
        kube.close()
        api.stop()
        shutil.rmtree(plugin_dir, ignore_errors=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and {t for t in set(threading.enumerate()) - before if t.is_alive()}:
            time.sleep(0.02)


@pytest.fixture
def mig_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """GPU 0 and 1: A100-SXM4-80GB in MIG mode (node config mode mig); GPU 2: A10 (hami-core by index)."""
    config = nodeconfig(operatingmode="mig", devicemodes=[{"index": [2], "operatingmode": "hami-core"}])
    yield from make_node(tmp_path, monkeypatch, [fakenvml.GpuSpec("A100-SXM4-80GB", mig=True),
                                                 fakenvml.GpuSpec("A100-SXM4-80GB", mig=True), "A10"], config)


@pytest.fixture
def core_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """Two A10 GPUs, hami-core, HAMi's defaults (split count 10)."""
    yield from make_node(tmp_path, monkeypatch, ["A10", "A10"])

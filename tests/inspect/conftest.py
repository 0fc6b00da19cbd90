"""A small cluster for `hami inspect`: our embedded API server holding nodes with the annotations the
node agent writes and pods with the annotations the scheduler's binder writes, each encoded by the
real codecs (`hami.api`, `hami.scheduler.annotations.decision_annotations`). The end-to-end test
uses tests/scheduler's `plane` (the real scheduler and node agent) instead."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hami._core import CorePick, Decision, MigPick
from hami.api import codecs, names
from hami.k8s import Kube
from hami.scheduler.annotations import decision_annotations
from hami.sim.apiserver import ApiServer
from tests.scheduler.conftest import A10, A100, node_body, plane  # noqa: F401  (plane: the e2e fixture)

MIG_UUIDS = (f"MIG-00000000-0000-0000-0000-{i:012d}" for i in itertools.count(1))


def mig_devices(prefix: str, count: int, gpu_type: str = A100) -> list[codecs.NodeDevice]:
    return [codecs.NodeDevice(f"GPU-{prefix}-{i}", i, 7, 81920, 100, gpu_type, mode=names.MODE_MIG, health=True)
            for i in range(count)]


def core_devices(prefix: str, count: int, mode: str = names.MODE_HAMI_CORE) -> list[codecs.NodeDevice]:
    return [codecs.NodeDevice(f"GPU-{prefix}-{i}", i, 10, 23028, 100, A10, mode=mode, health=True)
            for i in range(count)]


def in_use(gpu: str, profile: str, start: int, size: int, pod: str, gi: int) -> codecs.RealisedInstance:
    return codecs.RealisedInstance(gpu, profile, codecs.Placement(start, size), gi, 0, next(MIG_UUIDS),
                                   codecs.InstanceState.IN_USE, pod=pod)


def idle(gpu: str, profile: str, start: int, size: int, since: datetime, gi: int) -> codecs.RealisedInstance:
    return codecs.RealisedInstance(gpu, profile, codecs.Placement(start, size), gi, 0, next(MIG_UUIDS),
                                   codecs.InstanceState.IDLE, since=since)


@dataclass
class Cluster:
    api: ApiServer
    kube: Kube
    kubeconfig: Path

    def add_node(self, name: str, devs: Sequence[codecs.NodeDevice],
                 instances: Sequence[codecs.RealisedInstance] = (), **annotations: str) -> None:
        if instances:
            annotations[names.NODE_MIG_INSTANCES] = codecs.encode_node_mig_instances(instances)
        self.kube.create("nodes", node_body(name, devs, **annotations))

    def set_instances(self, node: str, instances: Sequence[codecs.RealisedInstance]) -> None:
        """What the agent does when an instance is created, used or left idle."""
        self.kube.annotate("nodes", node, {names.NODE_MIG_INSTANCES: codecs.encode_node_mig_instances(instances)})

    def add_pod(self, name: str, node: str, *picks: MigPick | CorePick, phase: str = "Running",
                namespace: str = "default", gpu_types: dict[str, str] | None = None) -> dict[str, Any]:
        """A pod bound to `node` whose annotations record `picks` (one container) as the binder writes them."""
        decision = Decision("", node, (tuple(picks),))
        types = gpu_types or {p.gpu_uuid: A100 for p in picks if isinstance(p, MigPick)}
        ann = decision_annotations(decision, types, datetime.now(UTC))
        body = {"metadata": {"name": name, "annotations": ann},
                "spec": {"containers": [{"name": "c", "image": "cuda"}]}}
        self.kube.create("pods", body, namespace)
        self.api.store.bind(namespace, name, {"target": {"kind": "Node", "name": node}})
        if phase != "Pending":
            self.api.store.patch("pods", namespace, name, {"status": {"phase": phase}}, subresource="status")
        return self.kube.get("pods", name, namespace)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    kube = Kube.connect(kubeconfig)
    try:
        yield Cluster(api, kube, kubeconfig)
    finally:
        kube.close()
        api.stop()

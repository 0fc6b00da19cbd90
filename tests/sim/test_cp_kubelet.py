"""The simulated kubelet against a tiny device plugin over real unix sockets (reference §2.4–2.5, §5.3)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from hami.deviceplugin.v1beta1 import api_pb2 as pb
from hami.deviceplugin.v1beta1 import api_pb2_grpc as pbg
from hami.sim.apiserver import Store
from hami.sim.kubelet import KUBELET_SOCKET, Kubelet, short_socket_dir

RESOURCE = "example.com/gpu"


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


class TinyPlugin(pbg.DevicePluginServicer):
    """A device plugin that records every call; devices map to MIG-<id> uuids."""

    def __init__(self, plugin_dir: Path, devices: int = 8, resource: str = RESOURCE) -> None:
        self.dir, self.resource = plugin_dir, resource
        self.health = {f"d{i}": "Healthy" for i in range(devices)}
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.allocations: list[list[list[str]]] = []
        self.preferences: list[pb.PreferredAllocationRequest] = []
        self.fail_allocate: str | None = None
        self.registrations = 0
        self.server: grpc.Server | None = None
        self._watch_thread: threading.Thread | None = None

    # -- the service
    def GetDevicePluginOptions(self, request, context):
        return pb.DevicePluginOptions(get_preferred_allocation_available=True)

    def ListAndWatch(self, request, context):
        yield self._list()
        while context.is_active() and not self.stopping.is_set():
            if self.changed.wait(0.05):
                self.changed.clear()
                yield self._list()

    def GetPreferredAllocation(self, request, context):
        self.preferences.append(request)
        responses = [pb.ContainerPreferredAllocationResponse(
            deviceIDs=sorted(r.available_deviceIDs, reverse=True)[:r.allocation_size])
            for r in request.container_requests]
        return pb.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request, context):
        self.allocations.append([list(r.devices_ids) for r in request.container_requests])
        if self.fail_allocate:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.fail_allocate)
        responses = [pb.ContainerAllocateResponse(
            envs={"NVIDIA_VISIBLE_DEVICES": ",".join(f"MIG-{d}" for d in r.devices_ids)},
            mounts=[pb.Mount(container_path="/usr/lib/x", host_path="/opt/x", read_only=True)],
            devices=[pb.DeviceSpec(container_path="/dev/nvidia0", host_path="/dev/nvidia0", permissions="rw")])
            for r in request.container_requests]
        return pb.AllocateResponse(container_responses=responses)

    def _list(self) -> pb.ListAndWatchResponse:
        return pb.ListAndWatchResponse(devices=[pb.Device(ID=d, health=h) for d, h in sorted(self.health.items())])

    # -- serving and registering, re-registering when kubelet.sock is re-created
    @property
    def socket(self) -> Path:
        return self.dir / "tiny.sock"

    def serve_and_register(self) -> None:
        self._shutdown()
        self.socket.unlink(missing_ok=True)
        self.executor = futures.ThreadPoolExecutor(max_workers=8)
        self.server = grpc.server(self.executor)
        pbg.add_DevicePluginServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()
        with grpc.insecure_channel(f"unix://{self.dir / KUBELET_SOCKET}") as channel:
            grpc.channel_ready_future(channel).result(timeout=5)
            pbg.RegistrationStub(channel).Register(pb.RegisterRequest(
                version="v1beta1", endpoint=self.socket.name, resource_name=self.resource,
                options=pb.DevicePluginOptions(get_preferred_allocation_available=True)), timeout=10)
        self.registrations += 1

    def start(self) -> TinyPlugin:
        self.serve_and_register()
        self._watch_thread = threading.Thread(target=self._watch_kubelet, daemon=True)
        self._watch_thread.start()
        return self

    def _watch_kubelet(self) -> None:
        def inode() -> tuple[int, int] | None:  # a re-created file may reuse the inode number
            try:
                info = (self.dir / KUBELET_SOCKET).stat()
                return info.st_ino, info.st_ctime_ns
            except FileNotFoundError:
                return None

        seen = inode()
        while not self.stopping.wait(0.05):
            now = inode()
            if now is not None and now != seen:
                seen = now
                self.serve_and_register()

    def stop(self) -> None:
        self.stopping.set()
        if self._watch_thread:
            self._watch_thread.join()
        self._shutdown()

    def _shutdown(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.executor.shutdown(wait=True)
            self.server = None


class RecordingAttacher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int]] = []

    def attach(self, node: str, uuid: str, pid: int) -> None:
        self.calls.append(("attach", node, uuid, pid))

    def detach(self, node: str, uuid: str, pid: int) -> None:
        self.calls.append(("detach", node, uuid, pid))


@pytest.fixture
def env() -> Iterator[tuple[Store, Kubelet, TinyPlugin, RecordingAttacher]]:
    before = set(threading.enumerate())
    directory = short_socket_dir()
    store = Store()
    attacher = RecordingAttacher()
    kubelet = Kubelet("n1", store, directory, attacher=attacher).start()
    plugin = TinyPlugin(directory).start()
    yield store, kubelet, plugin, attacher
    plugin.stop()
    kubelet.stop()
    store.close()
    shutil.rmtree(directory, ignore_errors=True)
    wait_for(lambda: not set(threading.enumerate()) - before, timeout=5)


def _allocatable(store: Store) -> tuple[str | None, str | None]:
    status = store.get("nodes", None, "n1").get("status") or {}
    return (status.get("capacity") or {}).get(RESOURCE), (status.get("allocatable") or {}).get(RESOURCE)


def _pod(name: str, *per_container: int, init: tuple[int, ...] = ()) -> dict:
    def container(prefix: str, i: int, count: int) -> dict:
        limits = {RESOURCE: str(count)} if count else {}
        return {"name": f"{prefix}{i}", "image": "x", "resources": {"limits": limits}}

    spec: dict = {"containers": [container("c", i, n) for i, n in enumerate(per_container)]}
    if init:
        spec["initContainers"] = [container("init", i, n) for i, n in enumerate(init)]
    return {"metadata": {"name": name}, "spec": spec}


def _phase(store: Store, name: str) -> str | None:
    try:
        return (store.get("pods", "default", name).get("status") or {}).get("phase")
    except Exception:
        return None


def test_registration_and_list_and_watch_updates(env) -> None:
    store, kubelet, plugin, _ = env
    wait_for(lambda: _allocatable(store) == ("8", "8"))
    assert kubelet.resources() == [RESOURCE]
    plugin.health["d3"] = "Unhealthy"
    plugin.changed.set()
    wait_for(lambda: _allocatable(store) == ("8", "7"))
    node = store.get("nodes", None, "n1")
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]} == {"Ready": "True"}


def test_register_rejects_bad_version_and_resource_name(env) -> None:
    _, kubelet, plugin, _ = env
    with grpc.insecure_channel(f"unix://{kubelet.socket_path}") as channel:
        stub = pbg.RegistrationStub(channel)
        for version, name in (("v1alpha", RESOURCE), ("v1beta1", "gpu"), ("v1beta1", "kubernetes.io/gpu")):
            with pytest.raises(grpc.RpcError) as failed:
                stub.Register(pb.RegisterRequest(version=version, endpoint=plugin.socket.name, resource_name=name),
                              timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNKNOWN


def test_admission_in_binding_order_with_one_allocate_per_container(env) -> None:
    store, kubelet, plugin, attacher = env
    wait_for(lambda: _allocatable(store) == ("8", "8"))
    for name in ("p0", "p1", "p2"):
        store.create("pods", "default", _pod(name, 1, 1, 0))
    for name in ("p2", "p0", "p1"):
        store.bind("default", name, {"target": {"kind": "Node", "name": "n1"}})
    wait_for(lambda: all(_phase(store, n) == "Running" for n in ("p0", "p1", "p2")))
    assert kubelet.admitted == ["default/p2", "default/p0", "default/p1"]
    # one Allocate per device-requesting container, each with exactly one container request
    assert len(plugin.allocations) == 6 and all(len(a) == 1 and len(a[0]) == 1 for a in plugin.allocations)
    # the preference (highest IDs first) was honoured, and no device went to two containers
    assert plugin.allocations[0] == [["d7"]]
    flat = [a[0][0] for a in plugin.allocations]
    assert len(set(flat)) == 6
    runtime = kubelet.runtime("default", "p2")
    assert runtime is not None and set(runtime.containers) == {"c0", "c1", "c2"}
    c0 = runtime.containers["c0"]
    assert c0.envs == {"NVIDIA_VISIBLE_DEVICES": "MIG-d7"} and c0.mounts[0]["hostPath"] == "/opt/x"
    assert c0.devices[0]["permissions"] == "rw" and runtime.containers["c2"].envs == {}
    assert ("attach", "n1", "MIG-d7", c0.pid) in attacher.calls
    pod = store.get("pods", "default", "p2")
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    assert {c["type"] for c in pod["status"]["conditions"]} >= {"Ready", "Initialized", "ContainersReady"}


def test_init_container_devices_are_reused(env) -> None:
    store, kubelet, plugin, _ = env
    wait_for(lambda: _allocatable(store) == ("8", "8"))
    store.create("pods", "default", _pod("p", 2, init=(2,)))
    store.bind("default", "p", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "p") == "Running")
    runtime = kubelet.runtime("default", "p")
    assert runtime is not None
    init_ids, app_ids = (runtime.containers[c].device_ids[RESOURCE] for c in ("init0", "c0"))
    assert sorted(init_ids) == sorted(app_ids)
    assert len(plugin.allocations) == 2


def test_failed_allocate_fails_the_pod_without_retry(env) -> None:
    store, _kubelet, plugin, attacher = env
    wait_for(lambda: _allocatable(store) == ("8", "8"))
    plugin.fail_allocate = "no free MIG slices"
    store.create("pods", "default", _pod("bad", 1))
    store.bind("default", "bad", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "bad") == "Failed")
    status = store.get("pods", "default", "bad")["status"]
    assert status["reason"] == "UnexpectedAdmissionError"
    assert status["message"] == ("Pod was rejected: Allocate failed due to rpc error: code = FailedPrecondition "
                                 "desc = no free MIG slices, which is unexpected")
    time.sleep(0.2)
    assert len(plugin.allocations) == 1  # no retry
    reasons = [e["reason"] for e in store.list("events", "default")["items"]]
    assert "UnexpectedAdmissionError" in reasons
    # its device went back: eight more single-device pods still fit
    plugin.fail_allocate = None
    store.create("pods", "default", _pod("big", 8))
    store.bind("default", "big", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "big") == "Running")
    # too few devices is an admission failure as well
    store.create("pods", "default", _pod("extra", 1))
    store.bind("default", "extra", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "extra") == "Failed")
    assert "requested number of devices unavailable for example.com/gpu. Requested: 1, Available: 0" in \
        store.get("pods", "default", "extra")["status"]["message"]
    assert not [c for c in attacher.calls if c[0] == "detach"]


def test_deleting_a_pod_stops_it_and_detaches(env) -> None:
    store, kubelet, _plugin, attacher = env
    wait_for(lambda: _allocatable(store) == ("8", "8"))
    store.create("pods", "default", _pod("p", 2))
    store.bind("default", "p", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "p") == "Running")
    deleting = store.delete("pods", "default", "p")
    assert deleting["metadata"]["deletionTimestamp"]  # graceful: the kubelet finishes it
    wait_for(lambda: _phase(store, "p") is None)
    detached = sorted(c[2] for c in attacher.calls if c[0] == "detach")
    attached = sorted(c[2] for c in attacher.calls if c[0] == "attach")
    assert detached == attached and len(attached) == 2
    assert kubelet.runtime("default", "p") is None


def test_restart_removes_sockets_and_plugins_re_register(env) -> None:
    store, kubelet, plugin, _ = env
    wait_for(lambda: _allocatable(store) == ("8", "8"))
    store.create("pods", "default", _pod("before", 1))
    store.bind("default", "before", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "before") == "Running")
    kubelet.restart()
    wait_for(lambda: plugin.registrations == 2)
    wait_for(lambda: _allocatable(store) == ("8", "8") and kubelet.resources() == [RESOURCE])
    store.create("pods", "default", _pod("after", 1))
    store.bind("default", "after", {"target": {"name": "n1"}})
    wait_for(lambda: _phase(store, "after") == "Running")
    # the allocation made before the restart is still accounted for
    before = kubelet.runtime("default", "before").containers["c0"].device_ids[RESOURCE]
    after = kubelet.runtime("default", "after").containers["c0"].device_ids[RESOURCE]
    assert before != after


def test_the_kubelet_holds_and_renews_its_node_lease() -> None:
    before = set(threading.enumerate())
    directory = short_socket_dir()
    store = Store()
    kubelet = Kubelet("n1", store, directory, lease_renew_interval=0.05).start()
    try:
        lease = store.get("leases", "kube-node-lease", "n1")
        node = store.get("nodes", None, "n1")
        assert lease["spec"]["holderIdentity"] == "n1" and lease["spec"]["leaseDurationSeconds"] == 40
        assert lease["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": "n1",
                                                          "uid": node["metadata"]["uid"]}]
        first = lease["spec"]["renewTime"]
        assert first.endswith("Z") and len(first) == len("2026-01-01T00:00:00.000000Z")  # a MicroTime
        wait_for(lambda: store.get("leases", "kube-node-lease", "n1")["spec"]["renewTime"] != first)
    finally:
        kubelet.stop()
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
    wait_for(lambda: not set(threading.enumerate()) - before, timeout=5)


"""A simulated kubelet for one node: device-plugin registration, ListAndWatch, admission, Allocate.

What it does, as the real kubelet's device manager does (reference §2.4–2.5):
- serves the v1beta1 `Registration` service on `<plugin_dir>/kubelet.sock`, after deleting every
  socket file in that directory (so a restart forces plugins to re-register);
- inside `Register`: checks the version and the extended-resource name, dials the plugin's socket,
  calls `GetDevicePluginOptions`, then consumes `ListAndWatch` in a thread; every message is the
  complete device list: capacity = all devices, allocatable = the healthy ones, reported to the
  API server at once (the real kubelet batches node-status updates); a stream that ends marks the
  resource's devices unhealthy;
- admits the pods bound to its node one at a time, in the order it observes their binding: per
  container (init containers first) and per device resource, picks device IDs from healthy minus
  allocated (init containers' devices are reusable by app containers), asks
  `GetPreferredAllocation` when offered, then calls `Allocate` with exactly one container, and
  `PreStartContainer` when the plugin requires it;
- records each container's env/mounts/devices/annotations/CDI devices as its "runtime", attaches a
  simulated process to every GPU/MIG uuid the container was given (through the injected
  `ProcessAttacher`, fakenvml's control interface) and moves the pod to Running;
- a failed Allocate (or too few devices) fails the pod with reason `UnexpectedAdmissionError`, no
  retry; a pod being deleted is stopped (processes detached, devices freed) and then deleted with
  grace 0;
- like the real kubelet's node lease controller, it holds the Lease `kube-node-lease/<node>`
  (owned by its Node, 40 s duration) and renews it every quarter of that (`lease_renew_interval`).

Not modelled: CPU/memory admission, container restarts, probes, topology manager alignment, the
device checkpoint file (allocations simply survive `restart()` in memory).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import stat
import tempfile
import threading
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from hami.deviceplugin.v1beta1 import api_pb2 as pb
from hami.deviceplugin.v1beta1 import api_pb2_grpc as pbg
from hami.sim.apiserver import errors, events, quantities
from hami.sim.apiserver.store import Store, rfc3339, rfc3339_micro
from hami.sim.apiserver.watch import Watcher

log = logging.getLogger(__name__)

KUBELET_SOCKET = "kubelet.sock"
SUPPORTED_VERSIONS = ("v1beta1",)
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"
KUBELET_VERSION = "v1.31.0-hami-sim"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
_UUID = re.compile(r"(MIG-[0-9A-Za-z-]+|GPU-[0-9A-Za-z-]+)")


class ProcessAttacher(Protocol):
    """fakenvml's control interface as the kubelet needs it: a process appears on / leaves a device."""

    def attach(self, node: str, uuid: str, pid: int) -> None: ...

    def detach(self, node: str, uuid: str, pid: int) -> None: ...


class AdmissionError(Exception):
    """Admission failed; the message is what the pod's status will say."""


@dataclass
class ContainerRuntime:
    """What the container runtime was told to do for one container."""

    name: str
    pid: int
    device_ids: dict[str, list[str]] = field(default_factory=dict)  # resource -> IDs passed to Allocate
    envs: dict[str, str] = field(default_factory=dict)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    cdi_devices: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)  # device uuids with this container's process


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    containers: dict[str, ContainerRuntime] = field(default_factory=dict)
    held: dict[str, set[str]] = field(default_factory=dict)  # resource -> device IDs this pod holds


@dataclass
class _Endpoint:
    resource: str
    socket: Path
    channel: grpc.Channel
    stub: pbg.DevicePluginStub
    options: pb.DevicePluginOptions
    devices: dict[str, str] = field(default_factory=dict)  # ID -> health
    call: Any = None
    thread: threading.Thread | None = None


def _status_code_name(code: grpc.StatusCode) -> str:
    return "".join(part.capitalize() for part in code.name.split("_"))


def _rpc_error_text(exc: grpc.RpcError) -> str:
    """Go's rendering of a gRPC error, which is what the real kubelet puts in the pod status."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"rpc error: code = {_status_code_name(code)} desc = {details}"


def is_extended_resource(name: str) -> bool:
    """A device plugin may only advertise a domain-qualified, non-kubernetes.io resource name."""
    if "/" not in name or name.startswith("requests."):
        return False
    domain = name.split("/", 1)[0]
    return not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))


class Kubelet:
    """One simulated node's kubelet (module docstring). `start()`/`stop()`; `restart()` re-opens sockets."""

    def __init__(self, node_name: str, store: Store, plugin_dir: str | Path, *,
                 attacher: ProcessAttacher | None = None, labels: dict[str, str] | None = None,
                 node_ip: str = "10.0.0.1", rpc_timeout: float = 10.0,
                 lease_renew_interval: float = LEASE_DURATION_SECONDS / 4) -> None:
        self.node_name = node_name
        self.store = store
        self.plugin_dir = Path(plugin_dir)
        self.attacher = attacher
        self.labels = dict(labels or {})
        self.node_ip = node_ip
        self.rpc_timeout = rpc_timeout
        self.lease_renew_interval = lease_renew_interval
        self._lease_stop = threading.Event()
        self._lease_thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._endpoints: dict[str, _Endpoint] = {}
        self._pods: dict[str, PodRuntime] = {}  # uid -> runtime
        self._done: set[str] = set()  # uids admitted once (running, rejected or stopped): never again
        self._pids = itertools.count(10_000)
        self._ips = itertools.count(2)
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._watcher: Watcher | None = None
        self._pod_thread: threading.Thread | None = None
        self.admitted: list[str] = []  # "ns/name" in admission order (for tests and reports)

    # ------------------------------------------------------------------------------------------
    # lifecycle

    @property
    def socket_path(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    def start(self) -> Kubelet:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        self._renew_lease()
        self._lease_stop.clear()
        self._lease_thread = threading.Thread(target=self._lease_loop, name=f"kubelet-lease-{self.node_name}",
                                              daemon=True)
        self._lease_thread.start()
        self._start_registration()
        self._watcher = self.store.watch("pods", None, field_selector=f"spec.nodeName={self.node_name}")
        self._pod_thread = threading.Thread(target=self._pod_loop, args=(self._watcher,),
                                            name=f"kubelet-{self.node_name}", daemon=True)
        self._pod_thread.start()
        return self

    def stop(self) -> None:
        self._lease_stop.set()
        if self._lease_thread is not None:
            self._lease_thread.join(10)
            self._lease_thread = None
        if self._watcher is not None:
            self._watcher.close()
        if self._pod_thread is not None:
            self._pod_thread.join(10)
        self._watcher = self._pod_thread = None
        self._stop_registration()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def restart(self) -> None:
        """What a kubelet restart does to device plugins: sockets removed, every plugin must re-register."""
        self._stop_registration()
        self._start_registration()

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_registration(self) -> None:
        for entry in self.plugin_dir.iterdir():
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(entry.lstat().st_mode):
                    entry.unlink()
        self._executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"reg-{self.node_name}")
        server = grpc.server(self._executor)
        pbg.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server

    def _stop_registration(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0.5).wait()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
        for endpoint in endpoints:
            self._close_endpoint(endpoint)
        self._report()

    # ------------------------------------------------------------------------------------------
    # registration and ListAndWatch

    def register(self, request: pb.RegisterRequest) -> None:
        """The body of Registration/Register (raises ValueError for a rejected request)."""
        if request.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"requested device plugin API version {request.version!r} is not supported by "
                             f"kubelet; supported versions are {list(SUPPORTED_VERSIONS)}")
        if not is_extended_resource(request.resource_name):
            raise ValueError(f"invalid extended resource name: {request.resource_name!r}")
        path = self.plugin_dir / request.endpoint
        channel = grpc.insecure_channel(f"unix://{path}")
        try:
            grpc.channel_ready_future(channel).result(timeout=self.rpc_timeout)
            stub = pbg.DevicePluginStub(channel)
            options = stub.GetDevicePluginOptions(pb.Empty(), timeout=self.rpc_timeout)
        except (grpc.FutureTimeoutError, grpc.RpcError) as exc:
            channel.close()
            raise ValueError(f"failed to dial device plugin at {path}: {exc}") from exc
        endpoint = _Endpoint(request.resource_name, path, channel, stub, options)
        with self._lock:
            previous = self._endpoints.get(request.resource_name)
            self._endpoints[request.resource_name] = endpoint
        if previous is not None:
            self._close_endpoint(previous)
        endpoint.call = stub.ListAndWatch(pb.Empty())
        endpoint.thread = threading.Thread(target=self._consume, args=(endpoint,),
                                           name=f"listandwatch-{self.node_name}-{request.resource_name}", daemon=True)
        endpoint.thread.start()
        log.info("device plugin registered node=%s resource=%s endpoint=%s", self.node_name,
                 request.resource_name, request.endpoint)

    def _consume(self, endpoint: _Endpoint) -> None:
        try:
            for response in endpoint.call:
                with self._lock:
                    endpoint.devices = {d.ID: d.health for d in response.devices}
                self._report()
        except grpc.RpcError:
            pass
        with self._lock:
            current = self._endpoints.get(endpoint.resource) is endpoint
            if current:
                endpoint.devices = dict.fromkeys(endpoint.devices, UNHEALTHY)
        if current:
            log.info("ListAndWatch ended node=%s resource=%s; devices marked unhealthy", self.node_name,
                     endpoint.resource)
            self._report()

    def _close_endpoint(self, endpoint: _Endpoint) -> None:
        if endpoint.call is not None:
            endpoint.call.cancel()
        if endpoint.thread is not None and endpoint.thread is not threading.current_thread():
            endpoint.thread.join(5)
        endpoint.channel.close()

    def devices(self, resource: str) -> dict[str, str]:
        """The last device list of `resource` (ID -> health); empty when no plugin is registered."""
        with self._lock:
            endpoint = self._endpoints.get(resource)
            return dict(endpoint.devices) if endpoint else {}

    def resources(self) -> list[str]:
        with self._lock:
            return sorted(self._endpoints)

    # ------------------------------------------------------------------------------------------
    # the Node object

    def _register_node(self) -> None:
        labels = {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", **self.labels}
        node = {"metadata": {"name": self.node_name, "labels": labels}, "spec": {},
                "status": {"capacity": {"cpu": "64", "memory": "512Gi", "pods": "110"},
                           "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110"},
                           "conditions": self._node_conditions(),
                           "addresses": [{"type": "InternalIP", "address": self.node_ip},
                                         {"type": "Hostname", "address": self.node_name}],
                           "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                                        "operatingSystem": "linux", "architecture": "amd64",
                                        "containerRuntimeVersion": "sim://1.0", "kernelVersion": "6.1.0-sim",
                                        "osImage": "hami simulated node", "bootID": str(uuid.uuid4()),
                                        "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name).hex,
                                        "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, self.node_name))}}}
        try:
            self.store.create("nodes", None, node)
        except errors.StatusError as exc:
            if exc.code != 409:
                raise
            self.store.patch("nodes", None, self.node_name, {"status": {"conditions": self._node_conditions()}},
                             "application/strategic-merge-patch+json", "status")

    def _lease_loop(self) -> None:
        while not self._lease_stop.wait(self.lease_renew_interval):
            self._renew_lease()

    def _renew_lease(self) -> None:
        """Create or renew the node's Lease, as the kubelet's node lease controller does."""
        now = rfc3339_micro()
        try:
            try:
                lease = self.store.get("leases", LEASE_NAMESPACE, self.node_name)
            except errors.StatusError as exc:
                if exc.code != 404:
                    raise
                node = self.store.get("nodes", None, self.node_name)
                self.store.create("leases", LEASE_NAMESPACE, {
                    "metadata": {"name": self.node_name, "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": node["metadata"]["uid"]}]},
                    "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                             "renewTime": now}})
                return
            lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": self.node_name,
                             "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}
            self.store.update("leases", LEASE_NAMESPACE, self.node_name, lease)
        except errors.StatusError as exc:
            log.info("node lease not renewed node=%s error=%s", self.node_name, exc.message)

    def _node_conditions(self) -> list[dict[str, Any]]:
        now = rfc3339()
        return [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready "
                 "status", "lastHeartbeatTime": now, "lastTransitionTime": now}]

    def _report(self) -> None:
        """Publish capacity (all devices) and allocatable (healthy ones) of every device resource."""
        with self._lock:
            known = {r: dict(e.devices) for r, e in self._endpoints.items()}
        try:
            node = self.store.get("nodes", None, self.node_name)
        except errors.StatusError:
            return
        status = node.get("status") or {}
        capacity, allocatable = dict(status.get("capacity") or {}), dict(status.get("allocatable") or {})
        for resource in list(capacity):
            if is_extended_resource(resource) and resource not in known:
                allocatable[resource] = "0"  # plugin gone: keep capacity, nothing allocatable
        for resource, devices in known.items():
            capacity[resource] = str(len(devices))
            allocatable[resource] = str(sum(1 for h in devices.values() if h == HEALTHY))
        if capacity == status.get("capacity") and allocatable == status.get("allocatable"):
            return
        with contextlib.suppress(errors.StatusError):
            self.store.patch("nodes", None, self.node_name,
                             {"status": {"capacity": capacity, "allocatable": allocatable}},
                             "application/merge-patch+json", "status")

    # ------------------------------------------------------------------------------------------
    # pods

    def _pod_loop(self, watcher: Watcher) -> None:
        while True:
            item = watcher.next_event(None)
            if item is Watcher.CLOSED or item is None:
                return
            kind, pod = item  # type: ignore[misc]
            if kind == "ERROR":
                log.error("kubelet pod watch failed node=%s status=%s", self.node_name, pod)
                return
            try:
                self._handle(kind, pod)
            except Exception:
                log.exception("kubelet failed handling pod node=%s pod=%s/%s", self.node_name,
                              pod["metadata"].get("namespace"), pod["metadata"].get("name"))

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            known = uid in self._pods
            seen = uid in self._done
        if kind == "DELETED":
            if known:
                self._stop_pod(uid)
            return
        if pod["metadata"].get("deletionTimestamp"):
            if known:
                self._stop_pod(uid)
            with contextlib.suppress(errors.StatusError):
                self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                                  grace_period_seconds=0, preconditions={"uid": uid})
            return
        if known or seen or (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
            return
        self._admit(pod)

    def runtime(self, namespace: str, name: str) -> PodRuntime | None:
        with self._lock:
            for pod in self._pods.values():
                if (pod.namespace, pod.name) == (namespace, name):
                    return pod
        return None

    def _admit(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        runtime = PodRuntime(meta["namespace"], meta["name"], meta["uid"])
        with self._lock:
            self._pods[runtime.uid] = runtime
            self._done.add(runtime.uid)
        self.admitted.append(f"{runtime.namespace}/{runtime.name}")
        reusable: dict[str, set[str]] = {}
        try:
            for group in ("initContainers", "containers"):
                for container in spec.get(group) or []:
                    self._start_container(runtime, container, reusable, init=group == "initContainers")
        except AdmissionError as exc:
            self._reject(pod, runtime, f"Allocate failed due to {exc}, which is unexpected")
            return
        self._set_running(pod, runtime)

    def _requests(self, container: dict[str, Any]) -> dict[str, int]:
        """Device-plugin resources the container asks for; ones no plugin advertises are dropped."""
        resources = container.get("resources") or {}
        wanted = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        with self._lock:
            registered = set(self._endpoints)
        out = {}
        for name, value in wanted.items():
            try:
                count = quantities.parse(value).value()
            except quantities.QuantityError:
                continue
            if name in registered and count > 0:
                out[name] = count
        return out

    def _start_container(self, runtime: PodRuntime, container: dict[str, Any], reusable: dict[str, set[str]],
                         init: bool) -> None:
        record = ContainerRuntime(container["name"], next(self._pids))
        for resource, count in sorted(self._requests(container).items()):
            ids = self._devices_to_allocate(runtime, resource, count, reusable, init)
            endpoint = self._endpoints[resource]
            try:
                response = endpoint.stub.Allocate(pb.AllocateRequest(container_requests=[
                    pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=self.rpc_timeout)
                if endpoint.options.pre_start_required:
                    endpoint.stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=ids),
                                                    timeout=self.rpc_timeout)
            except grpc.RpcError as exc:
                raise AdmissionError(_rpc_error_text(exc)) from exc
            if len(response.container_responses) != 1:
                raise AdmissionError(f"plugin returned {len(response.container_responses)} container responses "
                                     f"for 1 container")
            answer = response.container_responses[0]
            record.device_ids[resource] = list(ids)
            record.envs.update(answer.envs)
            record.mounts.extend({"containerPath": m.container_path, "hostPath": m.host_path,
                                  "readOnly": m.read_only} for m in answer.mounts)
            record.devices.extend({"containerPath": d.container_path, "hostPath": d.host_path,
                                   "permissions": d.permissions} for d in answer.devices)
            record.annotations.update(answer.annotations)
            record.cdi_devices.extend(d.name for d in answer.cdi_devices)
        runtime.containers[record.name] = record
        self._attach(record)

    def _devices_to_allocate(self, runtime: PodRuntime, resource: str, count: int,
                             reusable: dict[str, set[str]], init: bool) -> list[str]:
        with self._lock:
            endpoint = self._endpoints[resource]
            healthy = [d for d, h in sorted(endpoint.devices.items()) if h == HEALTHY]
            held = set().union(*(p.held.get(resource, set()) for p in self._pods.values()))
            chosen: list[str] = []
            pool = reusable.get(resource, set())
            if pool:
                chosen = sorted(pool)[:count]
                if not init:
                    pool.difference_update(chosen)
            available = [d for d in healthy if d not in held]
            needed = count - len(chosen)
            if needed > len(available):
                raise AdmissionError(f"requested number of devices unavailable for {resource}. Requested: {count}, "
                                     f"Available: {len(available) + len(chosen)}")
        if needed and endpoint.options.get_preferred_allocation_available:
            try:
                preferred = endpoint.stub.GetPreferredAllocation(pb.PreferredAllocationRequest(container_requests=[
                    pb.ContainerPreferredAllocationRequest(available_deviceIDs=[*chosen, *available],
                                                           must_include_deviceIDs=chosen, allocation_size=count)]),
                    timeout=self.rpc_timeout)
            except grpc.RpcError as exc:
                raise AdmissionError(_rpc_error_text(exc)) from exc
            allowed = set(available)
            for response in preferred.container_responses[:1]:
                for device in response.deviceIDs:
                    if device in allowed and device not in chosen and len(chosen) < count:
                        chosen.append(device)
        for device in available:  # any shortfall: fill in (the real kubelet's order is arbitrary)
            if len(chosen) >= count:
                break
            if device not in chosen:
                chosen.append(device)
        with self._lock:
            runtime.held.setdefault(resource, set()).update(chosen)
            if init:
                reusable.setdefault(resource, set()).update(chosen)
        return chosen

    def _attach(self, record: ContainerRuntime) -> None:
        uuids: list[str] = []
        for value in (record.envs.get("NVIDIA_VISIBLE_DEVICES", ""), *record.cdi_devices):
            for device in _UUID.findall(value):
                if device not in uuids:
                    uuids.append(device)
        for device in uuids:
            if self.attacher is not None:
                try:
                    self.attacher.attach(self.node_name, device, record.pid)
                except Exception:
                    log.warning("attach failed node=%s uuid=%s pid=%d", self.node_name, device, record.pid,
                                exc_info=True)
                    continue
            record.attached.append(device)

    def _stop_pod(self, uid: str) -> None:
        with self._lock:
            runtime = self._pods.pop(uid, None)
        if runtime is None:
            return
        for record in runtime.containers.values():
            for device in record.attached:
                if self.attacher is not None:
                    try:
                        self.attacher.detach(self.node_name, device, record.pid)
                    except Exception:
                        log.warning("detach failed node=%s uuid=%s pid=%d", self.node_name, device, record.pid,
                                    exc_info=True)
            record.attached.clear()

    def _reject(self, pod: dict[str, Any], runtime: PodRuntime, message: str) -> None:
        self._stop_pod(runtime.uid)
        text = f"Pod was rejected: {message}"
        log.info("pod rejected node=%s pod=%s/%s reason=UnexpectedAdmissionError message=%s", self.node_name,
                 runtime.namespace, runtime.name, message)
        with contextlib.suppress(errors.StatusError):
            self.store.patch("pods", runtime.namespace, runtime.name, {"status": {
                "phase": "Failed", "reason": "UnexpectedAdmissionError", "message": text,
                "hostIP": self.node_ip, "startTime": rfc3339()}}, "application/merge-patch+json", "status")
        events.record(self.store, pod, "Warning", "UnexpectedAdmissionError", text, "kubelet", self.node_name)

    def _set_running(self, pod: dict[str, Any], runtime: PodRuntime) -> None:
        now = rfc3339()
        spec = pod.get("spec") or {}

        def status_of(container: dict[str, Any], init: bool) -> dict[str, Any]:
            record = runtime.containers.get(container["name"])
            state = ({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
                     if init else {"running": {"startedAt": now}})
            return {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                    "containerID": f"sim://{record.pid if record else 0}", "ready": not init, "started": not init,
                    "restartCount": 0, "state": state}

        conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                      for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]
        status: dict[str, Any] = {
            "phase": "Running", "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": f"10.244.{sum(self.node_ip.encode()) % 250}.{next(self._ips) % 250}", "startTime": now,
            "conditions": conditions,
            "containerStatuses": [status_of(c, False) for c in spec.get("containers") or []],
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [status_of(c, True) for c in spec["initContainers"]]
        status["podIPs"] = [{"ip": status["podIP"]}]
        try:
            self.store.patch("pods", runtime.namespace, runtime.name, {"status": status},
                             "application/strategic-merge-patch+json", "status")
        except errors.StatusError:
            self._stop_pod(runtime.uid)  # deleted meanwhile
            return
        events.record(self.store, pod, "Normal", "Started", "Started all containers", "kubelet", self.node_name)


class _Registration(pbg.RegistrationServicer):
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:
        try:
            self.kubelet.register(request)
        except ValueError as exc:
            context.abort(grpc.StatusCode.UNKNOWN, str(exc))
        return pb.Empty()


def short_socket_dir(prefix: str = "hk") -> Path:
    """A fresh directory short enough for unix socket paths (107 bytes), under the system temp dir."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))

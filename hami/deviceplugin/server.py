"""The kubelet-facing side: the v1beta1 DevicePlugin service over a unix socket, registration
with kubelet, and re-registration when kubelet restarts (reference kubernetes-interfaces §2.4).

kubelet deletes every socket in its device-plugin directory when it starts, then serves
`kubelet.sock` anew; so the server watches that file (its inode and ctime) and, when it is
re-created or our own socket vanished, serves again and registers again. The service answers
GetDevicePluginOptions while Register is still pending (kubelet calls it from inside Register):
the server has its own thread pool, and Register runs on the watcher's thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from hami.deviceplugin.allocate import AllocateError, Allocator
from hami.deviceplugin.options import AgentOptions
from hami.deviceplugin.register import HEALTHY, UNHEALTHY, replica_ids
from hami.deviceplugin.state import AgentState
from hami.deviceplugin.v1beta1 import api_pb2 as pb
from hami.deviceplugin.v1beta1 import api_pb2_grpc as pbg

log = logging.getLogger(__name__)

VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"


def device_list(state: AgentState) -> list[pb.Device]:
    """Every replica of every registered GPU with its health (the complete list kubelet wants)."""
    with state.lock:
        plans = sorted(state.plans.values(), key=lambda p: p.gpu.index)
        config = state.config
    return [pb.Device(ID=d, health=HEALTHY if p.available else UNHEALTHY)
            for p in plans for d in replica_ids(p, config)]


class DevicePluginService(pbg.DevicePluginServicer):
    """The RPCs kubelet calls on our socket."""

    def __init__(self, state: AgentState, allocator: Allocator, stopping: threading.Event) -> None:
        self.state = state
        self.allocator = allocator
        self.stopping = stopping

    def GetDevicePluginOptions(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.DevicePluginOptions:
        with self.state.lock:
            preferred = self.state.config.enable_get_preferred_allocation
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=preferred)

    def ListAndWatch(self, request: pb.Empty, context: grpc.ServicerContext):
        sent: list[tuple[str, str]] | None = None
        generation = -1
        while context.is_active() and not self.stopping.is_set():
            with self.state.changed:
                if self.state.generation == generation:
                    self.state.changed.wait(0.5)
                generation = self.state.generation
            devices = device_list(self.state)
            now = [(d.ID, d.health) for d in devices]
            if now != sent:
                sent = now
                log.info("ListAndWatch sends devices=%d healthy=%d", len(now), sum(h == HEALTHY for _, h in now))
                yield pb.ListAndWatchResponse(devices=devices)

    def GetPreferredAllocation(self, request: pb.PreferredAllocationRequest,
                               context: grpc.ServicerContext) -> pb.PreferredAllocationResponse:
        responses = []
        for r in request.container_requests:
            ids = self.allocator.preferred(list(r.available_deviceIDs), list(r.must_include_deviceIDs),
                                           r.allocation_size)
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return pb.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request: pb.AllocateRequest, context: grpc.ServicerContext) -> pb.AllocateResponse:
        responses = []
        for r in request.container_requests:
            try:
                answer = self.allocator.allocate(list(r.devices_ids))
            except AllocateError as exc:
                code = grpc.StatusCode.FAILED_PRECONDITION if exc.precondition else grpc.StatusCode.INTERNAL
                context.abort(code, str(exc))
            responses.append(pb.ContainerAllocateResponse(
                envs=answer.envs,
                mounts=[pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                        for m in answer.mounts]))
        return pb.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: pb.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


class PluginServer:
    """Serves the service on `options.socket_path`, registers, and keeps registered."""

    def __init__(self, options: AgentOptions, state: AgentState, allocator: Allocator,
                 on_registered: Callable[[], None] | None = None) -> None:
        self.options = options
        self.state = state
        self.stopping = threading.Event()
        self.service = DevicePluginService(state, allocator, self.stopping)
        self.on_registered = on_registered
        self.registrations = 0
        self._server: grpc.Server | None = None
        self._watcher: threading.Thread | None = None
        self._kubelet_seen: tuple[int, int] | None = None

    @property
    def kubelet_socket(self) -> Path:
        return self.options.plugin_dir / KUBELET_SOCKET

    def start(self) -> PluginServer:
        self.options.plugin_dir.mkdir(parents=True, exist_ok=True)
        self._serve()
        self._kubelet_seen = self._kubelet_identity()
        self._register()
        self._watcher = threading.Thread(target=self._watch, name="deviceplugin-kubelet-watch", daemon=True)
        self._watcher.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Graceful: streams end, the server stops, our socket is removed."""
        self.stopping.set()
        self.state.bump()
        if self._watcher is not None:
            self._watcher.join(10)
            self._watcher = None
        self._stop_server(grace)
        with contextlib.suppress(FileNotFoundError):
            self.options.socket_path.unlink()
        self.state.registered = False

    # -- serving and registering ------------------------------------------------------------------

    def _serve(self) -> None:
        self._stop_server(0)
        path = self.options.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="deviceplugin"))
        pbg.add_DevicePluginServicer_to_server(self.service, server)
        if not server.add_insecure_port(f"unix://{path}"):
            raise OSError(f"cannot listen on {path}")
        server.start()
        self._server = server
        log.info("device plugin serving socket=%s", path)

    def _stop_server(self, grace: float) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def _register(self) -> bool:
        """Register with kubelet; False (logged) when kubelet is not there yet: the watcher retries."""
        self.state.registered = False
        if not self.kubelet_socket.exists():
            log.info("kubelet is not serving %s yet; registering once it is", self.kubelet_socket)
            return False
        try:
            with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
                grpc.channel_ready_future(channel).result(timeout=5)
                with self.state.lock:
                    preferred = self.state.config.enable_get_preferred_allocation
                pbg.RegistrationStub(channel).Register(pb.RegisterRequest(
                    version=VERSION, endpoint=self.options.socket_name, resource_name=self.options.resource_name,
                    options=pb.DevicePluginOptions(get_preferred_allocation_available=preferred)), timeout=15)
        except (grpc.RpcError, grpc.FutureTimeoutError) as exc:
            details = exc.details() if isinstance(exc, grpc.RpcError) and hasattr(exc, "details") else repr(exc)
            log.warning("cannot register with kubelet socket=%s error=%s; retrying", self.kubelet_socket, details)
            return False
        self.state.registered = True
        self.registrations += 1
        log.info("registered with kubelet resource=%s endpoint=%s", self.options.resource_name,
                 self.options.socket_name)
        if self.on_registered is not None:
            self.on_registered()
        return True

    def _kubelet_identity(self) -> tuple[int, int] | None:
        try:
            info = self.kubelet_socket.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_ctime_ns  # a re-created file may reuse the inode number

    def _watch(self) -> None:
        while not self.stopping.wait(self.options.kubelet_poll):
            now = self._kubelet_identity()
            restarted = now is not None and now != self._kubelet_seen
            ours_gone = not self.options.socket_path.exists()
            if not (restarted or ours_gone or (now is not None and not self.state.registered)):
                continue
            if restarted or ours_gone:
                log.info("kubelet restarted or our socket vanished; serving and registering again")
                try:
                    self._serve()
                except OSError as exc:
                    log.error("cannot serve again: %s", exc)
                    continue
            self._kubelet_seen = now
            self._register()


__all__ = ["DevicePluginService", "PluginServer", "device_list"]

"""The node agent: NVML, the MIG manager, the reconciler, the kubelet plugin and the HTTP endpoint
of one node, started and stopped together.

Start-up order (ARCHITECTURE §5): NVML, the first reconciliation (config, MIG modes, adoption,
reboot and crash recovery, annotations), then the gRPC server and Register, then the loops
(reconcile every `sync_interval`, handshake every `handshake_interval`). `/readyz` answers ready
once registered and reconciled.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hami.deviceplugin.allocate import Allocator
from hami.deviceplugin.config import defaults_from
from hami.deviceplugin.inventory import Inventory
from hami.deviceplugin.lifecycle import Reconciler
from hami.deviceplugin.metrics import HttpEndpoint, registry_for
from hami.deviceplugin.options import AgentOptions
from hami.deviceplugin.register import Publisher
from hami.deviceplugin.server import PluginServer
from hami.deviceplugin.state import AgentState
from hami.devices import NvidiaConfig, load_device_config
from hami.k8s import Kube, KubeError
from hami.mig import MigManager
from hami.nvml import Nvml

log = logging.getLogger(__name__)


class NodeAgent:
    """One node's agent. `start()` / `stop()`, or `run()` until SIGTERM/SIGINT."""

    def __init__(self, options: AgentOptions, kube: Kube, nvml: Nvml, *, nvidia: NvidiaConfig | None = None,
                 clock: Any = None) -> None:
        self.options = options
        self.kube = kube
        self.nvml = nvml
        if nvidia is None:
            nvidia = (load_device_config(Path(options.device_config_file).read_text()).nvidia
                      if options.device_config_file else NvidiaConfig())
        self.state = AgentState(options.node_name, defaults_from(nvidia, options.node_name))
        self.mig = MigManager(nvml)
        self.inventory = Inventory(nvml, self.mig, sysfs=options.sysfs, on_error=self.state.count_nvml_error)
        self.allocator = Allocator(kube, self.mig, nvml, self.state, options)
        self.publisher = Publisher(kube, options.node_name)
        kw = {"clock": clock} if clock is not None else {}
        self.reconciler = Reconciler(kube, self.mig, nvml, self.inventory, self.state, options, self.allocator,
                                     self.publisher, nvidia, **kw)
        self.allocator.on_changed = self.reconciler.publish_now
        self.server = PluginServer(options, self.state, self.allocator)
        self.http: HttpEndpoint | None = None
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self._nvml_open = False

    def start(self) -> NodeAgent:
        self.nvml.init()
        self._nvml_open = True
        try:
            if self.options.metrics_port is not None:
                self.http = HttpEndpoint(self.state, registry_for(self.state, self.nvml, self.kube),
                                         self.options.metrics_address, self.options.metrics_port).start()
            self.reconciler.round()
            self._handshake()
            self.server.start()
            self._loop = threading.Thread(target=self._run_loop, name=f"agent-{self.options.node_name}", daemon=True)
            self._loop.start()
        except BaseException:
            self.stop()
            raise
        log.info("node agent started node=%s gpus=%d ready=%s", self.options.node_name, len(self.state.plans),
                 self.state.ready)
        return self

    def sync(self) -> None:
        """One reconciliation round now (tests; the loop does the same every sync_interval)."""
        self.reconciler.round()

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(30)
            self._loop = None
        self.server.stop()
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self._nvml_open:
            self._nvml_open = False
            self.nvml.shutdown()
        log.info("node agent stopped node=%s", self.options.node_name)

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT, stop gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()
        return 0

    def _run_loop(self) -> None:
        last_handshake = datetime.now(UTC)
        while not self._stop.wait(self.options.sync_interval):
            self.reconciler.round()
            if (datetime.now(UTC) - last_handshake).total_seconds() >= self.options.handshake_interval:
                self._handshake()
                self.publisher.forget()  # compare with the node itself now and then
                last_handshake = datetime.now(UTC)

    def _handshake(self) -> None:
        try:
            self.publisher.handshake(datetime.now(UTC))
        except KubeError as exc:
            log.warning("cannot write the handshake node=%s error=%s", self.options.node_name, exc)



def serve(options: AgentOptions, *, kubeconfig: str | None = None, nvml_library: str | None = None) -> int:
    """`hami device-plugin`: connect, start, serve until SIGTERM/SIGINT. Exit status 2 with a
    message for what the operator must fix (no API server, no NVML, a bad device config)."""
    import sys

    from hami.devices import ConfigError
    from hami.nvml import NvmlError

    try:
        kube = Kube.connect(kubeconfig)
    except Exception as exc:  # kubeconfig unreadable, not in a cluster
        print(f"hami device-plugin: cannot reach the Kubernetes API ({exc}); pass --kubeconfig or run in-cluster",
              file=sys.stderr)
        return 2
    nvml = Nvml(nvml_library) if nvml_library else Nvml.from_environment()
    try:
        agent = NodeAgent(options, kube, nvml)
        return agent.run()
    except (NvmlError, ConfigError, OSError) as exc:
        print(f"hami device-plugin: {exc}", file=sys.stderr)
        return 2
    finally:
        kube.close()


__all__ = ["NodeAgent", "serve"]

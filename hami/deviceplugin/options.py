"""The agent's settings (command-line flags and environment), one frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hami.api import names


@dataclass(frozen=True)
class AgentOptions:
    """How one node's agent runs. Defaults are production values (HAMi's paths and ports)."""

    node_name: str
    """This node (env NODE_NAME): the node config entry, the pods and the node it annotates."""
    plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    """kubelet's device-plugin directory: kubelet.sock and our socket live there."""
    resource_name: str = names.RESOURCE_COUNT
    """The extended resource registered with kubelet."""
    socket_name: str = "nvidia-gpu.sock"
    """Our socket's file name in `plugin_dir` (HAMi's name)."""
    config_file: Path | None = None
    """The mounted `hami-device-plugin` ConfigMap's config.json; None: read the ConfigMap itself."""
    config_map: str = "hami-device-plugin"
    config_namespace: str = "kube-system"
    device_config_file: Path | None = None
    """HAMi's device-config.yaml (its `nvidia:` block gives the node config's defaults)."""
    hook_path: Path = Path("/usr/local")
    """Host folder holding vgpu/libvgpu.so, vgpu/ld.so.preload and vgpu/containers (HAMi's HOOK_PATH)."""
    vgpu_lock_dir: Path = Path("/tmp/vgpulock")
    metrics_address: str = "0.0.0.0"
    metrics_port: int | None = 9394
    """/metrics, /healthz, /readyz; None: no HTTP server; 0: any free port."""
    sync_interval: float = 5.0
    """Seconds between reconciliations (pods ended → instances idle, health, registration)."""
    handshake_interval: float = 30.0
    kubelet_poll: float = 1.0
    """Seconds between checks that kubelet.sock was re-created (kubelet restart → re-register)."""
    idle_destroy_after: float = 600.0
    """Destroy a MIG instance idle this long; 0 keeps idle instances until a decision needs their slices."""
    sysfs: Path = Path("/sys")
    component: str = "hami-device-plugin"
    """The event source name."""

    @property
    def socket_path(self) -> Path:
        return self.plugin_dir / self.socket_name


__all__ = ["AgentOptions"]

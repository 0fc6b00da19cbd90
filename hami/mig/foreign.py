"""Is another MIG manager on this node? NVIDIA's device plugin (which also serves `nvidia.com/gpu`
and MIG devices) and the GPU Operator's MIG manager (which applies whole-GPU layouts from the
`nvidia.com/mig.config` label, destroying every instance first) would fight ours: instances
created here would be wiped there, and two plugins would advertise the same resource.

`foreign_mig_manager` is a pure function of what the agent sees at start: the file names in the
kubelet's device-plugins directory and the node's labels. It returns the refusal message (what
was found, why it matters, what to do), or None when the node is ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePath

# NVIDIA's device plugin: nvidia.sock (old), nvidia-gpu.sock, nvidia-mig-<profile>.sock (mixed strategy)
_NVIDIA_SOCKET = re.compile(r"^nvidia(?:[-.].+)?\.sock$")


def _set(value: str) -> bool:
    return True


def _on(value: str) -> bool:
    return value.strip().casefold() not in ("", "false")


def _mig_strategy(value: str) -> bool:
    return value.strip().casefold() in ("single", "mixed")


_LABELS: tuple[tuple[str, Callable[[str], bool], str], ...] = (
    ("nvidia.com/mig.config", _set, "the GPU Operator's MIG manager applies this MIG layout"),
    ("nvidia.com/mig.config.state", _set, "the GPU Operator's MIG manager has acted on this node"),
    ("nvidia.com/gpu.deploy.mig-manager", _on, "the GPU Operator deploys its MIG manager here"),
    ("nvidia.com/gpu.deploy.device-plugin", _on, "the GPU Operator deploys NVIDIA's device plugin here"),
    ("nvidia.com/mig.strategy", _mig_strategy, "NVIDIA's device plugin exposes MIG devices here"),
)


def foreign_mig_manager(
    device_plugin_sockets: Iterable[str],
    node_labels: Mapping[str, str],
    *,
    own_sockets: Iterable[str] = (),
) -> str | None:
    """The reason to refuse managing MIG on this node, or None.

    `device_plugin_sockets`: names (or paths) in the kubelet's device-plugins directory;
    `own_sockets`: the names this agent serves (HAMi names its socket `nvidia-gpu.sock` too),
    excluded from the evidence. `node_labels`: the Node's labels.
    """
    own = {PurePath(s).name for s in own_sockets}
    evidence: list[str] = []
    for socket in dict.fromkeys(PurePath(s).name for s in device_plugin_sockets):
        if socket not in own and _NVIDIA_SOCKET.match(socket):
            evidence.append(f"the NVIDIA device plugin's socket {socket} in the kubelet's device-plugins directory")
    for label, matters, meaning in _LABELS:
        value = node_labels.get(label)
        if value is not None and matters(value):
            evidence.append(f"node label {label}={value} ({meaning})")
    if not evidence:
        return None
    return (
        "refusing to manage MIG on this node: another MIG manager is here: "
        + "; ".join(evidence)
        + ". Two managers would destroy each other's MIG instances and both advertise nvidia.com/gpu. "
        "Either run hami in hami-core mode on this node (nodeconfig operatingmode: hami-core), or switch "
        "NVIDIA's components off here: stop the NVIDIA device plugin (GPU Operator: label "
        "nvidia.com/gpu.deploy.device-plugin=false) and its MIG manager (label "
        "nvidia.com/gpu.deploy.mig-manager=false, and remove nvidia.com/mig.config), then restart the agent."
    )

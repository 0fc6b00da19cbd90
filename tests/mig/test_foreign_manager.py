"""Another MIG manager on the node (NVIDIA's device plugin, the GPU Operator's MIG manager) would
fight ours: `foreign_mig_manager` finds its traces and says why we refuse, and what to do."""

from __future__ import annotations

import pytest

from hami.mig import foreign_mig_manager

PLAIN_NODE = {"kubernetes.io/hostname": "node-a", "nvidia.com/gpu.present": "true", "hami.io/node-mig": "on"}


def test_a_clean_node_is_ours():
    assert foreign_mig_manager(["kubelet.sock", "hami-gpu.sock"], PLAIN_NODE) is None
    assert foreign_mig_manager([], {}) is None


@pytest.mark.parametrize(
    "socket", ["nvidia-gpu.sock", "nvidia.sock", "nvidia-mig-1g.10gb.sock", "nvidia-mig-3g.40gb.sock"]
)
def test_nvidias_device_plugin_socket_is_refused(socket):
    message = foreign_mig_manager(["kubelet.sock", socket], PLAIN_NODE)
    assert message is not None
    assert socket in message and "NVIDIA device plugin" in message and "refusing to manage MIG" in message
    assert "hami-core" in message  # says what to do


def test_our_own_socket_is_not_a_foreign_one():
    assert foreign_mig_manager(["kubelet.sock", "nvidia-gpu.sock"], PLAIN_NODE, own_sockets=["nvidia-gpu.sock"]) is None
    message = foreign_mig_manager(["nvidia-gpu.sock", "nvidia-mig-1g.5gb.sock"], {}, own_sockets=["nvidia-gpu.sock"])
    assert message is not None and "nvidia-mig-1g.5gb.sock" in message and "nvidia-gpu.sock" not in message


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"nvidia.com/mig.config": "all-1g.10gb"}, "nvidia.com/mig.config=all-1g.10gb"),
        ({"nvidia.com/mig.config": "all-disabled"}, "nvidia.com/mig.config=all-disabled"),
        ({"nvidia.com/mig.config.state": "success"}, "nvidia.com/mig.config.state=success"),
        ({"nvidia.com/gpu.deploy.mig-manager": "true"}, "nvidia.com/gpu.deploy.mig-manager=true"),
        ({"nvidia.com/gpu.deploy.device-plugin": "true"}, "nvidia.com/gpu.deploy.device-plugin=true"),
        ({"nvidia.com/gpu.deploy.device-plugin": "paused-for-mig-change"}, "paused-for-mig-change"),
        ({"nvidia.com/mig.strategy": "mixed"}, "nvidia.com/mig.strategy=mixed"),
    ],
)
def test_gpu_operator_labels_are_refused(labels, named):
    message = foreign_mig_manager([], {**PLAIN_NODE, **labels})
    assert message is not None and named in message and "GPU Operator" in message


@pytest.mark.parametrize(
    "labels",
    [
        {"nvidia.com/gpu.deploy.mig-manager": "false"},
        {"nvidia.com/gpu.deploy.device-plugin": "false"},
        {"nvidia.com/mig.strategy": "none"},
        {"nvidia.com/gpu.deploy.dcgm-exporter": "true"},  # monitoring does not manage MIG
    ],
)
def test_operator_components_switched_off_are_no_conflict(labels):
    assert foreign_mig_manager(["kubelet.sock"], {**PLAIN_NODE, **labels}) is None


def test_every_trace_is_named_once():
    message = foreign_mig_manager(
        ["nvidia-gpu.sock", "nvidia-gpu.sock"],
        {"nvidia.com/mig.config": "all-balanced", "nvidia.com/gpu.deploy.mig-manager": "true"},
    )
    assert message.count("nvidia-gpu.sock") == 1
    assert "nvidia.com/mig.config=all-balanced" in message and "nvidia.com/gpu.deploy.mig-manager=true" in message

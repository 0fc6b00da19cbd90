"""The kubelet-facing side: Register, options, ListAndWatch with health, kubelet restarts,
graceful shutdown; all over real unix sockets with the simulated kubelet."""

from __future__ import annotations

import grpc

from hami.api import names
from hami.deviceplugin.server import VERSION
from hami.deviceplugin.v1beta1 import api_pb2 as pb
from hami.deviceplugin.v1beta1 import api_pb2_grpc as pbg
from hami.nvml import Return
from tests.deviceplugin.conftest import Dev, wait_for

RESOURCE = names.RESOURCE_COUNT


def health(node) -> dict[str, str]:
    return node.kubelet.devices(RESOURCE)


def test_registers_replicas_with_kubelet(core_node) -> None:
    node = core_node
    agent = node.start_agent()
    devices = wait_for(lambda: health(node))
    assert sorted(devices) == sorted(f"{node.uuid(g)}-{i}" for g in (0, 1) for i in range(10))
    assert set(devices.values()) == {"Healthy"}
    allocatable = node.node()["status"]["allocatable"][RESOURCE]
    assert allocatable == "20"
    assert agent.state.ready and agent.server.registrations == 1


def test_options_and_version(core_node) -> None:
    node = core_node
    node.start_agent()
    with grpc.insecure_channel(f"unix://{node.options.socket_path}") as channel:
        options = pbg.DevicePluginStub(channel).GetDevicePluginOptions(pb.Empty(), timeout=5)
    assert options.get_preferred_allocation_available and not options.pre_start_required
    assert VERSION == "v1beta1"


def test_preferred_allocation_can_be_switched_off(tmp_path, monkeypatch) -> None:
    from tests.deviceplugin.conftest import make_node, nodeconfig

    gen = make_node(tmp_path, monkeypatch, ["A10"],
                    nodeconfig(enablegetpreferredallocation=False))
    node = next(gen)
    try:
        node.start_agent()
        with grpc.insecure_channel(f"unix://{node.options.socket_path}") as channel:
            options = pbg.DevicePluginStub(channel).GetDevicePluginOptions(pb.Empty(), timeout=5)
        assert not options.get_preferred_allocation_available
    finally:
        gen.close()


def test_list_and_watch_pushes_cordon_and_nvml_health(core_node) -> None:
    node = core_node
    agent = node.start_agent()
    wait_for(lambda: health(node))
    first = node.uuid(0)
    node.store.patch("nodes", None, "gpu-node", {"metadata": {"annotations": {names.DEVICE_CORDON: first}}},
                     "application/merge-patch+json")
    agent.sync()
    wait_for(lambda: {h for d, h in health(node).items() if d.startswith(first)} == {"Unhealthy"}, what="cordon")
    assert {h for d, h in health(node).items() if not d.startswith(first)} == {"Healthy"}
    assert node.node()["status"]["allocatable"][RESOURCE] == "10"
    node.store.patch("nodes", None, "gpu-node", {"metadata": {"annotations": {names.DEVICE_CORDON: None}}},
                     "application/merge-patch+json")
    node.fake.inject_fault("nvmlDeviceGetMemoryInfo", Return.GPU_IS_LOST)  # GPU 0 is read first
    agent.sync()
    wait_for(lambda: {h for d, h in health(node).items() if d.startswith(first)} == {"Unhealthy"}, what="lost")
    assert ("nvmlDeviceGetMemoryInfo", "NVML_ERROR_GPU_IS_LOST") in agent.state.nvml_errors
    agent.sync()  # the GPU answers again
    wait_for(lambda: set(health(node).values()) == {"Healthy"}, what="recovered")


def test_re_registers_after_a_kubelet_restart(core_node) -> None:
    node = core_node
    agent = node.start_agent()
    wait_for(lambda: health(node))
    node.decided_pod("before", [[Dev(0, 1000, 10)]])
    node.wait_phase("before", "Running")
    node.kubelet.restart()  # removes every socket, ours included
    wait_for(lambda: agent.server.registrations == 2, what="re-registration")
    wait_for(lambda: len(health(node)) == 20 and set(health(node).values()) == {"Healthy"})
    node.decided_pod("after", [[Dev(1, 1000, 10)]])
    assert node.wait_phase("after", "Running", "Failed") == "Running"


def test_registers_once_kubelet_appears(core_node) -> None:
    node = core_node
    node.kubelet.stop()
    agent = node.start_agent()
    assert not agent.state.registered and not agent.state.ready
    node.kubelet.start()
    wait_for(lambda: agent.state.registered, what="registration")
    wait_for(lambda: len(health(node)) == 20)


def test_graceful_shutdown_removes_the_socket_and_ends_the_stream(core_node) -> None:
    node = core_node
    node.start_agent()
    wait_for(lambda: health(node))
    assert node.options.socket_path.exists()
    node.stop_agent()
    assert not node.options.socket_path.exists()
    wait_for(lambda: set(health(node).values()) == {"Unhealthy"}, what="stream end marks devices unhealthy")
    agent = node.start_agent()  # a new agent takes over cleanly
    wait_for(lambda: set(health(node).values()) == {"Healthy"})
    assert agent.server.registrations == 1

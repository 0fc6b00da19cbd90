"""The MIG lifecycle: adoption at start, lazy idle destruction, MIG mode changes per GPU, node
config reloads, and the registration annotations that follow."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hami.api import names
from hami.api.codecs import Placement, decode_mig_allocations, decode_node_mig_instances, decode_node_register
from hami.devices import find_model
from hami.mig import MigManager
from hami.nvml import Nvml
from hami.sim import fakenvml
from tests.deviceplugin.conftest import NODE, Dev, Node, make_node, nodeconfig, wait_for
from tests.nvml.helpers import library


def published(node: Node):
    return decode_node_mig_instances(node.node_annotations().get(names.NODE_MIG_INSTANCES, ""))


def register(node: Node):
    return {d.id: d for d in decode_node_register(node.node_annotations()[names.NODE_REGISTER])}


def set_config(node: Node, config: str) -> None:
    node.store.patch("configmaps", "kube-system", "hami-device-plugin", {"data": {"config.json": config}},
                     "application/merge-patch+json")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_adopts_instances_placed_by_hand_or_by_the_driver(mig_node: Node) -> None:
    node = mig_node
    with Nvml(library()) as nvml:
        manager = MigManager(nvml)
        by_hand = manager.ensure(node.uuid(0), "1g.10gb", 3)  # an odd spot no geometry would choose
        device = nvml.device_by_index(1)
        gi = nvml.create_gpu_instance(device, 9)  # 3g.40gb wherever the driver likes
        nvml.create_compute_instance(gi, 2)
    agent = node.start_agent()
    found = {(i.gpu_uuid, i.profile, i.placement.start): i for i in published(node)}
    assert (node.uuid(0), "1g.10gb", 3) in found
    assert next(k for k in found if k[0] == node.uuid(1))[1] == "3g.40gb"
    assert all(i.state.value == "idle" for i in found.values())
    # a decision that reuses the hand-made instance gets exactly it
    node.decided_pod("reuse", [[Dev(0, 9728, 100, "1g.10gb", 3, 1)]])
    assert node.wait_phase("reuse", "Running", "Failed") == "Running"
    [allocation] = decode_mig_allocations(node.annotations("reuse")[names.VGPU_MIG_ALLOCATIONS])
    assert allocation.mig_uuid == by_hand.mig_uuid
    assert agent.state.owners[by_hand.mig_uuid] == "default/reuse"


def test_a_restarted_agent_keeps_instances_of_running_pods(mig_node: Node) -> None:
    node = mig_node
    node.start_agent()
    node.decided_pod("long", [[Dev(0, 19968, 100, "2g.20gb", 2, 2)]])
    node.wait_phase("long", "Running")
    [before] = published(node)
    node.stop_agent()
    node.start_agent()
    [after] = published(node)
    assert after == before and after.state.value == "in-use" and after.pod == "default/long"


def test_idle_instances_are_destroyed_after_the_idle_time_unless_busy(mig_node: Node) -> None:
    node = mig_node
    clock = Clock()
    from hami.deviceplugin.agent import NodeAgent

    agent = NodeAgent(replace(node.options, idle_destroy_after=600), node.kube, Nvml(library()), clock=clock).start()
    node.agents.append(agent)
    node.agent = agent
    for name, start in (("a", 0), ("b", 1)):
        node.decided_pod(name, [[Dev(0, 9728, 100, "1g.10gb", start, 1)]])
        node.wait_phase(name, "Running")
    held = decode_mig_allocations(node.annotations("b")[names.VGPU_MIG_ALLOCATIONS])[0].mig_uuid
    node.delete_pod("a")
    node.delete_pod("b")
    agent.sync()
    assert {i.state.value for i in published(node)} == {"idle"}
    assert {i.since for i in published(node)} == {clock.now.replace(microsecond=0)}
    node.fake.hold(held)  # another NVML client (e.g. DCGM) holds it: NVML refuses to destroy it
    clock.now += timedelta(seconds=599)
    agent.sync()
    assert len(node.fake.instances()) == 2
    clock.now += timedelta(seconds=2)
    agent.sync()
    assert [i.mig_uuid for i in published(node)] == [held]  # the other one is gone, the agent went on
    node.fake.release(held)
    agent.sync()
    assert published(node) == () and node.fake.instances() == []


@pytest.fixture
def hopper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """GPU 0: H100 with MIG off, GPU 1: A100 with MIG off; the node config asks for MIG on both."""
    config = nodeconfig(operatingmode="mig")
    yield from make_node(tmp_path, monkeypatch, [fakenvml.GpuSpec("H100-SXM5-80GB"),
                                                 fakenvml.GpuSpec("A100-SXM4-80GB")], config)


def test_mig_is_enabled_live_on_hopper_and_reported_pending_on_ampere(hopper: Node) -> None:
    node = hopper
    node.start_agent()
    state = node.fake.read()
    assert (state.gpus[0].mig_current, state.gpus[1].mig_current, state.gpus[1].mig_pending) == (1, 0, 1)
    devices = register(node)
    assert devices[node.uuid(0)].health and devices[node.uuid(0)].mig_profiles
    assert not devices[node.uuid(1)].health and devices[node.uuid(1)].mode == "mig"
    events = node.store.list("events", "default")["items"]
    reset = [e["message"] for e in events if e["reason"] == "GpuResetRequired"]
    assert reset and node.uuid(1) in reset[0] and "nvidia-smi -r" in reset[0]
    health = node.kubelet.devices(names.RESOURCE_COUNT)
    assert {h for d, h in health.items() if d.startswith(node.uuid(1))} == {"Unhealthy"}
    node.fake.reset_gpu(1)  # the operator resets it: the pending mode applies
    node.agent.sync()
    assert register(node)[node.uuid(1)].health
    wait_for(lambda: set(node.kubelet.devices(names.RESOURCE_COUNT).values()) == {"Healthy"})


def test_mig_is_not_enabled_under_running_processes(hopper: Node) -> None:
    node = hopper
    node.fake.attach_gpu(0, pid=777)
    agent = node.start_agent()
    assert node.fake.read().gpus[0].mig_current == 0
    assert "777" in agent.state.plans[node.uuid(0)].note
    node.fake.detach(777)
    agent.sync()
    assert node.fake.read().gpus[0].mig_current == 1


@pytest.fixture
def switchable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """GPU 0: H100 (MIG on), GPU 1: A10; node mode mig, GPU 1 hami-core by uuid."""
    specs = [fakenvml.GpuSpec("H100-SXM5-80GB", mig=True), fakenvml.GpuSpec("A10", uuid="GPU-a10")]
    config = nodeconfig(operatingmode="mig", devicemodes=[{"uuid": ["GPU-a10"], "operatingmode": "hami-core"}])
    yield from make_node(tmp_path, monkeypatch, specs, config)


def test_switching_a_gpu_back_to_hami_core_disables_mig_once_idle(switchable: Node) -> None:
    node = switchable
    agent = node.start_agent()
    assert {d.mode for d in register(node).values()} == {"mig", "hami-core"}
    node.decided_pod("m", [[Dev(0, 40192, 100, "3g.40gb", 4, 4)]])
    node.wait_phase("m", "Running")
    set_config(node, nodeconfig(operatingmode="hami-core"))
    agent.sync()
    plan = agent.state.plans[node.uuid(0)]
    assert "draining" in plan.note and "default/m" in plan.note
    assert node.fake.read().gpus[0].mig_current == 1 and not register(node)[node.uuid(0)].health
    node.delete_pod("m")
    agent.sync()
    assert node.fake.read().gpus[0].mig_current == 0 and node.fake.instances() == []
    devices = register(node)
    assert devices[node.uuid(0)].mode == "hami-core" and devices[node.uuid(0)].health
    assert devices[node.uuid(0)].count == 10


def test_an_invalid_node_config_keeps_the_previous_one_and_says_why(switchable: Node) -> None:
    node = switchable
    agent = node.start_agent()
    set_config(node, nodeconfig(operatingmode="vgpu"))
    agent.sync()
    assert agent.state.config.operating_mode == "mig"
    events = node.store.list("events", "default")["items"]
    [message] = [e["message"] for e in events if e["reason"] == "InvalidNodeConfig"]
    assert "'vgpu' is not an operating mode" in message and "hami-core, mig" in message


def test_register_fields_and_writes_only_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = nodeconfig(devicesplitcount=4, devicememoryscaling=1.5, devicecorescaling=2)
    gen = make_node(tmp_path, monkeypatch, ["A10"], config)
    node = next(gen)
    try:
        agent = node.start_agent()
        [device] = decode_node_register(node.node_annotations()[names.NODE_REGISTER])
        assert (device.count, device.devmem, device.devcore, device.mode, device.type, device.health) == (
            4, int(23028 * 1.5), 200, "hami-core", "NVIDIA A10", True)
        writes = [r for r in node.api.requests if r[0] == "PATCH" and r[1].endswith(f"/nodes/{NODE}")]
        agent.sync()
        agent.sync()
        again = [r for r in node.api.requests if r[0] == "PATCH" and r[1].endswith(f"/nodes/{NODE}")]
        assert again == writes, "an unchanged register annotation must not be written again"
        node.store.patch("nodes", None, NODE, {"metadata": {"annotations": {names.DEVICE_CORDON: node.uuid(0)}}},
                         "application/merge-patch+json")
        agent.sync()
        assert not decode_node_register(node.node_annotations()[names.NODE_REGISTER])[0].health
    finally:
        gen.close()


def test_a_model_the_catalog_lacks_registers_and_allocates_from_nvml(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    known = find_model("A100-SXM4-80GB")
    unknown = replace(known, key="Z100-80GB", nvml_name="NVIDIA Z100 80GB", aliases=())
    config = nodeconfig(operatingmode="mig")
    gen = make_node(tmp_path, monkeypatch, [fakenvml.GpuSpec(unknown, mig=True)], config)
    node = next(gen)
    try:
        node.start_agent()
        [device] = decode_node_register(node.node_annotations()[names.NODE_REGISTER])
        assert device.type == "NVIDIA Z100 80GB" and device.mode == "mig" and device.health
        profiles = {p.name: p for p in device.mig_profiles}
        assert profiles["3g.40gb"].placements == (Placement(0, 4), Placement(4, 4))
        assert profiles["3g.40gb"].slice_count == 3 and profiles["3g.40gb"].core == 43
        assert (profiles["3g.40gb"].compute_slices, profiles["3g.40gb"].memory_slices) == (3, 4)
        assert profiles["1g.10gb+me"].flags == ("+me",) and profiles["1g.10gb"].flags == ()
        node.decided_pod("z", [[Dev(0, 40192, 100, "3g.40gb", 0, 4)]])
        assert node.wait_phase("z", "Running", "Failed") == "Running"
    finally:
        gen.close()


def test_another_mig_manager_on_the_node_is_refused_with_the_reason(mig_node: Node) -> None:
    node = mig_node
    (node.plugin_dir / "nvidia-gpu.sock").touch()  # ours is named the same: not evidence
    node.store.patch("nodes", None, NODE, {"metadata": {"labels": {"nvidia.com/mig.config": "all-1g.10gb"}}},
                     "application/merge-patch+json")
    agent = node.start_agent(socket_name="hami-gpu.sock")
    plans = agent.state.plans
    assert "refusing to manage MIG" in plans[node.uuid(0)].note and plans[node.uuid(2)].available
    events = node.store.list("events", "default")["items"]
    [message] = [e["message"] for e in events if e["reason"] == "ForeignMigManager"]
    assert "nvidia-gpu.sock" in message and "nvidia.com/mig.config=all-1g.10gb" in message
    node.decided_pod("m", [[Dev(0, 9728, 100, "1g.10gb", 0, 1)]])
    assert node.wait_phase("m", "Running", "Failed") == "Failed"
    assert "refusing to manage MIG" in node.pod("m")["status"]["message"]
    assert node.fake.instances() == []
    node.decided_pod("h", [[Dev(2, 1000, 10)]], lock=False)
    assert node.wait_phase("h", "Running", "Failed") == "Running"


def test_without_a_readable_config_at_start_no_mig_mode_is_switched(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    specs = [fakenvml.GpuSpec("H100-SXM5-80GB", mig=True), "A10"]
    gen = make_node(tmp_path, monkeypatch, specs, nodeconfig(operatingmode="vgpu"))
    node = next(gen)
    try:
        agent = node.start_agent()
        assert node.fake.read().gpus[0].mig_current == 1  # the default (hami-core) was not applied
        assert {d.mode for d in register(node).values()} == {"mig", "hami-core"}
        events = node.store.list("events", "default")["items"]
        assert any("MIG modes are left as they are" in e["message"] for e in events)
        set_config(node, nodeconfig(operatingmode="mig", devicemodes=[{"index": [1], "operatingmode": "hami-core"}]))
        agent.sync()
        assert agent.state.config.operating_mode == "mig"
    finally:
        gen.close()

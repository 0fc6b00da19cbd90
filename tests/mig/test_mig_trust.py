"""The MIG manager's trust in NVML (issue 11): one transient NVML error must never make an
existing instance invisible, reported lost, or destroyed against the rules.

Node (conftest): GPU 0 H100-SXM5-80GB, GPU 1 A30 (both MIG on), GPU 2 L4. H100 profile constant 2
is 3g.40gb (id 9); the manager reads constants 0, 1, 2, … in order, one `…ProfileInfoV` call each.
"""

from __future__ import annotations

import threading

import pytest

from hami.mig import (
    Desired,
    MigInUseError,
    MigManager,
    NvmlCallError,
    ReconcileError,
    UnknownProfileError,
)
from hami.nvml import Placement, errors

R = errors.Return
PROFILE_INFO = "nvmlDeviceGetGpuInstanceProfileInfoV"


def make_3g(nvml, start: int = 4) -> str:
    """A 3g.40gb instance on the H100 made behind the manager's back; its MIG UUID."""
    gi = nvml.create_gpu_instance(nvml.device_by_index(0), 9, Placement(start, 4))
    return nvml.uuid(nvml.compute_instance_info(nvml.create_compute_instance(gi, 2)).device)


# -- profile-cache poisoning --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [R.NOT_SUPPORTED, R.INVALID_ARGUMENT])
def test_a_transient_error_on_a_profile_row_does_not_poison_the_table(nvml, node, code):
    mig_uuid = make_3g(nvml)
    manager = MigManager(nvml)
    # the 3g row of the H100's first read fails (for INVALID_ARGUMENT the v2 retry fails too)
    node.inject_fault(PROFILE_INFO, code, nth=3, times=2 if code == R.INVALID_ARGUMENT else 1)
    (inst,) = manager.instances()
    assert (inst.mig_uuid, inst.profile, inst.placement) == (mig_uuid, "3g.40gb", 4)
    assert manager.ensure(inst.gpu_uuid, "3g.40gb", 4) == inst
    assert manager.reconcile([]).destroyed == (inst,)


def test_a_profile_the_driver_denied_is_asked_again_later(nvml, node):
    """Two denials in a row (or an old driver): the table is kept, the catalog's missing rows re-asked."""
    with node.edit() as state:
        row = next(p for p in state.gpus[0].profiles if p.name == "3g.40gb")
        state.gpus[0].profiles.remove(row)
    manager = MigManager(nvml)
    h100 = manager.gpu_uuids()[0]
    with pytest.raises(UnknownProfileError, match=r"3g\.40gb"):
        manager.ensure(h100, "3g.40gb", 4)
    with node.edit() as state:
        state.gpus[0].profiles.append(row)
    assert manager.ensure(h100, "3g.40gb", 4).profile == "3g.40gb"


def test_a_failed_call_is_not_an_unknown_profile_and_is_not_cached(nvml, node):
    manager = MigManager(nvml)
    h100 = manager.gpu_uuids()[0]
    node.inject_fault("nvmlDeviceGetGpuInstancePossiblePlacements_v2", R.UNKNOWN, times=10)
    with pytest.raises(NvmlCallError, match="cannot read the MIG profiles") as err:
        manager.ensure(h100, "3g.40gb", 4)
    assert not isinstance(err.value, UnknownProfileError)
    assert isinstance(err.value.nvml_error, errors.Unknown) and err.value.gpu == h100
    node.clear_faults()
    assert manager.ensure(h100, "3g.40gb", 4).placement == 4
    with pytest.raises(UnknownProfileError, match="its profiles are"):
        manager.ensure(h100, "5g.50gb", 0)


# -- discover() never turns a failed call into a loss ----------------------------------------------------


def test_a_transient_mig_mode_error_is_no_loss(manager, node):
    h100 = manager.gpu_uuids()[0]
    made = manager.ensure(h100, "1g.10gb", 0)
    manager.discover()
    node.inject_fault("nvmlDeviceGetMigMode", R.NOT_SUPPORTED)
    found = manager.discover()
    assert (found.lost, found.mig_mode_lost, found.unknown) == ((), (), ())
    assert found.instances == (made,) and h100 in found.mig_enabled


def test_a_persistent_failure_reports_the_gpu_unknown_and_its_loss_later(nvml, node):
    manager = MigManager(nvml, read_attempts=2)
    h100, a30, _ = manager.gpu_uuids()
    made = manager.ensure(h100, "1g.10gb", 0)
    other = manager.ensure(a30, "1g.6gb", 1)
    node.inject_fault("nvmlDeviceGetMigMode", R.NOT_SUPPORTED, times=2)  # both tries on the H100
    found = manager.discover()
    assert found.unknown == (h100,) and not found.complete
    assert (found.lost, found.mig_mode_lost, found.instances) == ((), (), (other,))
    assert "NOT_SUPPORTED" in str(found.unknown_errors[0])
    node.reboot()
    later = manager.discover()
    assert later.complete and set(later.lost) == {made, other}  # what it could not see was not forgotten


def test_previous_instances_of_an_unknown_gpu_are_compared_once_it_answers(nvml, node):
    made = MigManager(nvml).ensure(node.read().gpus[0].uuid, "2g.20gb", 2)
    node.reboot()
    manager = MigManager(nvml, read_attempts=1)
    node.inject_fault("nvmlDeviceGetMigMode", R.GPU_IS_LOST)
    assert manager.discover(previous=[made]).lost == ()
    assert manager.discover().lost == (made,)


def test_a_gpu_with_previous_instances_is_mig_capable_whatever_one_call_says(nvml, node):
    with node.edit() as state:  # a model the catalog does not know: only NVML and `previous` tell
        state.gpus[0].name = "NVIDIA Prototype X100"
    made = MigManager(nvml).ensure(node.read().gpus[0].uuid, "1g.10gb", 2)
    node.inject_fault("nvmlDeviceGetMigMode", R.NOT_SUPPORTED)
    found = MigManager(nvml).discover(previous=[made])
    assert (found.instances, found.lost, found.mig_mode_lost) == ((made,), (), ())


@pytest.mark.parametrize("code", [R.NOT_SUPPORTED, R.INVALID_ARGUMENT, R.UNKNOWN])
def test_a_failed_compute_instance_listing_is_not_a_gpu_instance_without_one(nvml, node, code):
    mig_uuid = make_3g(nvml)
    node.inject_fault("nvmlGpuInstanceGetComputeInstances", code, nth=3)  # the full 3-slice CI's listing
    (inst,) = MigManager(nvml).discover().instances
    assert inst.mig_uuid == mig_uuid and inst.compute_instance_id == 0


def test_ensure_does_not_mistake_a_failed_listing_for_a_missing_compute_instance(manager, node):
    h100 = manager.gpu_uuids()[0]
    made = manager.ensure(h100, "3g.40gb", 0)
    node.inject_fault("nvmlGpuInstanceGetComputeInstances", R.INVALID_ARGUMENT, nth=3)
    assert manager.ensure(h100, "3g.40gb", 0) == made


def test_a_transient_listing_error_is_retried(manager, node):
    made = manager.ensure(manager.gpu_uuids()[0], "1g.10gb", 6)
    node.inject_fault("nvmlDeviceGetGpuInstances", R.UNKNOWN)
    assert manager.discover().instances == (made,)
    node.inject_fault("nvmlDeviceGetGpuInstances", R.UNKNOWN)
    assert manager.instances() == (made,)


# -- destroy() is all-or-nothing ---------------------------------------------------------------------


def test_destroy_with_a_transient_profile_error_still_refuses_the_busy_one(nvml, node):
    first = MigManager(nvml)
    h100 = first.gpu_uuids()[0]
    idle = first.ensure(h100, "1g.10gb", 0)
    busy = first.ensure(h100, "3g.40gb", 4)
    node.attach(busy.mig_uuid, pid=9)
    fresh = MigManager(nvml)  # reads the profile table inside destroy()
    node.inject_fault(PROFILE_INFO, R.NOT_SUPPORTED, nth=3)
    with pytest.raises(MigInUseError, match=busy.mig_uuid):
        fresh.destroy([idle.mig_uuid, busy.mig_uuid])
    assert len(node.instances()) == 2


def test_destroy_refuses_everything_when_it_cannot_see_every_gpu(nvml, node):
    first = MigManager(nvml)
    h100, a30, _ = first.gpu_uuids()
    a = first.ensure(h100, "1g.10gb", 0)
    b = first.ensure(a30, "1g.6gb", 0)
    fresh = MigManager(nvml, read_attempts=1)
    node.inject_fault("nvmlDeviceGetMigMode", R.GPU_IS_LOST, nth=2)  # the A30's
    with pytest.raises(NvmlCallError, match="nothing was destroyed"):
        fresh.destroy([a.mig_uuid, b.mig_uuid])
    assert len(node.instances()) == 2


def test_destroy_stops_at_an_instance_nvml_refuses_and_says_what_it_destroyed(manager, node):
    h100 = manager.gpu_uuids()[0]
    a = manager.ensure(h100, "1g.10gb", 0)
    b = manager.ensure(h100, "1g.10gb", 1)
    node.hold(b.mig_uuid)  # DCGM holds it: IN_USE, no process listed
    with pytest.raises(MigInUseError, match="another NVML client") as err:
        manager.destroy([a, b])
    assert err.value.destroyed == (a,)
    assert [gi.start for _, gi in node.instances()] == [1]


# -- profiles are keyed by (compute slices, memory slices, flags) ----------------------------------------


def rename(node, gpu: int, old: str, new: str) -> None:
    with node.edit() as state:
        next(p for p in state.gpus[gpu].profiles if p.name == old).name = new


def test_a_driver_renaming_a_profile_still_satisfies_the_catalog_name(nvml, node):
    rename(node, 0, "3g.40gb", "3g.39gb")  # mig-parted #31
    manager = MigManager(nvml)
    h100 = manager.gpu_uuids()[0]
    inst = manager.ensure(h100, "3g.40gb", 4)
    assert inst.profile == "3g.39gb" and inst.profile_id == 9  # the driver's name is what we display
    assert manager.ensure(h100, "3g.39gb", 4) == inst
    me = manager.ensure(h100, "1g.10gb+me", 0)
    plain = manager.ensure(h100, "1g.10gb", 1)
    assert (me.profile, plain.profile) == ("1g.10gb+me", "1g.10gb") and me.profile_id != plain.profile_id
    table = {p.key: p for p in manager.profiles(h100)}
    assert table[(3, 4, ())].name == "3g.39gb" and table[(1, 1, ("+me",))].name == "1g.10gb+me"


def test_a_model_missing_from_the_catalog_matches_by_slices_and_size(nvml, node):
    with node.edit() as state:
        state.gpus[0].name = "NVIDIA Prototype X100"
    rename(node, 0, "3g.40gb", "3g.39gb")
    manager = MigManager(nvml)
    h100 = manager.gpu_uuids()[0]
    assert manager.ensure(h100, "3g.40gb", 4).profile == "3g.39gb"
    with pytest.raises(UnknownProfileError):
        manager.ensure(h100, "3g.20gb", 4)  # the same slices, but not this size


# -- reconcile works per GPU --------------------------------------------------------------------------


def test_a_stuck_idle_instance_does_not_block_the_node(manager, node):
    h100, a30, _ = manager.gpu_uuids()
    stuck = manager.ensure(h100, "1g.10gb", 0)
    node.hold(stuck.mig_uuid)
    result = manager.reconcile([Desired(a30, "2g.12gb", 0), Desired(h100, "3g.40gb", 4)])
    assert {(i.gpu_uuid, i.profile) for i in result.created} == {(a30, "2g.12gb"), (h100, "3g.40gb")}
    ((instance, error),) = [(s.instance, s.error) for s in result.stuck]
    assert instance == stuck and isinstance(error.nvml_error, errors.InUse) and "another NVML client" in str(error)
    assert result.failed == ()


def test_reconcile_reports_a_gpu_it_cannot_complete_and_finishes_the_others(manager, node):
    h100, a30, _ = manager.gpu_uuids()
    stuck = manager.ensure(h100, "1g.10gb", 0)
    node.hold(stuck.mig_uuid)
    with pytest.raises(ReconcileError) as err:  # the 2g at 0 needs the stuck 1g's slice
        manager.reconcile([Desired(h100, "2g.20gb", 0), Desired(h100, "1g.10gb", 6), Desired(a30, "2g.12gb", 2)])
    assert err.value.gpu == h100 and err.value.placement == 0 and stuck.mig_uuid in str(err.value)
    result = err.value.result
    assert [(i.gpu_uuid, i.placement) for i in result.created] == [(a30, 2)]
    assert [f.gpu_uuid for f in result.failed] == [h100]
    assert [s.instance for s in result.stuck] == [stuck]
    # the H100's own creations were rolled back; the A30's stay
    assert sorted((i, gi.start) for i, gi in node.instances()) == [(0, 0), (1, 2)]


def test_reconcile_goes_on_past_a_gpu_it_cannot_read(nvml, node):
    manager = MigManager(nvml, read_attempts=1)
    h100, a30, _ = manager.gpu_uuids()
    idle = manager.ensure(a30, "1g.6gb", 3)
    node.inject_fault("nvmlDeviceGetGpuInstances", R.GPU_IS_LOST)  # the H100's scan
    with pytest.raises(ReconcileError) as err:
        manager.reconcile([])
    assert [f.gpu_uuid for f in err.value.result.failed] == [h100]
    assert err.value.result.destroyed == (idle,) and node.instances() == []


# -- discover() and ensure() on different GPUs ------------------------------------------------------------


def test_discover_does_not_forget_an_instance_ensured_meanwhile(manager, node, monkeypatch):
    h100, a30, _ = manager.gpu_uuids()
    scan, made = manager._scan, []

    def scan_while_another_thread_ensures(gpu, *args, **kw):
        found = scan(gpu, *args, **kw)
        if gpu.uuid == a30 and not made:  # discover() is past the H100
            worker = threading.Thread(target=lambda: made.append(manager.ensure(h100, "1g.10gb", 3)))
            worker.start()
            worker.join()
        return found

    monkeypatch.setattr(manager, "_scan", scan_while_another_thread_ensures)
    manager.discover()
    monkeypatch.undo()
    node.reboot()
    assert manager.discover().lost == (made[0],)

"""The MIG manager's rules, one by one, on a simulated node (H100 + A30 with MIG on, an L4)."""

from __future__ import annotations

import threading

import pytest

from hami.mig import (
    Desired,
    MigDisabledError,
    MigError,
    MigInUseError,
    MigManager,
    ReconcileError,
    UnknownGpuError,
    UnknownProfileError,
)
from hami.nvml import Placement, errors


def test_ensure_creates_at_the_placement_and_is_idempotent(manager, node):
    h100 = manager.gpu_uuids()[0]
    inst = manager.ensure(h100, "3g.40gb", 4)
    assert (inst.profile, inst.profile_id, inst.placement, inst.size) == ("3g.40gb", 9, 4, 4)
    assert (inst.gpu_instance_id, inst.compute_instance_id) == (2, 0)
    assert inst.mig_uuid.startswith("MIG-")
    assert manager.ensure(h100, "3g.40gb", 4) == inst
    ((_, gi),) = node.instances()
    assert (gi.start, gi.cis[0].uuid) == (4, inst.mig_uuid)


def test_ensure_reuses_an_idle_instance_made_elsewhere(manager, nvml):
    h100 = nvml.device_by_index(0)
    gi = nvml.create_gpu_instance(h100, 14, Placement(2, 2))
    ci = nvml.create_compute_instance(gi, 1)
    mig_uuid = nvml.uuid(nvml.compute_instance_info(ci).device)
    assert manager.ensure(manager.gpu_uuids()[0], "2g.20gb", 2).mig_uuid == mig_uuid


def test_ensure_completes_a_gpu_instance_without_compute_instance(manager, nvml, node):
    nvml.create_gpu_instance(nvml.device_by_index(1), 5, Placement(0, 2))  # A30 2g.12gb, no CI
    inst = manager.ensure(manager.gpu_uuids()[1], "2g.12gb", 0)
    assert inst.compute_instance_id == 0 and len(node.instances()) == 1


def test_ensure_accepts_catalog_aliases(manager):
    assert manager.ensure(manager.gpu_uuids()[0], "7g.79gb", 0).profile == "7g.80gb"


def test_ensure_errors_name_gpu_profile_placement_and_nvml_error(manager, node):
    h100, a30, l4 = manager.gpu_uuids()
    manager.ensure(h100, "4g.40gb", 0)
    with pytest.raises(MigError) as err:
        manager.ensure(h100, "2g.20gb", 2)
    text = str(err.value)
    assert h100 in text and "2g.20gb" in text and "placement 2" in text and "NVML_ERROR_INSUFFICIENT_RESOURCES" in text
    assert isinstance(err.value.nvml_error, errors.InsufficientResources)
    assert (err.value.gpu, err.value.profile, err.value.placement) == (h100, "2g.20gb", 2)
    with pytest.raises(UnknownProfileError, match="its placements are 0, 4"):
        manager.ensure(h100, "3g.40gb", 2)
    with pytest.raises(UnknownProfileError, match="its profiles are"):
        manager.ensure(a30, "3g.40gb", 0)
    with pytest.raises(MigDisabledError, match="not MIG-capable"):
        manager.ensure(l4, "1g.10gb", 0)
    with pytest.raises(UnknownGpuError):
        manager.ensure("GPU-nope", "1g.10gb", 0)
    node.set_mig_mode(1, False)
    with pytest.raises(MigDisabledError, match="MIG mode is off"):
        manager.ensure(a30, "1g.6gb", 0)


@pytest.mark.parametrize(
    "function", ["nvmlGpuInstanceCreateComputeInstance", "nvmlComputeInstanceGetInfo_v2", "nvmlDeviceGetUUID"]
)
def test_ensure_rolls_back_what_it_created(manager, node, function):
    h100 = manager.gpu_uuids()[0]
    node.inject_fault(function, errors.Return.UNKNOWN)
    with pytest.raises(MigError, match=function):
        manager.ensure(h100, "1g.10gb", 3)
    assert node.instances() == []


def test_destroy_refuses_instances_in_use(manager, node):
    h100 = manager.gpu_uuids()[0]
    a = manager.ensure(h100, "1g.10gb", 0)
    b = manager.ensure(h100, "1g.10gb", 1)
    node.attach(a.mig_uuid, pid=11)
    with pytest.raises(MigInUseError, match="in use"):
        manager.destroy([a.mig_uuid, b.mig_uuid])
    assert len(node.instances()) == 2  # nothing destroyed
    with pytest.raises(MigInUseError):
        manager.destroy(b.mig_uuid, live={b.mig_uuid})  # assigned to a live pod
    assert manager.destroy(b.mig_uuid) == (b,)
    assert manager.destroy(b.mig_uuid) == ()  # already gone: nothing to do
    node.detach(11)
    assert manager.destroy([a]) == (a,)
    assert node.instances() == []


def test_destroy_removes_leftover_gpu_instances(manager, nvml, node):
    nvml.create_gpu_instance(nvml.device_by_index(0), 19, Placement(5, 1))
    (leftover,) = manager.instances()
    assert leftover.mig_uuid is None
    assert manager.destroy([leftover]) == (leftover,)


def test_reconcile_creates_destroys_and_spares_what_is_in_use(manager, node):
    h100, a30, _ = manager.gpu_uuids()
    idle = manager.ensure(h100, "1g.10gb", 0)
    busy = manager.ensure(h100, "1g.10gb", 1)
    assigned = manager.ensure(a30, "1g.6gb", 3)
    keep = manager.ensure(h100, "3g.40gb", 4)
    node.attach(busy.mig_uuid, pid=3)
    result = manager.reconcile(
        [Desired(h100, "3g.40gb", 4), Desired(h100, "2g.20gb", 2), Desired(a30, "2g.12gb", 0)],
        live={assigned.mig_uuid},
    )
    assert result.kept == (keep,)
    assert result.destroyed == (idle,)
    assert {i.mig_uuid for i in result.kept_in_use} == {busy.mig_uuid, assigned.mig_uuid}
    assert {(i.profile, i.placement) for i in result.created} == {("2g.20gb", 2), ("2g.12gb", 0)}
    assert len(node.instances()) == 5


def test_reconcile_rolls_back_a_gpus_creations_on_failure_and_finishes_the_others(manager, node):
    h100, a30, _ = manager.gpu_uuids()
    busy = manager.ensure(h100, "1g.10gb", 0)
    node.attach(busy.mig_uuid, pid=3)
    with pytest.raises(ReconcileError) as err:  # the 2g at 0 collides with the busy 1g
        manager.reconcile([Desired(a30, "4g.24gb", 0), Desired(h100, "3g.40gb", 4), Desired(h100, "2g.20gb", 0)])
    assert err.value.gpu == h100 and err.value.placement == 0
    assert [(i.gpu_uuid, i.profile) for i in err.value.result.created] == [(a30, "4g.24gb")]
    # the H100's 3g was rolled back; the A30's 4g (another GPU) stays
    assert [(i, gi.start) for i, gi in node.instances()] == [(0, 0), (1, 0)]


def test_discover_adopts_and_reports_losses(manager, nvml, node, libpath):
    h100 = manager.gpu_uuids()[0]
    made = [manager.ensure(h100, "1g.10gb", s) for s in (0, 1)] + [manager.ensure(manager.gpu_uuids()[1], "4g.24gb", 0)]
    restarted = MigManager(nvml).discover()
    assert set(restarted.instances) == set(made) and restarted.lost == ()
    node.reboot()
    after = manager.discover()
    assert after.instances == () and set(after.lost) == set(made)
    assert after.mig_mode_lost == (h100,)  # Hopper forgets MIG mode; the A30 (Ampere) keeps it
    assert manager.discover().lost == ()  # reported once
    fresh = MigManager(nvml).discover(previous=made)
    assert set(fresh.lost) == set(made) and fresh.mig_mode_lost == (h100,)


def test_set_mig_mode(manager, node):
    h100, a30, l4 = manager.gpu_uuids()
    node.set_mig_mode(0, False)
    assert manager.set_mig_mode(h100, True).activated
    assert manager.ensure(h100, "7g.80gb", 0).profile == "7g.80gb"
    assert manager.set_mig_mode(a30, False).activation == errors.Return.RESET_REQUIRED
    with pytest.raises(MigError, match="cannot enable MIG mode"):
        manager.set_mig_mode(l4, True)


def test_threads_on_one_gpu_are_serialised(manager, node):
    h100 = manager.gpu_uuids()[0]
    results, failures = [], []

    def worker(start: int) -> None:
        try:
            results.append(manager.ensure(h100, "1g.10gb", start))
        except MigError as exc:  # pragma: no cover - would be a bug
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(s % 7,)) for s in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len({r.mig_uuid for r in results}) == 7 and len(node.instances()) == 7


def test_reconcile_rejects_overlapping_desires_before_changing_anything(manager, node):
    h100 = manager.gpu_uuids()[0]
    idle = manager.ensure(h100, "1g.10gb", 6)
    with pytest.raises(ReconcileError, match="overlaps another desired instance"):
        manager.reconcile([Desired(h100, "1g.10gb", 0), Desired(h100, "1g.20gb", 0)])
    assert [gi.cis[0].uuid for _, gi in node.instances()] == [idle.mig_uuid]


def test_rollback_retries_a_transient_failure(manager, node):
    h100 = manager.gpu_uuids()[0]
    manager.ensure(h100, "3g.40gb", 4)
    node.inject_fault("nvmlComputeInstanceDestroy", errors.Return.UNKNOWN)  # hits the rollback
    with pytest.raises(ReconcileError):
        manager.reconcile([Desired(h100, "3g.40gb", 4), Desired(h100, "1g.10gb", 0), Desired(h100, "4g.40gb", 0)])
    assert [gi.start for _, gi in node.instances()] == [4]


def test_instances_of_one_gpu_read_only_that_gpu(manager, node):
    """Allocate asks for the instances of the decided GPU: reading every GPU of a busy node costs
    hundreds of NVML calls inside kubelet's Allocate deadline."""
    h100, a30 = (g.uuid for g in node.read().gpus[:2])
    on_h100 = manager.ensure(h100, "1g.10gb", 0)
    manager.ensure(a30, "1g.6gb", 0)
    node.set_trace(True)
    assert [i.mig_uuid for i in manager.instances(h100)] == [on_h100.mig_uuid]
    one = node.calls()
    node.set_trace(False)
    assert one.get("nvmlDeviceGetGpuInstances", 0) > 0
    node.set_trace(True)
    assert len(manager.instances()) == 2
    whole = node.calls()
    node.set_trace(False)
    assert sum(whole.values()) > sum(one.values()) + one.get("nvmlDeviceGetGpuInstances", 0)
    with pytest.raises(UnknownGpuError):
        manager.instances("GPU-nope")

"""Fault injection: whatever single NVML call fails, the manager leaks nothing and destroys nothing
in use; a restarted manager adopts exactly what exists; after a reboot it sees nothing and
reports what it lost. Also: two processes creating instances on one GPU never overlap.

The property test drives random ensure / destroy / reconcile / attach / detach sequences on a
simulated H100 + A30 node, with one armed fault: the Nth NVML call of any function (`"*"`) or of
one named function fails with a random code. The state file is the oracle.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
from pathlib import Path

from hypothesis import event, given
from hypothesis import strategies as st

from hami.mig import Desired, MigError, MigManager, ReconcileError
from hami.nvml import Nvml, errors
from tests.nvml.helpers import library, make_node, mig, opened, state_env

SLOTS = {  # (gpu index, profile, placement) the sequences choose from
    0: [("1g.10gb", s) for s in range(7)]
    + [("1g.20gb", s) for s in (0, 2, 4, 6)]
    + [("2g.20gb", s) for s in (0, 2, 4)]
    + [("3g.40gb", 0), ("3g.40gb", 4), ("4g.40gb", 0), ("7g.80gb", 0), ("1g.10gb+me", 5)],
    1: [("1g.6gb", s) for s in range(4)] + [("2g.12gb", 0), ("2g.12gb", 2), ("4g.24gb", 0)],
}
FUNCTIONS = [
    "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceCreateComputeInstance",
    "nvmlComputeInstanceGetInfo_v2",
    "nvmlGpuInstanceGetInfo",
    "nvmlDeviceGetUUID",
    "nvmlComputeInstanceDestroy",
    "nvmlGpuInstanceDestroy",
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetGpuInstances",
    "nvmlGpuInstanceGetComputeInstances",
    "nvmlDeviceGetMigMode",
]
CODES = [errors.Return.UNKNOWN, errors.Return.IN_USE, errors.Return.GPU_IS_LOST, errors.Return.INSUFFICIENT_RESOURCES]

slot = st.tuples(st.sampled_from([0, 1]), st.integers(0, 20)).map(
    lambda t: (t[0], *SLOTS[t[0]][t[1] % len(SLOTS[t[0]])])
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("ensure"), slot),
        st.tuples(st.just("destroy"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("reconcile"), st.lists(slot, max_size=3), st.integers(0, 255)),
        st.tuples(st.just("attach"), st.integers(0, 9)),
        st.tuples(st.just("detach"), st.integers(0, 9)),
    ),
    min_size=1,
    max_size=8,
)
faults = st.one_of(  # no-fault sequences are the unit tests' business
    st.tuples(st.just("*"), st.integers(1, 40), st.sampled_from(CODES)),
    st.tuples(st.sampled_from(FUNCTIONS), st.integers(1, 3), st.sampled_from(CODES)),
)


def snapshot(node) -> dict[tuple[int, int, int], tuple[int, str | None]]:
    """(GPU index, profile id, start) -> (GI id, MIG UUID or None) for every GPU instance."""
    return {
        (i, gi.profile_id, gi.start): (gi.id, gi.cis[0].uuid if gi.cis else None)
        for i, gpu in enumerate(node.read().gpus)
        for gi in gpu.gis
    }


def busy_uuids(node) -> set[str]:
    state = node.read()
    out = set()
    for gpu in state.gpus:
        attached = {(p.gi, p.ci) for p in gpu.procs}
        out |= {ci.uuid for gi in gpu.gis for ci in gi.cis if (gi.id, ci.id) in attached}
    return out


def run_sequence(node, nvml, sequence) -> None:
    manager = MigManager(nvml)
    gpus = manager.gpu_uuids()
    pids = iter(range(1000, 2000))
    for op in sequence:
        before = snapshot(node)
        uuids = sorted(u for _, u in before.values() if u)
        live: set[str] = set()
        new: set[tuple[int, int, int]] = set()
        try:
            if op[0] == "ensure":
                gpu, profile, start = op[1]
                inst = manager.ensure(gpus[gpu], profile, start)
                new.add((gpu, inst.profile_id, inst.placement))
            elif op[0] == "destroy" and before:
                key = sorted(before)[op[1] % len(before)]
                target = before[key][1] or next(i for i in manager.instances() if i.gpu_instance_id == before[key][0])
                live = {target} if op[2] and isinstance(target, str) else set()
                manager.destroy([target], live=live)
            elif op[0] == "reconcile":
                live = {u for k, u in enumerate(uuids) if op[2] >> k & 1}
                try:
                    result = manager.reconcile([Desired(gpus[g], p, s) for g, p, s in op[1]], live=live)
                except ReconcileError as exc:  # per GPU: what other GPUs got stays
                    if exc.result is None:
                        raise
                    result = exc.result
                new |= {(i.gpu_index, i.profile_id, i.placement) for i in result.created}
            elif op[0] == "attach" and uuids:
                node.attach(uuids[op[1] % len(uuids)], pid=next(pids))
            elif op[0] == "detach" and node.read().gpus[0].procs:
                node.detach(node.read().gpus[0].procs[0].pid)
        except MigError:
            pass
        after = snapshot(node)
        protected = (busy_uuids(node) | live) & set(uuids)
        # nothing leaked: every instance existed before or was handed back by a successful call
        assert set(after) <= set(before) | new, (op, before, after)
        # nothing in use destroyed (same MIG device, same GPU instance)
        survivors = {u for _, u in after.values()}
        assert protected <= survivors, (op, protected, after)


@given(sequence=ops, fault=faults)
def test_a_single_failing_nvml_call_leaks_nothing_and_spares_what_is_in_use(sequence, fault):
    with tempfile.TemporaryDirectory() as tmp:
        node = make_node(Path(tmp), [mig("H100-SXM5-80GB"), mig("A30")])
        with opened(node) as nvml:
            if fault is not None:
                node.inject_fault(fault[0], fault[2], nth=fault[1])
            with contextlib.suppress(MigError):  # a fault during enumeration fails the first op early
                run_sequence(node, nvml, sequence)
            if fault is not None:
                event("fault fired" if not node.pending_faults() else "fault not reached")
            node.clear_faults()
            reality = snapshot(node)
            event(f"{len(reality)} instances at the end")
            adopted = MigManager(nvml).discover()  # a restarted manager adopts exactly what exists
            assert {(i.gpu_index, i.profile_id, i.placement): (i.gpu_instance_id, i.mig_uuid)
                    for i in adopted.instances} == reality  # fmt: skip
            node.reboot()
            after = MigManager(nvml).discover(previous=adopted.instances)
            assert after.instances == ()
            assert set(after.lost) == set(adopted.instances)
            h100, a30 = adopted.mig_enabled
            # a fresh manager learns that MIG mode was on from the instances it is told about
            expected = (h100,) if any(i.gpu_uuid == h100 for i in adopted.instances) else ()
            assert after.mig_mode_lost == expected and after.mig_enabled == (a30,)


def _ensure_many(state: str, seed: int) -> list[tuple[int, int, str]]:
    """Worker: a manager in its own process ensures instances on GPU 0 and gives some back."""
    import random

    from hami.mig import MigError, MigManager
    from hami.sim.fakenvml import FakeNode

    rng = random.Random(seed)
    kept = []
    with state_env(FakeNode(state)), Nvml(library()) as nvml:
        manager = MigManager(nvml)
        gpu = manager.gpu_uuids()[0]
        for _ in range(40):
            profile, start = rng.choice(SLOTS[0])
            try:
                inst = manager.ensure(gpu, profile, start)
            except MigError:
                continue
            if rng.random() < 0.3:
                # the other process may be completing the same slot meanwhile: NVML refuses then
                with contextlib.suppress(MigError):
                    manager.destroy([inst.mig_uuid])
            elif inst.mig_uuid not in {k[2] for k in kept}:
                kept.append((inst.profile_id, inst.placement, inst.mig_uuid))
    return kept


def test_two_processes_ensuring_on_one_gpu_never_overlap(tmp_path):
    node = make_node(tmp_path, [mig("H100-SXM5-80GB")])
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        kept = pool.starmap(_ensure_many, [(str(node.path), 1), (str(node.path), 2)])
    gpu = node.read().gpus[0]
    masks = [((1 << gi.size) - 1) << gi.start for gi in gpu.gis]
    assert sum(bin(m).count("1") for m in masks) == bin(sum(masks)).count("1")  # pairwise disjoint
    assert all(len(gi.cis) <= 1 for gi in gpu.gis)
    existing = {gi.cis[0].uuid for gi in gpu.gis if gi.cis}
    # whatever a process kept either still exists or was destroyed by the other one (reuse + destroy)
    assert existing <= {k[2] for k in kept[0] + kept[1]}

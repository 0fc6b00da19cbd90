"""High availability (docs/ha.md): two scheduler replicas on our local control plane, each a
kube-scheduler driver electing on the `kube-system/hami-scheduler` Lease plus our extender
following it; the Lease semantics (client-go's) and the follower's deadline on a fake clock.

Short settings keep it fast: lease 3 s, renew deadline 2 s, retry 0.5 s (kube-scheduler's
15/10/2 scaled down), the extender polling the Lease every 0.1 s."""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from hami.api import codecs, names
from hami.k8s import Conflict, Kube
from hami.k8s.binding import bind_pod
from hami.k8s.leases import KubeLeaseClient, LeaderElector, LeaseRecord, format_micro, parse_lease_ref
from hami.scheduler.app import Scheduler, SchedulerConfig, add_parser, leader_settings
from hami.scheduler.leader import FOLLOWER, LEADER, ROLE_LABEL, LeaderSettings, Leadership, LeaseFollower
from hami.sim.apiserver import ApiServer
from hami.sim.apiserver.store import Store
from hami.sim.cluster import hami_extender
from hami.sim.kubescheduler import KubeScheduler, StoreLeaseClient
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig
from tests.scheduler.conftest import A10, Plane, ScriptedAgent, devices, gpu_pod, local_scheduler, node_body, wait_for
from tests.scheduler.test_sched_e2e import _check_no_overcommit, _settled

NS, LEASE = "kube-system", "hami-scheduler"
LEASE_S, RENEW_S, RETRY_S = 3.0, 2.0, 0.5


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _record(holder: str, renew: float | None, version: str = "1") -> LeaseRecord:
    return LeaseRecord(holder, 15, renew, renew, 0, version)


# -- the follower's decision (fake clock) -------------------------------------------------------------


def test_a_follower_acts_until_the_renew_deadline_and_not_a_moment_longer() -> None:
    clock = FakeClock()
    follower = LeaseFollower("sched-a_", renew_deadline_s=10.0, clock=clock)
    assert follower.may_act() == (False, "no kube-scheduler holds the leader lease")
    t0 = clock()
    follower.observe(_record("sched-a_1234", t0))
    assert follower.may_act()[0]
    clock.advance(9.999)
    follower.observe(_record("sched-a_1234", t0))  # the same record again: no renewal
    assert follower.may_act()[0]
    clock.advance(0.001)  # exactly the renew deadline: the holder itself gives up now
    ok, why = follower.may_act()
    assert not ok and "renew deadline 10s" in why
    follower.observe(_record("sched-a_1234", clock(), "2"))  # renewed
    assert follower.may_act()[0]


def test_a_renewal_counts_from_when_it_happened_not_when_it_was_seen() -> None:
    clock = FakeClock()
    follower = LeaseFollower("sched-a_", 10.0, clock)
    renewed = clock()
    clock.advance(4.0)  # a slow poll sees it late
    follower.observe(_record("sched-a_1", renewed))
    clock.advance(5.999)
    assert follower.may_act()[0]
    clock.advance(0.001)
    assert not follower.may_act()[0]
    # a renewTime in the future (a clock ahead) never extends the window past the observation
    follower.observe(_record("sched-a_1", clock() + 100, "3"))
    clock.advance(10.0)
    assert not follower.may_act()[0]


def test_a_follower_stops_at_once_when_the_holder_changes_and_ignores_namesakes() -> None:
    clock = FakeClock()
    follower = LeaseFollower("sched-a_", 10.0, clock)
    follower.observe(_record("sched-a_1", clock()))
    assert follower.may_act()[0]
    follower.observe(_record("sched-b_9", clock(), "2"))  # fresh, but another Pod's kube-scheduler
    ok, why = follower.may_act()
    assert not ok and "sched-b_9" in why
    follower.observe(_record("sched-ab_1", clock(), "3"))  # a Pod whose name merely starts like ours
    assert not follower.may_act()[0]
    follower.observe(None)  # the Lease deleted
    assert not follower.may_act()[0]
    follower.observe(_record("", clock(), "4"))  # released (holder "")
    assert not follower.may_act()[0]


# -- client-go's election semantics (fake clock, the simulator's store) ----------------------------------


def _elector(store: Store, identity: str, clock: FakeClock, **kw: Any) -> LeaderElector:
    return LeaderElector(StoreLeaseClient(store, NS, LEASE), identity, namespace=NS, name=LEASE,
                         lease_duration_s=15, renew_deadline_s=10, retry_period_s=2, clock=clock, **kw)


def test_lease_acquire_renew_expire_and_release_as_client_go_does() -> None:
    store, clock = Store(), FakeClock()
    a, b = _elector(store, "pod-a_1", clock), _elector(store, "pod-b_2", clock)
    assert a.try_acquire_or_renew()  # creates the Lease
    spec = store.get("leases", NS, LEASE)["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("pod-a_1", 15, 0)
    acquired = spec["acquireTime"]
    assert not b.try_acquire_or_renew()  # held, and b counts from when it first saw the record
    clock.advance(5)
    assert a.try_acquire_or_renew()  # renewal keeps acquireTime and transitions
    spec = store.get("leases", NS, LEASE)["spec"]
    assert spec["acquireTime"] == acquired and spec["renewTime"] == format_micro(clock()) and \
        spec["leaseTransitions"] == 0
    assert not b.try_acquire_or_renew()  # b sees the renewal now, by its own clock
    clock.advance(14.9)
    assert not b.try_acquire_or_renew()  # b saw the record change 14.9 s ago: not expired
    clock.advance(0.2)
    assert b.try_acquire_or_renew()  # expired: b takes it
    spec = store.get("leases", NS, LEASE)["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("pod-b_2", 1)
    assert spec["acquireTime"] == format_micro(clock())
    assert not a.try_acquire_or_renew()  # a sees b's fresh record
    b._leading = True
    assert b.release()
    spec = store.get("leases", NS, LEASE)["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert a.try_acquire_or_renew()  # released: no need to wait for the expiry
    assert store.get("leases", NS, LEASE)["spec"]["leaseTransitions"] == 2


def test_lease_writes_are_conditional_on_the_version_read() -> None:
    store, clock = Store(), FakeClock()
    a = _elector(store, "pod-a_1", clock)
    assert a.try_acquire_or_renew()
    stale = store.get("leases", NS, LEASE)
    clock.advance(2)
    assert a.try_acquire_or_renew()  # a renewal: a new resourceVersion

    class Stale(StoreLeaseClient):
        def get(self) -> dict[str, Any] | None:
            return stale

    with pytest.raises(Conflict):
        Stale(store, NS, LEASE).update(stale)
    racer = LeaderElector(Stale(store, NS, LEASE), "pod-a_1", namespace=NS, name=LEASE, clock=clock)
    assert not racer.try_acquire_or_renew()  # a lost race is "not acquired", never an error


def test_the_elector_is_leader_only_until_its_renew_deadline() -> None:
    store, clock = Store(), FakeClock()
    a = _elector(store, "pod-a_1", clock)
    assert a.acquire() and a.is_leader()
    clock.advance(9.99)
    assert a.is_leader()
    clock.advance(0.01)
    assert not a.is_leader()


def test_the_elector_over_the_official_client(tmp_path: Path) -> None:
    """The same semantics through `KubeLeaseClient` (HTTP, merge patches carrying resourceVersion)."""
    with ApiServer() as api:
        kube = Kube.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
        clock = FakeClock(time.time())
        lease = KubeLeaseClient(kube, NS, LEASE)
        a = LeaderElector(lease, "pod-a_1", namespace=NS, name=LEASE, clock=clock)
        b = LeaderElector(KubeLeaseClient(kube, NS, LEASE), "pod-b_2", namespace=NS, name=LEASE, clock=clock)
        assert lease.read() is None
        assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
        record = lease.read()
        assert record is not None and (record.holder, record.lease_duration_s, record.transitions) == ("pod-a_1", 15, 0)
        stale = lease.get()
        clock.advance(2)
        assert a.try_acquire_or_renew()
        assert stale is not None
        with pytest.raises(Conflict):
            lease.update(stale)
        assert not b.try_acquire_or_renew()  # b sees the renewal
        clock.advance(15.1)
        assert b.try_acquire_or_renew()
        record = lease.read()
        assert record is not None and (record.holder, record.transitions) == ("pod-b_2", 1)
        kube.close()


def test_lease_settings_are_checked_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        LeaderElector(StoreLeaseClient(Store(), NS, LEASE), "x", namespace=NS, name=LEASE, lease_duration_s=10,
                      renew_deadline_s=10)
    with pytest.raises(ValueError, match="<namespace>/<name>"):
        parse_lease_ref("hami-scheduler")
    with pytest.raises(ValueError, match="POD_NAME"):
        LeaderSettings(lease="kube-system/hami-scheduler", pod_name="", pod_namespace="kube-system")
    with pytest.raises(ValueError, match="well below"):
        LeaderSettings(lease="kube-system/hami-scheduler", pod_name="a", pod_namespace="b", renew_deadline_s=1,
                       poll_s=1)


# -- the follower against an API server: takeover barrier, step-down ---------------------------------------


def _lease_body(holder: str) -> dict[str, Any]:
    now = format_micro(time.time())
    return {"metadata": {"name": LEASE, "namespace": NS},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3, "acquireTime": now, "renewTime": now}}


def _hold(kube: Kube, holder: str) -> None:
    lease = kube.find("leases", LEASE, NS)
    if lease is None:
        kube.create("leases", _lease_body(holder), NS)
    else:
        kube.patch("leases", LEASE, {"spec": _lease_body(holder)["spec"]}, NS)


def _role(kube: Kube, pod: str) -> str | None:
    return (kube.get("pods", pod, NS)["metadata"].get("labels") or {}).get(ROLE_LABEL)


def _replica_pod(name: str) -> dict[str, Any]:
    """A scheduler replica's Pod object (nobody schedules it here: it names no scheduler of ours)."""
    return {"metadata": {"name": name, "labels": {"app": "hami-scheduler"}},
            "spec": {"schedulerName": "not-scheduled-here", "containers": [{"name": "extender", "image": "hami"}]}}


def test_a_new_leader_acts_only_once_its_watch_has_delivered_its_own_label_write(tmp_path: Path) -> None:
    with ApiServer() as api:
        kube = Kube.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
        kube.create("pods", _replica_pod("sched-b"), NS)
        settings = LeaderSettings(lease=f"{NS}/{LEASE}", pod_name="sched-b", pod_namespace=NS, renew_deadline_s=2.0,
                                  poll_s=0.1, max_write_failures=3)
        skew, listing = [0.0], [False]
        leadership = Leadership(kube, settings, clock=lambda: time.time() + skew[0], listing=lambda: listing[0])
        leadership.poll()
        assert _role(kube, "sched-b") == FOLLOWER and not leadership.acting()[0]  # no Lease yet
        _hold(kube, "sched-b_1")
        leadership.poll()  # ours: label written, now waiting for the watch to bring it back
        assert _role(kube, "sched-b") == LEADER
        ok, why = leadership.acting()
        assert not ok and "taking over" in why
        labelled = kube.get("pods", "sched-b", NS)
        leadership.pod_seen({"metadata": {**labelled["metadata"],
                                          "resourceVersion": str(int(labelled["metadata"]["resourceVersion"]) - 1)}})
        leadership.poll()
        assert not leadership.acting()[0]  # an older version of our Pod: the cache may still lag
        listing[0] = True  # a relist handed our Pod over, but not yet the pods after it
        leadership.pod_seen(labelled)
        leadership.poll()
        assert not leadership.acting()[0]
        listing[0] = False
        leadership.poll()
        assert leadership.acting() == (True, "") and leadership.takeovers == 1
        _hold(kube, "sched-a_7")  # another Pod's kube-scheduler
        assert leadership.acting()[0]  # not seen yet (the next poll) …
        leadership.poll()
        assert not leadership.acting()[0] and _role(kube, "sched-b") == FOLLOWER  # … then at once

        # three failed writes in a row while ours: step down, /healthz fails until the holder changes
        _hold(kube, "sched-b_1")
        leadership.poll()
        leadership.pod_seen(kube.get("pods", "sched-b", NS))
        leadership.poll()
        assert leadership.acting()[0]
        leadership.record_write(False)
        leadership.record_write(True)  # consecutive only
        leadership.record_write(False)
        leadership.record_write(False)
        assert leadership.healthy()[0] and leadership.acting()[0]
        leadership.record_write(False)
        ok, why = leadership.acting()
        assert not ok and "stepped down" in why
        assert not leadership.healthy()[0] and _role(kube, "sched-b") == FOLLOWER
        leadership.poll()
        assert not leadership.healthy()[0]  # our kube-scheduler still renews: it must be restarted
        skew[0] = 2.5  # … and is: no renewal for the renew deadline
        leadership.poll()
        assert leadership.healthy()[0] and not leadership.acting()[0]
        skew[0] = 0.0
        _hold(kube, "sched-b_2")  # the restarted kube-scheduler, a new identity, takes the lease
        leadership.poll()  # ours again: it takes over again
        leadership.pod_seen(kube.get("pods", "sched-b", NS))
        leadership.poll()
        assert leadership.acting()[0] and leadership.takeovers == 3
        kube.close()


def test_a_role_label_left_from_an_earlier_life_does_not_pass_the_barrier(tmp_path: Path) -> None:
    """The barrier write must change the Pod even when it is labelled leader already (a replica that
    died leading and came back): a no-op patch keeps the old resourceVersion, which the watch has
    long delivered, and would let a stale cache bind."""
    with ApiServer() as api:
        kube = Kube.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
        body = _replica_pod("sched-b")
        body["metadata"]["labels"][ROLE_LABEL] = LEADER
        kube.create("pods", body, NS)
        settings = LeaderSettings(lease=f"{NS}/{LEASE}", pod_name="sched-b", pod_namespace=NS, renew_deadline_s=2.0,
                                  poll_s=0.1)
        leadership = Leadership(kube, settings)
        leadership.pod_seen(kube.get("pods", "sched-b", NS))  # the watch delivered the Pod as it is
        _hold(kube, "sched-b_1")
        leadership.poll()
        ok, why = leadership.acting()
        assert not ok and "taking over" in why
        leadership.pod_seen(kube.get("pods", "sched-b", NS))
        leadership.poll()
        assert leadership.acting()[0]
        kube.close()


def test_a_new_leader_first_cleans_up_the_binds_the_old_one_left_half_done(tmp_path: Path) -> None:
    """Annotated, never bound (the old leader died in between): marked failed at the takeover, so
    devices are free at once, not after the bind TTL; a node lock taken for a pod never annotated is
    dropped, not held until the lock timeout; finished binds and their locks are left alone."""
    settings = LeaderSettings(lease=f"{NS}/{LEASE}", pod_name="sched-b", pod_namespace=NS, renew_deadline_s=2.0,
                              poll_s=0.1)
    with local_scheduler(tmp_path, leader=settings) as sched:
        kube = sched.kube
        kube.create("pods", _replica_pod("sched-b"), NS)

        def decided(name: str, phase: str) -> dict[str, Any]:
            pod = gpu_pod(name, {"nvidia.com/gpu": "1"}, labels={names.VGPU_NODE: "core-a"},
                          annotations={names.BIND_PHASE: phase, names.BIND_TIME: str(int(time.time()))})
            return kube.create("pods", pod, "default")

        decided("orphan", names.BIND_PHASE_ALLOCATING)
        decided("allocated", names.BIND_PHASE_SUCCESS)
        bound = decided("bound", names.BIND_PHASE_ALLOCATING)
        bind_pod(kube, "default", "bound", bound["metadata"]["uid"], "core-a")
        kube.create("pods", gpu_pod("locked-only", {"nvidia.com/gpu": "1"}), "default")

        def lock(node: str, pod: str) -> None:
            stamp = codecs.NodeLock(datetime.now(UTC).replace(microsecond=0), "default", pod)
            kube.annotate("nodes", node, {names.NODE_LOCK: codecs.encode_node_lock(stamp)})

        def locked(node: str) -> str | None:
            return (kube.get("nodes", node)["metadata"].get("annotations") or {}).get(names.NODE_LOCK)

        lock("mig-a", "locked-only")
        lock("core-a", "bound")
        wait_for(lambda: sched.cache.node_lock("mig-a")[0] and sched.cache.node_lock("core-a")[0]
                 and sched.cache.pod_by_key("default", "locked-only"), 5, "the cache saw the locks")
        _hold(kube, "sched-b_1")
        wait_for(lambda: sched.leadership.acting()[0], 5, "sched-b leading")

        def phase(name: str) -> str:
            return kube.get("pods", name, "default")["metadata"]["annotations"][names.BIND_PHASE]

        assert phase("orphan") == names.BIND_PHASE_FAILED
        assert phase("allocated") == names.BIND_PHASE_SUCCESS
        assert phase("bound") == names.BIND_PHASE_ALLOCATING  # its Allocate is the agent's business
        assert locked("mig-a") is None
        assert locked("core-a") is not None  # the agent releases it after Allocate


def test_a_pod_bound_again_after_a_failed_mig_bind_keeps_no_stale_mig_reservation(tmp_path: Path) -> None:
    """Found by the failover test: the old leader wrote a MIG decision and died; the new one bound
    the pod to an A10 with a merge patch that kept the old `vgpu-mig-allocations`."""
    with local_scheduler(tmp_path) as sched:
        stale = codecs.encode_mig_allocations([codecs.MigAllocation(0, 0, "GPU-a-1", "1g.10gb",
                                                                    codecs.Placement(0, 1))])
        pod = sched.kube.create("pods", gpu_pod("again", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"},
                                                annotations={names.VGPU_MIG_ALLOCATIONS: stale,
                                                             names.BIND_PHASE: names.BIND_PHASE_FAILED}), "default")
        wait_for(lambda: sched.cache.pod(pod["metadata"]["uid"]) is not None, 5, "the pod in the cache")
        sched.binder.bind("default", "again", pod["metadata"]["uid"], "core-a", pod)
        ann = sched.kube.get("pods", "again", "default")["metadata"]["annotations"]
        assert ann[names.BIND_PHASE] == names.BIND_PHASE_ALLOCATING and names.VGPU_MIG_ALLOCATIONS not in ann


# -- two replicas on the local control plane ---------------------------------------------------------------


@dataclass
class Replica:
    """One scheduler Pod: our extender (its own API client, with a fault switch and a write log)
    and a kube-scheduler driver calling it, electing on the Lease."""

    pod: str
    scheduler: Scheduler
    driver: KubeScheduler
    kube: Kube
    writes: list[tuple[str, str]] = field(default_factory=list)  # (method, path) the extender sent
    faulty: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self.scheduler.server is not None
        return self.scheduler.server.url

    def leading(self) -> bool:
        return self.scheduler.leadership.acting()[0]

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as answer:
                return answer.status
        except urllib.error.HTTPError as err:
            return err.code

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def kill(self) -> None:
        """Both containers die at once: nothing is released, the Lease has to expire."""
        assert self.driver.leader is not None
        self.driver.leader.release_on_cancel = False
        self.scheduler.stop()
        self.driver.stop()


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.api = ApiServer().start()
        self.kubeconfig = self.api.write_kubeconfig(tmp / "kubeconfig")
        self.kube = Kube.connect(self.kubeconfig)
        self.agent = ScriptedAgent(self.kube).start()
        self.replicas: list[Replica] = []
        self.tmp = tmp

    def add_node(self, name: str, devs: list[Any]) -> None:
        self.kube.create("nodes", node_body(name, devs))
        self.agent.serve(name)

    def driver(self, pod: str, url: str) -> KubeScheduler:
        elector = LeaderElector(StoreLeaseClient(self.api.store, NS, LEASE), f"{pod}_{uuid.uuid4()}", namespace=NS,
                                name=LEASE, lease_duration_s=LEASE_S, renew_deadline_s=RENEW_S,
                                retry_period_s=RETRY_S)
        config = KubeSchedulerConfig(extenders=(hami_extender(url, http_timeout=15.0),), initial_backoff=0.2,
                                     max_backoff=1.0)
        return KubeScheduler(self.api.store, config, leader=elector).start()

    def replica(self, pod: str) -> Replica:
        """Start (or revive) the replica of Pod `pod`; returns once its extender is Ready."""
        if self.kube.find("pods", pod, NS) is None:
            self.kube.create("pods", _replica_pod(pod), NS)
        kube = Kube.connect(self.kubeconfig)
        writes: list[tuple[str, str]] = []
        faulty = threading.Event()
        call_api = kube.api_client.call_api

        def hooked(method: str, url: str, *args: Any, **kw: Any) -> Any:
            if method != "GET":
                writes.append((method, urllib.parse.urlsplit(url).path))
                if faulty.is_set():
                    raise ApiException(status=503, reason="Service Unavailable")
            return call_api(method, url, *args, **kw)

        kube.api_client.call_api = hooked  # type: ignore[method-assign]
        settings = LeaderSettings(lease=f"{NS}/{LEASE}", pod_name=pod, pod_namespace=NS, renew_deadline_s=RENEW_S,
                                  poll_s=0.1, max_write_failures=3)
        scheduler = Scheduler(SchedulerConfig(kubeconfig=str(self.kubeconfig), http_bind="127.0.0.1:0",
                                              metrics_bind="127.0.0.1:0", lock_wait_s=5.0, leader=settings),
                              kube=kube).start()
        wait_for(lambda: scheduler.ready()[0], 15, f"replica {pod} ready")
        replica = Replica(pod, scheduler, self.driver(pod, scheduler.server.url), kube, writes, faulty)
        self.replicas.append(replica)
        return replica

    def close(self) -> None:
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.scheduler.stop()
                replica.driver.stop()
                replica.kube.close()
        self.agent.stop()
        self.kube.close()
        self.api.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def _pod(name: str, mem: str) -> dict[str, Any]:
    return gpu_pod(name, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": mem}, schedulerName="hami-scheduler")


def _bind_args(pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": node}


def _scheduling_writes(replica: Replica) -> list[tuple[str, str]]:
    """What the extender wrote besides its own role label."""
    own = f"/api/v1/namespaces/{NS}/pods/{replica.pod}"
    return [w for w in replica.writes if w[1] != own]


def _eventually(check: Callable[[], None], timeout: float = 15.0) -> None:
    """`check` passes once the binds in flight have landed (a pod waiting with an old Unschedulable
    condition may be being bound right now); a real double booking never stops failing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _bound_count(kube: Kube) -> int:
    return len(kube.list("pods", "default", field_selector="spec.nodeName!="))


def _bound(kube: Kube, name: str) -> bool:
    return bool((kube.get("pods", name, "default").get("spec") or {}).get("nodeName"))


def test_the_follower_takes_over_a_burst_when_the_leader_dies_and_the_old_leader_revived_stays_quiet(
        cluster: Cluster, tmp_path: Path) -> None:
    for n in range(6):  # room for about 110 of the 200 pods: binding goes on well past the kill
        cluster.add_node(f"mig-{n}", devices(f"m{n}", 2))
        cluster.add_node(f"core-{n}", devices(f"c{n}", 2, A10))
    a = cluster.replica("sched-a")
    wait_for(a.leading, 10, "replica a leading")
    b = cluster.replica("sched-b")
    wait_for(lambda: _role(cluster.kube, "sched-b") == FOLLOWER, 5, "replica b labelled follower")
    assert _role(cluster.kube, "sched-a") == LEADER

    # a synced follower: Ready, filters from its warm cache, refuses to bind
    assert b.get("/readyz") == 200 and b.get("/healthz") == 200
    probe = cluster.kube.create("pods", _pod("probe", "5000"), "default")
    wait_for(lambda: b.scheduler.cache.pod(probe["metadata"]["uid"]) is not None, 5, "b's cache has the probe")
    fits = b.post("/filter", {"Pod": probe, "NodeNames": ["mig-0", "core-0"]})
    assert sorted(fits["NodeNames"]) == ["core-0", "mig-0"]
    error = b.post("/bind", _bind_args(probe, "mig-0"))["Error"]
    assert "does not bind" in error and "not this Pod's kube-scheduler" in error
    assert not _scheduling_writes(b)

    pods = ["probe"] + [f"p{i:03d}" for i in range(199)]
    sizes = ["5000", "10240", "20000", "3000"]

    def submit(chunk: list[str]) -> None:
        for name in chunk:
            cluster.kube.create("pods", _pod(name, sizes[int(name[1:]) % 4]), "default")

    threads = [threading.Thread(target=submit, args=(pods[1 + k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: _bound_count(cluster.kube) >= 10, 60, "a first batch bound by a")

    # b's pod watch lags (held) while a binds more and dies mid-burst: b must not act on a stale cache
    held = threading.Event()
    original = b.scheduler.cache.pod_event

    def lagging(kind: str, obj: dict[str, Any]) -> None:
        held.wait()
        original(kind, obj)

    b.scheduler.cache.pod_event = lagging  # type: ignore[method-assign]
    seen = _bound_count(cluster.kube)
    wait_for(lambda: _bound_count(cluster.kube) >= seen + 8, 30, "a binds more b has not seen")
    killed = time.monotonic()
    a.kill()
    assert b.driver.leader is not None
    # the configured time: the lease expires (3 s after a's last renewal), b's next retry takes it
    wait_for(b.driver.leader.is_leader, LEASE_S + 1.2 * RETRY_S + 2.0, "b's kube-scheduler took the lease")
    took = time.monotonic() - killed
    assert took >= LEASE_S - 1.2 * RETRY_S  # not before a's last renewal expired
    wait_for(lambda: _role(cluster.kube, "sched-b") == LEADER, 3, "b labelled leader")
    time.sleep(0.5)
    ok, why = b.scheduler.leadership.acting()
    assert not ok and "taking over" in why  # its label has not come back through the lagging watch
    assert not _scheduling_writes(b)
    held.set()
    wait_for(b.leading, 20, "b leading once its watch caught up")

    plane = Plane("embedded", cluster.kube, b.scheduler, cluster.agent, cluster.kubeconfig, None, tmp_path)  # type: ignore[arg-type]
    wait_for(lambda: _settled(plane, pods), 90, "every pod bound or waiting with a reason")
    _eventually(lambda: _check_no_overcommit(plane, pods))  # no overlapping MIG placement, no over-committed share
    by_b = {path.split("/")[-2] for method, path in _scheduling_writes(b) if path.endswith("/binding")}
    assert len(by_b) >= 20, f"b bound only {len(by_b)} pods: the burst was over before the kill"

    # the old leader revived: a follower of b; it writes nothing but its own role label
    revived = cluster.replica("sched-a")
    assert revived.get("/readyz") == 200
    wait_for(lambda: _role(cluster.kube, "sched-a") == FOLLOWER, 5, "revived a labelled follower")
    more = [f"q{i}" for i in range(6)]
    for name in more:
        cluster.kube.create("pods", _pod(name, "3000"), "default")
    wait_for(lambda: _settled(plane, pods + more), 60, "the later pods settled")
    assert revived.driver.leader is not None and not revived.driver.leader.is_leader()
    assert not revived.leading()
    pending = next((p for p in pods + more if not _bound(cluster.kube, p)), None)
    if pending is not None:
        error = revived.post("/bind", _bind_args(cluster.kube.get("pods", pending, "default"), "core-0"))["Error"]
        assert "does not bind" in error
    assert not _scheduling_writes(revived), _scheduling_writes(revived)
    _eventually(lambda: _check_no_overcommit(plane, pods + more))


def test_a_leader_whose_writes_fail_steps_down_and_the_lease_moves(cluster: Cluster) -> None:
    cluster.add_node("mig-0", devices("m0", 2))
    cluster.add_node("core-0", devices("c0", 2, A10))
    a = cluster.replica("sched-a")
    wait_for(a.leading, 10, "replica a leading")
    b = cluster.replica("sched-b")
    a.faulty.set()  # the API stops taking a's writes (reads still work)
    pods = [f"p{i}" for i in range(6)]
    for name in pods:
        cluster.kube.create("pods", _pod(name, "5000"), "default")
    wait_for(lambda: a.get("/healthz") == 503, 20, "a's /healthz failing after repeated failed writes")
    ok, why = a.scheduler.leadership.acting()
    assert not ok and "stepped down" in why
    assert a.scheduler.leadership.failures >= 3 and not any(_bound(cluster.kube, p) for p in pods)

    # kubelet's livenessProbe on a's kube-scheduler container (pointed at the extender's /healthz)
    # restarts it; a restarted kube-scheduler has a new identity and starts after a while
    old_driver = a.driver
    old_driver.stop()  # releases the Lease on the way out (ReleaseOnCancel)
    wait_for(b.leading, LEASE_S + 3, "b leading")
    a.driver = cluster.driver("sched-a", a.url)
    wait_for(lambda: all(_bound(cluster.kube, p) for p in pods), 30, "b bound every pod")
    wait_for(lambda: a.get("/healthz") == 200, 5, "a healthy again once the lease moved")
    assert not a.leading()
    a.faulty.clear()
    wait_for(lambda: _role(cluster.kube, "sched-a") == FOLLOWER, 5, "a's role label dropped once it can write")
    assert _role(cluster.kube, "sched-b") == LEADER


def test_a_kube_scheduler_driver_that_loses_its_lease_stops_scheduling() -> None:
    """kube-scheduler exits when a renewal fails for the renew deadline; the driver stops likewise."""
    store = Store()
    elector = LeaderElector(StoreLeaseClient(store, NS, LEASE), "sched-a_1", namespace=NS, name=LEASE,
                            lease_duration_s=1.5, renew_deadline_s=1.0, retry_period_s=0.2)
    driver = KubeScheduler(store, KubeSchedulerConfig(initial_backoff=0.2, max_backoff=1.0), leader=elector).start()
    try:
        wait_for(elector.is_leader, 3, "the driver leading")
        store.create("nodes", None, node_body("n0", devices("n", 1)))
        store.create("pods", "default", {"metadata": {"name": "first"},
                                         "spec": {"containers": [{"name": "c", "image": "x"}]}})
        wait_for(lambda: store.get("pods", "default", "first")["spec"].get("nodeName"), 5, "first pod scheduled")
        lease = store.get("leases", NS, LEASE)  # another identity takes the Lease over (a split brain)
        now = format_micro(time.time())
        store.update("leases", NS, LEASE, {**lease, "spec": {**lease["spec"], "holderIdentity": "sched-b_2",
                                                              "renewTime": now, "acquireTime": now}})
        wait_for(lambda: not elector.is_leader(), 3, "leadership lost at the renew deadline")
        wait_for(lambda: all(not t.is_alive() for t in driver._threads if t.name == "kube-scheduler"), 3,
                 "the scheduling loop ended")
        store.create("pods", "default", {"metadata": {"name": "second"},
                                         "spec": {"containers": [{"name": "c", "image": "x"}]}})
        time.sleep(0.5)
        assert not store.get("pods", "default", "second")["spec"].get("nodeName")
        assert store.get("leases", NS, LEASE)["spec"]["holderIdentity"] == "sched-b_2"
    finally:
        driver.stop()


def test_the_cli_flags_make_the_leader_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add_parser(parser.add_subparsers())
        return parser.parse_args(["scheduler", *argv])

    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert leader_settings(parse()) is None  # one replica, always acting
    with pytest.raises(ValueError, match="--pod-name"):
        leader_settings(parse("--leader-lease", "kube-system/hami-scheduler"))
    monkeypatch.setenv("POD_NAME", "hami-scheduler-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "kube-system")
    settings = leader_settings(parse("--leader-lease", "kube-system/hami-scheduler", "--max-write-failures", "5"))
    assert settings is not None
    assert (settings.prefix, settings.pod_namespace, settings.renew_deadline_s, settings.max_write_failures) == (
        "hami-scheduler-7d9f-abcde_", "kube-system", 10.0, 5)
    with pytest.raises(ValueError, match="<namespace>/<name>"):
        leader_settings(parse("--leader-lease", "hami-scheduler"))

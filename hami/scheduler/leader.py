"""Which replica acts: the extender follows its own Pod's kube-scheduler's Lease (docs/ha.md).

kube-scheduler elects a leader on a Lease; only the leader schedules, and it calls the extender
of its own Pod over loopback. So the extender does not contend: it reads the Lease and acts
(binds, any API write) only while the holder is its own Pod's kube-scheduler — holderIdentity
"<pod name>_<uuid>" — and a renewal was observed less than the renew deadline ago. The holder
counts its own lease from the same moment, so this replica stops strictly before another can
take over (renew deadline 10 s < lease duration 15 s after the last renewal).

Taking over: before its first write, the new leader labels its Pod `hami.io/scheduler-role:
leader` (what the webhook Service selects) and waits until its own pod watch delivers that write.
A watch delivers a kind's events in resourceVersion order (a relist is a consistent read, and is
counted only once all of it is folded), and the label write is ordered after
every write the old leader made (all of them landed before its renew deadline, before our
kube-scheduler could take the Lease), so once the cache has seen our label it has seen every
decision the old leader recorded: no device is booked twice. Before its first bind it marks
failed the old leader's binds that never reached a Binding and drops the node locks it took for
pods it never annotated (`Binder.take_over`), so devices and nodes are free at once rather than
after the bind TTL or the lock timeout.

A leader whose API writes keep failing (`max_write_failures` in a row: 5xx, no answer, 401/403/429)
steps down: it stops acting, drops its role label if it can, and turns /healthz unhealthy; the
chart points the kube-scheduler container's livenessProbe at that endpoint, so kubelet restarts
kube-scheduler and the Lease goes to a replica whose writes work.

`LeaseFollower` is the decision alone (a fake clock drives it in tests); `Leadership` runs it
against the API; `SoleReplica` is the single-replica default: always acting, as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hami.k8s import Kube, KubeError
from hami.k8s.leases import KubeLeaseClient, LeaseRecord, parse_lease_ref

log = logging.getLogger(__name__)

ROLE_LABEL = "hami.io/scheduler-role"
TAKEOVER_ANNOTATION = "hami.io/scheduler-takeover"  # a barrier write: always a change, so always a new version
LEADER, FOLLOWER = "leader", "follower"


class NotActing(Exception):
    """This replica may not write now; the message says why (kube-scheduler shows it and retries)."""


def write_failed(err: KubeError) -> bool:
    """A failure that says the API is not taking our writes (not an answer such as 404/409/422)."""
    return err.status == 0 or err.status >= 500 or err.status in (401, 403, 429)


class LeaseFollower:
    """Whether this replica's kube-scheduler holds the Lease, from observations of it.

    A renewal is counted from min(local time it was observed, the renewTime written): the holder
    we care about is our own Pod's kube-scheduler, on our node's clock, and observing late never
    extends the window. The holder changing away from us, or no renewal for `renew_deadline_s`,
    ends acting at once.
    """

    def __init__(self, identity_prefix: str, renew_deadline_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not identity_prefix:
            raise ValueError("the leader identity prefix is empty: give --pod-name (or $POD_NAME)")
        self.identity_prefix = identity_prefix
        self.renew_deadline_s = renew_deadline_s
        self.clock = clock
        self.holder = ""
        self.renewed_at: float | None = None  # when the current holder's last renewal happened
        self._renew_time: float | None = None
        self._lock = threading.Lock()

    def observe(self, record: LeaseRecord | None) -> None:
        now = self.clock()
        holder = record.holder if record else ""
        renew_time = record.renew_time if record else None
        with self._lock:
            if holder != self.holder:
                self.holder, self.renewed_at, self._renew_time = holder, None, None
            if holder and renew_time is not None and renew_time != self._renew_time:
                self._renew_time = renew_time
                self.renewed_at = min(now, renew_time)

    def ours(self) -> bool:
        return self.holder.startswith(self.identity_prefix)

    def may_act(self) -> tuple[bool, str]:
        with self._lock:
            if not self.holder:
                return False, "no kube-scheduler holds the leader lease"
            if not self.holder.startswith(self.identity_prefix):
                return False, f"the leader is {self.holder}, not this Pod's kube-scheduler"
            if self.renewed_at is None:
                return False, "no renewal of the leader lease observed yet"
            age = self.clock() - self.renewed_at
            if age >= self.renew_deadline_s:
                return False, (f"the leader lease was last renewed {age:.1f}s ago (renew deadline "
                               f"{self.renew_deadline_s:g}s)")
            return True, ""


@dataclass(frozen=True)
class LeaderSettings:
    lease: str  # "namespace/name"
    pod_name: str
    pod_namespace: str
    identity_prefix: str = ""  # default "<pod_name>_"
    renew_deadline_s: float = 10.0
    poll_s: float = 1.0
    max_write_failures: int = 3
    sync_timeout_s: float = 30.0  # waiting for our own label in the watch before trying again

    def __post_init__(self) -> None:
        parse_lease_ref(self.lease)
        if not self.pod_name or not self.pod_namespace:
            raise ValueError("--leader-lease needs this Pod's name and namespace: pass --pod-name/--pod-namespace "
                             "or set $POD_NAME/$POD_NAMESPACE (the chart sets them from the downward API)")
        if self.renew_deadline_s <= 0 or self.poll_s <= 0:
            raise ValueError("--leader-renew-deadline and --leader-poll must be positive seconds")
        if self.poll_s >= self.renew_deadline_s:
            raise ValueError(f"--leader-poll {self.poll_s:g}s must be well below --leader-renew-deadline "
                             f"{self.renew_deadline_s:g}s")
        if self.max_write_failures < 0:
            raise ValueError("--max-write-failures must be 0 (never step down) or more")

    @property
    def prefix(self) -> str:
        return self.identity_prefix or f"{self.pod_name}_"


class SoleReplica:
    """One replica, no Lease: always acting, always healthy (today's behaviour)."""

    role = LEADER

    def start(self) -> SoleReplica:
        return self

    def stop(self) -> None:
        pass

    def acting(self) -> tuple[bool, str]:
        return True, ""

    def check(self, takeover: bool = False) -> None:
        pass

    def record_write(self, ok: bool) -> None:
        pass

    def healthy(self) -> tuple[bool, str]:
        return True, ""

    def pod_seen(self, obj: dict) -> None:
        pass


class Leadership:
    """Follows the Lease in a thread; `check()` before every API write, `record_write()` after."""

    FOLLOWING, TAKING_OVER, LEADING, STEPPED_DOWN = "following", "taking over", "leading", "stepped down"

    def __init__(self, kube: Kube, settings: LeaderSettings, *, synced: Callable[[], bool] = lambda: True,
                 listing: Callable[[], bool] = lambda: False, on_takeover: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.settings = settings
        namespace, name = parse_lease_ref(settings.lease)
        self.lease = KubeLeaseClient(kube, namespace, name)
        self.follower = LeaseFollower(settings.prefix, settings.renew_deadline_s, clock)
        self.synced = synced
        self.listing = listing  # the pod informer is mid-list: what it handed so far is not the whole list
        self.on_takeover = on_takeover  # after the cache caught up, before the first bind: writes made
        self.clock = clock
        self.state = self.FOLLOWING
        self.role: str | None = None  # the role label as last written
        self.failures = 0  # consecutive failed writes
        self.takeovers = 0
        self._stepped_down_holder = ""
        self._barrier: int | None = None  # resourceVersion of our label write, awaited in the pod watch
        self._barrier_since = 0.0
        self._seen_version = 0  # highest resourceVersion of our own Pod the watch delivered
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Leadership:
        self._thread = threading.Thread(target=self._run, name="leader-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following; a stopping replica writes nothing more (binds in flight fail)."""
        self._stop.set()
        with self._lock:
            self.state, self._barrier = self.FOLLOWING, None
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self.state = self.FOLLOWING

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the follower must outlive any one failure; acting ends by the deadline
                log.exception("leader lease poll failed")
            self._stop.wait(self.settings.poll_s)

    # -- the decision --------------------------------------------------------------------------------
    def acting(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "this replica is stopping"
        with self._lock:
            if self.state == self.STEPPED_DOWN:
                return False, (f"this replica stepped down after {self.settings.max_write_failures} failed API "
                               "writes in a row; waiting for its kube-scheduler to restart")
            if self.state == self.TAKING_OVER:
                return False, "this replica is taking over: waiting for its cache to catch up with the old leader"
            if self.state != self.LEADING:
                _, why = self.follower.may_act()
                return False, why or "this Pod's kube-scheduler has just taken the lease; taking over"
        return self.follower.may_act()  # the renew deadline is checked at the moment of the write

    def check(self, takeover: bool = False) -> None:
        """Raise NotActing unless this replica may write; `takeover`: also while taking over (the
        clean-up a new leader does before its first bind)."""
        ok, why = self.acting()
        if not ok and takeover and self.state == self.TAKING_OVER and not self._stop.is_set():
            ok, why = self.follower.may_act()
        if not ok:
            raise NotActing(f"hami scheduler {self.settings.pod_namespace}/{self.settings.pod_name} does not bind: "
                            f"{why}; kube-scheduler will retry")

    def healthy(self) -> tuple[bool, str]:
        with self._lock:
            if self.state == self.STEPPED_DOWN:
                return False, (f"stepped down: {self.settings.max_write_failures} API writes failed in a row; "
                               "restart the kube-scheduler container to hand the lease over")
        return True, ""

    def record_write(self, ok: bool) -> None:
        step_down = False
        with self._lock:
            if ok:
                self.failures = 0
                return
            self.failures += 1
            limit = self.settings.max_write_failures
            if limit and self.failures >= limit and self.state != self.STEPPED_DOWN and self.follower.ours():
                self.state = self.STEPPED_DOWN
                self._stepped_down_holder = self.follower.holder
                step_down = True
        if step_down:
            log.error("stepping down: %d API writes failed in a row; /healthz fails so that kubelet restarts "
                      "kube-scheduler and the lease moves", self.failures)
            self._label(FOLLOWER, count=False)

    def pod_seen(self, obj: dict) -> None:
        """Every pod event of the scheduler's watch: notes our own Pod's resourceVersion."""
        meta = obj.get("metadata") or {}
        if meta.get("name") != self.settings.pod_name or meta.get("namespace") != self.settings.pod_namespace:
            return
        with contextlib.suppress(TypeError, ValueError):
            version = int(meta.get("resourceVersion") or 0)
            with self._lock:
                self._seen_version = max(self._seen_version, version)

    # -- one round -------------------------------------------------------------------------------------
    def poll(self) -> None:
        try:
            record = self.lease.read()
        except KubeError as err:  # no news is no renewal: acting ends at the deadline by itself
            log.info("leader lease %s unreadable: %s", self.settings.lease, err)
        else:
            self.follower.observe(record)
        may, why = self.follower.may_act()
        with self._lock:
            state = self.state
        if state == self.STEPPED_DOWN:
            # healthy again once the Lease moved on, or our kube-scheduler stopped renewing it (it was
            # restarted): failing on would only restart it again
            if self.follower.holder != self._stepped_down_holder or not may:
                log.info("after stepping down: %s; healthy again", why or f"the lease holder is now "
                                                                           f"{self.follower.holder!r}")
                with self._lock:
                    if self.state == self.STEPPED_DOWN:
                        self.state, self.failures = self.FOLLOWING, 0
            return
        if not may:
            if state != self.FOLLOWING:
                log.warning("leadership lost: %s", why)
                with self._lock:
                    if self.state in (self.TAKING_OVER, self.LEADING):
                        self.state, self._barrier = self.FOLLOWING, None
            if self.role != FOLLOWER:
                self._label(FOLLOWER, count=False)
            return
        if state == self.FOLLOWING:
            self._begin_takeover()
        elif state == self.TAKING_OVER:
            self._finish_takeover()

    def _begin_takeover(self) -> None:
        if not self.synced():
            return
        log.info("this Pod's kube-scheduler holds the lease (%s): taking over", self.follower.holder)
        version = self._label(LEADER, count=True, barrier=True)
        if version is None:
            return
        with self._lock:
            if self.state != self.FOLLOWING:  # stepped down meanwhile
                return
            self.state, self._barrier, self._barrier_since = self.TAKING_OVER, version, self.clock()
        self._finish_takeover()

    def _finish_takeover(self) -> None:
        with self._lock:
            barrier = self._barrier
            if barrier is None or self.state != self.TAKING_OVER:
                return
            caught_up = self._seen_version >= barrier and not self.listing()
            if not caught_up and self.clock() - self._barrier_since > self.settings.sync_timeout_s:
                log.warning("our role label (resourceVersion %d) did not come back through the pod watch in %.0fs; "
                            "writing it again", barrier, self.settings.sync_timeout_s)
                self.state, self._barrier = self.FOLLOWING, None
            if not caught_up:
                return
        try:
            changed = self.on_takeover()
        except Exception:  # the clean-up is an optimisation: its failure must not block leading
            log.exception("takeover clean-up failed")
            changed = 0
        if changed:
            # our own clean-up writes must be in the cache too before a bind (a bind racing the
            # watch's delivery of a "failed" mark would lose its reservation): one more barrier
            version = self._label(LEADER, count=True, barrier=True)
            with self._lock:
                if self.state == self.TAKING_OVER and self._barrier == barrier:
                    if version is None:
                        self.state, self._barrier = self.FOLLOWING, None  # start over next round
                    else:
                        self._barrier, self._barrier_since = version, self.clock()
            return
        with self._lock:
            if self.state == self.TAKING_OVER and self._barrier == barrier:
                self.state, self._barrier = self.LEADING, None
                self.takeovers += 1
                log.info("leading: the cache has caught up with resourceVersion %d", barrier)

    def _label(self, role: str, *, count: bool, barrier: bool = False) -> int | None:
        """Write our role label (with `barrier`, also a fresh takeover stamp: a write that changes
        the Pod even when the label already says leader); the resourceVersion of the write, None
        when it failed."""
        meta: dict = {"labels": {ROLE_LABEL: role}}
        if barrier:
            meta["annotations"] = {TAKEOVER_ANNOTATION: f"{self.follower.holder} {time.time():.6f}"}
        try:
            pod = self.kube.patch("pods", self.settings.pod_name, {"metadata": meta}, self.settings.pod_namespace)
        except KubeError as err:
            log.warning("role label %s=%s not written on %s/%s: %s", ROLE_LABEL, role, self.settings.pod_namespace,
                        self.settings.pod_name, err)
            if count:
                self.record_write(not write_failed(err))
            return None
        if count:
            self.record_write(True)
        self.role = role
        try:
            return int(pod["metadata"]["resourceVersion"])
        except (KeyError, TypeError, ValueError):
            return 0  # an opaque version: the label is written, nothing to wait for

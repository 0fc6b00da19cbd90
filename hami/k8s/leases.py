"""coordination.k8s.io Leases: reading one as a typed record, and client-go's leader election.

`LeaseRecord` is what a follower needs to know of a Lease (who holds it, since when, last
renewal, duration, transitions, resourceVersion). `LeaderElector` takes, renews and releases a
Lease exactly as client-go's `leaderelection` package does (the stock kube-scheduler's leader
election, reference kubernetes-interfaces.md): holderIdentity, leaseDurationSeconds, acquireTime,
renewTime and leaseTransitions in the Lease's spec, every write conditional on the resourceVersion
read, a holder's lease counted from the *local* time at which this elector last saw the record
change (never from the holder's clock), leadership lost when a renewal has not succeeded within
the renew deadline, and an optional release on stop (holder "", duration 1 s). The production
scheduler never elects (the co-located kube-scheduler does); the simulator's kube-scheduler
driver does, through this class, so two replicas on a local control plane behave as two Pods.

Storage is behind `LeaseClient` (get / create / update of the whole Lease object) so the same
elector runs over the official client (`KubeLeaseClient`) or the simulator's in-process store.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from hami.k8s.client import Conflict, Kube, KubeError, Obj

log = logging.getLogger(__name__)

# kube-scheduler's defaults (--leader-elect-lease-duration / -renew-deadline / -retry-period)
LEASE_DURATION_S = 15.0
RENEW_DEADLINE_S = 10.0
RETRY_PERIOD_S = 2.0


def format_micro(when: float) -> str:
    """metav1.MicroTime as the API server writes it."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    """RFC 3339 (with or without fraction) to epoch seconds; None for absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" when released or never held
    lease_duration_s: float
    acquire_time: float | None  # epoch seconds
    renew_time: float | None
    transitions: int
    resource_version: str

    @classmethod
    def from_object(cls, lease: Obj) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "",
                   lease_duration_s=float(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=parse_time(spec.get("acquireTime")),
                   renew_time=parse_time(spec.get("renewTime")),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""))

    def same_election_state(self, other: LeaseRecord | None) -> bool:
        """client-go compares the whole record (not the resourceVersion) to notice a change."""
        return other is not None and (self.holder, self.lease_duration_s, self.acquire_time, self.renew_time,
                                      self.transitions) == (other.holder, other.lease_duration_s,
                                                            other.acquire_time, other.renew_time, other.transitions)


def parse_lease_ref(text: str) -> tuple[str, str]:
    """"namespace/name" -> (namespace, name), with an error saying what to write."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"lease {text!r}: write <namespace>/<name>, e.g. kube-system/hami-scheduler")
    return namespace, name


class LeaseClient(Protocol):
    """One Lease object's storage. `create`/`update` raise `Conflict` when the object exists / the
    resourceVersion given is stale; any other failure is a `KubeError`."""

    def get(self) -> Obj | None: ...

    def create(self, lease: Obj) -> Obj: ...

    def update(self, lease: Obj) -> Obj: ...


class KubeLeaseClient:
    """A Lease through the official client (`Kube`)."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    def get(self) -> Obj | None:
        return self.kube.find("leases", self.name, self.namespace)

    def read(self) -> LeaseRecord | None:
        lease = self.get()
        return None if lease is None else LeaseRecord.from_object(lease)

    def create(self, lease: Obj) -> Obj:
        return self.kube.create("leases", lease, self.namespace)

    def update(self, lease: Obj) -> Obj:
        # a merge patch carrying resourceVersion is as conditional as client-go's PUT
        return self.kube.patch("leases", self.name, {"metadata": {"resourceVersion":
                                                                  lease["metadata"]["resourceVersion"]},
                                                     "spec": lease["spec"]}, self.namespace)


def default_identity(hostname: str) -> str:
    """kube-scheduler's identity: "<hostname>_<uuid>" (hostname = the Pod's name in a cluster)."""
    return f"{hostname}_{uuid.uuid4()}"


class LeaderElector:
    """client-go's LeaderElector over a `LeaseClient`. `run()` blocks: acquire, lead (renewing
    every retry period), and return when leadership is lost or `stop()` is called; `is_leader()`
    is true only between a successful acquire and the first missed renew deadline."""

    def __init__(self, client: LeaseClient, identity: str, *, namespace: str, name: str,
                 lease_duration_s: float = LEASE_DURATION_S, renew_deadline_s: float = RENEW_DEADLINE_S,
                 retry_period_s: float = RETRY_PERIOD_S, release_on_cancel: bool = True,
                 clock: Callable[[], float] = time.time,
                 on_started_leading: Callable[[], None] | None = None,
                 on_stopped_leading: Callable[[], None] | None = None) -> None:
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ValueError("leader election needs lease duration > renew deadline > retry period > 0 "
                             f"(got {lease_duration_s}, {renew_deadline_s}, {retry_period_s})")
        self.client, self.identity = client, identity
        self.namespace, self.name = namespace, name
        self.lease_duration_s, self.renew_deadline_s, self.retry_period_s = (lease_duration_s, renew_deadline_s,
                                                                             retry_period_s)
        self.release_on_cancel = release_on_cancel
        self.clock = clock
        self.on_started_leading, self.on_stopped_leading = on_started_leading, on_stopped_leading
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # local time the record last changed
        self._leading_until = 0.0  # last successful renew + renew deadline
        self._leading = False
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- state -----------------------------------------------------------------------------------
    def is_leader(self) -> bool:
        with self._lock:
            return self._leading and self.clock() < self._leading_until

    def stop(self) -> None:
        self._stop.set()

    @property
    def observed_holder(self) -> str:
        return self._observed.holder if self._observed else ""

    # -- one attempt (client-go tryAcquireOrRenew) --------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        now = self.clock()
        stamp = format_micro(now)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.lease_duration_s),
                "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
        try:
            current = self.client.get()
            if current is None:
                created = self.client.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                              "metadata": {"name": self.name, "namespace": self.namespace},
                                              "spec": spec})
                self._observe(LeaseRecord.from_object(created), now)
                return True
            record = LeaseRecord.from_object(current)
            if not record.same_election_state(self._observed):
                self._observe(record, now)
            held_by_other = record.holder and record.holder != self.identity
            if held_by_other and self._observed_at + record.lease_duration_s > now:
                return False
            if record.holder == self.identity:
                spec["acquireTime"] = format_micro(record.acquire_time) if record.acquire_time else stamp
                spec["leaseTransitions"] = record.transitions
            else:
                spec["leaseTransitions"] = record.transitions + 1
            body = {**current, "spec": {**(current.get("spec") or {}), **spec}}
            updated = self.client.update(body)
        except Conflict:
            return False  # someone wrote in between: read again next time
        except KubeError as err:
            log.info("lease %s/%s: %s", self.namespace, self.name, err)
            return False
        self._observe(LeaseRecord.from_object(updated), now)
        return True

    def _observe(self, record: LeaseRecord, now: float) -> None:
        self._observed, self._observed_at = record, now

    def release(self) -> bool:
        """Give the lease up at once (client-go's ReleaseOnCancel): holder "", duration 1 s."""
        if not self._leading:
            return False
        with self._lock:
            self._leading = False
        try:
            current = self.client.get()
            if current is None or (current.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            stamp = format_micro(self.clock())
            self.client.update({**current, "spec": {**current["spec"], "holderIdentity": "",
                                                    "leaseDurationSeconds": 1, "renewTime": stamp,
                                                    "acquireTime": stamp}})
            return True
        except KubeError as err:
            log.info("lease %s/%s not released: %s", self.namespace, self.name, err)
            return False

    # -- the loop ----------------------------------------------------------------------------------
    def _jittered(self) -> float:
        return self.retry_period_s * (1 + 0.2 * random.random())  # client-go's JitterFactor 1.2

    def acquire(self) -> bool:
        """Block until this identity holds the lease (True) or `stop()` (False)."""
        while not self._stop.is_set():
            if self.try_acquire_or_renew():
                with self._lock:
                    self._leading = True
                    self._leading_until = self.clock() + self.renew_deadline_s
                log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
                return True
            self._stop.wait(self._jittered())
        return False

    def renew_until_lost(self) -> None:
        """Renew every retry period; return when a renew deadline passes without success, or on stop."""
        while not self._stop.wait(self.retry_period_s):
            if self.try_acquire_or_renew():
                with self._lock:
                    self._leading_until = self.clock() + self.renew_deadline_s
            elif self.clock() >= self._leading_until:
                log.warning("lease %s/%s lost by %s (no renewal within %.1fs)", self.namespace, self.name,
                            self.identity, self.renew_deadline_s)
                with self._lock:
                    self._leading = False
                return

    def run(self) -> None:
        """Acquire, lead until lost or stopped, then (on stop, when configured) release."""
        if not self.acquire():
            return
        if self.on_started_leading is not None:
            self.on_started_leading()
        self.renew_until_lost()
        if self._stop.is_set() and self.release_on_cancel:
            self.release()
        with self._lock:
            self._leading = False
        if self.on_stopped_leading is not None:
            self.on_stopped_leading()


__all__ = ["KubeLeaseClient", "LeaderElector", "LeaseClient", "LeaseRecord", "default_identity", "parse_lease_ref"]

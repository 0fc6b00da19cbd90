"""The soak: a 10,000-GPU cluster of hollow nodes, the real scheduler as in production, for an hour.

    python -m hami.sim.soak --nodes 1250 --minutes 60 --out bench-results/soak-60min

Parts: the local API server (in this process); `hami scheduler` as its own process (extender over
TLS, admission webhook registered as a MutatingWebhookConfiguration, metrics), as the chart runs
it; the local kube-scheduler driver (`hami.sim.kubescheduler`, the chart's extender stanza); hollow
nodes (`hami.sim.hollow`) for the kubelets and node agents. The fleet (default mix, per 8 nodes):
3 x A100-SXM4-80GB, 1.5 x H800 and 1.5 x A800 (80 GB) in MIG mode, 2 x A10 as hami-core.

Load: Poisson arrivals, lognormal lifetimes (counted from Running), each pool (MIG, hami-core) at
offered load `--load` (default 0.9) of its GPUs, measured as a pod's GPU share (a MIG profile: the
larger of its compute and memory fraction; hami-core: its memory fraction); the arrival rate this
gives is printed and recorded. The run starts in the stationary state's expected population
(pods with equilibrium residual lifetimes, submitted at once: the `fill` phase), then arrivals
follow. A pod pending longer than `--patience` minutes is withdrawn (counted).

Every `--sample` seconds a CSV row: filter latency (the scheduler's histogram, and the driver's
exact round trips), prioritize and bind, node-lock contention, scheduler RSS, pods/s placed, the
load average. At the end, with arrivals stopped and pending pods withdrawn, the invariants are
checked (no over-commit, no overlapping instance, no leaked instance, the live scheduler, an engine
rebuilt from the annotations and the hollow nodes' truth agree), and `summary.md` is written.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import csv
import heapq
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trustme

from hami._core import Engine
from hami.api import codecs, names
from hami.scheduler.cache import ClusterCache
from hami.sim.apiserver import ApiServer, errors
from hami.sim.cluster import hami_extender
from hami.sim.hollow import HollowFleet, hollow_specs
from hami.sim.kubescheduler import KubeScheduler
from hami.sim.kubescheduler import SchedulerConfig as KubeSchedulerConfig

log = logging.getLogger(__name__)

NAMESPACE = "soak"
WEBHOOK = "vgpu.hami.io"
LOCK_WAIT_S = 0.1  # binds slower than this are counted (an unlocked, unloaded bind takes a few ms)

# (share of the 8-node cycle, model, mode)
FLEET = ((3.0, "A100-SXM4-80GB", names.MODE_MIG), (1.5, "H800-SXM5-80GB", names.MODE_MIG),
         (1.5, "A800-SXM4-80GB", names.MODE_MIG), (2.0, "A10", names.MODE_HAMI_CORE))


@dataclass(frozen=True)
class PodClass:
    """One kind of request: `gpus` devices of `gpumem` MiB (+ cores), its weight in the pool's mix and
    its GPU share (what it takes of the pool, for the offered load)."""

    name: str
    mode: str
    gpus: int
    gpumem: int
    weight: float
    share: float
    cores: int = 0

    def limits(self) -> dict[str, str]:
        out = {"nvidia.com/gpu": str(self.gpus), "nvidia.com/gpumem": str(self.gpumem)}
        if self.cores:
            out["nvidia.com/gpucores"] = str(self.cores)
        return out


# MIG (80 GB, 7 compute / 8 memory slices): share = max(compute/7, memory/8) of the profile chosen
MIG_MIX = (PodClass("1g.10gb", names.MODE_MIG, 1, 10_000, 0.20, 1 / 7),
           PodClass("2g.20gb", names.MODE_MIG, 1, 20_000, 0.20, 2 / 7),
           PodClass("3g.40gb", names.MODE_MIG, 1, 40_000, 0.20, 4 / 8),
           PodClass("7g.80gb", names.MODE_MIG, 1, 80_000, 0.25, 1.0),
           PodClass("2x7g.80gb", names.MODE_MIG, 2, 80_000, 0.08, 2.0),
           PodClass("4x7g.80gb", names.MODE_MIG, 4, 80_000, 0.05, 4.0),
           PodClass("8x7g.80gb", names.MODE_MIG, 8, 80_000, 0.02, 8.0))
# A10 (23028 MiB, split 10): share = memory fraction
CORE_MIX = (PodClass("a10-8g", names.MODE_HAMI_CORE, 1, 8_000, 0.35, 8_000 / 23_028, 30),
            PodClass("a10-12g", names.MODE_HAMI_CORE, 1, 12_000, 0.30, 12_000 / 23_028, 50),
            PodClass("a10-20g", names.MODE_HAMI_CORE, 1, 20_000, 0.20, 20_000 / 23_028, 100),
            PodClass("a10-2x20g", names.MODE_HAMI_CORE, 2, 20_000, 0.15, 2 * 20_000 / 23_028, 100))


@dataclass
class SoakConfig:
    nodes: int = 1250
    gpus_per_node: int = 8
    minutes: float = 60.0
    load: float = 0.9
    lifetime_median_min: float = 40.0
    lifetime_sigma: float = 0.8
    patience_min: float = 10.0
    sample_s: float = 60.0
    scrape_every: int = 1  # scrape the scheduler's /metrics every N samples (and at the end)
    warmup_min: float | None = None  # default: a third of the run
    seed: int = 1
    out: Path = Path("bench-results/soak")
    fill: bool = True
    handshake_every: float = 30.0

    @property
    def warmup(self) -> float:
        return self.warmup_min if self.warmup_min is not None else self.minutes / 3


# ----------------------------------------------------------------------------------------------
# the fleet and the workload


def fleet_specs(nodes: int, gpus: int = 8):
    """The fleet mix scaled to `nodes` (largest remainders), grouped by model."""
    total = sum(w for w, _, _ in FLEET)
    exact = [nodes * w / total for w, _, _ in FLEET]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(FLEET)), key=lambda i: exact[i] - counts[i], reverse=True)[:nodes - sum(counts)]:
        counts[i] += 1
    return hollow_specs([(c, model, gpus, mode) for c, (_, model, mode) in zip(counts, FLEET) if c], prefix="soak")


@dataclass(frozen=True)
class Pool:
    name: str
    gpus: int
    mix: tuple[PodClass, ...]

    @property
    def mean_share(self) -> float:
        return sum(c.weight * c.share for c in self.mix) / sum(c.weight for c in self.mix)

    def rate(self, load: float, mean_lifetime_s: float) -> float:
        """Arrivals per second that offer `load` of the pool: λ · E[T] · E[share] = load · GPUs."""
        return load * self.gpus / (mean_lifetime_s * self.mean_share) if self.gpus else 0.0


class Workload:
    """Poisson arrivals per pool, lognormal lifetimes; pods named `<class>-<n>`."""

    def __init__(self, pools: Sequence[Pool], config: SoakConfig) -> None:
        self.pools = [p for p in pools if p.gpus]
        self.config = config
        self.rng = random.Random(config.seed)
        self.mu = math.log(config.lifetime_median_min * 60)
        self.sigma = config.lifetime_sigma
        self.mean_lifetime = math.exp(self.mu + self.sigma ** 2 / 2)
        self.rates = [p.rate(config.load, self.mean_lifetime) for p in self.pools]
        self._n = 0

    @property
    def rate(self) -> float:
        return sum(self.rates)

    def pick(self, pool: Pool) -> PodClass:
        return self.rng.choices(pool.mix, weights=[c.weight for c in pool.mix])[0]

    def lifetime(self) -> float:
        return self.rng.lognormvariate(self.mu, self.sigma)

    def residual(self) -> float:
        """A running pod's remaining life in the stationary state: U × (a length-biased lifetime),
        and the length-biased lognormal(μ, σ) is lognormal(μ + σ², σ)."""
        return self.rng.random() * self.rng.lognormvariate(self.mu + self.sigma ** 2, self.sigma)

    def initial(self) -> list[tuple[PodClass, float]]:
        """The stationary population (Poisson, mean λ·E[T] per pool) with residual lifetimes."""
        out = []
        for pool, rate in zip(self.pools, self.rates):
            for _ in range(_poisson(self.rng, rate * self.mean_lifetime)):
                out.append((self.pick(pool), self.residual()))
        self.rng.shuffle(out)
        return out

    def next_arrival(self) -> tuple[float, PodClass]:
        """(seconds to wait, class) of the next arrival over all pools."""
        wait = self.rng.expovariate(self.rate)
        pool = self.rng.choices(self.pools, weights=self.rates)[0]
        return wait, self.pick(pool)

    def pod(self, cls: PodClass) -> dict[str, Any]:
        self._n += 1
        name = f"{cls.name.replace('.', '-').replace('x', 'x-')}-{self._n:07d}".lower()
        return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "soak", "class": cls.name},
                             "annotations": {names.VGPU_MODE: cls.mode}},
                "spec": {"containers": [{"name": "main", "image": "cuda:12",
                                         "resources": {"limits": cls.limits()}}],
                         "terminationGracePeriodSeconds": 0}}


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:  # normal approximation, plenty at these sizes
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    k, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# ----------------------------------------------------------------------------------------------
# measuring


class Timings:
    """The driver's timings per phase since the last `take()` (exact, not bucketed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, list[float]] = {}

    def __call__(self, phase: str, seconds: float) -> None:
        with self._lock:
            self._data.setdefault(phase, []).append(seconds)

    def take(self) -> dict[str, list[float]]:
        with self._lock:
            data, self._data = self._data, {}
        return {k: sorted(v) for k, v in data.items()}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


_BUCKET = re.compile(r'^hami_scheduler_request_duration_seconds_bucket\{(?P<labels>[^}]*)\} (?P<v>\S+)$', re.M)


def histogram(text: str, path: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) of the scheduler's request-duration histogram for one path."""
    out = []
    for m in _BUCKET.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        if labels.get("path") == path:
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            out.append((le, float(m.group("v"))))
    return sorted(out)


def histogram_quantile(now: list[tuple[float, float]], before: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over the increase between two scrapes (linear in a bucket)."""
    prev = dict(before)
    buckets = [(le, count - prev.get(le, 0.0)) for le, count in now]
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            return lower_le + (le - lower_le) * ((rank - lower_count) / max(count - lower_count, 1e-12))
        lower_le, lower_count = le, count
    return buckets[-1][0]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ----------------------------------------------------------------------------------------------
# the run


@dataclass
class Counts:
    submitted: int = 0
    withdrawn: int = 0  # pending longer than the patience
    withdrawn_at_end: int = 0  # still pending when arrivals stopped (withdrawn to check a quiet cluster)
    failed: int = 0  # rejected by the node (UnexpectedAdmissionError)
    create_errors: int = 0
    finished: int = 0


@dataclass
class Result:
    config: dict[str, Any]
    rates: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    invariants: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.invariants.get("violations")


class Soak:
    """One soak run (module docstring); `run()` returns the Result and writes the CSV and summary."""

    def __init__(self, config: SoakConfig, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda line: log.info("%s", line))
        self.out = Path(config.out)
        self.specs = fleet_specs(config.nodes, config.gpus_per_node)
        gpus = Counter(s.mode for s in self.specs for _ in range(s.gpus))
        self.pools = [Pool("mig", gpus[names.MODE_MIG], MIG_MIX), Pool("hami-core", gpus[names.MODE_HAMI_CORE],
                                                                         CORE_MIX)]
        self.workload = Workload(self.pools, config)
        self.counts = Counts()
        self.timings = Timings()
        self._ends: list[tuple[float, str]] = []  # (monotonic end, pod name) of running pods
        self._pending: dict[str, float] = {}  # pod name -> created (monotonic), until Running
        self._lifetimes: dict[str, float] = {}  # pod name -> lifetime once Running
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.api: ApiServer | None = None
        self.scheduler: subprocess.Popen | None = None
        self.kube_scheduler: KubeScheduler | None = None
        self.fleet: HollowFleet | None = None
        self.urls: dict[str, str] = {}

    # -- setup

    def _start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.api = ApiServer().start()
        store = self.api.store
        kubeconfig = self.api.write_kubeconfig(self.out / "kubeconfig")
        store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
        self.fleet = HollowFleet(store, self.specs, handshake_every=self.config.handshake_every)
        self.fleet.on_running = self._on_running
        self.fleet.start()
        self.progress(f"hollow nodes registered: {len(self.specs)} nodes, "
                      f"{', '.join(f'{n} {k}' for k, n in sorted(self.fleet.gpu_counts().items()))}")
        ca, cert, key = _tls(self.out)
        port, metrics = _free_port(), _free_port()
        url = f"https://127.0.0.1:{port}"
        self.urls = {"extender": url, "metrics": f"http://127.0.0.1:{metrics}/metrics"}
        command = [sys.executable, "-m", "hami.cli", "scheduler", "--kubeconfig", str(kubeconfig),
                   "--http-bind", f"127.0.0.1:{port}", "--metrics-bind", f"127.0.0.1:{metrics}",
                   "--cert-file", str(cert), "--key-file", str(key)]
        with open(self.out / "scheduler.log", "ab") as sink:
            self.scheduler = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait(lambda: _ready(url), 120, "the scheduler ready (synced)", self.scheduler, self.out / "scheduler.log")
        store.create("mutatingwebhookconfigurations", None, {"metadata": {"name": WEBHOOK}, "webhooks": [{
            "name": WEBHOOK, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
            "timeoutSeconds": 10, "clientConfig": {"url": f"{url}/webhook", "caBundle": base64.b64encode(ca).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]})
        self.kube_scheduler = KubeScheduler(store, KubeSchedulerConfig(extenders=(hami_extender(url),), seed=1))
        self.kube_scheduler.observer = self.timings
        self.kube_scheduler.start()
        self.progress(f"scheduler pid {self.scheduler.pid} at {url}; kube-scheduler driver started")

    def _stop_all(self) -> None:
        if self.kube_scheduler is not None:
            self.kube_scheduler.stop()
        if self.fleet is not None:
            self.fleet.stop()
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.terminate()
            try:
                self.scheduler.wait(10)
            except subprocess.TimeoutExpired:
                self.scheduler.kill()
        if self.api is not None:
            self.api.stop()

    # -- pods

    def _on_running(self, namespace: str, name: str) -> None:
        with self._lock:
            self._pending.pop(name, None)
            lifetime = self._lifetimes.pop(name, None)
            if lifetime is not None:
                heapq.heappush(self._ends, (time.monotonic() + lifetime, name))

    def _submit(self, cls, lifetime: float, patient: bool = False) -> None:
        """Create one pod; `patient` (the initial population) is never withdrawn."""
        assert self.api is not None
        body = self.workload.pod(cls)
        name = body["metadata"]["name"]
        with self._lock:
            self._pending[name] = math.inf if patient else time.monotonic()
            self._lifetimes[name] = lifetime
        try:
            self.api.store.create("pods", NAMESPACE, body)
            self.counts.submitted += 1
        except errors.StatusError as exc:
            self.counts.create_errors += 1
            log.warning("pod not created name=%s error=%s", name, exc.message)
            with self._lock:
                self._pending.pop(name, None)
                self._lifetimes.pop(name, None)

    def _arrivals(self, until: float) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            wait, cls = self.workload.next_arrival()
            next_at += wait
            if next_at >= until:
                return
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return
            self._submit(cls, self.workload.lifetime())

    def _reaper(self) -> None:
        """Ends pods whose lifetime is over; withdraws pods pending past the patience; deletes failed ones."""
        assert self.fleet is not None and self.api is not None
        patience = self.config.patience_min * 60
        next_scan = time.monotonic() + 5
        while not self._stop.wait(0.2):
            now = time.monotonic()
            due = []
            with self._lock:
                while self._ends and self._ends[0][0] <= now:
                    due.append(heapq.heappop(self._ends)[1])
            for name in due:
                self.fleet.finish(NAMESPACE, name)
                self.counts.finished += 1
            if now >= next_scan:
                next_scan = now + 5
                with self._lock:
                    stale = [n for n, t in self._pending.items() if now - t > patience]
                for name in stale:
                    self._withdraw(name)
                for name in self.fleet.take_failed():
                    self.counts.failed += 1
                    with self._lock:
                        self._pending.pop(name[1], None)
                        self._lifetimes.pop(name[1], None)
                    with contextlib.suppress(errors.StatusError):
                        self.api.store.delete("pods", name[0], name[1], grace_period_seconds=0)

    def _withdraw(self, name: str) -> None:
        assert self.api is not None
        with self._lock:
            self._pending.pop(name, None)
            self._lifetimes.pop(name, None)
        try:
            pod = self.api.store.get("pods", NAMESPACE, name)
        except errors.StatusError:
            return
        if (pod.get("spec") or {}).get("nodeName"):
            return  # bound meanwhile: it runs
        with contextlib.suppress(errors.StatusError):
            self.api.store.delete("pods", NAMESPACE, name, grace_period_seconds=0)
            self.counts.withdrawn += 1

    # -- sampling

    def _sample(self, started: float, phase: str, before: dict[str, Any], scrape_now: bool) -> dict[str, Any]:
        assert self.fleet is not None and self.scheduler is not None
        now = time.monotonic()
        text = ""
        if scrape_now:
            with contextlib.suppress(OSError):
                text = scrape(self.urls["metrics"])
        hist = {p: histogram(text, p) for p in ("/filter", "/prioritize", "/bind", "/webhook")}
        t = self.timings.take()
        stats = self.fleet.stats
        holds = sorted(self.fleet.take_lock_holds())
        binds = t.get("bind", [])
        interval = max(1e-9, now - before.get("at", started))
        placed = stats.allocated - before.get("allocated", 0)

        def ms(v: float) -> float:
            return round(v * 1000, 3)

        with self._lock:
            pending, running = len(self._pending), len(self._ends)
        row = {
            "minute": round((now - started) / 60, 2), "phase": phase,
            "loadavg_1m": os.getloadavg()[0],
            "submitted": self.counts.submitted, "placed": placed, "pods_per_s": round(placed / interval, 3),
            "running": running, "pending": pending, "withdrawn": self.counts.withdrawn, "failed": self.counts.failed,
            "filter_srv_p50_ms": ms(histogram_quantile(hist["/filter"], before.get("/filter", []), 0.5)),
            "filter_srv_p99_ms": ms(histogram_quantile(hist["/filter"], before.get("/filter", []), 0.99)),
            "filter_calls": len(t.get("filter", [])),
            "filter_rt_p50_ms": ms(percentile(t.get("filter", []), 0.5)),
            "filter_rt_p99_ms": ms(percentile(t.get("filter", []), 0.99)),
            "filter_rt_max_ms": ms(max(t.get("filter", [float("nan")]))),
            "prioritize_rt_p50_ms": ms(percentile(t.get("prioritize", []), 0.5)),
            "prioritize_rt_p99_ms": ms(percentile(t.get("prioritize", []), 0.99)),
            "cycle_p50_ms": ms(percentile(t.get("cycle", []), 0.5)),
            "bind_p50_ms": ms(percentile(binds, 0.5)), "bind_p99_ms": ms(percentile(binds, 0.99)),
            "bind_max_ms": ms(max(binds, default=float("nan"))),
            "lock_waits": len(t.get("node-busy", [])),
            "binds_over_100ms": len(binds) - bisect.bisect_right(binds, LOCK_WAIT_S),
            "lock_hold_p50_ms": ms(percentile(holds, 0.5)), "lock_hold_p99_ms": ms(percentile(holds, 0.99)),
            "webhook_srv_p50_ms": ms(histogram_quantile(hist["/webhook"], before.get("/webhook", []), 0.5)),
            "sched_rss_mib": round(rss_mib(self.scheduler.pid), 1),
            "soak_rss_mib": round(rss_mib(os.getpid()), 1),
            "api_writes_hollow": stats.api_writes,
        }
        before.update({"at": now, "allocated": stats.allocated})
        if text:
            before.update(hist)
        return row

    # -- the run

    def run(self) -> Result:
        config = self.config
        result = Result({k: str(v) for k, v in asdict(config).items()},
                        {"pods_per_s": round(self.workload.rate, 3),
                         **{f"{p.name}_pods_per_s": round(r, 3) for p, r in zip(self.workload.pools,
                                                                                  self.workload.rates)},
                         "mean_lifetime_s": round(self.workload.mean_lifetime, 1),
                         "expected_population": round(self.workload.rate * self.workload.mean_lifetime)})
        self.progress(f"offered load {config.load}: {self.workload.rate:.2f} pods/s "
                      f"({', '.join(f'{p.name} {r:.2f}/s' for p, r in zip(self.workload.pools, self.workload.rates))})"
                      f", mean lifetime {self.workload.mean_lifetime / 60:.1f} min, expected population "
                      f"{result.rates['expected_population']}")
        try:
            self._start()
            started = time.monotonic()
            until = started + config.minutes * 60
            threads = [threading.Thread(target=self._reaper, name="soak-reaper", daemon=True)]
            for thread in threads:
                thread.start()
            if config.fill:
                initial = self.workload.initial()
                self.progress(f"fill: submitting the stationary population, {len(initial)} pods")
                filler = threading.Thread(target=lambda: [self._submit(c, r, True) for c, r in initial if not
                                                          self._stop.is_set()], name="soak-fill", daemon=True)
                filler.start()
                threads.append(filler)
            arrivals = threading.Thread(target=self._arrivals, args=(until,), name="soak-arrivals", daemon=True)
            arrivals.start()
            threads.append(arrivals)
            before: dict[str, Any] = {"at": started}
            with open(self.out / "timeseries.csv", "w", newline="") as sink:
                writer: csv.DictWriter | None = None
                next_at = started
                while True:
                    next_at = min(next_at + config.sample_s, until)
                    if next_at - started < 1:
                        break
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    if self.scheduler is not None and self.scheduler.poll() is not None:
                        raise RuntimeError(f"the scheduler exited with {self.scheduler.returncode} "
                                           f"(log: {self.out / 'scheduler.log'})")
                    minute = (next_at - started) / 60
                    rows = len(result.rows) + 1
                    row = self._sample(started, "warmup" if minute <= config.warmup else "steady", before,
                                       rows % config.scrape_every == 0 or next_at >= until)
                    result.rows.append(row)
                    if writer is None:
                        writer = csv.DictWriter(sink, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)
                    sink.flush()
                    self.progress(_progress_line(row))
                    if next_at >= until:
                        break
            self._stop.set()
            result.invariants = self._final_check()
        finally:
            self._stop.set()
            self._stop_all()
        result.counts = asdict(self.counts)
        write_summary(result, self.out)
        return result

    # -- the end

    def _final_check(self) -> dict[str, Any]:
        """Quiesce (pending pods withdrawn, binds and allocations settled), then check."""
        assert self.api is not None and self.fleet is not None and self.kube_scheduler is not None
        store = self.api.store
        self.progress("final check: withdrawing pending pods and letting binds settle")
        before = self.counts.withdrawn
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            unbound = [p["metadata"]["name"] for p in store.list("pods", NAMESPACE)["items"]
                       if not (p.get("spec") or {}).get("nodeName")]
            for name in unbound:
                self._withdraw(name)
            self.fleet.drain(60)
            if not unbound:
                break
            time.sleep(1)  # binds in flight land (or fail) meanwhile
        self.counts.withdrawn_at_end = self.counts.withdrawn - before
        self.counts.withdrawn = before
        # the live scheduler's watches catch up: a stale view passes on a later try, a real violation stays
        deadline = time.monotonic() + 60
        while True:
            report = check_invariants(store, self.fleet, lambda: scrape(self.urls["metrics"]))
            if not report["violations"] or time.monotonic() > deadline:
                return report
            time.sleep(2)
            self.fleet.drain(10)


def check_invariants(store, fleet: HollowFleet, metrics: Callable[[], str] | None) -> dict[str, Any]:
    """The end-of-run invariants (module docstring); `violations` lists every one broken. `metrics`
    returns the live scheduler's metrics text (None: that comparison is skipped)."""
    violations: list[str] = list(fleet.check())
    pods = store.list("pods")["items"]
    nodes = store.list("nodes")["items"]
    live = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")}
    # 1. the decisions recorded on pods: no overlapping placement, no over-committed share
    spans: dict[str, list[tuple[int, int, str]]] = {}
    core: dict[str, list[int]] = {}
    for (ns, name), pod in live.items():
        ann = pod["metadata"].get("annotations") or {}
        if not (pod.get("spec") or {}).get("nodeName") or names.VGPU_DEVICES_ALLOCATED not in ann:
            continue
        mig = codecs.decode_mig_allocations(ann.get(names.VGPU_MIG_ALLOCATIONS, ""))
        for a in mig:
            spans.setdefault(a.gpu_uuid, []).append((a.placement.start, a.placement.size, f"{ns}/{name}"))
            if not a.realised:
                violations.append(f"{ns}/{name}: MIG reservation on {a.gpu_uuid} never realised")
        if not mig:
            for entry in codecs.decode_pod_devices(ann[names.VGPU_DEVICES_ALLOCATED]):
                for d in entry:
                    core.setdefault(d.uuid, []).append(d.memory_mib)
    for gpu, held in spans.items():
        used: Counter[int] = Counter()
        for start, size, _ in held:
            used.update(range(start, start + size))
        if used and max(used.values()) > 1:
            violations.append(f"{gpu}: overlapping MIG placements in pod decisions {sorted(held)}")
    truth = fleet.truth()
    memory = {g.uuid: g.model.memory_mib for n in fleet.nodes.values() for g in n.gpus}
    for gpu, mems in core.items():
        if sum(mems) > memory.get(gpu, 0):
            violations.append(f"{gpu}: {sum(mems)} MiB of hami-core shares decided, the GPU has {memory.get(gpu)}")
    # 2. leaks: an in-use instance of a pod that is gone or finished; a live pod's instance missing
    owners = {}
    for node in fleet.nodes.values():
        for mig_uuid, key in node.owners.items():
            owners[mig_uuid] = key
            ns, name = key.split("/", 1)
            if (ns, name) not in live:
                violations.append(f"{node.name}: instance {mig_uuid} in use by {key}, which is gone (leaked)")
    for (ns, name), pod in live.items():
        ann = pod["metadata"].get("annotations") or {}
        for a in codecs.decode_mig_allocations(ann.get(names.VGPU_MIG_ALLOCATIONS, "")):
            if a.mig_uuid and owners.get(a.mig_uuid) != f"{ns}/{name}":
                violations.append(f"{ns}/{name}: its instance {a.mig_uuid} is not in use by it on the node")
    # 3. an engine rebuilt from the annotations (a restarted scheduler) agrees with the nodes' truth
    engine = Engine()
    cache = ClusterCache(engine)
    for node in nodes:
        cache.node_event("upsert", node)
    for pod in pods:
        cache.pod_event("upsert", pod)
    snap = engine.snapshot()
    mismatched = [gpu for gpu, real in truth.items() if _view(snap.get(gpu)) != _view(real)]
    for gpu in mismatched[:20]:
        violations.append(f"{gpu}: engine rebuilt from annotations {snap.get(gpu)} != node {truth[gpu]}")
    if len(mismatched) > 20:
        violations.append(f"... and {len(mismatched) - 20} more GPUs where the rebuilt engine disagrees")
    # 4. the live scheduler (its metrics) agrees with the nodes' truth
    live_checked = 0
    if metrics is not None:
        text = metrics()
        shared = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^hami_gpu_shared_count\{[^}]*device_uuid="([^"]+)"[^}]*\} (\S+)$', text, re.M)}
        for gpu, real in truth.items():
            want = len(real["in_use"]) if real["kind"] == "mig" else real["tasks"]
            have = shared.get(gpu)
            live_checked += 1
            if have is None or int(have) != want:
                violations.append(f"{gpu}: the live scheduler counts {have} users, the node {want}")
    in_use = sum(len(v["in_use"]) for v in truth.values() if v["kind"] == "mig")
    idle = sum(len(v["idle"]) for v in truth.values() if v["kind"] == "mig")
    shares = sum(v["tasks"] for v in truth.values() if v["kind"] == "hami-core")
    return {"violations": violations, "gpus": len(truth), "live_pods": len(live), "mig_in_use": in_use,
            "mig_idle": idle, "core_shares": shares, "gpus_checked_against_live_scheduler": live_checked,
            "allocations_refused_by_nodes": len(fleet.violations)}


def _view(entry: dict[str, Any] | None) -> Any:
    if entry is None:
        return None
    if entry["kind"] == "mig":
        return ("mig", sorted(map(tuple, entry["in_use"])), sorted(map(tuple, entry["idle"])))
    return ("core", entry["tasks"], entry["used_mem"], entry["used_cores"])


# ----------------------------------------------------------------------------------------------
# reporting


def _progress_line(row: dict[str, Any]) -> str:
    return (f"[{row['minute']:6.1f} min {row['phase']}] placed {row['pods_per_s']:.2f}/s running {row['running']} "
            f"pending {row['pending']} | filter srv p50 {row['filter_srv_p50_ms']} ms p99 {row['filter_srv_p99_ms']} "
            f"ms, round trip p50 {row['filter_rt_p50_ms']} p99 {row['filter_rt_p99_ms']} ms | bind p99 "
            f"{row['bind_p99_ms']} ms, lock waits {row['lock_waits']} | scheduler RSS {row['sched_rss_mib']} MiB | "
            f"load {row['loadavg_1m']:.1f}")


def growth_per_hour(rows: Sequence[dict[str, Any]], key: str = "sched_rss_mib") -> float:
    """Least-squares slope of `key` over the steady rows, as % of their mean per hour."""
    pts = [(r["minute"], r[key]) for r in rows if r["phase"] == "steady" and not math.isnan(r[key])]
    if len(pts) < 2:
        return float("nan")
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    var = sum((x - mx) ** 2 for x, _ in pts)
    if var == 0:
        return float("nan")
    slope = sum((x - mx) * (y - my) for x, y in pts) / var  # MiB per minute
    return slope * 60 / my * 100


def plot(csv_path: Path, png_path: Path) -> Path:
    """The run's curves from `timeseries.csv`: filter latency, pods placed and running, scheduler memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))

    def col(key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "", "nan") else math.nan for r in rows]

    minutes = col("minute")
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), dpi=110, sharex=True)
    lat = axes[0]
    for key, label, style in (("filter_srv_p50_ms", "filter p50 (scheduler)", "o-"),
                              ("filter_srv_p99_ms", "filter p99 (scheduler)", "s-"),
                              ("filter_rt_p50_ms", "filter p50 (driver round trip)", "-"),
                              ("filter_rt_p99_ms", "filter p99 (driver round trip)", "--")):
        values = col(key)
        pts = [(m, v) for m, v in zip(minutes, values) if not math.isnan(v)]
        if pts:
            lat.plot([m for m, _ in pts], [v for _, v in pts], style, label=label, lw=1.2, ms=3)
    lat.axhline(2, color="grey", ls=":", lw=0.8)
    lat.axhline(10, color="grey", ls=":", lw=0.8)
    lat.set_yscale("log")
    lat.set_ylabel("ms")
    lat.legend(fontsize=7)
    lat.set_title("soak: filter latency, placements, scheduler memory (load average on the right)")
    load = lat.twinx()
    load.plot(minutes, col("loadavg_1m"), color="grey", lw=0.6)
    load.set_ylabel("load average", color="grey")
    pods = axes[1]
    pods.plot(minutes, col("running"), label="running")
    pods.plot(minutes, col("pending"), label="pending")
    pods.set_ylabel("pods")
    rate = pods.twinx()
    rate.plot(minutes, col("pods_per_s"), color="tab:green", lw=0.8, label="placed/s")
    rate.set_ylabel("placed per second", color="tab:green")
    pods.legend(fontsize=7, loc="upper left")
    mem = axes[2]
    mem.plot(minutes, col("sched_rss_mib"), label="scheduler RSS")
    mem.set_ylabel("MiB")
    mem.set_xlabel("minute")
    mem.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def write_summary(result: Result, out: Path) -> Path:
    rows = result.rows
    steady = [r for r in rows if r["phase"] == "steady"] or rows

    def worst(key: str) -> float:
        values = [r[key] for r in steady if not math.isnan(r[key])]
        return max(values) if values else float("nan")

    growth = growth_per_hour(rows)
    load = [r["loadavg_1m"] for r in rows]
    pools = ", ".join(f"{k.removesuffix('_pods_per_s')} {v}/s" for k, v in result.rates.items()
                      if k.endswith("_pods_per_s") and k != "pods_per_s")
    warmup = result.config.get("warmup_min")
    warmup_min = float(warmup) if warmup not in (None, "None") else float(result.config["minutes"]) / 3
    lines = [
        "# Soak summary", "",
        f"Fleet: {result.config['nodes']} hollow nodes x {result.config['gpus_per_node']} GPUs; offered load "
        f"{result.config['load']} = {result.rates['pods_per_s']} pods/s "
        f"({pools}); "
        f"mean lifetime {result.rates['mean_lifetime_s'] / 60:.1f} min; expected population "
        f"{result.rates['expected_population']}; {result.config['minutes']} min, warm-up "
        f"{warmup_min:.0f} min.",
        f"Load average (1 min) during the run: min {min(load, default=float('nan')):.1f}, "
        f"max {max(load, default=float('nan')):.1f} (2 cores, shared).", "",
        "| figure (steady rows) | worst minute | target |", "|---|---|---|",
        f"| filter median, scheduler histogram (ms) | {worst('filter_srv_p50_ms')} | ≤ 2 |",
        f"| filter p99, scheduler histogram (ms) | {worst('filter_srv_p99_ms')} | ≤ 10 |",
        f"| filter median, driver round trip (ms) | {worst('filter_rt_p50_ms')} | — |",
        f"| filter p99, driver round trip (ms) | {worst('filter_rt_p99_ms')} | — |",
        f"| bind p99 (ms) | {worst('bind_p99_ms')} | — |",
        f"| binds sent to a node with a bind in flight (node-lock waits) per minute | {worst('lock_waits')} | — |",
        f"| binds slower than {LOCK_WAIT_S * 1000:.0f} ms per minute | {worst('binds_over_100ms')} | — |",
        f"| scheduler RSS (MiB) | {worst('sched_rss_mib')} | — |",
        f"| scheduler memory growth after warm-up (%/hour) | {growth:.2f} | ≤ 5 |", "",
        f"Pods: {result.counts}.", "",
        f"Invariants: {'all hold' if result.ok else 'VIOLATED'} — "
        f"{ {k: v for k, v in result.invariants.items() if k != 'violations'} }", "",
    ]
    for v in result.invariants.get("violations", [])[:50]:
        lines.append(f"- {v}")
    lines += ["", "Per minute: `timeseries.csv` (filter_srv_*: the scheduler's own histogram, interpolated within "
              "its buckets 0.5/1/2.5/5/10 ms; filter_rt_*: the driver's exact round trip, HTTP and JSON both "
              "sides included)."]
    if (out / "timeseries.csv").exists() and rows:
        try:
            plot(out / "timeseries.csv", out / "timeseries.png")
            lines.append("Curves: `timeseries.png`.")
        except ImportError:
            lines.append("(no plot: matplotlib, from the 'sim' extra, is not installed)")
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "result.json").write_text(json.dumps({"config": result.config, "rates": result.rates,
                                                  "counts": result.counts, "invariants": result.invariants,
                                                  "growth_pct_per_hour": growth}, indent=2, default=str))
    return path


# ----------------------------------------------------------------------------------------------
# helpers


def _tls(folder: Path) -> tuple[bytes, Path, Path]:
    """A CA and the scheduler's serving certificate (127.0.0.1), as the chart's cert job makes."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca.cert_pem.bytes(), cert_file, key_file


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    import ssl

    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2, context=ssl._create_unverified_context()) as answer:
            return answer.status == 200
    except OSError:
        return False


def _wait(predicate: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None,
          log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode} (log: {log_path})")
        time.sleep(0.2)
    raise RuntimeError(f"{what} not reached within {timeout:.0f}s" + (f" (log: {log_path})" if log_path else ""))


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hami.sim.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1250, help="hollow nodes (8 GPUs each by default)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=60.0, help="run length, arrivals included")
    parser.add_argument("--load", type=float, default=0.9, help="offered load per pool (0..1)")
    parser.add_argument("--lifetime-median", type=float, default=40.0, help="median pod lifetime, minutes")
    parser.add_argument("--lifetime-sigma", type=float, default=0.8, help="lognormal sigma of lifetimes")
    parser.add_argument("--patience", type=float, default=10.0, help="minutes a pod may wait before it is withdrawn")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between CSV rows")
    parser.add_argument("--scrape-every", type=int, default=1,
                        help="scrape the scheduler's /metrics every N rows (default 1; 20 MB at 10,000 GPUs, about "
                             "0.2 s of scheduler CPU each); the driver's timings fill every row")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up minutes (default: a third of the run)")
    parser.add_argument("--no-fill", action="store_true", help="start empty instead of at the stationary population")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-results/soak"), help="output folder")
    parser.add_argument("--plot-only", action="store_true",
                        help="draw timeseries.png from the timeseries.csv already in --out, and run nothing")
    args = parser.parse_args(argv)
    if args.plot_only:
        if not (args.out / "timeseries.csv").exists():
            parser.error(f"--plot-only: no {args.out / 'timeseries.csv'}; run a soak with --out {args.out} first")
        print(plot(args.out / "timeseries.csv", args.out / "timeseries.png"))
        return 0
    if args.nodes < 1 or not 0 < args.load <= 1.5 or args.minutes <= 0:
        parser.error("--nodes ≥ 1, 0 < --load ≤ 1.5 and --minutes > 0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)  # stop the scheduler process on the way out
    config = SoakConfig(nodes=args.nodes, gpus_per_node=args.gpus_per_node, minutes=args.minutes, load=args.load,
                        lifetime_median_min=args.lifetime_median, lifetime_sigma=args.lifetime_sigma,
                        patience_min=args.patience, sample_s=args.sample, scrape_every=max(1, args.scrape_every),
                        warmup_min=args.warmup, seed=args.seed,
                        out=args.out, fill=not args.no_fill)
    result = Soak(config, progress=lambda line: print(line, flush=True)).run()
    print((args.out / "summary.md").read_text(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

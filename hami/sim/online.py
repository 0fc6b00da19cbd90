"""The online protocol: Poisson arrivals, lognormal lifetimes, reject on arrival.

30 nodes × 8 A100-SXM4-80GB by default; 20,000 arrivals of which the first 20 % warm the
cluster up and are not measured. Offered load = arrival rate × mean lifetime × mean compute
slices (under the memory rule) ÷ total compute slices. Request mixes:

- ``openb``: openb default's single-GPU pods, share × 80 GB (a whole GPU stays whole);
- ``small``: the same pods with the fractional shares × 32 GB (small-instance heavy; a whole
  GPU stays whole, as scheduling-quality §6's A32 mapping keeps ``num_gpu=1, gpu_milli=1000``);
- ``uniform``: uniform over 10240, 20480, 40960, 81920 MiB.

A pod that ends leaves its instances idle (our agent destroys them lazily; HAMi's legacy
plugin never destroys them); under ``hami-v2.10`` they are destroyed at once, as HAMi v2.10's
device plugin does.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from hami.api.requests import ContainerRequest, Mode, Request
from hami.sim.runner import Cluster, Counters, policy_label
from hami.sim.traces import TracePod

MIXES = ("openb", "small", "uniform")
UNIFORM_MIB = (10240, 20480, 40960, 81920)
MEAN_LIFETIME = math.exp(0.5)  # lognormal(mu=0, sigma=1)


@dataclass
class OnlineResult:
    policy: str
    mix: str
    load: float
    seed: int
    measured: int  # arrivals after warm-up
    accepted: int
    arrived_slices: int
    accepted_slices: int
    utilisation: float  # time-averaged allocated slices / capacity, %
    counters: Counters

    @property
    def accepted_pct(self) -> float:
        return 100.0 * self.accepted / max(self.measured, 1)

    @property
    def accepted_demand_pct(self) -> float:
        return 100.0 * self.accepted_slices / max(self.arrived_slices, 1)

    def per_thousand(self, value: int) -> float:
        return 1000.0 * value / max(self.counters.placed, 1)


def mix_requests(mix: str, openb_pods: list[TracePod]) -> list[Request]:
    """The distinct requests of a mix, one entry per trace pod (so sampling keeps weights)."""
    if mix == "uniform":
        return [_request(mib) for mib in UNIFORM_MIB]
    if mix not in ("openb", "small"):
        raise ValueError(f"unknown request mix {mix!r}; choose one of {', '.join(MIXES)}")
    gb = 80 if mix == "openb" else 32
    out = []
    cache: dict[int, Request] = {}
    for pod in openb_pods:
        if pod.num_gpu != 1:
            continue
        if pod.gpu_milli == 1000:  # a whole GPU stays whole in both mixes
            key = -1
        else:
            key = math.ceil(pod.gpu_milli * gb * 1024 / 1000)
        if key not in cache:
            cache[key] = _request(key)
        out.append(cache[key])
    if not out:
        raise ValueError("the openb pod list has no single-GPU pods")
    return out


def _request(mib: int) -> Request:
    if mib < 0:
        return Request((ContainerRequest("main", 0, False, 1, memory_percent=100),), mode=Mode.MIG)
    return Request((ContainerRequest("main", 0, False, 1, memory_mib=mib),), mode=Mode.MIG)


def run_online(policy: str, mix: str, load: float, seed: int, openb_pods: list[TracePod],
               nodes: int = 30, gpus_per_node: int = 8, arrivals: int = 20_000, warmup: float = 0.2,
               model: str = "A100-SXM4-80GB", node_choice: str = "extender") -> OnlineResult:
    cluster = Cluster(policy, [gpus_per_node] * nodes, model, seed, node_choice)
    pool = mix_requests(mix, openb_pods)
    slices = np.array([cluster.slices(r) for r in pool], dtype=np.float64)
    mean_slices = float(slices.mean())
    rate = load * cluster.capacity / (MEAN_LIFETIME * mean_slices)
    rng = np.random.default_rng(seed)  # paired: the same sequence for every policy
    gaps = rng.exponential(1.0 / rate, arrivals)
    lives = rng.lognormal(0.0, 1.0, arrivals)
    picks = rng.integers(len(pool), size=arrivals)
    eager = policy_label(policy)[0] == "hami-v2.10"
    first = int(arrivals * warmup)
    departures: list[tuple[float, str]] = []
    now = 0.0
    measured = accepted = arrived_slices = accepted_slices = 0
    area = 0.0
    start_time = None
    base = None
    for i in range(arrivals):
        t = now + float(gaps[i])
        while departures and departures[0][0] <= t:
            when, uid = heapq.heappop(departures)
            if start_time is not None:
                area += cluster.allocated * (when - now)
            now = when
            cluster.finish(uid, destroy_idle=eager)
        if start_time is not None:
            area += cluster.allocated * (t - now)
        now = t
        if i == first:
            start_time = now
            base = _snapshot(cluster.counters)
        request = pool[int(picks[i])]
        uid = f"pod-{i}"
        ok = cluster.schedule(uid, request)
        if ok:
            heapq.heappush(departures, (now + float(lives[i]), uid))
        if i >= first:
            measured += 1
            need = cluster.slices(request)
            arrived_slices += need
            if ok:
                accepted += 1
                accepted_slices += need
    span = max(now - (start_time or 0.0), 1e-12)
    counters = _delta(cluster.counters, base) if base is not None else cluster.counters
    return OnlineResult(policy, mix, load, seed, measured, accepted, arrived_slices, accepted_slices,
                        100.0 * area / (span * cluster.capacity), counters)


def _snapshot(c: Counters) -> Counters:
    return Counters(c.placed, c.rejected, c.creates, c.reuses, c.destroys, c.geometry_changes, c.moves,
                    dict(c.causes))


def _delta(now: Counters, base: Counters) -> Counters:
    return Counters(
        now.placed - base.placed, now.rejected - base.rejected, now.creates - base.creates,
        now.reuses - base.reuses, now.destroys - base.destroys,
        now.geometry_changes - base.geometry_changes, now.moves - base.moves,
        {k: now.causes[k] - base.causes[k] for k in now.causes},
    )

"""The FGD fill-up protocol on openb, re-modelled as MIG (reference scheduling-quality §3, §7).

Pods are sampled with replacement from a pod list until the arrived demand reaches 130 % of
the cluster's compute slices; nothing departs; a pod that fits nowhere is dropped. After each
arrival we record arrived and allocated slices, so allocation can be read at any arrived %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hami.sim.runner import Cluster, Counters
from hami.sim.traces import TraceNode, TracePod, to_request

ARRIVED_POINTS = (50, 80, 90, 95, 100, 110, 130)


@dataclass
class FillupResult:
    policy: str
    seed: int
    capacity: int  # compute slices
    arrived: np.ndarray  # slices arrived after each arrival (cumulative)
    allocated: np.ndarray  # slices allocated after each arrival
    first_rejection: int  # index of the first rejected pod, -1 if none
    counters: Counters
    share_allocated: float = 0.0  # placed pods' original GPU shares, % of the cluster's GPUs

    def allocation_at(self, percent: float) -> float:
        """Allocated % of capacity when arrived demand first reaches ``percent`` %."""
        target = percent * self.capacity / 100
        i = int(np.searchsorted(self.arrived, target, side="left"))
        i = min(i, len(self.allocated) - 1)
        return 100.0 * float(self.allocated[i]) / self.capacity

    def first_failure_point(self) -> float:
        """Smallest arrived % at which allocation falls more than 1 point behind arrivals."""
        x = 100.0 * self.arrived / self.capacity
        a = 100.0 * self.allocated / self.capacity
        behind = np.flatnonzero(a < x - 1)
        return float(x[behind[0]]) if len(behind) else float("nan")


def run_fillup(policy: str, nodes: list[TraceNode], pods: list[TracePod], seed: int,
               model: str = "A100-SXM4-80GB", limit: float = 1.3, node_choice: str = "extender") -> FillupResult:
    cluster = Cluster(policy, [n.gpus for n in nodes], model, seed, node_choice)
    rng = np.random.default_rng(seed)
    memory = cluster.gpu_memory
    requests = {}
    arrived, allocated = [], []
    total = 0
    first_rejection = -1
    placed_milli = 0
    i = 0
    while total < limit * cluster.capacity:
        pod = pods[int(rng.integers(len(pods)))]
        key = (pod.num_gpu, pod.gpu_milli)
        request = requests.get(key)
        if request is None:
            request = requests[key] = to_request(pod, memory)
        total += cluster.slices(request)
        if cluster.schedule(f"pod-{i}", request):
            placed_milli += pod.num_gpu * pod.gpu_milli
        elif first_rejection < 0:
            first_rejection = i
        arrived.append(total)
        allocated.append(cluster.allocated)
        i += 1
    gpus = sum(n.gpus for n in nodes)
    return FillupResult(policy, seed, cluster.capacity, np.asarray(arrived), np.asarray(allocated),
                        first_rejection, cluster.counters, 100.0 * placed_milli / (1000 * gpus))

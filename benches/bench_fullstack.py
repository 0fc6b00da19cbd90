"""The whole stack under bursts: pods placed, bound and allocated per second, and API calls per pod.

The stack is `hami demo`'s (hami/sim/fullstack.py): the local API server, kube-scheduler driver
and kubelets in this process; `hami scheduler` (webhook over TLS, extender, metrics) and one
`hami device-plugin` per node as their own processes over simulated NVML; the demo's default
cluster (two 8-GPU MIG nodes, a 4 × A10 hami-core node, a node with two MIG and two hami-core
GPUs). A round submits a burst of `BURST` pods at once from 8 client threads — 60 % MIG (10 GB:
a 1g instance, `nvidia.com/vgpu-mode: mig`), 40 % hami-core shares (4 GB, 10 % cores) — and
ends when every one of them is Running (bound by our extender, admitted by the kubelet after our
agent's Allocate). Between rounds (not timed) the pods are deleted and the agents report their
instances idle, so later rounds reuse instances.

Reported per round: pods/s (target ≥ 50 on 2 cores) and the API requests our scheduler and agents
made per pod, counted at the local API server (the bench's own creates are subtracted; the
kube-scheduler driver and kubelets use the store in-process and are not counted, as they are
the same components on HAMi's path). HAMi's path for a one-container pod (reference
hami-behaviour §1.7–1.8): filter patches the pod (1); bind takes the node lock (get + patch the
node, 2), patches bind-phase (1) and posts the Binding (1); the plugin finds the pending pod
(get the node for its lock, get the pod, 2), patches the erased to-allocate entry (1) and
bind-phase=success (1), and releases the lock (get + patch the node, 2): 11 calls.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from hami.api import codecs, names
from hami.sim.cluster import parse_nodes
from hami.sim.demo import DEFAULT_NODES
from hami.sim.fullstack import Observer, Stack, pod_body

BURST = 100
HAMI_CALLS_PER_POD = 11
MIG = {names.RESOURCE_COUNT: "1", names.RESOURCE_MEMORY: "10240"}
CORE = {names.RESOURCE_COUNT: "1", names.RESOURCE_MEMORY: "4000", names.RESOURCE_CORES: "10"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(parse_nodes(DEFAULT_NODES), tmp_path_factory.mktemp("fullstack") / "stack",
               agent_sync_interval=5.0) as running:
        observer = Observer(running)
        yield running, observer
        observer.close()


def test_burst_throughput_and_api_calls_per_pod(benchmark, stack):
    running, observer = stack
    kube = running.kube
    rounds = iter(range(100))
    pool = ThreadPoolExecutor(8)
    per_pod: list[float] = []
    kinds: Counter = Counter()

    def clean():
        """Delete the last burst; wait until it is gone and every agent reports its instances idle."""
        live = [n for n, r in observer.pods.items() if r.gone is None]
        list(pool.map(lambda n: kube.delete("pods", n, "default"), live))
        assert observer.wait_for(lambda: all(observer.pods[n].gone is not None for n in live), 60)
        assert observer.wait_for(lambda: not any(i.state is codecs.InstanceState.IN_USE
                                                 for insts in observer.instances.values() for i in insts), 60)
        r = next(rounds)
        pods = [(f"b{r}-{i:03d}", MIG if i % 5 < 3 else CORE, "mig" if i % 5 < 3 else "hami-core")
                for i in range(BURST)]
        return (pods, running.calls.snapshot()), {}

    def burst(pods, before):
        list(pool.map(lambda p: kube.create("pods", pod_body(p[0], [p[1]], p[2]), "default"), pods))
        names_ = [p[0] for p in pods]
        done = observer.wait_for(lambda: all(observer.pods.get(n) and (observer.pods[n].running or
                                                                       observer.pods[n].failed) for n in names_), 120)
        assert done, "a burst did not run within 120 s"
        failed = [n for n in names_ if observer.pods[n].failed]
        assert not failed, [observer.pods[n].failed for n in failed]
        calls = running.calls.snapshot() - before
        calls[("POST", "pods")] -= len(pods)  # ours, not the stack's
        calls = Counter({k: v for k, v in calls.items() if v > 0 and k[0] != "WATCH"})
        kinds.update(calls)
        per_pod.append(sum(v for k, v in calls.items() if not k[1].endswith("(409 conflict)")) / len(pods))

    benchmark.group = f"full stack: bursts of {BURST} pods (demo cluster)"
    benchmark.extra_info.update(case="full-stack burst", impl="processes", gpus=24, pods=BURST)
    benchmark.pedantic(burst, setup=clean, rounds=3, iterations=1)
    pool.shutdown()
    rates = [BURST / s for s in benchmark.stats.stats.data]
    benchmark.extra_info["pods_per_s_median"] = round(sorted(rates)[len(rates) // 2], 1)
    benchmark.extra_info["api_calls_per_pod"] = round(sum(per_pod) / len(per_pod), 2)
    benchmark.extra_info["hami_path_calls_per_pod"] = HAMI_CALLS_PER_POD
    benchmark.extra_info["calls_by_kind"] = {f"{m} {r}": round(n / (BURST * len(per_pod)), 2)
                                             for (m, r), n in sorted(kinds.items())}
    print(f"\nfull stack: {benchmark.extra_info['pods_per_s_median']} pods/s placed, bound and allocated "
          f"(target >= 50); {benchmark.extra_info['api_calls_per_pod']} API calls a pod by our scheduler "
          f"and agents (HAMi's path: {HAMI_CALLS_PER_POD}); by kind: {benchmark.extra_info['calls_by_kind']}")
    assert all(n > 0 for n in per_pod)

"""Scheduler benchmarks: the extender over HTTP, bind against the local API server, the cache build.

- `/filter` and `/prioritize` over one kept-alive HTTP connection, JSON in and out, 1,250 nodes × 8
  GPUs (the node cycle of `bench_engine`), every name a candidate, a 1-GPU 10 GiB pod; targets
  ≤ 1 ms median each (p99 reported).
- `/bind` against the local API server: median, p99, and API calls per bind (target ≤ 3).
- The cache built from raw JSON lists (bytes, as the API server sends them) of 10,000 GPUs and
  50,000 pods carrying decisions: decode + fold into a fresh engine, target ≤ 3 s.
"""

from __future__ import annotations

import http.client
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from benches.bench_engine import GPUS_PER_NODE, NODE_CYCLE, request
from hami._core import Engine, GpuMode
from hami.api import codecs, names
from hami.api.pods import RequestDefaults
from hami.k8s import Kube
from hami.k8s.informer import gc_paused
from hami.scheduler import annotations as A
from hami.scheduler.binder import Binder
from hami.scheduler.cache import ClusterCache
from hami.scheduler.extender import Extender, decode_args
from hami.scheduler.metrics import SchedulerMetrics
from hami.scheduler.server import SchedulerHTTPServer
from hami.sim.apiserver import ApiServer

NODES = 1_250
PODS = 50_000
POD = {"metadata": {"name": "bench", "namespace": "default", "uid": "bench-uid", "annotations": {}},
       "spec": {"containers": [{"name": "main", "image": "cuda:12", "resources": {
           "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10240", "cpu": "4", "memory": "16Gi"}},
           "env": [{"name": f"VAR_{i}", "value": "x" * 40} for i in range(20)]}]}}


def node_objects(count: int) -> list[dict]:
    out = []
    for i in range(count):
        model, mode, mem = NODE_CYCLE[i % len(NODE_CYCLE)]
        mig = mode == GpuMode.MIG
        devs = [codecs.NodeDevice(f"GPU-{i:06d}-{j}", j, 7 if mig else 10, mem, 100, model,
                                  mode=names.MODE_MIG if mig else names.MODE_HAMI_CORE, health=True)
                for j in range(GPUS_PER_NODE)]
        out.append({"metadata": {"name": f"node-{i:06d}", "uid": f"node-uid-{i}", "resourceVersion": "1",
                                 "annotations": {names.NODE_REGISTER: codecs.encode_node_register(devs)}}})
    return out


def pod_objects(nodes: list[dict], pods: int) -> list[dict]:
    """Pods whose annotations record decisions a dense engine made (so they are all legal)."""
    engine = Engine()
    cache = ClusterCache(engine)
    for n in nodes:
        cache.node_event("upsert", n)
    reqs = {True: request(mem=5120), False: request(mem=2048)}
    out = []
    names_ = [n["metadata"]["name"] for n in nodes]
    kinds = [NODE_CYCLE[i % len(NODE_CYCLE)][1] == GpuMode.MIG for i in range(len(nodes))]
    open_nodes = list(range(len(nodes)))
    now = time.time()
    while len(out) < pods and open_nodes:
        still = []
        for i in open_nodes:
            if len(out) == pods:
                break
            uid = f"pod-uid-{len(out)}"
            decision = engine.decide_and_reserve(uid, reqs[kinds[i]], names_[i])
            if not hasattr(decision, "containers"):
                continue
            ann = A.decision_annotations(decision, cache.gpu_types(names_[i]), datetime.fromtimestamp(now, UTC))
            ann[names.BIND_PHASE] = names.BIND_PHASE_SUCCESS
            out.append({"metadata": {"name": f"pod-{len(out)}", "namespace": "default", "uid": uid,
                                     "annotations": ann},
                        "spec": {"nodeName": names_[i], "containers": [{"name": "main"}]},
                        "status": {"phase": "Running"}})
            still.append(i)
        open_nodes = still
    return out


@pytest.fixture(scope="module")
def lists():
    nodes = node_objects(NODES)
    pods = pod_objects(nodes, PODS)
    return (json.dumps({"kind": "NodeList", "items": nodes}).encode(),
            json.dumps({"kind": "PodList", "items": pods}).encode())


def test_cache_build_from_raw_lists(benchmark, lists):
    """10,000 GPUs and 50,000 pods: JSON bytes decoded and folded into a fresh engine (target ≤ 3 s)."""
    node_bytes, pod_bytes = lists
    decode = msgspec.json.Decoder().decode
    benchmark.group = "scheduler cache build (10,000 GPUs, 50,000 pods)"
    benchmark.extra_info.update(case="cache build 10k GPUs 50k pods", impl="compiled", gpus=NODES * GPUS_PER_NODE,
                                node_bytes=len(node_bytes), pod_bytes=len(pod_bytes))

    def build():  # what the informers do at start: list, then hand every item over with GC paused
        cache = ClusterCache(Engine())
        with gc_paused():
            for n in decode(node_bytes)["items"]:
                cache.node_event("upsert", n)
            for p in decode(pod_bytes)["items"]:
                cache.pod_event("upsert", p)
        return cache

    cache = benchmark.pedantic(build, rounds=3, iterations=1)
    held = sum(len(v["in_use"]) for v in cache.engine.snapshot().values() if v["kind"] == "mig")
    assert held > 0


@pytest.fixture(scope="module")
def http_extender(lists):
    node_bytes, _ = lists
    cache = ClusterCache(Engine())
    for n in msgspec.json.decode(node_bytes)["items"]:
        cache.node_event("upsert", n)
    cache.nodes_synced.set()
    cache.pods_synced.set()
    metrics = SchedulerMetrics(cache.engine, cache)  # as in production: filter counts outcomes and reasons
    extender = Extender(cache.engine, cache, None, RequestDefaults(), metrics=metrics)
    server = SchedulerHTTPServer(("127.0.0.1", 0), {"/filter": extender.filter, "/prioritize": extender.prioritize},
                                 ready=lambda: (True, ""),
                                 decoders={"/filter": decode_args, "/prioritize": decode_args}).start()
    names_ = [n["metadata"]["name"] for n in msgspec.json.decode(node_bytes)["items"]]
    yield server, {pod["metadata"]["name"]: json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names_}).encode()
                   for pod in (POD, REJECTED_POD)}
    server.stop()


# A pod no node can hold (more memory than any MIG profile): every node is rejected with a reason,
# the per-node work of a busy cluster, where nearly every node rejects nearly every pod.
REJECTED_POD = {**POD, "metadata": {**POD["metadata"], "name": "rejected", "uid": "rejected-uid"},
                "spec": {"containers": [{**POD["spec"]["containers"][0], "resources": {
                    "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "900000"}}}]}}


@pytest.mark.parametrize(("verb", "pod"), [("filter", "bench"), ("prioritize", "bench"), ("filter", "rejected")])
def test_http_verb(benchmark, http_extender, verb, pod):
    server, bodies = http_extender
    body = bodies[pod]
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    benchmark.group = f"/{verb} over HTTP, {NODES:,} nodes x 8 GPUs"
    case = f"/{verb} http {NODES} nodes" + (", every node rejects" if pod == "rejected" else "")
    benchmark.extra_info.update(case=case, impl="compiled", gpus=NODES * GPUS_PER_NODE)

    def call():
        conn.request("POST", f"/{verb}", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200
        return data

    data = benchmark.pedantic(call, rounds=500, iterations=1, warmup_rounds=10)
    samples = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["p99_us"] = round(samples[int(len(samples) * 0.99) - 1] * 1e6, 1)
    assert json.loads(data)
    conn.close()


def test_bind_against_the_local_api_server(benchmark, tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("bind")
    api = ApiServer().start()
    kube = Kube.connect(api.write_kubeconfig(tmp / "kubeconfig"))
    cache = ClusterCache(Engine())
    for n in node_objects(8):
        n["metadata"].pop("resourceVersion")
        n["metadata"].pop("uid")
        cache.node_event("upsert", kube.create("nodes", n))
    cache.nodes_synced.set()
    cache.pods_synced.set()
    binder = Binder(cache.engine, cache, kube, RequestDefaults())
    counter = iter(range(10**6))
    pods: list[tuple[dict, str]] = []
    mig_nodes = [f"node-{i:06d}" for i in range(8) if NODE_CYCLE[i % len(NODE_CYCLE)][1] == GpuMode.MIG]

    def setup():
        i = next(counter)
        body = json.loads(json.dumps(POD))
        body["metadata"] = {"name": f"p{i}", "namespace": "default"}
        created = kube.create("pods", body, "default")
        node = mig_nodes[i % len(mig_nodes)]
        current = kube.get("nodes", node)  # the agent released the last pod's lock
        if (current["metadata"].get("annotations") or {}).get(names.NODE_LOCK):
            current = kube.patch("nodes", node, {"metadata": {"annotations": {names.NODE_LOCK: None}}})
        cache.node_event("upsert", current)
        pods.append((created, node))
        return (created, node), {}

    def bind(created, node):
        meta = created["metadata"]
        binder.bind(meta["namespace"], meta["name"], meta["uid"], node, created)

    before = binder.api_calls
    benchmark.group = "bind against the local API server"
    benchmark.extra_info.update(case="bind", impl="compiled", gpus=64)
    benchmark.pedantic(bind, setup=setup, rounds=60, iterations=1)
    per_bind = (binder.api_calls - before) / 60
    samples = sorted(benchmark.stats.stats.data)
    benchmark.extra_info["api_calls_per_bind"] = per_bind
    benchmark.extra_info["p99_us"] = round(samples[-1] * 1e6, 1)
    for created, _node in pods:
        assert kube.get("pods", created["metadata"]["name"], "default")["spec"]["nodeName"]
    assert per_bind <= 3
    kube.close()
    api.stop()

"""Every PromQL expression of the chart's Grafana dashboard returns data from a real Prometheus that
scrapes a running `hami scheduler` while pods are filtered and bound through its HTTP verbs (the
scheduler's local test harness: a MIG node with a running 3g.40gb instance and a hami-core node).
As tests/scheduler/test_sched_prometheus.py, this skips only where Prometheus is not installed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from hami.api import names
from hami.scheduler.app import Scheduler
from tests.chart.conftest import CHART
from tests.chart.pods import free_port
from tests.scheduler.conftest import local_scheduler, wait_for

pytestmark = pytest.mark.skipif(
    not shutil.which("prometheus"),
    reason="Prometheus is not installed: `apt-get install prometheus` (.ci/run does) for these tests")

DASHBOARD = json.loads((CHART / "dashboards" / "hami-mig.json").read_text())


def expressions() -> list[tuple[str, str]]:
    """(panel title, expr) for every target, Grafana's variables as a dashboard opened on all nodes
    would send them."""
    out = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$node", ".*")
            out.append((panel["title"], expr))
    return out


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"},
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def place(scheduler: Scheduler, name: str, limits: dict[str, str], mode: str) -> str:
    """Create a GPU pod and run it through filter, prioritize and bind as kube-scheduler would; then
    release the node lock as the agent would after Allocate. Returns the node."""
    kube, url = scheduler.kube, scheduler.server.url
    pod = kube.create("pods", {"metadata": {"name": name, "annotations": {names.VGPU_MODE: mode}},
                               "spec": {"schedulerName": names.SCHEDULER_NAME,
                                        "containers": [{"name": "c", "image": "cuda",
                                                        "resources": {"limits": limits}}]}}, "default")
    args = {"Pod": pod, "NodeNames": ["mig-a", "core-a"]}
    fit = _post(f"{url}/filter", args)
    assert fit["NodeNames"], fit  # the other node is rejected, with a reason (the rejections panel)
    _post(f"{url}/prioritize", {**args, "NodeNames": fit["NodeNames"]})
    node = fit["NodeNames"][0]
    meta = pod["metadata"]
    result = _post(f"{url}/bind", {"PodName": name, "PodNamespace": "default", "PodUID": meta["uid"], "Node": node})
    assert result.get("Error", "") == "", result
    kube.annotate("nodes", node, {names.NODE_LOCK: None})
    return node


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dash")
    metrics_port = free_port()
    with local_scheduler(tmp, metrics_bind=f"127.0.0.1:{metrics_port}") as scheduler:
        config = tmp / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
                          f"- job_name: hami-scheduler\n  static_configs:\n  - targets: ['127.0.0.1:{metrics_port}']\n")
        port = free_port()
        process = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"))
        api = f"http://127.0.0.1:{port}/api/v1/query?query="
        try:
            wait_for(lambda: _query(api, "up{job='hami-scheduler'} == 1"), 60, "Prometheus scraping the scheduler")
            # traffic after the first scrapes, spread over several, so rates and quantiles have data
            for i in range(3):
                place(scheduler, f"mig-{i}", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "10000"}, "mig")
                place(scheduler, f"core-{i}", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "4000"}, "hami-core")
                time.sleep(1.0)
            time.sleep(2.5)  # two more scrapes after the last bind
            yield api
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _query(api: str, expr: str) -> list[dict[str, Any]]:
    try:
        body = json.loads(urllib.request.urlopen(api + urllib.parse.quote(expr), timeout=5).read())
    except OSError:
        return []
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.parametrize(("title", "expr"), expressions(), ids=[f"{t}: {e[:40]}" for t, e in expressions()])
def test_every_dashboard_query_returns_data(prometheus: str, title: str, expr: str) -> None:
    result = _query(prometheus, expr)
    assert result, f"panel {title!r}: no data for {expr}"
    values = [float(sample["value"][1]) for sample in result]
    assert any(not math.isnan(v) for v in values), f"panel {title!r}: only NaN for {expr}"


def test_the_mig_panels_show_the_clusters_instances(prometheus: str) -> None:
    by_title = dict(expressions())
    per_gpu = _query(prometheus, by_title["Realised MIG instances per GPU, by profile"])
    assert {(s["metric"]["node"], s["metric"]["profile"]) for s in per_gpu} >= {("mig-a", "3g.40gb")}
    states = {s["metric"]["state"]: float(s["value"][1])
              for s in _query(prometheus, by_title["MIG instances in use vs idle"])}
    assert states.get("in-use", 0) >= 1
    kinds = {s["metric"]["kind"] for s in _query(prometheus, by_title["Pods bound with devices, by kind"])}
    assert kinds == {"mig", "hami-core"}


def test_the_dashboard_is_well_formed() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and DASHBOARD["uid"] == "hami-mig"
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} == {"datasource", "node"}
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"

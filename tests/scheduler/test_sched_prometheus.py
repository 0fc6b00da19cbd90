"""The scheduler's metrics through real Prometheus tools: `promtool check metrics` finds no problem
in our own families, and a real Prometheus scrapes the endpoint over loopback and answers PromQL
about the realised MIG instances. `.ci/run` installs Debian's `prometheus` package; elsewhere these
tests skip, saying how to get it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami.api import codecs, names
from hami.k8s import Kube
from hami.scheduler.app import Scheduler, SchedulerConfig
from hami.sim.apiserver import ApiServer
from tests.scheduler.conftest import devices, node_body, wait_for

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("promtool")),
    reason="Prometheus is not installed: `apt-get install prometheus` (.ci/run does) for these tests")

# HAMi-compatibility names we must keep as HAMi spells them, whatever promtool thinks of them
EXEMPT = {"hami_gpu_shared_count",  # HAMi v2.9+'s own name (promtool dislikes a gauge ending in _count)
          "nodeGPUMigInstance", "GPUDeviceMemoryLimit", "GPUDeviceCoreLimit", "GPUDeviceMemoryAllocated",
          "GPUDeviceSharedNum", "GPUDeviceCoreAllocated", "nodeGPUMemoryPercentage"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prom")
    api = ApiServer().start()
    kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
    kube = Kube.connect(kubeconfig)
    report = [codecs.RealisedInstance("GPU-a-0", "3g.40gb", codecs.Placement(4, 4), 2, 0,
                                      "MIG-00000000-0000-0000-0000-00000000000a", codecs.InstanceState.IN_USE,
                                      pod="default/runner")]
    kube.create("nodes", node_body("mig-a", devices("a", 1),
                                   **{names.NODE_MIG_INSTANCES: codecs.encode_node_mig_instances(report)}))
    port = _free_port()
    scheduler = Scheduler(SchedulerConfig(kubeconfig=str(kubeconfig), http_bind="127.0.0.1:0",
                                          metrics_bind=f"127.0.0.1:{port}")).start()
    wait_for(lambda: scheduler.ready()[0] and scheduler.cache.has_gpus("mig-a"), what="scheduler ready")
    yield f"http://127.0.0.1:{port}/metrics"
    scheduler.stop()
    kube.close()
    api.stop()


def test_promtool_finds_no_problem_in_our_families(metrics_url: str) -> None:
    text = urllib.request.urlopen(metrics_url, timeout=5).read()
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    problems = [line for line in (result.stdout + result.stderr).decode().splitlines()
                if line.strip() and line.split()[0] not in EXEMPT]
    assert problems == [], problems


def test_a_real_prometheus_scrapes_the_realised_instances(metrics_url: str, tmp_path: Path) -> None:
    target = metrics_url.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      f"scrape_configs:\n- job_name: hami-scheduler\n  static_configs:\n  - targets: ['{target}']\n")
    port = _free_port()
    process = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    try:
        def query() -> list:
            url = f"http://127.0.0.1:{port}/api/v1/query?query=hami_node_gpu_mig_instance_info"
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=2).read())
            except OSError:
                return []
            return body["data"]["result"]

        (sample,) = wait_for(query, 60, "Prometheus to scrape the scheduler")
        labels = sample["metric"]
        assert labels["mig_uuid"] == "MIG-00000000-0000-0000-0000-00000000000a"
        assert labels["profile"] == "3g.40gb" and labels["placement_start"] == "4" and labels["node"] == "mig-a"
        assert sample["value"][1] == "1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            time.sleep(0.1)

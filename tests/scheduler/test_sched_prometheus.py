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

from tests.scheduler.conftest import RUNNER_MIG_UUID, local_scheduler, wait_for

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
    port = _free_port()
    with local_scheduler(tmp_path_factory.mktemp("prom"), metrics_bind=f"127.0.0.1:{port}"):
        yield f"http://127.0.0.1:{port}/metrics"


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
        assert labels["mig_uuid"] == RUNNER_MIG_UUID
        assert labels["profile"] == "3g.40gb" and labels["placement_start"] == "4" and labels["node"] == "mig-a"
        assert sample["value"][1] == "1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            time.sleep(0.1)

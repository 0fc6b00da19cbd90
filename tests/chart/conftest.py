"""The chart rendered by the real Helm engine (helm-python-sdk bundles Helm's Go SDK; no helm binary)
and small helpers over the rendered objects. Rendering is memoised per values: the engine call is
cheap (~10 ms) but many tests read the same release."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

# the scheduler suite's `plane` fixture (embedded or the real control plane) for test_chart_webhook.py
from tests.scheduler.conftest import _real_session, plane, pytest_runtest_makereport  # noqa: F401

CHART = Path(__file__).resolve().parents[2] / "charts" / "hami"
RELEASE, NAMESPACE = "hami", "kube-system"

# The overrides every render-level test runs over (the issue's list), by name.
OVERRIDES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "webhook-off": {"admissionWebhook": {"enabled": False}},
    "cert-manager": {"admissionWebhook": {"certManager": {"enabled": True}}},
    "cert-manager-issuer": {"admissionWebhook": {"certManager": {
        "enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "ca"}}}},
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "dashboard": {"dashboard": {"enabled": True}},
    "libvgpu-off": {"devicePlugin": {"libvgpuInstaller": {"enabled": False}}},
    "one-replica-clusterip-nvml-host": {"scheduler": {"replicas": 1, "metrics": {"service": {"type": "ClusterIP"}}},
                                        "devicePlugin": {"nvmlLibraryHostPath": "/usr/lib/x86_64-linux-gnu",
                                                         "privileged": True, "runtimeClassName": "nvidia"}},
}


@functools.cache
def _load() -> helm.Chart:
    return helm.Chart.load(CHART)


@functools.cache
def _render(values_json: str, name: str, namespace: str) -> tuple[tuple[str, str], ...]:
    out = _load().render(json.loads(values_json), name=name, namespace=namespace)
    return tuple(sorted(out.items()))


def render_files(values: Mapping[str, Any] | None = None, *, name: str = RELEASE,
                 namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template` would print them."""
    return dict(_render(json.dumps(values or {}, sort_keys=True), name, namespace))


def render(values: Mapping[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt and empty documents left out)."""
    objects = []
    for path, text in render_files(values, **kw).items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template__", path)  # where it came from, for failure messages
                objects.append(doc)
    return objects


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__template__"}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in hits]}"
    return hits[0]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def configmap_data(objects: list[dict[str, Any]], name: str, key: str) -> str:
    return find(objects, "ConfigMap", name)["data"][key]


@pytest.fixture(autouse=True, scope="session")
def _schema_files_read_once() -> None:
    """kubernetes-validate re-reads its schema files (the definitions file is megabytes) for every
    object; memoising the reader keeps the schema tests fast. The schemas themselves are unchanged."""
    from kubernetes_validate import utils

    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)

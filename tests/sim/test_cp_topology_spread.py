"""The kube-scheduler stand-in's PodTopologySpread filter (DoNotSchedule), case by case; the end-to-end
check that it agrees with the real kube-scheduler is tests/scheduler/test_sched_e2e.py."""

from __future__ import annotations

from typing import Any

from hami.sim.kubescheduler import _TopologySpread

ZONE = "topology.kubernetes.io/zone"
SKEWED = "node(s) didn't match pod topology spread constraints"


def _node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}}}


def _pod(node: str = "", namespace: str = "ns", app: str = "web", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": namespace, "labels": {"app": app, "rev": "1"}}
    return {"metadata": meta, "spec": {"nodeName": node, **spec}, "status": {"phase": "Running"}}


def _constraint(**extra: Any) -> dict[str, Any]:
    return {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}, **extra}


NODES = [_node("a1", **{ZONE: "a"}), _node("b1", **{ZONE: "b"}), _node("bare")]


def _reasons(pod: dict[str, Any], assigned: list[dict[str, Any]], nodes=NODES) -> dict[str, str | None]:
    spread = _TopologySpread(pod, nodes, assigned)
    return {n["metadata"]["name"]: spread.reason(n) for n in nodes}


def test_the_skew_counts_matching_pods_per_domain_and_a_node_without_the_key_fails() -> None:
    pod = _pod(topologySpreadConstraints=[_constraint()])
    reasons = _reasons(pod, [_pod("a1")])
    assert reasons == {"a1": SKEWED, "b1": None, "bare": f"{SKEWED} (missing required label)"}
    assert _reasons(pod, [_pod("a1"), _pod("b1")]) == {"a1": None, "b1": None,
                                                        "bare": f"{SKEWED} (missing required label)"}


def test_pods_of_other_namespaces_labels_or_finished_or_terminating_do_not_count() -> None:
    pod = _pod(topologySpreadConstraints=[_constraint()])
    ignored = [_pod("a1", namespace="other"), _pod("a1", app="db"),
               {**_pod("a1"), "status": {"phase": "Succeeded"}},
               {**_pod("a1"), "metadata": {**_pod("a1")["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}]
    assert _reasons(pod, ignored)["a1"] is None


def test_schedule_anyway_is_not_a_filter_and_min_domains_counts_missing_domains_as_zero() -> None:
    assert _reasons(_pod(topologySpreadConstraints=[_constraint(whenUnsatisfiable="ScheduleAnyway")]),
                    [_pod("a1")] * 5)["a1"] is None
    # two domains exist, three wanted: the global minimum is 0, so even the emptier zone may take at most 1
    pod = _pod(topologySpreadConstraints=[_constraint(minDomains=3)])
    assert _reasons(pod, [_pod("a1"), _pod("b1")]) == {"a1": SKEWED, "b1": SKEWED,
                                                        "bare": f"{SKEWED} (missing required label)"}


def test_node_affinity_limits_the_domains_and_match_label_keys_narrow_the_selector() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["a"]}]}]}}}
    # zone b is outside the pod's affinity: not a domain, so zone a alone sets the minimum
    assert _reasons(_pod(affinity=affinity, topologySpreadConstraints=[_constraint()]), [_pod("a1")])["a1"] is None
    other_revision = {**_pod("a1"), "metadata": {**_pod("a1")["metadata"], "labels": {"app": "web", "rev": "0"}}}
    keyed = _pod(topologySpreadConstraints=[_constraint(matchLabelKeys=["rev"])])
    assert _reasons(keyed, [other_revision])["a1"] is None
    assert _reasons(keyed, [_pod("a1")])["a1"] == SKEWED

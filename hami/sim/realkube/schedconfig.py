"""KubeSchedulerConfiguration (`kubescheduler.config.k8s.io/v1`) for a SchedulerConfig.

One source for both planes: the embedded plane's kube-scheduler stand-in takes a SchedulerConfig
(hami.sim.kubescheduler) as it is; the real kube-scheduler reads the document rendered here from
the same object. So `SchedulerConfig(extenders=(hami_extender(url),))` (hami.sim.cluster) is the
configuration HAMi's chart ships, on either plane (field list: reference §1.5, chart: §1.6).

What the real file cannot say: backoffs are whole seconds (rounded up, at least 1);
`max_unschedulable_seconds` and `seed` have no configuration field; `default_profile` is served
by a second, extender-less kube-scheduler (RealPlane), as a cluster's own scheduler would.
"""

from __future__ import annotations

import math
from typing import Any

from hami.sim.kubescheduler import ExtenderConfig, SchedulerConfig

API_VERSION = "kubescheduler.config.k8s.io/v1"
LEASE_NAMESPACE = "kube-system"


def kube_scheduler_configuration(config: SchedulerConfig, *, kubeconfig: str | None = None,
                                 leader_elect: bool = True) -> dict[str, Any]:
    """The configuration document for `kube-scheduler --config`, as a dict (dump it as YAML or JSON)."""
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "KubeSchedulerConfiguration",
        "leaderElection": {"leaderElect": leader_elect, "resourceLock": "leases",
                           "resourceName": config.scheduler_name, "resourceNamespace": LEASE_NAMESPACE},
        "profiles": [{"schedulerName": config.scheduler_name}],
        "podInitialBackoffSeconds": _whole_seconds(config.initial_backoff),
        "podMaxBackoffSeconds": _whole_seconds(config.max_backoff),
    }
    if kubeconfig:
        doc["clientConnection"] = {"kubeconfig": kubeconfig}
    if config.extenders:
        doc["extenders"] = [extender_stanza(e) for e in config.extenders]
    return doc


def extender_stanza(extender: ExtenderConfig) -> dict[str, Any]:
    """One `extenders[]` entry; empty verbs are left out (= not implemented), as in the chart."""
    https = extender.url_prefix.startswith("https://")
    stanza: dict[str, Any] = {"urlPrefix": extender.url_prefix}
    for key, verb in (("filterVerb", extender.filter_verb), ("prioritizeVerb", extender.prioritize_verb),
                      ("bindVerb", extender.bind_verb)):
        if verb:
            stanza[key] = verb
    stanza["weight"] = extender.weight
    stanza["enableHTTPS"] = https
    if https:
        stanza["tlsConfig"] = {"insecure": extender.tls_insecure}
    if extender.http_timeout:
        stanza["httpTimeout"] = f"{extender.http_timeout:g}s"
    stanza["nodeCacheCapable"] = extender.node_cache_capable
    if extender.managed_resources:
        stanza["managedResources"] = [{"name": m.name, "ignoredByScheduler": m.ignored_by_scheduler}
                                      for m in extender.managed_resources]
    stanza["ignorable"] = extender.ignorable
    return stanza


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))

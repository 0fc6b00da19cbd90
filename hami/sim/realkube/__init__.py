"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-scheduler built from
source by `make kube` (hack/kube), for tests and demos that must hold against Kubernetes itself
rather than our embedded API-server subset (docs/real-kubernetes.md).

binaries: where `make kube` put the binaries, and why they may be missing.
pki: CA, serving and client certificates, the service-account key, tokens and kubeconfigs.
schedconfig: the KubeSchedulerConfiguration for a scheduler config (the chart's, extender included).
process: one child process with its log, started and stopped cleanly.
plane: the three processes together, with RBAC and namespaces a cluster would have.
store: the embedded plane's Store interface over HTTP, so hami.sim.kubelet runs against it unchanged.
"""

from hami.sim.realkube.binaries import Binaries, BinariesMissing, find_binaries
from hami.sim.realkube.plane import RealPlane, RealPlaneError
from hami.sim.realkube.schedconfig import kube_scheduler_configuration

__all__ = [
    "Binaries",
    "BinariesMissing",
    "RealPlane",
    "RealPlaneError",
    "find_binaries",
    "kube_scheduler_configuration",
]

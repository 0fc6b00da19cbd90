"""A Kubernetes-API-compatible server subset for the local control plane (in memory, on loopback).

Serves discovery, nodes, pods (status, binding), configmaps, events, namespaces and
coordination.k8s.io leases with the real server's semantics where clients can tell: resource
versions, optimistic concurrency, selectors, three patch types, graceful pod deletion, watches
with resumption, bookmarks and 410, Status errors. The official `kubernetes` client and kubectl
use it unchanged through the kubeconfig it writes. Test and simulation code only: production
code never imports it.

Modules: `store` (objects, versions, semantics), `watch` (event log and watcher queues),
`server` (HTTP routing and streaming), `patching`, `selectors`, `printing` (kubectl tables),
`resources` (served types and discovery), `errors` (Status errors).
"""

from hami.sim.apiserver.errors import StatusError
from hami.sim.apiserver.server import ApiServer
from hami.sim.apiserver.store import Store, set_condition
from hami.sim.apiserver.watch import Watcher

__all__ = ["ApiServer", "StatusError", "Store", "Watcher", "set_condition"]

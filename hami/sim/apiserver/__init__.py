"""A Kubernetes-API-compatible server subset for the local control plane (in memory, on loopback).

Serves discovery, OpenAPI, nodes, pods (status, binding), configmaps, events, namespaces,
coordination.k8s.io leases and mutating webhook configurations with the real server's semantics
where clients can tell: typed decoding with canonical quantities, validation, mutating admission
webhooks, dry runs, resource versions, optimistic concurrency, selectors, three patch types,
graceful pod deletion, owner-reference garbage collection, past lists, watches with resumption,
bookmarks, Tables and 410, Status errors, and an HTTP layer that keeps kept-alive connections in
step. The official `kubernetes` client and kubectl use it unchanged through the kubeconfig it
writes. Test and simulation code only: production code never imports it.

Modules: `store` (objects, versions, semantics), `watch` (event log and watcher queues),
`server` (HTTP parsing, routing and streaming), `schema` (the served types, from the official
client's models), `quantities`, `validation` (defaulting and validation), `admission`
(webhooks), `openapi`, `patching`, `selectors`, `printing` (kubectl tables), `events` (the event
recorder), `resources` (served types and discovery), `errors` (Status errors).
"""

from hami.sim.apiserver.errors import StatusError
from hami.sim.apiserver.server import ApiServer
from hami.sim.apiserver.store import Store, set_condition
from hami.sim.apiserver.watch import Watcher

__all__ = ["ApiServer", "StatusError", "Store", "Watcher", "set_condition"]

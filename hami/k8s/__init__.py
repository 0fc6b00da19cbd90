"""The one place that talks to the Kubernetes API (official `kubernetes` client).

Small and generic: get, list, merge-patch with optimistic concurrency and conflict retry,
create, delete, events, leases, on plain-dict objects with typed errors (`NotFound`,
`Conflict`). Knows nothing of GPUs or annotations; the scheduler and the node agent build on it.
Imports `kubernetes` only.
"""

from hami.k8s.client import Conflict, CredentialsError, Kube, KubeError, NotFound, Obj

__all__ = ["Conflict", "CredentialsError", "Kube", "KubeError", "NotFound", "Obj"]

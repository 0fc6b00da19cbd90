"""Posting a pod's Binding (what a scheduler extender with a bind verb must do itself)."""

from __future__ import annotations

from kubernetes import client

from hami.k8s.client import Kube, _error


def bind_pod(kube: Kube, namespace: str, name: str, uid: str, node: str) -> None:
    """POST pods/{name}/binding; the uid precondition makes a recreated namesake fail, not bind."""
    body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
    api = client.CoreV1Api(kube.api_client)
    try:
        api.create_namespaced_pod_binding(name, namespace, body, _preload_content=False,
                                          _request_timeout=kube.timeout)
    except Exception as exc:  # ApiException, or the transport's
        raise _error(f"bind pod {namespace}/{name} to {node}", exc) from exc

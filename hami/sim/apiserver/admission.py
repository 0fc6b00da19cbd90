"""Mutating admission webhooks, called as kube-apiserver's MutatingAdmissionWebhook plugin calls them.

For each write (CREATE, UPDATE, DELETE; subresources included) the store asks this module
before validation. Every `MutatingWebhookConfiguration` (by name) and every webhook in it (in
order) is considered:
- `rules` (operations, apiGroups, apiVersions, resources with `*`, `pods/*`, `*/*`, scope),
  `namespaceSelector` (the namespace's labels; a Namespace object matches on its own) and
  `objectSelector` (the object's or the old object's labels) decide whether it is called;
  configurations themselves are never sent to webhooks;
- the call is an `admission.k8s.io` AdmissionReview (the first of the webhook's
  `admissionReviewVersions` we speak: v1 or v1beta1) POSTed to `clientConfig.url?timeout=Ns`
  over TLS verified against `caBundle` (the system roots without one), with `timeoutSeconds`;
- `allowed: false` rejects the request with the webhook's status (at least 400), worded
  `admission webhook "<name>" denied the request: <message>`; a `JSONPatch` is applied and the
  next webhook sees the patched object; warnings become `Warning` headers;
- a webhook that cannot be called or answers nonsense follows `failurePolicy`: `Ignore` skips
  it, `Fail` fails the request with 500 `failed calling webhook "<name>": ...`;
- `reinvocationPolicy: IfNeeded` webhooks are called once more when a later webhook changed
  the object; a dry run is refused (400) by webhooks whose `sideEffects` are not None/NoneOnDryRun.

Not modelled: `clientConfig.service` (there is no Service network: such a webhook cannot be
called and follows its failurePolicy), `matchConditions` (CEL; ignored, so the webhook is
called), `matchPolicy: Equivalent` beyond exact group/version matches, validating webhooks.
"""

from __future__ import annotations

import base64
import binascii
import copy
import http.client
import json
import logging
import ssl
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit

from hami.sim.apiserver import errors, patching, selectors
from hami.sim.apiserver.resources import Resource
from hami.sim.apiserver.store import Admission, AdmissionAttributes, Store

log = logging.getLogger(__name__)

CONFIGS = "mutatingwebhookconfigurations"
REVIEW_VERSIONS = ("v1", "v1beta1")
USER = {"username": "hami-sim", "uid": "", "groups": ["system:masters", "system:authenticated"]}


class CallError(Exception):
    """The webhook could not be called or its answer could not be used (failurePolicy decides)."""


def _resource_matches(pattern: str, plural: str, subresource: str) -> bool:
    """A rule's resource pattern: "pods", "pods/status", "*" (no subresources), "pods/*", "*/status", "*/*"."""
    wanted = f"{plural}/{subresource}" if subresource else plural
    if pattern in ("*/*", wanted):
        return True
    if not subresource:
        return pattern == "*"
    head, _, tail = pattern.partition("/")
    return (head == plural and tail == "*") or (head == "*" and tail == subresource)


def _rule_matches(rule: dict[str, Any], attrs: AdmissionAttributes) -> bool:
    res = attrs.resource
    operations = rule.get("operations") or []
    if "*" not in operations and attrs.operation not in operations:
        return False
    if not ({"*", res.group} & set(rule.get("apiGroups") or [])):
        return False
    if not ({"*", res.version} & set(rule.get("apiVersions") or [])):
        return False
    if not any(_resource_matches(p, res.plural, attrs.subresource) for p in rule.get("resources") or []):
        return False
    scope = rule.get("scope") or "*"
    return scope == "*" or (scope == "Namespaced") == res.namespaced


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _selects(selector: Any, labels: dict[str, str]) -> bool:
    requirements = selectors.from_label_selector(selector)
    return all(r.matches(labels) for r in requirements)


class WebhookAdmission(Admission):
    """Calls the MutatingWebhookConfigurations stored in `store` (module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._transport = _Transport()

    def _hooks(self) -> list[dict[str, Any]]:
        configs = self.store.list(CONFIGS)["items"]
        return [hook for config in sorted(configs, key=lambda c: c["metadata"]["name"])
                for hook in config.get("webhooks") or []]

    def wants(self, operation: str, res: Resource, subresource: str) -> bool:
        return res.plural != CONFIGS and bool(self.store.list(CONFIGS, limit=1)["items"])

    def _namespace_labels(self, attrs: AdmissionAttributes) -> dict[str, str] | None:
        if attrs.resource.plural == "namespaces":
            return _labels(attrs.object or attrs.old_object)
        if not attrs.resource.namespaced:
            return None  # cluster-scoped objects: the namespace selector does not apply
        try:
            return _labels(self.store.get("namespaces", None, attrs.namespace))
        except errors.StatusError:
            return {}

    def _matches(self, hook: dict[str, Any], attrs: AdmissionAttributes, ns_labels: dict[str, str] | None) -> bool:
        if not any(_rule_matches(rule, attrs) for rule in hook.get("rules") or []):
            return False
        if ns_labels is not None and not _selects(hook.get("namespaceSelector"), ns_labels):
            return False
        selector = hook.get("objectSelector")
        return any(_selects(selector, _labels(o)) for o in (attrs.object, attrs.old_object) if o is not None) or \
            (attrs.object is None and attrs.old_object is None)

    def admit(self, attributes: AdmissionAttributes) -> dict[str, Any] | None:
        ns_labels = self._namespace_labels(attributes)
        hooks = [h for h in self._hooks() if self._matches(h, attributes, ns_labels)]
        obj = attributes.object
        reinvoke: list[dict[str, Any]] = []
        for hook in hooks:
            before = obj
            obj = self._call_one(hook, attributes, obj)
            if obj != before:
                reinvoke = [h for h in reinvoke if h is not hook]
                for earlier in hooks[:hooks.index(hook)]:
                    if earlier.get("reinvocationPolicy") == "IfNeeded" and earlier not in reinvoke:
                        reinvoke.append(earlier)
        for hook in reinvoke:
            obj = self._call_one(hook, attributes, obj)
        return obj

    def _call_one(self, hook: dict[str, Any], attrs: AdmissionAttributes,
                  obj: dict[str, Any] | None) -> dict[str, Any] | None:
        name = hook.get("name", "")
        if attrs.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            raise errors.bad_request(f'admission webhook "{name}" does not support dry run')
        try:
            response, version = self._call(hook, attrs, obj)
        except CallError as exc:
            if hook.get("failurePolicy", "Fail") == "Ignore":
                log.info("webhook call failed, ignored (failurePolicy Ignore) webhook=%s error=%s", name, exc)
                return obj
            raise errors.StatusError(500, "InternalError",
                                     f'Internal error occurred: failed calling webhook "{name}": {exc}') from exc
        attrs.warnings.extend(str(w) for w in response.get("warnings") or [])
        if not response.get("allowed"):
            raise _denied(name, response.get("status") or {})
        patch = response.get("patch")
        if not patch or obj is None:
            return obj
        if response.get("patchType") != "JSONPatch":
            raise errors.StatusError(500, "InternalError", f'Internal error occurred: admission webhook "{name}" '
                                     f'returned a patch of type {response.get("patchType")!r}; only JSONPatch is '
                                     f"supported")
        try:
            operations = json.loads(base64.b64decode(patch, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise errors.StatusError(500, "InternalError", f'Internal error occurred: admission webhook "{name}" '
                                     f"returned a patch that is not base64 JSON: {exc}") from exc
        try:
            patched = patching.json_patch(obj, operations)
        except errors.StatusError as exc:
            raise errors.StatusError(500, "InternalError", f'Internal error occurred: admission webhook "{name}" '
                                     f"returned a patch that cannot be applied: {exc.message}") from exc
        if not isinstance(patched, dict):
            raise errors.StatusError(500, "InternalError", f'Internal error occurred: admission webhook "{name}" '
                                     f"patched the object into something that is not an object")
        log.debug("webhook patched object webhook=%s version=%s", name, version)
        return patched

    def _review(self, attrs: AdmissionAttributes, obj: dict[str, Any] | None, version: str) -> dict[str, Any]:
        res = attrs.resource
        kind = "Binding" if attrs.subresource == "binding" else res.kind
        gvk = {"group": res.group, "version": res.version, "kind": kind}
        gvr = {"group": res.group, "version": res.version, "resource": res.plural}
        request: dict[str, Any] = {
            "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": attrs.name, "namespace": attrs.namespace if res.namespaced else "",
            "operation": attrs.operation, "userInfo": USER, "object": obj, "oldObject": attrs.old_object,
            "dryRun": attrs.dry_run,
            "options": attrs.options,
        }
        if attrs.subresource:
            request["subResource"] = attrs.subresource
            request["requestSubResource"] = attrs.subresource
        return {"kind": "AdmissionReview", "apiVersion": f"admission.k8s.io/{version}", "request": request}

    def _call(self, hook: dict[str, Any], attrs: AdmissionAttributes,
              obj: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        config = hook.get("clientConfig") or {}
        url = config.get("url")
        if not url:
            raise CallError("failed to call webhook: clientConfig.service is not reachable in the simulated "
                            "cluster (there is no Service network); register the webhook with clientConfig.url")
        version = next((v for v in hook.get("admissionReviewVersions") or [] if v in REVIEW_VERSIONS), "v1")
        review = self._review(attrs, copy.deepcopy(obj), version)
        timeout = int(hook.get("timeoutSeconds") or 10)
        target = f"{url}?timeout={timeout}s"
        try:
            body = self._post(url, timeout, config.get("caBundle"), json.dumps(review).encode())
        except ssl.SSLError as exc:
            raise CallError(f'failed to call webhook: Post "{target}": tls: {exc}') from exc
        except TimeoutError as exc:
            raise CallError(f'failed to call webhook: Post "{target}": context deadline exceeded') from exc
        except (OSError, http.client.HTTPException) as exc:
            raise CallError(f'failed to call webhook: Post "{target}": {exc}') from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise CallError(f"received invalid webhook response: {exc}") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("response"), dict):
            raise CallError("received invalid webhook response: no response in the AdmissionReview")
        if answer.get("apiVersion") != review["apiVersion"] or answer.get("kind") != "AdmissionReview":
            raise CallError(f"received invalid webhook response: expected {review['apiVersion']} AdmissionReview, "
                            f"got {answer.get('apiVersion')} {answer.get('kind')}")
        response = answer["response"]
        if response.get("uid") != review["request"]["uid"]:
            raise CallError(f"expected response.uid={review['request']['uid']!r}, got {response.get('uid')!r}")
        return response, version

    def _post(self, url: str, timeout: int, ca_bundle: str | None, data: bytes) -> bytes:
        return self._transport.post(url, timeout, ca_bundle, data)

    def close(self) -> None:
        self._transport.close()


class _Transport:
    """HTTPS to webhooks, one TLS context per CA bundle (loading trust roots per call costs tens of ms).

    One connection per call: a kept-alive one could outlive a restarted webhook server's listener
    and reach the stopped instance's still-running handler thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[str | None, ssl.SSLContext] = {}

    def _context(self, ca_bundle: str | None) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(ca_bundle)
        if context is None:
            try:
                context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode()) if ca_bundle \
                    else ssl.create_default_context()
            except (binascii.Error, ValueError, ssl.SSLError) as exc:
                raise ssl.SSLError(f"the caBundle cannot be read: {exc}") from exc
            with self._lock:
                self._contexts[ca_bundle] = context
        return context

    def close(self) -> None:
        with self._lock:
            self._contexts.clear()

    def post(self, url: str, timeout: int, ca_bundle: str | None, data: bytes) -> bytes:
        parts = urlsplit(url)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout,
                                           context=self._context(ca_bundle))
        try:
            conn.request("POST", f"{parts.path or '/'}?timeout={timeout}s", body=data,
                         headers={"Content-Type": "application/json", "Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise OSError(f"the server responded with the status code {resp.status} but did not return more "
                          f"information")
        return body


def _denied(name: str, status: dict[str, Any]) -> errors.StatusError:
    """ToStatusErr: the webhook's Status, at least 400, with the message naming the webhook."""
    code = status.get("code") if isinstance(status.get("code"), int) else 0
    code = code if code >= 400 else 400
    denied = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{denied}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied}: {status['reason']}"
    else:
        message = f"{denied} without explanation"
    return errors.StatusError(code, str(status.get("reason") or ""), message, status.get("details"))

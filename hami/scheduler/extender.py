"""kube-scheduler's extender verbs: filter, prioritize, bind (kubernetes-interfaces §1).

`filter` returns **every** node that fits (a read-only engine call) with a readable reason for
each other node — `FailedAndUnresolvableNodes` where nothing can ever fit as the node is — so
kube-scheduler's own plugins (affinity, topology spread) still choose among them; HAMi returns one
node and defeats them (#2264). `prioritize` maps the engine's 0–100 score onto the extender scale
0–10 by rounding to the nearest (`(score × 10 + 50) // 100`), which keeps the engine's order up
to those 11 levels. kube-scheduler adds `score × weight × 10` to its plugins' sums (each plugin
0–100 × its weight; the default profile's weights sum to about 10 for GPU-relevant plugins), so the
chart's weight 10 lets our preference outweigh NodeResourcesFit/BalancedAllocation while a
required affinity still filters and preferred affinity (weight 2) still breaks our ties.

Errors never escape as HTTP errors: the reply carries `Error` (filter, bind) as kube-scheduler
expects; a malformed pod becomes a per-node reason naming what to fix.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from hami._core import Code, Engine, Reason, describe
from hami.api.errors import RequestError
from hami.api.pods import RequestDefaults, parse_pod
from hami.api.requests import Mode, Request
from hami.scheduler.binder import Binder, BindError
from hami.scheduler.cache import ClusterCache

log = logging.getLogger(__name__)

NOT_REGISTERED = "no GPUs registered on this node by the hami agent (hami.io/node-nvidia-register is missing)"


def extender_score(score: int) -> int:
    """The engine's 0..100 on kube-scheduler's extender scale 0..10 (nearest)."""
    return (int(score) * 10 + 50) // 100


def describe_ask(request: Request) -> str:
    """What a pod asks, for people reading FailedNodes: e.g. 'asks 2 GPUs × 10240 MiB (mode mig)'."""
    parts = []
    for c in request.containers:
        if c.count <= 0:
            continue
        size = f"{c.memory_mib} MiB" if c.memory_mib else f"{c.memory_percent}% of the memory"
        cores = f", {c.cores}% cores" if c.cores else ""
        parts.append(f"{c.count} GPU{'s' if c.count != 1 else ''} × {size}{cores}")
    mode = f" (mode {request.mode.value})" if request.mode is not Mode.ANY else ""
    return "asks " + " + ".join(parts) + mode


def _get(args: Mapping[str, Any], key: str) -> Any:
    """PascalCase as kube-scheduler sends, lowercase tolerated (Go decodes case-insensitively)."""
    if not isinstance(args, Mapping):
        raise ArgsError(f"the body must be a JSON object (ExtenderArgs), not {type(args).__name__}")
    if key in args:
        return args[key]
    return args.get(key[0].lower() + key[1:])


class ArgsError(ValueError):
    """The request body is not what kube-scheduler sends."""


def _node_names(args: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]] | None]:
    names = _get(args, "NodeNames")
    if names is not None:
        if not args.get("_typed") and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ArgsError("NodeNames must be a list of node names")
        return names, None
    nodes = _get(args, "Nodes")
    if nodes is None:
        return [], None
    items = nodes.get("items") if isinstance(nodes, dict) else None
    if not isinstance(items, list):
        raise ArgsError("Nodes must be a NodeList with items")
    out = []
    for item in items:
        name = (item.get("metadata") or {}).get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise ArgsError("every node in Nodes needs metadata.name")
        out.append(name)
    return out, items


def _pod(args: Mapping[str, Any]) -> dict[str, Any]:
    pod = _get(args, "Pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise ArgsError("Pod must be a Pod object with metadata")
    return pod


class HostPriority(msgspec.Struct):
    Host: str
    Score: int


class ExtenderArgs(msgspec.Struct):
    """kube-scheduler's body, typed: msgspec checks `NodeNames` is a list of strings in C."""

    Pod: Any = None
    Nodes: Any = None
    NodeNames: list[str] | None = None


_decode_args = msgspec.json.Decoder(ExtenderArgs).decode
_decode_any = msgspec.json.Decoder().decode


def decode_args(raw: bytes) -> Any:
    """ExtenderArgs from the wire: the typed fast path for kube-scheduler's PascalCase, else any
    JSON (lowercase keys, or garbage the verbs then reject with a reason)."""
    try:
        args = _decode_args(raw)
    except msgspec.ValidationError:
        return _decode_any(raw)
    return {"Pod": args.Pod, "Nodes": args.Nodes, "NodeNames": args.NodeNames, "_typed": True}


class Extender:
    def __init__(self, engine: Engine, cache: ClusterCache, binder: Binder, defaults: RequestDefaults,
                 metrics: Any = None, remember: int = 4096) -> None:
        self.engine = engine
        self.cache = cache
        self.binder = binder
        self.defaults = defaults
        self.metrics = metrics
        self._pods: OrderedDict[str, dict[str, Any]] = OrderedDict()  # uid -> pod, from filter, for bind
        self._pods_lock = threading.Lock()
        self._remember = remember
        self._ids: tuple[tuple, np.ndarray] | None = None  # the last candidate list and its node ids
        self._reasons: dict[int, str] = {}

    def _node_ids(self, names: list[str]) -> np.ndarray:
        """kube-scheduler sends the same candidates call after call: map them once while the
        engine's node set holds (any node added or removed changes the key)."""
        key = (len(names), self.engine.state.nodes, self.engine.registered_nodes, tuple(names))
        cached = self._ids
        if cached is not None and cached[0] == key:
            return cached[1]
        ids = self.engine.node_ids(names)
        self._ids = (key, ids)
        return ids

    def _describe(self, reasons: int) -> str:
        text = self._reasons.get(reasons)
        if text is None:
            text = self._reasons[reasons] = describe(reasons)
        return text

    def _explain(self, reasons: int, asks: str, most: int, gpus: int) -> str:
        """The reason with its numbers: what the pod asks, and for a node with fewer GPUs than a
        container asks, how many it has."""
        if reasons & Reason.NODE_TOO_SMALL and most > gpus:
            return f"{self._describe(reasons)}: {asks}; the node has {gpus} GPU{'s' if gpus != 1 else ''}"
        return f"{self._describe(reasons)} ({asks})"

    def _keep(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"].get("uid")
        if not uid:
            return
        with self._pods_lock:
            self._pods[uid] = pod
            self._pods.move_to_end(uid)
            while len(self._pods) > self._remember:
                self._pods.popitem(last=False)

    def _evaluate(self, args: Mapping[str, Any]):
        pod = _pod(args)
        names, items = _node_names(args)
        try:
            request = parse_pod(pod, self.defaults)
        except RequestError:
            raise
        except (AttributeError, TypeError, ValueError, KeyError) as err:  # a pod no API server would store
            raise ArgsError(f"Pod is malformed ({type(err).__name__}: {err})") from None
        return pod, names, items, request

    # -- filter ---------------------------------------------------------------------------------
    def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        try:
            pod, names, items, request = self._evaluate(args)
        except ArgsError as err:
            return self._filter_reply(None, None, {}, {}, f"bad ExtenderArgs: {err}")
        except RequestError as err:  # the pod's ask is malformed: every node says why
            return self._filter_reply([], None, {}, {n: str(err) for n in _names_or_empty(args)}, "")
        if not request.wants_gpus:
            return self._filter_reply(names, items, {}, {}, "")
        if not self.cache.synced:
            return self._filter_reply(None, None, {}, {}, "hami scheduler is still loading the cluster; retry")
        self._keep(pod)
        ids = self._node_ids(names)
        fit, _scores = self.engine.fit_and_score(request, ids)
        codes = fit.codes
        fitting = np.flatnonzero(codes == Code.SUCCESS).tolist()
        failed, unresolvable = {}, {}
        rejected: dict[int, int] = {}
        if len(fitting) < len(names):
            failed, unresolvable, rejected = self._failures(request, names, ids, fit)
        if self.metrics is not None:
            self.metrics.observe_filter(len(fitting), len(failed), len(unresolvable), rejected)
        return self._filter_reply([names[j] for j in fitting], [items[j] for j in fitting] if items else None,
                                  failed, unresolvable, "")

    def _failures(self, request: Request, names: list[str], ids: np.ndarray, fit) -> tuple[dict, dict, dict]:
        """FailedNodes, FailedAndUnresolvableNodes and the count of each reason mask. At 0.9 load
        nearly every node rejects a pod, so the per-node work is one dict store: each distinct
        (reason, GPU count) is explained once per call, and metrics count masks, not texts."""
        bad = np.flatnonzero(fit.codes != Code.SUCCESS)
        bad_reasons = fit.reasons[bad]
        most = max(c.count for c in request.containers)
        gpus = self.engine.gpu_counts(ids[bad]) if most > 1 else np.full(len(bad), most, np.int32)
        asks = describe_ask(request)
        unschedulable = int(Code.UNSCHEDULABLE)
        texts: dict[tuple[int, int], str] = {}
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        for j, node_id, code, reason, count in zip(bad.tolist(), ids[bad].tolist(), fit.codes[bad].tolist(),
                                                    bad_reasons.tolist(), gpus.tolist()):
            if node_id == 0:
                unresolvable[names[j]] = NOT_REGISTERED
                continue
            key = (reason, count if most > count else -1)
            text = texts.get(key)
            if text is None:
                text = texts[key] = self._explain(reason, asks, most, count)
            (failed if code == unschedulable else unresolvable)[names[j]] = text
        masks, counts = np.unique(bad_reasons, return_counts=True)
        return failed, unresolvable, dict(zip(masks.tolist(), counts.tolist()))

    @staticmethod
    def _filter_reply(names, items, failed, unresolvable, error) -> dict[str, Any]:
        return {
            "Nodes": None if items is None else {"metadata": {}, "items": items},
            "NodeNames": names if items is None else None,
            "FailedNodes": failed or None,
            "FailedAndUnresolvableNodes": unresolvable or None,
            "Error": error,
        }

    # -- prioritize -----------------------------------------------------------------------------
    def prioritize(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            _, names, _, request = self._evaluate(args)
        except (ArgsError, RequestError):
            return []  # kube-scheduler ignores a failed prioritize; an empty list says the same
        if not request.wants_gpus or not names:
            return [HostPriority(n, 0) for n in names]
        ids = self._node_ids(names)
        fit, scores = self.engine.fit_and_score(request, ids)
        ten = np.where(fit.codes == Code.SUCCESS, (scores.astype(np.int64) * 10 + 50) // 100, 0).tolist()
        return [HostPriority(n, s) for n, s in zip(names, ten, strict=True)]

    # -- bind -----------------------------------------------------------------------------------
    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        try:
            fields = {k: _get(args, k) for k in ("PodName", "PodNamespace", "PodUID", "Node")}
        except ArgsError as err:
            return {"Error": f"bad ExtenderBindingArgs: {err}"}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            return {"Error": f"bad ExtenderBindingArgs: {', '.join(missing)} must be non-empty strings"}
        if not self.cache.synced:
            return {"Error": "hami scheduler is still loading the cluster; retry"}
        with self._pods_lock:
            pod = self._pods.get(fields["PodUID"])
        try:
            self.binder.bind(fields["PodNamespace"], fields["PodName"], fields["PodUID"], fields["Node"], pod)
        except BindError as err:
            if self.metrics is not None:
                self.metrics.bind_failed()
            return {"Error": str(err)}
        return {"Error": ""}


def _names_or_empty(args: Mapping[str, Any]) -> list[str]:
    try:
        return _node_names(args)[0]
    except ArgsError:
        return []

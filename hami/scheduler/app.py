"""`hami scheduler`: the engine, the cluster cache fed by informers, the binder, the webhook, the
HTTP(S) server and the metrics listener, wired together.

Start-up order is what makes a restart safe: the informers list nodes and pods and fold every
recorded decision into the engine before `/readyz` turns true and before filter or bind answer
anything but "still loading" — nothing is double-booked across a restart.

With `--leader-lease` several replicas run (docs/ha.md): each keeps its cache warm and is Ready
once synced, answers filter and prioritize, and binds only while its own Pod's kube-scheduler
holds the Lease (`hami.scheduler.leader`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from hami._core import Engine, Features
from hami._core.tables import POLICIES
from hami.api import names
from hami.api.pods import RequestDefaults
from hami.devices.config import DeviceConfig, default_device_config, load_device_config
from hami.k8s import CredentialsError, Kube
from hami.k8s.informer import Informer
from hami.scheduler.binder import Binder
from hami.scheduler.cache import ClusterCache
from hami.scheduler.extender import Extender, decode_args
from hami.scheduler.leader import LeaderSettings, Leadership, SoleReplica
from hami.scheduler.metrics import SchedulerMetrics
from hami.scheduler.server import SchedulerHTTPServer
from hami.scheduler.webhook import WebhookSettings, review

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    kubeconfig: str | None = None
    http_bind: str = "127.0.0.1:8080"
    metrics_bind: str = "0.0.0.0:9395"
    cert_file: str | None = None
    key_file: str | None = None
    device_config_file: str | None = None
    scheduler_name: str = names.SCHEDULER_NAME
    policy: str = "fragmentation-aware"
    node_scheduler_policy: str = "binpack"
    gpu_scheduler_policy: str = "binpack"
    node_lock_timeout_s: float = 300.0
    lock_wait_s: float = 20.0
    handshake_timeout_s: float = 90.0
    bind_ttl_s: float = 120.0
    legacy_metrics: bool = True
    force_overwrite_default_scheduler: bool = True
    runtime_class_name: str = ""
    leader: LeaderSettings | None = None  # None: one replica, always acting

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"--policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        for flag, value in (("--node-scheduler-policy", self.node_scheduler_policy),
                            ("--gpu-scheduler-policy", self.gpu_scheduler_policy)):
            if value not in (names.POLICY_BINPACK, names.POLICY_SPREAD):
                raise ValueError(f"{flag} {value!r}: choose binpack or spread")
        for flag, value in (("--http-bind", self.http_bind), ("--metrics-bind", self.metrics_bind)):
            _split_address(value, flag)
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("--cert-file and --key-file go together (both for HTTPS, neither for HTTP)")
        for flag, value in (("--node-lock-timeout", self.node_lock_timeout_s), ("--lock-wait", self.lock_wait_s)):
            if value <= 0:
                raise ValueError(f"{flag} must be positive seconds, got {value}")

    def device_config(self) -> DeviceConfig:
        if not self.device_config_file:
            return default_device_config()
        return load_device_config(Path(self.device_config_file).read_text())


def _split_address(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag} {value!r}: write <host>:<port>, e.g. 0.0.0.0:8443")
    return host or "0.0.0.0", int(port)


class Scheduler:
    """Everything `hami scheduler` runs; `start()` returns once the servers listen."""

    def __init__(self, config: SchedulerConfig, kube: Kube | None = None) -> None:
        self.config = config
        device_config = config.device_config()
        self.nvidia = device_config.nvidia
        self.defaults = RequestDefaults.from_config(self.nvidia)
        self.engine = Engine(self.nvidia, config.policy, Features(default_node_policy=config.node_scheduler_policy,
                                                                 default_gpu_policy=config.gpu_scheduler_policy))
        self.kube = kube or Kube.connect(config.kubeconfig)
        self.cache = ClusterCache(self.engine, handshake_timeout_s=config.handshake_timeout_s,
                                  bind_ttl_s=config.bind_ttl_s)
        self.metrics = SchedulerMetrics(self.engine, self.cache, config.legacy_metrics)
        nodes, pods = Informer(self.kube, "nodes", self._on_node), Informer(self.kube, "pods", self._on_pod)
        self._informers = [nodes, pods]
        self.leadership: Leadership | SoleReplica = SoleReplica()
        if config.leader:
            self.leadership = Leadership(self.kube, config.leader, synced=lambda: self.cache.synced,
                                         listing=lambda: pods.listing, on_takeover=lambda: self.binder.take_over())
        self.binder = Binder(self.engine, self.cache, self.kube, self.defaults,
                             lock_timeout_s=config.node_lock_timeout_s, lock_wait_s=config.lock_wait_s,
                             on_bound=self.metrics.bound, leader=self.leadership)
        self.extender = Extender(self.engine, self.cache, self.binder, self.defaults, self.metrics)
        self.webhook = WebhookSettings(self.nvidia, config.scheduler_name, config.force_overwrite_default_scheduler,
                                       config.runtime_class_name)
        self._stop = threading.Event()
        self.server: SchedulerHTTPServer | None = None
        self._metrics_server = None

    def _on_node(self, kind: str, obj: dict) -> None:
        self.cache.node_event(kind, obj)

    def _on_pod(self, kind: str, obj: dict) -> None:
        self.cache.pod_event(kind, obj)
        self.leadership.pod_seen(obj)  # after the cache: our own Pod's version marks what the cache holds

    def ready(self) -> tuple[bool, str]:
        if not self.cache.nodes_synced.is_set():
            return False, "nodes not listed yet"
        if not self.cache.pods_synced.is_set():
            return False, "pods not listed yet"
        return True, ""

    def start(self) -> Scheduler:
        host, port = _split_address(self.config.http_bind, "--http-bind")
        routes = {"/filter": self.extender.filter, "/prioritize": self.extender.prioritize,
                  "/bind": self.extender.bind, "/webhook": lambda body: review(body, self.webhook)}
        self.server = SchedulerHTTPServer((host, port), routes, ready=self.ready, health=self.leadership.healthy,
                                          observe=self.metrics.observe,
                                          cert_file=self.config.cert_file, key_file=self.config.key_file,
                                          decoders={"/filter": decode_args, "/prioritize": decode_args}).start()
        mhost, mport = _split_address(self.config.metrics_bind, "--metrics-bind")
        if mport:
            self._metrics_server = self.metrics.serve(mhost, mport)
        self._informers[0].start()
        threading.Thread(target=self._sync, name="cache-sync", daemon=True).start()
        self.leadership.start()
        log.info("hami scheduler listening url=%s metrics=%s policy=%s", self.server.url,
                 self.config.metrics_bind if mport else "off", self.config.policy)
        return self

    def _sync(self) -> None:
        """Nodes first (so pods' decisions find their GPUs), then pods; then the periodic sweep."""
        nodes, pods = self._informers
        while not self._stop.is_set() and not nodes.synced.wait(0.5):
            pass
        if self._stop.is_set():
            return
        self.cache.nodes_synced.set()
        pods.start()
        while not self._stop.is_set() and not pods.synced.wait(0.5):
            pass
        if self._stop.is_set():
            return
        self.cache.pods_synced.set()
        log.info("cache synced nodes=%d", len(self.cache.node_names()))
        while not self._stop.wait(5.0):
            try:
                self.cache.sweep()
            except Exception:  # the sweep must outlive a bad object
                log.exception("cache sweep failed")

    def stop(self) -> None:
        self._stop.set()
        self.leadership.stop()
        for informer in self._informers:
            informer.stop()
        if self.server is not None:
            self.server.stop()
        if self._metrics_server is not None:
            server, _thread = self._metrics_server
            server.shutdown()


def add_parser(sub) -> None:
    p = sub.add_parser("scheduler", help="the scheduler extender, admission webhook and metrics",
                       description="kube-scheduler's extender (filter, prioritize, bind), the admission webhook "
                                   "and the metrics, over one cache of the cluster (docs/scheduler.md).")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    p.add_argument("--http-bind", default="127.0.0.1:8080",
                   help="extender and webhook address (default 127.0.0.1:8080; the chart: 0.0.0.0:8443, TLS)")
    p.add_argument("--metrics-bind", default="0.0.0.0:9395", help="metrics address (default 0.0.0.0:9395; port 0: off)")
    p.add_argument("--cert-file", default=None, help="TLS certificate (PEM); reloaded when the file changes")
    p.add_argument("--key-file", default=None, help="TLS key (PEM)")
    p.add_argument("--device-config-file", default=None, help="HAMi's device-config.yaml")
    p.add_argument("--scheduler-name", default=names.SCHEDULER_NAME,
                   help="schedulerName the webhook sets (default %(default)s)")
    p.add_argument("--policy", default="fragmentation-aware", choices=POLICIES,
                   help="placement policy: %(choices)s (default %(default)s; docs/architecture.md §7)")
    p.add_argument("--node-scheduler-policy", default="binpack", choices=("binpack", "spread"),
                   help="node order for pods without the hami.io/node-scheduler-policy annotation"
                        " (default %(default)s)")
    p.add_argument("--gpu-scheduler-policy", default="binpack", choices=("binpack", "spread"),
                   help="GPU order for pods without the hami.io/gpu-scheduler-policy annotation (default %(default)s)")
    p.add_argument("--node-lock-timeout", type=float, default=300.0,
                   help="seconds after which a node lock expires (default %(default)s)")
    p.add_argument("--lock-wait", type=float, default=20.0,
                   help="seconds a bind waits for a locked node"
                        " (default %(default)s; keep below the extender httpTimeout)")
    p.add_argument("--no-legacy-metrics", action="store_true", help="omit HAMi's pre-2.9 metric names")
    p.add_argument("--runtime-class-name", default="",
                   help="runtimeClassName the webhook sets on GPU pods (default: none)")
    ha = p.add_argument_group("high availability (docs/ha.md)")
    ha.add_argument("--leader-lease", default="", metavar="NAMESPACE/NAME",
                    help="follow this coordination.k8s.io Lease (the co-located kube-scheduler's leader election, "
                         "e.g. kube-system/hami-scheduler) and act (bind, write) only while this Pod's "
                         "kube-scheduler holds it; default off: one replica, always acting")
    ha.add_argument("--pod-name", default=os.environ.get("POD_NAME", ""),
                    help="this Pod's name (default $POD_NAME): the leader identity prefix '<pod-name>_' and the Pod "
                         "that gets the hami.io/scheduler-role label")
    ha.add_argument("--pod-namespace", default=os.environ.get("POD_NAMESPACE", ""),
                    help="this Pod's namespace (default $POD_NAMESPACE)")
    ha.add_argument("--leader-identity-prefix", default="",
                    help="holderIdentity prefix that means 'this Pod's kube-scheduler' (default '<pod-name>_', "
                         "kube-scheduler's '<hostname>_<uuid>' with hostname = pod name)")
    ha.add_argument("--leader-renew-deadline", type=float, default=10.0,
                    help="seconds without an observed renewal after which this replica stops acting (default 10, "
                         "kube-scheduler's --leader-elect-renew-deadline; keep below the lease duration)")
    ha.add_argument("--leader-poll", type=float, default=1.0,
                    help="seconds between Lease reads besides the watch (default 1)")
    ha.add_argument("--max-write-failures", type=int, default=3,
                    help="consecutive failed API writes after which the leader steps down and /healthz fails, so "
                         "the kube-scheduler container's livenessProbe restarts it and frees the Lease (default 3; "
                         "0: never)")


def leader_settings(args: argparse.Namespace) -> LeaderSettings | None:
    """--leader-lease and its companions; None (one replica) without a lease."""
    if not args.leader_lease:
        return None
    return LeaderSettings(lease=args.leader_lease, pod_name=args.pod_name, pod_namespace=args.pod_namespace,
                          identity_prefix=args.leader_identity_prefix, renew_deadline_s=args.leader_renew_deadline,
                          poll_s=args.leader_poll, max_write_failures=args.max_write_failures)


def run(args: argparse.Namespace) -> int:
    try:
        config = SchedulerConfig(kubeconfig=args.kubeconfig, http_bind=args.http_bind, metrics_bind=args.metrics_bind,
                                 cert_file=args.cert_file, key_file=args.key_file,
                                 device_config_file=args.device_config_file, scheduler_name=args.scheduler_name,
                                 policy=args.policy, node_scheduler_policy=args.node_scheduler_policy,
                                 gpu_scheduler_policy=args.gpu_scheduler_policy,
                                 node_lock_timeout_s=args.node_lock_timeout, lock_wait_s=args.lock_wait,
                                 legacy_metrics=not args.no_legacy_metrics, runtime_class_name=args.runtime_class_name,
                                 leader=leader_settings(args))
        scheduler = Scheduler(config)
    except CredentialsError as err:
        print(f"hami scheduler: no usable Kubernetes credentials ({err}); pass --kubeconfig or set $KUBECONFIG, "
              "or run in a cluster", file=sys.stderr, flush=True)
        return 2
    except (ValueError, OSError) as err:
        print(f"hami scheduler: {err}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        scheduler.start()
    except OSError as err:
        print(f"hami scheduler: cannot listen ({err}); choose another --http-bind or --metrics-bind",
              file=sys.stderr, flush=True)
        scheduler.stop()
        return 2
    stop.wait()
    scheduler.stop()
    return 0

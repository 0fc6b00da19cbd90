"""A real control plane on loopback: etcd, kube-apiserver, kube-scheduler (docs/real-kubernetes.md).

The API server is configured as a kubeadm cluster is where it matters to us: Node and RBAC
authorization, the default admission plugins plus NodeRestriction, TLS with a CA clients verify,
service-account tokens signed by a key of ours. Two differences, both because no
kube-controller-manager runs:
- TaintNodesByCondition is disabled: it taints every new Node `not-ready:NoSchedule`, and only the
  node lifecycle controller lifts that taint once the node is Ready;
- the ServiceAccount plugin stays on and is satisfied by hand: `namespace()` creates the `default`
  ServiceAccount the service-account controller would (the plugin rejects pods without it).
The endpoint reconciler is off (`kubernetes` Service without endpoints): it would publish the
loopback advertise address, which Endpoints validation rejects.

`start()` / `stop()` or a `with` block. `stop()` leaves nothing running; the work folder (logs,
certificates, etcd data) is the caller's to keep or delete.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from hami.sim.kubescheduler import SchedulerConfig
from hami.sim.realkube import pki as pki_mod
from hami.sim.realkube.binaries import Binaries, find_binaries
from hami.sim.realkube.process import Process, ProcessFailed, free_port, http_ok
from hami.sim.realkube.schedconfig import LEASE_NAMESPACE, kube_scheduler_configuration

DEFAULT_SCHEDULER = "default-scheduler"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
PORT_RETRIES = 3


class RealPlaneError(RuntimeError):
    """The plane could not start; the message names the component and ends with its log."""


@dataclass
class RealPlane:
    """etcd + kube-apiserver + kube-scheduler(s). `scheduler` is rendered by schedconfig; with
    `scheduler.default_profile` a second, extender-less kube-scheduler serves `default-scheduler`."""

    workdir: Path
    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(default_profile=False))
    binaries: Binaries | None = None
    leader_elect: bool = True
    start_timeout: float = 90.0
    verbosity: int = 2
    # set by start():
    server: str = ""
    etcd_url: str = ""
    pki: pki_mod.Pki | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    _admin: k8s.ApiClient | None = None

    # ------------------------------------------------------------------------------------------
    # lifecycle

    def __enter__(self) -> RealPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RealPlane:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binaries = self.binaries or find_binaries()
        try:
            self.pki = pki_mod.Pki(self.workdir / "pki")
            self._start_with_ports("etcd", self._etcd)
            self._start_with_ports("kube-apiserver", self._apiserver)
            self._bootstrap()
            self._start_with_ports("kube-scheduler", lambda: self._kube_scheduler(self.scheduler))
            if self.scheduler.default_profile:
                default = SchedulerConfig(scheduler_name=DEFAULT_SCHEDULER, default_profile=False)
                self._start_with_ports("kube-scheduler-default", lambda: self._kube_scheduler(default, "-default"))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the schedulers first, etcd last, so no component logs its store vanishing."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for name in reversed(list(self.processes)):
            self.processes[name].stop()

    def logs(self) -> dict[str, Path]:
        return {name: proc.log_path for name, proc in self.processes.items()}

    def _start_with_ports(self, name: str, launch: Any) -> None:
        """Pick free ports and start; a port taken between the pick and the bind gets new ports."""
        for attempt in range(1, PORT_RETRIES + 1):
            try:
                launch()
                return
            except ProcessFailed as exc:
                self.processes[name].stop()
                if "address already in use" not in str(exc) or attempt == PORT_RETRIES:
                    raise RealPlaneError(str(exc)) from None

    # ------------------------------------------------------------------------------------------
    # components

    def _etcd(self) -> None:
        assert self.binaries is not None
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        proc = Process("etcd", [
            self.binaries.etcd, "--name=plane", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=plane={peer}", "--unsafe-no-fsync=true", "--log-level=warn",
        ], self.workdir / "logs" / "etcd.log")
        self.processes["etcd"] = proc.start()
        proc.wait_ready(lambda: http_ok(f"{self.etcd_url}/health"), self.start_timeout)

    def _apiserver(self) -> None:
        assert self.binaries is not None and self.pki is not None
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        p = self.pki
        proc = Process("kube-apiserver", [
            self.binaries.kube_apiserver, f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_file}", f"--token-auth-file={p.tokens_file}",
            f"--requestheader-client-ca-file={p.front_proxy_ca_file}",
            f"--requestheader-allowed-names={pki_mod.FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.proxy_client_cert}", f"--proxy-client-key-file={p.proxy_client_key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction", "--disable-admission-plugins=TaintNodesByCondition",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}", f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}", "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none", "--allow-privileged=true", "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}", f"--v={self.verbosity}",
        ], self.workdir / "logs" / "kube-apiserver.log")
        self.processes["kube-apiserver"] = proc.start()
        token = p.tokens[pki_mod.ADMIN.user]
        proc.wait_ready(lambda: http_ok(f"{self.server}/readyz", ca_file=p.ca_file, token=token), self.start_timeout)

    def _kube_scheduler(self, config: SchedulerConfig, suffix: str = "") -> None:
        assert self.binaries is not None and self.pki is not None
        previous = self._lease_holder(config)
        port = free_port()
        kubeconfig = self.pki.token_kubeconfig(pki_mod.KUBE_SCHEDULER.user, self.server)
        doc = kube_scheduler_configuration(config, kubeconfig=str(kubeconfig), leader_elect=self.leader_elect)
        config_file = self.workdir / f"kube-scheduler{suffix}.yaml"
        config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        name = f"kube-scheduler{suffix}"
        proc = Process(name, [
            self.binaries.kube_scheduler, f"--config={config_file}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            f"--cert-dir={self.workdir / (name + '-certs')}", f"--v={self.verbosity}",
        ], self.workdir / "logs" / f"{name}.log")
        self.processes[name] = proc.start()
        proc.wait_ready(lambda: http_ok(f"https://127.0.0.1:{port}/healthz", insecure=True)
                        and (not self.leader_elect or self._lease_holder(config) not in ("", previous)),
                        self.start_timeout)

    def _lease_holder(self, config: SchedulerConfig) -> str:
        """Who holds the scheduler's Lease ("" when nobody): a kube-scheduler only schedules once it
        does, and each process has a fresh identity, so a restart is done when the holder changed."""
        try:
            lease = k8s.CoordinationV1Api(self.admin()).read_namespaced_lease(config.scheduler_name, LEASE_NAMESPACE)
        except ApiException:
            return ""
        return (lease.spec.holder_identity if lease.spec else None) or ""

    def restart_scheduler(self, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) the extender-facing kube-scheduler and start it again on a new port; returns
        once the new process leads (after a SIGKILL that waits out the old Lease, 15 s)."""
        proc = self.processes["kube-scheduler"]
        proc.kill() if kill else proc.stop()
        self._start_with_ports("kube-scheduler", lambda: self._kube_scheduler(self.scheduler))

    def use_scheduler(self, config: SchedulerConfig) -> bool:
        """Serve `config` (extenders, backoffs) from the extender-facing kube-scheduler, restarting it
        (about a second) only when it differs from the running one; True when it restarted. Lets
        several test suites share one plane, each with its own extender.

        The scheduler name and `default_profile` are fixed at start: the Lease RBAC names the former,
        the second kube-scheduler is the latter."""
        if config == self.scheduler:
            return False
        for what, now, wanted in (("scheduler_name", self.scheduler.scheduler_name, config.scheduler_name),
                                  ("default_profile", self.scheduler.default_profile, config.default_profile)):
            if now != wanted:
                raise ValueError(f"use_scheduler: {what} is fixed when the plane starts ({now!r}, asked {wanted!r}); "
                                 "start another RealPlane for it")
        self.scheduler = config
        self.restart_scheduler()
        return True

    # ------------------------------------------------------------------------------------------
    # what a cluster's installer and controllers would have created

    def _bootstrap(self) -> None:
        """The default ServiceAccount, and a Role letting kube-scheduler hold its leases: the bootstrap
        policy only grants the Lease named `kube-scheduler`, a chart adds its own (hami-scheduler)."""
        self.namespace("default")
        names = [self.scheduler.scheduler_name, DEFAULT_SCHEDULER]
        rbac = k8s.RbacAuthorizationV1Api(self.admin())
        role = {"metadata": {"name": "hami:kube-scheduler-leases", "namespace": LEASE_NAMESPACE},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                           "resourceNames": names, "verbs": ["get", "update"]}]}
        binding = {"metadata": {"name": "hami:kube-scheduler-leases", "namespace": LEASE_NAMESPACE},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "hami:kube-scheduler-leases"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                 "name": pki_mod.KUBE_SCHEDULER.user}]}
        rbac.create_namespaced_role(LEASE_NAMESPACE, role)
        rbac.create_namespaced_role_binding(LEASE_NAMESPACE, binding)

    def namespace(self, name: str) -> None:
        """Create `name` (if new) with its `default` ServiceAccount, as the namespace and SA controllers would."""
        core = k8s.CoreV1Api(self.admin())
        with _exists_ok():
            core.create_namespace({"metadata": {"name": name}})
        with _exists_ok():
            core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})

    # ------------------------------------------------------------------------------------------
    # clients

    def kubeconfig(self, user: str = pki_mod.ADMIN.user) -> Path:
        """A token kubeconfig: `admin` (kubectl, tests), `hami` (our components), `system:kube-scheduler`."""
        assert self.pki is not None, "start() the plane first"
        return self.pki.token_kubeconfig(user, self.server)

    def node_kubeconfig(self, node: str) -> Path:
        """A kubelet's kubeconfig for `node`: client certificate as system:node:<node> in system:nodes."""
        assert self.pki is not None, "start() the plane first"
        return self.pki.node_kubeconfig(node, self.server)

    def api_client(self, kubeconfig: Path | None = None) -> k8s.ApiClient:
        """A new official-client ApiClient (the caller closes it)."""
        return k8s_config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig()))

    def admin(self) -> k8s.ApiClient:
        """The plane's own admin client, closed by stop()."""
        if self._admin is None:
            self._admin = self.api_client()
        return self._admin

    def wait_for(self, what: str, check: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
        """Poll `check()` until it returns something truthy; AssertionError naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; logs: {self.logs()}")
            time.sleep(interval)


@contextlib.contextmanager
def _exists_ok() -> Any:
    try:
        yield
    except ApiException as exc:
        if exc.status != 409:
            raise

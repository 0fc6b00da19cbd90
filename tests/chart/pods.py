"""Run a rendered container on this machine as kubelet would run it, as far as our entry points can
tell: its command with the rendered flags, its environment (downward API resolved), its volumes
(ConfigMaps and Secrets written out, hostPaths and emptyDirs as local folders) at their mount paths
under a private root, its ports on free loopback ports, and its probes answered over HTTP(S)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chart.conftest import find


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalContainer:
    """One rendered container, localised. `start()` runs it; `probe("readinessProbe")` asks its probe."""

    objects: list[dict[str, Any]]  # the rendered release (ConfigMaps for the volumes)
    workload: dict[str, Any]  # the Deployment or DaemonSet
    name: str  # the container
    field_refs: dict[str, str]  # downward API: metadata.name, metadata.namespace, spec.nodeName
    host_paths: dict[str, Path] = field(default_factory=dict)  # hostPath path -> local folder
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)  # Secret name -> its data
    env: dict[str, str] = field(default_factory=dict)  # what the node adds (KUBECONFIG, NVML)
    log: Path | None = None

    def __post_init__(self) -> None:
        spec = self.workload["spec"]["template"]["spec"]
        (self.container,) = [c for c in spec["containers"] if c["name"] == self.name]
        # short: kubelet's and our unix sockets live under it (108-byte socket path limit)
        self.root = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in sorted(self.container.get("volumeMounts", []), key=lambda m: m["mountPath"].count("/")):
            self._mount(volumes[mount["name"]], mount["mountPath"])
        self.ports = {p["containerPort"]: free_port() for p in self.container.get("ports", [])}
        self.port_names = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
        self.process: subprocess.Popen | None = None

    def _mount(self, volume: dict[str, Any], path: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data = find(self.objects, "ConfigMap", volume["configMap"]["name"])["data"]
            target.mkdir()
            for key, text in data.items():
                (target / key).write_text(text)
        elif "secret" in volume:
            data = self.secrets[volume["secret"]["secretName"]]
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            target.mkdir()
            for item in items:
                (target / item["path"]).write_bytes(data[item["key"]])
        elif "hostPath" in volume:
            local = self.host_paths[volume["hostPath"]["path"]]
            local.mkdir(parents=True, exist_ok=True)
            target.symlink_to(local, target_is_directory=True)
        elif "emptyDir" in volume:
            target.mkdir(exist_ok=True)
        else:
            raise AssertionError(f"volume kind not handled here: {volume}")

    def command(self) -> list[str]:
        """The rendered command: the installed `hami` entry point, absolute paths under our root, the
        container's ports on free loopback ports."""
        argv = list(self.container["command"]) + list(self.container.get("args", []))
        if argv[0] == "hami":
            argv[0] = str(Path(sys.executable).parent / "hami")  # the console script pip installed
        out = [argv[0]]
        for arg in argv[1:]:
            flag, eq, value = arg.partition("=")
            if eq and value.startswith("/"):
                arg = f"{flag}={self.root}{value}"
            elif eq:
                for inside, outside in self.ports.items():
                    value = re.sub(rf"^(0\.0\.0\.0:)?{inside}$", lambda m, o=outside: ("127.0.0.1:" if m.group(1)
                                                                                       else "") + str(o), value)
                arg = f"{flag}={value}"
            out.append(arg)
        return out

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "POD_", "NODE_NAME"))}
        for item in self.container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                env[item["name"]] = self.field_refs[item["valueFrom"]["fieldRef"]["fieldPath"]]
        env.update(self.env)
        return env

    def start(self) -> LocalContainer:
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        return self

    def url(self, port: int | str, path: str = "", scheme: str = "HTTP") -> str:
        inside = self.port_names[port] if isinstance(port, str) else port
        return f"{scheme.lower()}://127.0.0.1:{self.ports[inside]}{path}"

    def probe(self, kind: str, spec: dict[str, Any] | None = None) -> int:
        """The probe's HTTP status now (0: no answer), as kubelet asks it (TLS not verified). `spec`: another
        container's probe of this one's ports (containers of a Pod share its network)."""
        probe = spec or self.container[kind]
        if "tcpSocket" in probe:
            port = probe["tcpSocket"]["port"]
            inside = self.port_names[port] if isinstance(port, str) else port
            try:
                socket.create_connection(("127.0.0.1", self.ports[inside]), timeout=2).close()
                return 200
            except OSError:
                return 0
        get = probe["httpGet"]
        try:
            with urllib.request.urlopen(self.url(get["port"], get["path"], get.get("scheme", "HTTP")), timeout=2,
                                        context=ssl._create_unverified_context()) as answer:
                return answer.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def wait_probe(self, kind: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.probe(kind) == 200:
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.2)
        log = self.log.read_text()[-3000:] if self.log and self.log.exists() else ""
        status = self.process and self.process.poll()
        raise AssertionError(f"{self.name}: {kind} not 200 within {timeout}s (exit {status})"
                             f"\ncommand: {self.command()}\n{log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

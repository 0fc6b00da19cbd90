"""The simulated cluster: a node spec string, and the ControlPlane that runs API server, scheduler and kubelets.

Spec grammar (hardware first, then the node's operating mode), e.g.

    2 x (8 x A100-SXM4-80GB, mode=mig), 1 x (4 x A10, mode=hami-core)

`<nodes> x (<gpus> x <model>[, mode=<modes>][, name=<prefix>])`, groups separated by commas;
`<nodes> x` may be left out (one node); `x`, `X`, `*` and `×` all read as "times". Models are
resolved with `hami.devices.naming.find_model` (NVML name, HAMi type, key or alias). The mode
defaults to `mig` on MIG-capable models and `hami-core` otherwise; `mode=mig` on a model without
MIG is an error.

`<modes>` is one mode for every GPU of the node (`mode=mig`), or a per-GPU split in index
order, `<mode>:<count>` joined by `+`, the counts adding up to the node's GPUs:

    1 x (4 x A100-SXM4-80GB, mode=mig:2+hami-core:2)

gives GPUs 0-1 in MIG mode and GPUs 2-3 shared by hami-core on one node. The node agent gets it
as its node config: `operatingmode` is GPU 0's mode and `devicemodes` names the other GPUs by
index (hami/deviceplugin/config.py); the fakenvml state starts those GPUs with MIG on.

Each node gets a kubelet (its own short device-plugin directory), a fakenvml state-file path
(created by the injected `create_state` hook) and whatever device plugin the injected
`start_plugin` hook starts on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from hami.devices import errors as device_errors
from hami.devices import naming
from hami.devices.models import GpuModel
from hami.sim.apiserver import ApiServer
from hami.sim.kubelet import Kubelet, ProcessAttacher, short_socket_dir
from hami.sim.kubescheduler import ExtenderConfig, KubeScheduler, ManagedResource, SchedulerConfig

log = logging.getLogger(__name__)

MODES = ("mig", "hami-core")
_TIMES = r"\s*[xX*×]\s*"
HAMI_MANAGED_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucores",
                          "nvidia.com/gpumem-percentage", "nvidia.com/priority")


class ClusterSpecError(ValueError):
    """A node spec string that cannot be read; the message says where and what to write instead."""


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node's hardware and operating mode."""

    name: str
    model: GpuModel
    gpus: int
    mode: str
    """The node's operating mode: every GPU's, or GPU 0's when `gpu_modes` mixes modes."""
    gpu_modes: tuple[str, ...] = ()
    """The mode of each GPU by index; empty means every GPU runs in `mode`."""

    def mode_of(self, index: int) -> str:
        return self.gpu_modes[index] if self.gpu_modes else self.mode

    @property
    def mixed(self) -> bool:
        return len(set(self.gpu_modes)) > 1

    def node_config(self) -> dict[str, object]:
        """This node's entry of HAMi's node config (`nodeconfig[]`), per-GPU modes as `devicemodes`."""
        entry: dict[str, object] = {"name": self.name, "operatingmode": self.mode}
        others = sorted({m for m in self.gpu_modes if m != self.mode})
        if others:
            entry["devicemodes"] = [{"index": [i for i, m in enumerate(self.gpu_modes) if m == mode],
                                     "operatingmode": mode} for mode in others]
        return entry

    def describe(self) -> str:
        """The mode(s) as the spec writes them: `mig`, or `mig:2+hami-core:2`."""
        if not self.mixed:
            return self.mode
        runs: list[list] = []
        for mode in self.gpu_modes:
            if runs and runs[-1][0] == mode:
                runs[-1][1] += 1
            else:
                runs.append([mode, 1])
        return "+".join(f"{m}:{n}" for m, n in runs)

    def labels(self) -> dict[str, str]:
        return {"gpu": "on", "nvidia.com/gpu.product": self.model.nvml_name.replace(" ", "-"),
                "nvidia.com/gpu.count": str(self.gpus), "hami.io/sim-mode": "mixed" if self.mixed else self.mode}


def _split_groups(text: str) -> list[str]:
    groups, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ClusterSpecError(f"unbalanced ')' in node spec {text!r}")
        if ch == "," and depth == 0:
            groups.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise ClusterSpecError(f"unbalanced '(' in node spec {text!r}")
    groups.append("".join(current))
    return [g.strip() for g in groups]


def parse_nodes(text: str) -> list[NodeSpec]:
    """Read a node spec string (module docstring) into NodeSpecs with unique names."""
    if not text or not text.strip():
        raise ClusterSpecError("empty node spec; example: '2 x (8 x A100-SXM4-80GB, mode=mig)'")
    nodes: list[NodeSpec] = []
    for group in _split_groups(text):
        if not group:
            raise ClusterSpecError(f"empty group in node spec {text!r} (a stray comma?)")
        m = re.fullmatch(rf"(?:(\d+){_TIMES})?\((.*)\)", group)
        if not m:
            raise ClusterSpecError(f"cannot read {group!r}: write '<nodes> x (<gpus> x <model>[, mode=...])', "
                                   f"e.g. '2 x (8 x A100-SXM4-80GB, mode=mig)'")
        count = int(m.group(1) or 1)
        parts = [p.strip() for p in m.group(2).split(",")]
        hw = re.fullmatch(rf"(\d+){_TIMES}(\S.*)", parts[0])
        if not hw:
            raise ClusterSpecError(f"cannot read the hardware {parts[0]!r} in {group!r}: write '<gpus> x <model>', "
                                   f"e.g. '8 x A100-SXM4-80GB'")
        gpus, model_name = int(hw.group(1)), hw.group(2).strip()
        if count < 1 or gpus < 1:
            raise ClusterSpecError(f"{group!r}: node and GPU counts must be at least 1")
        try:
            model = naming.find_model(model_name)
        except device_errors.UnknownModelError as exc:
            raise ClusterSpecError(f"{group!r}: {exc}") from exc
        options: dict[str, str] = {}
        for option in parts[1:]:
            key, sep, value = option.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in ("mode", "name") or not value:
                raise ClusterSpecError(f"{group!r}: unknown option {option!r}; options are mode=mig|hami-core "
                                       f"(or per GPU, e.g. mode=mig:2+hami-core:2) and name=<node name prefix>")
            options[key] = value
        gpu_modes = _gpu_modes(options.get("mode", "mig" if model.mig_capable else "hami-core"), gpus, group)
        if "mig" in gpu_modes and not model.mig_capable:
            raise ClusterSpecError(f"{group!r}: {model.key} is not MIG-capable; use mode=hami-core")
        mode = gpu_modes[0]
        per_gpu = gpu_modes if len(set(gpu_modes)) > 1 else ()
        prefix = options.get("name", "node")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", prefix):
            raise ClusterSpecError(f"{group!r}: name prefix {prefix!r} must be lower-case letters, digits and '-'")
        for _ in range(count):
            index = sum(1 for n in nodes if n.name.rsplit("-", 1)[0] == prefix)
            nodes.append(NodeSpec(f"{prefix}-{index}", model, gpus, mode, per_gpu))
    return nodes


def _gpu_modes(text: str, gpus: int, group: str) -> tuple[str, ...]:
    """`mig` → every GPU mig; `mig:2+hami-core:2` → per GPU in index order (module docstring)."""
    if ":" not in text and "+" not in text:
        if text not in MODES:
            raise ClusterSpecError(f"{group!r}: mode {text!r} is not one of {', '.join(MODES)}")
        return (text,) * gpus
    out: list[str] = []
    for part in text.split("+"):
        mode, sep, count = (p.strip() for p in part.partition(":"))
        if mode not in MODES or not sep or not count.isdigit() or int(count) < 1:
            raise ClusterSpecError(f"{group!r}: cannot read the per-GPU modes {text!r}: write <mode>:<count> "
                                   f"joined by '+', modes {' or '.join(MODES)}, e.g. mode=mig:2+hami-core:2")
        out.extend([mode] * int(count))
    if len(out) != gpus:
        raise ClusterSpecError(f"{group!r}: the per-GPU modes {text!r} cover {len(out)} GPU(s), the node has "
                               f"{gpus}; make the counts add up to {gpus}")
    return tuple(out)


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class SimNode:
    """A running simulated node: its spec, files and kubelet."""

    spec: NodeSpec
    state_path: Path  # the node's fakenvml state file
    plugin_dir: Path  # the kubelet's device-plugin directory (kubelet.sock lives here)
    kubelet: Kubelet
    plugin: Stoppable | None = None

    @property
    def name(self) -> str:
        return self.spec.name


StateFactory = Callable[[NodeSpec, Path], None]
"""Creates the node's fakenvml state file at the given path (fakenvml's control interface)."""
PluginStarter = Callable[[SimNode, Path], Stoppable | None]
"""Starts the device plugin of a node, given the node and the kubeconfig path; returns what stops it."""
AttacherFactory = Callable[[SimNode], ProcessAttacher | None]
"""The node's process attacher (fakenvml control interface over its state file)."""


class FakeNvmlAttacher:
    """ProcessAttacher over one node's fakenvml state file (MIG- uuids: that MIG device; GPU- uuids: the GPU)."""

    def __init__(self, state_path: Path) -> None:
        from hami.sim import fakenvml  # imported here: the simulator's C-library side is optional

        self._node = fakenvml.FakeNode(state_path)

    def attach(self, node: str, uuid: str, pid: int) -> None:
        if uuid.startswith("MIG-"):
            self._node.attach(uuid, pid)
            return
        gpus = self._node.read().gpus
        index = next((i for i, gpu in enumerate(gpus) if gpu.uuid == uuid), None)
        if index is None:
            raise KeyError(f"no GPU {uuid} on node {node}")
        self._node.attach_gpu(index, pid)

    def detach(self, node: str, uuid: str, pid: int) -> None:
        self._node.detach(pid)  # pids are per container: this removes exactly its processes


def fakenvml_state(spec: NodeSpec, path: Path) -> None:
    """A StateFactory: a fresh fakenvml state file with the node's GPUs, MIG mode on for mode=mig nodes."""
    from hami.sim import fakenvml

    gpus = [fakenvml.GpuSpec(spec.model, mig=spec.mode_of(i) == "mig") for i in range(spec.gpus)]
    fakenvml.FakeNode.create(path, gpus, node=spec.name)


def fakenvml_attacher(node: SimNode) -> FakeNvmlAttacher:
    """An AttacherFactory: attach through the node's own fakenvml state file."""
    return FakeNvmlAttacher(node.state_path)


class AgentProcess:
    """A node agent (`hami device-plugin`) running as its own process, as on a real node: it must
    be, since the simulated NVML serves one state file per process."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting: a plane stops all its agents at once."""
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        """SIGTERM (the agent removes its socket and stops), SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def node_agent(node: SimNode, kubeconfig: Path, *, sync_interval: float = 5.0) -> AgentProcess:
    """A PluginStarter: our node agent for the node, on its fakenvml state, in the node's mode(s)
    (a node config file written beside the state), idle instances kept (as the engine assumes);
    `sync_interval`: seconds between its reconciliations (how soon it sees a pod gone)."""
    from hami.sim import fakenvml

    folder = node.state_path.parent
    config = folder / "node-config.json"
    config.write_text(json.dumps({"nodeconfig": [node.spec.node_config()]}))
    env = {**os.environ, fakenvml.STATE_ENV: str(node.state_path), "HAMI_NVML_LIBRARY": str(fakenvml.library_path())}
    command = [sys.executable, "-m", "hami.cli", "device-plugin", "--node-name", node.name,
               "--kubeconfig", str(kubeconfig), "--plugin-dir", str(node.plugin_dir), "--config-file", str(config),
               "--hook-path", str(folder / "hook"), "--metrics-port", "-1", "--idle-destroy-after", "0",
               "--sync-interval", str(sync_interval)]
    log_path = folder / "agent.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return AgentProcess(process, log_path)


def hami_extender(url: str, *, prioritize: bool = True, http_timeout: float = 30.0) -> ExtenderConfig:
    """The extender stanza HAMi's chart generates (reference §1.6), plus our prioritize verb at weight
    10 (HAMi's chart: 1). On a real kube-scheduler the in-tree scorers add up to about 10 x 100; at
    weight 10 our 0-10 score (x 10 x 10) decides among the nodes that fit (docs/scheduler.md)."""
    return ExtenderConfig(url_prefix=url, filter_verb="filter", prioritize_verb="prioritize" if prioritize else "",
                          bind_verb="bind", weight=10, http_timeout=http_timeout, node_cache_capable=True,
                          managed_resources=tuple(ManagedResource(r, True) for r in HAMI_MANAGED_RESOURCES))


@dataclass
class ControlPlane:
    """API server + kube-scheduler driver + one kubelet per node. `start()`/`stop()` or a `with` block."""

    nodes: Sequence[NodeSpec]
    workdir: Path
    port: int = 0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    create_state: StateFactory | None = None
    start_plugin: PluginStarter | None = None
    attacher: AttacherFactory | None = None
    api: ApiServer | None = None
    kubescheduler: KubeScheduler | None = None
    sim_nodes: list[SimNode] = field(default_factory=list)
    kubeconfig: Path | None = None

    def start(self) -> ControlPlane:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.api = ApiServer(port=self.port).start()
            self.kubeconfig = self.api.write_kubeconfig(self.workdir / "kubeconfig")
            for index, spec in enumerate(self.nodes):
                self._start_node(spec, index)
            self.kubescheduler = KubeScheduler(self.api.store, self.scheduler).start()
        except BaseException:
            self.stop()
            raise
        log.info("control plane up nodes=%d kubeconfig=%s", len(self.sim_nodes), self.kubeconfig)
        return self

    def _start_node(self, spec: NodeSpec, index: int) -> None:
        assert self.api is not None and self.kubeconfig is not None
        node_dir = self.workdir / "nodes" / spec.name
        node_dir.mkdir(parents=True, exist_ok=True)
        state_path = node_dir / "fakenvml-state.json"
        if self.create_state is not None:
            self.create_state(spec, state_path)
        kubelet = Kubelet(spec.name, self.api.store, short_socket_dir(f"hk-{spec.name[:20]}-"),
                          labels=spec.labels(), node_ip=f"10.0.{index // 250}.{index % 250 + 1}")
        node = SimNode(spec, state_path, kubelet.plugin_dir, kubelet)
        if self.attacher is not None:
            kubelet.attacher = self.attacher(node)
        self.sim_nodes.append(node)
        kubelet.start()
        if self.start_plugin is not None:
            node.plugin = self.start_plugin(node, self.kubeconfig)

    def stop(self) -> None:
        if self.kubescheduler is not None:
            self.kubescheduler.stop()
            self.kubescheduler = None
        for node in self.sim_nodes:  # all agents at once; each stop() below then only waits
            terminate = getattr(node.plugin, "terminate", None)
            if terminate is not None:
                with contextlib.suppress(Exception):
                    terminate()
        for node in reversed(self.sim_nodes):
            if node.plugin is not None:
                with contextlib.suppress(Exception):
                    node.plugin.stop()
            node.kubelet.stop()
            shutil.rmtree(node.plugin_dir, ignore_errors=True)
        self.sim_nodes = []
        if self.api is not None:
            self.api.stop()
            self.api = None

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def node(self, name: str) -> SimNode:
        return next(n for n in self.sim_nodes if n.name == name)


def sim_up(nodes: str, *, workdir: str | Path | None = None, port: int = 0, extender_url: str | None = None,
           scheduler_name: str = "hami-scheduler", create_state: StateFactory | None = None,
           start_plugin: PluginStarter | None = None, attacher: AttacherFactory | None = None,
           out: TextIO | None = None, err: TextIO | None = None, stop: threading.Event | None = None) -> int:
    """`hami sim up --nodes '<spec>'`: start a control plane, print the kubeconfig path, run until Ctrl-C.

    Returns the exit status: 0 after a clean stop, 2 for an unreadable node spec, a port out of
    range or in use, or a work folder that cannot be made (one line on `err`). By default each node
    gets a fakenvml state file (`fakenvml_state`) and its kubelet attaches container processes
    through it (`fakenvml_attacher`); `start_plugin` starts device plugins (by default our node
    agent per node, `node_agent`, as a subprocess logging to the node's folder). `stop` ends the
    run from another thread (tests); otherwise it runs until Ctrl-C or SIGTERM (handled alike).
    Every exit path removes the kubelets' socket folders, and the work folder when this run made
    it (a fresh temporary one by default); an existing `workdir` keeps the files for a look.
    """
    out, err = out or sys.stdout, err or sys.stderr
    create_state = create_state or fakenvml_state
    attacher = attacher or fakenvml_attacher
    start_plugin = start_plugin or node_agent
    try:
        specs = parse_nodes(nodes)
    except ClusterSpecError as exc:
        print(f"hami sim up: {exc}", file=err)
        return 2
    if not 0 <= port <= 65535:
        print(f"hami sim up: --port {port} is not a TCP port; give 1-65535, or 0 for a free one", file=err)
        return 2
    try:
        directory, made = make_workdir(workdir)
    except OSError as exc:
        print(f"hami sim up: cannot create the work folder {workdir} ({exc.strerror or exc}); "
              "give a writable --workdir", file=err)
        return 2
    extenders = (hami_extender(extender_url),) if extender_url else ()
    plane = ControlPlane(specs, directory, port=port,
                         scheduler=SchedulerConfig(scheduler_name=scheduler_name, extenders=extenders),
                         create_state=create_state, start_plugin=start_plugin, attacher=attacher)
    stop = stop or threading.Event()
    try:
        with terminate_as_interrupt():
            try:
                plane.start()
            except OSError as exc:
                print(f"hami sim up: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                      "choose another --port, or 0 for a free one", file=err)
                return 2
            try:
                assert plane.api is not None
                print(f"kubeconfig: {plane.kubeconfig}", file=out)
                print(f"api server: {plane.api.url}", file=out)
                for node in plane.sim_nodes:
                    print(f"node {node.name}: {node.spec.gpus} x {node.spec.model.key}, mode={node.spec.describe()}, "
                          f"device plugins in {node.plugin_dir}", file=out)
                print(f"try: kubectl --kubeconfig {plane.kubeconfig} get nodes,pods -A   (Ctrl-C stops)", file=out)
                out.flush()
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                print("stopping", file=out)
                out.flush()
            finally:
                plane.stop()
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: still clean up below
        pass
    finally:
        remove_workdir(directory, made)
    return 0


def make_workdir(workdir: str | Path | None) -> tuple[Path, bool]:
    """The work folder and whether this call made it (a fresh temporary one when None). Raises OSError."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="hami-sim-")), True
    path = Path(workdir)
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(13, "not writable", str(path))
    return path, made


def remove_workdir(path: Path, made: bool) -> None:
    """Remove the work folder if this run made it; an existing one keeps what the run wrote
    (kubeconfig, state files, the agents' logs) for a look afterwards."""
    if made:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, for the block (main thread only; elsewhere
    signals cannot be handled and the block runs as it is). SIGINT does too even when this
    process started with it ignored (a shell's background job, `cmd &` in a script), where
    Python installs no Ctrl-C handler and `kill -INT` would be ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)

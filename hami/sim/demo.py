"""`hami demo`: every real component on one machine, a realistic stream of GPU pods, and what happened.

It starts the full stack (hami/sim/fullstack.py: the local API server, kube-scheduler driver and
kubelets; `hami scheduler` as its own process with its webhook, extender and metrics on
127.0.0.1; one `hami device-plugin` process per node over its simulated NVML) on the default
cluster — two MIG nodes (8 × A100-SXM4-80GB, 8 × H100-SXM5-80GB), a hami-core node (4 × A10) and a
node whose GPUs run both modes (4 × A100-SXM4-80GB, two MIG, two hami-core) — then submits pods
through the API as users would: MIG-sized and fractional memory requests, with and without
`nvidia.com/vgpu-mode`, multi-instance and multi-container pods. Most pods end after a few seconds
(the demo deletes them), so instances are reused and re-cut; the mix drifts from small inference
pods to larger training pods halfway, so partly used GPUs take new profiles next to running
instances; a few long-running services stay. The summary is read from what the API server holds
(pod and node annotations written by the scheduler and the agents) and the scheduler's metrics.

Exit status: 0 when every pod ran (and ended, services excepted); 1 when any pod failed or never
ran; 2 for bad arguments. `--engine-only` runs the engine-level comparison with HAMi's placements
(hami/sim/demo_engine.py) instead.
"""

from __future__ import annotations

import random
import re
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hami.api import codecs, names

DEFAULT_NODES = ("(8 x A100-SXM4-80GB, name=mig-a100), (8 x H100-SXM5-80GB, name=mig-h100), "
                 "(4 x A10, name=core-a10), (4 x A100-SXM4-80GB, mode=mig:2+hami-core:2, name=mixed-a100)")

G, MEM, PCT, CORES = names.RESOURCE_COUNT, names.RESOURCE_MEMORY, names.RESOURCE_MEMORY_PERCENTAGE, names.RESOURCE_CORES


@dataclass(frozen=True)
class Kind:
    """A kind of pod in the stream: its containers' limits, its vgpu-mode, and its weight in each half."""

    label: str
    containers: tuple[dict[str, str], ...]
    mode: str | None
    early: int
    late: int


KINDS = (
    Kind("notebook 5 GB", ({G: "1", MEM: "5000"},), None, 6, 1),
    Kind("inference 10 GB, mig", ({G: "1", MEM: "10000"},), "mig", 6, 2),
    Kind("inference 20 GB", ({G: "1", MEM: "20000"},), None, 4, 2),
    Kind("shared 8 GB, 30 % cores, hami-core", ({G: "1", MEM: "8000", CORES: "30"},), "hami-core", 4, 2),
    Kind("a quarter of a GPU", ({G: "1", PCT: "25"},), None, 2, 2),
    Kind("2 containers × 5 GB", ({G: "1", MEM: "5000"}, {G: "1", MEM: "5000"}), None, 2, 1),
    Kind("training 40 GB, mig", ({G: "1", MEM: "40000"},), "mig", 1, 6),
    Kind("2 × 20 GB instances, mig", ({G: "2", MEM: "20000"},), "mig", 1, 3),
    Kind("whole GPU, mig", ({G: "1"},), "mig", 0, 2),
)


@dataclass(frozen=True)
class Planned:
    name: str
    kind: Kind
    at: float  # seconds after the first submission
    life: float | None  # seconds it runs; None: a service that stays


def plan(pods: int, seed: int, interval: float, services: int = 3,
         lifetime: tuple[float, float] = (2.0, 8.0)) -> list[Planned]:
    """The stream, deterministic for a seed: `pods` pods `interval` s apart, each running a uniform
    `lifetime` (seconds), the mix drifting from the early to the late weights halfway; the last
    `services` pods stay running."""
    rng = random.Random(seed)
    out = []
    for i in range(pods):
        weights = [k.early if i < pods // 2 else k.late for k in KINDS]
        kind = rng.choices(KINDS, weights)[0]
        life = None if i >= pods - services else round(rng.uniform(*lifetime), 1)
        out.append(Planned(f"demo-{i:03d}", kind, round(i * interval, 2), life))
    return out


@dataclass
class Summary:
    """What the run did, as the summary prints it (tests compare it with the API server)."""

    pods: int = 0
    ran: int = 0
    unexpected: dict[str, str] = field(default_factory=dict)  # pod -> what went wrong
    waits: list[float] = field(default_factory=list)
    on_mig: int = 0  # pods all of whose devices are MIG instances
    on_core: int = 0  # pods all of whose devices are hami-core shares
    by_kind: dict[str, Counter] = field(default_factory=dict)
    mig_devices: int = 0  # MIG instances given to the pods that ran (a pod may get several)
    created: int = 0
    reused: int = 0
    destroyed: int = 0
    decided: dict[str, int] = field(default_factory=dict)  # the scheduler's own counters
    next_to_running: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    layout: list[tuple[str, int, str, str, str]] = field(default_factory=list)  # node, index, model, mode, what
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unexpected


def summarise(observer: Any, planned: list[Planned], metrics: str) -> Summary:
    """The Summary from the observer's record of pods and nodes, and the scheduler's metrics text."""
    s = Summary(pods=len(planned))
    seen: set[str] = set()
    records = observer.pods
    for p in sorted(planned, key=lambda p: (records[p.name].running or 1e18) if p.name in records else 1e18):
        r = records.get(p.name)
        stats = s.by_kind.setdefault(p.kind.label, Counter())
        stats["pods"] += 1
        if r is None or r.running is None:
            s.unexpected[p.name] = (r.failed or r.unschedulable or "never ran") if r else "never created"
            continue
        if r.failed:
            s.unexpected[p.name] = r.failed
            continue
        if p.life is not None and r.gone is None:
            s.unexpected[p.name] = "still there after its lifetime"
        s.ran += 1
        stats["ran"] += 1
        s.waits.append(r.wait)
        devices = [d for ctr in r.devices for d in ctr]
        if devices and all(d.mig for d in devices):
            s.on_mig += 1
            stats["mig"] += 1
        elif devices and not any(d.mig for d in devices):
            s.on_core += 1
            stats["hami-core"] += 1
        for d in devices:
            if d.mig:
                s.mig_devices += 1
                s.reused += d.mig_uuid in seen
                seen.add(d.mig_uuid)
    s.created = len(observer.created_uuids)
    s.destroyed = len(observer.destroyed_uuids)
    for action in ("created", "reused", "destroyed"):
        found = re.search(rf'^hami_scheduler_mig_instances_decided_total{{action="{action}"}} (\S+)$', metrics, re.M)
        s.decided[action] = int(float(found.group(1))) if found else 0
    s.next_to_running = list(observer.new_next_to_running)
    s.layout = layout(observer)
    return s


def layout(observer: Any) -> list[tuple[str, int, str, str, str]]:
    """(node, GPU index, model, mode, what is on it) for every registered GPU, from the annotations."""
    from hami.devices import naming

    rows = []
    shares: dict[str, list[int]] = {}
    for r in observer.pods.values():
        if r.gone is None and r.running is not None:
            for ctr in r.devices:
                for d in ctr:
                    if not d.mig:
                        shares.setdefault(d.gpu, []).append(d.memory_mib)
    for node in sorted(observer.registered):
        instances = observer.instances.get(node, ())
        for dev in sorted(observer.registered[node], key=lambda d: d.index):
            try:
                model = naming.find_model(dev.type).key
            except Exception:  # an unknown name is shown as registered
                model = dev.type
            if dev.mode == names.MODE_MIG:
                here = sorted((i for i in instances if i.gpu_uuid == dev.id), key=lambda i: i.placement.start)
                what = " ".join(f"{i.profile}@{i.placement.start}"
                                + (f" ({i.pod.split('/')[-1]})" if i.pod else " (idle)") for i in here) or "—"
            else:
                used = shares.get(dev.id, [])
                what = f"{len(used)} share(s), {sum(used)} of {dev.devmem} MiB" if used else f"free, {dev.devmem} MiB"
            rows.append((node, dev.index, model, dev.mode, what))
    return rows


def run(*, pods: int = 90, seed: int = 7, interval: float = 0.2, lifetime: tuple[float, float] = (2.0, 8.0),
        nodes: str = DEFAULT_NODES,
        keep_running: bool = False, metrics_port: int = 0, workdir: Path | None = None,
        console: Any = None, inspect: Callable[[Any, Summary], None] | None = None,
        stop: threading.Event | None = None) -> Summary:
    """Start the stack, run the stream, print the summary; `inspect(stack, summary)` is called before
    the stack stops (tests). With `keep_running` it waits for Ctrl-C / SIGTERM (or `stop`) first."""
    from rich.console import Console
    from rich.live import Live

    from hami.sim.cluster import parse_nodes, terminate_as_interrupt
    from hami.sim.fullstack import Observer, Stack

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: wide enough for the tables
            console = Console(width=150)
    specs = parse_nodes(nodes)
    planned = plan(pods, seed, interval, lifetime=lifetime)
    console.print("[bold]hami demo[/]: " + ", ".join(
        f"{s.name} ({s.gpus}×{s.model.key} {s.describe()})" for s in specs))
    started = time.monotonic()
    with terminate_as_interrupt():
        stack = Stack(specs, workdir, metrics_port=metrics_port, agent_sync_interval=1.0)
        try:
            with console.status("starting") as status:
                stack.start(progress=lambda text: status.update(text))
            console.print(f"up in {time.monotonic() - started:.1f} s: API server {stack.plane.api.url}, "
                          f"scheduler {stack.scheduler_url}, metrics {stack.metrics_url}")
            observer = Observer(stack)
            try:
                with Live(console=console, refresh_per_second=4, transient=True) as live:
                    _stream(stack, observer, planned, lambda text: live.update(text))
                    live.update("waiting for the node agents to report the ended pods' instances idle")
                    observer.wait_for(lambda: _agents_caught_up(observer), 15.0)
                summary = summarise(observer, planned, stack.metrics())
                summary.seconds = time.monotonic() - started
                print_summary(console, summary)
                if inspect is not None:
                    inspect(stack, summary)
                if keep_running:
                    console.print(f"\n[bold]still running[/] (Ctrl-C stops it)\n"
                                  f"  export KUBECONFIG={stack.kubeconfig}\n"
                                  f"  hami inspect              # the GPUs, MIG instances and shares\n"
                                  f"  kubectl get nodes,pods -A # with a kubectl of your own\n"
                                  f"  curl {stack.metrics_url}")
                    waiting = stop or threading.Event()
                    try:
                        while not waiting.wait(0.5):
                            pass
                    except KeyboardInterrupt:  # the way to stop a kept cluster: the run itself was fine
                        console.print("stopping")
            finally:
                observer.close()
        except KeyboardInterrupt:
            console.print("stopping")
            summary = Summary(pods=len(planned), unexpected={"demo": "interrupted"})
        finally:
            stack.stop()
    return summary


def _stream(stack: Any, observer: Any, planned: list[Planned], show: Callable[[str], None],
            deadline: float = 60.0) -> None:
    """Submit each pod at its time and delete it when its lifetime is over (a failed one at once),
    until every finite pod has ended, failed, or waited `deadline` s without running; then wait
    for the services to run."""
    from hami.sim.fullstack import pod_body

    kube = stack.kube
    t0 = time.monotonic()
    ends: dict[str, float] = {}  # pod -> when to delete it (inf once deleted)
    submitted = 0
    while True:
        now = time.monotonic() - t0
        while submitted < len(planned) and planned[submitted].at <= now:
            p = planned[submitted]
            kube.create("pods", pod_body(p.name, p.kind.containers, p.kind.mode, {"app": "hami-demo"}), "default")
            submitted += 1
        with observer.changed:
            records = dict(observer.pods)
            instances = [i for insts in observer.instances.values() for i in insts]
            created, destroyed = len(observer.created_uuids), len(observer.destroyed_uuids)
        finished = 0
        for p in planned[:submitted]:
            r = records.get(p.name)
            if r is None or p.life is None:
                continue
            if r.failed and p.name not in ends:
                ends[p.name] = now
            elif r.running is not None and p.name not in ends:
                ends[p.name] = r.running - t0 + p.life
            if r.gone is not None or r.failed or (r.running is None and now - p.at > deadline):
                finished += 1
        for name, end in ends.items():
            if end <= now:
                kube.delete("pods", name, "default")
                ends[name] = float("inf")
        running = sum(1 for r in records.values() if r.running is not None and r.gone is None)
        pending = sum(1 for r in records.values() if r.running is None and not r.failed and r.gone is None)
        in_use = sum(1 for i in instances if i.state is codecs.InstanceState.IN_USE)
        show(f"t={now:5.1f}s  submitted {submitted}/{len(planned)}  pending {pending}  running {running}  "
             f"ended {sum(1 for r in records.values() if r.gone is not None)}  "
             f"failed {sum(1 for r in records.values() if r.failed)}  ·  MIG instances {len(instances)} "
             f"(in use {in_use}, idle {len(instances) - in_use}), created {created}, destroyed {destroyed}")
        if submitted == len(planned) and finished == sum(1 for p in planned if p.life is not None):
            break
        time.sleep(0.05)
    services = [p.name for p in planned if p.life is None]
    observer.wait_for(lambda: all(observer.pods.get(n) and observer.pods[n].running for n in services), deadline)


def _agents_caught_up(observer: Any) -> bool:
    """No agent still reports an instance in use by a pod that is gone."""
    alive = {f"default/{n}" for n, r in observer.pods.items() if r.gone is None}
    return all(i.pod in alive for insts in observer.instances.values() for i in insts
               if i.state is codecs.InstanceState.IN_USE)


def print_summary(console: Any, s: Summary) -> None:
    from rich.table import Table

    waits = sorted(s.waits)
    q = (lambda f: waits[min(len(waits) - 1, int(f * len(waits)))]) if waits else (lambda f: 0.0)
    console.print(f"\n[bold]{s.ran} of {s.pods} pods ran[/] ({s.on_mig} on MIG instances, {s.on_core} on hami-core "
                  f"shares, {s.ran - s.on_mig - s.on_core} on both); wait from submission to running: median "
                  f"{statistics.median(waits) if waits else 0:.2f} s, p95 {q(0.95):.2f} s, max "
                  f"{waits[-1] if waits else 0:.2f} s")
    kinds = Table(title="pods by kind")
    for col in ("kind", "pods", "ran", "on MIG", "on hami-core"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for label, c in s.by_kind.items():
        kinds.add_row(label, str(c["pods"]), str(c["ran"]), str(c["mig"]), str(c["hami-core"]))
    console.print(kinds)
    console.print(f"MIG instances: [bold]{s.created} created, {s.reused} reused, {s.destroyed} destroyed[/] "
                  f"(the agents' record; the scheduler decided {s.decided.get('created', 0)} / "
                  f"{s.decided.get('reused', 0)} / {s.decided.get('destroyed', 0)})")
    if s.next_to_running:
        node, gpu, new, running = s.next_to_running[-1]
        console.print(f"{len(s.next_to_running)} time(s) a partly used GPU took a new instance next to running ones, "
                      f"e.g. {node} {gpu[:12]}…: {new} next to {', '.join(running)}")
    table = Table(title="every GPU at the end (MIG: instances by placement, pod or idle; hami-core: shares)")
    for col in ("node", "GPU", "model", "mode", "now"):
        table.add_column(col)
    for node, index, model, mode, what in s.layout:
        table.add_row(node, str(index), model, mode, what)
    console.print(table)
    for pod, what in sorted(s.unexpected.items()):
        console.print(f"[red]unexpected[/]: {pod}: {what}")
    console.print(f"{'[green]ok[/]' if s.ok else '[red]FAILED[/]'} in {s.seconds:.1f} s")


def add_parser(sub) -> None:
    """The `hami demo` subcommand's arguments (the CLI delegates them here)."""
    demo = sub.add_parser("demo", help="the whole stack on one machine: API server, hami scheduler, node agents, "
                          "simulated GPUs, and a stream of pods (no Kubernetes needed)")
    demo.add_argument("--pods", type=int, default=None, help="pods to submit (default 90; --engine-only: 200)")
    demo.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    demo.add_argument("--interval", type=float, default=0.2, help="seconds between submissions (default 0.2)")
    demo.add_argument("--nodes", default=DEFAULT_NODES, help="the cluster, in `hami sim up`'s grammar "
                      "(default: two MIG nodes, a hami-core node and a mixed one)")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the cluster up after the summary and print its kubeconfig (Ctrl-C stops it)")
    demo.add_argument("--metrics-port", type=int, default=0, help="the scheduler's metrics port (default: a free one)")
    demo.add_argument("--engine-only", action="store_true",
                      help="the placement engine alone, compared with HAMi's placements (no processes)")
    demo.add_argument("--show", type=int, default=25, help="--engine-only: decisions to print (default 25)")


def run_cli(args) -> int:
    """`hami demo` with parsed arguments; exit status 2 on bad ones, 1 when a pod ended unexpectedly."""
    pods = args.pods if args.pods is not None else (200 if args.engine_only else 90)
    if pods < 1:
        print("hami demo: --pods must be at least 1", file=sys.stderr)
        return 2
    if args.engine_only:
        from hami.sim import demo_engine

        return demo_engine.main(pods, args.seed, args.show)
    from hami.sim.cluster import ClusterSpecError, parse_nodes
    from hami.sim.fullstack import StackError

    try:
        parse_nodes(args.nodes)
    except ClusterSpecError as exc:
        print(f"hami demo: --nodes: {exc}", file=sys.stderr)
        return 2
    if args.interval < 0 or not 0 <= args.metrics_port <= 65535:
        print("hami demo: --interval must be >= 0 and --metrics-port 0-65535", file=sys.stderr)
        return 2
    try:
        summary = run(pods=pods, seed=args.seed, interval=args.interval, nodes=args.nodes,
                      keep_running=args.keep_running, metrics_port=args.metrics_port)
    except StackError as exc:
        print(f"hami demo: {exc}", file=sys.stderr)
        return 1
    return 0 if summary.ok else 1

"""The view for people (rich renderables) and for programs (JSON).

One table per node, one row per GPU: the mode, a map of the memory slices (MIG) or the memory,
cores and tasks in use (hami-core), the instances with the pod using each (or idle since when) or
the shares, and what still fits.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from hami.inspect.collect import MODE_MIG, ClusterView, Fit, Gpu, Instance, Node

SLICE_STYLE = {"#": ("█", "green"), "r": ("▓", "yellow"), "~": ("▒", "cyan"), ".": ("·", "dim")}
LEGEND = "slices: █ in use  ▓ reserved (instance being created)  ▒ idle (reusable)  · free"


def duration(seconds: float) -> str:
    """A short human duration: 42s, 5m12s, 3h04m, 2d05h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ranges(values: tuple[int, ...] | list[int]) -> str:
    """0,1,2,5 -> '0-2,5'."""
    out: list[str] = []
    run: list[int] = []
    for v in sorted(values):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [v]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def summary(view: ClusterView) -> str:
    gpus = [g for n in view.nodes for g in n.gpus]
    mig = sum(1 for g in gpus if g.mode == MODE_MIG)
    instances = [i for g in gpus for i in g.instances]
    counts = {state: sum(1 for i in instances if i.state == state) for state in ("in-use", "idle", "reserved")}
    shares = sum(len(g.shares) for g in gpus)
    return (f"{plural(len(view.nodes), 'node')}, {plural(len(gpus), 'GPU')} ({mig} MIG, {len(gpus) - mig} shared)"
            f" · MIG instances: {counts['in-use']} in use, {counts['idle']} idle, {counts['reserved']} reserved"
            f" · {plural(shares, 'hami-core share')}")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def render(view: ClusterView, *, watch: float | None = None, error: str | None = None,
           wide: bool = False, max_lines: int | None = None) -> RenderableType:
    """The whole view; `watch` adds the refresh interval to the header, `error` a failed refresh
    (the data shown is then the last good one), `wide` each instance's MIG uuid and GI/CI ids.
    `max_lines` (a live display's height) leaves out the nodes that would start below it: laying
    out tables nobody can see costs more than reading the cluster."""
    head = Text()
    head.append("hami inspect", style="bold")
    head.append(f" · {view.server or 'cluster'} · {view.taken_at.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    head.append(f" · policy {view.policy}", style="dim")
    if watch is not None:
        head.append(f" · every {watch:g}s, Ctrl-C to stop", style="dim")
    parts: list[RenderableType] = [head, Text(summary(view))]
    if error:
        parts.append(Text(f"refresh failed: {error} (showing {view.taken_at:%H:%M:%S})", style="bold red"))
    for problem in view.problems:
        parts.append(Text(f"! {problem}", style="red"))
    if not view.nodes:
        parts.append(Text("no nodes", style="yellow"))
    used = 2 + len(parts)
    for shown, node in enumerate(view.nodes):
        if max_lines is not None and shown and used >= max_lines:
            rest = len(view.nodes) - shown
            parts.append(Text(f"… {plural(rest, 'more node')} below the screen (choose with --node)", style="yellow"))
            break
        parts.append(node_table(node, view.taken_at, wide))
        used += table_height(node, wide)
    if any(g.mode == MODE_MIG for n in view.nodes for g in n.gpus):
        parts.append(Text(LEGEND, style="dim"))
    return Group(*parts)


def table_height(node: Node, wide: bool = False) -> int:
    """About how many lines `node_table` takes (title, header, rules, each GPU's tallest cell)."""
    rows = 0
    for gpu in node.gpus:
        held = len(gpu.instances) * (2 if wide else 1) + len(gpu.shares)
        rows += max(3, held, len(gpu.fits)) + 1
    return 4 + rows + len(node.problems)


def node_status(node: Node) -> Text:
    out = Text()
    if node.handshake_age_s is None:
        out.append("no agent handshake", style="dim")
    elif node.stale:
        out.append(f"agent silent for {duration(node.handshake_age_s)}: its GPUs are not scheduled", style="bold red")
    else:
        out.append(f"agent reported {duration(node.handshake_age_s)} ago", style="dim")
    if node.lock:
        out.append(f" · bind lock: {node.lock}", style="yellow")
    return out


def node_table(node: Node, now: datetime, wide: bool = False) -> RenderableType:
    table = Table(title=Text.assemble((f"node {node.name}", "bold"), f" · {plural(len(node.gpus), 'GPU')} · ",
                                      node_status(node)),
                  title_justify="left", show_lines=True, expand=False)
    table.add_column("GPU", no_wrap=True)
    table.add_column("model / mode", no_wrap=True)
    table.add_column("slices / usage", no_wrap=True)
    table.add_column("instances / shares")
    table.add_column("still fits")
    for gpu in node.gpus:
        table.add_row(Text(f"{gpu.index}\n{gpu.uuid}"), _model(gpu), _usage(gpu), _held(gpu, now, wide), _fits(gpu))
    if not node.problems:
        return table
    notes = [Text(f"! {p}", style="red") for p in node.problems]
    return Group(table, *notes)


def _model(gpu: Gpu) -> Text:
    out = Text(f"{gpu.model}\n{gpu.mode}")
    for flag, bad in (("unhealthy", not gpu.healthy), ("cordoned", gpu.cordoned), ("not scheduled", not gpu.scheduled)):
        if bad:
            out.append(f"\n{flag}", style="bold red")
    return out


def _usage(gpu: Gpu) -> Text:
    if gpu.mode == MODE_MIG:
        out = Text()
        for ch in gpu.slices:
            glyph, style = SLICE_STYLE[ch]
            out.append(glyph, style=style)
        if gpu.memory_slices:
            free = len(gpu.free_slices)
            where = f": {ranges(gpu.free_slices)}" if free else ""
            out.append(f"\nfree {free}/{gpu.memory_slices}{where}")
        return out
    if not gpu.scheduled:
        return Text("-")
    return Text(f"mem {gpu.used_memory_mib}/{gpu.memory_mib} MiB\ncores {gpu.used_cores}/{gpu.cores}%\n"
                f"tasks {gpu.tasks}/{gpu.split_count}")


def instance_line(inst: Instance, now: datetime, wide: bool = False) -> Text:
    out = Text(f"{inst.profile} @{inst.start}  ")
    if inst.state == "idle":
        age = f"idle {duration((now - inst.since).total_seconds())}" if inst.since else "idle"
        since = ""
        if inst.since:
            moment = inst.since.astimezone(now.tzinfo) if now.tzinfo else inst.since
            since = f" since {moment:%H:%M:%S}" if moment.date() == now.date() else f" since {moment:%Y-%m-%d %H:%M}"
        out.append(age + since, style="cyan")
    else:
        out.append(inst.pod or "?", style="green" if inst.state == "in-use" else "yellow")
        if inst.state == "reserved":
            out.append("  being created", style="yellow")
        elif inst.pod_phase is None:
            out.append("  (pod gone)", style="red")
        elif inst.pod_phase != "Running":
            out.append(f"  ({inst.pod_phase})", style="dim")
    if wide and inst.mig_uuid:
        out.append(f"\n  {inst.mig_uuid} GI {inst.gpu_instance_id} CI {inst.compute_instance_id}", style="dim")
    return out


def _held(gpu: Gpu, now: datetime, wide: bool) -> Text:
    lines = [instance_line(i, now, wide) for i in gpu.instances]
    lines += [Text.assemble((s.pod, "green"), f"  {s.memory_mib} MiB · {s.cores}% cores"
                            + (f" (container {s.container})" if s.container else "")) for s in gpu.shares]
    if not lines:
        return Text("—", style="dim")
    return Text("\n").join(lines)


def _fits(gpu: Gpu) -> Text:
    if not gpu.scheduled:
        return Text("—", style="dim")
    if gpu.mode != MODE_MIG:
        if not gpu.memory_mib:
            return Text("—", style="dim")
        return Text(f"{gpu.memory_mib - gpu.used_memory_mib} MiB · {gpu.cores - gpu.used_cores}% cores\n"
                    f"{gpu.split_count - gpu.tasks} tasks")
    if not gpu.fits:
        return Text("no profile fits", style="yellow")
    if not gpu.instances and len(gpu.free_slices) == gpu.memory_slices:
        return Text(f"empty: any profile\n(largest {gpu.fits[-1].profile})")
    return Text("\n").join(fit_line(fit) for fit in gpu.fits)


def fit_line(fit: Fit) -> Text:
    """`2g.20gb ×2  @2,4 · reuse @0 · reclaim @6`: the starts grouped by what taking them costs."""
    out = Text(f"{fit.profile} ×{fit.more} ")
    groups = []
    for how, style in (("free", ""), ("reuse", "cyan"), ("reclaim", "yellow")):
        starts = [s for s, kind in fit.starts if kind == how]
        if starts:
            groups.append(Text(("" if how == "free" else f"{how} ") + f"@{ranges(starts)}", style=style))
    return out + Text(" · ").join(groups)


# -- JSON -------------------------------------------------------------------------------------------


def to_json(view: ClusterView) -> dict[str, Any]:
    """The view as JSON-ready data (times as RFC3339 strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return convert(dataclasses.asdict(view))

"""`hami simulate`: packing quality of every placement policy on the identical sequences.

Runs the fill-up and online protocols (``fillup.py``, ``online.py``) for each policy and
seed in parallel worker processes, then prints a table, writes CSV files and PNG plots.
"Best" is the highest paired-seed mean, and every policy within max(0.2 point, one standard
deviation) of it.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hami._core import POLICIES
from hami._core.tables import HAMI_POLICIES
from hami.sim import fillup, online, traces
from hami.sim.runner import CAUSES, NODE_CHOICES, NOMINAL, policy_label

DEFAULT_POLICY = "fragmentation-aware"
DEFAULT_MODEL = "A100-SXM4-80GB"  # the MIG model the trace's nodes are re-modelled as
NOTE = ("CPU-only pods are skipped; CPU, memory and gpu_spec are ignored; shares map to MIG memory "
        "(share × the GPU's memory, then the memory rule); demand and allocation are in compute slices, "
        "counted with our nominal rule for every policy (HAMi's baselines place with HAMi's rule; "
        "'/nominal' runs them on ours).")


def parse_seeds(text: str) -> list[int]:
    """'42-51' or '1,2,5' → seeds (non-negative integers, ranges low-high)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.strip().isdecimal() or (dash and not hi.strip().isdecimal()):
            raise ValueError(f"--seeds {text!r}: {part!r} is not a seed or a range; write e.g. 42-51 or 1,2,3")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ValueError(f"--seeds {text!r}: the range {part!r} is empty; write it low-high, e.g. 42-51")
        out.extend(range(first, last + 1))
    if not out:
        raise ValueError(f"--seeds {text!r}: no seeds; write e.g. 42-51 or 1,2,3")
    return out


def parse_loads(text: str) -> list[float]:
    """'0.9,1.3' → offered loads (each a finite number > 0)."""
    loads = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            load = float(part)
        except ValueError:
            load = math.nan
        if not (math.isfinite(load) and load > 0):
            raise ValueError(f"--load {text!r}: {part!r} is not a load; loads are numbers > 0, e.g. 0.9,1.3")
        loads.append(load)
    if not loads:
        raise ValueError(f"--load {text!r}: no loads; write e.g. 0.9,1.3")
    return loads


def parse_mixes(text: str) -> list[str]:
    """'openb,uniform' → request mixes (online.MIXES)."""
    mixes = [m.strip() for m in text.split(",") if m.strip()]
    for mix in mixes:
        if mix not in online.MIXES:
            raise ValueError(f"--mix: unknown request mix {mix!r}; choose from {', '.join(online.MIXES)}")
    if not mixes:
        raise ValueError(f"--mix {text!r}: no mixes; choose from {', '.join(online.MIXES)}")
    return mixes


def check_model(name: str) -> str:
    """The catalog key of a MIG-capable model, or ValueError naming the choices."""
    from hami.devices import MIG_MODELS, UnknownModelError, find_model

    choices = ", ".join(m.key for m in MIG_MODELS)
    try:
        model = find_model(name)
    except UnknownModelError:
        raise ValueError(f"--model: unknown GPU model {name!r}; choose a MIG model: {choices}") from None
    if model.mig is None:
        raise ValueError(f"--model: {model.key} has no MIG; choose a MIG model: {choices}")
    return model.key


def trace_files(protocol: str, trace_dir: Path, trace: str = "default", mixes: Sequence[str] = ()) -> list[Path]:
    """The trace files a run reads: fill-up reads the node list and a pod list; online, only for the
    openb-derived mixes (``uniform`` reads nothing)."""
    if protocol == "fillup":
        return [trace_dir / traces.NODE_LIST, traces.pod_list_path(trace_dir, trace)]
    return [trace_dir / traces.DEFAULT_POD_LIST] if any(m != "uniform" for m in mixes) else []


def prepare_out(out: Path) -> Path:
    """Create ``--out`` and prove it writable before a run, whose results would be lost otherwise."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".hami-write-check-"):
            pass
    except OSError as err:
        raise ValueError(f"--out {str(out)!r}: cannot write there ({err.strerror or err}); "
                         "choose a folder you can write") from None
    return out


def require_plotting() -> None:
    """matplotlib draws the PNGs; it comes with the ``sim`` extra, not the scheduler's runtime set."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the plots need matplotlib, which the 'sim' extra installs: "
                         "pip install -e '.[sim]' (make demo does it)") from None


def parse_policies(text: str) -> list[str]:
    """'all' or a comma list of policies; a HAMi baseline may carry ``/nominal`` (runner)."""
    if text == "all":
        return list(POLICIES)
    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        policy_label(name)  # raises on an unknown name
    if not names:
        raise ValueError(f"--policies {text!r}: no policies; {policy_choices()}")
    return names


def policy_choices() -> str:
    """The accepted --policies names, for help and errors."""
    return f"choose from {', '.join(POLICIES)}, {', '.join(p + NOMINAL for p in HAMI_POLICIES)} or 'all'"


def check_node_choice(node_choice: str) -> str:
    if node_choice not in NODE_CHOICES:
        raise ValueError(f"unknown node choice {node_choice!r}; choose one of {', '.join(NODE_CHOICES)}")
    return node_choice


def best_policies(means: dict[str, float], sds: dict[str, float]) -> set[str]:
    top = max(means.values())
    leader = max(means, key=lambda p: means[p])
    margin = max(0.2, sds.get(leader, 0.0))
    return {p for p, m in means.items() if m >= top - margin}


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pool_map(fn: Callable, jobs: list[tuple], workers: int, progress_label: str) -> list:
    """Run jobs in processes with a progress bar; results in job order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: list = [None] * len(jobs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        task = bar.add_task(progress_label, total=len(jobs))
        if workers <= 1:
            for i, job in enumerate(jobs):
                results[i] = fn(*job)
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
                from concurrent.futures import as_completed

                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.advance(task)
    return results


# -- fill-up -------------------------------------------------------------------------------


@dataclass
class FillupSummary:
    trace: str
    policy: str
    seeds: int
    at: dict[int, float]  # mean allocation % at arrived %
    sd130: float
    first_failure: float
    rejected: dict[str, float]  # mean rejections by cause
    creates: float
    moves: int
    share: float  # requested-share allocation at the end: what FGD's fractional numbers measure
    best: bool = False


def _fillup_job(policy: str, trace_dir: str, trace: str, seed: int, model: str,
                node_choice: str = "extender") -> fillup.FillupResult:
    nodes = traces.load_nodes(Path(trace_dir) / traces.NODE_LIST)
    pods = traces.load_pods(traces.pod_list_path(Path(trace_dir), trace))
    return fillup.run_fillup(policy, nodes, pods, seed, model, node_choice=node_choice)


def simulate_fillup(trace: str, policies: list[str], seeds: list[int], model: str, trace_dir: Path,
                    workers: int, node_choice: str = "extender"
                    ) -> tuple[list[FillupSummary], list[fillup.FillupResult]]:
    # fail fast, in this process, on a bad trace
    traces.load_nodes(trace_dir / traces.NODE_LIST)
    traces.load_pods(traces.pod_list_path(trace_dir, trace))
    check_node_choice(node_choice)
    jobs = [(p, str(trace_dir), trace, s, model, node_choice) for p in policies for s in seeds]
    results = _pool_map(_fillup_job, jobs, workers, f"fill-up {trace}")
    label = Path(trace).stem.removeprefix("openb_pod_list_") if trace.endswith(".csv") else trace
    summaries = []
    for policy in policies:
        runs = [r for r in results if r.policy == policy]
        at = {x: _mean_sd([r.allocation_at(x) for r in runs])[0] for x in fillup.ARRIVED_POINTS}
        summaries.append(FillupSummary(
            label, policy, len(runs), at,
            _mean_sd([r.allocation_at(130) for r in runs])[1],
            _mean_sd([r.first_failure_point() for r in runs])[0],
            {c: statistics.fmean(r.counters.causes[c] for r in runs) for c in runs[0].counters.causes},
            statistics.fmean(r.counters.creates for r in runs),
            sum(r.counters.moves for r in runs),
            statistics.fmean(r.share_allocated for r in runs),
        ))
    best = best_policies({s.policy: s.at[130] for s in summaries}, {s.policy: s.sd130 for s in summaries})
    for s in summaries:
        s.best = s.policy in best
    return summaries, results


def write_fillup(out: Path, summaries: list[FillupSummary], results: list[fillup.FillupResult]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    trace = summaries[0].trace
    summary_csv = out / f"fillup-{trace}-summary.csv"
    with summary_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trace", "policy", "seeds", *[f"alloc_at_{x}" for x in fillup.ARRIVED_POINTS], "sd_at_130",
                    "first_failure_pct", *[f"rejected_{c}" for c in CAUSES],
                    "creates", "moves", "requested_share_allocated_pct", "best"])
        for s in summaries:
            w.writerow([s.trace, s.policy, s.seeds, *[f"{s.at[x]:.3f}" for x in fillup.ARRIVED_POINTS],
                        f"{s.sd130:.3f}", f"{s.first_failure:.2f}", *[f"{s.rejected[c]:.1f}" for c in CAUSES],
                        f"{s.creates:.1f}", s.moves,
                        f"{s.share:.3f}", int(s.best)])
    runs_csv = out / f"fillup-{trace}-runs.csv"
    with runs_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["policy", "seed", *[f"alloc_at_{x}" for x in fillup.ARRIVED_POINTS], "first_failure_pct",
                    "first_rejected_pod", "placed", "rejected", "creates", "moves", "requested_share_allocated_pct"])
        for r in results:
            w.writerow([r.policy, r.seed, *[f"{r.allocation_at(x):.3f}" for x in fillup.ARRIVED_POINTS],
                        f"{r.first_failure_point():.2f}", r.first_rejection, r.counters.placed, r.counters.rejected,
                        r.counters.creates, r.counters.moves, f"{r.share_allocated:.3f}"])
    png = out / f"fillup-{trace}.png"
    _plot_fillup(png, trace, results)
    return [summary_csv, runs_csv, png]


def _plot_fillup(path: Path, trace: str, results: list[fillup.FillupResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = np.arange(0, 131)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for policy in dict.fromkeys(r.policy for r in results):
        curves = [[r.allocation_at(x) for x in xs] for r in results if r.policy == policy]
        ax.plot(xs, np.mean(curves, axis=0), label=policy, lw=1.6 if policy == DEFAULT_POLICY else 1.0)
    ax.plot(xs, xs, color="grey", ls=":", lw=0.8, label="arrived")
    ax.set_xlabel("arrived demand (% of compute slices)")
    ax.set_ylabel("allocated (% of compute slices)")
    ax.set_title(f"fill-up on openb {trace}, re-modelled as MIG")
    ax.set_xlim(40, 130)
    ax.set_ylim(40, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fillup_table(summaries: list[FillupSummary]):
    from rich.table import Table

    t = Table(title=f"fill-up, openb {summaries[0].trace} as MIG: allocated % of compute slices at arrived %")
    t.add_column("policy")
    for x in fillup.ARRIVED_POINTS:
        t.add_column(f"{x}", justify="right")
    for col in ("sd@130", "first failure", "rejected cap/frag/geom/mem", "creates", "moves", "share %"):
        t.add_column(col, justify="right")
    for s in summaries:
        name = f"{s.policy} ★" if s.best else s.policy
        t.add_row(name, *[f"{s.at[x]:.2f}" for x in fillup.ARRIVED_POINTS], f"{s.sd130:.2f}",
                  f"{s.first_failure:.1f}", "/".join(f"{s.rejected[c]:.0f}" for c in CAUSES),
                  f"{s.creates:.0f}", str(s.moves), f"{s.share:.2f}")
    t.caption = ("share %: the placed pods' original GPU shares as % of the cluster's GPUs — the unit of "
                 "FGD's fractional-sharing results (95.39 % for FGD on default)")
    return t


# -- online --------------------------------------------------------------------------------


@dataclass
class OnlineSummary:
    mix: str
    load: float
    policy: str
    seeds: int
    accepted_pct: float
    demand_pct: float
    demand_sd: float
    utilisation: float
    creates: float
    reuses: float
    destroys: float
    geometry_changes: float
    moves: int
    best: bool = False


def _online_job(policy: str, mix: str, load: float, seed: int, trace_dir: str, arrivals: int, nodes: int,
                gpus: int, model: str, node_choice: str = "extender") -> online.OnlineResult:
    pods = traces.load_pods(traces.pod_list_path(Path(trace_dir), "default")) if mix != "uniform" else []
    return online.run_online(policy, mix, load, seed, pods, nodes, gpus, arrivals, model=model,
                             node_choice=node_choice)


def simulate_online(mixes: list[str], loads: list[float], policies: list[str], seeds: list[int],
                    trace_dir: Path, arrivals: int, nodes: int, gpus: int, model: str,
                    workers: int, node_choice: str = "extender"
                    ) -> tuple[list[OnlineSummary], list[online.OnlineResult]]:
    for mix in mixes:
        if mix not in online.MIXES:
            raise ValueError(f"unknown request mix {mix!r}; choose from {', '.join(online.MIXES)}")
    check_node_choice(node_choice)
    if any(m != "uniform" for m in mixes):
        traces.load_pods(traces.pod_list_path(trace_dir, "default"))
    jobs = [(p, m, ld, s, str(trace_dir), arrivals, nodes, gpus, model, node_choice)
            for m in mixes for ld in loads for p in policies for s in seeds]
    results = _pool_map(_online_job, jobs, workers, "online")
    summaries = []
    for mix in mixes:
        for load in loads:
            group = []
            for policy in policies:
                runs = [r for r in results if (r.policy, r.mix, r.load) == (policy, mix, load)]
                mean, sd = _mean_sd([r.accepted_demand_pct for r in runs])
                group.append(OnlineSummary(
                    mix, load, policy, len(runs), _mean_sd([r.accepted_pct for r in runs])[0], mean, sd,
                    _mean_sd([r.utilisation for r in runs])[0],
                    statistics.fmean(r.per_thousand(r.counters.creates) for r in runs),
                    statistics.fmean(r.per_thousand(r.counters.reuses) for r in runs),
                    statistics.fmean(r.per_thousand(r.counters.destroys) for r in runs),
                    statistics.fmean(r.per_thousand(r.counters.geometry_changes) for r in runs),
                    sum(r.counters.moves for r in runs),
                ))
            best = best_policies({s.policy: s.demand_pct for s in group}, {s.policy: s.demand_sd for s in group})
            for s in group:
                s.best = s.policy in best
            summaries += group
    return summaries, results


def write_online(out: Path, summaries: list[OnlineSummary], results: list[online.OnlineResult]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary_csv = out / "online-summary.csv"
    with summary_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["mix", "load", "policy", "seeds", "accepted_pods_pct", "accepted_demand_pct", "demand_sd",
                    "utilisation_pct", "creates_per_1000", "reuses_per_1000", "destroys_per_1000",
                    "geometry_changes_per_1000", "moves", "best"])
        for s in summaries:
            w.writerow([s.mix, s.load, s.policy, s.seeds, f"{s.accepted_pct:.3f}", f"{s.demand_pct:.3f}",
                        f"{s.demand_sd:.3f}", f"{s.utilisation:.3f}", f"{s.creates:.1f}", f"{s.reuses:.1f}",
                        f"{s.destroys:.1f}", f"{s.geometry_changes:.1f}", s.moves, int(s.best)])
    runs_csv = out / "online-runs.csv"
    with runs_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["mix", "load", "policy", "seed", "measured", "accepted", "accepted_demand_pct",
                    "utilisation_pct", "creates", "reuses", "destroys", "geometry_changes", "moves"])
        for r in results:
            c = r.counters
            w.writerow([r.mix, r.load, r.policy, r.seed, r.measured, r.accepted, f"{r.accepted_demand_pct:.3f}",
                        f"{r.utilisation:.3f}", c.creates, c.reuses, c.destroys, c.geometry_changes, c.moves])
    png = out / "online.png"
    _plot_online(png, summaries)
    return [summary_csv, runs_csv, png]


def _plot_online(path: Path, summaries: list[OnlineSummary]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(dict.fromkeys((s.mix, s.load) for s in summaries))
    policies = list(dict.fromkeys(s.policy for s in summaries))
    width = 0.8 / max(len(policies), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 5.2), dpi=110)
    for j, policy in enumerate(policies):
        vals = [next(s.demand_pct for s in summaries if (s.mix, s.load, s.policy) == (*g, policy)) for g in groups]
        errs = [next(s.demand_sd for s in summaries if (s.mix, s.load, s.policy) == (*g, policy)) for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, vals, width, yerr=errs, label=policy, capsize=2)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{m}\nload {ld}" for m, ld in groups])
    ax.set_ylabel("accepted demand (% of arrived compute slices)")
    ax.set_title("online: Poisson arrivals, lognormal lifetimes, reject on arrival")
    low = min(s.demand_pct for s in summaries)
    ax.set_ylim(max(0, low - 10), 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def online_table(summaries: list[OnlineSummary]):
    from rich.table import Table

    t = Table(title="online: accepted pods and demand (compute slices), per 1,000 placed pods")
    for col in ("mix", "load", "policy", "pods %", "demand %", "sd", "util %", "creates", "reuses", "destroys",
                "geom. changes", "moves"):
        t.add_column(col, justify="right" if col not in ("mix", "policy") else "left")
    for s in summaries:
        t.add_row(s.mix, f"{s.load:g}", f"{s.policy} ★" if s.best else s.policy, f"{s.accepted_pct:.2f}",
                  f"{s.demand_pct:.2f}", f"{s.demand_sd:.2f}", f"{s.utilisation:.2f}", f"{s.creates:.0f}",
                  f"{s.reuses:.0f}", f"{s.destroys:.0f}", f"{s.geometry_changes:.0f}", str(s.moves))
    return t


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))

"""The `hami` command: `hami demo`, `hami simulate`, `hami sim up`, `hami scheduler` (extender,
webhook, metrics), `hami device-plugin` (the node agent) and `hami inspect` (the cluster's GPUs)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    from hami import __version__

    parser = argparse.ArgumentParser(prog="hami", description="Dynamic-MIG GPU scheduler for Kubernetes")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        from hami.sim import demo
    except ModuleNotFoundError as err:  # the container image ships without the simulator (Dockerfile)
        if err.name != "hami.sim":
            raise
        demo = None
    if demo is not None:
        demo.add_parser(sub)
        _simulate_parser(sub)
        _sim_parser(sub)
    _device_plugin_parser(sub)
    from hami.scheduler import app as scheduler_app

    scheduler_app.add_parser(sub)
    from hami.inspect import cli as inspect_cli

    inspect_cli.add_parser(sub)
    sub.add_parser("version", help="print the version")
    _each_subcommand(parser)
    return parser


def _sim_parser(sub) -> None:
    sim = sub.add_parser("sim", help="the local control plane (Kubernetes API subset, kube-scheduler, kubelets)")
    sim_cmd = sim.add_subparsers(dest="sim_command", required=True)
    up = sim_cmd.add_parser("up", help="start a local control plane and print the kubeconfig path")
    up.add_argument("--nodes", required=True,
                    help="cluster spec, e.g. '2 x (8 x A100-SXM4-80GB, mode=mig), 1 x (4 x A10, mode=hami-core)'")
    up.add_argument("--port", type=int, default=0, help="API server port on 127.0.0.1 (default: a free one)")
    up.add_argument("--workdir", default=None, help="folder for the kubeconfig, sockets and state files")
    up.add_argument("--extender-url", default=None, help="scheduler extender URL (default: none)")


def _subcommands(parser: argparse.ArgumentParser):
    """Every (sub)command parser below ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield child
                yield from _subcommands(child)


def _each_subcommand(parser: argparse.ArgumentParser) -> None:
    """`-v` after the subcommand too (`hami demo -v`), and each subcommand remembers its parser so
    that `hami demo --bogus` shows demo's usage, not the top-level one (`main`)."""
    for child in _subcommands(parser):
        child.set_defaults(_subcommand_parser=child)
        with contextlib.suppress(argparse.ArgumentError):  # a subcommand with its own -v keeps it
            # SUPPRESS: when -v is not given here, the top-level value stands
            child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="debug logging")


def _device_plugin_parser(sub) -> None:
    import os

    dp = sub.add_parser("device-plugin", help="the node agent: kubelet device plugin, registration, MIG realisation")
    dp.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default $NODE_NAME)")
    dp.add_argument("--kubeconfig", default=None, help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    dp.add_argument("--plugin-dir", default="/var/lib/kubelet/device-plugins",
                    help="kubelet's device-plugin folder (default %(default)s)")
    dp.add_argument("--resource-name", default="nvidia.com/gpu", help="extended resource (default nvidia.com/gpu)")
    dp.add_argument("--socket-name", default="nvidia-gpu.sock",
                    help="our socket's name in --plugin-dir (default %(default)s)")
    dp.add_argument("--config-file", default=None,
                    help="the mounted hami-device-plugin config.json (default: read the ConfigMap)")
    dp.add_argument("--config-map", default="kube-system/hami-device-plugin",
                    help="<namespace>/<name> of the node config ConfigMap (default kube-system/hami-device-plugin)")
    dp.add_argument("--device-config-file", default=None, help="HAMi's device-config.yaml (nvidia: defaults)")
    dp.add_argument("--hook-path", default=os.environ.get("HOOK_PATH", "/usr/local"),
                    help="host folder with vgpu/libvgpu.so (default $HOOK_PATH or /usr/local)")
    dp.add_argument("--metrics-address", default="0.0.0.0",
                    help="address of /metrics, /healthz, /readyz (default %(default)s)")
    dp.add_argument("--metrics-port", type=int, default=9394, help="their port (default 9394; -1: off)")
    dp.add_argument("--sync-interval", type=float, default=5.0,
                    help="seconds between reconciliations (default %(default)s)")
    dp.add_argument("--idle-destroy-after", type=float, default=600.0,
                    help="destroy MIG instances idle this many seconds (default 600; 0: only when needed)")
    dp.add_argument("--nvml-library", default=None, help="libnvidia-ml path (default $HAMI_NVML_LIBRARY)")


def _device_plugin(args) -> int:
    from pathlib import Path

    from hami.deviceplugin.agent import serve
    from hami.deviceplugin.options import AgentOptions

    if not args.node_name:
        print("hami device-plugin: no node name: pass --node-name or set NODE_NAME (the downward API's "
              "spec.nodeName)", file=sys.stderr)
        return 2
    namespace, _, name = args.config_map.rpartition("/")
    if not namespace or not name:
        print(f"hami device-plugin: --config-map {args.config_map!r} must be <namespace>/<name>", file=sys.stderr)
        return 2
    if args.sync_interval <= 0 or args.idle_destroy_after < 0:
        print("hami device-plugin: --sync-interval must be > 0 and --idle-destroy-after >= 0", file=sys.stderr)
        return 2
    options = AgentOptions(
        node_name=args.node_name, plugin_dir=Path(args.plugin_dir), resource_name=args.resource_name,
        socket_name=args.socket_name, config_file=Path(args.config_file) if args.config_file else None,
        config_map=name, config_namespace=namespace,
        device_config_file=Path(args.device_config_file) if args.device_config_file else None,
        hook_path=Path(args.hook_path), metrics_address=args.metrics_address,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port, sync_interval=args.sync_interval,
        idle_destroy_after=args.idle_destroy_after)
    return serve(options, kubeconfig=args.kubeconfig, nvml_library=args.nvml_library)


def _simulate_parser(sub) -> None:
    from hami.sim import online, simulate, traces

    sim = sub.add_parser("simulate", help="compare placement policies: openb trace or uniform mix (engine level)",
                         description=f"The openb trace is not shipped: get the folder {traces.UPSTREAM_FOLDER} "
                         f"of {traces.UPSTREAM_REPOSITORY} and pass --trace-dir (README, 'The openb trace'). "
                         "'online --mix uniform' needs no trace.")
    kinds = sim.add_subparsers(dest="protocol", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--policies", default="all",
                        help=f"comma list of policies (default all): {simulate.policy_choices()}")
    common.add_argument("--model", default=simulate.DEFAULT_MODEL,
                        help=f"MIG model the nodes are re-modelled as (default {simulate.DEFAULT_MODEL}; "
                        "any MIG model of hami/devices, e.g. H100-SXM5-80GB)")
    common.add_argument("--trace-dir", default=None, help="folder of the openb CSVs (default: $HAMI_TRACE_DIR "
                        "or ../shared/traces/openb-gpu-v2023/csv); get it from "
                        f"{traces.UPSTREAM_REPOSITORY}, folder {traces.UPSTREAM_FOLDER}")
    common.add_argument("--out", default="sim-results", help="folder for CSV and PNG files (default sim-results)")
    common.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    common.add_argument("--node-choice", default="extender", choices=("extender", "exact"),
                        help="kube-scheduler's node choice: 'extender' (default) ranks nodes by the extender's "
                        "0-10 scores, (score*10+50)//100; 'exact' by the engine's 0-100 scores")
    fill = kinds.add_parser("fillup", parents=[common], help="the FGD fill-up protocol (no departures)")
    fill.add_argument("--trace", default="default", help="pod list: default, gpushare40, multigpu30, … or a path")
    fill.add_argument("--seeds", default="42-51", help="seeds, e.g. 42-51 (default) or 1,2,3")
    onl = kinds.add_parser("online", parents=[common], help="Poisson arrivals, lognormal lifetimes")
    onl.add_argument("--mix", default=",".join(online.MIXES),
                     help=f"request mixes (default all: {', '.join(online.MIXES)}); only uniform needs no trace")
    onl.add_argument("--load", default="0.9,1.3", help="offered loads (default 0.9,1.3)")
    onl.add_argument("--seeds", default="1-5", help="paired seeds (default 1-5)")
    onl.add_argument("--arrivals", type=int, default=20_000, help="arrivals per run (default 20000)")
    onl.add_argument("--nodes", type=int, default=30, help="nodes (default 30)")
    onl.add_argument("--gpus-per-node", type=int, default=8, help="GPUs a node (default 8)")
    onl.add_argument("--full-stack", action="store_true", help="one run through the API server, hami scheduler and "
                     "node agents, checked pod by pod against the engine level (hami/sim/fullstack.py; docs/demo.md)")


def _simulate(args) -> int:
    """Check every argument, the trace, the output folder and matplotlib before the run (minutes
    of work must not end in a bad-argument error); each error is one line on stderr, exit 2."""
    from pathlib import Path

    from rich.console import Console

    from hami.sim import simulate, traces

    online = args.protocol == "online"
    if online and args.full_stack:
        from hami.sim import fullstack

        return fullstack.run_cli(args)
    try:
        policies = simulate.parse_policies(args.policies)
        seeds = simulate.parse_seeds(args.seeds)
        model = simulate.check_model(args.model)
        simulate.check_node_choice(args.node_choice)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be at least 1 (default: the CPU count)")
        workers = args.workers or simulate.default_workers()
        mixes = simulate.parse_mixes(args.mix) if online else []
        loads = simulate.parse_loads(args.load) if online else []
        if online and (args.arrivals < 10 or args.nodes < 1 or args.gpus_per_node < 1):
            raise ValueError("--arrivals must be at least 10, --nodes and --gpus-per-node at least 1")
        trace_dir = Path(args.trace_dir) if args.trace_dir else traces.default_trace_dir()
        trace = getattr(args, "trace", "default")
        traces.require(trace_dir, simulate.trace_files(args.protocol, trace_dir, trace, mixes))
        simulate.require_plotting()
        out = simulate.prepare_out(Path(args.out))
    except (ValueError, LookupError) as err:  # TraceError is a ValueError
        print(f"hami simulate: {err}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for the tables
        console = Console(width=200)
    try:
        console.print(f"[dim]{simulate.NOTE}[/]")
        if not online:
            summaries, results = simulate.simulate_fillup(trace, policies, seeds, model, trace_dir,
                                                          workers, args.node_choice)
            console.print(simulate.fillup_table(summaries))
            files = simulate.write_fillup(out, summaries, results)
        else:
            summaries, results = simulate.simulate_online(mixes, loads, policies, seeds, trace_dir, args.arrivals,
                                                          args.nodes, args.gpus_per_node, model, workers,
                                                          args.node_choice)
            console.print(simulate.online_table(summaries))
            files = simulate.write_online(out, summaries, results)
    except (ValueError, LookupError) as err:
        print(f"hami simulate: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # checked writable above; a disk that fills up still lands here
        print(f"hami simulate: writing the results to {str(out)!r} failed: {err}", file=sys.stderr)
        return 2
    console.print("★ best: the highest paired-seed mean and every policy within max(0.2 point, one sd)")
    for f in files:
        console.print(f"wrote {f}")
    return 0


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the extender's urlPrefix (http[s]://HOST[:PORT][/PATH]), or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError as err:
        return f"{err}; write http://HOST:PORT, e.g. http://127.0.0.1:8080"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "write http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:8080"
    if parts.query or parts.fragment:
        return "a urlPrefix takes no ?query or #fragment (the verbs /filter, /prioritize, /bind are appended)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top level; the subcommand given them says it with its usage
        getattr(args, "_subcommand_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s")
    if args.command == "version":
        from hami import __version__

        print(__version__)
        return 0
    if args.command == "device-plugin":
        logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
        return _device_plugin(args)
    if args.command == "scheduler":
        from hami.scheduler import app as scheduler_app

        logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
        return scheduler_app.run(args)
    if args.command == "inspect":
        from hami.inspect import cli as inspect_cli

        return inspect_cli.run(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "sim":
        from hami.sim import cluster

        if args.extender_url is not None and (problem := _url_problem(args.extender_url)):
            print(f"hami sim up: --extender-url {args.extender_url!r}: {problem}", file=sys.stderr)
            return 2
        return cluster.sim_up(args.nodes, workdir=args.workdir, port=args.port, extender_url=args.extender_url)
    if args.command == "demo":
        from hami.sim import demo

        if getattr(args, "show", 0) < 0:
            print(f"hami demo: --show {args.show}: must be 0 or more (decisions to print)", file=sys.stderr)
            return 2
        return demo.run_cli(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

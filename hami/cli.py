"""The `hami` command: `hami demo`, `hami simulate`, `hami sim up`, `hami scheduler` (extender,
webhook, metrics) and `hami device-plugin` (the node agent); inspect arrives with its issue."""

from __future__ import annotations

import argparse
import logging
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hami", description="Dynamic-MIG GPU scheduler for Kubernetes")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    from hami.sim import demo

    demo.add_parser(sub)
    _simulate_parser(sub)
    sim = sub.add_parser("sim", help="the local control plane (Kubernetes API subset, kube-scheduler, kubelets)")
    sim_cmd = sim.add_subparsers(dest="sim_command", required=True)
    up = sim_cmd.add_parser("up", help="start a local control plane and print the kubeconfig path")
    up.add_argument("--nodes", required=True,
                    help="cluster spec, e.g. '2 x (8 x A100-SXM4-80GB, mode=mig), 1 x (4 x A10, mode=hami-core)'")
    up.add_argument("--port", type=int, default=0, help="API server port on 127.0.0.1 (default: a free one)")
    up.add_argument("--workdir", default=None, help="folder for the kubeconfig, sockets and state files")
    up.add_argument("--extender-url", default=None, help="scheduler extender URL (default: none)")
    _device_plugin_parser(sub)
    from hami.scheduler import app as scheduler_app

    scheduler_app.add_parser(sub)
    sub.add_parser("version", help="print the version")
    return parser


def _device_plugin_parser(sub) -> None:
    import os

    dp = sub.add_parser("device-plugin", help="the node agent: kubelet device plugin, registration, MIG realisation")
    dp.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node (default $NODE_NAME)")
    dp.add_argument("--kubeconfig", default=None, help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    dp.add_argument("--plugin-dir", default="/var/lib/kubelet/device-plugins", help="kubelet's device-plugin folder")
    dp.add_argument("--resource-name", default="nvidia.com/gpu", help="extended resource (default nvidia.com/gpu)")
    dp.add_argument("--socket-name", default="nvidia-gpu.sock", help="our socket's name in --plugin-dir")
    dp.add_argument("--config-file", default=None,
                    help="the mounted hami-device-plugin config.json (default: read the ConfigMap)")
    dp.add_argument("--config-map", default="kube-system/hami-device-plugin",
                    help="<namespace>/<name> of the node config ConfigMap (default kube-system/hami-device-plugin)")
    dp.add_argument("--device-config-file", default=None, help="HAMi's device-config.yaml (nvidia: defaults)")
    dp.add_argument("--hook-path", default=os.environ.get("HOOK_PATH", "/usr/local"),
                    help="host folder with vgpu/libvgpu.so (default $HOOK_PATH or /usr/local)")
    dp.add_argument("--metrics-address", default="0.0.0.0", help="address of /metrics, /healthz, /readyz")
    dp.add_argument("--metrics-port", type=int, default=9394, help="their port (default 9394; -1: off)")
    dp.add_argument("--sync-interval", type=float, default=5.0, help="seconds between reconciliations")
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
    sim = sub.add_parser("simulate", help="compare placement policies on the openb trace (engine level)")
    kinds = sim.add_subparsers(dest="protocol", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--policies", default="all", help="comma list of policies, or 'all' (default)")
    common.add_argument("--model", default="A100-SXM4-80GB", help="MIG model the nodes are re-modelled as")
    common.add_argument("--trace-dir", default=None, help="folder of the openb CSVs (default: $HAMI_TRACE_DIR "
                        "or ../shared/traces/openb-gpu-v2023/csv)")
    common.add_argument("--out", default="sim-results", help="folder for CSV and PNG files (default sim-results)")
    common.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    common.add_argument("--node-choice", default="extender", choices=("extender", "exact"),
                        help="kube-scheduler's node choice: 'extender' (default) ranks nodes by the extender's "
                        "0-10 scores, (score*10+50)//100; 'exact' by the engine's 0-100 scores")
    fill = kinds.add_parser("fillup", parents=[common], help="the FGD fill-up protocol (no departures)")
    fill.add_argument("--trace", default="default", help="pod list: default, gpushare40, multigpu30, … or a path")
    fill.add_argument("--seeds", default="42-51", help="seeds, e.g. 42-51 (default) or 1,2,3")
    onl = kinds.add_parser("online", parents=[common], help="Poisson arrivals, lognormal lifetimes")
    onl.add_argument("--mix", default="openb,small,uniform", help="request mixes (default all three)")
    onl.add_argument("--load", default="0.9,1.3", help="offered loads (default 0.9,1.3)")
    onl.add_argument("--seeds", default="1-5", help="paired seeds (default 1-5)")
    onl.add_argument("--arrivals", type=int, default=20_000, help="arrivals per run (default 20000)")
    onl.add_argument("--nodes", type=int, default=30, help="nodes (default 30)")
    onl.add_argument("--gpus-per-node", type=int, default=8, help="GPUs a node (default 8)")


def _simulate(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from hami.sim import simulate, traces

    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for the tables
        console = Console(width=200)
    try:
        policies = simulate.parse_policies(args.policies)
        seeds = simulate.parse_seeds(args.seeds)
        trace_dir = Path(args.trace_dir) if args.trace_dir else traces.default_trace_dir()
        workers = args.workers or simulate.default_workers()
        out = Path(args.out)
        console.print(f"[dim]{simulate.NOTE}[/]")
        if args.protocol == "fillup":
            summaries, results = simulate.simulate_fillup(args.trace, policies, seeds, args.model, trace_dir,
                                                          workers, args.node_choice)
            console.print(simulate.fillup_table(summaries))
            files = simulate.write_fillup(out, summaries, results)
        else:
            mixes = [m.strip() for m in args.mix.split(",") if m.strip()]
            loads = [float(x) for x in args.load.split(",") if x.strip()]
            if args.arrivals < 10 or args.nodes < 1 or args.gpus_per_node < 1:
                raise ValueError("--arrivals must be at least 10, --nodes and --gpus-per-node at least 1")
            summaries, results = simulate.simulate_online(mixes, loads, policies, seeds, trace_dir, args.arrivals,
                                                          args.nodes, args.gpus_per_node, args.model, workers,
                                                          args.node_choice)
            console.print(simulate.online_table(summaries))
            files = simulate.write_online(out, summaries, results)
    except (ValueError, traces.TraceError, LookupError) as err:
        print(f"hami simulate: {err}", file=sys.stderr)
        return 2
    console.print("★ best: the highest paired-seed mean and every policy within max(0.2 point, one sd)")
    for f in files:
        console.print(f"wrote {f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "sim":
        from hami.sim import cluster

        return cluster.sim_up(args.nodes, workdir=args.workdir, port=args.port, extender_url=args.extender_url)
    if args.command == "demo":
        from hami.sim import demo

        return demo.run_cli(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

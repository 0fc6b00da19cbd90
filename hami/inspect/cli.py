"""`hami inspect [--node NAME] [--watch [SECONDS]] [--json]`: the cluster's GPUs in the terminal.

Read-only: it lists Nodes and Pods (RBAC: `list` on both) through any kubeconfig. Every error a
user can cause or meet (no kubeconfig, an API server that does not answer, credentials refused)
is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

PROG = "hami inspect"
DEFAULT_WATCH = 2.0
CACHE_LOGGER = "hami.scheduler.cache"  # hami.inspect.collect.CACHE_LOGGER, without importing it early


def add_parser(sub) -> argparse.ArgumentParser:
    from hami._core.tables import POLICIES

    p = sub.add_parser("inspect", help="a terminal view of the cluster's GPUs: MIG instances, free slices, shares",
                       description="Per node and GPU: the mode, the MIG instances by profile and placement with the "
                       "pod using each (or idle since when), the free memory slices and the profiles that still fit, "
                       "and the hami-core shares. Needs list on nodes and pods.")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--node", action="append", default=[], metavar="NAME",
                   help="show only this node (repeat for several)")
    p.add_argument("--watch", nargs="?", type=float, const=DEFAULT_WATCH, default=None, metavar="SECONDS",
                   help=f"refresh every SECONDS (default {DEFAULT_WATCH:g}) until Ctrl-C")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="with --watch: stop after N refreshes (default: until Ctrl-C)")
    p.add_argument("--wide", action="store_true", help="also show each MIG instance's uuid and GI/CI ids")
    p.add_argument("--json", action="store_true",
                   help="machine-readable output (with --watch: one JSON document a line, a line per refresh)")
    p.add_argument("--device-config-file", default=None,
                   help="the scheduler's device-config.yaml, so free profiles follow its knownMigGeometries "
                        "(default: the built-in defaults, as the scheduler's)")
    p.add_argument("--policy", default="fragmentation-aware", choices=POLICIES,
                   help="the scheduler's placement policy, for the profiles that still fit (default %(default)s)")
    return p


class UsageError(Exception):
    """Bad input, said in one line."""


def kubeconfig_path(flag: str | None) -> str:
    """--kubeconfig, else $KUBECONFIG (a list of files, as kubectl takes it), else ~/.kube/config."""
    if flag:
        if Path(flag).is_dir():
            raise UsageError(f"kubeconfig {flag} is a folder; pass the path of a kubeconfig file")
        if not Path(flag).is_file():
            raise UsageError(f"kubeconfig {flag} does not exist (pass the path of a kubeconfig file)")
        return flag
    env = os.environ.get("KUBECONFIG", "")
    if env:
        files = [f for f in env.split(os.pathsep) if f]
        if not any(Path(f).is_file() for f in files):
            raise UsageError(f"$KUBECONFIG names no existing file ({env}); pass --kubeconfig or fix KUBECONFIG")
        return env
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return str(home)
    raise UsageError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")


def explain(err: Exception, server: str) -> str:
    """A KubeError as one line that says what to do."""
    from hami.k8s import CredentialsError

    if isinstance(err, CredentialsError):
        return f"{err.message or err}".splitlines()[0]
    status = getattr(err, "status", 0)
    if status == 0:
        detail = str(getattr(err, "message", "") or err)
        match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", detail)
        why = match.group(1).strip() if match else (getattr(err, "reason", "") or "no answer")
        return f"cannot reach the API server at {server}: {why}"
    if status == 401:
        return f"the API server at {server} refused the kubeconfig's credentials (401 Unauthorized)"
    if status == 403:
        message = getattr(err, "message", "") or "forbidden"
        return f"forbidden: {message} (hami inspect needs list on nodes and pods)"
    return " ".join(str(err).split())


@contextlib.contextmanager
def _quiet(verbose: bool):
    """The view shows what the fold could not use, and the HTTP client's retries are not news:
    keep both off stderr (unless -v), and put the loggers back after (tests run us in-process)."""
    import logging

    cache, http = logging.getLogger(CACHE_LOGGER), logging.getLogger("urllib3")
    propagate, level = cache.propagate, http.level
    if not verbose:
        cache.propagate = False
        http.setLevel(logging.ERROR)
    try:
        yield
    finally:
        cache.propagate = propagate
        http.setLevel(level)


def run(args: argparse.Namespace) -> int:
    with _quiet(getattr(args, "verbose", False)):
        try:
            return _run(args)
        except KeyboardInterrupt:  # Ctrl-C before a watch started (a watch ends with 0 itself)
            return 130
        except BrokenPipeError:  # `hami inspect --watch --json | head -1`: the reader is done
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


def _run(args: argparse.Namespace) -> int:
    from hami.devices.errors import ConfigError
    from hami.inspect import collect

    try:
        if args.watch is not None and not args.watch > 0:
            raise UsageError(f"--watch {args.watch:g}: the interval must be more than 0 seconds")
        if args.count < 0 or (args.count and args.watch is None):
            raise UsageError("--count N takes N >= 1 and goes with --watch")
        config = None
        if args.device_config_file:
            from hami.devices.config import load_device_config

            try:
                config = load_device_config(Path(args.device_config_file).read_text()).nvidia
            except OSError as err:
                raise UsageError(f"--device-config-file: {err.strerror}: {args.device_config_file}") from None
            except ConfigError as err:
                raise UsageError(f"--device-config-file {args.device_config_file}: {err}") from None
        path = kubeconfig_path(args.kubeconfig)
    except UsageError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    from hami.k8s import Kube, KubeError

    try:
        kube = Kube.connect(path)
    except KubeError as err:
        print(f"{PROG}: cannot use kubeconfig {path}: {explain(err, '')}", file=sys.stderr)
        return 2
    server = kube.api_client.configuration.host

    def fetch():
        return collect.collect(kube, only=args.node, config=config, policy=args.policy)

    try:
        try:
            view = fetch()
        except (KubeError, collect.UnknownNode) as err:
            print(f"{PROG}: {explain(err, server) if isinstance(err, KubeError) else err}", file=sys.stderr)
            return 2
        if args.watch is None:
            _show(view, args.json, args.wide)
            return 0
        return _watch(view, fetch, args, lambda err: explain(err, server))
    finally:
        kube.close()


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # pipes, logs, CI: wide enough for the tables
        console = Console(width=160)
    return console


def _show(view, as_json: bool, wide: bool) -> None:
    from hami.inspect.render import render, to_json

    if as_json:
        print(json.dumps(to_json(view), indent=2))
    else:
        _console().print(render(view, wide=wide))


def _watch(view, fetch, args, explain_error) -> int:
    """Refresh until Ctrl-C (or SIGTERM), or `--count` views. A failed refresh keeps the last
    good view on screen with the error above it, and tries again at the next tick."""
    from rich.live import Live

    from hami.inspect.collect import UnknownNode
    from hami.inspect.render import render, to_json
    from hami.k8s import KubeError

    restore = _sigterm_as_interrupt()
    console = _console()
    live = None
    shown = 0
    try:
        error = None
        if not args.json and console.is_terminal:
            live = Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            live.start()
        while True:
            if args.json:
                print(json.dumps({**to_json(view), "error": error}), flush=True)
            elif live is not None:
                live.update(render(view, watch=args.watch, error=error, wide=args.wide, max_lines=console.height),
                            refresh=True)
            else:
                console.print(render(view, watch=args.watch, error=error, wide=args.wide))
                console.print()
            shown += 1
            if args.count and shown >= args.count:
                return 0
            time.sleep(args.watch)
            try:
                view, error = fetch(), None
            except (KubeError, UnknownNode) as err:
                error = explain_error(err) if isinstance(err, KubeError) else str(err)
    except KeyboardInterrupt:
        return 0
    finally:
        if live is not None:
            live.stop()
        restore()


def _sigterm_as_interrupt():
    """SIGTERM stops a watch as Ctrl-C does (main thread only); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)

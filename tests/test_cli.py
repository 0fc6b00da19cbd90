"""A newcomer's first hour (issue 13): the `hami` command line fails early, in one line, and says
what to do; `hami simulate` works without the openb trace where it can and says where to get it
where it cannot; the runtime set and the extras are what the code imports; the build is quiet."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from hami import __version__, cli
from hami._core import POLICIES
from hami.nvml import Nvml, errors, smoke
from hami.sim import online, simulate, traces

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "sim" / "fixtures"
ONE_NODE = "1 x (1 x A10, mode=hami-core)"


def _one_line_error(err: str, prefix: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


@pytest.fixture
def no_trace(tmp_path, monkeypatch):
    """A clone's view: HAMI_TRACE_DIR names a folder without the trace."""
    empty = tmp_path / "no-trace"
    empty.mkdir()
    monkeypatch.setenv("HAMI_TRACE_DIR", str(empty))
    return empty


# -- hami --version, usage, -v, --help -----------------------------------------------------


def test_version_flag_prints_the_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hami {__version__}"


def test_an_unknown_option_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hami demo ") and "hami demo: error: unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        cli.main(["sim", "up", "--nodes", ONE_NODE, "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: hami sim up ") and "hami sim up: error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("argv, verbose", [
    (["demo"], False), (["-v", "demo"], True), (["demo", "-v"], True), (["demo", "--verbose"], True),
    (["simulate", "online", "-v"], True), (["sim", "up", "--nodes", ONE_NODE, "-v"], True),
    (["-v", "sim", "up", "--nodes", ONE_NODE], True), (["version"], False),
])
def test_verbose_before_or_after_the_subcommand(argv, verbose):
    args, unknown = cli._parser().parse_known_args(argv)
    assert unknown == [] and args.verbose is verbose


def test_simulate_help_lists_policies_mixes_and_the_default_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a hyphenated name
    with pytest.raises(SystemExit):
        cli.main(["simulate", "online", "--help"])
    out = capsys.readouterr().out
    for name in (*POLICIES, "hami-v2.10/nominal", "hami-legacy/nominal", *online.MIXES):
        assert name in out
    assert f"default {simulate.DEFAULT_MODEL}" in out
    with pytest.raises(SystemExit):
        cli.main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert traces.UPSTREAM_REPOSITORY in out and traces.UPSTREAM_FOLDER in out


# -- hami simulate without the trace -------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["simulate", "online", "--mix", "openb"],
    ["simulate", "online", "--mix", "uniform,small"],
    ["simulate", "online"],  # the default mixes include openb
    ["simulate", "fillup"],
])
def test_without_the_trace_it_says_where_to_get_it(argv, no_trace, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([*argv, "--seeds", "1", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    line = _one_line_error(captured.err, "hami simulate: the openb trace is not in ")
    for what in (str(no_trace), traces.UPSTREAM_REPOSITORY, traces.UPSTREAM_FOLDER, "--trace-dir",
                 "HAMI_TRACE_DIR", "--mix uniform"):
        assert what in line
    assert captured.out == "" and not out.exists()  # nothing ran, nothing written


def test_the_default_trace_dir_is_beside_the_clone_never_inside(monkeypatch):
    monkeypatch.delenv("HAMI_TRACE_DIR", raising=False)
    assert traces.default_trace_dir() == ROOT.parent / "shared" / "traces" / "openb-gpu-v2023" / "csv"
    monkeypatch.setenv("HAMI_TRACE_DIR", "/data/openb")
    assert traces.default_trace_dir() == Path("/data/openb")


def test_the_trace_is_not_in_the_repository():
    """Its upstream states no redistribution terms: no openb CSV is committed (ours are fixtures)."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    assert not [f for f in listed.stdout.splitlines() if Path(f).name.startswith("openb_")]


def test_a_missing_pod_list_names_those_there(tmp_path, capsys):
    trace = tmp_path / "trace"
    trace.mkdir()
    shutil.copy(FIX / "nodes.csv", trace / traces.NODE_LIST)
    shutil.copy(FIX / "pods.csv", trace / traces.DEFAULT_POD_LIST)
    assert cli.main(["simulate", "fillup", "--trace-dir", str(trace), "--trace", "gpushare40",
                     "--out", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys.readouterr().err, "hami simulate: ")
    assert "openb_pod_list_gpushare40.csv: no such trace file" in line and "default" in line


def test_the_uniform_mix_runs_without_the_trace(no_trace, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["simulate", "online", "--mix", "uniform", "--load", "1.3", "--seeds", "1",
                     "--policies", "first-fit", "--arrivals", "60", "--nodes", "2", "--gpus-per-node", "2",
                     "--workers", "1", "--out", str(out)]) == 0
    assert (out / "online-summary.csv").read_text().splitlines()[1].startswith("uniform,1.3,first-fit,1,")


# -- bad arguments: one line, exit 2, before any work --------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--seeds", "abc"], "--seeds 'abc'"),
    (["--seeds", "5-1"], "--seeds '5-1'"),
    (["--seeds", ""], "--seeds ''"),
    (["--load", "-1"], "--load '-1'"),
    (["--load", "0.9,abc"], "--load '0.9,abc'"),
    (["--load", "nan"], "--load 'nan'"),
    (["--model", "A100-SXM4-81GB"], "--model: unknown GPU model"),
    (["--model", "A10"], "--model: A10 has no MIG"),
    (["--mix", "openb,bogus"], "--mix: unknown request mix 'bogus'"),
    (["--policies", "magic"], "unknown policy magic"),
    (["--policies", ","], "--policies ','"),
    (["--workers", "0"], "--workers 0"),
    (["--arrivals", "5"], "--arrivals"),
])
def test_bad_simulate_arguments_fail_before_work(args, says, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["simulate", "online", "--mix", "uniform", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert says in _one_line_error(captured.err, "hami simulate: ")
    assert captured.out == "" and not out.exists()


@pytest.mark.parametrize("protocol", ["online", "fillup"])
def test_an_unwritable_out_fails_before_the_run(protocol, tmp_path, capsys):
    """Before: the run took minutes, then the write raised a traceback and the results were lost."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    trace = tmp_path / "trace"
    trace.mkdir()
    shutil.copy(FIX / "nodes.csv", trace / traces.NODE_LIST)
    shutil.copy(FIX / "pods.csv", trace / traces.DEFAULT_POD_LIST)
    assert cli.main(["simulate", protocol, "--trace-dir", str(trace), "--mix" if protocol == "online" else "--trace",
                     "uniform" if protocol == "online" else "default", "--seeds", "1", "--workers", "1",
                     "--out", str(blocker / "results")]) == 2
    captured = capsys.readouterr()
    line = _one_line_error(captured.err, "hami simulate: --out ")
    assert str(blocker / "results") in line and "Not a directory" in line
    assert captured.out == ""  # the run never started: no note, no progress, no table


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: a read-only folder needs another user")
def test_a_read_only_out_fails_before_the_run(no_trace, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert cli.main(["simulate", "online", "--mix", "uniform", "--out", str(locked)]) == 2
    assert "Permission denied" in _one_line_error(capsys.readouterr().err, "hami simulate: --out ")


def test_without_matplotlib_it_names_the_sim_extra(monkeypatch, no_trace, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    assert cli.main(["simulate", "online", "--mix", "uniform", "--out", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys.readouterr().err, "hami simulate: ")
    assert "matplotlib" in line and "'sim' extra" in line and "pip install -e '.[sim]'" in line


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://", "http://h:99999",
                                 "http://h:port", "http://h:80/x?y=1"])
def test_sim_up_checks_the_extender_url_before_starting(url, capsys, tmp_path):
    workdir = tmp_path / "wd"
    assert cli.main(["sim", "up", "--nodes", ONE_NODE, "--workdir", str(workdir), "--extender-url", url]) == 2
    assert f"--extender-url {url!r}" in _one_line_error(capsys.readouterr().err, "hami sim up: ")
    assert not workdir.exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "https://hami.kube-system.svc:443/api", "http://[::1]:80"])
def test_good_extender_urls_pass(url):
    assert cli._url_problem(url) is None


def test_demo_refuses_a_negative_show(capsys):
    assert cli.main(["demo", "--engine-only", "--show", "-1"]) == 2
    assert "--show -1" in _one_line_error(capsys.readouterr().err, "hami demo: ")


def test_errors_reach_a_shell_as_one_line_and_exit_2(tmp_path):
    """The real entry point, as a user runs it: no traceback on stderr."""
    blocker = tmp_path / "f"
    blocker.write_text("")
    run = subprocess.run([sys.executable, "-m", "hami.cli", "simulate", "online", "--mix", "uniform",
                          "--seeds", "abc", "--out", str(blocker / "x")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


# -- the GPU smoke check without a GPU -----------------------------------------------------


def test_smoke_without_nvml_prints_the_error_and_a_hint(tmp_path, capsys):
    """Before: with --out, nothing on the terminal and exit 2."""
    out = tmp_path / "smoke.json"
    assert smoke.main(["--library", str(tmp_path / "no-libnvidia-ml.so.1"), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error, hint = captured.err.strip().splitlines()
    assert error.startswith("python -m hami.nvml.smoke: NVML did not answer: ")
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in error
    assert "nvidia-smi" in hint and "simulated NVML" in hint
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in json.loads(out.read_text())["error"]  # the report is still written


def test_a_missing_nvml_hint_is_not_circular():
    """Before: 'cannot load libnvidia-ml.so.1 … point HAMI_NVML_LIBRARY at libnvidia-ml.so.1'."""
    def no_library(path):
        raise OSError(f"{path}: cannot open shared object file: No such file or directory")

    with pytest.raises(errors.LibraryNotFound) as caught:
        Nvml("libnvidia-ml.so.1", loader=no_library).init()
    message = str(caught.value)
    assert "at libnvidia-ml.so.1" not in message
    assert "install the NVIDIA driver" in message and "full path" in message


# -- packaging: the runtime set, the extras, a quiet build ----------------------------------


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_extras_split_runtime_sim_and_test():
    project = _pyproject()["project"]
    names = lambda reqs: {r.split(">")[0].split("=")[0].split("[")[0].strip() for r in reqs}  # noqa: E731
    runtime, extras = names(project["dependencies"]), project["optional-dependencies"]
    assert "matplotlib" not in runtime and "matplotlib" in names(extras["sim"])
    assert "hami[sim]" in extras["test"]  # development includes the simulator's extras
    assert not names(extras["test"]) & runtime and "pytest" in names(extras["test"])


_BLOCK_EXTRAS = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"matplotlib", "pytest", "hypothesis", "trustme", "pynvml", "grpc_tools", "importlinter", "xdist"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is in an extra", name=name)
    sys.meta_path.insert(0, Block())
""")


def test_the_runtime_set_runs_the_scheduler_the_agent_and_inspect():
    """With every extra's package unimportable, the production commands still import and parse."""
    code = _BLOCK_EXTRAS + textwrap.dedent("""
        import hami.scheduler.app, hami.deviceplugin.agent, hami.inspect.cli, hami.cli
        for argv in (["scheduler", "--help"], ["device-plugin", "--help"], ["inspect", "--help"]):
            try:
                hami.cli.main(argv)
            except SystemExit as e:
                assert e.code == 0, argv
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]


def test_build_has_no_package_data_warning(tmp_path):
    """Before: on a fresh editable build setuptools warned 'Package hami.sim._lib is absent from the
    packages configuration' — build_ext creates hami/sim/_lib after package discovery. Replays that
    order (the folder appears between discovery and build_py) on a copy of the project's config."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "hami", tmp_path / "hami",
                    ignore=shutil.ignore_patterns("_lib", "__pycache__", "*.so", "*.c", "*.html"))
    (tmp_path / "replay.py").write_text(textwrap.dedent("""
        import os
        from setuptools import Command, setup

        class fake_build_ext(Command):  # what setup.py's build_ext does in place: the simulated NVML
            user_options = []
            def initialize_options(self): pass
            def finalize_options(self): pass
            def run(self):
                os.makedirs("hami/sim/_lib", exist_ok=True)
                with open("hami/sim/_lib/libnvidia-ml.so.1", "wb") as f:
                    f.write(b"not a real library")

        setup(cmdclass={"fake_build_ext": fake_build_ext})
    """))
    run = subprocess.run([sys.executable, "replay.py", "fake_build_ext", "build_py", "--build-lib", "out"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "absent from the `packages` configuration" not in run.stdout + run.stderr
    assert "Warning" not in run.stderr, run.stderr[-2000:]
    assert (tmp_path / "out" / "hami" / "sim" / "_lib" / "libnvidia-ml.so.1").is_file()  # still shipped
    assert (tmp_path / "out" / "hami" / "_core" / "_kernels.pyx").is_file()


@pytest.mark.parametrize(("content", "why"), [
    (b"a: [\n", "not valid YAML (line 2, column 1)"),
    (b"\x00\xff\xfe", "not a text file"),
    (b"- 1\n- 2\n", "not a kubeconfig"),
])
@pytest.mark.parametrize("command", [["scheduler"], ["device-plugin", "--node-name", "n1"], ["inspect"]])
def test_a_file_that_is_not_a_kubeconfig_is_one_line_and_exit_2(tmp_path, capfd, content, why, command):
    """The client's loader lets YAML, decoding and shape errors through; Kube.connect names them
    for every command (was a traceback from the scheduler and the agent)."""
    bad = tmp_path / "kubeconfig"
    bad.write_bytes(content)
    argv = [*command, "--kubeconfig", str(bad)]
    if command[0] == "scheduler":
        argv += ["--http-bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"]
    if command[0] == "device-plugin":
        argv += ["--plugin-dir", str(tmp_path), "--metrics-port", "-1", "--config-file", str(tmp_path / "none")]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err
    assert why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_every_option_with_a_default_says_it_in_its_help():
    """A user reads `--help`, not the source: an option with a default names it."""
    from hami.cli import _parser, _subcommands

    silent = [f"{sub.prog} {action.option_strings[-1]}"
              for sub in _subcommands(_parser()) for action in sub._actions
              if action.option_strings and action.help and "default" not in action.help
              and action.default not in (None, False, "", [], argparse.SUPPRESS)]
    assert not silent, silent

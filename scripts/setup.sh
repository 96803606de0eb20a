#!/usr/bin/env bash
# Set up robustq-deploy on a fresh Debian-based machine: a virtual environment in .venv with the
# CPU build of torch 2.13.0 and the package; with --test also the test extras and the system
# packages the tests use (aarch64 cross toolchain and qemu-user). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
  esac
done

if [ "$with_test" = 1 ] && [ -x "$(command -v apt-get)" ]; then
  need=()
  for pkg in gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=".venv/bin/python -m pip"
# torch first and pinned: this resolves to the local CPU wheel, never the multi-GB CUDA build.
$pip install -q torch==2.13.0
if [ "$with_test" = 1 ]; then
  $pip install -q -e '.[test]'
  # torchattacks is only a reference implementation for tests; its declared deps would pull CUDA torch.
  $pip install -q --no-deps torchattacks==3.5.1
  # aarch64 TVM runtime (from the aarch64 wheels) and the qemu runner, built once into the user cache.
  .venv/bin/python -m robustq_deploy.targets.toolchain aarch64 >/dev/null
else
  $pip install -q -e .
fi
echo "robustq-deploy is set up in .venv (run .venv/bin/robustq --help)"

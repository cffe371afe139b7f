#!/usr/bin/env bash
# README command 1: installs dependencies, builds, and runs awqd on its built-in default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/bin/awqd --version

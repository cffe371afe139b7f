#!/usr/bin/env bash
# Installs awqd's build and test dependencies from Debian's packages (Debian 12). Idempotent:
# apt-get runs only when something is missing, and `apt-get update` at most once.
# The CUDA toolkit is not a Debian package here: it is expected at /usr/local/cuda.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev
  libhiredis-dev libsqlitecpp-dev libsqlite3-dev sqlite3
  libboost-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libsystemd-dev systemd libpcre2-dev libicu-dev liblzma-dev
  redis-server redis-tools
  clang libclang-rt-14-dev  # libFuzzer targets (scripts/fuzz.sh)
  xz-utils python3
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install packages" >&2; exit 1; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA toolkit: $(/usr/local/cuda/bin/nvcc --version | tail -1)"
elif command -v nvcc >/dev/null; then
  echo "setup: CUDA toolkit: $(nvcc --version | tail -1)"
else
  cat <<'MSG'
setup: no CUDA toolkit found (expected /usr/local/cuda/bin/nvcc).
       awqd will build without its GPU engine (CPU executor only). To build the CUDA parts,
       install the CUDA toolkit 12.8+ (https://developer.nvidia.com/cuda-downloads) so that
       /usr/local/cuda/bin/nvcc exists, then run this again.
MSG
fi

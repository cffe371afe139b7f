#!/usr/bin/env bash
# Builds awqd and its GPU tests/benchmarks here (the GPU machine has no hiredis, SQLite, ICU,
# PCRE2 or nlohmann headers) and packs what a GPU run needs into .gpu/ (git-ignored), for the
# device tool's `carry`:
#   .gpu/bundle.tar.xz   bin/ (awqd, test_*, bench_*) and lib/ (shared libraries the GPU machine
#                        lacks: everything ldd lists except glibc, libstdc++/libgcc and CUDA's)
#   .gpu/fixtures/       the fixtures the GPU tests read (llama-13m, tokenizers' golden file)
# Usage: scripts/gpu_bundle.sh [cuda archs, default 90a]
# With AWQD_BUNDLE_BINS="awqd test_attention ..." only those binaries are built and go (with their
# libraries) into .gpu/slim.tar.xz: small enough to carry beside the fixtures and an older binary.
set -euo pipefail
cd "$(dirname "$0")/.."
archs=${1:-90a}
export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DAWQD_CUDA_ARCHS="$archs" >/dev/null
# With AWQD_BUNDLE_BINS only those targets are built (minutes instead of the whole tree).
# shellcheck disable=SC2086
cmake --build build-gpu --parallel "$(nproc)" ${AWQD_BUNDLE_BINS:+--target $AWQD_BUNDLE_BINS}

rm -rf .gpu/stage && mkdir -p .gpu/stage/bin .gpu/stage/lib
tarball=.gpu/bundle.tar.xz
if [[ -n ${AWQD_BUNDLE_BINS:-} ]]; then
  tarball=.gpu/slim.tar.xz
  for b in $AWQD_BUNDLE_BINS; do cp "build-gpu/bin/$b" .gpu/stage/bin/; done
else
  for f in build-gpu/bin/*; do
    [[ -x $f && -f $f ]] && cp "$f" .gpu/stage/bin/
  done
fi
skip='linux-vdso|ld-linux|libc\.so|libm\.so|libstdc\+\+|libgcc_s|libpthread|libdl\.so|librt\.so|libcuda\.so|libcudart|libcublas|libnccl'
for f in .gpu/stage/bin/*; do
  ldd "$f" | awk '/=>/ {print $3}' | grep -vE "$skip" || true
done | sort -u | while read -r lib; do
  cp -L "$lib" .gpu/stage/lib/
done
# What the binaries were built from (gpu_run.sh prints it into info.txt): the device machine's
# copy of the tree may carry an older .git, so `git log` there does not say.
{
  echo "commit $(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
  echo "built $(date -u '+%Y-%m-%d %H:%M:%S UTC') for CUDA archs $archs${AWQD_BUNDLE_BINS:+ (only: $AWQD_BUNDLE_BINS)}"
} >.gpu/stage/BUILD
tar -C .gpu/stage -cJf "$tarball" BUILD bin lib
rm -rf .gpu/stage

fx=${AWQD_FIXTURES:-../shared/fixtures}
mkdir -p .gpu/fixtures
rm -rf .gpu/fixtures/llama-13m
cp -r "$fx/llama-13m" .gpu/fixtures/
mkdir -p .gpu/fixtures/text
cp "$fx/text/austen-heldout.txt" .gpu/fixtures/text/
chmod -R u+w .gpu/fixtures
du -sh "$tarball" .gpu/fixtures

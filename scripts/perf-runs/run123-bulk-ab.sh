#!/usr/bin/env bash
# docs/PERF.md run 123. bulk-512-256 with the folded norms (bundle of e6542f0) against main's
# awqd of 267cc31 (.gpu/old9), one run each, `awqd synth --like llama3-8b`.
# carry: .gpu/slim.tar.xz .gpu/old9
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
mkdir -p /tmp/awqd /tmp/old; tar -C /tmp/awqd -xJf .gpu/slim.tar.xz; cat /tmp/awqd/BUILD
xz -dc .gpu/old9/awqd.xz > /tmp/old/awqd; chmod +x /tmp/old/awqd
export LD_LIBRARY_PATH=/tmp/awqd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
timeout 60 /tmp/awqd/bin/awqd synth --like llama3-8b --out /tmp/model > /dev/null 2>&1
for b in /tmp/awqd/bin/awqd /tmp/old/awqd; do
  timeout 90 $b bench --model /tmp/model --quiet --workload bulk-512-256 2>&1 | grep -E "^(requests|TTFT|batch)" | sed "s|^|$b: |"
done

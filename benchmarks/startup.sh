#!/usr/bin/env bash
# Start-up and whole-run wall time of `harness run` by build and JIT setting (docs/performance.md,
# "Start-up"): the JIT-only build (cli/bin/Release) against the ReadyToRun publish the ./harness
# launcher makes (cli/bin/r2r), each with the runtime's tiering knobs. Median of N runs (default 7)
# of a tiny image (samples/bits.elf, 365 k guest instructions) and of the compute image on 1 vCPU
# (74 M). Run from a quiet machine; prints one markdown table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
n="${1:-7}"
./harness --help >/dev/null          # builds the ReadyToRun publish if stale
dotnet build cli -c Release -nologo -v q -clp:ErrorsOnly >/dev/null
bash guest/build.sh >/dev/null
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wall() { # dll image env...
  local dll="$1" img="$2"; shift 2
  for _ in $(seq "$n"); do env "$@" /usr/bin/time -f "%e" dotnet "$dll" run "$img" --vcpus 1 2>&1 >/dev/null | tail -1; done | median
}
echo "# load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, commit $(git rev-parse --short HEAD), median of $n runs"
echo "| build | runtime setting | tiny image (s) | compute, 74 M insns (s) |"
echo "|---|---|---:|---:|"
for build in jit r2r; do
  dll=cli/bin/Release/net10.0/harness.dll; [ "$build" = r2r ] && dll=cli/bin/r2r/harness.dll
  for setting in "default" "DOTNET_TieredPGO=0" "DOTNET_TC_CallCountingDelayMs=0" "DOTNET_TieredCompilation=0"; do
    envs=(X=1); [ "$setting" = default ] || envs=("$setting")
    echo "| $build | $setting | $(wall "$dll" guest/build/samples/bits.elf "${envs[@]}") | $(wall "$dll" guest/build/samples/compute.elf "${envs[@]}") |"
  done
done

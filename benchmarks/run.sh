#!/usr/bin/env bash
# Build the guests (compute.elf + libwork.so + kernel.elf) and run the interpreter and DBT benchmarks.
#
#   benchmarks/run.sh                 all suites, real measurement (a few minutes)
#   benchmarks/run.sh --quick         smoke run: dry jobs, N = 40 (well under a minute)
#   benchmarks/run.sh --filter '*Scaling*'   any BenchmarkDotNet options pass through
#   benchmarks/run.sh --filter '*KernelDbt*' host time of the guest kernel, native vs translated
#
# Environment: HARNESS_BENCH_ITERATIONS=N overrides the rounds of work() per vCPU (default 800).
# Results: the BenchmarkDotNet tables on stdout, benchmarks/BenchmarkDotNet.Artifacts/results/*.md,
# and a one-page summary in benchmarks/BenchmarkDotNet.Artifacts/harness-summary.md.
set -euo pipefail

src="${BASH_SOURCE[0]}"
[[ "$src" == */* ]] || src="./$src"
root="$(cd "${src%/*}/.." && pwd)"
cd "$root"

bash guest/build.sh >/dev/null
for f in guest/build/samples/compute.elf guest/build/host/libwork.so guest/build/kernel/kernel.elf; do
    [ -f "$f" ] || { echo "benchmarks/run.sh: $f was not built" >&2; exit 1; }
done

echo "# load before: $(cat /proc/loadavg) ($(nproc) cores); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
dotnet build benchmarks/Benchmarks.csproj -c Release --nologo -v q >/dev/null
status=0
HARNESS_ROOT="$root" dotnet run -c Release --no-build --project benchmarks/Benchmarks.csproj -- "$@" || status=$?
echo "# load after: $(cat /proc/loadavg)"
exit $status

#!/usr/bin/env bash
# Runs every test of the solution (Release) and ends with one line: "N passed, N failed, N skipped".
# Everything the tests need is checked here: the .NET SDK, and gcc/binutils/make for the guests.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v dotnet >/dev/null 2>&1; then
  echo "ci/test.sh: the .NET SDK (dotnet) is not on PATH; install .NET 10 SDK" >&2
  echo "0 passed, 1 failed"; exit 1
fi
if ! bash guest/build.sh >/tmp/harness-guest-build.log 2>&1; then
  cat /tmp/harness-guest-build.log >&2
  echo "ci/test.sh: building the guest images failed (see above)" >&2
  echo "0 passed, 1 failed"; exit 1
fi
if ! dotnet build Harness.sln -c Release -nologo -v quiet -clp:ErrorsOnly 2>&1; then
  echo "ci/test.sh: build failed" >&2
  echo "0 passed, 1 failed"; exit 1
fi
log=$(mktemp)
dotnet test Harness.sln -c Release --no-build -nologo 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# One summary line per test assembly: "Passed!  - Failed: 0, Passed: 40, Skipped: 0, Total: 40, ..."
read -r passed failed skipped < <(grep -E '(Passed|Failed)! +- Failed:' "$log" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\2 \1 \3/' \
  | awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}')
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"

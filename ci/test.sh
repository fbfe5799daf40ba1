#!/usr/bin/env bash
# Runs every test of the solution (Release) and ends with one line: "N passed, N failed, N skipped".
# Everything the tests need is checked here: the .NET SDK, and gcc/binutils/make for the guests.
# Progress: a line per step, and each test assembly's tests as they finish (console logger, normal).
set -uo pipefail
cd "$(dirname "$0")/.."

step() { echo "ci: $*"; }
if ! command -v dotnet >/dev/null 2>&1; then
  echo "ci/test.sh: the .NET SDK (dotnet) is not on PATH; install .NET 10 SDK" >&2
  echo "0 passed, 1 failed"; exit 1
fi
step "building the guest images (guest/build.sh)"
if ! bash guest/build.sh >/tmp/harness-guest-build.log 2>&1; then
  cat /tmp/harness-guest-build.log >&2
  echo "ci/test.sh: building the guest images failed (see above)" >&2
  echo "0 passed, 1 failed"; exit 1
fi
step "checking headless Chromium (the HTML report test renders a page in it)"
bash ci/ensure-chromium.sh || echo "ci: continuing without Chromium: the report test will fail and say why" >&2
step "building the solution (dotnet build Harness.sln -c Release)"
if ! dotnet build Harness.sln -c Release -nologo -v quiet -clp:ErrorsOnly 2>&1; then
  echo "ci/test.sh: build failed" >&2
  echo "0 passed, 1 failed"; exit 1
fi
step "running the tests (3 assemblies in parallel; each test's result is printed as it finishes)"
log=$(mktemp)
start=$(date +%s)
dotnet test Harness.sln -c Release --no-build -nologo --logger "console;verbosity=normal" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Per test assembly, the console logger's summary: "Total tests: N" then "Passed: N", "Failed: N",
# "Skipped: N" lines (normal verbosity), or one line "Passed!  - Failed: 0, Passed: 40, Skipped: 0, ..." (minimal).
read -r passed failed skipped < <(awk '
  /(Passed|Failed)! +- Failed:/ { match($0, /Failed: *[0-9]+/); f += substr($0, RSTART + 7, RLENGTH - 7) + 0
                                  match($0, /Passed: *[0-9]+/); p += substr($0, RSTART + 7, RLENGTH - 7) + 0
                                  match($0, /Skipped: *[0-9]+/); s += substr($0, RSTART + 8, RLENGTH - 8) + 0; next }
  /^Total tests: / { in_summary = 1; next }
  in_summary && /^ +Passed: +[0-9]+/ { p += $2; next }
  in_summary && /^ +Failed: +[0-9]+/ { f += $2; next }
  in_summary && /^ +Skipped: +[0-9]+/ { s += $2; next }
  in_summary && /Total time:/ { in_summary = 0 }
  END { print p + 0, f + 0, s + 0 }' "$log")
step "tests took $(( $(date +%s) - start )) s"
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"

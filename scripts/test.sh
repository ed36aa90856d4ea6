#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (Node.js for
# Azurite, the pinned Azurite and the official Adaptive Cards renderer from package-lock.json), checks formatting and lints, then
# runs unit and integration tests. Used by `.ci/run` and by developers alike.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v npm >/dev/null 2>&1; then
  step "installing Node.js and npm (Debian packages)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm >/dev/null; fi
fi
if ! command -v openssl >/dev/null 2>&1; then
  step "installing openssl (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq openssl >/dev/null; else sudo apt-get install -y -qq openssl >/dev/null; fi
fi

if ! command -v chromium >/dev/null 2>&1; then
  # The insights page is opened in headless Chromium by the tests (no console message allowed).
  step "installing Chromium (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi

step "installing Azurite and the Adaptive Cards renderer (npm ci, versions pinned in package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error
test -x node_modules/.bin/azurite-blob || { echo "azurite-blob was not installed" >&2; exit 1; }

# ---- deployment checks (issue 12): infra/ Bicep (pycep-parser + checkov), workflows
# (actionlint), scripts (shellcheck); the settings-coverage and dry-run tests run with cargo test.
if ! command -v shellcheck >/dev/null 2>&1; then
  step "installing shellcheck (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq shellcheck >/dev/null || true
  else sudo apt-get install -y -qq shellcheck >/dev/null || true; fi
fi
step "deployment checks (scripts/check-infra.sh)"
bash scripts/check-infra.sh
# ---- end of deployment checks

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Integration tests must never skip quietly: the Azurite harness fails when CI is set and
# Azurite is missing.
export CI="${CI:-1}"
# More test threads than cores: most integration tests wait on local fakes, Azurite or a
# spawned handler, not on the CPU (a 2-core run used 34 s of CPU in 76 s of wall time at 2
# threads; 44 s of wall time at 8). Safe because no test changes the working directory or
# the process environment after start-up (the shared fake identity sets its two variables
# once, through std, which locks the environment against its readers), every server binds
# port 0, and every test writes under a temporary folder or a container of its own.
# Measured under `stress --cpu 4` too (README, "The test suite"). Override with
# RUST_TEST_THREADS.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-8}"
step "cargo test (unit, integration, examples built; doc)"
mkdir -p target
set +e
# Not `--all-targets`: that would also run the 100k-row benchmark once in a debug build
# (about 40 s) as if it were a test. Benchmarks are measured with `cargo bench`; here they
# are only built (next step), so a broken bench still fails the suite. `--workspace` runs
# the testkit crate's own tests of its fakes too.
cargo test --workspace --lib --bins --tests --examples 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "tests failed (exit $status; full output in target/test-output.log)" >&2
  exit "$status"
fi
step "benchmarks compile and link (cargo test --benches --no-run; run with cargo bench)"
cargo test --workspace --benches --no-run --quiet
cargo test --doc --quiet
step "all tests passed"

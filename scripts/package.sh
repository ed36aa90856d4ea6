#!/usr/bin/env bash
# Builds the Linux x86_64 handler for every Functions Linux image and the deployment zip.
#
# Usage: scripts/package.sh [--out DIR] [--max-glibc X.Y] [--binary PATH]
#   --out DIR        where the zip, the app root (DIR/app) and the symbols go (default dist)
#   --max-glibc X.Y  refuse a binary that needs a newer glibc (default 2.31: Debian 11, the
#                    oldest image the Functions host still runs on Linux)
#   --binary PATH    package this already-built binary instead of building (tests)
#
# The build: cargo-zigbuild (PyPI, with zig from the `ziglang` wheel, both installed into
# target/ci-tools/venv) links against glibc 2.17, profile `deploy` (release, size-optimised);
# the binary is stripped and its symbols kept in DIR/lookout-reminders.debug.
#
# The zip holds exactly what the Functions host needs at the app root (wwwroot):
#
#   host.json                      custom handler, extension bundle, functionTimeout, logging
#   function_timer/function.json   daily timer trigger (schedule from the REMINDER_SCHEDULE app setting)
#   function_http/function.json    HTTP trigger (function key), GET + POST, forwarded to the handler
#   lookout-reminders              the handler binary (stripped), executable bit set
#   templates/                     default message templates (operators override with REMINDERS_TEMPLATES_DIR)
#
# Deploy with `azd deploy` (dist/app), or:
#   az functionapp deployment source config-zip -g <rg> -n <app> --src dist/lookout-reminders.zip
set -euo pipefail
cd "$(dirname "$0")/.."

out="dist"
max_glibc="2.31"
prebuilt=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --max-glibc) max_glibc="$2"; shift 2 ;;
    --binary) prebuilt="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

if [ -n "$prebuilt" ]; then
  bin="$prebuilt"
else
  venv=target/ci-tools/venv
  if ! "$venv/bin/cargo-zigbuild" --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-zigbuild and zig (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check ziglang==0.17.0 cargo-zigbuild==0.24.0
  fi
  # cargo-zigbuild finds zig through `python3 -m ziglang` of the venv.
  PATH="$PWD/$venv/bin:$PATH" cargo-zigbuild build --locked --profile deploy \
    --target x86_64-unknown-linux-gnu.2.17 --bin lookout-reminders
  bin="target/x86_64-unknown-linux-gnu/deploy/lookout-reminders"
fi

# The newest glibc symbol version the binary needs must exist on every image.
needed=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ -n "$needed" ] && [ "$(printf '%s\n%s\n' "$needed" "$max_glibc" | sort -V | tail -1)" != "$max_glibc" ]; then
  echo "package.sh: $bin needs GLIBC_$needed, newer than $max_glibc (the oldest Functions image)" >&2
  exit 1
fi
echo "package.sh: $bin needs glibc ${needed:-none} (limit $max_glibc)"
# dist/app stays: it is the app root azd deploys (azure.yaml `dist`), the zip is the same tree.
stage="$out/app"
rm -rf "$stage"
mkdir -p "$stage/function_timer" "$stage/function_http"
cp host.json "$stage/"
cp function_timer/function.json "$stage/function_timer/"
cp function_http/function.json "$stage/function_http/"
cp -R templates "$stage/templates"
# Ship a stripped binary (the host reads the package at cold start); keep the symbols apart
# for crash analysis (dist/lookout-reminders.debug, linked by .gnu_debuglink).
objcopy --only-keep-debug "$bin" "$out/lookout-reminders.debug"
objcopy --strip-all --add-gnu-debuglink="$out/lookout-reminders.debug" "$bin" "$stage/lookout-reminders"
chmod 755 "$stage/lookout-reminders"

zip_path="$out/lookout-reminders.zip"
rm -f "$zip_path"
# Python's zipfile keeps the Unix mode (exec bit) in the archive and needs no `zip` tool.
python3 - "$stage" "$zip_path" <<'PY'
import os, sys, zipfile
stage, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk(stage):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, stage)
            info = zipfile.ZipInfo.from_file(path, rel)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
PY
echo "package.sh: $zip_path (app root in $stage)"
python3 - "$zip_path" <<'PY'
import stat, sys, zipfile
for i in zipfile.ZipFile(sys.argv[1]).infolist():
    mode = (i.external_attr >> 16) & 0o777
    print(f"  {oct(mode)[2:]:>4} {i.file_size:>10}  {i.filename}")
PY

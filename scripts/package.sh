#!/usr/bin/env bash
# Builds the Linux x86_64 release binary and the Functions deployment zip.
#
# Usage: scripts/package.sh [--target x86_64-unknown-linux-gnu|x86_64-unknown-linux-musl] [--out DIR]
#
# The zip holds exactly what the Functions host needs at the app root (wwwroot):
#
#   host.json                      custom handler, extension bundle, functionTimeout, logging
#   function_timer/function.json   daily timer trigger (schedule from the REMINDER_SCHEDULE app setting)
#   function_http/function.json    HTTP trigger (function key), GET + POST, forwarded to the handler
#   lookout-reminders              the handler binary, executable bit set
#   templates/                     default message templates (operators override with REMINDERS_TEMPLATES_DIR)
#
# Deploy with: az functionapp deployment source config-zip -g <rg> -n <app> --src dist/lookout-reminders.zip
set -euo pipefail
cd "$(dirname "$0")/.."

target="x86_64-unknown-linux-gnu"
out="dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

# Cross-building from another OS / architecture needs the target installed (and, for -gnu, a
# linker for it); musl gives a static binary that runs on any Linux plan image.
host_target="$(rustc -vV | sed -n 's/^host: //p')"
if [ "$target" != "$host_target" ]; then
  rustup target list --installed 2>/dev/null | grep -qx "$target" || {
    echo "package.sh: target $target is not installed: rustup target add $target" >&2
    exit 1
  }
fi

if [ "$target" = "$host_target" ]; then
  # Same as the machine: the plain release build (and its cache) is the Linux x86_64 binary.
  cargo build --release --locked --bin lookout-reminders
  bin="target/release/lookout-reminders"
else
  cargo build --release --locked --target "$target" --bin lookout-reminders
  bin="target/$target/release/lookout-reminders"
fi
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

#!/usr/bin/env bash
# Regenerates docs/report.png, the README's picture of the insights page: 21 daily runs on the
# sample export (fixtures/issues-export.csv) in which owners fix their issues on known days
# (row r is fixed on day 7r mod 23, every third row never), then `report` and a headless
# Chromium screenshot. Needs Chromium (Debian `chromium`).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q
bin=target/debug/lookout-reminders
export RUST_LOG=error
header=$(head -1 fixtures/issues-export.csv)
for n in $(seq 0 20); do
  day=$(date -u -d "2024-02-16 + $n days" +%F)
  {
    echo "$header"
    # Column 12 is Date Detected: an issue is in the export from its detection day until fixed.
    awk -F, -v day="$day" -v n="$n" 'NR > 1 {
      r = NR - 1; fixed_on = (r % 3 == 0) ? 999 : (r * 7) % 23
      if (substr($12, 1, 10) <= day && n < fixed_on) print
    }' fixtures/issues-export.csv
  } > "$work/export.csv"
  "$bin" run --export "$work/export.csv" --as-of "$day" --state-dir "$work/state" \
    --outbox "$work/outbox" --allowed-domains engie.com --json > /dev/null
done
"$bin" report --since 2024-02-01 --state-dir "$work/state" --out "$work/report.html"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$work/profile" --window-size=1040,1640 \
  --screenshot="$PWD/docs/report.png" "file://$work/report.html" 2>/dev/null
echo "wrote docs/report.png"

#!/usr/bin/env bash
# Side-by-side, in one sitting: this project's `run --dry-run --json` (release build, as a user
# runs it) against the Python routes doing the least a dry run must do — parse + group by owner
# with the `csv` module, and with openpyxl (read-only) on the same rows as a workbook.
#
#   bash benches/compare/compare.sh            # ROWS=100000 RUNS=3 by default
#   ROWS=20000 RUNS=3 bash benches/compare/compare.sh
#   ROUTES=xlsx bash benches/compare/compare.sh   # only the XLSX lines (or ROUTES=csv)
#
# Prints, per route: median wall and CPU time over RUNS runs, peak RSS (`/usr/bin/time`), and
# the ratio Python / Rust of CPU time (how many times faster this project is). Installs what it needs:
# Debian `time` if missing, openpyxl in a virtualenv under target/compare/.
set -euo pipefail

ROWS=${ROWS:-100000}
RUNS=${RUNS:-3}
ROUTES=${ROUTES:-csv,xlsx}
case ",$ROUTES," in
*,csv,* | *,xlsx,*) ;;
*)
    echo "ROUTES must name csv, xlsx or both (csv,xlsx), not '$ROUTES'" >&2
    exit 2
    ;;
esac
route() { [[ ",$ROUTES," == *",$1,"* ]]; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/target/compare"
mkdir -p "$OUT/run"

if [ ! -x /usr/bin/time ]; then
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
if [ ! -x "$OUT/venv/bin/python" ]; then
    python3 -m venv "$OUT/venv"
fi
"$OUT/venv/bin/python" -c 'import openpyxl' 2>/dev/null \
    || "$OUT/venv/bin/pip" install -q openpyxl

cd "$ROOT"
cargo build -q --release --bin lookout-reminders
BIN="$ROOT/target/release/lookout-reminders"
CSV="$OUT/export-$ROWS.csv"
XLSX="$OUT/export-$ROWS.xlsx"
if [ ! -s "$CSV" ] || [ ! -s "$XLSX" ]; then
    # The generator is not what is measured: its debug build reuses the test suite's
    # dependencies. Built only when the exports are not there yet.
    cargo build -q --example generate_export
    "$ROOT/target/debug/examples/generate_export" "$ROWS" "$OUT" >/dev/null
fi
PY="$OUT/venv/bin/python"

# measure NAME CMD...: runs CMD RUNS times, stdout to /dev/null, from an
# empty working directory (a dry run reads ./state). Prints and sets the median wall time
# $WALL, the median CPU time (user + system, all threads) $CPU, both in s, and the peak RSS
# $RSS in MB. On a shared, busy machine the CPU time is the steadier figure: the ratios use it.
measure() {
    local name=$1
    shift
    local walls=() cpus=() rss=0 line
    for _ in $(seq "$RUNS"); do
        (cd "$OUT/run" && /usr/bin/time -f '%e %U %S %M' -o "$OUT/time" "$@" >/dev/null 2>"$OUT/stderr") || {
            echo "$name failed:" >&2
            cat "$OUT/stderr" >&2
            exit 1
        }
        line=$(tail -n1 "$OUT/time")
        read -r wall user sys kb <<<"$line"
        walls+=("$wall")
        cpus+=("$(awk "BEGIN {print $user + $sys}")")
        [ "$kb" -gt "$rss" ] && rss=$kb
    done
    WALL=$(median "${walls[@]}")
    CPU=$(median "${cpus[@]}")
    RSS=$(awk "BEGIN {printf \"%.1f\", $rss / 1024}")
    printf '%-28s %8.2f s %8.2f s %9.1f MB\n' "$name" "$WALL" "$CPU" "$RSS"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

RUST_ARGS=(run --as-of 2024-03-07 --dry-run --json)
echo "load average: $(cut -d" " -f1-3 /proc/loadavg)"
echo "$ROWS rows: $(du -h "$CSV" | cut -f1) CSV, $(du -h "$XLSX" | cut -f1) XLSX; $RUNS runs each; $(nproc) cores"
printf '%-28s %10s %10s %12s\n' route wall cpu "peak RSS"
# BEFORE_BIN: an earlier build of the binary, measured in the same sitting for a before/after.
if [ -n "${BEFORE_BIN:-}" ]; then
    if route csv; then measure "before: rust csv" "$BEFORE_BIN" "${RUST_ARGS[@]}" --export "$CSV"; fi
    if route xlsx; then measure "before: rust xlsx" "$BEFORE_BIN" "${RUST_ARGS[@]}" --export "$XLSX"; fi
fi
if route csv; then
    measure "rust csv (run --dry-run)" "$BIN" "${RUST_ARGS[@]}" --export "$CSV"
    RUST_CSV=$CPU RUST_CSV_RSS=$RSS RUST_CSV_WALL=$WALL
    measure "python csv module" "$PY" "$ROOT/benches/compare/python_csv.py" "$CSV"
    PY_CSV=$CPU PY_CSV_RSS=$RSS PY_CSV_WALL=$WALL
fi
if route xlsx; then
    measure "rust xlsx (run --dry-run)" "$BIN" "${RUST_ARGS[@]}" --export "$XLSX"
    RUST_XLSX=$CPU RUST_XLSX_RSS=$RSS RUST_XLSX_WALL=$WALL
    measure "python openpyxl read-only" "$PY" "$ROOT/benches/compare/python_openpyxl.py" "$XLSX"
    PY_XLSX=$CPU PY_XLSX_RSS=$RSS PY_XLSX_WALL=$WALL
fi

ratio() { awk "BEGIN {printf \"%.1f\", $1 / $2}"; }
echo
echo "ratios of median CPU time (of median wall time in brackets):"
if route csv; then
    echo "csv:  rust is $(ratio "$PY_CSV" "$RUST_CSV")x faster than python csv (goal >= 10) [wall $(ratio "$PY_CSV_WALL" "$RUST_CSV_WALL")x]; peak RSS $RUST_CSV_RSS MB vs $PY_CSV_RSS MB"
fi
if route xlsx; then
    echo "xlsx: rust is $(ratio "$PY_XLSX" "$RUST_XLSX")x faster than openpyxl (goal >= 20) [wall $(ratio "$PY_XLSX_WALL" "$RUST_XLSX_WALL")x]; peak RSS $RUST_XLSX_RSS MB vs $PY_XLSX_RSS MB"
fi

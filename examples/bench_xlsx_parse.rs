//! The XLSX route's floor, measured against this project's parse of the same workbook in
//! one run: how much of `parse_export` is the unavoidable work (inflating the parts) and how
//! much a plain calamine walk over every cell costs, so the parse's cost reads as a ratio.
//!
//! `cargo run --release --example bench_xlsx_parse -- FILE.xlsx [RUNS] [ONLY]` (the workbook
//! from `generate_export`). Prints, per stage, the best and the median CPU time of RUNS runs
//! (default 5; every stage is single-threaded, and its thread's CPU time is the steady figure
//! on a shared machine) and its ratio to the inflate-only floor. ONLY (a word of a stage's name, e.g. `project`) runs just the floor
//! and the stages whose name holds it, for a profiler.

use calamine::{DataRef, Reader, Xlsx};
use std::io::{Cursor, Read};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: bench_xlsx_parse FILE.xlsx [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let only = args.get(3).cloned();
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("error: {path}: {e}");
        std::process::exit(1);
    });

    let mut results: Vec<(&str, Duration, Duration, usize)> = Vec::new();
    let mut stage = |name: &'static str, f: &dyn Fn() -> usize| {
        if !results.is_empty() && only.as_deref().is_some_and(|o| !name.contains(o)) {
            return;
        }
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..runs {
            let start = thread_cpu_time();
            count = std::hint::black_box(f());
            times.push(thread_cpu_time() - start);
        }
        times.sort();
        results.push((name, times[0], times[times.len() / 2], count));
    };

    stage("floor: inflate every part", &|| inflate_all(&bytes));
    stage("calamine: open (Xlsx::new)", &|| {
        let wb = Xlsx::new(Cursor::new(&bytes[..])).expect("workbook");
        wb.sheet_names().len()
    });
    stage("calamine: worksheet_range walk", &|| {
        let mut wb = Xlsx::new(Cursor::new(&bytes[..])).expect("workbook");
        let sheet = wb.sheet_names()[0].clone();
        let range = wb.worksheet_range(&sheet).expect("sheet");
        range
            .used_cells()
            .filter(|(_, _, v)| !matches!(v, calamine::Data::Empty))
            .count()
    });
    stage("calamine: cells_reader walk", &|| {
        let mut wb = Xlsx::new(Cursor::new(&bytes[..])).expect("workbook");
        let sheet = wb.sheet_names()[0].clone();
        let mut reader = wb.worksheet_cells_reader(&sheet).expect("sheet");
        let mut n = 0;
        while let Some(cell) = reader.next_cell().expect("cell") {
            n += usize::from(!matches!(cell.get_value(), DataRef::Empty));
        }
        n
    });
    stage("this project: parse_export", &|| {
        let parsed =
            lookout_reminders::parse::parse_export(&bytes, "bench.xlsx").expect("an export");
        parsed.findings.len() + parsed.rejected.len()
    });

    let floor = results[0].1.as_secs_f64();
    println!("{} ({} bytes), {runs} runs each", path, bytes.len());
    println!(
        "{:<32} {:>9} {:>9} {:>8} {:>9}",
        "stage", "best", "median", "x floor", "items"
    );
    for (name, best, median, count) in &results {
        println!(
            "{:<32} {:>7.3} s {:>7.3} s {:>7.1}x {:>9}",
            name,
            best.as_secs_f64(),
            median.as_secs_f64(),
            best.as_secs_f64() / floor,
            count
        );
    }
}

/// CPU time (user + system) used by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Inflates every part of the package into one reused buffer: no parsing at all.
fn inflate_all(bytes: &[u8]) -> usize {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    for i in 0..zip.len() {
        let mut part = zip.by_index(i).expect("a part");
        loop {
            let n = part.read(&mut buf).expect("inflate");
            if n == 0 {
                break;
            }
            total += n;
        }
    }
    total
}

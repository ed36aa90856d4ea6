//! One-shot timing of parse + plan on generated 100k-row exports, with peak memory.
//!
//! `cargo run --release --example bench_pipeline [-- ROWS]`. Each measurement runs in a
//! child process so its peak RSS (`VmHWM`) is the pipeline's alone, not the generator's.

#[path = "../benches/pipeline/generate.rs"]
mod generate;

use lookout_reminders::parse::parse_export;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("measure") {
        measure(Path::new(&args[2]));
        return;
    }
    let rows: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("lookout-bench-{rows}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let csv_path = dir.join("export.csv");
    let xlsx_path = dir.join("export.xlsx");
    if !csv_path.exists() || !xlsx_path.exists() {
        let started = Instant::now();
        let generated = generate::rows(rows);
        std::fs::write(&csv_path, generate::csv(&generated)).expect("write csv");
        std::fs::write(&xlsx_path, generate::xlsx(&generated)).expect("write xlsx");
        eprintln!(
            "generated {rows} rows in {:.2?} into {}",
            started.elapsed(),
            dir.display()
        );
    }
    let me = std::env::current_exe().expect("own path");
    for path in [csv_path, xlsx_path] {
        let status = Command::new(&me)
            .arg("measure")
            .arg(&path)
            .status()
            .expect("run the measurement");
        assert!(status.success(), "measurement of {} failed", path.display());
    }
}

fn measure(path: &Path) {
    let bytes = std::fs::read(path).expect("read export");
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let started = Instant::now();
    let parsed = parse_export(&bytes, &name).expect("parse");
    let parsed_at = started.elapsed();
    let peak_after_parse = peak_rss().unwrap_or_else(|| "unknown".into());
    let plan = generate::plan_findings(&parsed.findings);
    let total = started.elapsed();
    let rows = parsed.total_rows;
    println!(
        "{:<5} {} rows ({:.1} MB): parse {:.3} s + plan {:.3} s = {:.3} s, {:.0} rows/s; {} rejected, {} remindable, {} reminders; peak RSS {} after parse, {} after plan",
        path.extension().unwrap_or_default().to_string_lossy(),
        rows,
        bytes.len() as f64 / 1e6,
        parsed_at.as_secs_f64(),
        (total - parsed_at).as_secs_f64(),
        total.as_secs_f64(),
        rows as f64 / total.as_secs_f64(),
        parsed.rejected.len(),
        plan.remindable,
        plan.reminders.len(),
        peak_after_parse,
        peak_rss().unwrap_or_else(|| "unknown".into()),
    );
}

/// `VmHWM` from `/proc/self/status`: the process's peak resident set size.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MB", kb / 1024.0))
}

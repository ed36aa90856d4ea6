//! Writes a generated N-row export as CSV and XLSX (the benchmarks' generator), for
//! `benches/compare/compare.sh` and for trying the CLI on a large file.
//!
//! `cargo run --release --example generate_export -- ROWS DIR` writes `DIR/export-ROWS.csv`
//! and `DIR/export-ROWS.xlsx`.

#[path = "../benches/pipeline/generate.rs"]
#[allow(dead_code)] // The benchmarks' planning helper is not needed here.
mod generate;

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = match args.get(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: generate_export ROWS DIR");
            std::process::exit(2);
        }
    };
    let dir = PathBuf::from(args.get(2).map(String::as_str).unwrap_or("."));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        std::process::exit(1);
    }
    let generated = generate::rows(rows);
    for (ext, bytes) in [
        ("csv", generate::csv(&generated)),
        ("xlsx", generate::xlsx(&generated)),
    ] {
        let path = dir.join(format!("export-{rows}.{ext}"));
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("error: {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("{}", path.display());
    }
}

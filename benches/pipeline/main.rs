//! Criterion benchmark of the pipeline's pure core: parse a generated export and plan it.
//!
//! `cargo bench --bench pipeline`; the one-shot figures (rows/s, peak RSS) come from
//! `cargo run --release --example bench_pipeline`.

mod generate;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use lookout_reminders::parse::parse_export;
use std::hint::black_box;
use std::time::Duration;

const ROWS: usize = 100_000;

fn parse_and_plan(bytes: &[u8], name: &str) -> usize {
    let parsed = parse_export(bytes, name).expect("generated exports parse");
    generate::plan_findings(&parsed.findings).reminders.len()
}

fn pipeline(c: &mut Criterion) {
    let rows = generate::rows(ROWS);
    let csv = generate::csv(&rows);
    let xlsx = generate::xlsx(&rows);
    drop(rows);

    let mut group = c.benchmark_group("parse_and_plan");
    group.sample_size(10);
    // One iteration takes a sizeable fraction of a second: flat sampling, fewer samples.
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_with_input(BenchmarkId::new("csv", ROWS), &csv, |b, bytes| {
        b.iter(|| parse_and_plan(black_box(bytes), "bench.csv"))
    });
    group.bench_with_input(BenchmarkId::new("xlsx", ROWS), &xlsx, |b, bytes| {
        b.iter(|| parse_and_plan(black_box(bytes), "bench.xlsx"))
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

//! Exports nobody has seen: random bytes and mutated samples must give findings, rejected
//! rows or a clear error — never a panic — and every rejected row names a row and a field.

use lookout_reminders::parse::{parse_export, ParseError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

/// Parses and checks the invariants that hold for any input.
fn check(bytes: &[u8]) {
    match std::panic::catch_unwind(|| parse_export(bytes, "mutant.csv")) {
        Err(_) => panic!(
            "the parser panicked on {} bytes: {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
        Ok(Ok(parsed)) => {
            assert_eq!(
                parsed.total_rows,
                parsed.findings.len() + parsed.rejected.len(),
                "every data row is either a finding or rejected"
            );
            for r in &parsed.rejected {
                assert!(
                    r.row >= 1 && !r.field.is_empty() && !r.reason.is_empty(),
                    "{r:?}"
                );
            }
        }
        Ok(Err(e)) => {
            let text = e.to_string();
            assert!(
                text.starts_with("mutant.csv"),
                "the error names the file: {text}"
            );
            let _: &ParseError = &e;
        }
    }
}

fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..rng.random_range(1..8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..6) {
            0 => bytes[at] = rng.random(),
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, *b",;\t\"\r\n".get(rng.random_range(0..6)).unwrap()),
            3 => bytes.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..64)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            _ => bytes.insert(at, 0xE9), // a Windows-1252 'é' in UTF-8 text
        }
    }
    bytes
}

#[test]
fn random_bytes_never_panic_the_parser() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let len = rng.random_range(0..600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        check(&bytes);
    }
}

#[test]
fn mutated_csv_and_list_view_samples_never_panic_the_parser() {
    let mut rng = StdRng::seed_from_u64(11);
    for name in ["issues-export.csv", "issues-list-view.tsv"] {
        let base = fixture(name);
        for _ in 0..400 {
            check(&mutate(&mut rng, &base));
        }
    }
}

#[test]
fn mutated_workbooks_never_panic_the_parser() {
    let mut rng = StdRng::seed_from_u64(13);
    let base = fixture("issues-export1.xlsx");
    for _ in 0..200 {
        check(&mutate(&mut rng, &base));
    }
}

#[test]
fn a_truncated_workbook_at_any_length_is_a_clear_error_or_a_usable_export() {
    let base = fixture("issues-export1.xlsx");
    for len in (0..base.len()).step_by(97) {
        check(&base[..len]);
    }
}

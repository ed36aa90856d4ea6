//! scripts/package.sh produces what the deployment expects: the app root in the zip (and in
//! dist/app for azd), the handler stripped with its symbols apart, and a refusal when the
//! handler needs a newer glibc than the oldest Functions image. The glibc check runs on the
//! handler cargo built for these tests (`--binary`); the packaging test strips a small C
//! program built here with debug information, symbols and glibc's versioned symbols, which shows
//! the same steps in milliseconds instead of copying and stripping a 230 MB debug handler
//! (about 12 s under load). CI's package job builds the real one with the same script.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn package(binary: &Path, out: &Path, max_glibc: &str) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .args(["--max-glibc", max_glibc])
        .output()
        .unwrap()
}

/// The handler cargo built for these tests.
fn handler() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lookout-reminders"))
}

/// A small executable with what the script must strip (a symbol table, DWARF debug
/// information) and glibc's versioned symbols, built with the C compiler Rust links with.
fn small_debug_executable(dir: &Path) -> PathBuf {
    let source = dir.join("handler.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\nint main(void) { puts(\"handler\"); return 0; }\n",
    )
    .unwrap();
    let binary = dir.join("handler");
    let out = Command::new("cc")
        .arg("-g")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run cc (the linker Rust uses)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sections = section_names(&binary);
    assert!(
        sections.contains(".symtab") && sections.contains(".debug_info"),
        "{sections}"
    );
    binary
}

fn section_names(binary: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(binary)
        .output()
        .unwrap();
    assert!(out.status.success(), "readelf {}", binary.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the app root must hold: the host's files, the handler, the templates.
fn expected_entries() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["host.json", "lookout-reminders"].map(String::from).into();
    for entry in std::fs::read_dir(repo()).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("function.json").is_file() {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            names.insert(format!("{name}/function.json"));
        }
    }
    for entry in std::fs::read_dir(repo().join("templates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        names.insert(format!("templates/{name}"));
    }
    names
}

#[test]
fn the_package_is_the_app_root_with_a_stripped_executable_handler() {
    let dir = tempfile::tempdir().unwrap();
    let built = tempfile::tempdir().unwrap();
    let binary = small_debug_executable(built.path());
    let out = package(&binary, dir.path(), "99.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = std::fs::File::open(dir.path().join("lookout-reminders.zip")).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let mut names = BTreeSet::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mode = entry.unix_mode().unwrap_or(0) & 0o777;
        if name == "lookout-reminders" {
            assert_eq!(mode, 0o755, "the handler must be executable");
        } else {
            assert_eq!(mode, 0o644, "{name}");
        }
        if name == "host.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let host: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                host["customHandler"]["description"]["defaultExecutablePath"],
                "lookout-reminders"
            );
        }
        names.insert(name);
    }
    assert_eq!(names, expected_entries());

    // dist/app (azure.yaml's `dist`) is the same tree.
    let azure_yaml = std::fs::read_to_string(repo().join("azure.yaml")).unwrap();
    assert!(azure_yaml.contains("dist: dist/app"), "{azure_yaml}");
    for name in &names {
        assert!(dir.path().join("app").join(name).is_file(), "app/{name}");
    }

    let handler = dir.path().join("app/lookout-reminders");
    let sections = section_names(&handler);
    assert!(!sections.contains(".symtab"), "not stripped:\n{sections}");
    // (.debug_gdb_scripts is a loaded section Rust embeds, not debug information.)
    for debug_info in [".debug_info", ".debug_line", ".debug_str"] {
        assert!(!sections.contains(debug_info), "not stripped:\n{sections}");
    }
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let symbols = section_names(&dir.path().join("lookout-reminders.debug"));
    assert!(symbols.contains(".symtab"), "symbols file:\n{symbols}");
    assert!(std::fs::metadata(&handler).unwrap().len() < std::fs::metadata(&binary).unwrap().len());
}

#[test]
fn a_handler_needing_a_newer_glibc_than_allowed_is_refused_by_version() {
    let dir = tempfile::tempdir().unwrap();
    // Every x86_64 Rust binary needs symbols newer than glibc 2.3.
    let out = package(handler(), dir.path(), "2.3");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs GLIBC_2."), "{err}");
    assert!(err.contains("newer than 2.3"), "{err}");
    assert!(!dir.path().join("lookout-reminders.zip").exists());
}

//! The CI corpus replay: every target over every file in `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` (crash inputs kept after their fix). A panic fails the test
//! with the file's name; an empty or missing corpus directory fails too, so a target cannot
//! silently lose its seeds.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_survives_its_corpus_and_regressions() {
    let mut failures = Vec::new();
    for (name, target) in ipfs_image_fuzz::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let regressions = fuzz_dir().join("regressions").join(name);
        let kept = if regressions.is_dir() {
            files(&regressions)
        } else {
            Vec::new()
        };
        for file in corpus.iter().chain(&kept) {
            let data = std::fs::read(file).expect("corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "targets panicked on: {failures:#?}");
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (name, _) in ipfs_image_fuzz::TARGETS {
        let file = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("ipfs_image_fuzz::{name}")),
            "{} does not call ipfs_image_fuzz::{name}",
            file.display()
        );
    }
}

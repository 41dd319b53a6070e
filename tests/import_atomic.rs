//! `import` over an existing data set is one atomic step: killed (as by `kill -9`) or failing
//! at any step of the write, it leaves the old data set whole and usable, never new images with
//! old labels; the next import sweeps what the killed one left beside it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use image::{GrayImage, Luma};
use mnist_cnn::data::{SplitKind, load_split};
use predicates::prelude::*;

/// Steps of a data set write: six files staged (the four IDX files, classes.txt and
/// dataset.json), the moment before the swap, the moment after.
const STEPS: usize = 8;

/// Two classes of a few light-on-dark squares and bars.
fn pictures(src: &Path) {
    for (class, bar) in [("bar", true), ("square", false)] {
        let dir = src.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for variant in 0..6u32 {
            let picture = GrayImage::from_fn(20, 20, |x, y| {
                let (dx, dy) = (x as i32 - 10 - (variant % 2) as i32, y as i32 - 10);
                let ink = if bar {
                    dx.abs() <= 1 && dy.abs() <= 7
                } else {
                    dx.abs() <= 5 && dy.abs() <= 5
                };
                Luma([if ink { 230 } else { 10 }])
            });
            picture.save(dir.join(format!("{variant}.png"))).unwrap();
        }
    }
}

/// Every file in `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

/// Whatever is in `out` loads as one consistent data set; returns its image side.
fn consistent_side(out: &Path) -> usize {
    let train = load_split(out, SplitKind::Train).unwrap();
    let test = load_split(out, SplitKind::Test).unwrap();
    assert_eq!((train.rows, train.cols), (test.rows, test.cols));
    assert_eq!(train.class_names(), ["bar", "square"]);
    train.rows
}

fn stale_beside(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".mnist-cnn-"))
        .collect()
}

fn import(dir: &Path, size: &str) -> assert_cmd::Command {
    let mut command = common::mnist_cnn(dir);
    command.args([
        "-q",
        "import",
        "src",
        "--out",
        "out",
        "--size",
        size,
        "--test-fraction",
        "0.34",
    ]);
    command
}

#[test]
fn a_kill_at_any_step_leaves_the_old_data_set_or_the_whole_new_one() {
    let dir = tempfile::tempdir().unwrap();
    pictures(&dir.path().join("src"));
    let out = dir.path().join("out");
    import(dir.path(), "12x12").assert().success();
    std::fs::write(out.join("notes.txt"), b"kept across imports").unwrap();
    let old = snapshot(&out);
    assert_eq!(consistent_side(&out), 12);
    for step in 1..=STEPS {
        import(dir.path(), "16x16")
            .env("MNIST_CNN_DIR_FAULT", format!("crash:{step}"))
            .assert()
            .failure();
        let side = consistent_side(&out);
        if step < STEPS {
            assert_eq!(snapshot(&out), old, "killed at step {step}");
        } else {
            assert_eq!(side, 16, "killed after the swap: the new data set is whole");
            assert_eq!(snapshot(&out)["notes.txt"], b"kept across imports");
        }
        // The next import sweeps the killed one's staging folder and starts over.
        import(dir.path(), "12x12").assert().success();
        assert_eq!(
            snapshot(&out),
            old,
            "after the import following step {step}"
        );
        assert!(
            stale_beside(dir.path()).is_empty(),
            "after step {step}: {:?}",
            stale_beside(dir.path())
        );
    }
}

#[test]
fn a_failure_at_any_step_leaves_the_old_data_set_and_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    pictures(&dir.path().join("src"));
    let out = dir.path().join("out");
    import(dir.path(), "12x12").assert().success();
    let old = snapshot(&out);
    for step in 1..STEPS {
        import(dir.path(), "16x16")
            .env("MNIST_CNN_DIR_FAULT", format!("fail:{step}"))
            .assert()
            .code(1)
            .stderr(predicate::str::contains("injected failure"));
        assert_eq!(snapshot(&out), old, "failed at step {step}");
        assert!(stale_beside(dir.path()).is_empty(), "step {step}");
    }
}

#[test]
fn a_folder_in_the_way_fails_before_anything_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    pictures(&dir.path().join("src"));
    let out = dir.path().join("out");
    import(dir.path(), "12x12").assert().success();
    std::fs::remove_file(out.join("classes.txt")).unwrap();
    std::fs::create_dir(out.join("classes.txt")).unwrap();
    let old = snapshot_files(&out);
    import(dir.path(), "16x16")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("classes.txt is a folder"));
    assert_eq!(snapshot_files(&out), old);
    assert!(out.join("classes.txt").is_dir());
    assert!(stale_beside(dir.path()).is_empty());
}

/// Like [`snapshot`], for the regular files only.
fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

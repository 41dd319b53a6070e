//! A corpus of bad inputs and flags against the real binary: broken data directories (every
//! kind of damaged IDX file, bad `classes.txt`, empty and inconsistent splits), damaged run
//! directories, unreadable pictures and absurd flag values. Every case must end in a clean
//! error (exit 1 with one `error:` line, or clap's usage error with exit 2), never a panic
//! (exit 101 and a backtrace), and never hang.

mod common;

use std::path::Path;
use std::time::Duration;

use common::data::gzip;
use mnist_cnn::data::idx::{IdxImages, encode_images, encode_labels};

fn images(count: usize, side: usize) -> Vec<u8> {
    encode_images(&IdxImages {
        count,
        rows: side,
        cols: side,
        channels: 1,
        pixels: vec![128; count * side * side],
    })
}

/// A data directory: (file name, contents) for each file; a `None` content makes a folder.
type DataSet = Vec<(&'static str, Option<Vec<u8>>)>;

fn good_split(prefix: &'static str, labels: Vec<u8>) -> DataSet {
    let (images_name, labels_name) = match prefix {
        "train" => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        _ => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    };
    vec![
        (images_name, Some(images(labels.len(), 28))),
        (labels_name, Some(encode_labels(&labels))),
    ]
}

fn good_data() -> DataSet {
    let labels: Vec<u8> = (0..20).map(|i| i % 10).collect();
    let mut set = good_split("train", labels.clone());
    set.extend(good_split("t10k", labels));
    set
}

/// `good_data` with one file replaced (or added).
fn with(name: &'static str, content: Option<Vec<u8>>) -> DataSet {
    let mut set: DataSet = good_data()
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect();
    set.push((name, content));
    set
}

fn corpus() -> Vec<(&'static str, DataSet)> {
    let labels_header = |count: u32| {
        let mut bytes = 0x0801u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes
    };
    let images_header = |dims: [u32; 3]| {
        let mut bytes = 0x0803u32.to_be_bytes().to_vec();
        for dim in dims {
            bytes.extend_from_slice(&dim.to_be_bytes());
        }
        bytes
    };
    let labels: Vec<u8> = (0..20).map(|i| i % 10).collect();
    let good_images = images(20, 28);
    vec![
        ("empty directory", vec![]),
        (
            "empty images file",
            with("train-images-idx3-ubyte", Some(vec![])),
        ),
        (
            "empty labels file",
            with("train-labels-idx1-ubyte", Some(vec![])),
        ),
        (
            "wrong magic",
            with("train-images-idx3-ubyte", Some(encode_labels(&labels))),
        ),
        (
            "header only",
            with("train-images-idx3-ubyte", Some(images_header([20, 28, 28]))),
        ),
        (
            "absurd count",
            with("train-labels-idx1-ubyte", Some(labels_header(u32::MAX))),
        ),
        (
            "absurd side",
            with(
                "train-images-idx3-ubyte",
                Some(images_header([1, 1 << 20, 1])),
            ),
        ),
        (
            "zero side",
            with("train-images-idx3-ubyte", Some(images_header([0, 0, 28]))),
        ),
        ("2x2 images", {
            let mut set = vec![
                ("train-images-idx3-ubyte", Some(images(20, 2))),
                ("t10k-images-idx3-ubyte", Some(images(20, 2))),
            ];
            set.push(("train-labels-idx1-ubyte", Some(encode_labels(&labels))));
            set.push(("t10k-labels-idx1-ubyte", Some(encode_labels(&labels))));
            set
        }),
        (
            "count mismatch",
            with("train-labels-idx1-ubyte", Some(encode_labels(&[1, 2, 3]))),
        ),
        (
            "truncated body",
            with(
                "train-images-idx3-ubyte",
                Some(good_images[..1000].to_vec()),
            ),
        ),
        (
            "trailing bytes",
            with(
                "train-images-idx3-ubyte",
                Some([&good_images[..], b"xx"].concat()),
            ),
        ),
        (
            "corrupt gzip",
            with(
                "train-images-idx3-ubyte.gz",
                Some(b"\x1f\x8b\x08garbage".to_vec()),
            ),
        ),
        ("truncated gzip", {
            let whole = gzip(&good_images);
            with(
                "train-images-idx3-ubyte.gz",
                Some(whole[..whole.len() / 2].to_vec()),
            )
        }),
        (
            "gzip with junk after it",
            with(
                "train-labels-idx1-ubyte.gz",
                Some([gzip(&encode_labels(&labels)), b"junk".to_vec()].concat()),
            ),
        ),
        (
            "images file is a folder",
            with("train-images-idx3-ubyte", None),
        ),
        ("zero images", {
            let mut set = good_split("t10k", labels.clone());
            set.push(("train-images-idx3-ubyte", Some(images(0, 28))));
            set.push(("train-labels-idx1-ubyte", Some(encode_labels(&[]))));
            set
        }),
        ("zero test images", {
            let mut set = good_split("train", labels.clone());
            set.push(("t10k-images-idx3-ubyte", Some(images(0, 28))));
            set.push(("t10k-labels-idx1-ubyte", Some(encode_labels(&[]))));
            set
        }),
        ("stray label 200", {
            let mut stray = labels.clone();
            stray[7] = 200;
            with("train-labels-idx1-ubyte", Some(encode_labels(&stray)))
        }),
        (
            "label above classes.txt",
            with("classes.txt", Some(b"zero\none\ntwo\n".to_vec())),
        ),
        (
            "empty classes.txt",
            with("classes.txt", Some(b"\n\n".to_vec())),
        ),
        (
            "300 class names",
            with(
                "classes.txt",
                Some(
                    (0..300)
                        .map(|i| format!("c{i}\n"))
                        .collect::<String>()
                        .into_bytes(),
                ),
            ),
        ),
        (
            "binary classes.txt",
            with("classes.txt", Some(vec![0xff, 0xfe, 0, 1, b'\n'])),
        ),
        ("classes.txt is a folder", with("classes.txt", None)),
        ("test split missing", good_split("train", labels.clone())),
    ]
}

fn write_data(dir: &Path, set: &DataSet) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in set {
        match content {
            Some(bytes) => std::fs::write(dir.join(name), bytes).unwrap(),
            None => std::fs::create_dir_all(dir.join(name)).unwrap(),
        }
    }
}

/// Runs the binary; fails the test on a panic, a hang, or an unclean error.
fn check(dir: &Path, case: &str, args: &[&str]) -> i32 {
    let output = common::mnist_cnn(dir)
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code();
    assert!(
        !stderr.contains("panicked") && code != Some(101),
        "{case}: {args:?} panicked: {stderr}"
    );
    let code = code.unwrap_or_else(|| panic!("{case}: {args:?} ended by a signal: {stderr}"));
    match code {
        0 => {}
        // One line per error (predict reports each picture it could not read, then a summary).
        1 => {
            assert!(stderr.lines().count() >= 1, "{case}: {args:?}: {stderr}");
            assert!(
                stderr.lines().all(|line| line.starts_with("error: ")),
                "{case}: {args:?}: {stderr}"
            );
        }
        2 => assert!(stderr.contains("error:"), "{case}: {args:?}: {stderr}"),
        _ => panic!("{case}: {args:?} exited {code}: {stderr}"),
    }
    code
}

const TRAIN: [&str; 9] = [
    "train",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "1",
    "--batch-size",
    "4",
    "--out",
    "run-on-bad-data",
];

#[test]
fn bad_data_directories_are_clean_errors_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    // A small trained model, to evaluate and predict the bad data with.
    check(dir.path(), "setup", &common::small_model_args("model"));
    let mut failures = 0;
    for (case, set) in corpus() {
        let data = dir.path().join("data").join(case.replace(' ', "-"));
        write_data(&data, &set);
        let data = data.to_str().unwrap();
        let commands: [&[&str]; 4] = [
            &["heatmap", "--index", "1", "-o", "h.png"],
            &TRAIN,
            &["evaluate", "--model-dir", "model"],
            &["predict", "--model-dir", "model", "--index", "3"],
        ];
        for command in commands {
            let args: Vec<&str> = ["--threads", "1", "--data-dir", data]
                .into_iter()
                .chain(command.iter().copied())
                .collect();
            if check(dir.path(), case, &args) != 0 {
                failures += 1;
            }
        }
    }
    // Most cases fail: every one in heatmap and train, those that touch the test split in
    // evaluate and predict.
    assert!(failures > 50, "{failures}");
}

#[test]
fn the_empty_and_the_stray_cases_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    for (case, expected) in [
        ("zero images", "holds no images"),
        ("stray label 200", "label 200 (image 7)"),
        ("label above classes.txt", "label 3 at index 3 has no name"),
    ] {
        let set = corpus()
            .into_iter()
            .find(|(name, _)| *name == case)
            .unwrap()
            .1;
        let data = dir.path().join(case.replace(' ', "-"));
        write_data(&data, &set);
        let output = common::mnist_cnn(dir.path())
            .args(["--threads", "1", "--data-dir", data.to_str().unwrap()])
            .args(TRAIN)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{case}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert!(!stderr.contains("at least 2 classes"), "{case}: {stderr}");
    }
}

#[test]
fn damaged_runs_pictures_and_absurd_flags_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), "setup", &common::small_model_args("model"));
    let manifest = std::fs::read(dir.path().join("model/run.json")).unwrap();
    let edit = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        for entry in std::fs::read_dir(dir.path().join("model")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), run.join(entry.file_name())).unwrap();
            }
        }
        let mut info: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        change(&mut info);
        std::fs::write(run.join("run.json"), info.to_string()).unwrap();
    };
    edit("zero-shape", &|info| info["shape"]["rows"] = 0.into());
    edit("huge-shape", &|info| {
        info["shape"]["rows"] = 100_000_000u64.into()
    });
    edit("no-classes", &|info| {
        info["shape"]["classes"] = 0.into();
        info["class_names"] = serde_json::json!([]);
    });
    edit("wrong-types", &|info| {
        info["config"] = serde_json::json!("cnn")
    });
    edit("missing-file", &|info| {
        info["checkpoint"]["model"]["file"] = "nowhere.bpk".into()
    });
    edit("escaping-file", &|info| {
        info["checkpoint"]["model"]["file"] = "../../etc/passwd".into()
    });
    std::fs::create_dir_all(dir.path().join("garbage")).unwrap();
    std::fs::write(dir.path().join("garbage/run.json"), [0xff, 0, 0x7b]).unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();
    std::fs::write(dir.path().join("text.png"), b"not a picture").unwrap();
    std::fs::create_dir_all(dir.path().join("folder.png")).unwrap();
    // A PNG header declaring a 100000 x 100000 picture.
    let mut huge = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    huge.extend_from_slice(&100_000u32.to_be_bytes());
    huge.extend_from_slice(&100_000u32.to_be_bytes());
    huge.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(dir.path().join("huge.png"), &huge).unwrap();
    let fifo = dir.path().join("fifo.png");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    std::fs::write(dir.path().join("a-file"), b"").unwrap();

    let mut cases: Vec<Vec<&str>> = Vec::new();
    for run in [
        "zero-shape",
        "huge-shape",
        "no-classes",
        "wrong-types",
        "missing-file",
        "escaping-file",
        "garbage",
        "a-file",
        "nowhere",
    ] {
        cases.push(vec!["evaluate", "--model-dir", run]);
        cases.push(vec!["predict", "--model-dir", run, "--index", "0"]);
        cases.push(vec![
            "train", "--resume", "--out", run, "--epochs", "2", "--limit", "64",
        ]);
    }
    for picture in [
        "empty.png",
        "text.png",
        "folder.png",
        "huge.png",
        "fifo.png",
        "missing.png",
    ] {
        cases.push(vec!["predict", "--model-dir", "model", picture]);
        cases.push(vec![
            "--json",
            "predict",
            "--model-dir",
            "model",
            picture,
            "text.png",
        ]);
    }
    cases.extend([
        vec!["heatmap", "--index", "18446744073709551615"],
        vec!["heatmap", "--index", "-1"],
        vec!["heatmap", "-o", "x.jpg"],
        vec!["heatmap", "-o", "a-file/x.png"],
        vec!["predict", "--model-dir", "model", "--index", "99999999"],
        vec![
            "train",
            "--batch-size",
            "18446744073709551615",
            "--limit",
            "64",
            "--steps-per-epoch",
            "1",
            "--epochs",
            "1",
            "--out",
            "r1",
        ],
        vec![
            "train",
            "--limit",
            "18446744073709551615",
            "--steps-per-epoch",
            "1",
            "--epochs",
            "1",
            "--out",
            "r2",
        ],
        vec!["train", "--lr", "NaN"],
        vec![
            "train",
            "--validation-split",
            "0.9999999",
            "--limit",
            "3",
            "--epochs",
            "1",
            "--out",
            "r3",
        ],
        vec!["train", "--out", "a-file"],
        vec![
            "evaluate",
            "--model-dir",
            "model",
            "--batch-size",
            "18446744073709551615",
        ],
        vec!["bench", "--batch-sizes", "0"],
        vec!["import", "nowhere", "--out", "x"],
        vec!["import", "a-file", "--out", "x"],
        vec!["import", ".", "--out", "x", "--size", "0x0"],
        vec!["import", ".", "--out", "x", "--size", "99999x1"],
        vec!["import", ".", "--out", "/"],
        vec!["download", "--mirror", "", "--timeout", "1"],
        vec!["download", "--mirror", "gopher://x", "--timeout", "1"],
        vec!["download", "--deadline", "0"],
        vec!["download", "--min-rate", "-5"],
        vec!["--threads", "99999999999999999999", "heatmap"],
    ]);
    for args in &cases {
        let mut full = vec!["--threads", "1"];
        full.extend(args.iter().copied());
        check(dir.path(), "flags", &full);
    }
}

#[test]
fn a_label_without_a_class_name_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), "setup", &common::small_model_args("model"));
    let set = corpus()
        .into_iter()
        .find(|(name, _)| *name == "label above classes.txt")
        .unwrap()
        .1;
    let data = dir.path().join("data");
    write_data(&data, &set);
    let commands: [&[&str]; 4] = [
        &["heatmap", "--index", "1", "-o", "h.png"],
        &TRAIN,
        &["evaluate", "--model-dir", "model"],
        &["predict", "--model-dir", "model", "--index", "3"],
    ];
    for command in commands {
        common::mnist_cnn(dir.path())
            .args(["--threads", "1", "--data-dir", data.to_str().unwrap()])
            .args(command)
            .assert()
            .code(1)
            .stderr(predicates::str::contains("label 3 at index 3 has no name"));
    }
}

#[test]
fn a_heatmap_is_never_written_under_another_formats_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["x.jpg", "x.JPEG", "x.svg", "x"] {
        let output = common::mnist_cnn(dir.path())
            .args(["heatmap", "--index", "0", "-o", name])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--output") && stderr.contains(".png"),
            "{name}: {stderr}"
        );
        assert!(!dir.path().join(name).exists(), "{name} was written");
    }
    common::mnist_cnn(dir.path())
        .args(["heatmap", "--index", "0", "-o", "x.PNG"])
        .assert()
        .success();
    let bytes = std::fs::read(dir.path().join("x.PNG")).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
}

#[test]
fn an_empty_mnist_data_dir_means_the_default() {
    let dir = tempfile::tempdir().unwrap();
    common::mnist_cnn(dir.path())
        .env("MNIST_DATA_DIR", "")
        .args(["heatmap", "--index", "0"])
        .assert()
        .success()
        .stdout(predicates::str::starts_with("5\n"));
}

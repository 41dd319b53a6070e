//! The downloader against hostile or hopeless mirrors on 127.0.0.1: a server trickling bytes,
//! one that never finishes, a gzip bomb, junk after the gzip stream, a multi-member file, a
//! FIFO in a directory mirror; and the binary ended by SIGTERM or SIGINT mid-download, and the
//! temporaries of killed runs swept by the next.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::data::{all_gz_names, gzip, zeros_member};
use common::http::{Reply, Server};
use common::names_in;

use mnist_cnn::data::download::{DownloadOptions, FileOutcome, download};
use mnist_cnn::data::mnist::{MNIST_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};

fn real_gz(name: &str) -> Vec<u8> {
    std::fs::read(common::data_dir().join(name)).unwrap()
}

/// A mirror at `/m/` sending `reply(name)` for each requested file name.
fn server(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
    Server::start(move |url| reply(url.rsplit('/').next().unwrap_or("")))
}

/// 200 with `body(name)`, or 404 where that is None.
fn serving(body: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static) -> Server {
    paced(body, |reply| reply)
}

/// As [`serving`], each reply changed by `pace`.
fn paced(
    body: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static,
    pace: impl Fn(Reply) -> Reply + Send + Sync + 'static,
) -> Server {
    server(move |name| match body(name) {
        Some(bytes) => pace(Reply::ok(bytes)),
        None => Reply::status(404, ""),
    })
}

/// The real file of that name.
fn real(name: &str) -> Option<Vec<u8>> {
    MNIST_FILES
        .iter()
        .any(|file| file.gz_name() == name)
        .then(|| real_gz(name))
}

fn options(mirrors: &[String]) -> DownloadOptions {
    DownloadOptions {
        mirrors: mirrors.to_vec(),
        timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(20),
        min_rate: 1000,
        rate_window: Duration::from_millis(500),
        retries: 0,
        backoff: Duration::ZERO,
        ..DownloadOptions::default()
    }
}

/// A data directory holding the two image files, so that only the labels are fetched.
fn labels_only_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in [TRAIN_IMAGES, TEST_IMAGES] {
        std::fs::copy(
            common::data_dir().join(file.gz_name()),
            dir.path().join(file.gz_name()),
        )
        .unwrap();
    }
    dir
}

/// The first mirror misbehaves, the second is the real data as a directory: the labels come
/// from the second, within `within`, and the first mirror's failure says `reason`.
fn falls_back(first: &Server, reason: &str, within: Duration) {
    let dir = labels_only_dir();
    let good = common::data_dir().display().to_string();
    let mut messages = Vec::new();
    // The first mirror's failure is reported in the error when every mirror fails.
    let error = download(dir.path(), &options(&[first.mirror("m")]))
        .unwrap_err()
        .to_string();
    messages.push(error.clone());
    assert!(error.contains(reason), "expected {reason:?} in: {error}");
    let start = Instant::now();
    let reports = download(dir.path(), &options(&[first.mirror("m"), good.clone()])).unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed < within, "took {elapsed:?}");
    for file in [TRAIN_LABELS, TEST_LABELS] {
        let report = reports.iter().find(|r| r.name == file.name).unwrap();
        assert_eq!(
            report.outcome,
            FileOutcome::Fetched {
                mirror: good.clone()
            }
        );
    }
    assert_eq!(names_in(dir.path()), all_gz_names(), "leftovers");
}

#[test]
fn a_server_sending_one_byte_at_a_time_is_given_up_for_the_next_mirror() {
    let server = paced(real, |reply| Reply {
        chunk: 1,
        tick: Duration::from_millis(20),
        ..reply
    });
    falls_back(&server, "too slow: ", Duration::from_secs(5));
}

#[test]
fn a_transfer_past_its_deadline_is_given_up_for_the_next_mirror() {
    // 10 KB/s passes the minimum rate, but the 28,857 bytes would take 3 seconds.
    let server = paced(real, |reply| Reply {
        chunk: 1000,
        tick: Duration::from_millis(100),
        ..reply
    });
    let dir = labels_only_dir();
    let start = Instant::now();
    let error = download(
        dir.path(),
        &DownloadOptions {
            deadline: Duration::from_secs(1),
            ..options(&[server.mirror("m")])
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("not done within the deadline of 1s"),
        "{error}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        names_in(dir.path()).len(),
        2,
        "leftovers: {:?}",
        names_in(dir.path())
    );
}

/// A first mirror too slow (below the minimum rate, or past the deadline) for the first file
/// is tried last for the three that remain: one request, not four, and no minute lost per file.
#[test]
fn a_mirror_too_slow_for_one_file_is_tried_last_for_the_rest() {
    for (pace, options_of) in [
        (
            (1, Duration::from_millis(20)),
            options as fn(&[String]) -> DownloadOptions,
        ),
        ((1000, Duration::from_millis(100)), |mirrors| {
            DownloadOptions {
                deadline: Duration::from_secs(1),
                ..options(mirrors)
            }
        }),
    ] {
        let slow = paced(real, move |reply| Reply {
            chunk: pace.0,
            tick: pace.1,
            ..reply
        });
        let dir = tempfile::tempdir().unwrap();
        let good = common::data_dir().display().to_string();
        let start = Instant::now();
        let reports = download(dir.path(), &options_of(&[slow.mirror("m"), good.clone()])).unwrap();
        let elapsed = start.elapsed();
        assert!(
            reports.iter().all(|r| r.outcome
                == FileOutcome::Fetched {
                    mirror: good.clone()
                }),
            "{reports:?}"
        );
        assert_eq!(slow.urls(), [format!("/m/{}", MNIST_FILES[0].gz_name())]);
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        assert_eq!(names_in(dir.path()), all_gz_names(), "leftovers");
    }
}

#[test]
fn an_endless_gzip_stream_stops_at_the_files_size() {
    // A gzip member of 64 MiB of zeros, sent again and again without end, slowly.
    let member = gzip(&vec![0u8; 64 << 20]);
    let server = paced(
        move |name| real(name).map(|_| member.clone()),
        |reply| Reply {
            endless: true,
            announce_length: false,
            chunk: 16 << 10,
            tick: Duration::from_millis(50),
            ..reply
        },
    );
    falls_back(
        &server,
        "decompresses to more than the 60008 bytes of train-labels-idx1-ubyte",
        Duration::from_secs(5),
    );
}

#[test]
fn junk_after_the_gzip_stream_is_refused_and_multi_member_gzip_accepted() {
    let junk = serving(|name| {
        real(name).map(|mut bytes| {
            bytes.extend_from_slice(b"\0\0\0\0trailing junk");
            bytes
        })
    });
    falls_back(&junk, "corrupt gzip data", Duration::from_secs(5));

    let split = serving(|name| {
        real(name).map(|bytes| {
            let content =
                mnist_cnn::data::idx::read_maybe_gzipped(&common::data_dir().join(name)).unwrap();
            drop(bytes);
            let (a, b) = content.split_at(content.len() / 3);
            let mut joined = gzip(a);
            joined.extend(gzip(b));
            joined
        })
    });
    let dir = labels_only_dir();
    let reports = download(dir.path(), &options(&[split.mirror("m")])).unwrap();
    assert!(
        reports
            .iter()
            .filter(|r| matches!(r.outcome, FileOutcome::Fetched { .. }))
            .count()
            == 2
    );
    assert_eq!(split.urls().len(), 2);
}

#[test]
fn a_fifo_in_a_directory_mirror_is_passed_over() {
    let mirror = tempfile::tempdir().unwrap();
    for file in MNIST_FILES {
        let path = mirror.path().join(file.gz_name());
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    }
    let dir = labels_only_dir();
    let start = Instant::now();
    let fifo_mirror = mirror.path().display().to_string();
    let good = common::data_dir().display().to_string();
    let reports = download(dir.path(), &options(&[fifo_mirror, good])).unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(reports.len(), 4);
    let error = download(
        dir.path(),
        &DownloadOptions {
            force: true,
            ..options(&[mirror.path().display().to_string()])
        },
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("is not a regular file"), "{error}");
}

fn temporaries(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|name| name.starts_with(".mnist-cnn-tmp-"))
        .collect()
}

#[test]
fn sigterm_and_sigint_remove_the_partial_download() {
    let server = paced(real, |reply| Reply {
        chunk: 1000,
        tick: Duration::from_millis(50),
        ..reply
    });
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mnist-cnn"))
            .current_dir(dir.path())
            .env_remove("MNIST_MIRROR")
            .args([
                "--data-dir",
                "data",
                "download",
                "--mirror",
                &server.mirror("m"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let data = dir.path().join("data");
        let start = Instant::now();
        while !data.is_dir() || temporaries(&data).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no temporary appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let some bytes arrive.
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "{status:?}");
        assert!(temporaries(&data).is_empty(), "{:?}", names_in(&data));
    }
}

#[test]
fn the_next_run_sweeps_temporaries_of_killed_runs() {
    let dir = tempfile::tempdir().unwrap();
    let stale: PathBuf = dir.path().join(".mnist-cnn-tmp-2147483000-abc123");
    std::fs::write(&stale, vec![0u8; 1 << 20]).unwrap();
    let other = dir.path().join(".tmp-not-ours");
    std::fs::write(&other, b"x").unwrap();
    download(
        dir.path(),
        &options(&[common::data_dir().display().to_string()]),
    )
    .unwrap();
    assert!(!stale.exists());
    assert!(other.exists(), "only our own naming is swept");
}

#[test]
fn a_gzip_bomb_served_to_download_costs_little_memory() {
    // 64 MiB of zeros per 64 KiB member, 300 members: a 20 MB file of 20 GB.
    let bomb: Vec<u8> = zeros_member().repeat(300);
    assert!(bomb.len() < 25_000_000, "{}", bomb.len());
    let server = serving(move |name| real(name).map(|_| bomb.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, peak_mb) = common::run_measured(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "download",
            "--mirror",
            &server.mirror("m"),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("decompresses to more than the 47040016 bytes"),
        "{stderr}"
    );
    eprintln!("download of a 20 MB gzip bomb: peak {peak_mb:.0} MB");
    assert!(peak_mb < 100.0, "peak {peak_mb:.0} MB");
    assert!(temporaries(&dir.path().join("data")).is_empty());
}

#[test]
fn a_present_file_with_junk_after_its_gzip_stream_is_not_called_verified() {
    let dir = labels_only_dir();
    let name = TRAIN_LABELS.gz_name();
    let mut damaged = real_gz(&name);
    damaged.extend_from_slice(b"\0\0junk");
    std::fs::write(dir.path().join(&name), &damaged).unwrap();
    let mirror = common::data_dir().display().to_string();
    let reports = download(dir.path(), &options(std::slice::from_ref(&mirror))).unwrap();
    let report = reports
        .iter()
        .find(|r| r.name == TRAIN_LABELS.name)
        .unwrap();
    assert_eq!(report.outcome, FileOutcome::Fetched { mirror });
    assert_eq!(
        std::fs::read(dir.path().join(&name)).unwrap(),
        real_gz(&name)
    );
}

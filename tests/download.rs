//! The downloader against real HTTP servers on 127.0.0.1 serving the real MNIST files, each
//! route prefix simulating one kind of broken mirror.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::data::{all_gz_names, gzip};
use common::data_dir;
use common::http::{Reply, Server, TruncatingServer};
use common::names_in;

use mnist_cnn::data::download::{DownloadOptions, FileOutcome, FileReport, download};
use mnist_cnn::data::idx::read_maybe_gzipped;
use mnist_cnn::data::mnist::{self, MNIST_FILES, MnistFile, md5_hex};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `/slow/` waits before answering: well past the client timeout.
const SLOW_DELAY: Duration = Duration::from_millis(2500);

/// The real `.gz` files, by name.
fn real_files() -> &'static HashMap<String, Vec<u8>> {
    static FILES: std::sync::OnceLock<HashMap<String, Vec<u8>>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        MNIST_FILES
            .iter()
            .map(|file| {
                let path = data_dir().join(file.gz_name());
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (file.gz_name(), bytes)
            })
            .collect()
    })
}

/// A mirror with one route prefix per behaviour: `/good/`, `/404/`, `/500/`, `/wrong/` (valid
/// gzip of wrong bytes), `/html/` (200 with an HTML page), `/slow/` (answers after
/// [`SLOW_DELAY`]).
fn mirror_server() -> Server {
    Server::start(respond)
}

fn respond(url: &str) -> Reply {
    let mut parts = url.trim_start_matches('/').splitn(2, '/');
    let (route, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(real) = real_files().get(name) else {
        return Reply::status(404, "");
    };
    match route {
        "good" => Reply::ok(real.clone()),
        "404" => Reply::status(404, "no such file"),
        "500" => Reply::status(500, "oops"),
        "wrong" => Reply::ok(gzip(b"these are not the bytes")),
        "html" => Reply {
            content_type: Some("text/html; charset=utf-8"),
            ..Reply::status(
                200,
                "<!DOCTYPE html><html><body>Please log in</body></html>",
            )
        },
        "slow" => Reply {
            delay: SLOW_DELAY,
            ..Reply::ok(real.clone())
        },
        _ => Reply::status(404, "unknown route"),
    }
}

/// A mirror whose every answer announces the whole file but sends half of it.
fn truncating_server() -> TruncatingServer {
    TruncatingServer::start(|name| real_files().get(name).cloned())
}

fn options(mirrors: &[String]) -> DownloadOptions {
    DownloadOptions {
        mirrors: mirrors.to_vec(),
        force: false,
        timeout: CLIENT_TIMEOUT,
        retries: 1,
        backoff: Duration::from_millis(10),
        ..DownloadOptions::default()
    }
}

/// Copies the real files of `files` into `dir`, so the downloader finds them verified.
fn seed(dir: &Path, files: &[MnistFile]) {
    for file in files {
        std::fs::copy(data_dir().join(file.gz_name()), dir.join(file.gz_name())).unwrap();
    }
}

fn report_of<'a>(reports: &'a [FileReport], file: &MnistFile) -> &'a FileReport {
    reports
        .iter()
        .find(|report| report.name == file.name)
        .unwrap_or_else(|| panic!("no report for {}: {reports:?}", file.name))
}

/// Every report says `outcome`, names the right file, and the file holds the canonical content.
fn assert_reports(dir: &Path, reports: &[FileReport], expect: impl Fn(&MnistFile) -> FileOutcome) {
    assert_eq!(reports.len(), 4, "{reports:?}");
    for file in &MNIST_FILES {
        let report = report_of(reports, file);
        assert_eq!(report.outcome, expect(file), "{}", file.name);
        assert_eq!(report.path, dir.join(file.gz_name()));
        let on_disk = std::fs::metadata(&report.path).unwrap().len();
        assert_eq!(report.bytes, on_disk, "{}", file.name);
        assert_eq!(
            md5_hex(&read_maybe_gzipped(&report.path).unwrap()),
            file.md5,
            "{}",
            file.name
        );
    }
    assert_eq!(names_in(dir), all_gz_names(), "leftover files");
}

fn fetched(mirror: &str) -> FileOutcome {
    FileOutcome::Fetched {
        mirror: mirror.to_string(),
    }
}

#[test]
fn fetches_all_four_files_from_a_good_mirror_into_a_new_dir() {
    let server = mirror_server();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested/mnist");
    // Without the trailing slash: the downloader must add it.
    let mirror = server.mirror("good").trim_end_matches('/').to_string();
    let reports = download(&dir, &options(std::slice::from_ref(&mirror))).unwrap();
    assert_reports(&dir, &reports, |_| fetched(&mirror));
    for file in &MNIST_FILES {
        assert_eq!(
            std::fs::read(dir.join(file.gz_name())).unwrap(),
            real_files()[&file.gz_name()],
            "{}",
            file.name
        );
    }
    assert_eq!(server.count("good"), 4);
    // Reports serialize with the tag the CLI's --json relies on.
    let json = serde_json::to_value(&reports).unwrap();
    assert_eq!(json[0]["outcome"]["status"], "fetched");
    assert_eq!(json[0]["outcome"]["mirror"], mirror.as_str());
}

#[test]
fn verified_files_are_skipped_without_any_request() {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), &MNIST_FILES);
    let reports = download(dir.path(), &options(&[server.mirror("good")])).unwrap();
    assert_reports(dir.path(), &reports, |_| FileOutcome::AlreadyVerified);
    assert_eq!(server.count_prefix("/"), 0, "no request expected");
    let json = serde_json::to_value(&reports).unwrap();
    assert_eq!(json[0]["outcome"]["status"], "already_verified");
}

#[test]
fn raw_verified_files_are_accepted_and_corrupt_ones_replaced() {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES;
    seed(dir.path(), &[train_images, test_images]);
    // A raw (gunzipped) labels file is as good as the .gz one.
    let raw = read_maybe_gzipped(&data_dir().join(test_labels.gz_name())).unwrap();
    std::fs::write(dir.path().join(test_labels.name), &raw).unwrap();
    // A corrupt one must be fetched again.
    std::fs::write(dir.path().join(train_labels.gz_name()), gzip(b"corrupt")).unwrap();
    let mirror = server.mirror("good");
    let reports = download(dir.path(), &options(std::slice::from_ref(&mirror))).unwrap();
    let raw_report = report_of(&reports, &test_labels);
    assert_eq!(raw_report.outcome, FileOutcome::AlreadyVerified);
    assert_eq!(raw_report.path, dir.path().join(test_labels.name));
    assert_eq!(raw_report.bytes, raw.len() as u64);
    assert_eq!(report_of(&reports, &train_labels).outcome, fetched(&mirror));
    assert_eq!(
        md5_hex(&read_maybe_gzipped(&dir.path().join(train_labels.gz_name())).unwrap()),
        train_labels.md5
    );
    assert_eq!(server.count("good"), 1);
    assert_eq!(
        server.count_prefix(&format!("/good/{}", train_labels.gz_name())),
        1
    );
}

#[test]
fn force_fetches_verified_files_again() {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), &MNIST_FILES);
    let mirror = server.mirror("good");
    let options = DownloadOptions {
        force: true,
        ..options(std::slice::from_ref(&mirror))
    };
    let reports = download(dir.path(), &options).unwrap();
    assert_reports(dir.path(), &reports, |_| fetched(&mirror));
    assert_eq!(server.count("good"), 4);
}

/// The first mirror fails with `route`, the second is good. The two large image files are
/// seeded, so the fault hits the two label files; each costs `attempts` requests on the faulty
/// mirror (1 for permanent failures, 1 + retries for transient ones).
fn check_fallback(first: String, count_first: impl Fn() -> usize, attempts: usize) {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES;
    seed(dir.path(), &[train_images, test_images]);
    let good = server.mirror("good");
    let reports = download(dir.path(), &options(&[first.clone(), good.clone()]))
        .unwrap_or_else(|e| panic!("{first}: {e}"));
    assert_reports(dir.path(), &reports, |file| {
        if [train_labels, test_labels].contains(file) {
            fetched(&good)
        } else {
            FileOutcome::AlreadyVerified
        }
    });
    assert_eq!(count_first(), 2 * attempts, "requests to {first}");
    assert_eq!(server.count("good"), 2);
}

fn check_fallback_on_route(route: &str, attempts: usize) {
    let faulty = mirror_server();
    check_fallback(faulty.mirror(route), || faulty.count(route), attempts);
}

#[test]
fn falls_back_after_404() {
    check_fallback_on_route("404", 1);
}

#[test]
fn falls_back_after_500_with_retries() {
    check_fallback_on_route("500", 2);
}

#[test]
fn falls_back_after_wrong_content() {
    check_fallback_on_route("wrong", 1);
}

#[test]
fn falls_back_after_html_page() {
    check_fallback_on_route("html", 1);
}

#[test]
fn falls_back_after_timeout_with_retries() {
    let start = Instant::now();
    check_fallback_on_route("slow", 2);
    // Four attempts, each cut off by the 1 s timeout, and not more than one SLOW_DELAY each.
    let elapsed = start.elapsed();
    assert!(elapsed >= 4 * CLIENT_TIMEOUT, "{elapsed:?}");
}

#[test]
fn falls_back_after_truncated_body_with_retries() {
    let truncating = truncating_server();
    check_fallback(truncating.mirror(), || truncating.count(), 2);
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    let mirror = server.mirror("500");
    let options = DownloadOptions {
        retries: 3,
        backoff: Duration::from_millis(40),
        ..options(std::slice::from_ref(&mirror))
    };
    let start = Instant::now();
    let message = download(dir.path(), &options).unwrap_err().to_string();
    let elapsed = start.elapsed();
    // Only the first file is tried: 1 attempt + 3 retries, waiting 40 + 80 + 160 ms between.
    assert_eq!(server.count("500"), 4, "{message}");
    assert_eq!(
        server.count_prefix(&format!("/500/{}", MNIST_FILES[0].gz_name())),
        4
    );
    assert!(elapsed >= Duration::from_millis(280), "{elapsed:?}");
    assert!(
        message.contains(&format!(
            "{mirror} (HTTP 500 Internal Server Error; gave up after 4 attempts)"
        )),
        "{message}"
    );
}

#[test]
fn every_mirror_failing_names_each_reason_and_leaves_nothing_behind() {
    let server = mirror_server();
    let truncating = truncating_server();
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().unwrap().port()
        )
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mnist");
    let mirrors = [
        server.mirror("404"),
        server.mirror("wrong"),
        server.mirror("html"),
        truncating.mirror(),
        refused.clone(),
    ];
    let message = download(&dir, &options(&mirrors)).unwrap_err().to_string();
    let name = MNIST_FILES[0].gz_name();
    assert!(
        message.starts_with(&format!("could not fetch {name} from any mirror: ")),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    for (mirror, reason) in [
        (&mirrors[0], "(HTTP 404 Not Found)".to_string()),
        (&mirrors[1], "(checksum mismatch: got ".to_string()),
        (
            &mirrors[2],
            "(not a gzip file (got an HTML page))".to_string(),
        ),
        (&mirrors[3], "(truncated body: got ".to_string()),
        (&mirrors[4], "(connection failed: ".to_string()),
    ] {
        assert!(
            message.contains(&format!("{mirror} {reason}")),
            "missing {mirror} {reason} in: {message}"
        );
    }
    assert!(
        message.contains(&format!("expected {}", MNIST_FILES[0].md5)),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "give a working mirror, or put the four files into {}",
            dir.display()
        )),
        "{message}"
    );
    assert!(names_in(&dir).is_empty(), "leftovers: {:?}", names_in(&dir));
    // The truncated mirror was retried once, and the partial bodies were discarded.
    assert_eq!(truncating.count(), 2);
}

#[test]
fn a_local_directory_mirror_works() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = data_dir().display().to_string();
    let reports = download(dir.path(), &options(std::slice::from_ref(&mirror))).unwrap();
    assert_reports(dir.path(), &reports, |_| fetched(&mirror));
}

#[test]
fn a_file_url_mirror_works_after_a_failing_one() {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES;
    seed(dir.path(), &[train_images, train_labels, test_images]);
    let mirror = format!("file://{}/", data_dir().display());
    let reports = download(
        dir.path(),
        &options(&[server.mirror("404"), mirror.clone()]),
    )
    .unwrap();
    assert_eq!(report_of(&reports, &test_labels).outcome, fetched(&mirror));
    assert_eq!(server.count("404"), 1);
    assert_eq!(names_in(dir.path()), all_gz_names());
}

/// The real binary against the loopback server: the summary on success, one clean error line
/// naming every mirror when all fail, and the exit codes.
#[test]
fn command_line_download_reports_each_file_and_fails_cleanly() {
    let server = mirror_server();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    seed(&data, &[mnist::TRAIN_IMAGES, mnist::TEST_IMAGES]);
    let output = assert_cmd::Command::cargo_bin("mnist-cnn")
        .unwrap()
        .current_dir(dir.path())
        .env_remove("MNIST_MIRROR")
        .args(["--data-dir", "data", "download", "--timeout", "5"])
        .args([
            "--mirror",
            &server.mirror("404"),
            "--mirror",
            &server.mirror("good"),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("train-images-idx3-ubyte"), "{stdout}");
    assert!(stdout.contains("already present, verified"), "{stdout}");
    assert!(
        stdout.contains(&format!("fetched from {}, verified", server.mirror("good"))),
        "{stdout}"
    );
    assert_eq!(names_in(&data), all_gz_names());

    let empty = dir.path().join("empty");
    let output = assert_cmd::Command::cargo_bin("mnist-cnn")
        .unwrap()
        .current_dir(dir.path())
        .env_remove("MNIST_MIRROR")
        .args(["--data-dir", "empty", "download", "--timeout", "5"])
        .args([
            "--mirror",
            &server.mirror("404"),
            "--mirror",
            &server.mirror("html"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: could not fetch"), "{stderr}");
    assert!(stderr.contains(&server.mirror("404")), "{stderr}");
    assert!(stderr.contains(&server.mirror("html")), "{stderr}");
    assert!(stderr.contains("--mirror"), "{stderr}");
    assert!(names_in(&empty).is_empty(), "{:?}", names_in(&empty));
}

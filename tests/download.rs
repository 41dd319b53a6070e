//! The downloader against real HTTP servers on 127.0.0.1 serving the real MNIST files, each
//! route prefix simulating one kind of broken mirror.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mnist_cnn::data::download::{DownloadOptions, FileOutcome, FileReport, download};
use mnist_cnn::data::idx::read_maybe_gzipped;
use mnist_cnn::data::mnist::{self, MNIST_FILES, MnistFile, md5_hex};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `/slow/` waits before answering: well past the client timeout.
const SLOW_DELAY: Duration = Duration::from_millis(2500);

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// The real `.gz` files, by name.
fn real_files() -> &'static HashMap<String, Vec<u8>> {
    static FILES: std::sync::OnceLock<HashMap<String, Vec<u8>>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        MNIST_FILES
            .iter()
            .map(|file| {
                let path = mnist_dir().join(file.gz_name());
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (file.gz_name(), bytes)
            })
            .collect()
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

type Counts = Arc<Mutex<HashMap<String, usize>>>;

fn count(counts: &Counts, prefix: &str) -> usize {
    counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

/// A tiny_http server with one route prefix per behaviour:
/// `/good/`, `/404/`, `/500/`, `/wrong/` (valid gzip of wrong bytes), `/html/` (200 with an HTML
/// page), `/slow/` (answers after [`SLOW_DELAY`]). Stopped and joined on drop.
struct MirrorServer {
    port: u16,
    counts: Counts,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MirrorServer {
    fn start() -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let counts = Counts::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(20)) {
                        *counts
                            .lock()
                            .unwrap()
                            .entry(request.url().to_string())
                            .or_insert(0) += 1;
                        let stop = stop.clone();
                        handlers.push(std::thread::spawn(move || respond(request, &stop)));
                    }
                }
                for handler in handlers {
                    handler.join().unwrap();
                }
            })
        };
        MirrorServer {
            port,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    fn mirror(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}/{route}/", self.port)
    }

    /// Requests to `/<route>/...`.
    fn count(&self, route: &str) -> usize {
        count(&self.counts, &format!("/{route}/"))
    }

    /// Requests whose path starts with `prefix`.
    fn count_prefix(&self, prefix: &str) -> usize {
        count(&self.counts, prefix)
    }
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.unwrap();
            }
        }
    }
}

fn respond(request: tiny_http::Request, stop: &AtomicBool) {
    let url = request.url().to_string();
    let mut parts = url.trim_start_matches('/').splitn(2, '/');
    let (route, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(real) = real_files().get(name) else {
        let _ = request.respond(tiny_http::Response::empty(404));
        return;
    };
    let response = match route {
        "good" => tiny_http::Response::from_data(real.clone()),
        "404" => tiny_http::Response::from_string("no such file").with_status_code(404),
        "500" => tiny_http::Response::from_string("oops").with_status_code(500),
        "wrong" => tiny_http::Response::from_data(gzip(b"these are not the bytes")),
        "html" => tiny_http::Response::from_string(
            "<!DOCTYPE html><html><body>Please log in</body></html>",
        )
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", "text/html; charset=utf-8").unwrap(),
        ),
        "slow" => {
            let start = Instant::now();
            while start.elapsed() < SLOW_DELAY && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            tiny_http::Response::from_data(real.clone())
        }
        _ => tiny_http::Response::from_string("unknown route").with_status_code(404),
    };
    // The client may have given up already (slow route): ignore send errors.
    let _ = request.respond(response);
}

/// A raw TCP server whose every answer announces the full Content-Length of the requested file
/// but sends only half of it, then closes the connection. (tiny_http keeps connections alive
/// and would turn this into a timeout rather than an early EOF.)
struct TruncatingServer {
    port: u16,
    counts: Counts,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TruncatingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Counts::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve_truncated(stream, &counts);
                    }
                }
            })
        };
        TruncatingServer {
            port,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    fn mirror(&self) -> String {
        format!("http://127.0.0.1:{}/truncated/", self.port)
    }

    fn count(&self) -> usize {
        count(&self.counts, "/truncated/")
    }
}

impl Drop for TruncatingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_truncated(mut stream: TcpStream, counts: &Counts) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    *counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
    let name = path.rsplit('/').next().unwrap_or("");
    let Some(real) = real_files().get(name) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\n\r\n",
        real.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&real[..real.len() / 2]);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn options(mirrors: &[String]) -> DownloadOptions {
    DownloadOptions {
        mirrors: mirrors.to_vec(),
        force: false,
        show_progress: false,
        timeout: CLIENT_TIMEOUT,
        retries: 1,
        backoff: Duration::from_millis(10),
        ..DownloadOptions::default()
    }
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn all_gz_names() -> Vec<String> {
    let mut names: Vec<String> = MNIST_FILES.iter().map(MnistFile::gz_name).collect();
    names.sort();
    names
}

/// Copies the real files of `files` into `dir`, so the downloader finds them verified.
fn seed(dir: &Path, files: &[MnistFile]) {
    for file in files {
        std::fs::copy(mnist_dir().join(file.gz_name()), dir.join(file.gz_name())).unwrap();
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
    assert_eq!(entries(dir), all_gz_names(), "leftover files");
}

fn fetched(mirror: &str) -> FileOutcome {
    FileOutcome::Fetched {
        mirror: mirror.to_string(),
    }
}

#[test]
fn fetches_all_four_files_from_a_good_mirror_into_a_new_dir() {
    let server = MirrorServer::start();
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
    let server = MirrorServer::start();
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
    let server = MirrorServer::start();
    let dir = tempfile::tempdir().unwrap();
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES;
    seed(dir.path(), &[train_images, test_images]);
    // A raw (gunzipped) labels file is as good as the .gz one.
    let raw = read_maybe_gzipped(&mnist_dir().join(test_labels.gz_name())).unwrap();
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
    let server = MirrorServer::start();
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
    let server = MirrorServer::start();
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
    let faulty = MirrorServer::start();
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
    let truncating = TruncatingServer::start();
    check_fallback(truncating.mirror(), || truncating.count(), 2);
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let server = MirrorServer::start();
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
    let server = MirrorServer::start();
    let truncating = TruncatingServer::start();
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
    assert!(entries(&dir).is_empty(), "leftovers: {:?}", entries(&dir));
    // The truncated mirror was retried once, and the partial bodies were discarded.
    assert_eq!(truncating.count(), 2);
}

#[test]
fn a_local_directory_mirror_works() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = mnist_dir().display().to_string();
    let reports = download(dir.path(), &options(std::slice::from_ref(&mirror))).unwrap();
    assert_reports(dir.path(), &reports, |_| fetched(&mirror));
}

#[test]
fn a_file_url_mirror_works_after_a_failing_one() {
    let server = MirrorServer::start();
    let dir = tempfile::tempdir().unwrap();
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES;
    seed(dir.path(), &[train_images, train_labels, test_images]);
    let mirror = format!("file://{}/", mnist_dir().display());
    let reports = download(
        dir.path(),
        &options(&[server.mirror("404"), mirror.clone()]),
    )
    .unwrap();
    assert_eq!(report_of(&reports, &test_labels).outcome, fetched(&mirror));
    assert_eq!(server.count("404"), 1);
    assert_eq!(entries(dir.path()), all_gz_names());
}

/// The real binary against the loopback server: the summary on success, one clean error line
/// naming every mirror when all fail, and the exit codes.
#[test]
fn command_line_download_reports_each_file_and_fails_cleanly() {
    let server = MirrorServer::start();
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
    assert_eq!(entries(&data), all_gz_names());

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
    assert!(entries(&empty).is_empty(), "{:?}", entries(&empty));
}

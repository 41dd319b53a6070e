//! Fetching the MNIST files from mirrors.
//!
//! Each of the four files is fetched as `<mirror><name>.gz` into a temporary file next to its
//! target, gunzipped and checked against the canonical MD5, and only then renamed into place, so
//! the data directory never holds a partial or wrong file. Mirrors are tried in order; transient
//! failures (connection errors, timeouts, 5xx, truncated bodies) are retried with exponential
//! backoff on the same mirror, permanent ones (4xx, wrong content) move on to the next mirror.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tempfile::NamedTempFile;

use super::idx;
use super::mnist::{MNIST_FILES, MnistFile, md5_hex};
use crate::error::{Error, Result};

/// Mirrors tried when none are given. (yann.lecun.com answers 404 to scripts: never use it.)
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// No MNIST file comes near this compressed; a mirror sending more is broken or hostile.
const MAX_DOWNLOAD_BYTES: u64 = 256 << 20;
/// Exponents of the retry backoff stop growing here, so huge retry counts cannot overflow.
const MAX_BACKOFF_EXPONENT: u32 = 16;
const CHUNK_BYTES: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Base URLs (`http://`, `https://`), `file://` URLs or local directories, tried in order.
    pub mirrors: Vec<String>,
    /// Fetch even the files already present and verified.
    pub force: bool,
    /// Draw a byte progress bar (and retry notes) on stderr.
    pub show_progress: bool,
    /// Connect timeout, and the longest wait for response headers or for any read of the body.
    pub timeout: Duration,
    /// Extra attempts on the same mirror after a transient failure.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            mirrors: DEFAULT_MIRRORS.iter().map(|m| m.to_string()).collect(),
            force: false,
            show_progress: true,
            timeout: Duration::from_secs(60),
            retries: 2,
            backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum FileOutcome {
    /// Already present with the canonical content; nothing was fetched.
    AlreadyVerified,
    /// Fetched and verified from this mirror (as given in the options).
    Fetched { mirror: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FileReport {
    /// The canonical name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub name: String,
    /// The file holding the data now.
    pub path: PathBuf,
    /// Its size on disk.
    pub bytes: u64,
    pub outcome: FileOutcome,
}

/// Makes sure `dir` holds the four verified MNIST files, fetching those missing or wrong.
pub fn download(dir: &Path, options: &DownloadOptions) -> Result<Vec<FileReport>> {
    if options.mirrors.is_empty() {
        return Err(Error::Download(format!(
            "no mirror to download from; give one, or put the four files into {}",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut client = None;
    let mut reports = Vec::with_capacity(MNIST_FILES.len());
    for file in MNIST_FILES {
        let existing = if options.force {
            None
        } else {
            verified_existing(&file, dir)
        };
        let report = match existing {
            Some(path) => {
                let bytes = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len();
                FileReport {
                    name: file.name.to_string(),
                    path,
                    bytes,
                    outcome: FileOutcome::AlreadyVerified,
                }
            }
            None => fetch_file(&file, dir, options, &mut client)?,
        };
        reports.push(report);
    }
    Ok(reports)
}

/// The file `MnistFile::locate` finds, if its content is the canonical one.
fn verified_existing(file: &MnistFile, dir: &Path) -> Option<PathBuf> {
    let path = file.locate(dir)?;
    let content = idx::read_maybe_gzipped(&path).ok()?;
    (md5_hex(&content) == file.md5).then_some(path)
}

/// Why one attempt on one mirror failed; the text is a short reason for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Worth retrying on the same mirror.
    Transient(String),
    /// Retrying this mirror would give the same answer.
    Permanent(String),
}

/// Where a mirror points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Http(String),
    Dir(PathBuf),
    Unsupported(String),
}

fn parse_mirror(mirror: &str) -> Source {
    let lower = mirror.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Source::Http(mirror.to_string())
    } else if lower.starts_with("file://") {
        let rest = mirror.get("file://".len()..).unwrap_or_default();
        if rest.is_empty() {
            return Source::Unsupported("file:// URL without a path".to_string());
        }
        let path = reqwest::Url::parse(mirror)
            .ok()
            .and_then(|url| url.to_file_path().ok())
            .unwrap_or_else(|| PathBuf::from(rest));
        Source::Dir(path)
    } else if let Some((scheme, _)) = mirror.split_once("://") {
        Source::Unsupported(format!(
            "unsupported URL scheme {scheme:?}; use http(s)://, file:// or a directory"
        ))
    } else if mirror.trim().is_empty() {
        Source::Unsupported("empty mirror".to_string())
    } else {
        Source::Dir(PathBuf::from(mirror))
    }
}

/// `<base>/<file>`, with exactly one slash between them.
fn join_url(base: &str, file_name: &str) -> String {
    format!("{}/{file_name}", base.trim_end_matches('/'))
}

/// Tries every mirror in turn for one file; errors only when all fail or on local I/O trouble.
fn fetch_file(
    file: &MnistFile,
    dir: &Path,
    options: &DownloadOptions,
    client: &mut Option<reqwest::blocking::Client>,
) -> Result<FileReport> {
    let gz_name = file.gz_name();
    let target = dir.join(&gz_name);
    let mut failures = Vec::with_capacity(options.mirrors.len());
    for mirror in &options.mirrors {
        let source = parse_mirror(mirror);
        let mut attempt = 0u32;
        let reason = loop {
            let result = match &source {
                Source::Http(base) => {
                    let client = http_client(client, options)?;
                    fetch_http(client, &join_url(base, &gz_name), file, dir, options)?
                }
                Source::Dir(path) => copy_local(&path.join(&gz_name), file, dir, options)?,
                Source::Unsupported(reason) => Err(Failure::Permanent(reason.clone())),
            };
            match result {
                Ok(temp) => {
                    let bytes = temp
                        .as_file()
                        .metadata()
                        .map_err(|e| Error::io(dir, e))?
                        .len();
                    temp.as_file()
                        .sync_all()
                        .map_err(|e| Error::io(&target, e))?;
                    temp.persist(&target)
                        .map_err(|e| Error::io(&target, e.error))?;
                    return Ok(FileReport {
                        name: file.name.to_string(),
                        path: target,
                        bytes,
                        outcome: FileOutcome::Fetched {
                            mirror: mirror.clone(),
                        },
                    });
                }
                Err(Failure::Permanent(reason)) => break reason,
                Err(Failure::Transient(reason)) if attempt < options.retries => {
                    let wait = options
                        .backoff
                        .saturating_mul(1 << attempt.min(MAX_BACKOFF_EXPONENT));
                    if options.show_progress {
                        eprintln!("{gz_name}: {mirror}: {reason}; retrying in {wait:?}");
                    }
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(Failure::Transient(reason)) if attempt > 0 => {
                    break format!("{reason}; gave up after {} attempts", attempt + 1);
                }
                Err(Failure::Transient(reason)) => break reason,
            }
        };
        let reason = reason.replace(['\n', '\r'], " ");
        if options.show_progress {
            eprintln!("{gz_name}: {mirror} failed: {reason}");
        }
        failures.push(format!("{mirror} ({reason})"));
    }
    Err(Error::Download(format!(
        "could not fetch {gz_name} from any mirror: {}; give a working mirror, or put the four files into {}",
        failures.join("; "),
        dir.display()
    )))
}

fn http_client<'a>(
    client: &'a mut Option<reqwest::blocking::Client>,
    options: &DownloadOptions,
) -> Result<&'a reqwest::blocking::Client> {
    if client.is_none() {
        let built = reqwest::blocking::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("mnist-cnn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::Download(format!(
                    "could not set up the HTTP client: {}",
                    root_cause(&e)
                ))
            })?;
        *client = Some(built);
    }
    client
        .as_ref()
        .ok_or_else(|| Error::Download("could not set up the HTTP client".to_string()))
}

/// One HTTP attempt. The outer error is local trouble (the target directory), which no mirror
/// can fix; the inner one is the mirror's fault.
fn fetch_http(
    client: &reqwest::blocking::Client,
    url: &str,
    file: &MnistFile,
    dir: &Path,
    options: &DownloadOptions,
) -> Result<Result<NamedTempFile, Failure>> {
    let mut response = match client.get(url).send() {
        Ok(response) => response,
        Err(e) => return Ok(Err(request_failure(&e, options.timeout))),
    };
    let status = response.status();
    if !status.is_success() {
        let reason = format!("HTTP {status}");
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        return Ok(Err(if transient {
            Failure::Transient(reason)
        } else {
            Failure::Permanent(reason)
        }));
    }
    let expected = response.content_length();
    if let Some(length) = expected.filter(|&length| length > MAX_DOWNLOAD_BYTES) {
        return Ok(Err(too_large(length)));
    }
    let is_html = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("html"));
    let mut temp = new_temp(dir)?;
    let progress = progress_bar(options.show_progress, &file.gz_name(), expected);
    let streamed = stream(
        &mut response,
        &mut temp,
        &progress,
        expected,
        options.timeout,
    );
    progress.finish_and_clear();
    if let Err(failure) = streamed? {
        return Ok(Err(failure));
    }
    verify(temp, file, is_html)
}

/// Copies `<mirror dir>/<name>.gz` into a verified temporary file.
fn copy_local(
    source: &Path,
    file: &MnistFile,
    dir: &Path,
    options: &DownloadOptions,
) -> Result<Result<NamedTempFile, Failure>> {
    let mut reader = match std::fs::File::open(source) {
        Ok(reader) => reader,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(Failure::Permanent(format!(
                "{} not found",
                source.display()
            ))));
        }
        Err(e) => {
            return Ok(Err(Failure::Permanent(format!(
                "cannot open {}: {e}",
                source.display()
            ))));
        }
    };
    let length = match reader.metadata() {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => {
            return Ok(Err(Failure::Permanent(format!(
                "{} is not a file",
                source.display()
            ))));
        }
        Err(e) => {
            return Ok(Err(Failure::Permanent(format!(
                "cannot read {}: {e}",
                source.display()
            ))));
        }
    };
    if length > MAX_DOWNLOAD_BYTES {
        return Ok(Err(too_large(length)));
    }
    let mut temp = new_temp(dir)?;
    let progress = progress_bar(options.show_progress, &file.gz_name(), Some(length));
    let streamed = stream(
        &mut reader,
        &mut temp,
        &progress,
        Some(length),
        options.timeout,
    );
    progress.finish_and_clear();
    if let Err(failure) = streamed? {
        return Ok(Err(failure));
    }
    verify(temp, file, false)
}

fn new_temp(dir: &Path) -> Result<NamedTempFile> {
    crate::fsutil::temp_file_builder()
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))
}

fn too_large(length: u64) -> Failure {
    Failure::Permanent(format!(
        "{length} bytes is far too large for an MNIST file (limit {} MiB)",
        MAX_DOWNLOAD_BYTES >> 20
    ))
}

/// Copies `reader` into `temp`. Read errors and short bodies are the mirror's (transient)
/// failures; write errors are local and returned as the outer error.
fn stream(
    reader: &mut impl Read,
    temp: &mut NamedTempFile,
    progress: &ProgressBar,
    expected: Option<u64>,
    timeout: Duration,
) -> Result<Result<(), Failure>> {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut received = 0u64;
    let got = |received: u64| match expected {
        Some(expected) => format!("got {received} of {expected} bytes"),
        None => format!("got {received} bytes"),
    };
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => {
                return Ok(Err(Failure::Transient(format!(
                    "timed out after {timeout:?} ({})",
                    got(received)
                ))));
            }
            Err(e) => {
                return Ok(Err(Failure::Transient(format!(
                    "truncated body: {} ({})",
                    got(received),
                    root_cause(&e)
                ))));
            }
        };
        received += count as u64;
        if received > MAX_DOWNLOAD_BYTES {
            return Ok(Err(too_large(received)));
        }
        let chunk = buffer.get(..count).unwrap_or_default();
        temp.write_all(chunk)
            .map_err(|e| Error::io(temp.path(), e))?;
        progress.inc(count as u64);
    }
    if let Some(expected) = expected.filter(|&expected| expected != received) {
        return Ok(Err(Failure::Transient(format!(
            "truncated body: got {received} of {expected} bytes"
        ))));
    }
    temp.flush().map_err(|e| Error::io(temp.path(), e))?;
    Ok(Ok(()))
}

/// Checks that the temporary file is gzip whose content has the canonical MD5.
fn verify(
    mut temp: NamedTempFile,
    file: &MnistFile,
    is_html: bool,
) -> Result<Result<NamedTempFile, Failure>> {
    let mut compressed = Vec::new();
    temp.rewind()
        .and_then(|()| temp.read_to_end(&mut compressed))
        .map_err(|e| Error::io(temp.path(), e))?;
    if !compressed.starts_with(&[0x1f, 0x8b]) {
        let looks_html = is_html || compressed.trim_ascii_start().starts_with(b"<");
        return Ok(Err(Failure::Permanent(if looks_html {
            "not a gzip file (got an HTML page)".to_string()
        } else {
            "not a gzip file".to_string()
        })));
    }
    let content = match idx::gunzip(&compressed) {
        Ok(content) => content,
        Err(reason) => return Ok(Err(Failure::Permanent(reason))),
    };
    let actual = md5_hex(&content);
    if actual != file.md5 {
        return Ok(Err(Failure::Permanent(format!(
            "checksum mismatch: got {actual}, expected {}",
            file.md5
        ))));
    }
    Ok(Ok(temp))
}

fn progress_bar(show: bool, name: &str, total: Option<u64>) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg:>26} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{msg:>26} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(name.to_string());
    bar
}

fn request_failure(e: &reqwest::Error, timeout: Duration) -> Failure {
    if e.is_timeout() {
        Failure::Transient(format!("timed out after {timeout:?}"))
    } else if e.is_connect() {
        Failure::Transient(format!("connection failed: {}", root_cause(e)))
    } else if e.is_builder() || e.is_redirect() {
        Failure::Permanent(root_cause(e))
    } else {
        Failure::Transient(root_cause(e))
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = current {
        if let Some(e) = error.downcast_ref::<reqwest::Error>()
            && e.is_timeout()
        {
            return true;
        }
        if let Some(e) = error.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// The innermost message of an error chain: the actionable part, without reqwest's URL preamble.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_urls_with_exactly_one_slash() {
        assert_eq!(join_url("http://h/m/", "a.gz"), "http://h/m/a.gz");
        assert_eq!(join_url("http://h/m", "a.gz"), "http://h/m/a.gz");
        assert_eq!(join_url("http://h/m//", "a.gz"), "http://h/m/a.gz");
        assert_eq!(
            join_url(DEFAULT_MIRRORS[0], "t10k-labels-idx1-ubyte.gz"),
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"
        );
    }

    #[test]
    fn classifies_mirrors() {
        assert_eq!(
            parse_mirror("HTTPS://x/"),
            Source::Http("HTTPS://x/".to_string())
        );
        assert_eq!(
            parse_mirror("http://127.0.0.1:9/m"),
            Source::Http("http://127.0.0.1:9/m".to_string())
        );
        assert_eq!(
            parse_mirror("/srv/mnist"),
            Source::Dir(PathBuf::from("/srv/mnist"))
        );
        assert_eq!(
            parse_mirror("relative/dir"),
            Source::Dir(PathBuf::from("relative/dir"))
        );
        assert_eq!(
            parse_mirror("file:///srv/my%20mnist/"),
            Source::Dir(PathBuf::from("/srv/my mnist/"))
        );
        assert!(matches!(parse_mirror("ftp://x/"), Source::Unsupported(r) if r.contains("ftp")));
        assert!(matches!(parse_mirror(""), Source::Unsupported(_)));
        assert!(matches!(parse_mirror("file://"), Source::Unsupported(_)));
    }

    #[test]
    fn defaults_match_the_spec() {
        let options = DownloadOptions::default();
        assert_eq!(options.mirrors, DEFAULT_MIRRORS.map(String::from).to_vec());
        assert!(options.mirrors.iter().all(|m| !m.contains("lecun")));
        assert!(!options.force);
        assert!(options.show_progress);
        assert_eq!(options.timeout, Duration::from_secs(60));
        assert_eq!(options.retries, 2);
        assert_eq!(options.backoff, Duration::from_millis(500));
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn options(mirrors: Vec<String>) -> DownloadOptions {
        DownloadOptions {
            mirrors,
            show_progress: false,
            retries: 0,
            backoff: Duration::ZERO,
            timeout: Duration::from_secs(1),
            ..DownloadOptions::default()
        }
    }

    fn only_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn local_mirror_with_wrong_content_is_rejected_without_leftovers() {
        let mirror = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let name = MNIST_FILES[0].gz_name();
        std::fs::write(mirror.path().join(&name), gzip(b"not mnist")).unwrap();
        let mirror_text = mirror.path().display().to_string();
        let message = download(target.path(), &options(vec![mirror_text.clone()]))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "could not fetch {name} from any mirror: {mirror_text} (checksum mismatch: got "
            )),
            "{message}"
        );
        assert!(message.contains(MNIST_FILES[0].md5), "{message}");
        assert!(only_entries(target.path()).is_empty());
    }

    #[test]
    fn local_mirror_missing_file_and_plain_text_are_explained() {
        let mirror = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::fs::write(mirror.path().join(MNIST_FILES[0].gz_name()), b"hello").unwrap();
        let mirrors = vec![
            format!("file://{}", empty.path().display()),
            mirror.path().display().to_string(),
            "gopher://x/".to_string(),
        ];
        let message = download(target.path(), &options(mirrors))
            .unwrap_err()
            .to_string();
        assert!(message.contains("not found"), "{message}");
        assert!(message.contains("(not a gzip file)"), "{message}");
        assert!(message.contains("unsupported URL scheme"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(only_entries(target.path()).is_empty());
    }

    #[test]
    fn no_mirrors_is_an_error() {
        let target = tempfile::tempdir().unwrap();
        let message = download(target.path(), &options(Vec::new()))
            .unwrap_err()
            .to_string();
        assert!(message.contains("no mirror"), "{message}");
    }

    #[test]
    fn corrupt_existing_file_is_not_verified() {
        let dir = tempfile::tempdir().unwrap();
        let file = MNIST_FILES[1];
        assert_eq!(verified_existing(&file, dir.path()), None);
        std::fs::write(dir.path().join(file.gz_name()), [0x1f, 0x8b, 1, 2, 3]).unwrap();
        assert_eq!(verified_existing(&file, dir.path()), None);
        std::fs::write(dir.path().join(file.gz_name()), gzip(b"other")).unwrap();
        assert_eq!(verified_existing(&file, dir.path()), None);
    }
}

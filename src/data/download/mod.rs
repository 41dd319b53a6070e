//! Fetching the MNIST files from mirrors.
//!
//! Each of the four files is fetched as `<mirror><name>.gz` into a temporary file next to its
//! target, gunzipped and checked against the canonical size and MD5, and only then renamed into
//! place, so the data directory never holds a partial or wrong file. Mirrors are tried in order;
//! transient failures (connection errors, a silent server, 5xx, truncated bodies) are retried
//! with exponential backoff on the same mirror, permanent ones (4xx, wrong content, too large,
//! too slow, past the deadline) move on to the next mirror. The temporary files are removed on
//! SIGINT and SIGTERM (by the binary), and stale ones of killed runs at the start of the next.
//! Progress, retries and failed mirrors are reported to an observer ([`DownloadEvent`]), which
//! the binary draws as progress bars.

mod transfer;

use transfer::Job;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::idx;
use super::mnist::{MNIST_FILES, MnistFile};
use crate::error::{Error, Result};

/// Mirrors tried when none are given. (yann.lecun.com answers 404 to scripts: never use it.)
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// Exponents of the retry backoff stop growing here, so huge retry counts cannot overflow.
const MAX_BACKOFF_EXPONENT: u32 = 16;

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Base URLs (`http://`, `https://`), `file://` URLs or local directories, tried in order.
    pub mirrors: Vec<String>,
    /// Fetch even the files already present and verified.
    pub force: bool,
    /// Connect timeout, and the longest wait for response headers or for any read of the body.
    pub timeout: Duration,
    /// The longest one attempt at one file may take, start to finish; past it the next mirror
    /// is tried. (Checked as data arrives; a silent server is cut off by `timeout`.)
    pub deadline: Duration,
    /// Bytes per second below which, averaged over `rate_window`, an attempt is abandoned for
    /// the next mirror.
    pub min_rate: u64,
    /// The span over which `min_rate` is measured.
    pub rate_window: Duration,
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
            timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(30 * 60),
            min_rate: 1024,
            rate_window: Duration::from_secs(60),
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

/// What a download reports while it runs, for a front end to show (the binary draws a progress
/// bar per file from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadEvent<'a> {
    /// An attempt at `file` (its `.gz` name) begins; `total` is its announced size in bytes.
    Started { file: &'a str, total: Option<u64> },
    /// `bytes` more bytes of it arrived.
    Received { file: &'a str, bytes: u64 },
    /// The attempt ended, whether its file was good or not.
    Finished { file: &'a str },
    /// A transient failure: the same mirror is tried again after `wait`.
    Retrying {
        file: &'a str,
        mirror: &'a str,
        reason: &'a str,
        wait: Duration,
    },
    /// The mirror failed for this file; the next one is tried.
    MirrorFailed {
        file: &'a str,
        mirror: &'a str,
        reason: &'a str,
    },
}

/// Makes sure `dir` holds the four verified MNIST files, fetching those missing or wrong.
pub fn download(dir: &Path, options: &DownloadOptions) -> Result<Vec<FileReport>> {
    download_observed(dir, options, &mut |_| {})
}

/// [`download`], reporting its progress to `observer`.
pub fn download_observed(
    dir: &Path,
    options: &DownloadOptions,
    observer: &mut dyn FnMut(DownloadEvent),
) -> Result<Vec<FileReport>> {
    if options.mirrors.is_empty() {
        return Err(Error::Download(format!(
            "no mirror to download from; give one, or put the four files into {}",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::fsutil::sweep_stale_temporaries(dir);
    let mut client = None;
    // The order mirrors are tried in: one that was too slow for a file goes last for the rest,
    // so that a slow first mirror costs one file's minute, not four.
    let mut mirrors = options.mirrors.clone();
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
            None => fetch_file(
                &mut Job {
                    file: &file,
                    dir,
                    options,
                    observer: &mut *observer,
                },
                &mut client,
                &mut mirrors,
            )?,
        };
        reports.push(report);
    }
    Ok(reports)
}

/// The file `MnistFile::locate` finds, if its content is the canonical one (read as a stream,
/// and no further than the canonical size).
fn verified_existing(file: &MnistFile, dir: &Path) -> Option<PathBuf> {
    let path = file.locate(dir)?;
    let (bytes, md5) = idx::content_digest(&path, file.bytes).ok()?;
    (bytes == file.bytes && md5 == file.md5).then_some(path)
}

/// Why one attempt on one mirror failed; the text is a short reason for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Worth retrying on the same mirror.
    Transient(String),
    /// Retrying this mirror would give the same answer.
    Permanent(String),
    /// Below the minimum rate or past the deadline: permanent, and the mirror is tried last
    /// for the files that remain.
    Slow(String),
    /// The body does not start like gzip (turned into a `Permanent` reason by the transfer).
    NotGzip { looks_html: bool },
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

/// Tries every mirror in turn for one file, in the order of `mirrors`, moving one that is too
/// slow to its end; errors only when all fail or on local I/O trouble.
fn fetch_file(
    job: &mut Job,
    client: &mut Option<reqwest::blocking::Client>,
    mirrors: &mut Vec<String>,
) -> Result<FileReport> {
    use transfer::{copy_local, fetch_http};
    let (file, dir, options) = (job.file, job.dir, job.options);
    let gz_name = file.gz_name();
    let target = dir.join(&gz_name);
    let mut failures = Vec::with_capacity(mirrors.len());
    for mirror in &mirrors.clone() {
        let source = parse_mirror(mirror);
        let mut attempt = 0u32;
        let reason = loop {
            let result = match &source {
                Source::Http(base) => {
                    if client.is_none() {
                        *client = Some(transfer::http_client(options)?);
                    }
                    match client {
                        Some(client) => fetch_http(client, &join_url(base, &gz_name), job)?,
                        None => Err(Failure::Permanent("no HTTP client".to_string())),
                    }
                }
                Source::Dir(path) => copy_local(&path.join(&gz_name), job)?,
                Source::Unsupported(reason) => Err(Failure::Permanent(reason.clone())),
            };
            match result {
                Ok(temp) => {
                    let bytes = temp
                        .as_file()
                        .metadata()
                        .map_err(|e| Error::io(dir, e))?
                        .len();
                    temp.persist(&target)?;
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
                Err(Failure::Slow(reason)) => {
                    if let Some(at) = mirrors.iter().position(|m| m == mirror) {
                        let slow = mirrors.remove(at);
                        mirrors.push(slow);
                    }
                    break reason;
                }
                Err(Failure::NotGzip { .. }) => break "not a gzip file".to_string(),
                Err(Failure::Transient(reason)) if attempt < options.retries => {
                    let wait = options
                        .backoff
                        .saturating_mul(1 << attempt.min(MAX_BACKOFF_EXPONENT));
                    (job.observer)(DownloadEvent::Retrying {
                        file: &gz_name,
                        mirror,
                        reason: &reason,
                        wait,
                    });
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
        (job.observer)(DownloadEvent::MirrorFailed {
            file: &gz_name,
            mirror,
            reason: &reason,
        });
        failures.push(format!("{mirror} ({reason})"));
    }
    Err(Error::Download(format!(
        "could not fetch {gz_name} from any mirror: {}; give a working mirror, or put the four files into {}",
        failures.join("; "),
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

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
        assert_eq!(options.timeout, Duration::from_secs(60));
        assert_eq!(options.retries, 2);
        assert_eq!(options.backoff, Duration::from_millis(500));
        assert_eq!(options.deadline, Duration::from_secs(1800));
        assert_eq!(options.min_rate, 1024);
        assert_eq!(options.rate_window, Duration::from_secs(60));
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn options(mirrors: Vec<String>) -> DownloadOptions {
        DownloadOptions {
            mirrors,
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

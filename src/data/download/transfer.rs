//! One attempt at one file from one mirror: the HTTP request or the local copy, streamed into a
//! temporary file under a deadline, a minimum rate and a size limit, decompressed on the fly so
//! that a gzip bomb stops at once, and verified before the caller renames it into place.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{DownloadEvent, DownloadOptions, Failure};
use crate::data::idx;
use crate::data::mnist::MnistFile;
use crate::error::{Error, Result};
use crate::fsutil::TempFile;

const CHUNK_BYTES: usize = 64 << 10;

/// The most compressed bytes a mirror may send for `file`: gzip adds a few bytes per 64 KiB
/// block even to data it cannot compress, and a little for headers.
pub(super) fn max_download_bytes(file: &MnistFile) -> u64 {
    file.bytes + file.bytes / 64 + (64 << 10)
}

/// An attempt's outcome: the verified temporary file, or the mirror's failure. The outer
/// `Result` is local trouble (the target directory), which no mirror can fix.
pub(super) type Attempt = Result<Result<TempFile, Failure>>;

/// One file to fetch into `dir`, under `options`, reporting to `observer`.
pub(super) struct Job<'a> {
    pub file: &'a MnistFile,
    pub dir: &'a Path,
    pub options: &'a DownloadOptions,
    pub observer: &'a mut dyn FnMut(DownloadEvent),
}

pub(super) fn http_client(options: &DownloadOptions) -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.timeout)
        .user_agent(concat!("mnist-cnn/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            Error::Download(format!(
                "could not set up the HTTP client: {}",
                root_cause(&e)
            ))
        })
}

/// One HTTP attempt.
pub(super) fn fetch_http(client: &reqwest::blocking::Client, url: &str, job: &mut Job) -> Attempt {
    let started = Instant::now();
    let mut response = match client.get(url).send() {
        Ok(response) => response,
        Err(e) => return Ok(Err(request_failure(&e, job.options.timeout))),
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
    if let Some(length) = expected.filter(|&length| length > max_download_bytes(job.file)) {
        return Ok(Err(too_large(length, job.file)));
    }
    let is_html = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("html"));
    transfer(&mut response, job, expected, is_html, started)
}

/// Copies `<mirror dir>/<name>.gz`. Only a regular file is read: a FIFO would block forever.
pub(super) fn copy_local(source: &Path, job: &mut Job) -> Attempt {
    let started = Instant::now();
    let mut reader = match crate::fsutil::open_regular(source) {
        Ok(reader) => reader,
        Err(Error::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(Failure::Permanent(format!(
                "{} not found",
                source.display()
            ))));
        }
        Err(Error::Io { source: e, .. }) => {
            return Ok(Err(Failure::Permanent(format!(
                "cannot open {}: {e}",
                source.display()
            ))));
        }
        Err(e) => return Ok(Err(Failure::Permanent(e.to_string()))),
    };
    let length = match reader.metadata() {
        Ok(metadata) => metadata.len(),
        Err(e) => {
            return Ok(Err(Failure::Permanent(format!(
                "cannot read {}: {e}",
                source.display()
            ))));
        }
    };
    if length > max_download_bytes(job.file) {
        return Ok(Err(too_large(length, job.file)));
    }
    transfer(&mut reader, job, Some(length), false, started)
}

fn too_large(length: u64, file: &MnistFile) -> Failure {
    Failure::Permanent(format!(
        "{length} bytes is too large for {} (at most {} bytes)",
        file.gz_name(),
        max_download_bytes(file)
    ))
}

/// Streams `reader` into a temporary file in the job's directory and verifies it.
fn transfer(
    reader: &mut impl Read,
    job: &mut Job,
    expected: Option<u64>,
    is_html: bool,
    started: Instant,
) -> Attempt {
    let mut temp = TempFile::new_in(job.dir)?;
    let name = job.file.gz_name();
    (job.observer)(DownloadEvent::Started {
        file: &name,
        total: expected,
    });
    let streamed = stream(reader, &mut temp, job, &name, expected, started);
    (job.observer)(DownloadEvent::Finished { file: &name });
    if let Err(failure) = streamed? {
        let failure = match failure {
            Failure::NotGzip { looks_html } => not_gzip(looks_html || is_html),
            failure => failure,
        };
        return Ok(Err(failure));
    }
    Ok(verify(&temp, job.file).map(|()| temp))
}

fn not_gzip(html: bool) -> Failure {
    Failure::Permanent(if html {
        "not a gzip file (got an HTML page)".to_string()
    } else {
        "not a gzip file".to_string()
    })
}

/// Counts decompressed bytes, failing once they pass the file's known size.
struct ContentGuard {
    written: u64,
    limit: u64,
}

impl Write for ContentGuard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.limit {
            return Err(std::io::Error::other("decompressed content too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies `reader` into `temp`, within the options' deadline and minimum rate and the file's
/// size limits. Read errors and short bodies are the mirror's (transient) failures; oversize is
/// permanent and slowness `Slow`, so the next mirror is tried; write errors are local (outer).
fn stream(
    reader: &mut impl Read,
    temp: &mut TempFile,
    job: &mut Job,
    name: &str,
    expected: Option<u64>,
    started: Instant,
) -> Result<Result<(), Failure>> {
    let (file, options) = (job.file, job.options);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut received = 0u64;
    let mut prefix: Vec<u8> = Vec::with_capacity(2);
    // Decompressing on the fly stops a bomb after its first few kilobytes. Its own errors are
    // left to the verification that follows, which reads the file as every reader does.
    let mut guard = Some(flate2::write::MultiGzDecoder::new(ContentGuard {
        written: 0,
        limit: file.bytes,
    }));
    let mut window = (Instant::now(), 0u64);
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
                    "timed out after {:?} ({})",
                    options.timeout,
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
        let chunk = buffer.get(..count).unwrap_or_default();
        if prefix.len() < 2 {
            prefix.extend(chunk.iter().take(2 - prefix.len()));
            if prefix.len() == 2 && prefix != [0x1f, 0x8b] {
                return Ok(Err(Failure::NotGzip {
                    looks_html: prefix[0] == b'<' || chunk.trim_ascii_start().starts_with(b"<"),
                }));
            }
        }
        received += count as u64;
        if received > max_download_bytes(file) {
            return Ok(Err(too_large(received, file)));
        }
        if let Some(decoder) = &mut guard
            && let Err(e) = decoder.write_all(chunk)
        {
            if decoder.get_ref().written > file.bytes {
                return Ok(Err(Failure::Permanent(format!(
                    "decompresses to more than the {} bytes of {} ({})",
                    file.bytes,
                    file.name,
                    got(received)
                ))));
            }
            let _ = e;
            guard = None;
        }
        temp.as_file_mut()
            .write_all(chunk)
            .map_err(|e| Error::io(temp.path(), e))?;
        (job.observer)(DownloadEvent::Received {
            file: name,
            bytes: count as u64,
        });

        let now = Instant::now();
        if now.duration_since(started) > options.deadline {
            return Ok(Err(Failure::Slow(format!(
                "not done within the deadline of {:?} ({})",
                options.deadline,
                got(received)
            ))));
        }
        window.1 += count as u64;
        let elapsed = now.duration_since(window.0);
        if elapsed >= options.rate_window {
            let rate = window.1 as f64 / elapsed.as_secs_f64();
            if rate < options.min_rate as f64 {
                return Ok(Err(Failure::Slow(format!(
                    "too slow: {rate:.0} bytes/s over {elapsed:.1?}, below the minimum of {} bytes/s ({})",
                    options.min_rate,
                    got(received)
                ))));
            }
            window = (now, 0);
        }
    }
    if received < 2 {
        return Ok(Err(Failure::NotGzip { looks_html: false }));
    }
    if let Some(expected) = expected.filter(|&expected| expected != received) {
        return Ok(Err(Failure::Transient(format!(
            "truncated body: got {received} of {expected} bytes"
        ))));
    }
    temp.as_file_mut()
        .flush()
        .map_err(|e| Error::io(temp.path(), e))?;
    Ok(Ok(()))
}

/// Checks that the temporary file is gzip (one or more members, nothing after them) whose
/// content has exactly the canonical size and MD5.
fn verify(temp: &TempFile, file: &MnistFile) -> Result<(), Failure> {
    let (bytes, actual) = idx::content_digest(temp.path(), file.bytes).map_err(|e| match e {
        Error::InvalidIdx { reason, .. } => Failure::Permanent(reason),
        e => Failure::Permanent(e.to_string()),
    })?;
    if actual != file.md5 {
        return Err(Failure::Permanent(format!(
            "checksum mismatch: got {actual}, expected {}",
            file.md5
        )));
    }
    if bytes != file.bytes {
        return Err(Failure::Permanent(format!(
            "decompresses to {bytes} bytes, expected {}",
            file.bytes
        )));
    }
    Ok(())
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
pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

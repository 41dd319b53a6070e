//! HTTP mirrors on 127.0.0.1 for the download tests. [`Server`] is tiny_http answering each
//! request on its own thread, with a body that can be paced (so many bytes per tick, endless,
//! without a length); [`TruncatingServer`] is the one fault tiny_http cannot make.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a [`Server`] answers to one request.
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// The body is sent `chunk` bytes at a time, with `tick` between them.
    pub chunk: usize,
    pub tick: Duration,
    /// Send the body again and again, until the client or the server stops.
    pub endless: bool,
    /// Announce the body's length (`Content-Length`); without it the body is chunked.
    pub announce_length: bool,
}

impl Reply {
    /// 200 with `body`, all at once.
    pub fn ok(body: Vec<u8>) -> Self {
        Reply {
            status: 200,
            content_type: None,
            body,
            delay: Duration::ZERO,
            chunk: 64 << 10,
            tick: Duration::ZERO,
            endless: false,
            announce_length: true,
        }
    }

    /// `status` with a short text body.
    pub fn status(status: u16, text: &str) -> Self {
        Reply {
            status,
            ..Reply::ok(text.as_bytes().to_vec())
        }
    }
}

/// A tiny_http server on 127.0.0.1 answering every request by `handler(url)` on a thread of its
/// own. It records every requested URL; dropping it stops it and joins its threads (a handler's
/// panic fails the test).
pub struct Server {
    port: u16,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("a loopback port");
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let urls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let thread = {
            let (urls, stop) = (urls.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(20)) {
                        urls.lock().unwrap().push(request.url().to_string());
                        let (handler, stop) = (handler.clone(), stop.clone());
                        handlers.push(std::thread::spawn(move || {
                            let reply = handler(request.url());
                            answer(request, reply, stop);
                        }));
                    }
                }
                for handler in handlers {
                    handler.join().unwrap();
                }
            })
        };
        Server {
            port,
            urls,
            stop,
            thread: Some(thread),
        }
    }

    /// The mirror URL of `route`: `http://127.0.0.1:PORT/route/`.
    pub fn mirror(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}/{route}/", self.port)
    }

    /// Requests to `/route/...`.
    pub fn count(&self, route: &str) -> usize {
        self.count_prefix(&format!("/{route}/"))
    }

    /// Requests whose path starts with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.urls
            .lock()
            .unwrap()
            .iter()
            .filter(|url| url.starts_with(prefix))
            .count()
    }

    /// Every requested path, in order.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap().clone()
    }
}

impl Drop for Server {
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

/// Sends `reply` through tiny_http, flushing after every write so that a paced body leaves at
/// its pace (tiny_http buffers a kilobyte otherwise).
fn answer(request: tiny_http::Request, reply: Reply, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    while start.elapsed() < reply.delay && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let length = reply.announce_length.then_some(reply.body.len());
    let headers = reply
        .content_type
        .map(|value| tiny_http::Header::from_bytes("Content-Type", value).expect("a valid header"))
        .into_iter()
        .collect();
    let body = Paced {
        body: reply.body,
        at: 0,
        chunk: reply.chunk.max(1),
        tick: reply.tick,
        endless: reply.endless,
        started: false,
        stop,
    };
    // tiny_http would send a body over 32 KiB in chunks of 8 KiB, which a paced body fills only
    // slowly: a body of known length is sent as it is read.
    let response = tiny_http::Response::new(reply.status.into(), headers, body, length, None)
        .with_chunked_threshold(usize::MAX);
    let version = request.http_version().clone();
    let request_headers = request.headers().to_vec();
    // The client may have given up already: send errors are its business.
    let _ = response.raw_print(
        FlushEach(request.into_writer()),
        version,
        &request_headers,
        false,
        None,
    );
}

struct FlushEach<W: Write>(W);

impl<W: Write> Write for FlushEach<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.0.write(buf)?;
        self.0.flush()?;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A body read `chunk` bytes at a time with `tick` before each chunk but the first.
struct Paced {
    body: Vec<u8>,
    at: usize,
    chunk: usize,
    tick: Duration,
    endless: bool,
    started: bool,
    stop: Arc<AtomicBool>,
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the server stopped"));
        }
        if self.at == self.body.len() {
            if !self.endless || self.body.is_empty() {
                return Ok(0);
            }
            self.at = 0;
        }
        if self.started && !self.tick.is_zero() {
            std::thread::sleep(self.tick);
        }
        self.started = true;
        let count = self.chunk.min(buf.len()).min(self.body.len() - self.at);
        buf[..count].copy_from_slice(&self.body[self.at..self.at + count]);
        self.at += count;
        Ok(count)
    }
}

/// A raw TCP server that announces the whole `Content-Length` of `body(name)` for a requested
/// `/truncated/<name>` but sends only half of it, then closes the connection: a body ended
/// early. tiny_http cannot make this fault: it keeps the connection open for the next request,
/// which the client sees as a timeout rather than an early end.
pub struct TruncatingServer {
    port: u16,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TruncatingServer {
    pub fn start(body: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a local address").port();
        let urls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (urls, stop) = (urls.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        truncate(stream, &urls, &body);
                    }
                }
            })
        };
        TruncatingServer {
            port,
            urls,
            stop,
            thread: Some(thread),
        }
    }

    pub fn mirror(&self) -> String {
        format!("http://127.0.0.1:{}/truncated/", self.port)
    }

    /// Requests to `/truncated/...`.
    pub fn count(&self) -> usize {
        self.urls
            .lock()
            .unwrap()
            .iter()
            .filter(|url| url.starts_with("/truncated/"))
            .count()
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

fn truncate(stream: TcpStream, urls: &Mutex<Vec<String>>, body: &impl Fn(&str) -> Option<Vec<u8>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // The request line, then the headers up to the empty line: all read before answering, so
    // that closing the socket sends the body's end and not a reset.
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
        line.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    urls.lock().unwrap().push(path.clone());
    let mut stream = &stream;
    let Some(bytes) = body(path.rsplit('/').next().unwrap_or("")) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\n\r\n",
        bytes.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&bytes[..bytes.len() / 2]);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

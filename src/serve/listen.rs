//! The accept loop: hyper's HTTP/1 connections on tokio, as `axum::serve` drives them, with
//! what a server left running beside a misbehaving page or script needs besides: a deadline for
//! a request's headers (which also closes kept-alive connections left idle), and a cap on open
//! connections at which the connection idle longest makes room for a new client. A client
//! sending its headers a byte at a time is idle in that sense, so a crowd of them cannot keep
//! others out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use super::Limits;
use super::state::Load;

/// Files left for the model, the data and collected drawings when the process's limit on open
/// files caps the connections.
const FILES_KEPT_FREE: usize = 64;

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in flight
/// finish (each within its own deadlines) and returns.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    load: Arc<Load>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Connections {
        cap: connection_cap(limits.max_connections),
        open: Mutex::new(HashMap::new()),
        changed: Notify::new(),
        next_id: AtomicU64::new(0),
        started: Instant::now(),
        load,
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (closing, closing_seen) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of files or memory: wait for some to be freed. Errors of one connection
                // (reset before it was accepted) concern that one only.
                if !is_about_one_connection(&error) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        tokio::select! {
            () = connections.make_room() => {}
            () = &mut shutdown => break,
        }
        let (id, connection) = connections.open();
        tokio::spawn(serve_connection(
            http.clone(),
            stream,
            app.clone(),
            (connections.clone(), id, connection),
            closing_seen.clone(),
        ));
    }
    drop(listener);
    // Tell every connection to finish its request and close, then wait until all have.
    drop(closing_seen);
    let _ = closing.send(());
    closing.closed().await;
}

/// The open connections, shared by the accept loop and the connections' tasks.
struct Connections {
    cap: usize,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Signalled when a connection closes or becomes idle.
    changed: Notify,
    next_id: AtomicU64,
    started: Instant,
    load: Arc<Load>,
}

struct Connection {
    /// Requests being answered on it (more than one only if a client pipelines).
    requests: AtomicUsize,
    /// When its last request ended, or it opened: milliseconds since `Connections::started`.
    idle_since: AtomicU64,
    /// Signalled to close it at once.
    evict: Notify,
}

impl Connections {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open(&self) -> (u64, Arc<Connection>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            requests: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.insert(id, connection.clone());
        self.load.connections.store(open.len(), Ordering::Relaxed);
        (id, connection)
    }

    fn close(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&id);
        self.load.connections.store(open.len(), Ordering::Relaxed);
        drop(open);
        self.changed.notify_waiters();
    }

    /// Returns when there is room for one more connection: below the cap, or after closing
    /// the connection idle longest; while every connection is answering a request, it waits
    /// for one to end or become idle.
    async fn make_room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.try_make_room() {
                return;
            }
            changed.await;
        }
    }

    fn try_make_room(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() < self.cap {
            return true;
        }
        let idle_longest = open
            .iter()
            .filter(|(_, c)| c.requests.load(Ordering::SeqCst) == 0)
            .min_by_key(|(_, c)| c.idle_since.load(Ordering::SeqCst))
            .map(|(&id, _)| id);
        let Some(connection) = idle_longest.and_then(|id| open.remove(&id)) else {
            return false;
        };
        connection.evict.notify_one();
        self.load.connections.store(open.len(), Ordering::Relaxed);
        true
    }
}

/// Marks a connection busy while one of its requests is answered.
struct Busy {
    connections: Arc<Connections>,
    connection: Arc<Connection>,
}

impl Busy {
    fn start(connections: &Arc<Connections>, connection: &Arc<Connection>) -> Busy {
        connection.requests.fetch_add(1, Ordering::SeqCst);
        Busy {
            connections: connections.clone(),
            connection: connection.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.connections.now();
        self.connection.idle_since.store(now, Ordering::SeqCst);
        if self.connection.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.connections.changed.notify_waiters();
        }
    }
}

async fn serve_connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    app: Router,
    (connections, id, connection): (Arc<Connections>, u64, Arc<Connection>),
    mut closing: watch::Receiver<()>,
) {
    let service = {
        let (connections, connection) = (connections.clone(), connection.clone());
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::start(&connections, &connection);
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                drop(busy);
                response
            }
        })
    };
    let served = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let mut finishing = false;
    loop {
        tokio::select! {
            _ = served.as_mut() => break,
            () = connection.evict.notified() => break,
            _ = closing.changed(), if !finishing => {
                finishing = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    connections.close(id);
}

fn is_about_one_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}

/// `wanted`, or fewer if the process may not open that many more files.
fn connection_cap(wanted: usize) -> usize {
    wanted
        .min(open_files_limit().saturating_sub(FILES_KEPT_FREE))
        .max(1)
}

#[cfg(unix)]
fn open_files_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into `limit`, a valid and exclusively borrowed one.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return usize::MAX;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(not(unix))]
fn open_files_limit() -> usize {
    usize::MAX
}

//! What every request passes through: the `Host` check against DNS rebinding, the refusal of
//! cross-origin writes, and error answers turned into the API's `{"error": ...}` JSON (axum's
//! own 405, tower-http's 413 and 408 are plain text or empty).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Limits;

/// The host names a request may address the server by.
#[derive(Debug, Clone)]
pub struct HostGuard {
    port: u16,
    /// Lower-case names and addresses, IPv6 ones in brackets as in a `Host` header.
    names: Vec<String>,
    /// Listening on every address (0.0.0.0 or ::): any IP address is one of ours. A DNS
    /// rebinding attack needs a name, so addresses are safe to accept.
    any_address: bool,
}

impl HostGuard {
    /// The guard for a server on `address`: `localhost`, `127.0.0.1`, `[::1]` and the address
    /// itself, with its port, plus `allowed` names.
    pub fn new(address: SocketAddr, allowed: &[String]) -> HostGuard {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(String::from)
            .collect();
        names.push(match address.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
        names.extend(allowed.iter().map(|name| name.to_ascii_lowercase()));
        HostGuard {
            port: address.port(),
            names,
            any_address: address.ip().is_unspecified(),
        }
    }

    /// Whether `host` (a `Host` header's value: name or address, and port) names this server.
    pub fn allows(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        if authority.port_u16().unwrap_or(80) != self.port || host.contains('@') {
            return false;
        }
        let name = authority.host().to_ascii_lowercase();
        let is_address = name.parse::<IpAddr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<IpAddr>().is_ok());
        self.names.contains(&name) || (self.any_address && is_address)
    }
}

fn refused(message: String) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response()
}

/// Refuses requests whose `Host` is not this server (a page that reached it through DNS
/// rebinding), and writes (any method but GET and HEAD) whose `Origin` is another site.
/// Clients that send no `Origin` (scripts, curl) may write.
pub async fn check_host(
    State(guard): State<Arc<HostGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return refused("the request has no Host header".into());
    };
    if !guard.allows(&host) {
        return refused(format!(
            "this server does not answer for host \"{host}\"; use http://localhost:{}/ (or start it allowing that host)",
            guard.port
        ));
    }
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if writes && let Some(origin) = cross_origin(request.headers(), &host) {
        return refused(format!(
            "requests that change something must come from this server's own page, not from {origin}"
        ));
    }
    next.run(request).await
}

/// The request's `Origin`, if it is there and is not `http://host`.
fn cross_origin(headers: &HeaderMap, host: &str) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let same = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    (!same).then(|| String::from_utf8_lossy(origin.as_bytes()).into_owned())
}

/// Gives error answers that are not JSON yet (axum's 405, tower-http's 413 and 408, ...) the
/// API's `{"error": ...}` body, keeping their status and headers.
pub async fn json_errors(State(limits): State<Limits>, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another method");
            format!("method not allowed here; use {allowed}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the limit of {} bytes",
            limits.max_body_bytes
        ),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request took longer than {:.1} s",
            limits.request_timeout.as_secs_f64()
        ),
        other => other
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Json(json!({ "error": message })).into_response();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_served_names_with_the_port_are_hosts() {
        let guard = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for good in [
            "localhost:8080",
            "LOCALHOST:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
        ] {
            assert!(guard.allows(good), "{good}");
        }
        for bad in [
            "attacker.example:8080",
            "localhost",
            "localhost:80",
            "127.0.0.1:8081",
            "localhost.:8080",
            "127.1:8080",
            "user@localhost:8080",
            "10.0.0.1:8080",
            "",
            "localhost:8080/x",
        ] {
            assert!(!guard.allows(bad), "{bad}");
        }
        let named = HostGuard::new("127.0.0.1:80".parse().unwrap(), &["Box.Local".into()]);
        assert!(named.allows("box.local"));
        assert!(named.allows("box.local:80"));
        assert!(!named.allows("other.local"));
        let everywhere = HostGuard::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(everywhere.allows("192.168.1.7:8080"));
        assert!(everywhere.allows("[fe80::1]:8080"));
        assert!(!everywhere.allows("rebind.example:8080"));
        let lan = HostGuard::new("192.168.1.7:8080".parse().unwrap(), &[]);
        assert!(lan.allows("192.168.1.7:8080"));
        assert!(!lan.allows("192.168.1.8:8080"));
    }

    #[test]
    fn an_origin_other_than_the_host_is_cross_origin() {
        let mut headers = HeaderMap::new();
        assert_eq!(cross_origin(&headers, "localhost:8080"), None);
        headers.insert(header::ORIGIN, "http://localhost:8080".parse().unwrap());
        assert_eq!(cross_origin(&headers, "localhost:8080"), None);
        assert!(cross_origin(&headers, "127.0.0.1:8080").is_some());
        for other in ["http://attacker.example", "null", "https://localhost:8080"] {
            headers.insert(header::ORIGIN, other.parse().unwrap());
            assert_eq!(
                cross_origin(&headers, "localhost:8080").as_deref(),
                Some(other)
            );
        }
    }
}

//! `mnist-cnn serve` under misbehaving clients, over real HTTP on 127.0.0.1: slow headers,
//! floods of uploads, requests that time out, DNS rebinding and cross-origin writes, a full
//! collect folder, and class names that are no folder names. The limits are small here (see
//! `mnist_cnn::serve::Limits`) so that each attack takes seconds.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use image::{GrayImage, Luma};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{Limits, ServeOptions, Server};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use common::serve::json_of;
use common::{data_dir, mnist_cnn};

/// A small trained model (one epoch on 2000 images), made once for all the tests.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<tempfile::TempDir> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        mnist_cnn(dir.path())
            .args(["--threads", "2", "--quiet", "train", "--out", "run"])
            .args([
                "--epochs",
                "1",
                "--limit",
                "2000",
                "--validation-split",
                "0",
            ])
            .assert()
            .success();
        dir
    })
    .path()
}

/// The tests that load the machine take turns, so that one's timings do not suffer another's
/// load.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(limits: Limits, collect: Option<PathBuf>, allowed_hosts: &[&str]) -> Server {
    Server::start(ServeOptions {
        model_dir: trained_run().join("run"),
        data_dir: data_dir(),
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        collect,
        backend: BackendKind::Flex,
        allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
        limits,
    })
    .unwrap()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn get(url: &str) -> (u16, Value) {
    json_of(client().get(url).send().unwrap())
}

fn png(image: &GrayImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// A vertical stroke on white: a 1 as the page draws it.
fn one() -> Vec<u8> {
    png(&GrayImage::from_fn(280, 280, |x, y| {
        let on = x.abs_diff(140) < 12 && (40..240).contains(&y);
        Luma([if on { 0 } else { 255 }])
    }))
}

/// A dark square on white, 4096 pixels a side: a small PNG that is slow to decode and prepare.
fn large_square() -> Vec<u8> {
    png(&GrayImage::from_fn(4096, 4096, |x, y| {
        let inside = (1024..3072).contains(&x) && (1024..3072).contains(&y);
        Luma([if inside { 0 } else { 255 }])
    }))
}

/// `side` x `side` random grey levels: a PNG about as large as its pixels.
fn noise(side: u32) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(side));
    png(&GrayImage::from_fn(side, side, |_, _| Luma([rng.random()])))
}

/// One exchange on a raw connection: `request` as written, the whole answer as read.
fn raw(server: &Server, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server.address()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

fn error_of(body: &str) -> String {
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"error\": {body}"))
        .to_string()
}

/// Whether the server has closed `stream`: a read ends at once (end of stream, a reset or an
/// answer) instead of waiting.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        // The end of the stream, or an answer (after which the server closes it).
        Ok(read) => read == 0 || buffer[..read].starts_with(b"HTTP/"),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Item 2 of issue 22: 250 connections sending their headers a byte at a time stayed open
/// forever, and a normal request timed out meanwhile.
#[test]
fn slow_headers_are_cut_off_and_a_normal_client_is_answered_meanwhile() {
    let _turn = one_at_a_time();
    let server = start(
        Limits {
            header_timeout: Duration::from_secs(1),
            max_connections: 16,
            ..Limits::default()
        },
        None,
        &[],
    );
    let info = format!("http://{}/api/info", server.address());
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = TcpStream::connect(server.address()).unwrap();
            stream
                .write_all(b"GET /api/info HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    // While the slow clients keep sending, a normal client gets every answer at once, and
    // the server never holds more connections than its cap.
    let mut most_connections = 0;
    while started.elapsed() < Duration::from_millis(900) {
        for stream in &mut slow {
            let _ = stream.write_all(b"X");
        }
        let asked = Instant::now();
        let (status, answer) = get(&info);
        assert_eq!(status, 200, "{answer}");
        assert!(
            asked.elapsed() < Duration::from_millis(800),
            "a normal request took {:?} during the attack",
            asked.elapsed()
        );
        most_connections = most_connections.max(answer["load"]["connections"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        most_connections <= 16,
        "{most_connections} connections open"
    );
    // Past the header timeout, every slow connection is closed.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(3);
    for (i, stream) in slow.iter_mut().enumerate() {
        while !closed_by_server(stream) {
            assert!(
                Instant::now() < deadline,
                "slow connection {i} is still open after {:?}",
                started.elapsed()
            );
            let _ = stream.write_all(b"X");
        }
    }
    server.stop().unwrap();
}

/// Item 4 of issue 22: uploads answered 408 went on being decoded and starved other requests.
#[test]
fn uploads_that_time_out_stop_their_work_and_others_are_answered() {
    let _turn = one_at_a_time();
    let server = start(
        Limits {
            request_timeout: Duration::from_millis(1500),
            max_uploads: 2,
            max_waiting_uploads: 1000,
            ..Limits::default()
        },
        None,
        &[],
    );
    let base = format!("http://{}", server.address());
    let picture = axum::body::Bytes::from(large_square());
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    let response = client()
                        .post(format!("{base}/api/predict"))
                        .header("Content-Type", "image/png")
                        .body(picture.clone())
                        .send();
                    // A request refused while its body was still unread may see its connection
                    // closed instead of the 408 (0).
                    let Ok(response) = response else { return 0 };
                    let (status, answer) = json_of(response);
                    assert!(answer["error"].is_string() || status == 200, "{answer}");
                    status
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let answered = started.elapsed();
    assert!(statuses.iter().any(|&s| s == 408 || s == 0), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [0, 200, 408, 422].contains(s)),
        "{statuses:?}"
    );
    // The work of the timed-out requests does not go on: the server is idle again within
    // one picture's steps, and a test image is answered at once.
    let asked = Instant::now();
    let (status, item) = get(&format!("{base}/api/test/0"));
    assert_eq!(status, 200, "{item}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "GET /api/test/0 took {:?} after the uploads were answered in {answered:?}",
        asked.elapsed()
    );
    loop {
        let (_, info) = get(&format!("{base}/api/info"));
        if info["load"]["uploads"] == 0 && info["load"]["waiting"] == 0 {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "still working after the requests timed out: {}",
            info["load"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop().unwrap();
}

/// Peak and current resident memory of a process, in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> f64 {
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Kills a child process when dropped, so a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Item 3 of issue 22: 300 concurrent 7.8 MB uploads took the server to 3.55 GB, and it stayed
/// there. The binary (with its allocator) serves; 100 bodies of 7.8 MB at once stay within a
/// few bodies' worth of memory, and the memory is given back afterwards. The bodies are random
/// bytes, refused (422) as soon as they are read, so that the test takes seconds; the issue's
/// noise PNGs are measured by hand with `examples/serve_load.rs` (RELIABILITY.md).
#[test]
fn a_flood_of_large_uploads_keeps_memory_bounded_and_gives_it_back() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
            .args(["--threads", "2", "serve", "--port", "0", "--model-dir"])
            .arg(trained_run().join("run"))
            .current_dir(dir.path())
            .env("MNIST_DATA_DIR", data_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end_matches('/')
        .to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let picture: Vec<u8> = (0..7_800_000).map(|_| rng.random()).collect();
    let picture = axum::body::Bytes::from(picture);
    let post = |client: &reqwest::blocking::Client| {
        client
            .post(format!("{base}/api/predict"))
            .header("Content-Type", "image/png")
            .body(picture.clone())
            .send()
            .map_or(0, |r| r.status().as_u16())
    };
    // One upload first, so that the baseline holds what any request needs.
    assert_eq!(post(&client()), 422);
    let (_, baseline) = memory_mb(pid);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..100).map(|_| scope.spawn(|| post(&client()))).collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let (peak, _) = memory_mb(pid);
    // 503 when too many wait; 0 when the server closed a refused body's connection before the
    // client had sent it all.
    assert!(
        statuses.iter().all(|s| [0, 422, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|&&s| s == 422).count() >= 4,
        "{statuses:?}"
    );
    eprintln!("resident memory: {baseline:.0} MB before, peak {peak:.0} MB");
    assert!(
        peak - baseline < 250.0,
        "100 uploads of 7.8 MB took the server from {baseline:.0} MB to {peak:.0} MB"
    );
    let settled = Instant::now();
    loop {
        let (_, now) = memory_mb(pid);
        if now < baseline + 60.0 {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(5),
            "the server keeps {now:.0} MB after the uploads (from {baseline:.0} MB)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 5 of issue 22: a page on another site reached the server through DNS rebinding and
/// saved into the collect folder.
#[test]
fn other_hosts_and_cross_origin_writes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let collect = dir.path().join("collected");
    let server = start(Limits::default(), Some(collect.clone()), &["box.local"]);
    let port = server.address().port();
    let drawing = base64::engine::general_purpose::STANDARD.encode(one());
    let body = json!({ "class": 1, "image": drawing }).to_string();
    let save = |host: &str, origin: Option<&str>| {
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        raw(
            &server,
            &format!(
                "POST /api/collect HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let read = |host: &str| {
        raw(
            &server,
            &format!("GET /api/info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    for host in [
        "attacker.example".to_string(),
        format!("attacker.example:{port}"),
        format!("localhost:{}", port + 1),
        format!("127.0.0.2:{port}"),
    ] {
        let (status, answer) = read(&host);
        assert_eq!(status, 403, "{host}: {answer}");
        assert!(error_of(&answer).contains("host"), "{answer}");
        let (status, answer) = save(&host, Some(&format!("http://{host}")));
        assert_eq!(status, 403, "{host}: {answer}");
    }
    for (origin, host) in [
        ("http://attacker.example", format!("localhost:{port}")),
        ("null", format!("127.0.0.1:{port}")),
        (
            &format!("http://localhost:{port}"),
            format!("127.0.0.1:{port}"),
        ),
    ] {
        let (status, answer) = save(&host, Some(origin));
        assert_eq!(status, 403, "{origin} to {host}: {answer}");
        assert!(error_of(&answer).contains(origin), "{answer}");
    }
    assert!(!collect.exists(), "nothing saved by a refused request");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("box.local:{port}"),
    ] {
        let (status, answer) = read(&host);
        assert_eq!(status, 200, "{host}: {answer}");
        let (status, answer) = save(&host, Some(&format!("http://{host}")));
        assert_eq!(status, 200, "{host}: {answer}");
    }
    let (status, answer) = save(&format!("localhost:{port}"), None);
    assert_eq!(status, 200, "a script sends no Origin: {answer}");
    assert_eq!(std::fs::read_dir(collect.join("1")).unwrap().count(), 5);
    server.stop().unwrap();
}

fn collect_request(server: &Server, class: usize, picture: &[u8]) -> (u16, Value) {
    let image = base64::engine::general_purpose::STANDARD.encode(picture);
    json_of(
        client()
            .post(format!("http://{}/api/collect", server.address()))
            .header("Content-Type", "application/json")
            .body(json!({ "class": class, "image": image }).to_string())
            .send()
            .unwrap(),
    )
}

/// Item 5 of issue 22: 20 POSTs wrote 115 MB into the collect folder in 1.5 s; item 12: a
/// failed write gave only a path.
#[test]
fn the_collect_folder_has_a_quota_and_write_failures_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let collect = dir.path().join("collected");
    std::fs::create_dir_all(collect.join("3")).unwrap();
    std::fs::write(collect.join("3/earlier.png"), one()).unwrap();
    let server = start(
        Limits {
            collect_max_files: 3,
            collect_max_bytes: 1_000_000,
            ..Limits::default()
        },
        Some(collect.clone()),
        &[],
    );
    // The folder holds one file already: two more fit, the third is refused.
    for _ in 0..2 {
        let (status, answer) = collect_request(&server, 1, &one());
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = collect_request(&server, 1, &one());
    assert_eq!(status, 507, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("full"),
        "{answer}"
    );
    assert_eq!(std::fs::read_dir(collect.join("1")).unwrap().count(), 2);
    server.stop().unwrap();

    // Bytes count as well: a 1000x1000 noise picture is about 1 MB as PNG.
    let server = start(
        Limits {
            collect_max_files: 100,
            collect_max_bytes: 500_000,
            ..Limits::default()
        },
        Some(collect.clone()),
        &[],
    );
    let (status, answer) = collect_request(&server, 2, &noise(1000));
    assert_eq!(status, 507, "{answer}");
    assert!(!collect.join("2").exists());

    // A class folder that cannot be made: the answer says why, not only where.
    std::fs::write(collect.join("4"), "a file where the class folder goes").unwrap();
    let (status, answer) = collect_request(&server, 4, &one());
    assert_eq!(status, 500, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("File exists") || message.contains("Not a directory"),
        "{message}"
    );
    server.stop().unwrap();
}

/// Item 6 of issue 22: 413 was plain text, 405 had an empty body, 408 too.
#[test]
fn every_error_status_answers_json() {
    let server = start(
        Limits {
            max_body_bytes: 1000,
            request_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        None,
        &[],
    );
    let host = format!("Host: 127.0.0.1:{}", server.address().port());
    let cases = [
        (
            format!("GET /api/predict HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n"),
            405,
            "POST",
        ),
        (
            format!("DELETE /api/info HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n"),
            405,
            "GET",
        ),
        // Refused from its Content-Length, before the body is read.
        (
            format!(
                "POST /api/predict HTTP/1.1\r\n{host}\r\nContent-Type: image/png\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
            ),
            413,
            "1000 bytes",
        ),
        // Chunked, so found too large while it is read.
        (
            format!(
                "POST /api/predict HTTP/1.1\r\n{host}\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{}\r\n800\r\n{}\r\n0\r\n\r\n",
                "x".repeat(0x800),
                "x".repeat(0x800)
            ),
            413,
            "1000 bytes",
        ),
        // A body that never comes.
        (
            format!(
                "POST /api/predict HTTP/1.1\r\n{host}\r\nContent-Type: image/png\r\nContent-Length: 900\r\nConnection: close\r\n\r\nabc"
            ),
            408,
            "0.5 s",
        ),
        (
            format!("GET /nothing HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n"),
            404,
            "/nothing",
        ),
    ];
    for (request, expected, says) in cases {
        let (status, body) = raw(&server, &request);
        assert_eq!(status, expected, "{request:?}: {body}");
        let error = error_of(&body);
        assert!(error.contains(says), "{expected}: {error}");
    }
    server.stop().unwrap();
}

/// Item 12 of issue 22: a class named `x\y` was collected into the folder `9`, so importing
/// the collected drawings made another class of it.
#[test]
fn class_names_survive_collect_and_import() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Pictures of two classes whose names are no portable folder names.
    let classes = ["x\\y", "plain"];
    for (label, class) in classes.iter().enumerate() {
        let folder = dir.path().join("pictures").join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..12u32 {
            let picture = GrayImage::from_fn(28, 28, |x, y| {
                let on = if label == 0 {
                    x.abs_diff(14 + i % 3) <= 1
                } else {
                    y.abs_diff(14 + i % 3) <= 1
                };
                Luma([if on { 0 } else { 255 }])
            });
            picture.save(folder.join(format!("{i}.png"))).unwrap();
        }
    }
    mnist_cnn(dir.path())
        .args(["import", "pictures", "--out", "imported"])
        .assert()
        .success();
    let names = std::fs::read_to_string(dir.path().join("imported/classes.txt")).unwrap();
    assert_eq!(names.lines().collect::<Vec<_>>(), ["plain", "x\\y"]);
    mnist_cnn(dir.path())
        .args([
            "--threads",
            "2",
            "--quiet",
            "--data-dir",
            "imported",
            "train",
        ])
        .args(["--out", "run", "--epochs", "1", "--validation-split", "0"])
        .assert()
        .success();
    let collect = dir.path().join("collected");
    let server = Server::start(ServeOptions {
        model_dir: dir.path().join("run"),
        data_dir: dir.path().join("imported"),
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        collect: Some(collect.clone()),
        backend: BackendKind::Flex,
        allowed_hosts: Vec::new(),
        limits: Limits::default(),
    })
    .unwrap();
    for class in 0..2 {
        for _ in 0..3 {
            let (status, answer) = collect_request(&server, class, &one());
            assert_eq!(status, 200, "{answer}");
        }
    }
    let (_, saved) = collect_request(&server, 1, &one());
    assert_eq!(saved["folder"], "x%5Cy", "{saved}");
    server.stop().unwrap();
    mnist_cnn(dir.path())
        .args(["import", "collected", "--out", "reimported"])
        .assert()
        .success();
    let names = std::fs::read_to_string(dir.path().join("reimported/classes.txt")).unwrap();
    assert_eq!(names.lines().collect::<Vec<_>>(), ["plain", "x\\y"]);
}

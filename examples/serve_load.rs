//! Bounded loopback load and attack tests of `mnist-cnn serve`, measured by hand for
//! RELIABILITY.md and README.md.
//!
//! ```sh
//! cargo run --release --example serve_load -- [MODEL_DIR] [REQUESTS] [CLIENTS] [SECONDS]
//! cargo run --release --example serve_load -- uploads URL [N] [PID]
//! cargo run --release --example serve_load -- slow-headers URL [N] [SECONDS]
//! cargo run --release --example serve_load -- timeouts URL [N]
//! ```
//!
//! The first form starts its own server on 127.0.0.1 (a free port) with the trained model in
//! MODEL_DIR (default runs/latest), sends REQUESTS requests in all (default 4000) from CLIENTS
//! concurrent keep-alive clients (default 4), stopping early after SECONDS (default 60), and
//! prints the round-trip percentiles.
//!
//! The others attack a server already listening at URL (`mnist-cnn serve --port 8099`, say),
//! from this machine only:
//! - `uploads`: N (default 300) concurrent `POST /api/predict` of a 7.8 MB noise PNG; with the
//!   server's PID, its resident memory is sampled from /proc during the load and after it.
//! - `slow-headers`: N (default 250) connections send `GET /api/info HTTP/1.1\r\nHost: x\r\n`,
//!   then one byte every 5 s, for SECONDS (default 70); meanwhile a normal client asks
//!   `GET /api/info` every second. Prints the normal client's answers and how long the slow
//!   connections stayed open.
//! - `timeouts`: N (default 400) concurrent 4096x4096 PNGs to `POST /api/predict`; prints their
//!   answers, then how long `GET /api/test/0` takes once they are answered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use image::{GrayImage, Luma};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{ServeOptions, Server};
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Outcome = Result<(), Box<dyn std::error::Error>>;

/// A drawn 7 as the page sends it: black strokes on white, PNG.
fn seven() -> Vec<u8> {
    let mut image = GrayImage::from_pixel(280, 280, Luma([255]));
    let mut dot = |cx: f32, cy: f32| {
        for y in (cy - 10.0) as u32..(cy + 10.0) as u32 {
            for x in (cx - 10.0) as u32..(cx + 10.0) as u32 {
                image.put_pixel(x.min(279), y.min(279), Luma([0]));
            }
        }
    };
    for step in 0..=100 {
        let t = step as f32 / 100.0;
        dot(70.0 + 140.0 * t, 60.0);
        dot(210.0 - 80.0 * t, 60.0 + 170.0 * t);
    }
    png(&image)
}

fn png(image: &GrayImage) -> Vec<u8> {
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("PNG encoding in memory");
    png
}

/// A `side` x `side` picture of random grey levels: PNG cannot compress it.
fn noise(side: u32, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    png(&GrayImage::from_fn(side, side, |_, _| Luma([rng.random()])))
}

fn main() -> Outcome {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args.get(i).map_or(Ok(default), |a| a.parse())?)
    };
    match args.first().map(String::as_str) {
        Some("uploads") => uploads(url(&args)?, number(2, 300)? as usize, number(3, 0)?),
        Some("slow-headers") => slow_headers(url(&args)?, number(2, 250)? as usize, number(3, 70)?),
        Some("timeouts") => timeouts(url(&args)?, number(2, 400)? as usize),
        _ => round_trips(&args),
    }
}

fn url(args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    let url = args.get(1).ok_or("give the server's URL")?;
    Ok(url.trim_end_matches('/').to_string())
}

fn address(url: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    Ok(url.trim_start_matches("http://").parse()?)
}

/// Resident and peak resident memory of a process, in MB.
fn memory(pid: u64) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Sends `body` to `POST /api/predict` from `n` threads at once; returns the answers' statuses
/// (0 for a connection error: the server may close a connection whose body it refused unread).
fn post_all(url: &str, body: &Bytes, n: usize) -> Vec<u16> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()
                        .and_then(|client| {
                            client
                                .post(format!("{url}/api/predict"))
                                .header("Content-Type", "image/png")
                                .body(body.clone())
                                .send()
                        })
                        .map_or(0, |response| response.status().as_u16())
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap_or(0)).collect()
    })
}

fn tally(statuses: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(*status).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(status, count)| match status {
            0 => format!("{count} closed"),
            _ => format!("{count} x {status}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn uploads(url: String, n: usize, pid: u64) -> Outcome {
    let body = Bytes::from(noise(2800, 1));
    println!(
        "{n} concurrent uploads of a {:.2} MB noise PNG",
        body.len() as f64 / 1e6
    );
    if let Some((rss, peak)) = memory(pid) {
        println!("server before: RSS {rss:.0} MB (peak so far {peak:.0} MB)");
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let highest = Mutex::new(0.0f64);
    let started = Instant::now();
    let statuses = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if let Some((rss, _)) = memory(pid)
                    && let Ok(mut highest) = highest.lock()
                {
                    *highest = highest.max(rss);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let statuses = post_all(&url, &body, n);
        done.store(true, Ordering::SeqCst);
        statuses
    });
    println!(
        "answers in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        tally(&statuses)
    );
    if let Some((_, peak)) = memory(pid) {
        let sampled = highest.lock().map_or(0.0, |h| *h);
        println!("server during: RSS up to {sampled:.0} MB sampled, peak {peak:.0} MB");
        for wait in [1, 5] {
            std::thread::sleep(Duration::from_secs(wait));
            if let Some((rss, _)) = memory(pid) {
                println!("server {wait} s later: RSS {rss:.0} MB");
            }
        }
    }
    Ok(())
}

fn slow_headers(url: String, n: usize, seconds: u64) -> Outcome {
    let address = address(&url)?;
    let started = Instant::now();
    let lasted: Mutex<Vec<f64>> = Mutex::new(Vec::new());
    let refused = AtomicUsize::new(0);
    let answers: Vec<(bool, f64)> = std::thread::scope(|scope| {
        for _ in 0..n {
            scope.spawn(|| {
                let Ok(mut stream) = TcpStream::connect(address) else {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let opened = Instant::now();
                let mut sent = stream
                    .write_all(b"GET /api/info HTTP/1.1\r\nHost: x\r\n")
                    .is_ok();
                while sent && started.elapsed() < Duration::from_secs(seconds) {
                    // Closed by the server: the read ends (0 bytes or an error) before the
                    // 5 s read timeout.
                    let mut byte = [0u8; 1];
                    let waited = Instant::now();
                    match stream.read(&mut byte) {
                        // The end of the stream, or an answer before it.
                        Ok(0..) => break,
                        Err(_) if waited.elapsed() < Duration::from_secs(4) => break,
                        Err(_) => {}
                    }
                    sent = stream.write_all(b"X").is_ok();
                }
                if let Ok(mut lasted) = lasted.lock() {
                    lasted.push(opened.elapsed().as_secs_f64());
                }
            });
        }
        let normal = scope.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("a client");
            let mut answers = Vec::new();
            std::thread::sleep(Duration::from_secs(1));
            while started.elapsed() < Duration::from_secs(seconds) {
                let sent = Instant::now();
                let ok = client
                    .get(format!("{url}/api/info"))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                answers.push((ok, sent.elapsed().as_secs_f64()));
                std::thread::sleep(Duration::from_secs(1));
            }
            answers
        });
        normal.join().unwrap_or_default()
    });
    let mut lasted = lasted.into_inner().unwrap_or_default();
    lasted.sort_by(f64::total_cmp);
    let answered = answers.iter().filter(|(ok, _)| *ok).count();
    let slowest = answers.iter().map(|&(_, t)| t).fold(0.0, f64::max);
    println!(
        "{n} slow-header connections for {seconds} s ({} refused at connect): open for {:.1} s (median) to {:.1} s (longest)",
        refused.load(Ordering::SeqCst),
        lasted.get(lasted.len() / 2).copied().unwrap_or(0.0),
        lasted.last().copied().unwrap_or(0.0),
    );
    println!(
        "a normal client meanwhile: {answered} of {} requests answered, slowest in {slowest:.2} s",
        answers.len()
    );
    Ok(())
}

fn timeouts(url: String, n: usize) -> Outcome {
    // A dark square on white, 4096 pixels a side: small to send, slow to prepare.
    let picture = GrayImage::from_fn(4096, 4096, |x, y| {
        let inside = (1024..3072).contains(&x) && (1024..3072).contains(&y);
        Luma([if inside { 0 } else { 255 }])
    });
    let body = Bytes::from(png(&picture));
    println!(
        "{n} concurrent 4096x4096 PNGs of {:.0} kB",
        body.len() as f64 / 1e3
    );
    let started = Instant::now();
    let statuses = post_all(&url, &body, n);
    println!(
        "answers in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        tally(&statuses)
    );
    let asked = Instant::now();
    let answer = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?
        .get(format!("{url}/api/test/0"))
        .send()?;
    println!(
        "then GET /api/test/0: {} in {:.2} s",
        answer.status(),
        asked.elapsed().as_secs_f64()
    );
    Ok(())
}

fn round_trips(args: &[String]) -> Outcome {
    let model_dir = PathBuf::from(args.first().map_or("runs/latest", String::as_str));
    let requests: usize = args.get(1).map_or(Ok(4000), |a| a.parse())?;
    let clients: usize = args.get(2).map_or(Ok(4), |a| a.parse())?;
    let limit = Duration::from_secs(args.get(3).map_or(Ok(60), |a| a.parse())?);

    let server = Server::start(ServeOptions {
        model_dir: model_dir.clone(),
        data_dir: PathBuf::from("data/mnist"),
        host: "127.0.0.1".parse()?,
        port: 0,
        collect: None,
        backend: BackendKind::Flex,
        allowed_hosts: Vec::new(),
        limits: Default::default(),
    })?;
    if !server.has_model() {
        return Err(format!("no trained model in {}", model_dir.display()).into());
    }
    let url = format!("{}api/predict", server.url());
    let body = seven();
    let issued = AtomicUsize::new(0);
    let started = Instant::now();
    let mut times: Vec<f64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let client = reqwest::blocking::Client::new();
                    let mut times = Vec::new();
                    while issued.fetch_add(1, Ordering::SeqCst) < requests
                        && started.elapsed() < limit
                    {
                        let sent = Instant::now();
                        let response = client
                            .post(&url)
                            .header("Content-Type", "image/png")
                            .body(body.clone())
                            .send()
                            .and_then(|r| r.error_for_status())
                            .and_then(|r| r.bytes());
                        match response {
                            Ok(_) => times.push(sent.elapsed().as_secs_f64() * 1000.0),
                            Err(e) => eprintln!("request failed: {e}"),
                        }
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    if times.is_empty() {
        return Err("no request succeeded".into());
    }
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{} requests from {clients} clients in {seconds:.1}s ({:.0}/s): round trip p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        times.len() as f64 / seconds,
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        percentile(1.0)
    );
    server.stop()?;
    Ok(())
}

//! A bounded loopback load test of `mnist-cnn serve`: several clients post a 280x280 drawing to
//! `POST /api/predict` at once and the round trips are timed.
//!
//! ```sh
//! cargo run --release --example serve_load -- [MODEL_DIR] [REQUESTS] [CLIENTS] [SECONDS]
//! ```
//!
//! Starts its own server on 127.0.0.1 (a free port) with the trained model in MODEL_DIR
//! (default runs/latest), sends REQUESTS requests in all (default 4000) from CLIENTS concurrent
//! keep-alive clients (default 4), stopping early after SECONDS (default 60), and prints the
//! round-trip percentiles.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use image::{GrayImage, Luma};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{ServeOptions, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("PNG encoding in memory");
    png
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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

//! `mnist-cnn serve` over real HTTP on 127.0.0.1 (its page in a browser: tests/serve_browser.rs).
//!
//! One server is shared by the tests: it starts on an empty run directory, a real
//! `mnist-cnn train` then writes a small model into it (one epoch on 6000 images, a few seconds)
//! and the server must pick it up by itself, as it does for a training run one watches.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use image::{GrayImage, Luma};
use mnist_cnn::serve::Server;
use serde_json::{Value, json};

use common::serve::*;
use common::{data_dir, mnist_cnn};

#[test]
fn predict_answers_what_predict_json_prints() {
    let fixture = fixture();
    let png = drawing_png(one());
    let (status, served) = post(&fixture.url("/api/predict"), "image/png", png.clone());
    assert_eq!(status, 200, "{served}");
    let picture = fixture.dir.path().join("one.png");
    std::fs::write(&picture, &png).unwrap();
    let output = mnist_cnn(fixture.dir.path())
        .args(["--json", "predict", "--model-dir"])
        .arg(fixture.run_dir())
        .arg(&picture)
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let keys = |v: &Value| {
        v["predictions"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&served), keys(&printed));
    // The same classes and probabilities as the command line (the test's compute pool may
    // treat subnormal floats differently from the binary's, hence the tolerance).
    let (served_top, printed_top) = (
        served["predictions"][0]["top"].as_array().unwrap(),
        printed["predictions"][0]["top"].as_array().unwrap(),
    );
    assert_eq!(served_top.len(), printed_top.len());
    for (a, b) in served_top.iter().zip(printed_top) {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["class"], b["class"]);
        let (pa, pb) = (a["probability"].as_f64(), b["probability"].as_f64());
        assert!((pa.unwrap() - pb.unwrap()).abs() < 1e-6, "{a} vs {b}");
    }
    assert_eq!(served["predictions"][0]["top"][0]["name"], "1", "{served}");

    // JPEG, and the same picture as base64 JSON, give the same answer.
    let jpeg = encode(&one(), image::ImageFormat::Jpeg);
    let (status, from_jpeg) = post(&fixture.url("/api/predict"), "image/jpeg", jpeg);
    assert_eq!(status, 200);
    assert_eq!(from_jpeg["predictions"][0]["top"][0]["name"], "1");
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let (status, from_json) = post(
        &fixture.url("/api/predict?top=10&input=true"),
        "application/json",
        serde_json::to_vec(&json!({ "image": data_url })).unwrap(),
    );
    assert_eq!(status, 200, "{from_json}");
    let prediction = &from_json["predictions"][0];
    assert_eq!(prediction["top"].as_array().unwrap().len(), 10);
    assert_eq!(prediction["top"][0], served["predictions"][0]["top"][0]);
    assert_eq!(prediction["input"].as_array().unwrap().len(), 784);
}

#[test]
fn inspect_gives_every_layer_and_its_pictures() {
    let fixture = fixture();
    let (status, inspection) = post(
        &fixture.url("/api/inspect"),
        "application/json",
        br#"{"test_index": 0}"#.to_vec(),
    );
    assert_eq!(status, 200, "{inspection}");
    let names: Vec<&str> = inspection["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "conv2d/kernel",
            "conv2d/bias",
            "conv2d",
            "max_pooling2d",
            "conv2d_1",
            "max_pooling2d_1",
            "dense",
            "dense_1",
            "dense_2"
        ]
    );
    for layer in inspection["layers"].as_array().unwrap() {
        let size: u64 = layer["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .product();
        assert_eq!(layer["values"].as_array().unwrap().len() as u64, size);
    }
    // The probabilities are those of the network's forward pass, as the test item reports them.
    let (_, item) = get(&fixture.url("/api/test/0"));
    assert_eq!(item["label"], 7);
    let best = item["top"][0]["class"].as_u64().unwrap() as usize;
    let p = inspection["probabilities"][best].as_f64().unwrap();
    assert!((p - item["top"][0]["probability"].as_f64().unwrap()).abs() < 1e-6);

    let (_, info) = get(&fixture.url("/api/info"));
    assert_eq!(info["backend"]["name"], "flex", "{info}");
    for name in info["model"]["pictures"].as_array().unwrap() {
        let response = client()
            .post(fixture.url(&format!("/api/inspect/{}", name.as_str().unwrap())))
            .header("Content-Type", "image/png")
            .body(drawing_png(one()))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.headers()["content-type"], "image/png");
        let picture = image::load_from_memory(&response.bytes().unwrap()).unwrap();
        assert!(picture.width() > 300, "{name}");
    }
}

#[test]
fn test_set_metrics_and_confusion_cells() {
    let fixture = fixture();
    let (status, metrics) = get(&fixture.url("/api/metrics"));
    assert_eq!(status, 200, "{metrics}");
    let confusion = metrics["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 10_000);
    assert!(
        metrics["accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        metrics["accuracy"]
    );

    let (_, mistakes) = get(&fixture.url("/api/test?mistakes=true&limit=5"));
    let items = mistakes["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i["label"] != i["predicted"]));
    assert!(
        items
            .windows(2)
            .all(|w| w[0]["confidence"].as_f64() >= w[1]["confidence"].as_f64())
    );
    assert_eq!(
        mistakes["total"].as_u64().unwrap(),
        total
            - (0..10)
                .map(|c| confusion[c][c].as_u64().unwrap())
                .sum::<u64>()
    );
    let (_, cell) = get(&fixture.url("/api/test?label=3&predicted=3&limit=2"));
    assert_eq!(cell["total"], confusion[3][3]);
    assert_eq!(cell["items"][0]["pixels"].as_array().unwrap().len(), 784);
}

#[test]
fn collected_drawings_land_in_the_class_folder() {
    let fixture = fixture();
    let image = base64::engine::general_purpose::STANDARD.encode(drawing_png(one()));
    let (status, saved) = post(
        &fixture.url("/api/collect"),
        "application/json",
        serde_json::to_vec(&json!({ "class": 1, "image": image })).unwrap(),
    );
    assert_eq!(status, 200, "{saved}");
    let path = fixture.collect_dir().join(saved["saved"].as_str().unwrap());
    assert_eq!(path.parent().unwrap(), fixture.collect_dir().join("1"));
    let picture = image::open(&path).unwrap();
    assert_eq!((picture.width(), picture.height()), (280, 280));
}

/// Every bad request gets a JSON error with a 4xx status, and the server stays up.
#[test]
fn bad_requests_are_refused_and_the_server_stays_up() {
    let fixture = fixture();
    let url = |path: &str| fixture.url(path);
    let png = drawing_png(one());
    let blank = drawing_png(GrayImage::from_pixel(50, 50, Luma([255])));
    let wide = drawing_png(GrayImage::from_pixel(5000, 1, Luma([255])));
    let cases: Vec<(&str, String, &str, Vec<u8>, u16)> = vec![
        (
            "POST",
            url("/api/predict"),
            "image/png",
            b"not a png".to_vec(),
            422,
        ),
        ("POST", url("/api/predict"), "image/png", Vec::new(), 400),
        ("POST", url("/api/predict"), "image/png", blank, 422),
        ("POST", url("/api/predict"), "image/png", wide, 422),
        ("POST", url("/api/predict"), "text/plain", png.clone(), 415),
        ("POST", url("/api/predict"), "", png.clone(), 415),
        (
            "POST",
            url("/api/predict?top=0"),
            "image/png",
            png.clone(),
            400,
        ),
        (
            "POST",
            url("/api/predict?top=x"),
            "image/png",
            png.clone(),
            400,
        ),
        (
            "POST",
            url("/api/predict"),
            "application/json",
            b"{\"image\":".to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/predict"),
            "application/json",
            b"{\"image\":\"%%%\"}".to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/predict"),
            "application/json",
            b"[1,2]".to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/predict"),
            "application/json",
            b"{\"test_index\":1}".to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/inspect"),
            "application/json",
            b"{\"test_index\":10000}".to_vec(),
            404,
        ),
        (
            "POST",
            url("/api/inspect/..%2F..%2Fetc%2Fpasswd"),
            "image/png",
            png.clone(),
            404,
        ),
        (
            "POST",
            url("/api/inspect/nothing.png"),
            "image/png",
            png.clone(),
            404,
        ),
        (
            "GET",
            url("/api/test/..%2F..%2Fetc%2Fpasswd"),
            "",
            Vec::new(),
            400,
        ),
        ("GET", url("/api/test/-1"), "", Vec::new(), 400),
        (
            "GET",
            url("/api/test/99999999999999999999999"),
            "",
            Vec::new(),
            400,
        ),
        ("GET", url("/api/test/10000"), "", Vec::new(), 404),
        ("GET", url("/api/test?limit=x"), "", Vec::new(), 400),
        (
            "GET",
            url("/api/test?path=/etc/passwd"),
            "",
            Vec::new(),
            400,
        ),
        ("GET", url("/../../etc/passwd"), "", Vec::new(), 404),
        ("GET", url("/%2e%2e/%2e%2e/etc/passwd"), "", Vec::new(), 404),
        ("GET", url("/src/serve/assets/app.js"), "", Vec::new(), 404),
        (
            "POST",
            url("/api/collect"),
            "application/json",
            br#"{"class": "../../etc", "image": "aGk="}"#.to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/collect"),
            "application/json",
            br#"{"class": 99, "image": "aGk="}"#.to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/collect"),
            "application/json",
            br#"{"class": 1, "image": "not base64!"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            url("/api/collect"),
            "application/json",
            br#"{"class": 1, "image": "aGk="}"#.to_vec(),
            422,
        ),
        (
            "POST",
            url("/api/collect"),
            "application/json",
            br#"{"class": 1, "image": "aGk=", "path": "/tmp/x"}"#.to_vec(),
            400,
        ),
    ];
    for (method, url, content_type, body, expected) in cases {
        let request = match method {
            "GET" => client().get(&url),
            _ => client().post(&url).body(body),
        };
        let request = if content_type.is_empty() {
            request
        } else {
            request.header("Content-Type", content_type)
        };
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        assert_eq!(status, expected, "{method} {url}: {text}");
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {url}: not JSON: {text}"));
        assert!(error["error"].is_string(), "{method} {url}: {text}");
    }
    // A body over the limit is refused from its Content-Length, before it is read; a raw
    // connection sees the answer (an HTTP client would fail writing the rest of the body).
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(fixture.server.address()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST /api/predict HTTP/1.1\r\nHost: localhost:{}\r\nContent-Type: image/png\r\n\
             Content-Length: {}\r\n\r\n",
            fixture.server.address().port(),
            64 << 20
        )
        .unwrap();
        stream.write_all(&[0; 4096]).unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(
            &answer,
            b"HTTP/1.1 413",
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let collected: Vec<_> = walk(&fixture.collect_dir());
    assert!(
        collected
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "png")),
        "{collected:?}"
    );
    let (status, _) = get(&fixture.url("/api/info"));
    assert_eq!(status, 200, "the server is still up");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn two_hundred_concurrent_clients_all_get_answers() {
    let fixture = fixture();
    let png = drawing_png(one());
    let url = fixture.url("/api/predict");
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|_| scope.spawn(|| post(&url, "image/png", png.clone())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["predictions"][0]["top"][0]["name"], "1");
    }
    eprintln!("200 concurrent predictions in {:?}", started.elapsed());
}

#[test]
fn serve_command_prints_its_address() {
    let fixture = fixture();
    let (_child, url) = serve_process(fixture.dir.path(), &fixture.run_dir());
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (status, info) = get(&format!("{url}api/info"));
    assert_eq!(status, 200);
    assert_eq!(info["collect"], false, "collecting is off by default");
    let page = client().get(url).send().unwrap().text().unwrap();
    assert!(page.contains(r#"data-testid="canvas""#));
    assert!(page.contains(r#"data-testid="top-class""#));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );
}

#[test]
fn listening_beyond_loopback_is_warned_about() {
    assert!(mnist_cnn::serve::exposure_warning("127.0.0.1:8080".parse().unwrap(), true).is_none());
    assert!(mnist_cnn::serve::exposure_warning("[::1]:8080".parse().unwrap(), true).is_none());
    let warning =
        mnist_cnn::serve::exposure_warning("0.0.0.0:8080".parse().unwrap(), true).unwrap();
    assert!(warning.starts_with("warning: "), "{warning}");
    assert!(warning.contains("collect"), "{warning}");
}

#[test]
fn inspect_command_writes_every_picture_and_prints_the_numbers() {
    let fixture = fixture();
    let out = fixture.dir.path().join("inspect-out");
    mnist_cnn(fixture.dir.path())
        .args(["inspect", "--split", "test", "--index", "0", "--model-dir"])
        .arg(fixture.run_dir())
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    for name in [
        "input",
        "conv2d-kernels",
        "conv2d",
        "max_pooling2d",
        "conv2d_1",
        "max_pooling2d_1",
        "dense",
        "probabilities",
    ] {
        let path = out.join(format!("{name}.png"));
        let picture = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(picture.width() > 300, "{name}");
    }
    let output = mnist_cnn(fixture.dir.path())
        .args([
            "--json",
            "inspect",
            "--split",
            "test",
            "--index",
            "0",
            "--model-dir",
        ])
        .arg(fixture.run_dir())
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["label"], 7);
    // The numbers are those of a forward pass: the probabilities `predict --json` prints.
    let predicted = mnist_cnn(fixture.dir.path())
        .args([
            "--json",
            "predict",
            "--top",
            "10",
            "--index",
            "0",
            "--model-dir",
        ])
        .arg(fixture.run_dir())
        .output()
        .unwrap();
    let predicted: Value = serde_json::from_slice(&predicted.stdout).unwrap();
    for class in predicted["predictions"][0]["top"].as_array().unwrap() {
        let index = class["class"].as_u64().unwrap() as usize;
        let inspected = printed["inspection"]["probabilities"][index]
            .as_f64()
            .unwrap();
        assert!((inspected - class["probability"].as_f64().unwrap()).abs() < 1e-6);
    }
}

/// A server started before training shows each epoch as `train` commits it: the history grows
/// and the model is loaded again (its version grows) without a restart.
#[test]
fn a_running_training_is_picked_up_epoch_by_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let server = Server::start(local_options(&run, None)).unwrap();
    let history_url = format!("{}api/history", server.url());
    // (completed epochs, model version, epochs in the history) as the server reports them.
    let state = || {
        let (_, history) = get(&history_url);
        (
            history["completed_epochs"].as_u64().unwrap(),
            history["model_version"].as_u64().unwrap(),
            history["history"].as_array().map_or(0, Vec::len),
        )
    };
    assert_eq!(state(), (0, 0, 0), "no model before the first epoch");
    // One epoch per training process, the second resuming the first, so that no epoch can
    // end between two polls however fast the kernels get: the server is polled while each
    // process runs and must show each committed epoch as a newly loaded model.
    let mut versions = vec![0];
    for epochs in [1u64, 2] {
        let mut training = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
        training
            .args(["--threads", "1", "--quiet", "train", "--epochs"])
            .arg(epochs.to_string())
            .args(["--limit", "6000", "--validation-split", "0", "--out"])
            .arg(&run)
            .env("MNIST_DATA_DIR", data_dir())
            .stdout(Stdio::null());
        if epochs > 1 {
            training.arg("--resume");
        }
        let mut training = Killed(training.spawn().unwrap());
        let started = Instant::now();
        let mut seen = Vec::new();
        let shown = loop {
            let now = state();
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            if now.0 == epochs {
                break now;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "epoch {epochs} never showed: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(training.0.wait().unwrap().success());
        assert_eq!(
            shown.2 as u64, epochs,
            "the history has every epoch: {seen:?}"
        );
        assert!(
            shown.1 > *versions.last().unwrap(),
            "epoch {epochs} loaded as a new model: {seen:?} after versions {versions:?}"
        );
        versions.push(shown.1);
    }
    server.stop().unwrap();
}

//! `mnist-cnn serve` over real HTTP on 127.0.0.1, and its page in a real headless Chromium.
//!
//! One server is shared by the tests: it starts on an empty run directory, a real
//! `mnist-cnn train` then writes a small model into it (one epoch on 6000 images, a few seconds)
//! and the server must pick it up by itself, as it does for a training run one watches.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use image::{GrayImage, Luma};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{ServeOptions, Server};
use serde_json::{Value, json};

use common::{data_dir, mnist_cnn};

struct Fixture {
    server: Server,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.address())
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn collect_dir(&self) -> PathBuf {
        self.dir.path().join("collected")
    }
}

/// A server on a free port of 127.0.0.1, on flex, for the run in `model_dir`.
fn local_options(model_dir: &Path, collect: Option<PathBuf>) -> ServeOptions {
    ServeOptions {
        model_dir: model_dir.to_path_buf(),
        data_dir: data_dir(),
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        collect,
        backend: BackendKind::Flex,
        allowed_hosts: Vec::new(),
        limits: Default::default(),
    }
}

/// Epochs and images of the test model; more when taking screenshots for the docs.
fn training_args() -> Vec<String> {
    let args = if std::env::var_os("MNIST_CNN_SCREENSHOTS").is_some() {
        "--epochs 4 --limit 30000 --validation-split 0.1"
    } else {
        "--epochs 1 --limit 6000 --validation-split 0"
    };
    args.split(' ').map(String::from).collect()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let server = Server::start(local_options(&run, Some(dir.path().join("collected"))))
            .expect("the server starts without a model");
        assert!(!server.has_model());
        let fixture = Fixture { server, dir };
        // Before training: the page works, predictions say what to run.
        let (status, body) = post(
            &fixture.url("/api/predict"),
            "image/png",
            drawing_png(one()),
        );
        assert_eq!(status, 503, "{body}");
        assert!(body["error"].as_str().unwrap().contains("mnist-cnn train"));

        mnist_cnn(fixture.dir.path())
            .args(["--threads", "2", "--quiet", "train", "--out"])
            .arg(&run)
            .args(training_args())
            .assert()
            .success();
        let started = Instant::now();
        loop {
            let (_, history) = get(&fixture.url("/api/history"));
            if history["completed_epochs"].as_u64() > Some(0)
                && history["completed_epochs"] == history["epochs"]
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not load the trained model: {history}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        fixture
    })
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn json_of(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "status {status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

fn get(url: &str) -> (u16, Value) {
    json_of(client().get(url).send().unwrap())
}

fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    json_of(
        client()
            .post(url)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .unwrap(),
    )
}

/// A 280x280 drawing as the page makes it: a black stroke on white.
fn drawing((x0, y0): (f32, f32), (x1, y1): (f32, f32)) -> GrayImage {
    let mut image = GrayImage::from_pixel(280, 280, Luma([255]));
    {
        for step in 0..=200 {
            let t = step as f32 / 200.0;
            let (cx, cy) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for y in (cy - 11.0) as i32..=(cy + 11.0) as i32 {
                for x in (cx - 11.0) as i32..=(cx + 11.0) as i32 {
                    let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= 121.0;
                    if inside && (0..280).contains(&x) && (0..280).contains(&y) {
                        image.put_pixel(x as u32, y as u32, Luma([0]));
                    }
                }
            }
        }
    }
    image
}

fn one() -> GrayImage {
    drawing((145.0, 40.0), (135.0, 240.0))
}

fn encode(image: &GrayImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

fn drawing_png(image: GrayImage) -> Vec<u8> {
    encode(&image, image::ImageFormat::Png)
}

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

/// Kills a child process when dropped, so a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_command_prints_its_address() {
    let fixture = fixture();
    let child = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(["--threads", "1", "serve", "--port", "0", "--model-dir"])
        .arg(fixture.run_dir())
        .env("MNIST_DATA_DIR", data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"));
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

// ---------------------------------------------------------------------------------------------
// The page in a real browser, through WebDriver (chromedriver), on 127.0.0.1 only.
// ---------------------------------------------------------------------------------------------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `$env` when it is set (it must name a file), else the first of `names` found on `PATH`.
fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Whether this runs in CI: `CI` set to anything but empty, `0` or `false` (GitHub sets
/// `true`, and `.ci/run` sets it when unset).
fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A WebDriver session on a chromedriver this test started.
struct Browser {
    base: String,
    client: reqwest::blocking::Client,
    _driver: Killed,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let driver = Killed(driver);
        let client = client();
        let root = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while client.get(format!("{root}/status")).send().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--force-device-scale-factor=1"],
            },
        }}});
        let response = client
            .post(format!("{root}/session"))
            .body(capabilities.to_string())
            .send()
            .unwrap();
        let (status, session) = json_of(response);
        assert_eq!(status, 200, "no browser session: {session}");
        let id = session["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            base: format!("{root}/session/{id}"),
            client,
            _driver: driver,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(&url),
            "DELETE" => self.client.delete(&url),
            _ => self.client.post(&url).body(body.to_string()),
        };
        let (status, value) = json_of(request.send().unwrap());
        assert_eq!(status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        found[ELEMENT].as_str().unwrap().to_string()
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// Polls `script` until it returns true.
    fn wait_for(&self, what: &str, script: &str) {
        let started = Instant::now();
        while self.script(script) != json!(true) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the page never showed {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, dir: Option<&Path>, name: &str) {
        let Some(dir) = dir else { return };
        let data = self.call("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.client.delete(&self.base).send();
    }
}

/// A pen stroke from (x0, y0) to (x1, y1), in pixels from the canvas's centre.
fn stroke(canvas: &str, (x0, y0): (i64, i64), (x1, y1): (i64, i64)) -> Value {
    let origin = json!({ ELEMENT: canvas });
    let mut actions = vec![
        json!({ "type": "pointerMove", "duration": 0, "origin": origin, "x": x0, "y": y0 }),
        json!({ "type": "pointerDown", "button": 0 }),
    ];
    for step in 1..=12 {
        let (x, y) = (x0 + (x1 - x0) * step / 12, y0 + (y1 - y0) * step / 12);
        actions.push(
            json!({ "type": "pointerMove", "duration": 15, "origin": origin, "x": x, "y": y }),
        );
    }
    actions.push(json!({ "type": "pointerUp", "button": 0 }));
    json!({ "actions": [{
        "type": "pointer", "id": "pen", "parameters": { "pointerType": "pen" }, "actions": actions,
    }]})
}

#[test]
fn browser_draws_a_one_and_the_page_shows_1() {
    let chromium = find_program(
        "CHROME",
        &[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ],
    );
    let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        let message = "the browser test needs headless Chromium and chromedriver \
            (`chromium` and `chromedriver` on PATH, or $CHROME and $CHROMEDRIVER); \
            .ci/browser installs Debian's `chromium` and `chromium-driver`";
        // Mandatory in CI; a fresh machine's `cargo test --release` passes without a browser.
        assert!(
            !in_ci(),
            "{message} (CI is set, so this test cannot be skipped)"
        );
        // Straight to the process's stderr, past the test harness's capture, so that the skip
        // shows in every test log.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n{stars}\n*** SKIPPED browser_draws_a_one_and_the_page_shows_1: {message}. \
             Outside CI this one test passes without them. ***\n{stars}\n",
            stars = "*".repeat(100)
        );
        return;
    };
    let screenshots = std::env::var_os("MNIST_CNN_SCREENSHOTS").map(PathBuf::from);
    let fixture = fixture();
    let browser = Browser::start(&chromium, &chromedriver);
    browser.call("POST", "/url", json!({ "url": fixture.url("/") }));
    browser.wait_for(
        "the model",
        "return document.getElementById('model-info').textContent.includes('parameters')",
    );
    let canvas = browser.element(r#"[data-testid="canvas"]"#);
    browser.call("POST", "/actions", stroke(&canvas, (6, -100), (-6, 100)));
    browser.call("DELETE", "/actions", Value::Null);
    let started = Instant::now();
    let top_class = browser.element(r#"[data-testid="top-class"]"#);
    loop {
        let text = browser.call("GET", &format!("/element/{top_class}/text"), Value::Null);
        let text = text.as_str().unwrap_or_default().to_string();
        if text.starts_with('1') {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the page shows \"{text}\" as the top class of a drawn 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_for(
        "the prepared 28x28 input",
        "return document.getElementById('bars').childElementCount === 30",
    );
    browser.screenshot(screenshots.as_deref(), "serve-draw.png");

    // The layers of the drawing, one click away.
    browser.click("#show-layers");
    browser.wait_for(
        "the layer pictures",
        "const images = [...document.querySelectorAll('#layer-pictures img')];
         return images.length === 7 && images.every((i) => i.complete && i.naturalWidth > 0)",
    );
    if screenshots.is_some() {
        browser.script("document.getElementById('layers').scrollIntoView()");
        browser.screenshot(screenshots.as_deref(), "serve-layers.png");
    }

    // The test set: the confusion matrix, a cell's images.
    browser.click(r#"[data-tab="test"]"#);
    browser.wait_for(
        "the confusion matrix",
        "return document.querySelectorAll('#confusion td').length === 100",
    );
    browser.click(r#"[data-testid="cell-9-4"]"#);
    browser.wait_for(
        "the images of a cell",
        "return document.getElementById('gallery-title').textContent.startsWith('True 9')",
    );
    browser.screenshot(screenshots.as_deref(), "serve-test-set.png");

    // The training curves.
    browser.click(r#"[data-tab="training"]"#);
    browser.wait_for(
        "the epochs",
        "return document.getElementById('epochs').textContent.includes('epochs')",
    );
    browser.screenshot(screenshots.as_deref(), "serve-training.png");
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
    let training = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(["--threads", "1", "--quiet", "train", "--epochs", "2"])
        .args(["--limit", "6000", "--validation-split", "0", "--out"])
        .arg(&run)
        .env("MNIST_DATA_DIR", data_dir())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut training = Killed(training);
    let started = Instant::now();
    // (completed epochs, model version) as the server reported them, without repeats.
    let mut seen: Vec<(u64, u64)> = Vec::new();
    loop {
        let (_, history) = get(&history_url);
        let state = (
            history["completed_epochs"].as_u64().unwrap(),
            history["model_version"].as_u64().unwrap(),
        );
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if state.0 == 2 {
            assert_eq!(history["history"].as_array().unwrap().len(), 2);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second epoch never showed: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(training.0.wait().unwrap().success());
    assert_eq!(
        seen.first(),
        Some(&(0, 0)),
        "no model before the first epoch"
    );
    assert!(
        seen.iter()
            .any(|&(epochs, version)| epochs == 1 && version >= 1)
            && seen.last().is_some_and(|&(_, version)| version >= 2),
        "each epoch loaded as it was committed: {seen:?}"
    );
    server.stop().unwrap();
}

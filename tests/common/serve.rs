//! A server for the tests of `serve` (tests/serve.rs, tests/serve_browser.rs): it starts on an
//! empty run directory, a real `mnist-cnn train` then writes a small model into it, and the
//! server must pick it up by itself; and the HTTP helpers and drawings those tests send.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image::{GrayImage, Luma};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{ServeOptions, Server};
use serde_json::Value;

use super::{data_dir, mnist_cnn};

pub struct Fixture {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.address())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn collect_dir(&self) -> PathBuf {
        self.dir.path().join("collected")
    }
}

/// A server on a free port of 127.0.0.1, on flex, for the run in `model_dir`.
pub fn local_options(model_dir: &Path, collect: Option<PathBuf>) -> ServeOptions {
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
pub fn training_args() -> Vec<String> {
    let args = if std::env::var_os("MNIST_CNN_SCREENSHOTS").is_some() {
        "--epochs 4 --limit 30000 --validation-split 0.1"
    } else {
        "--epochs 1 --limit 6000 --validation-split 0"
    };
    args.split(' ').map(String::from).collect()
}

pub fn fixture() -> &'static Fixture {
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

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn json_of(response: reqwest::blocking::Response) -> (u16, Value) {
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

pub fn get(url: &str) -> (u16, Value) {
    json_of(client().get(url).send().unwrap())
}

pub fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
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
pub fn drawing((x0, y0): (f32, f32), (x1, y1): (f32, f32)) -> GrayImage {
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

pub fn one() -> GrayImage {
    drawing((145.0, 40.0), (135.0, 240.0))
}

pub fn encode(image: &GrayImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

pub fn drawing_png(image: GrayImage) -> Vec<u8> {
    encode(&image, image::ImageFormat::Png)
}

/// Kills a child process when dropped, so a failing test leaves nothing running.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mnist-cnn --threads 1 serve --port 0 --model-dir MODEL_DIR`, started in `dir` on the shipped
/// data, and the address it prints first ("listening on ADDRESS").
pub fn serve_process(dir: &Path, model_dir: &Path) -> (Killed, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .current_dir(dir)
        .args(["--threads", "1", "serve", "--port", "0", "--model-dir"])
        .arg(model_dir)
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
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (child, address)
}

//! One path for a picture: `predict`, `inspect` and the web server prepare a picture with the
//! model's own pipeline and give bit-identical probabilities, for an MNIST model, a grayscale
//! model of imported pictures resized whole (`--fit stretch`) and a colour model.

mod common;

use std::path::Path;

use image::{Rgb, RgbImage};
use serde_json::Value;

use common::{data_dir, mnist_cnn};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{ServeOptions, Server};

/// A picture that no pipeline leaves alone: wider than tall, a dark reddish stroke off-centre
/// on light paper, so that the digit fit (crop and centre), stretching, inversion and colour
/// all change what the network reads.
fn picture() -> Vec<u8> {
    let picture = RgbImage::from_fn(90, 60, |x, y| {
        let on_stroke = (30..42).contains(&x) && (8..52).contains(&y)
            || (30..70).contains(&x) && (8..16).contains(&y);
        if on_stroke {
            Rgb([150, 20, 40])
        } else {
            Rgb([235, 240, 225])
        }
    });
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

/// Three folders of a few simple pictures each, for `import`.
fn picture_folders(dir: &Path) {
    for (class, name) in ["bar", "box", "dot"].iter().enumerate() {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..8u32 {
            RgbImage::from_fn(40, 30, |x, y| {
                let hit = match class {
                    0 => (10 + i..16 + i).contains(&x),
                    1 => (8..30).contains(&x) && (6..24).contains(&y) && !(12..26).contains(&x),
                    _ => (x as i32 - 20).pow(2) + (y as i32 - 15).pow(2) < 40 + i as i32 * 4,
                };
                let channel = |c: usize| if hit && c == class { 200 } else { 30 };
                Rgb([channel(0), channel(1), channel(2)])
            })
            .save(folder.join(format!("{i}.png")))
            .unwrap();
        }
    }
}

/// Each class's probability, by class index, from a `top` list of `predict --json`.
fn by_class(top: &Value) -> Vec<f32> {
    let mut probabilities = vec![f32::NAN; top.as_array().unwrap().len()];
    for entry in top.as_array().unwrap() {
        let class = entry["class"].as_u64().unwrap() as usize;
        probabilities[class] = entry["probability"].as_f64().unwrap() as f32;
    }
    probabilities
}

fn json_output(dir: &Path, args: &[&str]) -> Value {
    let output = mnist_cnn(dir).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The probabilities of `predict --json`, `inspect --json`, `POST /api/predict` and
/// `POST /api/inspect` for the same picture, which must agree to the bit.
fn check_one_path(dir: &Path, run: &str, data: &Path, classes: usize) -> Vec<f32> {
    let top = classes.to_string();
    let data = data.to_str().unwrap();
    let predicted = json_output(
        dir,
        &[
            "--json",
            "--data-dir",
            data,
            "predict",
            "--model-dir",
            run,
            "--top",
            &top,
            "picture.png",
        ],
    );
    let from_predict = by_class(&predicted["predictions"][0]["top"]);
    let inspected = json_output(
        dir,
        &[
            "--json",
            "--data-dir",
            data,
            "inspect",
            "--model-dir",
            run,
            "picture.png",
        ],
    );
    let from_inspect: Vec<f32> = inspected["inspection"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        inspected["inspection"]["input"].as_array().unwrap().len(),
        inspected["inspection"]["rows"].as_u64().unwrap() as usize
            * inspected["inspection"]["cols"].as_u64().unwrap() as usize
            * inspected["inspection"]["channels"].as_u64().unwrap() as usize
    );

    let server = Server::start(ServeOptions {
        model_dir: dir.join(run),
        data_dir: dir.join(data),
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        collect: None,
        backend: BackendKind::Flex,
        allowed_hosts: Vec::new(),
        limits: Default::default(),
    })
    .unwrap();
    let client = reqwest::blocking::Client::new();
    let post = |path: &str| -> Value {
        let response = client
            .post(format!("{}{path}", server.url()))
            .header("Content-Type", "image/png")
            .body(picture())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        serde_json::from_slice(&response.bytes().unwrap()).unwrap()
    };
    let served = post(&format!("api/predict?top={classes}&input=true"));
    let from_server = by_class(&served["predictions"][0]["top"]);
    let served_inspection = post("api/inspect");
    let from_served_inspection: Vec<f32> = served_inspection["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        served["predictions"][0]["input"], inspected["inspection"]["input"],
        "the server prepares the picture as inspect does"
    );
    let info: Value = serde_json::from_slice(
        &client
            .get(format!("{}api/info", server.url()))
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    let run_json = common::read_json(&dir.join(run).join("run.json"));
    if let Some(fit) = run_json["pipeline"]["fit"].as_str() {
        let name = info["model"]["pipeline"]["name"].as_str().unwrap();
        assert!(name.starts_with(fit), "{name} names the fit {fit}");
    }
    server.stop().unwrap();

    let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(from_predict.len(), classes);
    assert_eq!(
        bits(&from_predict),
        bits(&from_inspect),
        "predict vs inspect"
    );
    assert_eq!(bits(&from_predict), bits(&from_server), "predict vs serve");
    assert_eq!(
        bits(&from_predict),
        bits(&from_served_inspection),
        "predict vs the served inspection"
    );
    from_predict
}

#[test]
fn predict_inspect_and_serve_read_a_picture_alike_for_every_kind_of_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("picture.png"), picture()).unwrap();

    // An MNIST model: the digit pipeline.
    mnist_cnn(dir.path())
        .args(["-q", "train", "--limit", "512", "--epochs", "1"])
        .args(["--batch-size", "64", "--out", "mnist"])
        .assert()
        .success();
    let mnist = check_one_path(dir.path(), "mnist", &data_dir(), 10);

    // Grayscale pictures resized whole, at a size that is not MNIST's.
    picture_folders(&dir.path().join("pictures"));
    for (out, extra) in [("gray", &[][..]), ("colour", &["--color"][..])] {
        mnist_cnn(dir.path())
            .args(["-q", "import", "pictures", "--out", out, "--size", "20"])
            .args(["--fit", "stretch", "--test-fraction", "0.25"])
            .args(extra)
            .assert()
            .success();
        let run = format!("{out}-run");
        mnist_cnn(dir.path())
            .args(["-q", "--data-dir", out, "train", "--epochs", "1"])
            .args(["--batch-size", "8", "--out", &run])
            .assert()
            .success();
        let probabilities = check_one_path(dir.path(), &run, &dir.path().join(out), 3);
        assert_ne!(probabilities, mnist[..3], "{out}");
    }
}

/// A large picture that compresses well: a dark stroke on paper, `width` x `height` pixels of
/// 16-bit RGBA, whose decoding and conversions used to take several copies of its 8 bytes a
/// pixel.
fn large_picture(path: &Path, width: u32, height: u32) {
    let picture = image::ImageBuffer::from_fn(width, height, |x, y| {
        let ink = (width / 3..width / 2).contains(&x) && (height / 5..height * 4 / 5).contains(&y);
        let v = if ink { 3_000 } else { 60_000 };
        image::Rgba([v, v, v, 65_535u16])
    });
    image::DynamicImage::ImageRgba16(picture)
        .save(path)
        .unwrap();
}

#[test]
fn large_pictures_stay_under_512_mib_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let data = data.to_str().unwrap();
    mnist_cnn(dir.path())
        .args([
            "-q", "train", "--limit", "256", "--epochs", "1", "--out", "run",
        ])
        .assert()
        .success();
    // 30 megapixels: 240 MB decoded.
    large_picture(&dir.path().join("large.png"), 6000, 5000);
    let (code, stderr, peak_mb) = common::run_measured(
        dir.path(),
        &[
            "--data-dir",
            data,
            "predict",
            "--model-dir",
            "run",
            "large.png",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(peak_mb < 512.0, "predict peaked at {peak_mb:.0} MB");

    // Three of them imported on three threads take turns with the memory.
    for (class, copies) in [("a", 3), ("b", 1)] {
        let folder = dir.path().join("pictures").join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for copy in 0..copies {
            std::fs::copy(
                dir.path().join("large.png"),
                folder.join(format!("{copy}.png")),
            )
            .unwrap();
        }
    }
    let (code, stderr, peak_mb) = common::run_measured(
        dir.path(),
        &[
            "--threads",
            "3",
            "import",
            "pictures",
            "--out",
            "imported",
            "--test-fraction",
            "0.5",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(peak_mb < 512.0, "import peaked at {peak_mb:.0} MB");
}

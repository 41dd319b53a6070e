//! Mutation fuzzing on stable Rust: valid IDX files (raw, gzipped, multi-member gzip), PNG and
//! JPEG pictures, and model files (Keras's `.keras` zip and HDF5 weights, safetensors) are mutated by a seeded RNG (bit flips, truncation, edits of the length and
//! dimension fields, splices, appended junk) and fed to the decoders. Nothing may panic, and no
//! single allocation may exceed what the input's size can justify.
//!
//! CI runs a few thousand cases in seconds; for a longer run:
//!
//! ```sh
//! MNIST_CNN_FUZZ_CASES=1000000 MNIST_CNN_FUZZ_SEED=7 cargo test --release --test fuzz
//! ```

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use common::data::gzip;
use mnist_cnn::data::idx::{self, IdxImages};
use mnist_cnn::data::image::decode_file;
use mnist_cnn::data::pipeline::Pipeline;
use mnist_cnn::exchange::{ImportOptions, read_model_bytes};
use mnist_cnn::model::Architecture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counts the largest single allocation of the current thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    let value = f();
    (value, LARGEST.with(Cell::get))
}

fn cases(default: usize) -> usize {
    std::env::var("MNIST_CNN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("MNIST_CNN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_130)
}

/// Interesting values for length and dimension fields.
const EDGES: [u32; 10] = [
    0,
    1,
    2,
    28,
    1024,
    1025,
    10_000_000,
    10_000_001,
    0x7fff_ffff,
    u32::MAX,
];

/// One mutation of `input`, drawing from `others` for splices.
fn mutate(input: &[u8], others: &[Vec<u8>], rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = input.to_vec();
    let rounds = rng.random_range(1..=3);
    for _ in 0..rounds {
        match rng.random_range(0..7) {
            0 if !bytes.is_empty() => {
                for _ in 0..rng.random_range(1..=8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
            }
            1 => {
                let at = rng.random_range(0..=bytes.len());
                bytes.truncate(at);
            }
            // A header field of the IDX header, or any aligned word.
            2 if bytes.len() >= 4 => {
                let words = bytes.len() / 4;
                let word = if rng.random_bool(0.7) {
                    rng.random_range(0..words.min(4))
                } else {
                    rng.random_range(0..words)
                };
                let value = if rng.random_bool(0.5) {
                    EDGES[rng.random_range(0..EDGES.len())]
                } else {
                    rng.random()
                };
                bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_be_bytes());
            }
            3 => {
                let other = &others[rng.random_range(0..others.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let to = rng.random_range(from..=other.len());
                    let at = rng.random_range(0..=bytes.len());
                    bytes.splice(at..at, other[from..to].iter().copied());
                }
            }
            4 => {
                let count = rng.random_range(1..64);
                bytes.extend((0..count).map(|_| rng.random::<u8>()));
            }
            5 if !bytes.is_empty() => {
                let from = rng.random_range(0..bytes.len());
                let to = rng.random_range(from..=bytes.len().min(from + 4096));
                let chunk = bytes[from..to].to_vec();
                bytes.splice(from..from, chunk);
            }
            _ if bytes.len() > 1 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = [0u8, 0xff, 0x7f, 0x80][rng.random_range(0..4)];
            }
            _ => {}
        }
    }
    bytes
}

fn idx_inputs() -> Vec<Vec<u8>> {
    let images = idx::encode_images(&IdxImages {
        count: 5,
        rows: 8,
        cols: 6,
        channels: 1,
        pixels: (0..240).map(|i| (i * 7) as u8).collect(),
    });
    let labels = idx::encode_labels(&[0, 1, 2, 3, 4, 9, 9, 1]);
    let mut two_members = gzip(&images[..20]);
    two_members.extend(gzip(&images[20..]));
    vec![
        images.clone(),
        labels.clone(),
        gzip(&images),
        gzip(&labels),
        two_members,
    ]
}

/// What `input` can justify allocating: its size times DEFLATE's largest ratio, plus fixed
/// buffers (a 64 KiB read buffer and the decoder's state).
fn justified_for_idx(input: &[u8]) -> usize {
    input.len() * 1040 + (1 << 20)
}

fn write_case(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("case");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `f`, reporting a panic with the case that caused it.
fn no_panic<T>(what: &str, case: usize, bytes: &[u8], f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(_) => {
            let saved = std::env::temp_dir().join(format!("mnist-cnn-fuzz-{what}-{case}"));
            let _ = std::fs::write(&saved, bytes);
            panic!(
                "{what} panicked on case {case} (seed {}); input saved to {}",
                seed(),
                saved.display()
            );
        }
    }
}

#[test]
fn idx_and_gzip_decoders_survive_mutations() {
    let inputs = idx_inputs();
    let dir = tempfile::tempdir().unwrap();
    // The counter sees the decoder's allocations (else the bound below would prove nothing).
    let valid = write_case(dir.path(), &inputs[2]);
    let (decoded, largest) = largest_allocation(|| idx::read_images(&valid).unwrap());
    assert!(largest >= decoded.0.pixels.len(), "{largest}");
    let mut rng = StdRng::seed_from_u64(seed());
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases(3000) {
        let base = &inputs[rng.random_range(0..inputs.len())];
        let bytes = mutate(base, &inputs, &mut rng);
        let path = write_case(dir.path(), &bytes);
        let limit = justified_for_idx(&bytes);
        let ((images, labels, whole, digest), largest) = largest_allocation(|| {
            no_panic("idx", case, &bytes, || {
                (
                    idx::read_images(&path).is_ok(),
                    idx::read_labels(&path).is_ok(),
                    idx::read_maybe_gzipped(&path).is_ok(),
                    idx::content_digest(&path, 1 << 20).is_ok(),
                )
            })
        });
        let in_memory = no_panic("idx in memory", case, &bytes, || {
            (
                idx::decode_images(&bytes, &path).is_ok(),
                idx::decode_labels(&bytes, &path).is_ok(),
            )
        });
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            assert_eq!(
                in_memory,
                (images, labels),
                "case {case}: memory and file agree"
            );
        }
        assert!(
            largest <= limit,
            "case {case}: allocated {largest} bytes for a {}-byte input",
            bytes.len()
        );
        if images || labels {
            accepted += 1;
        } else {
            refused += 1;
        }
        let _ = (whole, digest);
    }
    // The mutations are mild enough that some inputs stay valid, and most do not.
    assert!(
        accepted > 0 && refused > accepted,
        "{accepted} accepted, {refused} refused"
    );
}

fn picture_inputs() -> Vec<Vec<u8>> {
    let gray = image::GrayImage::from_fn(12, 10, |x, y| image::Luma([(x * 20 + y * 3) as u8]));
    let rgba = image::RgbaImage::from_fn(9, 7, |x, y| {
        image::Rgba([x as u8 * 25, y as u8 * 30, 90, 200])
    });
    let rgb = image::RgbImage::from_fn(16, 16, |x, y| {
        image::Rgb([x as u8 * 16, 255 - y as u8 * 16, 40])
    });
    let encode = |picture: image::DynamicImage, format: image::ImageFormat| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        picture.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    };
    vec![
        encode(gray.into(), image::ImageFormat::Png),
        encode(rgba.into(), image::ImageFormat::Png),
        encode(rgb.into(), image::ImageFormat::Jpeg),
    ]
}

#[test]
fn picture_loader_survives_mutations() {
    let inputs = picture_inputs();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed() ^ 0x5eed);
    let mut decoded = 0;
    for case in 0..cases(2000) {
        let base = &inputs[rng.random_range(0..inputs.len())];
        let mut bytes = mutate(base, &inputs, &mut rng);
        // Half of the cases edit the declared width or height of a PNG (IHDR at 16..24).
        if bytes.starts_with(b"\x89PNG") && bytes.len() >= 24 && rng.random_bool(0.5) {
            let at = 16 + 4 * rng.random_range(0..2);
            let value = EDGES[rng.random_range(0..EDGES.len())];
            bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
        }
        let path = write_case(dir.path(), &bytes);
        let limit = (bytes.len() * 2048 + (2 << 20)).min(520 << 20);
        let (ok, largest) = largest_allocation(|| {
            no_panic("picture", case, &bytes, || {
                let decodes = decode_file(&path, 2).is_ok();
                let _ = Pipeline::mnist(28, 28).load(&path);
                decodes
            })
        });
        assert!(
            largest <= limit,
            "case {case}: allocated {largest} bytes for a {}-byte picture",
            bytes.len()
        );
        decoded += usize::from(ok);
    }
    assert!(decoded > 0, "some mutated pictures still decode");
}

/// Model files made by Keras (tests/fixtures/keras) and by this tool, each with the
/// architecture `import-model` is told: a `.keras` zip, two HDF5 files of weights and the
/// safetensors export of one of them.
fn model_inputs() -> Vec<(Vec<u8>, Option<Architecture>)> {
    let fixture = |name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keras")
                .join(name),
        )
        .unwrap()
    };
    let weights = fixture("mlp.weights.h5");
    let dir = tempfile::tempdir().unwrap();
    let (source, run, exported) = (
        dir.path().join("w.weights.h5"),
        dir.path().join("run"),
        dir.path().join("m.safetensors"),
    );
    std::fs::write(&source, &weights).unwrap();
    let options = ImportOptions {
        architecture: Some(Architecture::Mlp),
        pixel_scale: None,
    };
    mnist_cnn::exchange::import_model(&source, &run, &options).unwrap();
    mnist_cnn::exchange::export(
        &run,
        mnist_cnn::exchange::ExportFormat::Safetensors,
        &exported,
    )
    .unwrap();
    vec![
        (fixture("other.keras"), None),
        (
            fixture("hostile/missing.weights.h5"),
            Some(Architecture::Cnn),
        ),
        (weights, Some(Architecture::Mlp)),
        (std::fs::read(&exported).unwrap(), None),
    ]
}

#[test]
fn model_file_readers_survive_mutations() {
    let inputs = model_inputs();
    let others: Vec<Vec<u8>> = inputs.iter().map(|(bytes, _)| bytes.clone()).collect();
    let mut rng = StdRng::seed_from_u64(seed() ^ 0x4d0d);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases(400) {
        let (base, architecture) = &inputs[rng.random_range(0..inputs.len())];
        let bytes = mutate(base, &others, &mut rng);
        let options = ImportOptions {
            architecture: *architecture,
            pixel_scale: None,
        };
        // DEFLATE's ratio for a compressed zip entry, and the reader's fixed buffers.
        let limit = bytes.len() * 1040 + (16 << 20);
        let (ok, largest) = largest_allocation(|| {
            no_panic("model file", case, &bytes, || {
                read_model_bytes(bytes.clone(), &options).is_ok()
            })
        });
        assert!(
            largest <= limit,
            "case {case}: allocated {largest} bytes for a {}-byte model file",
            bytes.len()
        );
        if ok {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

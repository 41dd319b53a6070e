//! Training throughput on one thread and on several, measured in alternation within one
//! process: what `bench --threads 1` and `bench --threads N` measure, but taken turn by turn, so
//! that a machine whose speed drifts (a busy host, a virtual machine's slow phases) slows both
//! sides of each pair alike. Prints every measurement, then each side's best and median and the
//! median of the pairs' ratios: the figure for "N threads give k times one thread".
//!
//! Usage: `cargo run --release --example thread_scaling [ROUNDS] [THREADS] [IMAGES]`
//! (defaults 6 rounds, 2 threads, 25,600 images per measurement) from the repository root,
//! which ships MNIST in `data/mnist`.

use std::path::Path;

use anyhow::Context;
use mnist_cnn::backend::{BackendKind, Subnormals, keep_freed_pages, pool_builder};
use mnist_cnn::bench::train_throughput;
use mnist_cnn::data::{SplitKind, load_split};
use mnist_cnn::model::Architecture;

// The binary's allocator and its setting (see `src/main.rs`): measured without them, training
// runs about a third slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // SAFETY: this runs first thing in `main`, before any other thread exists.
    unsafe { keep_freed_pages() };
    let argument = |index: usize, default: usize| -> anyhow::Result<usize> {
        std::env::args().nth(index).map_or(Ok(default), |value| {
            value
                .parse()
                .with_context(|| format!("argument {index} is not a count: {value:?}"))
        })
    };
    let (rounds, threads, images) = (argument(1, 6)?, argument(2, 2)?, argument(3, 25_600)?);
    anyhow::ensure!(
        rounds > 0 && threads > 1 && images > 0,
        "nothing to measure"
    );
    let data = load_split(Path::new("data/mnist"), SplitKind::Train)?;
    let pools = [1, threads]
        .map(|count| pool_builder(Some(count), Subnormals::Flush).build())
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let measure = |pool: &rayon::ThreadPool| {
        pool.install(|| {
            train_throughput(Architecture::Cnn, BackendKind::Flex, &data, 128, images)
                .images_per_second
        })
    };
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Which side goes first alternates too.
        let (first, second) = if round % 2 == 1 { (0, 1) } else { (1, 0) };
        let mut rates = [0.0; 2];
        rates[first] = measure(&pools[first]);
        rates[second] = measure(&pools[second]);
        println!(
            "round {round}: 1 thread {:.0} img/s, {threads} threads {:.0} img/s, ratio {:.3}",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
        one.push(rates[0]);
        many.push(rates[1]);
    }
    let ratios: Vec<f64> = one
        .iter()
        .zip(&many)
        .map(|(one, many)| many / one)
        .collect();
    println!(
        "1 thread: best {:.0}, median {:.0} img/s",
        best(&one),
        median(&one)
    );
    println!(
        "{threads} threads: best {:.0}, median {:.0} img/s",
        best(&many),
        median(&many)
    );
    println!(
        "scaling: median of the rounds' ratios {:.3}, best against best {:.3}",
        median(&ratios),
        best(&many) / best(&one)
    );
    Ok(())
}

fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

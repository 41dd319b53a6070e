use std::process::ExitCode;

use clap::Parser;
use mnist_cnn::cli::{Cli, run};

// Training allocates and frees large tensors at a high rate; mimalloc reuses them instead of
// returning pages to the kernel and faulting them back in (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the cause chain on one line: "context: cause: root cause".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

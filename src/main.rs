use std::process::ExitCode;

use clap::Parser;
use mnist_cnn::cli::{Cli, run};

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

//! The command line: parsing (clap derive) and dispatch to the library, plus printing. Each
//! subcommand's arguments and its `run_*` function live in the file of its concern; range
//! checks are clap value parsers (see [`values`]), so every bad value fails alike, with exit
//! status 2 and clap's message.

mod data;
mod exchange;
mod hints;
mod inspect;
mod model;
mod runs;
mod serve;
mod train;
mod values;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use mnist_cnn::backend;

pub use hints::hint;

const DEFAULT_DATA_DIR: &str = "data/mnist";
const DATA_DIR_ENV: &str = "MNIST_DATA_DIR";

/// Download, inspect, train and evaluate the classic MNIST CNN, natively with burn on the CPU.
#[derive(Debug, Parser)]
#[command(name = "mnist-cnn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Directory holding the four MNIST IDX files (gzipped or raw) [default: data/mnist, or
    /// $MNIST_DATA_DIR when set and not empty]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print nothing but errors (and the JSON result with --json)
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print a machine-readable JSON result on stdout instead of the human summary
    #[arg(long, global = true)]
    pub json: bool,
    /// Number of CPU threads for tensor work [default: all cores]
    #[arg(long, global = true, value_name = "N", value_parser = values::threads)]
    pub threads: Option<usize>,
    /// Keep subnormal floats (gradual underflow) instead of flushing them to zero; slower on
    /// many CPUs as training goes on, and only needed to reproduce IEEE-exact results
    #[arg(long, global = true)]
    pub keep_subnormals: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the four gzipped MNIST files from mirrors and verify their checksums
    Download(data::DownloadArgs),
    /// Draw one image as a heatmap PNG and print its label
    Heatmap(data::HeatmapArgs),
    /// Train the network, saving weights, history and accuracy/loss plots
    Train(train::TrainArgs),
    /// Test-set loss and accuracy, per-class metrics and a confusion matrix
    Evaluate(model::EvaluateArgs),
    /// Classify your own digit pictures, or an image of the data set
    Predict(model::PredictArgs),
    /// Measure training and evaluation speed per backend and batch size on real MNIST
    Bench(model::BenchArgs),
    /// Turn folders of labelled images into an IDX data set that every command can use
    Import(data::ImportArgs),
    /// Pictures (or with --json the numbers) of every layer of the network for one image
    Inspect(inspect::InspectArgs),
    /// A local web page: draw digits, browse the test set, watch training, see every layer
    Serve(serve::ServeArgs),
    /// List the runs in runs/ (newest first), compare their curves, remove one
    Runs(runs::RunsArgs),
    /// Turn a Keras model (.keras, .h5, .weights.h5) or a safetensors file into a run
    ImportModel(exchange::ImportModelArgs),
    /// Write a run's model as ONNX or as safetensors for PyTorch
    Export(exchange::ExportArgs),
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Download(_) => "download",
            Command::Heatmap(_) => "heatmap",
            Command::Train(_) => "train",
            Command::Evaluate(_) => "evaluate",
            Command::Predict(_) => "predict",
            Command::Bench(_) => "bench",
            Command::Import(_) => "import",
            Command::Inspect(_) => "inspect",
            Command::Serve(_) => "serve",
            Command::Runs(_) => "runs",
            Command::ImportModel(_) => "import-model",
            Command::Export(_) => "export",
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(threads) = cli.global.threads {
        warn_about_oversubscription(threads, cli.global.quiet);
    }
    let subnormals = if cli.global.keep_subnormals {
        backend::Subnormals::Keep
    } else {
        backend::Subnormals::Flush
    };
    backend::set_threads(cli.global.threads, subnormals)?;
    // `download` fills the directory it is given or the local default; the other commands
    // also fall back to the data shipped with the sources.
    let given = cli.global.data_dir.clone().or_else(|| {
        std::env::var_os(DATA_DIR_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    });
    let data_dir = match (&cli.command, given) {
        (_, Some(given)) => given,
        (Command::Download(_), None) => PathBuf::from(DEFAULT_DATA_DIR),
        (_, None) => default_data_dir(),
    };
    let session = Session {
        data_dir,
        quiet: cli.global.quiet,
        json: cli.global.json,
    };
    let command = match cli.command {
        Command::Serve(args) => return serve::run_serve(&session, args),
        command => command,
    };
    backend::on_compute_pool(|| match command {
        Command::Download(args) => data::run_download(&session, args),
        Command::Heatmap(args) => data::run_heatmap(&session, args),
        Command::Import(args) => data::run_import(&session, args),
        Command::Train(args) => train::run_train(&session, args),
        Command::Evaluate(args) => model::run_evaluate(&session, args),
        Command::Predict(args) => model::run_predict(&session, args),
        Command::Bench(args) => model::run_bench(&session, args),
        Command::Inspect(args) => inspect::run_inspect(&session, args),
        Command::Serve(args) => serve::run_serve(&session, args),
        Command::Runs(args) => runs::run_runs(&session, args),
        Command::ImportModel(args) => exchange::run_import_model(&session, args),
        Command::Export(args) => exchange::run_export(&session, args),
    })
}

/// More threads than cores only adds memory and switching (2.2 GB and 100x the time were
/// measured for 1000 threads on 2 cores), so say so; the user may have a reason.
fn warn_about_oversubscription(threads: usize, quiet: bool) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if threads > 4 * cores && !quiet {
        eprintln!(
            "warning: {threads} threads on {}; more threads than cores make every step slower",
            counted(cores, "core")
        );
    }
}

/// "1 thread", "2 threads".
pub(crate) fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

pub(crate) struct Session {
    pub data_dir: PathBuf,
    pub quiet: bool,
    pub json: bool,
}

impl Session {
    /// Whether to print the human summary on stdout.
    pub fn human(&self) -> bool {
        !self.quiet && !self.json
    }

    pub fn show_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    pub fn print_json(&self, value: &impl serde::Serialize) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(())
    }
}

/// The default data directory is relative to where the tool runs; a checkout run from
/// elsewhere falls back to the data shipped beside its sources.
fn default_data_dir() -> PathBuf {
    let local = PathBuf::from(DEFAULT_DATA_DIR);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DATA_DIR);
    if !local.is_dir() && shipped.is_dir() {
        shipped
    } else {
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help() {
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(
                        arg.get_help().is_some(),
                        "{} --{id} has no help",
                        command.get_name()
                    );
                }
            }
            command.get_subcommands().for_each(check);
        }
        check(&Cli::command());
    }
}

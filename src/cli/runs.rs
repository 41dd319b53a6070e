//! `runs`: the table of runs, `runs compare` and `runs rm`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use mnist_cnn::fsutil::sweep_stale_temporaries;
use mnist_cnn::run::RunInfo;
use mnist_cnn::run::catalog::{self, RunEntry};

use super::{Session, values};

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The folder of runs
    #[arg(long, default_value = catalog::RUNS_DIR, value_name = "DIR", global = true)]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub action: Option<RunsAction>,
}

#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// Draw the accuracy and loss curves of runs over each other, with a legend
    Compare(CompareArgs),
    /// Remove a run's folder (refused while a training run writes it)
    Rm(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Runs to compare: names of runs in the folder of runs (latest too), or folders
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write
    #[arg(long, short, value_name = "FILE.png", value_parser = values::png_path)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The run: its name in the folder of runs, or its folder
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
}

pub(crate) fn run_runs(session: &Session, args: RunsArgs) -> Result<()> {
    // What an interrupted `runs rm` left is removed first.
    sweep_stale_temporaries(&args.dir);
    match args.action {
        None => list(session, &args.dir),
        Some(RunsAction::Compare(compare)) => run_compare(session, &args.dir, compare),
        Some(RunsAction::Rm(remove)) => run_remove(session, &args.dir, &remove.run),
    }
}

/// The run folder a name or path means, with its name as the runs folder knows it.
fn find(root: &Path, run: &Path) -> (PathBuf, String) {
    let dir = catalog::pin(&catalog::find_in(root, run));
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    (dir, name)
}

fn list(session: &Session, root: &Path) -> Result<()> {
    let entries = catalog::list_runs(root);
    session.print_json(&json!({ "dir": root, "runs": entries }))?;
    if !session.human() {
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "no runs in {}: `mnist-cnn train` makes one there",
            root.display()
        );
        return Ok(());
    }
    print!("{}", table(&entries));
    if entries.iter().any(|e| e.latest) {
        println!("* {}/{}", root.display(), catalog::LATEST);
    }
    if entries
        .iter()
        .any(|e| e.summary.as_ref().is_some_and(|s| s.test_accuracy_stale))
    {
        println!("~ evaluated before the run's last epoch");
    }
    Ok(())
}

/// The runs as an aligned table, one line per entry; entries that are no readable run say why.
fn table(entries: &[RunEntry]) -> String {
    const HEADER: [&str; 10] = [
        "name",
        "started (UTC)",
        "model",
        "data",
        "epochs",
        "best val_acc",
        "test acc",
        "time",
        "backend",
        "options",
    ];
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let mark = if entry.latest { "* " } else { "  " };
            let name = format!("{mark}{}", entry.name);
            let Some(run) = &entry.summary else {
                let problem = entry.problem.clone().unwrap_or_default();
                return vec![name, format!("({problem})")];
            };
            let running = if entry.running { " running" } else { "" };
            vec![
                name,
                run.started.clone().unwrap_or_else(|| "-".into()),
                run.model.to_string(),
                run.data.clone(),
                format!("{}/{}{running}", run.completed_epochs, run.epochs),
                run.best_val_accuracy.map_or("-".into(), |accuracy| {
                    format!("{accuracy:.4} (e{})", run.best_val_epoch.unwrap_or(0))
                }),
                run.test_accuracy.map_or("-".into(), |accuracy| {
                    let stale = if run.test_accuracy_stale { "~" } else { "" };
                    format!("{accuracy:.4}{stale}")
                }),
                duration(run.train_seconds),
                run.backend.to_string(),
                run.options.join(" "),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len() + 2).collect();
    widths[0] += 2;
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count() + 2);
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text += cell;
            } else {
                text += &format!("{cell:<width$}", width = widths[i]);
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let header: Vec<String> = std::iter::once(format!("  {}", HEADER[0]))
        .chain(HEADER[1..].iter().map(|h| h.to_string()))
        .collect();
    let mut out = line(&header);
    for row in &rows {
        out += &line(row);
    }
    out
}

/// `28.1s`, `3m05s`, `1h02m`.
fn duration(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    }
}

fn run_compare(session: &Session, root: &Path, args: CompareArgs) -> Result<()> {
    let mut runs = Vec::new();
    for run in &args.runs {
        let (dir, name) = find(root, run);
        let info = RunInfo::load(&dir)?;
        runs.push((name, info.history));
    }
    catalog::compare_chart(&args.output, &runs)?;
    if session.human() {
        println!("wrote {}", args.output.display());
    }
    session.print_json(&json!({
        "output": args.output,
        "runs": runs.iter().map(|(name, _)| name).collect::<Vec<_>>(),
    }))
}

fn run_remove(session: &Session, root: &Path, run: &Path) -> Result<()> {
    let (dir, _) = find(root, run);
    if !dir.exists() {
        bail!(
            "no run {} in {} (`mnist-cnn runs` lists them)",
            run.display(),
            root.display()
        );
    }
    catalog::remove_run(&dir)?;
    if session.human() {
        println!("removed {}", dir.display());
    }
    session.print_json(&json!({ "removed": dir }))
}

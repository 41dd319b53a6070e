//! `serve`: the local web page (see `mnist_cnn::serve`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{Limits, ServeOptions, Server, exposure_warning};

use super::{Session, values};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of a trained model, or of a run `train` is writing (reloaded every epoch), or
    /// the name of a run in runs/; on runs/latest the page follows each new run
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Address to listen on; anything but loopback makes the page reachable from other machines
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Let the page save drawings as DIR/<class>/*.png, the layout `import` reads
    #[arg(long, value_name = "DIR")]
    pub collect: Option<PathBuf>,
    /// Most files the --collect folder may hold, counting those already there (then saving
    /// answers 507)
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub collect_max_files: u64,
    /// Most megabytes (10^6 bytes) the --collect folder's pictures may take, counting those
    /// already there (then saving answers 507)
    #[arg(long, default_value_t = 100, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub collect_max_mb: u64,
    /// Another host name the page may be opened by (repeatable), e.g. this machine's name on
    /// the local network with --host 0.0.0.0; requests naming other hosts are refused, as a
    /// defence against DNS rebinding (localhost and the listening address always work)
    #[arg(long, value_name = "NAME", value_parser = values::host_name)]
    pub allow_host: Vec<String>,
    /// Backend of burn to predict on
    #[arg(long, value_parser = values::choice::<BackendKind>(), default_value = BackendKind::Flex.name())]
    pub backend: BackendKind,
}

/// Serves until the process is interrupted. Runs outside the compute pool: the server hands
/// each request's work to the pool and must not occupy one of its threads while it waits.
pub(crate) fn run_serve(session: &Session, mut args: ServeArgs) -> Result<()> {
    // Not pinned: on runs/latest the page follows each new run.
    args.model_dir = mnist_cnn::run::catalog::watched_run_dir(&args.model_dir);
    let server = Server::start(ServeOptions {
        model_dir: args.model_dir.clone(),
        data_dir: session.data_dir.clone(),
        host: args.host,
        port: args.port,
        collect: args.collect.clone(),
        backend: args.backend,
        allowed_hosts: args.allow_host.clone(),
        limits: Limits {
            collect_max_files: args.collect_max_files,
            collect_max_bytes: args.collect_max_mb.saturating_mul(1_000_000),
            ..Limits::default()
        },
    })?;
    if let Some(warning) = exposure_warning(server.address(), args.collect.is_some()) {
        eprintln!("{warning}");
    }
    if !server.has_model() && !session.quiet {
        eprintln!(
            "warning: no trained model in {} yet; the page starts predicting when \
             `mnist-cnn train --out {}` has finished an epoch",
            args.model_dir.display(),
            args.model_dir.display()
        );
    }
    // The address goes to stdout even with --quiet: scripts read it (with --port 0 above all).
    println!("listening on {}", server.url());
    server.wait()?;
    Ok(())
}

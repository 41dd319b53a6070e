//! `serve`: the local web page (see `mnist_cnn::serve`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::serve::{ServeOptions, Server, exposure_warning};

use super::Session;

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
    /// Backend of burn to predict on
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
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

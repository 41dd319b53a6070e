//! The `mnist-cnn` binary: parses the command line and hands each subcommand to the library
//! (see `cli`). Errors are printed as one `error:` line with a hint where one helps.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, hint, run};

// Training allocates and frees large tensors at a high rate; mimalloc reuses them instead of
// returning pages to the kernel and faulting them back in (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`| head`),
    // instead of Rust's default of panicking on the next print.
    #[cfg(unix)]
    // SAFETY: `SIG_DFL` installs no handler, so no code of ours runs in signal context, where
    // only async-signal-safe calls would be allowed; and this runs first thing in `main`, before
    // any other thread exists that could change or depend on the disposition concurrently.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // SAFETY: no other thread exists yet: parsing the command line starts none.
    unsafe {
        // A server left running gives the memory of a burst of uploads back (RELIABILITY.md).
        if cli.command.name() == "serve" {
            mnist_cnn::backend::return_freed_pages_at_once();
        } else {
            mnist_cnn::backend::keep_freed_pages();
        }
    }
    #[cfg(unix)]
    remove_temporaries_on_signals();
    let command = cli.command.name();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the cause chain on one line: "context: cause: root cause".
            match hint(&error, command) {
                Some(hint) => eprintln!("error: {error:#}; {hint}"),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// On SIGINT or SIGTERM, removes the temporary files and staging folders this process has in
/// flight (a download's partial file, say), then dies of the same signal, so that the shell
/// reports 130 or 143 as usual. Committed files are never temporaries: a checkpoint or data set
/// already in place stays.
#[cfg(unix)]
fn remove_temporaries_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        // Without the handler the signals keep their default action: only the cleanup is lost.
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            mnist_cnn::fsutil::remove_temporaries();
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
}

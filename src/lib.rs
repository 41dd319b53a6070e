//! mnist-cnn: download, inspect, train and evaluate the classic MNIST CNN with burn.
//!
//! Data flows one way: [`data`] (IDX decoding, download, import, batching) -> [`model`] (the
//! networks and their fused [`kernels`]) -> [`train`] (the loop, writing a [`run`]: manifest,
//! history, checkpoints) -> [`evaluate`] (metrics) -> [`plot`] (PNG drawing). [`predict`] and
//! [`bench`] use trained or fresh networks. The command line (`src/main.rs`, `src/cli/`) is a
//! client of this library; ARCHITECTURE.md maps the modules.

pub mod backend;
pub mod bench;
pub mod choice;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod fsutil;
pub mod inspect;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod predict;
pub mod run;
pub mod serve;
pub mod train;

pub use error::{Error, Result};

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The command line's crates are optional dependencies of the `cli` feature, for the binary
    /// alone; this keeps the library's sources from naming them (a build with
    /// `--no-default-features` would fail, but rebuilds burn, so CI does not run it).
    #[test]
    fn the_library_uses_no_command_line_crate() {
        fn visit(dir: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if !path.ends_with("cli") {
                        visit(&path, found);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("main.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (number, line) in text.lines().enumerate() {
                        let code = line.trim_start();
                        let named = ["clap", "indicatif", "anyhow", "signal_hook"]
                            .iter()
                            .any(|name| code.contains(&format!("{name}::")));
                        if named && !code.starts_with("//") {
                            found.push(format!("{}:{}: {line}", path.display(), number + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        visit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.is_empty(), "{found:#?}");
    }
}

//! `thruster-tune`: host checks (`check`), the safe tuning and its undo (`apply`, `undo`), and
//! the disk probe whose `io-properties.json` the broker reads at start (`probe`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use thruster_tuning::check::{self, Verdict};
use thruster_tuning::host::Host;
use thruster_tuning::io_properties::Figure;
use thruster_tuning::{apply, probe};

#[derive(Parser)]
#[command(
    name = "thruster-tune",
    about = "Check and tune a host for the Thruster broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report each host property with the recommended value and a verdict.
    Check {
        #[command(flatten)]
        host: HostArgs,
        /// One JSON array of items instead of the table.
        #[arg(long)]
        json: bool,
        /// Exit with 2 when an item should be tuned.
        #[arg(long)]
        strict: bool,
    },
    /// Apply the safe subset (sysctls, I/O scheduler, nr_requests, governor, IRQ affinity),
    /// recording the previous values for `undo`.
    Apply {
        #[command(flatten)]
        host: HostArgs,
        /// List the changes without making them.
        #[arg(long)]
        dry_run: bool,
        /// The record of previous values (default: <root>/var/lib/thruster-tune/applied.json).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Restore the values an `apply` changed.
    Undo {
        /// Directory standing for `/` (tests use a fake /sys and /proc).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Measure the store's file system and write io-properties.json into the store directory.
    Probe {
        /// The broker's store directory (storePathRootDir).
        #[arg(long)]
        dir: PathBuf,
        /// About how long the probe runs, seconds.
        #[arg(long, default_value_t = 60.0)]
        budget_s: f64,
    },
}

#[derive(Args)]
struct HostArgs {
    /// Directory standing for `/` (tests use a fake /sys and /proc).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The broker's store directory (storePathRootDir).
    #[arg(long, default_value = "data/store")]
    dir: PathBuf,
    /// The broker's shards (default: one per available core, as the broker's).
    #[arg(long)]
    shards: Option<usize>,
    /// mappedFileSizeCommitLog, bytes.
    #[arg(long, default_value_t = 1 << 30)]
    segment_bytes: u64,
}

impl HostArgs {
    fn items(&self) -> (Host, Vec<check::Item>) {
        let host = Host::new(&self.root);
        let options = check::Options {
            store_dir: self.dir.clone(),
            shards: self
                .shards
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            segment_bytes: self.segment_bytes,
        };
        let items = check::run(&host, &options);
        (host, items)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("thruster-tune: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Check { host, json, strict } => {
            let (_, items) = host.items();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&items).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", check::render(&items));
            }
            let to_tune = items.iter().any(|i| i.verdict == Verdict::Tune);
            Ok(if strict && to_tune {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Apply {
            host: args,
            dry_run,
            state,
        } => {
            let (host, items) = args.items();
            let state = state.unwrap_or_else(|| apply::default_state_path(&host));
            let (changes, refused) = if dry_run {
                (apply::planned(&host, &items), Vec::new())
            } else {
                let applied = apply::apply(&host, &items, &state)?;
                (applied.changes, applied.refused)
            };
            for refusal in &refused {
                eprintln!("refused by the kernel, left as it was: {refusal}");
            }
            let verb = if dry_run { "would set" } else { "set" };
            for c in &changes {
                println!(
                    "{verb} {} = {} (was {}) [{}]",
                    c.path, c.value, c.previous, c.item
                );
            }
            if changes.is_empty() {
                println!("nothing to change");
            } else if !dry_run {
                println!("previous values recorded in {}", state.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Undo { root, state } => {
            let host = Host::new(root);
            let state = state.unwrap_or_else(|| apply::default_state_path(&host));
            for c in apply::undo(&host, &state)? {
                println!("restored {} = {} [{}]", c.path, c.previous, c.item);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { dir, budget_s } => run_probe(dir, budget_s),
    }
}

fn run_probe(dir: PathBuf, budget_s: f64) -> Result<ExitCode, String> {
    if !(budget_s > 0.0 && budget_s.is_finite()) {
        return Err(format!(
            "--budget-s {budget_s}: must be a positive number of seconds"
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    println!(
        "{:<22} {:>8} {:>3} {:>10} {:>9} {:>8} {:>8} {:>8}",
        "KIND", "BLOCK", "QD", "OPS/S", "MB/S", "P50_US", "P99_US", "P999_US"
    );
    let print = |f: &Figure| {
        println!(
            "{:<22} {:>7}K {:>3} {:>10.0} {:>9.1} {:>8} {:>8} {:>8}",
            f.kind.name(),
            f.block_bytes >> 10,
            f.queue_depth,
            f.ops_per_s,
            f.mb_per_s,
            f.p50_us,
            f.p99_us,
            f.p999_us
        )
    };
    let properties = probe::run(&dir, budget_s, &mut { print })
        .map_err(|e| format!("probing {}: {e}", dir.display()))?;
    properties.write(&dir)?;
    let settings = properties.store_settings()?;
    println!(
        "store settings: chunk_bytes={} writes_in_flight_max={} group_commit_bytes={}",
        settings.chunk_bytes, settings.writes_in_flight_max, settings.group_commit_bytes
    );
    println!(
        "wrote {}",
        thruster_tuning::io_properties::IoProperties::path_in(&dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

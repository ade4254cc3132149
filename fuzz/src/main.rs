//! `thruster-fuzz`: runs the fuzz targets (see the library docs).
//!
//!   thruster-fuzz run [--target NAME] [--seconds S] [--inputs N] [--seed S]
//!   thruster-fuzz replay TARGET HEX

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use thruster_fuzz::{run, unhex, TARGETS};

#[derive(Parser)]
#[command(
    name = "thruster-fuzz",
    about = "Mutation fuzzing of Thruster's decoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every target (or one) for a time or a number of inputs, each.
    Run {
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = u64::MAX)]
        inputs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Runs one input (hex) through a target, as reported by a failed run.
    Replay { target: String, hex: String },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            target,
            seconds,
            inputs,
            seed,
        } => {
            let chosen: Vec<_> = TARGETS
                .iter()
                .filter(|t| target.as_deref().is_none_or(|n| n == t.name))
                .collect();
            if chosen.is_empty() {
                eprintln!("thruster-fuzz: no target named {target:?}");
                return ExitCode::FAILURE;
            }
            for t in chosen {
                let started = Instant::now();
                let deadline = started + Duration::from_secs_f64(seconds);
                let stats = run(t, seed, inputs, deadline);
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "{:<10} {:>12} inputs in {secs:>6.1} s ({:>9.0}/s), {:>10} accepted, no panic",
                    t.name,
                    stats.inputs,
                    stats.inputs as f64 / secs,
                    stats.accepted
                );
            }
            ExitCode::SUCCESS
        }
        Command::Replay { target, hex } => {
            let Some(t) = TARGETS.iter().find(|t| t.name == target) else {
                eprintln!("thruster-fuzz: no target named {target:?}");
                return ExitCode::FAILURE;
            };
            let Some(input) = unhex(&hex) else {
                eprintln!("thruster-fuzz: not hex");
                return ExitCode::FAILURE;
            };
            println!("accepted: {}", (t.run)(&input));
            ExitCode::SUCCESS
        }
    }
}

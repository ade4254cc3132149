//! `thruster-bench`: load generator and latency tool for any RocketMQ-protocol broker.
//!
//! Workloads run against a name server address, so the same run can drive Thruster, Apache
//! RocketMQ or rocketmq-rust; `compare` alternates targets (A B A B …) and reports per-round
//! ratios and their median, the only figures that mean something on a noisy machine.

mod cpu;
mod disk;
mod stats;
mod svg;
mod workloads;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use stats::Summary;
use workloads::{Common, ProduceArgs, RunResult, SendMode};

#[derive(Parser)]
#[command(
    name = "thruster-bench",
    version,
    about = "Latency and throughput of RocketMQ-protocol brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Producers sending to a topic (closed loop, or open loop with --rate).
    Produce(ProduceCli),
    /// Consumers reading a topic's backlog from the start (catch-up), or from the tail.
    Consume(ConsumeCli),
    /// Produce at a fixed rate and consume from the tail: send-to-receive latency.
    E2e(ProduceCli),
    /// The disk's own limits with the broker's I/O pattern.
    Disk(DiskCli),
    /// The same workload against several targets in turn, several rounds: ratios.
    Compare(CompareCli),
}

#[derive(Args, Clone)]
struct TargetCli {
    /// Name server of the broker under test.
    #[arg(long, default_value = "127.0.0.1:9876")]
    namesrv: String,
    #[arg(long, default_value = "BenchTopic")]
    topic: String,
    /// Message body size, bytes.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Generator threads (glommio reactors).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin generator thread i to CPU cpus[i] (comma-separated).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Run length, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Stop after this many messages instead (all threads).
    #[arg(long)]
    messages: Option<u64>,
    /// Where to write the .hgrm, JSON summary and SVG plot.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Label of this run in outputs.
    #[arg(long)]
    label: Option<String>,
    /// Route like any RocketMQ client: ignore a Thruster broker's shard map (one-name mode
    /// advertises one), so requests go wherever the name server's routes say.
    #[arg(long)]
    plain: bool,
    /// The broker's process id: report its CPU (from /proc) per message over the run.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Messages a consumer asks for per pull (`maxMsgNums`; the broker caps it with its
    /// `maxTransfer*` limits).
    #[arg(long, default_value_t = 32)]
    pull_batch: usize,
}

#[derive(Args, Clone)]
struct ConsumeCli {
    #[command(flatten)]
    target: TargetCli,
    /// Start at the end of each queue and long-poll for the whole run (instead of reading the
    /// backlog from offset 0 until caught up).
    #[arg(long)]
    from_tail: bool,
}

#[derive(Args, Clone)]
struct ProduceCli {
    #[command(flatten)]
    target: TargetCli,
    #[arg(long, value_enum, default_value_t = SendMode::Sync)]
    mode: SendMode,
    /// Concurrent producers per thread.
    #[arg(long, default_value_t = 16)]
    producers: usize,
    /// Outstanding sends per producer in async mode.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Messages per send (batch when > 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Open loop at this many messages/s (latency from the intended send time).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    keys: bool,
    #[arg(long)]
    tags: bool,
    /// Spread messages over this many topics (`<topic>-0` …), each with the broker's
    /// auto-created queues.
    #[arg(long, default_value_t = 1)]
    topics: usize,
}

#[derive(Args, Clone)]
struct DiskCli {
    /// Directory on the disk to measure (a broker's store directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Sequential O_DIRECT block (the CommitLog chunk).
    #[arg(long, default_value_t = 256 * 1024)]
    block_bytes: usize,
    #[arg(long, default_value_t = 512 << 20)]
    total_bytes: u64,
    /// Write+fdatasync size (a group commit).
    #[arg(long, default_value_t = 64 * 1024)]
    sync_bytes: usize,
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct CompareCli {
    /// Targets as NAME=NAMESRV or NAME=NAMESRV@BROKER_PID (then the broker's CPU per message
    /// is reported), two or more; the first is the one ratios are about.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// produce, consume or e2e.
    #[arg(long, default_value = "produce")]
    workload: String,
    #[command(flatten)]
    produce: ProduceCli,
}

fn main() {
    let cli = Cli::parse();
    // Name server addresses are checked here, once, so the generator threads can rely on them.
    let addresses: Vec<&str> = match &cli.command {
        Command::Produce(a) | Command::E2e(a) => vec![a.target.namesrv.as_str()],
        Command::Consume(a) => vec![a.target.namesrv.as_str()],
        Command::Compare(a) => a
            .targets
            .iter()
            .filter_map(|t| parse_target(t).ok().map(|t| t.namesrv))
            .collect(),
        Command::Disk(_) => Vec::new(),
    };
    for addr in addresses {
        if let Err(error) = thruster_client::core::config::ClientConfig::new(addr) {
            eprintln!("thruster-bench: {error}");
            std::process::exit(2);
        }
    }
    let result = match cli.command {
        Command::Produce(args) => run_and_report("produce", &args, |progress| {
            run_produce(&produce_args(&args), progress)
        }),
        Command::Consume(args) => run_and_report_target("consume", &args.target, |progress| {
            workloads::consume(&common(&args.target), args.from_tail, progress)
        }),
        Command::E2e(args) => run_and_report("e2e", &args, |progress| {
            workloads::e2e(&produce_args(&args), progress).map(|(_, consumer)| consumer)
        }),
        Command::Disk(args) => run_disk(&args),
        Command::Compare(args) => run_compare(&args),
    };
    if let Err(error) = result {
        eprintln!("thruster-bench: {error}");
        std::process::exit(1);
    }
}

fn common(args: &TargetCli) -> Common {
    Common {
        namesrv: args.namesrv.clone(),
        topic: args.topic.clone(),
        message_bytes: args.message_bytes,
        threads: args.threads.max(1),
        cpus: args.cpus.clone(),
        duration: Duration::from_secs_f64(args.duration_s),
        operations: args.messages,
        plain: args.plain,
        pull_batch: args.pull_batch.max(1),
    }
}

fn produce_args(args: &ProduceCli) -> ProduceArgs {
    ProduceArgs {
        common: common(&args.target),
        mode: args.mode,
        producers: args.producers,
        in_flight: args.in_flight,
        batch: args.batch,
        rate: args.rate,
        keys: args.keys,
        tags: args.tags,
        topics: args.topics,
    }
}

fn run_produce(args: &ProduceArgs, progress: &Arc<AtomicU64>) -> std::io::Result<RunResult> {
    workloads::produce(args, progress)
}

/// Runs with a live progress line, then prints the table and writes the files.
fn run_and_report(
    name: &str,
    args: &ProduceCli,
    run: impl FnOnce(&Arc<AtomicU64>) -> std::io::Result<RunResult>,
) -> Result<(), String> {
    run_and_report_target(name, &args.target, run)
}

fn run_and_report_target(
    name: &str,
    target: &TargetCli,
    run: impl FnOnce(&Arc<AtomicU64>) -> std::io::Result<RunResult>,
) -> Result<(), String> {
    let label = target.label.clone().unwrap_or_else(|| name.to_owned());
    let (summary, histogram) = measure(&label, target.broker_pid, run)?;
    println!("{}\n{}", Summary::table_header(), summary.table_row());
    if let Some(out) = &target.out {
        write_outputs(out, &[(summary, histogram)], name)?;
    }
    Ok(())
}

/// Runs one workload with a progress bar; returns its summary and histogram, with the broker's
/// CPU per operation when its pid is given.
fn measure(
    label: &str,
    broker_pid: Option<u32>,
    run: impl FnOnce(&Arc<AtomicU64>) -> std::io::Result<RunResult>,
) -> Result<(Summary, Histogram<u64>), String> {
    let broker_cpu =
        |pid: u32| cpu::process_cpu_time(pid).map_err(|e| format!("broker pid {pid}: {e}"));
    let broker_before = broker_pid.map(broker_cpu).transpose()?;
    let started = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"),
    );
    let ticker = {
        let (progress, done, bar, label) = (
            progress.clone(),
            done.clone(),
            bar.clone(),
            label.to_owned(),
        );
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = (Instant::now(), 0u64);
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(250));
                let count = progress.load(Ordering::Relaxed);
                let rate = (count - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), count);
                bar.set_message(format!(
                    "{label}: {count} messages, {rate:.0}/s now, {:.0}/s mean",
                    count as f64 / start.elapsed().as_secs_f64()
                ));
                bar.tick();
            }
        })
    };
    let result = run(&progress);
    done.store(true, Ordering::Release);
    let _ = ticker.join();
    bar.finish_and_clear();
    let result = result.map_err(|e| e.to_string())?;
    let mut summary = Summary::new(
        label,
        &result.histogram,
        result.errors,
        result.bytes,
        result.elapsed,
    );
    summary.generator_cores = result.cpu_cores;
    summary.generator_saturated = result.saturated;
    if let (Some(pid), Some(before)) = (broker_pid, broker_before) {
        // The whole run, its warm-up sends included: a slight overestimate per message.
        let spent = broker_cpu(pid)?.saturating_sub(before);
        summary.broker_cpu_us_per_op =
            Some(spent.as_secs_f64() * 1e6 / summary.operations.max(1) as f64);
        summary.broker_cores = Some(spent.as_secs_f64() / started.elapsed().as_secs_f64());
    }
    Ok((summary, result.histogram))
}

fn write_outputs(
    out: &Path,
    runs: &[(Summary, Histogram<u64>)],
    title: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let write = |name: String, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    let mut series = Vec::new();
    for (i, (summary, histogram)) in runs.iter().enumerate() {
        let file = summary
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
        write(format!("{file}-{i}.hgrm"), stats::hgrm(histogram))?;
        series.push((summary.name.clone(), stats::percentile_points(histogram)));
    }
    let summaries: Vec<&Summary> = runs.iter().map(|r| &r.0).collect();
    write(
        "summary.json".into(),
        serde_json::to_string_pretty(&summaries).expect("summaries serialize"),
    )?;
    write(
        "percentiles.svg".into(),
        svg::percentile_plot(title, &series),
    )?;
    println!(
        "wrote {}/{{*.hgrm,summary.json,percentiles.svg}}",
        out.display()
    );
    Ok(())
}

fn run_disk(args: &DiskCli) -> Result<(), String> {
    let seq = disk::sequential_writes(&args.dir, args.block_bytes, args.total_bytes)
        .map_err(|e| e.to_string())?;
    let sync = disk::synced_writes(
        &args.dir,
        args.sync_bytes,
        64 << 20,
        Duration::from_secs_f64(args.duration_s),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "{}\n{}\n{}",
        Summary::table_header(),
        seq.table_row(),
        sync.table_row()
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
        std::fs::write(
            out.join("disk.json"),
            serde_json::to_string_pretty(&[seq, sync]).expect("json"),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One `compare` target.
#[derive(Debug, PartialEq)]
struct Target<'a> {
    name: &'a str,
    namesrv: &'a str,
    broker_pid: Option<u32>,
}

/// `NAME=NAMESRV` or `NAME=NAMESRV@BROKER_PID`.
fn parse_target(text: &str) -> Result<Target<'_>, String> {
    let (name, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("--target {text:?}: expected NAME=NAMESRV[@BROKER_PID]"))?;
    let (namesrv, broker_pid) = match rest.split_once('@') {
        Some((addr, pid)) => {
            let pid = pid
                .parse()
                .map_err(|e| format!("--target {text:?}: broker pid: {e}"))?;
            (addr, Some(pid))
        }
        None => (rest, None),
    };
    Ok(Target {
        name,
        namesrv,
        broker_pid,
    })
}

fn run_compare(args: &CompareCli) -> Result<(), String> {
    let targets: Vec<Target> = args
        .targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<Result<_, _>>()?;
    if targets.len() < 2 {
        return Err("compare needs two targets or more".into());
    }
    let mut runs: Vec<(Summary, Histogram<u64>)> = Vec::new();
    // per target: per round summary
    let mut by_target: Vec<Vec<Summary>> = vec![Vec::new(); targets.len()];
    println!("{}", Summary::table_header());
    for round in 0..args.rounds {
        for (t, target) in targets.iter().enumerate() {
            let mut produce = produce_args(&args.produce);
            produce.common.namesrv = target.namesrv.to_owned();
            let label = format!("{} r{round}", target.name);
            let pid = target.broker_pid;
            let (summary, histogram) =
                measure(&label, pid, |progress| match args.workload.as_str() {
                    "consume" => workloads::consume(&produce.common, false, progress),
                    "e2e" => workloads::e2e(&produce, progress).map(|(_, c)| c),
                    _ => run_produce(&produce, progress),
                })?;
            println!("{}", summary.table_row());
            by_target[t].push(summary.clone());
            runs.push((summary, histogram));
        }
    }
    println!(
        "\nratios, {} vs each other target (per round, then the median):",
        targets[0].name
    );
    for (t, target) in targets.iter().enumerate().skip(1) {
        let name = target.name;
        let mut throughput: Vec<f64> = (0..args.rounds)
            .map(|r| by_target[0][r].ops_per_s / by_target[t][r].ops_per_s.max(1e-9))
            .collect();
        let mut p99: Vec<f64> = (0..args.rounds)
            .map(|r| by_target[t][r].p99_us as f64 / by_target[0][r].p99_us.max(1) as f64)
            .collect();
        let mut p999: Vec<f64> = (0..args.rounds)
            .map(|r| by_target[t][r].p999_us as f64 / by_target[0][r].p999_us.max(1) as f64)
            .collect();
        let show = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  vs {name}: throughput ×[{}] median {:.2}",
            show(&throughput),
            median(&mut throughput)
        );
        println!(
            "  vs {name}: p99 {name}/{} ×[{}] median {:.2}",
            targets[0].name,
            show(&p99),
            median(&mut p99)
        );
        println!(
            "  vs {name}: p99.9 {name}/{} ×[{}] median {:.2}",
            targets[0].name,
            show(&p999),
            median(&mut p999)
        );
        let cpu = |r: usize, t: usize| by_target[t][r].broker_cpu_us_per_op;
        let mut cpu_ratio: Vec<f64> = (0..args.rounds)
            .filter_map(|r| Some(cpu(r, 0)? / cpu(r, t)?.max(1e-9)))
            .collect();
        if !cpu_ratio.is_empty() {
            println!(
                "  vs {name}: broker CPU per message {}/{name} ×[{}] median {:.2}",
                targets[0].name,
                show(&cpu_ratio),
                median(&mut cpu_ratio)
            );
        }
    }
    if let Some(out) = &args.produce.target.out {
        write_outputs(out, &runs, &format!("{} latency", args.workload))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_name_server_and_maybe_a_broker_pid() {
        assert_eq!(
            parse_target("a=127.0.0.1:9876@42"),
            Ok(Target {
                name: "a",
                namesrv: "127.0.0.1:9876",
                broker_pid: Some(42)
            })
        );
        assert_eq!(parse_target("b=127.0.0.1:9876").unwrap().broker_pid, None);
        assert!(parse_target("127.0.0.1:9876").is_err());
        assert!(parse_target("a=127.0.0.1:9876@x").is_err());
    }

    #[test]
    fn median_of_rounds() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}

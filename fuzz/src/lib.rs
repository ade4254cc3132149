//! A mutation fuzzer for every decoder that reads what a peer sends (or what a disk holds),
//! without the nightly toolchain cargo-fuzz needs: each target starts from valid encodings (its
//! seeds), mutates them (bit flips, interesting integers at length fields, insertions,
//! deletions, splices), and feeds the result to the decoder, which must never panic. A panic
//! is reported with the input that caused it (hex), so it can be replayed (`replay`).
//!
//! Targets: `frame` (frame split, JSON and binary headers, typed headers), `record` (stored
//! records: decode and validation), `batch` (SEND_BATCH_MESSAGE bodies), `json` (route,
//! heartbeat, registration, offset and subscription-group bodies), `conf` (broker.conf text
//! and every key's parser), `properties` (message properties).

pub mod mutate;
pub mod targets;

pub use mutate::Rng;
pub use targets::{Target, TARGETS};

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStats {
    pub inputs: u64,
    /// Inputs the decoder accepted (the rest it refused with an error, as it should).
    pub accepted: u64,
}

/// Runs `target` until `inputs` inputs or `deadline`, from `seed`. Panics (with the input) if
/// the decoder panics.
pub fn run(target: &Target, seed: u64, inputs: u64, deadline: std::time::Instant) -> RunStats {
    let seeds = (target.seeds)();
    assert!(!seeds.is_empty(), "{}: no seeds", target.name);
    let mut rng = Rng::new(seed);
    let mut stats = RunStats::default();
    let mut input = Vec::with_capacity(4096);
    while stats.inputs < inputs {
        // The clock is read once every 1024 inputs: decoders take microseconds.
        if stats.inputs % 1024 == 0 && std::time::Instant::now() >= deadline {
            break;
        }
        mutate::next_input(&mut rng, &seeds, &mut input);
        let accepted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(&input)))
                .unwrap_or_else(|_| {
                    panic!(
                        "{} panicked on input (hex, replay with `thruster-fuzz replay {} HEX`): {}",
                        target.name,
                        target.name,
                        hex(&input)
                    )
                });
        stats.inputs += 1;
        stats.accepted += u64::from(accepted);
    }
    stats
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

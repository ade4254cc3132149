//! Every fuzz target for a bounded time (CI): `THRUSTER_FUZZ_SECONDS` per target (default 2),
//! from a seed that changes with each run (`THRUSTER_FUZZ_SEED` to repeat one). A decoder that
//! panics fails the test with the input that did it.

use std::time::{Duration, Instant};

#[test]
fn no_target_panics_within_its_budget() {
    let seconds: f64 = std::env::var("THRUSTER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("THRUSTER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("fuzz seed {seed} (THRUSTER_FUZZ_SEED={seed} repeats this run)");
    for target in thruster_fuzz::TARGETS {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let stats = thruster_fuzz::run(target, seed, u64::MAX, deadline);
        eprintln!(
            "{}: {} inputs, {} accepted",
            target.name, stats.inputs, stats.accepted
        );
        assert!(stats.inputs > 1000, "{}: the harness ran", target.name);
        assert!(
            stats.accepted > 0,
            "{}: some mutated inputs still decode",
            target.name
        );
    }
}

#[test]
fn the_seeds_themselves_are_accepted() {
    for target in thruster_fuzz::TARGETS {
        for (i, seed) in (target.seeds)().iter().enumerate() {
            assert!((target.run)(seed), "{} seed {i} is refused", target.name);
        }
    }
}

#[test]
fn replay_input_round_trips_through_hex() {
    let bytes = vec![0u8, 1, 0xab, 0xff];
    assert_eq!(
        thruster_fuzz::unhex(&thruster_fuzz::hex(&bytes)),
        Some(bytes)
    );
    assert_eq!(thruster_fuzz::unhex("zz"), None);
}

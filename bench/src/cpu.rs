//! How much CPU the generator itself uses: a load generator must not be the bottleneck.

use std::time::Duration;

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// A thread above this share of one core is reported as saturated.
pub const SATURATED_SHARE: f64 = 0.9;

/// CPU time (user + system) a whole process has used so far, from `/proc/<pid>/stat`: the
/// broker's side of a run, read before and after it.
pub fn process_cpu_time(pid: u32) -> std::io::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)?;
    parse_stat_cpu(&stat, clock_ticks_per_s())
        .ok_or_else(|| std::io::Error::other(format!("{path}: unexpected format")))
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last ')'.
fn parse_stat_cpu(stat: &str, ticks_per_s: u64) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11); // field 3 is the first here
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_micros(
        (utime + stime) * 1_000_000 / ticks_per_s,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("4242 (x) S 1", 100), None);
    }

    #[test]
    fn own_process_cpu_is_readable() {
        let spent = process_cpu_time(std::process::id()).unwrap();
        let busy = std::time::Instant::now();
        while busy.elapsed() < Duration::from_millis(30) {}
        assert!(process_cpu_time(std::process::id()).unwrap() >= spent);
    }
}

//! Message ids (`UNIQ_KEY`) as RocketMQ's `MessageClientIDSetter` makes them: 16 bytes in upper
//! hex. The first 10 are fixed per process: IPv4 address (4), pid (2), a per-process random
//! value standing for Java's class-loader hash (4); the last 6 change per message: milliseconds
//! since the start of the current month (4) and a wrapping counter (2). Tools decode the IP and
//! the time from them, so the layout matters.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct UniqueIdGenerator {
    prefix: String,
    counter: AtomicU16,
}

impl UniqueIdGenerator {
    pub fn new(ip: Ipv4Addr, pid: u32, salt: u32) -> UniqueIdGenerator {
        let mut fixed = Vec::with_capacity(10);
        fixed.extend_from_slice(&ip.octets());
        fixed.extend_from_slice(&(pid as u16).to_be_bytes());
        fixed.extend_from_slice(&salt.to_be_bytes());
        UniqueIdGenerator {
            prefix: hex(&fixed),
            counter: AtomicU16::new(0),
        }
    }

    /// An id for a message created at `now_ms` (Unix epoch milliseconds, UTC).
    pub fn next_at(&self, now_ms: i64) -> String {
        let since_month = now_ms - month_start_ms(now_ms);
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut tail = Vec::with_capacity(6);
        tail.extend_from_slice(&(since_month as i32).to_be_bytes());
        tail.extend_from_slice(&counter.to_be_bytes());
        let mut id = String::with_capacity(32);
        id.push_str(&self.prefix);
        id.push_str(&hex(&tail));
        id
    }

    pub fn next(&self) -> String {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.next_at(now_ms)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Start of the UTC month containing `ms` (Java uses the local time zone; UTC keeps ids
/// independent of the host's zone, and only the offset within the month is encoded).
fn month_start_ms(ms: i64) -> i64 {
    let days = ms.div_euclid(86_400_000);
    let (_, _, day) = civil_from_days(days);
    (days - (day as i64 - 1)) * 86_400_000
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_ip_pid_salt_then_time_in_month_and_counter() {
        let generator = UniqueIdGenerator::new(Ipv4Addr::new(127, 0, 0, 1), 0x1234, 0xDEADBEEF);
        // 2026-11-24T09:00:00Z; the month began 2026-11-01T00:00:00Z.
        let now_ms = 1_795_510_800_000;
        let month_ms = 1_793_491_200_000;
        let id = generator.next_at(now_ms);
        assert_eq!(id.len(), 32);
        assert_eq!(&id[..20], "7F0000011234DEADBEEF");
        let since = i64::from_str_radix(&id[20..28], 16).unwrap();
        assert_eq!(since, now_ms - month_ms);
        assert_eq!(&id[28..], "0000");
        assert_eq!(&generator.next_at(now_ms)[28..], "0001", "counter advances");
        assert_ne!(generator.next(), generator.next());
    }

    #[test]
    fn civil_dates_are_right_at_edges() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1)); // 2026-03-01
        assert_eq!(month_start_ms(86_400_000 * 59 + 5), 86_400_000 * 59);
    }
}

//! Remote-address patterns of `plain_acl.yml` (`whiteRemoteAddress`,
//! `globalWhiteRemoteAddresses`), as RocketMQ's `RemoteAddressStrategyFactory` reads them:
//!
//! | pattern                           | matches                                     |
//! |-----------------------------------|---------------------------------------------|
//! | empty                             | nothing                                     |
//! | `*`, `*.*.*.*`, `*:*:*:*:*:*:*:*` | every address                               |
//! | `192.168.1.5`, `::1`              | that address                                |
//! | `192.168.1.{5,7,9}`               | those last parts (also `a:b:...:{1,2}`)     |
//! | `192.168.1.5,10.0.0.1`            | any address of the list                     |
//! | `192.168.1.*`, `192.168.*.*`      | the parts before the first `*`              |
//! | `192.168.1.10-20`, `192.1-9.*.*`  | that part in the range (inclusive), parts before it equal |
//!
//! A range or `*` is on part 2, 3 or 4 of an IPv4 address; what follows it is not compared
//! (as in RocketMQ). IPv6 ranges (`2001:db8::1-ff`) are refused with an error: Thruster does
//! not read them yet.

use std::net::IpAddr;

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// An empty pattern: matches nothing (an account without `whiteRemoteAddress`).
    Nothing,
    /// `*`: every address.
    Any,
    /// One or several exact addresses.
    Exact(Vec<IpAddr>),
    /// IPv4 `head.start-end` (or `head.*`): the first `head_len` parts equal `head`, part
    /// `head_len` within `start..=end`.
    Range {
        head: [u8; 3],
        head_len: usize,
        start: u8,
        end: u8,
    },
}

impl AddressPattern {
    pub fn parse(pattern: &str) -> Result<AddressPattern, String> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Ok(AddressPattern::Nothing);
        }
        if matches!(pattern, "*" | "*.*.*.*" | "*:*:*:*:*:*:*:*") {
            return Ok(AddressPattern::Any);
        }
        if pattern.ends_with('}') {
            return parse_choices(pattern);
        }
        if pattern.contains(',') {
            let addrs = pattern
                .split(',')
                .map(|part| parse_ip(part.trim()))
                .collect::<Result<_, _>>()?;
            return Ok(AddressPattern::Exact(addrs));
        }
        if pattern.contains('*') || pattern.contains('-') {
            return parse_range(pattern);
        }
        Ok(AddressPattern::Exact(vec![parse_ip(pattern)?]))
    }

    pub fn matches(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        match self {
            AddressPattern::Nothing => false,
            AddressPattern::Any => true,
            AddressPattern::Exact(addrs) => addrs.contains(&peer),
            AddressPattern::Range {
                head,
                head_len,
                start,
                end,
            } => match peer {
                IpAddr::V4(v4) => {
                    let octets = v4.octets();
                    octets[..*head_len] == head[..*head_len]
                        && (*start..=*end).contains(&octets[*head_len])
                }
                IpAddr::V6(_) => false,
            },
        }
    }
}

/// An IPv4 peer seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// `prefix{a,b,c}`: the prefix (up to the last `.` or `:`) with each choice.
fn parse_choices(pattern: &str) -> Result<AddressPattern, String> {
    let open = pattern
        .rfind('{')
        .ok_or_else(|| format!("{pattern:?}: '}}' without '{{'"))?;
    let prefix = &pattern[..open];
    if !(prefix.ends_with('.') || prefix.ends_with(':')) {
        return Err(format!(
            "{pattern:?}: the {{...}} choices must be the last part of the address"
        ));
    }
    if !prefix.contains(':') && prefix.split('.').count() != 4 {
        return Err(format!("{pattern:?}: an IPv4 address has 4 parts"));
    }
    let addrs = pattern[open + 1..pattern.len() - 1]
        .split(',')
        .map(|choice| parse_ip(&format!("{prefix}{}", choice.trim())))
        .collect::<Result<_, _>>()?;
    Ok(AddressPattern::Exact(addrs))
}

/// `a.b.c.*`, `a.b.*.*`, `a.*.*.*`, `a.b.c.x-y`, `a.b.x-y.*`, ...
fn parse_range(pattern: &str) -> Result<AddressPattern, String> {
    if pattern.contains(':') {
        return Err(format!(
            "{pattern:?}: IPv6 ranges are not supported; list the addresses or use {{...}}"
        ));
    }
    let parts: Vec<&str> = pattern.split('.').map(str::trim).collect();
    if parts.len() != 4 {
        return Err(format!("{pattern:?}: an IPv4 address has 4 parts"));
    }
    let at = (1..4)
        .find(|&i| parts[i] == "*" || parts[i].contains('-'))
        .ok_or_else(|| format!("{pattern:?}: a range or '*' must be in part 2, 3 or 4"))?;
    let mut head = [0u8; 3];
    for (slot, part) in head.iter_mut().zip(&parts[..at]) {
        *slot = part
            .parse()
            .map_err(|_| format!("{pattern:?}: {part:?} is not a number from 0 to 255"))?;
    }
    let (start, end) = if parts[at] == "*" {
        (0, 255)
    } else {
        let (low, high) = parts[at]
            .split_once('-')
            .ok_or_else(|| format!("{pattern:?}: bad range {:?}", parts[at]))?;
        let number = |text: &str| {
            text.trim()
                .parse::<u8>()
                .map_err(|_| format!("{pattern:?}: {text:?} is not a number from 0 to 255"))
        };
        (number(low)?, number(high)?)
    };
    if start > end {
        return Err(format!("{pattern:?}: the range starts after it ends"));
    }
    Ok(AddressPattern::Range {
        head,
        head_len: at,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn matches(pattern: &str, peer: &str) -> bool {
        AddressPattern::parse(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .matches(ip(peer))
    }

    #[test]
    fn empty_matches_nothing_and_star_everything() {
        assert!(!matches("", "127.0.0.1"));
        assert!(!matches("  ", "::1"));
        for any in ["*", "*.*.*.*", "*:*:*:*:*:*:*:*"] {
            assert!(matches(any, "127.0.0.1"));
            assert!(matches(any, "2001:db8::1"));
        }
    }

    #[test]
    fn exact_addresses() {
        assert!(matches("192.168.0.1", "192.168.0.1"));
        assert!(!matches("192.168.0.1", "192.168.0.2"));
        // IPv6 is compared as an address, not as text.
        assert!(matches("2001:DB8:0:0:0:0:0:1", "2001:db8::1"));
        assert!(matches("127.0.0.1", "::ffff:127.0.0.1"));
        assert!(matches("10.0.0.1, 10.0.0.7", "10.0.0.7"));
        assert!(!matches("10.0.0.1,10.0.0.7", "10.0.0.3"));
    }

    #[test]
    fn choices_in_braces() {
        assert!(matches("192.168.1.{1,2,3}", "192.168.1.2"));
        assert!(!matches("192.168.1.{1,2,3}", "192.168.1.4"));
        assert!(!matches("192.168.1.{1,2,3}", "192.168.2.1"));
        assert!(matches("2001:db8::{1,2}", "2001:db8::2"));
        assert!(!matches("2001:db8::{1,2}", "2001:db8::3"));
    }

    #[test]
    fn star_and_ranges() {
        assert!(matches("192.168.1.*", "192.168.1.200"));
        assert!(!matches("192.168.1.*", "192.168.2.200"));
        assert!(matches("192.168.*.*", "192.168.7.9"));
        assert!(matches("10.*.*.*", "10.1.2.3"));
        assert!(!matches("10.*.*.*", "11.1.2.3"));
        assert!(matches("192.168.1.1-100", "192.168.1.1"));
        assert!(matches("192.168.1.1-100", "192.168.1.100"));
        assert!(!matches("192.168.1.1-100", "192.168.1.101"));
        assert!(!matches("192.168.1.1-100", "192.168.1.0"));
        assert!(matches("192.168.10-20.*", "192.168.15.3"));
        assert!(!matches("192.168.10-20.*", "192.168.21.3"));
        assert!(!matches("127.0.0.*", "::1"));
    }

    proptest::proptest! {
        /// Any text is a pattern or an error, never a panic; a pattern answers for any peer.
        #[test]
        fn any_text_parses_or_fails_cleanly(
            text in "[0-9.*{},:a-f -]{0,24}|.{0,24}",
            peer in proptest::prelude::any::<[u8; 4]>(),
        ) {
            if let Ok(pattern) = AddressPattern::parse(&text) {
                let _ = pattern.matches(IpAddr::from(peer));
            }
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for bad in [
            "localhost",
            "192.168.1",
            "192.168.1.256",
            "192.168.1.100-1",
            "192.168.1.-5",
            "192.168.1.1-300",
            "*.1.2.3",
            "1.2.3.{4,x}",
            "1.2.{3}.4",
            "2001:db8::1-ff",
            "10.0.0.1,nope",
        ] {
            assert!(AddressPattern::parse(bad).is_err(), "{bad} parsed");
        }
    }
}

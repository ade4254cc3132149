//! RocketMQ's `StatsItem`s behind VIEW_BROKER_STATS_DATA: per stats key, running totals
//! (a value and how many times it was added to) and snapshots of them, so a minute, an hour
//! and a day can be read back as `sum`, `tps` and `avgpt`.
//!
//! As Java's `StatsItem`: a snapshot every 10 s (the last [`MINUTE_SNAPSHOTS`] kept), every
//! 10 min ([`HOUR_SNAPSHOTS`]) and every hour ([`DAY_SNAPSHOTS`]); a new item starts each
//! window with a zero snapshot one period before it was created. A window's figures run from
//! its oldest snapshot to the totals now (Java stops at its last snapshot, so its figures lag
//! by up to one period): `sum` = growth of the value, `tps` = sum per second, `avgpt` = sum per
//! addition (`times`).
//!
//! Memory: [`ITEM_BYTES`] per item, fixed; at most `SERIES_MAX` items per set (past it, new keys
//! count under `OTHER`, as the meter's series do) in each of the three keyed sets.

use std::collections::BTreeMap;

use super::series::{OTHER, SERIES_MAX};

pub const MINUTE_SNAPSHOTS: usize = 7;
pub const HOUR_SNAPSHOTS: usize = 7;
pub const DAY_SNAPSHOTS: usize = 25;
/// Snapshot periods of the minute, hour and day windows.
const PERIODS_MS: [i64; 3] = [10_000, 600_000, 3_600_000];
/// Bytes one item holds (its snapshots are fixed arrays): about 1.3 KiB.
pub const ITEM_BYTES: usize = std::mem::size_of::<Item>();
const _: () = assert!(ITEM_BYTES <= 2048, "an item stays within 2 KiB");

/// Java's stats names this broker keeps.
pub mod names {
    /// Key: topic. Value: messages sent; times: sends.
    pub const TOPIC_PUT_NUMS: &str = "TOPIC_PUT_NUMS";
    /// Key: topic. Value: bytes stored; times: sends.
    pub const TOPIC_PUT_SIZE: &str = "TOPIC_PUT_SIZE";
    /// Key: `topic@group`. Value: messages pulled; times: pulls that found messages.
    pub const GROUP_GET_NUMS: &str = "GROUP_GET_NUMS";
    /// Key: `topic@group`. Value: bytes pulled; times: as GROUP_GET_NUMS.
    pub const GROUP_GET_SIZE: &str = "GROUP_GET_SIZE";
    /// Key: `topic@group`, the topic the message went back to (`%RETRY%<group>` or
    /// `%DLQ%<group>`). Value and times: messages sent back.
    pub const SNDBCK_PUT_NUMS: &str = "SNDBCK_PUT_NUMS";
    /// Key: the cluster name. Value: messages sent (times: none, as Java's).
    pub const BROKER_PUT_NUMS: &str = "BROKER_PUT_NUMS";
    /// Key: the cluster name. Value: messages pulled (times: none).
    pub const BROKER_GET_NUMS: &str = "BROKER_GET_NUMS";
}

/// Running totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Snapshot {
    at_ms: i64,
    times: u64,
    /// Two values per key: messages and bytes (a set that counts one leaves the second 0).
    values: [u64; 2],
}

/// The last `N` snapshots.
#[derive(Debug, Clone, Copy)]
struct Ring<const N: usize> {
    snapshots: [Snapshot; N],
    len: usize,
    /// Where the next snapshot goes.
    next: usize,
}

impl<const N: usize> Ring<N> {
    fn starting_with(first: Snapshot) -> Self {
        let mut ring = Ring {
            snapshots: [Snapshot::default(); N],
            len: 0,
            next: 0,
        };
        ring.push(first);
        ring
    }

    fn push(&mut self, snapshot: Snapshot) {
        self.snapshots[self.next] = snapshot;
        self.next = (self.next + 1) % N;
        self.len = (self.len + 1).min(N);
    }

    fn oldest(&self) -> Snapshot {
        self.snapshots[(self.next + N - self.len) % N]
    }
}

/// One window's figures, before shards are added up (`times` makes `avgpt` addable).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowFigures {
    pub sum: i64,
    pub tps: f64,
    pub times: u64,
}

impl WindowFigures {
    pub fn add(&mut self, other: WindowFigures) {
        self.sum += other.sum;
        self.tps += other.tps;
        self.times += other.times;
    }

    /// Java's `avgpt`: the value's growth per addition.
    pub fn avgpt(&self) -> f64 {
        if self.times == 0 {
            0.0
        } else {
            self.sum as f64 / self.times as f64
        }
    }
}

/// Minute, hour and day.
pub type ItemFigures = [WindowFigures; 3];

/// One key's totals and windows.
#[derive(Debug, Clone)]
pub struct Item {
    now: Snapshot,
    minute: Ring<MINUTE_SNAPSHOTS>,
    hour: Ring<HOUR_SNAPSHOTS>,
    day: Ring<DAY_SNAPSHOTS>,
}

impl Item {
    fn new(created_ms: i64) -> Item {
        let zero = |period: i64| Snapshot {
            at_ms: created_ms - period,
            ..Snapshot::default()
        };
        Item {
            now: Snapshot {
                at_ms: created_ms,
                ..Snapshot::default()
            },
            minute: Ring::starting_with(zero(PERIODS_MS[0])),
            hour: Ring::starting_with(zero(PERIODS_MS[1])),
            day: Ring::starting_with(zero(PERIODS_MS[2])),
        }
    }

    fn add(&mut self, times: u64, values: [u64; 2]) {
        self.now.times += times;
        self.now.values[0] += values[0];
        self.now.values[1] += values[1];
    }

    fn snapshot(&mut self, window: usize, now_ms: i64) {
        let snapshot = Snapshot {
            at_ms: now_ms,
            ..self.now
        };
        match window {
            0 => self.minute.push(snapshot),
            1 => self.hour.push(snapshot),
            _ => self.day.push(snapshot),
        }
    }

    /// Figures of value `value` (0 or 1) over the minute, hour and day, as of `now_ms`.
    pub fn figures(&self, value: usize, now_ms: i64) -> ItemFigures {
        let over = |oldest: Snapshot| {
            let sum = self.now.values[value].saturating_sub(oldest.values[value]);
            let elapsed_ms = (now_ms - oldest.at_ms).max(1);
            WindowFigures {
                sum: sum as i64,
                tps: sum as f64 * 1_000.0 / elapsed_ms as f64,
                times: self.now.times.saturating_sub(oldest.times),
            }
        };
        [
            over(self.minute.oldest()),
            over(self.hour.oldest()),
            over(self.day.oldest()),
        ]
    }
}

/// Which stats name an item of a set answers, and with which of its two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Topic(&'a str, usize),
    Group(&'a str, &'a str, usize),
    SendBack(&'a str, &'a str),
    BrokerPut,
    BrokerGet,
}

impl<'a> Lookup<'a> {
    /// `None` for a name this broker does not keep, or a `topic@group` key without its `@`.
    pub fn of(name: &str, key: &'a str) -> Option<Lookup<'a>> {
        let pair = || key.split_once('@');
        Some(match name {
            names::TOPIC_PUT_NUMS => Lookup::Topic(key, 0),
            names::TOPIC_PUT_SIZE => Lookup::Topic(key, 1),
            names::GROUP_GET_NUMS => pair().map(|(t, g)| Lookup::Group(t, g, 0))?,
            names::GROUP_GET_SIZE => pair().map(|(t, g)| Lookup::Group(t, g, 1))?,
            names::SNDBCK_PUT_NUMS => pair().map(|(t, g)| Lookup::SendBack(t, g))?,
            names::BROKER_PUT_NUMS => Lookup::BrokerPut,
            names::BROKER_GET_NUMS => Lookup::BrokerGet,
            _ => return None,
        })
    }
}

/// A shard's stats items (owned by its meter).
#[derive(Debug, Clone)]
pub struct StatsWindows {
    topics: BTreeMap<String, Item>,
    groups: BTreeMap<(String, String), Item>,
    send_backs: BTreeMap<(String, String), Item>,
    broker_put: Item,
    broker_get: Item,
    /// Time of the last `sample` call: new items start from it.
    clock_ms: i64,
    /// When each window takes its next snapshot.
    due_ms: [i64; 3],
}

impl Default for StatsWindows {
    fn default() -> Self {
        StatsWindows {
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            send_backs: BTreeMap::new(),
            broker_put: Item::new(0),
            broker_get: Item::new(0),
            clock_ms: 0,
            due_ms: [0; 3],
        }
    }
}

/// The item of `key`, created (from `clock_ms`) while the set has room, else `other`'s.
fn item<K: Ord + Clone>(
    set: &mut BTreeMap<K, Item>,
    key: K,
    other: impl FnOnce() -> K,
    clock_ms: i64,
) -> &mut Item {
    let key = if set.len() >= SERIES_MAX && !set.contains_key(&key) {
        other()
    } else {
        key
    };
    set.entry(key).or_insert_with(|| Item::new(clock_ms))
}

fn other_pair() -> (String, String) {
    (OTHER.to_owned(), OTHER.to_owned())
}

impl StatsWindows {
    /// A client send of `messages` records, `bytes` stored.
    pub fn put(&mut self, topic: &str, messages: u64, bytes: u64) {
        let clock = self.clock_ms;
        // Looked up by `&str` first: the key is allocated only for a new topic, not per send.
        let item = match self.topics.get_mut(topic) {
            Some(item) => item,
            None => item(
                &mut self.topics,
                topic.to_owned(),
                || OTHER.to_owned(),
                clock,
            ),
        };
        item.add(1, [messages, bytes]);
        self.broker_put.add(0, [messages, 0]);
    }

    /// A pull of `group` that found `messages` messages (`bytes`) in `topic`.
    pub fn get(&mut self, topic: &str, group: &str, messages: u64, bytes: u64) {
        let clock = self.clock_ms;
        let key = (topic.to_owned(), group.to_owned());
        item(&mut self.groups, key, other_pair, clock).add(1, [messages, bytes]);
        self.broker_get.add(0, [messages, 0]);
    }

    /// A message of `group` sent back into `topic` (its retry or dead-letter topic).
    pub fn send_back(&mut self, topic: &str, group: &str) {
        let clock = self.clock_ms;
        let key = (topic.to_owned(), group.to_owned());
        item(&mut self.send_backs, key, other_pair, clock).add(1, [1, 0]);
    }

    /// Drops a deleted topic's items (Java's `onTopicDeleted`): a re-created topic counts anew.
    pub fn forget_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
        self.groups.retain(|(t, _), _| t != topic);
        self.send_backs.retain(|(t, _), _| t != topic);
    }

    /// Takes the snapshots that are due (called every second).
    pub fn sample(&mut self, now_ms: i64) {
        if self.clock_ms == 0 {
            // The broker items' windows start with the first sample, not at the epoch.
            for item in [&mut self.broker_put, &mut self.broker_get] {
                let totals = item.now;
                *item = Item::new(now_ms);
                item.add(totals.times, totals.values);
            }
        }
        self.clock_ms = now_ms;
        for (window, (due_ms, period_ms)) in self.due_ms.iter_mut().zip(PERIODS_MS).enumerate() {
            if now_ms < *due_ms {
                continue;
            }
            *due_ms = now_ms + period_ms;
            let items = self
                .topics
                .values_mut()
                .chain(self.groups.values_mut())
                .chain(self.send_backs.values_mut())
                .chain([&mut self.broker_put, &mut self.broker_get]);
            for item in items {
                item.snapshot(window, now_ms);
            }
        }
    }

    /// The figures of one item, as of `now_ms`; `None` when this shard has no such item.
    pub fn figures(&self, lookup: Lookup, now_ms: i64) -> Option<ItemFigures> {
        let pair = |t: &str, g: &str| (t.to_owned(), g.to_owned());
        match lookup {
            Lookup::Topic(topic, value) => Some(self.topics.get(topic)?.figures(value, now_ms)),
            Lookup::Group(topic, group, value) => {
                Some(self.groups.get(&pair(topic, group))?.figures(value, now_ms))
            }
            Lookup::SendBack(topic, group) => {
                Some(self.send_backs.get(&pair(topic, group))?.figures(0, now_ms))
            }
            Lookup::BrokerPut => Some(self.broker_put.figures(0, now_ms)),
            Lookup::BrokerGet => Some(self.broker_get.figures(0, now_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn windows_sum_what_they_cover() {
        let mut windows = StatsWindows::default();
        windows.sample(T0);
        windows.put("T", 3, 300);
        windows.put("T", 1, 100);
        let [minute, hour, day] = windows
            .figures(Lookup::of("TOPIC_PUT_NUMS", "T").unwrap(), T0 + 1_000)
            .unwrap();
        assert_eq!((minute.sum, minute.times), (4, 2));
        assert_eq!(minute.avgpt(), 2.0);
        assert_eq!(
            minute.tps,
            4.0 * 1_000.0 / 11_000.0,
            "from the zero a period back"
        );
        assert_eq!((hour.sum, day.sum), (4, 4));
        let size = windows
            .figures(Lookup::of("TOPIC_PUT_SIZE", "T").unwrap(), T0 + 1_000)
            .unwrap();
        assert_eq!(size[0].sum, 400);
        // Seventy seconds of snapshots later the minute has moved past the sends; the hour and
        // the day still hold them.
        for second in 1..=70 {
            windows.sample(T0 + second * 1_000);
        }
        windows.put("T", 2, 200);
        let [minute, hour, day] = windows
            .figures(Lookup::of("TOPIC_PUT_NUMS", "T").unwrap(), T0 + 70_000)
            .unwrap();
        assert_eq!((minute.sum, hour.sum, day.sum), (2, 6, 6));
        assert_eq!(
            windows
                .figures(Lookup::BrokerPut, T0 + 70_000)
                .unwrap()
                .map(|w| w.sum),
            [2, 6, 6]
        );
    }

    #[test]
    fn keys_and_names_read_like_java() {
        assert_eq!(
            Lookup::of("GROUP_GET_NUMS", "T@g"),
            Some(Lookup::Group("T", "g", 0))
        );
        assert_eq!(Lookup::of("GROUP_GET_NUMS", "no-at"), None);
        assert_eq!(Lookup::of("NOT_A_STAT", "T"), None);
        let mut windows = StatsWindows::default();
        windows.get("T", "g", 5, 50);
        windows.send_back("%RETRY%g", "g");
        let get = windows.figures(Lookup::Group("T", "g", 1), 0).unwrap();
        assert_eq!(get[2].sum, 50);
        let back = windows.figures(Lookup::of("SNDBCK_PUT_NUMS", "%RETRY%g@g").unwrap(), 0);
        assert_eq!(back.unwrap()[0].sum, 1);
        assert!(windows.figures(Lookup::Topic("T", 0), 0).is_none());
        windows.put("T", 1, 1);
        windows.get("U", "g", 1, 1);
        windows.forget_topic("T");
        assert!(windows.figures(Lookup::Topic("T", 0), 0).is_none());
        assert!(windows.figures(Lookup::Group("T", "g", 0), 0).is_none());
        assert!(windows.figures(Lookup::Group("U", "g", 0), 0).is_some());
    }

    #[test]
    fn sets_are_bounded() {
        let mut windows = StatsWindows::default();
        for topic in 0..SERIES_MAX + 5 {
            windows.put(&format!("T{topic}"), 1, 1);
        }
        assert_eq!(windows.topics.len(), SERIES_MAX + 1);
        let other = windows.figures(Lookup::Topic(OTHER, 0), 0).unwrap();
        assert_eq!(other[0].sum, 5);
    }
}

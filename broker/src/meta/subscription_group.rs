//! The subscription-group table. Shard 0 is its only writer (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
//! DELETE_SUBSCRIPTIONGROUP, auto-creation by a heartbeat, persistence to
//! `config/subscriptionGroup.json`); every other shard keeps a read-only copy, updated by
//! `MeshMessage::GroupChanged`, as with topics.

use std::path::PathBuf;

use thruster_protocol::body::{DataVersion, SubscriptionGroupConfig, SubscriptionGroupWrapper};
use thruster_protocol::response_code;

use super::bounded_table::{BoundedTable, TableEntry};
use crate::config::BrokerConfig;
use crate::remoting::Failure;

/// Memory the group table may take on each shard, as accounted by [`group_bytes`]: every
/// heartbeat of a new group creates one (with `autoCreateSubscriptionGroup`), so creation is
/// refused past it; existing groups still change.
pub const GROUP_TABLE_BYTES_MAX: usize = 16 << 20;
/// What one group costs besides its name (map node, the config's fixed fields, two Strings).
const GROUP_OVERHEAD_BYTES: usize = 192;
/// Group names: RocketMQ's limit (`Validators.CHARACTER_MAX_LENGTH`).
pub const GROUP_NAME_BYTES_MAX: usize = 255;

/// Groups the Java broker creates at start (`SubscriptionGroupManager.init`).
const SYSTEM_GROUPS: &[&str] = &[
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "SELF_TEST_C_GROUP",
    "CID_ONS-HTTP-PROXY",
    "CID_ONSAPI_PULL",
    "CID_ONSAPI_PERMISSION",
    "CID_ONSAPI_OWNER",
];
/// Groups starting with this exist whether or not auto-creation is on (`MixAll.isSysConsumerGroup`).
const SYSTEM_GROUP_PREFIX: &str = "CID_RMQ_SYS_";

impl TableEntry for SubscriptionGroupConfig {
    const KIND: &'static str = "subscription group";

    fn name(&self) -> &str {
        &self.group_name
    }

    fn bytes(&self) -> usize {
        2 * self.group_name.len() + GROUP_OVERHEAD_BYTES
    }
}

/// Whether `group` is one the broker serves whatever `autoCreateSubscriptionGroup` says.
pub fn is_system_group(group: &str) -> bool {
    group.starts_with(SYSTEM_GROUP_PREFIX)
}

#[derive(Debug, Clone)]
pub struct SubscriptionGroupTable {
    groups: BoundedTable<SubscriptionGroupConfig>,
}

impl Default for SubscriptionGroupTable {
    fn default() -> Self {
        SubscriptionGroupTable {
            groups: BoundedTable::new(GROUP_TABLE_BYTES_MAX),
        }
    }
}

impl SubscriptionGroupTable {
    pub fn with_system_groups(now_ms: i64) -> SubscriptionGroupTable {
        let mut table = SubscriptionGroupTable::default();
        for name in SYSTEM_GROUPS {
            table.groups.insert(SubscriptionGroupConfig::named(*name));
        }
        table.groups.bump_version(now_ms);
        table
    }

    /// Adds the groups of a persisted table (they win over the built-in ones).
    pub fn merge_persisted(&mut self, persisted: SubscriptionGroupWrapper) {
        self.groups.merge(
            persisted.subscription_group_table.into_values(),
            &persisted.data_version,
        );
    }

    pub fn get(&self, group: &str) -> Option<&SubscriptionGroupConfig> {
        self.groups.get(group)
    }

    /// The config that governs `group` (Java `findSubscriptionGroupConfig`, without its side
    /// effect): the stored one, else the defaults when the broker creates groups on demand or
    /// the group is a system group; `None` means SUBSCRIPTION_GROUP_NOT_EXIST.
    pub fn effective(&self, group: &str, auto_create: bool) -> Option<SubscriptionGroupConfig> {
        match self.groups.get(group) {
            Some(config) => Some(config.clone()),
            None if auto_create || is_system_group(group) => {
                Some(SubscriptionGroupConfig::named(group))
            }
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Replaces or adds `group`; `true` when anything changed.
    pub fn upsert(&mut self, group: SubscriptionGroupConfig, now_ms: i64) -> bool {
        self.groups.upsert(group, now_ms)
    }

    pub fn remove(&mut self, group: &str, now_ms: i64) -> bool {
        self.groups.remove(group, now_ms)
    }

    pub fn table_bytes(&self) -> usize {
        self.groups.table_bytes()
    }

    /// Whether `group` may be stored: a valid name, and a new group only while the table stays
    /// within [`GROUP_TABLE_BYTES_MAX`].
    pub fn room_for(&self, group: &SubscriptionGroupConfig) -> Result<(), Failure> {
        validate_group_name(&group.group_name)?;
        self.groups.room_for(group)
    }

    pub fn wrapper(&self) -> SubscriptionGroupWrapper {
        SubscriptionGroupWrapper {
            data_version: self.groups.data_version().clone(),
            subscription_group_table: self
                .groups
                .iter()
                .map(|(name, group)| (name.clone(), group.clone()))
                .collect(),
        }
    }

    pub fn data_version(&self) -> &DataVersion {
        self.groups.data_version()
    }
}

/// `config/subscriptionGroup.json` (RocketMQ's file name and shape).
pub fn groups_path(config: &BrokerConfig) -> PathBuf {
    config.config_dir().join("subscriptionGroup.json")
}

/// Group names: 1-255 bytes of `[A-Za-z0-9%|_-]` (RocketMQ's `Validators.checkGroup`).
pub fn validate_group_name(group: &str) -> Result<(), Failure> {
    match super::name_problem(group, GROUP_NAME_BYTES_MAX, "group") {
        None => Ok(()),
        Some(why) => Err(Failure::new(
            response_code::SYSTEM_ERROR,
            format!("the specified group[{group}] {why}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_groups_exist_only_with_auto_creation_or_as_system_groups() {
        let mut table = SubscriptionGroupTable::with_system_groups(1);
        assert!(table.get("TOOLS_CONSUMER").is_some());
        assert_eq!(table.effective("g", true).unwrap().retry_max_times, 16);
        assert!(table.effective("g", false).is_none());
        assert!(table.effective("CID_RMQ_SYS_TRANS", false).is_some());
        let config = SubscriptionGroupConfig {
            consume_enable: false,
            ..SubscriptionGroupConfig::named("g")
        };
        assert!(table.upsert(config.clone(), 2));
        assert!(!table.upsert(config, 3), "no change, no new version");
        assert!(!table.effective("g", false).unwrap().consume_enable);
        let version = table.data_version().counter;
        assert!(table.remove("g", 4));
        assert!(!table.remove("g", 5));
        assert_eq!(table.data_version().counter, version + 1);
    }

    #[test]
    fn persisted_groups_win_and_the_version_never_goes_back() {
        let mut table = SubscriptionGroupTable::with_system_groups(1);
        let mut persisted = SubscriptionGroupWrapper::default();
        persisted.data_version.counter = 40;
        persisted.subscription_group_table.insert(
            "TOOLS_CONSUMER".into(),
            SubscriptionGroupConfig {
                retry_queue_nums: 3,
                ..SubscriptionGroupConfig::named("TOOLS_CONSUMER")
            },
        );
        table.merge_persisted(persisted);
        assert_eq!(table.get("TOOLS_CONSUMER").unwrap().retry_queue_nums, 3);
        assert_eq!(table.data_version().counter, 40);
        assert_eq!(table.wrapper().subscription_group_table.len(), table.len());
    }

    #[test]
    fn new_groups_are_refused_past_the_memory_bound_and_bad_names_always() {
        let mut table = SubscriptionGroupTable::default();
        let mut created = 0;
        let refused = loop {
            let group = SubscriptionGroupConfig::named(format!("group-{created}"));
            match table.room_for(&group) {
                Ok(()) => assert!(table.upsert(group, 0)),
                Err(refused) => break refused,
            }
            created += 1;
        };
        assert!(table.table_bytes() <= GROUP_TABLE_BYTES_MAX);
        assert!(refused.remark.contains("table full"), "{}", refused.remark);
        let changed = SubscriptionGroupConfig {
            retry_max_times: 2,
            ..SubscriptionGroupConfig::named("group-0")
        };
        assert!(
            table.room_for(&changed).is_ok(),
            "an existing group may change"
        );
        assert!(created > 10_000);
        assert!(table
            .room_for(&SubscriptionGroupConfig::named("a b"))
            .is_err());
        assert!(table.room_for(&SubscriptionGroupConfig::named("")).is_err());
    }
}

//! `plain_acl.yml`: RocketMQ 4.x's plain-ACL file, read into [`AclRules`].
//!
//! ```yaml
//! globalWhiteRemoteAddresses:      # addresses let in without a signature or permissions
//!   - 10.10.103.*
//! accounts:
//!   - accessKey: RocketMQ          # longer than 6 characters
//!     secretKey: 12345678          # longer than 6 characters
//!     whiteRemoteAddress: ""       # its requests from here: no signature, no permission check
//!     admin: false                 # may create/delete topics and groups, change config
//!     defaultTopicPerm: DENY       # PUB, SUB, PUB|SUB, SUB|PUB or DENY (missing: DENY)
//!     defaultGroupPerm: SUB
//!     topicPerms: [topicA=DENY, topicB=PUB|SUB, topicC=SUB]
//!     groupPerms: [groupA=DENY, groupB=PUB|SUB]
//! ```
//!
//! Other keys (`dataVersion`, ...) are ignored. Scalars may be written unquoted (a numeric
//! secretKey is its digits). Unlike RocketMQ, which reads an unknown permission as DENY, a
//! misspelt permission, a duplicate accessKey or a bad address pattern rejects the whole file
//! with an error naming it.

use std::collections::HashMap;

use serde_yaml_ng::Value;

use super::address::AddressPattern;
use super::permission::{parse_perm, retry_topic, DENY};

/// The most bytes of `plain_acl.yml` read; a larger file is refused.
pub const ACL_FILE_BYTES_MAX: u64 = 4 << 20;
/// Keys must be longer than this (`AclConstants.ACCESS_KEY_MIN_LENGTH`).
const KEY_LENGTH_MIN_EXCLUSIVE: usize = 6;

/// One account of the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub access_key: String,
    pub secret_key: String,
    /// Requests of this account from here are let in without signature or permission check.
    pub white_remote_address: AddressPattern,
    pub admin: bool,
    pub default_topic_perm: u8,
    pub default_group_perm: u8,
    /// Topic permissions by topic, group permissions by the group's retry topic; `None`
    /// when the file lists neither (an admin then needs no permission check, as in
    /// RocketMQ).
    pub resource_perms: Option<HashMap<String, u8>>,
}

/// The secret stays out of logs.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("access_key", &self.access_key)
            .field("white_remote_address", &self.white_remote_address)
            .field("admin", &self.admin)
            .field("default_topic_perm", &self.default_topic_perm)
            .field("default_group_perm", &self.default_group_perm)
            .field("resource_perms", &self.resource_perms)
            .finish_non_exhaustive()
    }
}

/// The rules of one `plain_acl.yml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclRules {
    pub global_white_remote_addresses: Vec<AddressPattern>,
    pub accounts: HashMap<String, Account>,
}

impl AclRules {
    /// Parses the file's text; the error names what is wrong and where.
    pub fn parse(text: &str) -> Result<AclRules, String> {
        let root: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let root = match root {
            Value::Null => return Ok(AclRules::default()),
            Value::Mapping(map) => map,
            _ => return Err("the top level must be a mapping".into()),
        };
        let mut rules = AclRules::default();
        for pattern in string_list(root.get("globalWhiteRemoteAddresses"))
            .map_err(|e| format!("globalWhiteRemoteAddresses: {e}"))?
        {
            rules.global_white_remote_addresses.push(
                AddressPattern::parse(&pattern)
                    .map_err(|e| format!("globalWhiteRemoteAddresses: {e}"))?,
            );
        }
        let accounts = match root.get("accounts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(accounts)) => accounts.clone(),
            Some(_) => return Err("accounts: expected a list".into()),
        };
        for (index, entry) in accounts.iter().enumerate() {
            let account = parse_account(entry).map_err(|e| format!("accounts[{index}]: {e}"))?;
            if rules.accounts.contains_key(&account.access_key) {
                return Err(format!(
                    "accounts[{index}]: accessKey {:?} is listed twice",
                    account.access_key
                ));
            }
            rules.accounts.insert(account.access_key.clone(), account);
        }
        Ok(rules)
    }
}

fn parse_account(entry: &Value) -> Result<Account, String> {
    let Value::Mapping(map) = entry else {
        return Err("expected a mapping".into());
    };
    let key = |name: &str| -> Result<String, String> {
        let value = scalar(map.get(name)).map_err(|e| format!("{name}: {e}"))?;
        match value {
            Some(value) if value.chars().count() > KEY_LENGTH_MIN_EXCLUSIVE => Ok(value),
            _ => Err(format!(
                "{name} is required and must be longer than {KEY_LENGTH_MIN_EXCLUSIVE} characters"
            )),
        }
    };
    let access_key = key("accessKey")?;
    let secret_key = key("secretKey").map_err(|e| format!("accessKey {access_key:?}: {e}"))?;
    let context = |e: String| format!("accessKey {access_key:?}: {e}");
    let white = scalar(map.get("whiteRemoteAddress"))
        .map_err(|e| format!("whiteRemoteAddress: {e}"))
        .map_err(context)?
        .unwrap_or_default();
    let admin = match map.get("admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(admin)) => *admin,
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => true,
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(context("admin: expected true or false".into())),
    };
    let default_perm = |name: &str| -> Result<u8, String> {
        match scalar(map.get(name)).map_err(|e| format!("{name}: {e}"))? {
            None => Ok(DENY),
            Some(text) => parse_perm(&text).map_err(|e| format!("{name}: {e}")),
        }
    };
    let mut resource_perms = HashMap::new();
    for (field, is_group) in [("groupPerms", true), ("topicPerms", false)] {
        for item in string_list(map.get(field))
            .map_err(|e| format!("{field}: {e}"))
            .map_err(context)?
        {
            let (name, perm) = item
                .split_once('=')
                .filter(|(name, perm)| !name.trim().is_empty() && !perm.contains('='))
                .ok_or_else(|| context(format!("{field}: {item:?} is not name=PERM")))?;
            let perm =
                parse_perm(perm).map_err(|e| context(format!("{field}: {}: {e}", name.trim())))?;
            let name = name.trim();
            let resource = if is_group {
                retry_topic(name)
            } else {
                name.to_owned()
            };
            resource_perms.insert(resource, perm);
        }
    }
    Ok(Account {
        white_remote_address: AddressPattern::parse(&white)
            .map_err(|e| context(format!("whiteRemoteAddress: {e}")))?,
        admin,
        default_topic_perm: default_perm("defaultTopicPerm").map_err(context)?,
        default_group_perm: default_perm("defaultGroupPerm").map_err(context)?,
        resource_perms: (!resource_perms.is_empty()).then_some(resource_perms),
        access_key,
        secret_key,
    })
}

/// A scalar as text (`None` when absent or null).
fn scalar(value: Option<&Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(Value::Bool(flag)) => Ok(Some(flag.to_string())),
        Some(_) => Err("expected a single value".into()),
    }
}

/// A list of scalars (absent or null: empty).
fn string_list(value: Option<&Value>) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| scalar(Some(item)).map(Option::unwrap_or_default))
            .collect(),
        Some(_) => Err("expected a list".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::permission::{PUB, SUB};
    use super::*;

    /// RocketMQ's distributed `conf/plain_acl.yml` (4.9), verbatim in substance.
    const ROCKETMQ_SAMPLE: &str = r#"
globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*

accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      # the group should convert to retry topic
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB

  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    # if it is admin, it could access all resources
    admin: true
"#;

    #[test]
    fn rocketmq_sample_file() {
        let rules = AclRules::parse(ROCKETMQ_SAMPLE).expect("parses");
        assert_eq!(rules.global_white_remote_addresses.len(), 2);
        assert!(rules.global_white_remote_addresses[0].matches("10.10.103.7".parse().unwrap()));
        let first = &rules.accounts["RocketMQ"];
        assert_eq!(first.secret_key, "12345678");
        assert_eq!(first.white_remote_address, AddressPattern::Nothing);
        assert!(!first.admin);
        assert_eq!(first.default_topic_perm, DENY);
        assert_eq!(first.default_group_perm, SUB);
        let perms = first.resource_perms.as_ref().expect("perms");
        assert_eq!(perms["topicA"], DENY);
        assert_eq!(perms["topicB"], PUB | SUB);
        assert_eq!(perms["topicC"], SUB);
        assert_eq!(perms["%RETRY%groupA"], DENY);
        assert_eq!(perms["%RETRY%groupB"], PUB | SUB);
        assert_eq!(perms.len(), 6);
        let second = &rules.accounts["rocketmq2"];
        assert!(second.admin);
        assert_eq!(second.resource_perms, None);
        assert_eq!(second.default_topic_perm, DENY);
        assert!(second
            .white_remote_address
            .matches("192.168.1.20".parse().unwrap()));
    }

    proptest::proptest! {
        /// Any text, and the sample with any byte range cut out: rules or an error, never a
        /// panic.
        #[test]
        fn any_file_parses_or_fails_cleanly(
            text in ".{0,64}",
            cut in (0usize..ROCKETMQ_SAMPLE.len(), 0usize..64),
        ) {
            let _ = AclRules::parse(&text);
            let (from, len) = cut;
            let to = (from + len).min(ROCKETMQ_SAMPLE.len());
            let damaged = format!("{}{}", &ROCKETMQ_SAMPLE[..from], &ROCKETMQ_SAMPLE[to..]);
            let _ = AclRules::parse(&damaged);
        }
    }

    #[test]
    fn empty_files_have_no_rules() {
        assert_eq!(AclRules::parse("").expect("empty"), AclRules::default());
        assert_eq!(
            AclRules::parse("accounts:\n").expect("no accounts"),
            AclRules::default()
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("accounts: [", "not YAML"),
            ("- a\n- b\n", "top level"),
            ("accounts: {}\n", "accounts: expected a list"),
            ("accounts:\n  - secretKey: 12345678\n", "accessKey is required"),
            (
                "accounts:\n  - accessKey: short\n    secretKey: 12345678\n",
                "accessKey is required",
            ),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 123\n",
                "secretKey is required",
            ),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 12345678\n    topicPerms: [t=ALL]\n",
                "topicPerms: t:",
            ),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 12345678\n    topicPerms: [t]\n",
                "is not name=PERM",
            ),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 12345678\n    defaultTopicPerm: ALL\n",
                "defaultTopicPerm",
            ),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 12345678\n    whiteRemoteAddress: 1.2.3\n",
                "whiteRemoteAddress",
            ),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 12345678\n  - accessKey: goodkey1\n    secretKey: 87654321\n",
                "listed twice",
            ),
            ("globalWhiteRemoteAddresses: [nope]\n", "globalWhiteRemoteAddresses"),
            (
                "accounts:\n  - accessKey: goodkey1\n    secretKey: 12345678\n    admin: maybe\n",
                "admin",
            ),
        ];
        for (text, expected) in cases {
            let error = AclRules::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}

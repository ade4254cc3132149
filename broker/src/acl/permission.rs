//! Permissions (RocketMQ's `Permission`) and what each request needs
//! (`PlainAccessValidator.parse`).
//!
//! A group's permission is kept under its retry topic (`%RETRY%<group>`), as RocketMQ keeps
//! it: a resource whose name starts with `%RETRY%` is a group.

use thruster_protocol::body::decode_lenient;
use thruster_protocol::body::heartbeat::HeartbeatData;
use thruster_protocol::{request_code as rc, RemotingCommand};

use crate::meta::topic_config::RETRY_GROUP_TOPIC_PREFIX;

/// Permission bits (`Permission.DENY/ANY/PUB/SUB`).
pub const DENY: u8 = 1;
pub const ANY: u8 = 1 << 1;
pub const PUB: u8 = 1 << 2;
pub const SUB: u8 = 1 << 3;

/// `RMQ_SYS_TRACE_TOPIC`: a send to it is allowed to any signed account (message traces).
const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// `PUB`, `SUB`, `PUB|SUB`, `SUB|PUB` or `DENY`; anything else is an error (RocketMQ's
/// `checkResourcePerms` refuses it too).
pub fn parse_perm(text: &str) -> Result<u8, String> {
    match text.trim() {
        "PUB" => Ok(PUB),
        "SUB" => Ok(SUB),
        "PUB|SUB" | "SUB|PUB" => Ok(PUB | SUB),
        "DENY" => Ok(DENY),
        other => Err(format!(
            "permission {other:?}: expected PUB, SUB, PUB|SUB, SUB|PUB or DENY"
        )),
    }
}

/// The name of a permission set, for remarks.
pub fn perm_name(perm: u8) -> &'static str {
    match perm {
        p if p & DENY != 0 => "DENY",
        p if p & PUB != 0 && p & SUB != 0 => "PUB|SUB",
        p if p & PUB != 0 => "PUB",
        p if p & SUB != 0 => "SUB",
        p if p & ANY != 0 => "ANY",
        _ => "none",
    }
}

/// `Permission.checkPermission`: whether `owned` grants `needed`.
pub fn grants(needed: u8, owned: u8) -> bool {
    if owned & DENY != 0 {
        return false;
    }
    if needed & ANY != 0 {
        return owned & (PUB | SUB) != 0;
    }
    needed & owned != 0
}

/// Codes only an admin account may send (`Permission.ADMIN_CODE`).
pub fn needs_admin(code: i32) -> bool {
    matches!(
        code,
        rc::UPDATE_AND_CREATE_TOPIC
            | rc::UPDATE_BROKER_CONFIG
            | rc::DELETE_TOPIC_IN_BROKER
            | rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
            | rc::DELETE_SUBSCRIPTIONGROUP
    )
}

pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_GROUP_TOPIC_PREFIX}{group}")
}

pub fn is_group(resource: &str) -> bool {
    resource.starts_with(RETRY_GROUP_TOPIC_PREFIX)
}

/// `topic:<name>` or `group:<name>`, as RocketMQ prints a resource.
pub fn describe(resource: &str) -> String {
    match resource.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
        Some(group) => format!("group:{group}"),
        None => format!("topic:{resource}"),
    }
}

/// What a request needs: (resource, permission) pairs; a resource named twice keeps the last
/// need (RocketMQ's map `put`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs(pub Vec<(String, u8)>);

impl Needs {
    fn add(&mut self, resource: Option<&str>, perm: u8) {
        let Some(resource) = resource else { return };
        match self.0.iter_mut().find(|(r, _)| r == resource) {
            Some(entry) => entry.1 = perm,
            None => self.0.push((resource.to_owned(), perm)),
        }
    }

    fn add_group(&mut self, group: Option<&str>, perm: u8) {
        self.add(group.map(retry_topic).as_deref(), perm);
    }

    /// A send to the trace topic skips the permission check (RocketMQ's exception).
    pub fn is_trace_send(&self) -> bool {
        self.0.iter().any(|(r, p)| r == TRACE_TOPIC && *p == PUB)
    }
}

/// The resources `request` touches and the permission each needs, as RocketMQ 4.9 decides
/// them; plus SEND_BATCH_MESSAGE (PUB on its topic), which RocketMQ leaves unchecked. Fields
/// are read from `extFields` by their wire names; a heartbeat's groups and topics from its
/// body.
pub fn needs_of(request: &RemotingCommand) -> Result<Needs, String> {
    let ext = &request.ext_fields;
    let mut needs = Needs::default();
    match request.code {
        rc::SEND_MESSAGE => match ext.get("topic") {
            // RocketMQ reads `group` here, which a send header does not have: a send back to a
            // retry topic through SEND_MESSAGE needs nothing.
            Some(topic) if is_group(topic) => needs.add_group(ext.get("group"), SUB),
            topic => needs.add(topic, PUB),
        },
        // Java clients send batches with the V2 header (topic in `b`).
        rc::SEND_BATCH_MESSAGE => needs.add(ext.get("b").or(ext.get("topic")), PUB),
        rc::SEND_MESSAGE_V2 => match ext.get("b") {
            Some(topic) if is_group(topic) => needs.add_group(ext.get("a"), SUB),
            topic => needs.add(topic, PUB),
        },
        rc::CONSUMER_SEND_MSG_BACK => needs.add_group(ext.get("group"), SUB),
        rc::PULL_MESSAGE => {
            needs.add(ext.get("topic"), SUB);
            needs.add_group(ext.get("consumerGroup"), SUB);
        }
        rc::QUERY_MESSAGE => needs.add(ext.get("topic"), SUB),
        rc::HEART_BEAT => {
            let data: HeartbeatData = decode_lenient("heartbeat", &request.body)
                .map_err(|e| format!("heartbeat body: {e}"))?;
            for consumer in &data.consumer_data_set {
                needs.add_group(Some(&consumer.group_name), SUB);
                for subscription in &consumer.subscription_data_set {
                    needs.add(Some(&subscription.topic), SUB);
                }
            }
        }
        rc::UNREGISTER_CLIENT | rc::GET_CONSUMER_LIST_BY_GROUP => {
            needs.add_group(ext.get("consumerGroup"), SUB)
        }
        rc::UPDATE_CONSUMER_OFFSET => {
            needs.add_group(ext.get("consumerGroup"), SUB);
            needs.add(ext.get("topic"), SUB);
        }
        _ => {}
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn permission_check_as_rocketmq() {
        assert!(grants(PUB, PUB));
        assert!(grants(PUB, PUB | SUB));
        assert!(!grants(SUB, PUB));
        assert!(!grants(PUB, DENY));
        assert!(!grants(PUB, DENY | PUB));
        assert!(grants(ANY, SUB));
        assert!(grants(ANY, PUB));
        assert!(!grants(ANY, DENY));
        assert!(!grants(ANY, 0));
    }

    #[test]
    fn permission_names_parse() {
        assert_eq!(parse_perm("PUB"), Ok(PUB));
        assert_eq!(parse_perm(" SUB "), Ok(SUB));
        assert_eq!(parse_perm("PUB|SUB"), Ok(PUB | SUB));
        assert_eq!(parse_perm("SUB|PUB"), Ok(PUB | SUB));
        assert_eq!(parse_perm("DENY"), Ok(DENY));
        assert!(parse_perm("pub").is_err());
        assert!(parse_perm("ALL").is_err());
        assert_eq!(perm_name(PUB | SUB), "PUB|SUB");
    }

    fn request(code: i32, fields: &[(&str, &str)]) -> RemotingCommand {
        let mut request = RemotingCommand::bare_request(code);
        for (k, v) in fields {
            request.ext_fields.insert(*k, *v);
        }
        request
    }

    #[test]
    fn needs_by_request_code() {
        let needs = |r: RemotingCommand| needs_of(&r).expect("needs").0;
        assert_eq!(
            needs(request(rc::SEND_MESSAGE_V2, &[("a", "PG"), ("b", "T")])),
            vec![("T".to_owned(), PUB)]
        );
        assert_eq!(
            needs(request(
                rc::SEND_MESSAGE_V2,
                &[("a", "G"), ("b", "%RETRY%G")]
            )),
            vec![("%RETRY%G".to_owned(), SUB)]
        );
        assert_eq!(
            needs(request(rc::SEND_BATCH_MESSAGE, &[("topic", "T")])),
            vec![("T".to_owned(), PUB)]
        );
        assert_eq!(
            needs(request(rc::SEND_BATCH_MESSAGE, &[("a", "PG"), ("b", "T2")])),
            vec![("T2".to_owned(), PUB)]
        );
        assert_eq!(
            needs(request(
                rc::PULL_MESSAGE,
                &[("topic", "T"), ("consumerGroup", "G")]
            )),
            vec![("T".to_owned(), SUB), ("%RETRY%G".to_owned(), SUB)]
        );
        assert_eq!(
            needs(request(rc::CONSUMER_SEND_MSG_BACK, &[("group", "G")])),
            vec![("%RETRY%G".to_owned(), SUB)]
        );
        assert_eq!(
            needs(request(
                rc::UPDATE_CONSUMER_OFFSET,
                &[("topic", "T"), ("consumerGroup", "G")]
            )),
            vec![("%RETRY%G".to_owned(), SUB), ("T".to_owned(), SUB)]
        );
        assert!(needs(request(rc::GET_ROUTEINFO_BY_TOPIC, &[("topic", "T")])).is_empty());
        assert!(needs_admin(rc::UPDATE_AND_CREATE_TOPIC));
        assert!(!needs_admin(rc::SEND_MESSAGE));
    }

    #[test]
    fn heartbeat_needs_its_groups_and_topics() {
        let body = r#"{"clientID":"c","producerDataSet":[{"groupName":"PG"}],
            "consumerDataSet":[{"groupName":"G","consumeType":"CONSUME_PASSIVELY",
            "messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET",
            "subscriptionDataSet":[{"topic":"T","subString":"*"}]}]}"#;
        let hb = request(rc::HEART_BEAT, &[]).with_body(Bytes::from(body));
        assert_eq!(
            needs_of(&hb).expect("needs").0,
            vec![("%RETRY%G".to_owned(), SUB), ("T".to_owned(), SUB)]
        );
        let bad = request(rc::HEART_BEAT, &[]).with_body(Bytes::from_static(b"{nope"));
        assert!(needs_of(&bad).is_err());
    }
}

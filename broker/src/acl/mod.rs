//! RocketMQ 4.x plain ACL (`aclEnable`): accounts and permissions from `plain_acl.yml`
//! (`config.rs`, address patterns in `address.rs`), what each request needs and the
//! permission arithmetic (`permission.rs`), the file watcher (`watch.rs`). The signature
//! itself is `thruster_protocol::acl`, shared with the native client.
//!
//! [`check`] runs once per request on the shard that decoded it, before any handler
//! (`processor::dispatch`); a refusal is NO_PERMISSION (16) with a remark saying what was
//! denied and why. Each shard holds the rules as an immutable `Arc<AclRules>`; shard 0 reloads
//! the file when it changes and sends the new rules to the others (`MeshMessage::AclChanged`).
//! The name server does no ACL, as in RocketMQ 4.x.

pub mod address;
pub mod config;
pub mod permission;
pub mod watch;

use std::net::IpAddr;

use thruster_protocol::acl::{verify, ACCESS_KEY};
use thruster_protocol::RemotingCommand;

pub use config::{Account, AclRules};
use permission::{describe, grants, is_group, needs_admin, needs_of, perm_name};

/// Checks `request` from `peer` as RocketMQ's `PlainPermissionManager.validate` does:
/// a globally white-listed address passes; otherwise the request names a known account
/// (`AccessKey`); the account's own white address passes; otherwise the signature must
/// verify with its secret key, an admin-only code needs an admin account, and every resource
/// the request touches needs the permission (listed, else the account's default for topics or
/// groups). `Err` is the remark of the NO_PERMISSION answer.
pub fn check(rules: &AclRules, request: &RemotingCommand, peer: IpAddr) -> Result<(), String> {
    if rules
        .global_white_remote_addresses
        .iter()
        .any(|pattern| pattern.matches(peer))
    {
        return Ok(());
    }
    let Some(access_key) = request.ext_fields.get(ACCESS_KEY) else {
        return Err(format!(
            "ACL: request code {} has no AccessKey, and {peer} is not in \
             globalWhiteRemoteAddresses",
            request.code
        ));
    };
    let Some(account) = rules.accounts.get(access_key) else {
        return Err(format!("ACL: no account for AccessKey={access_key}"));
    };
    if account.white_remote_address.matches(peer) {
        return Ok(());
    }
    if !verify(request, &account.secret_key) {
        return Err(format!(
            "ACL: signature check failed for AccessKey={access_key} (the Signature is not the \
             HmacSHA1 of the request with this account's secretKey)"
        ));
    }
    let needs = needs_of(request).map_err(|e| {
        format!(
            "ACL: cannot tell what request code {} needs: {e}",
            request.code
        )
    })?;
    if needs.is_trace_send() {
        return Ok(());
    }
    if needs_admin(request.code) && !account.admin {
        return Err(format!(
            "ACL: request code {} needs an admin account, and AccessKey={access_key} is not one",
            request.code
        ));
    }
    let Some(owned) = &account.resource_perms else {
        if account.admin {
            return Ok(());
        }
        return check_defaults(account, &needs.0);
    };
    for (resource, needed) in &needs.0 {
        match owned.get(resource) {
            Some(&perm) if !grants(*needed, perm) => {
                return Err(refusal(access_key, resource, *needed, perm, false));
            }
            Some(_) => {}
            None => check_defaults(account, std::slice::from_ref(&(resource.clone(), *needed)))?,
        }
    }
    Ok(())
}

fn check_defaults(account: &Account, needs: &[(String, u8)]) -> Result<(), String> {
    for (resource, needed) in needs {
        let owned = if is_group(resource) {
            account.default_group_perm
        } else {
            account.default_topic_perm
        };
        if !grants(*needed, owned) {
            return Err(refusal(&account.access_key, resource, *needed, owned, true));
        }
    }
    Ok(())
}

fn refusal(access_key: &str, resource: &str, needed: u8, owned: u8, by_default: bool) -> String {
    let source = match (by_default, is_group(resource)) {
        (true, true) => " (defaultGroupPerm)",
        (true, false) => " (defaultTopicPerm)",
        (false, _) => "",
    };
    format!(
        "ACL: AccessKey={access_key} has no {} permission for {}: it has {}{source}",
        perm_name(needed),
        describe(resource),
        perm_name(owned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use thruster_protocol::acl::{sign, SessionCredentials, SIGNATURE};
    use thruster_protocol::request_code as rc;

    const RULES: &str = r#"
globalWhiteRemoteAddresses: [10.0.0.*]
accounts:
  - accessKey: producer1
    secretKey: secret-one
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms: [orders=PUB, audit=SUB, closed=DENY]
  - accessKey: admin001
    secretKey: secret-admin
    admin: true
  - accessKey: trusted1
    secretKey: secret-trusted
    whiteRemoteAddress: 192.168.1.{5,6}
"#;

    fn rules() -> AclRules {
        AclRules::parse(RULES).expect("rules")
    }

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn send(topic: &str, key: &str, secret: &str) -> RemotingCommand {
        let mut request =
            RemotingCommand::bare_request(rc::SEND_MESSAGE_V2).with_body(&b"body"[..]);
        request.ext_fields.insert("a", "PG");
        request.ext_fields.insert("b", topic);
        sign(&mut request, &SessionCredentials::new(key, secret));
        request
    }

    #[test]
    fn signature_and_topic_permissions() {
        let rules = rules();
        assert_eq!(
            check(&rules, &send("orders", "producer1", "secret-one"), local()),
            Ok(())
        );
        let wrong = check(&rules, &send("orders", "producer1", "secret-two"), local());
        assert!(wrong.unwrap_err().contains("signature check failed"));
        let sub_only = check(&rules, &send("audit", "producer1", "secret-one"), local());
        assert_eq!(
            sub_only.unwrap_err(),
            "ACL: AccessKey=producer1 has no PUB permission for topic:audit: it has SUB"
        );
        let default = check(&rules, &send("other", "producer1", "secret-one"), local());
        assert_eq!(
            default.unwrap_err(),
            "ACL: AccessKey=producer1 has no PUB permission for topic:other: it has DENY \
             (defaultTopicPerm)"
        );
        assert!(check(&rules, &send("closed", "producer1", "secret-one"), local()).is_err());
        // The trace topic is let through for any signed account.
        assert_eq!(
            check(
                &rules,
                &send("RMQ_SYS_TRACE_TOPIC", "producer1", "secret-one"),
                local()
            ),
            Ok(())
        );
    }

    #[test]
    fn tampering_after_signing_is_refused() {
        let rules = rules();
        let mut request = send("orders", "producer1", "secret-one");
        request.ext_fields.insert("b", "audit2");
        assert!(check(&rules, &request, local())
            .unwrap_err()
            .contains("signature check failed"));
    }

    #[test]
    fn unsigned_and_unknown_accounts() {
        let rules = rules();
        let mut bare = RemotingCommand::bare_request(rc::GET_ROUTEINFO_BY_TOPIC);
        bare.ext_fields.insert("topic", "orders");
        assert!(check(&rules, &bare, local())
            .unwrap_err()
            .contains("has no AccessKey"));
        // Globally white-listed: no signature needed.
        assert_eq!(check(&rules, &bare, "10.0.0.9".parse().unwrap()), Ok(()));
        let unknown = send("orders", "nobody11", "whatever");
        assert_eq!(
            check(&rules, &unknown, local()).unwrap_err(),
            "ACL: no account for AccessKey=nobody11"
        );
        // An account's own white address: no signature needed either.
        let mut unsigned = send("anything", "trusted1", "wrong-secret");
        unsigned.ext_fields.remove(SIGNATURE);
        assert_eq!(
            check(&rules, &unsigned, "192.168.1.6".parse().unwrap()),
            Ok(())
        );
        assert!(check(&rules, &unsigned, "192.168.1.7".parse().unwrap()).is_err());
    }

    #[test]
    fn admin_codes_and_groups() {
        let rules = rules();
        let mut create = RemotingCommand::bare_request(rc::UPDATE_AND_CREATE_TOPIC);
        create.ext_fields.insert("topic", "new");
        let mut by_producer = create.clone();
        sign(
            &mut by_producer,
            &SessionCredentials::new("producer1", "secret-one"),
        );
        assert_eq!(
            check(&rules, &by_producer, local()).unwrap_err(),
            "ACL: request code 17 needs an admin account, and AccessKey=producer1 is not one"
        );
        sign(
            &mut create,
            &SessionCredentials::new("admin001", "secret-admin"),
        );
        assert_eq!(check(&rules, &create, local()), Ok(()));
        // Pull: SUB on the topic (listed) and on the group (default SUB).
        let pull = |topic: &str| {
            let mut pull = RemotingCommand::bare_request(rc::PULL_MESSAGE);
            pull.ext_fields.insert("topic", topic);
            pull.ext_fields.insert("consumerGroup", "CG");
            sign(
                &mut pull,
                &SessionCredentials::new("producer1", "secret-one"),
            );
            pull
        };
        assert_eq!(check(&rules, &pull("audit"), local()), Ok(()));
        assert_eq!(
            check(&rules, &pull("orders"), local()).unwrap_err(),
            "ACL: AccessKey=producer1 has no SUB permission for topic:orders: it has PUB"
        );
    }
}

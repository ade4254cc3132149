//! RocketMQ 4.x plain-ACL request signatures, as `AclClientRPCHook`, `AclUtils` and
//! `AclSigner` compute them; shared by the broker (which checks) and the native client (which
//! signs).
//!
//! The signed content is the values of the request's `extFields` — every field but
//! `Signature`, so `AccessKey` and `SecurityToken` too — in the order of their keys as Java's
//! `TreeMap<String, String>` sorts them (UTF-16 code units), concatenated as UTF-8 with
//! nothing between them, followed by the body bytes. The signature is
//! `base64(HmacSHA1(secretKey as UTF-8, content))`, put in the `Signature` field.
//!
//! Neither the keys nor the boundaries between values are signed (RocketMQ's design):
//! `a=12, b=3` and `a=1, b=23` sign alike. Nor is a request bound to a time, so a captured
//! one can be replayed. RocketMQ 4.x's ACL has both properties; compatibility keeps them.
//!
//! The broker leaves `_UNIQUE_KEY_QUERY` out of the content (`PlainAccessValidator.parse`)
//! while Java clients sign it; [`verify`] accepts either reading.

use std::cmp::Ordering;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::{ExtFields, RemotingCommand};

/// `extFields` key of the account (`SessionCredentials.ACCESS_KEY`).
pub const ACCESS_KEY: &str = "AccessKey";
/// `extFields` key of the signature (`SessionCredentials.SIGNATURE`).
pub const SIGNATURE: &str = "Signature";
/// `extFields` key of the optional security token (`SessionCredentials.SECURITY_TOKEN`).
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// `MixAll.UNIQUE_MSG_QUERY_FLAG`: left out of the content by the broker.
pub const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";

/// An account's keys as a client holds them (`SessionCredentials`).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    pub access_key: String,
    pub secret_key: String,
    /// Sent (and signed) when set; the broker does not check it.
    pub security_token: Option<String>,
}

impl SessionCredentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        SessionCredentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }
}

/// The secret stays out of logs.
impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key", &self.access_key)
            .field("security_token", &self.security_token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// Java's `String.compareTo`: by UTF-16 code units (differs from byte order only past
/// U+FFFF).
fn java_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The bytes a signature covers: the values of `ext` whose keys `skip` does not name, sorted
/// by key as Java's `TreeMap` sorts them, then `body`.
pub fn signed_content(ext: &ExtFields, body: &[u8], skip: &[&str]) -> Vec<u8> {
    let mut fields: Vec<(&str, &str)> = ext.iter().filter(|(k, _)| !skip.contains(k)).collect();
    fields.sort_by(|a, b| java_order(a.0, b.0));
    let size_bytes = fields.iter().map(|(_, v)| v.len()).sum::<usize>() + body.len();
    let mut content = Vec::with_capacity(size_bytes);
    for (_, value) in fields {
        content.extend_from_slice(value.as_bytes());
    }
    content.extend_from_slice(body);
    content
}

/// `AclSigner.calSignature`: base64 of HmacSHA1 over `content` keyed by `secret_key`.
pub fn signature(content: &[u8], secret_key: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(content);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Signs a request as `AclClientRPCHook.doBeforeRequest` does: adds `AccessKey` (and
/// `SecurityToken`), then `Signature` over every other field and the body.
pub fn sign(request: &mut RemotingCommand, credentials: &SessionCredentials) {
    request
        .ext_fields
        .insert(ACCESS_KEY, credentials.access_key.as_str());
    if let Some(token) = &credentials.security_token {
        request.ext_fields.insert(SECURITY_TOKEN, token.as_str());
    }
    let content = signed_content(&request.ext_fields, &request.body, &[SIGNATURE]);
    let signed = signature(&content, &credentials.secret_key);
    request.ext_fields.insert(SIGNATURE, signed);
}

/// Whether `request` carries a `Signature` made with `secret_key`: over the content the
/// broker computes (without `_UNIQUE_KEY_QUERY`), or over every field but the signature, as
/// Java clients sign a query by unique key. Compared in constant time.
pub fn verify(request: &RemotingCommand, secret_key: &str) -> bool {
    let Some(given) = request.ext_fields.get(SIGNATURE) else {
        return false;
    };
    let broker_view = signed_content(
        &request.ext_fields,
        &request.body,
        &[SIGNATURE, UNIQUE_KEY_QUERY],
    );
    if equal_in_constant_time(&signature(&broker_view, secret_key), given) {
        return true;
    }
    request.ext_fields.get(UNIQUE_KEY_QUERY).is_some() && {
        let client_view = signed_content(&request.ext_fields, &request.body, &[SIGNATURE]);
        equal_in_constant_time(&signature(&client_view, secret_key), given)
    }
}

fn equal_in_constant_time(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::pull::PullMessageRequestHeader;
    use crate::request_code;

    /// RFC 2202's HMAC-SHA1 cases 1 and 2, base64 encoded (hex b617318655057264e28bc0b6fb378c8ef146be00
    /// and effcdf6ae5eb2fa2d27416d5f184df9c259a7c79).
    #[test]
    fn signature_matches_rfc_2202() {
        let key = String::from_utf8(vec![0x0b; 20]).expect("ascii");
        assert_eq!(signature(b"Hi There", &key), "thcxhlUFcmTii8C2+zeMjvFGvgA=");
        assert_eq!(
            signature(b"what do ya want for nothing?", "Jefe"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    /// AclSignerTest's inputs ("RocketMQ", key "12345678"); the expected value was computed
    /// independently with Python's `hmac` and `base64` modules.
    #[test]
    fn signature_of_rocketmq_signer_test_input() {
        assert_eq!(
            signature(b"RocketMQ", "12345678"),
            "IUc8rrO/0gDch8CjObLQsW2rsiA="
        );
    }

    /// The request of AclClientRPCHookTest.testParseRequestContent (a PULL_MESSAGE header,
    /// AccessKey "ak"): the content is the sorted fields' values, and the signature with
    /// secret "12345678" was computed independently with Python's `hmac` over those bytes.
    #[test]
    fn pull_request_content_and_signature() {
        let header = PullMessageRequestHeader {
            consumer_group: "group".into(),
            topic: "topic".into(),
            queue_id: 1,
            queue_offset: 2,
            max_msg_nums: 32,
            sys_flag: 0,
            commit_offset: 0,
            suspend_timeout_millis: 15000,
            subscription: None,
            sub_version: 0,
            expression_type: None,
            max_msg_bytes: None,
            broker_name: None,
        };
        let mut request = RemotingCommand::request(request_code::PULL_MESSAGE, &header);
        sign(&mut request, &SessionCredentials::new("ak", "12345678"));
        // AccessKey, commitOffset, consumerGroup, maxMsgNums, queueId, queueOffset,
        // subVersion, suspendTimeoutMillis, sysFlag, topic.
        let content = signed_content(&request.ext_fields, &request.body, &[SIGNATURE]);
        assert_eq!(
            String::from_utf8(content).expect("utf-8"),
            "ak0group32120150000topic"
        );
        assert_eq!(
            request.ext_fields.get(SIGNATURE),
            Some("PZrbkc6auZTq1b8vJ0hWjMCIuus=")
        );
        assert!(verify(&request, "12345678"));
        assert!(!verify(&request, "12345679"));
    }

    #[test]
    fn body_is_signed_after_the_fields() {
        let mut request =
            RemotingCommand::bare_request(request_code::SEND_MESSAGE).with_body(&b"hello"[..]);
        request.ext_fields.insert("b", "2");
        request.ext_fields.insert("a", "1");
        sign(&mut request, &SessionCredentials::new("key", "secret"));
        let content = signed_content(&request.ext_fields, &request.body, &[SIGNATURE]);
        assert_eq!(content, b"key12hello");
        let mut tampered = request.clone();
        tampered.body = bytes::Bytes::from_static(b"hellO");
        assert!(verify(&request, "secret"));
        assert!(!verify(&tampered, "secret"));
        let mut unsigned = request.clone();
        unsigned.ext_fields.remove(SIGNATURE);
        assert!(!verify(&unsigned, "secret"));
    }

    /// Java's TreeMap orders by UTF-16 code units: U+FF5E sorts before U+1F600 in UTF-8 byte
    /// order but after it in UTF-16 (0xD83D < 0xFF5E).
    #[test]
    fn keys_sort_as_java_strings() {
        let ext: ExtFields = [("\u{1F600}", "smile"), ("\u{FF5E}", "tilde")]
            .into_iter()
            .collect();
        assert_eq!(signed_content(&ext, b"", &[]), b"smiletilde");
    }

    #[test]
    fn unique_key_query_may_or_may_not_be_signed() {
        let mut request = RemotingCommand::bare_request(request_code::QUERY_MESSAGE);
        request.ext_fields.insert("topic", "t");
        request.ext_fields.insert(UNIQUE_KEY_QUERY, "true");
        // As a Java client signs: everything but the signature.
        sign(&mut request, &SessionCredentials::new("key", "secret"));
        assert!(verify(&request, "secret"));
        // As the broker computes it: without the flag.
        let content = signed_content(
            &request.ext_fields,
            &request.body,
            &[SIGNATURE, UNIQUE_KEY_QUERY],
        );
        let signed = signature(&content, "secret");
        request.ext_fields.insert(SIGNATURE, signed);
        assert!(verify(&request, "secret"));
        assert!(!verify(&request, "other"));
    }

    proptest::proptest! {
        /// Signed with a secret: verified with it, refused with another, refused once any
        /// signed value or the body changes; whatever the fields (keys and values of any
        /// characters) and body.
        #[test]
        fn a_signature_covers_every_field_and_the_body(
            fields in proptest::collection::btree_map(".{1,8}", ".{0,8}", 0..8),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            secret in ".{1,16}",
            changed in 0usize..9,
        ) {
            let mut request = RemotingCommand::bare_request(request_code::SEND_MESSAGE)
                .with_body(body.clone());
            for (k, v) in &fields {
                request.ext_fields.insert(k.as_str(), v.as_str());
            }
            sign(&mut request, &SessionCredentials::new("access", secret.as_str()));
            proptest::prop_assert!(verify(&request, &secret));
            let other = format!("{secret}x");
            proptest::prop_assert!(!verify(&request, &other));
            let mut tampered = request.clone();
            match fields.keys().nth(changed).filter(|k| k.as_str() != SIGNATURE) {
                Some(key) => {
                    let value = format!("{}!", tampered.ext_fields.get(key).unwrap_or_default());
                    tampered.ext_fields.insert(key.as_str(), value);
                }
                None => tampered.body = [&body[..], b"!"].concat().into(),
            }
            proptest::prop_assert!(!verify(&tampered, &secret));
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", SessionCredentials::new("key", "very-secret"));
        assert!(
            shown.contains("key") && !shown.contains("very-secret"),
            "{shown}"
        );
    }
}

//! Client settings shared by every front end.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::error::{ClientError, ClientResult};
use crate::protocol::acl::{self, SessionCredentials};
use crate::protocol::RemotingCommand;

/// Settings shared by producers and consumers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name servers, tried in turn.
    pub namesrv_addrs: Vec<SocketAddr>,
    /// Per request (sends, pulls add their suspend time).
    pub request_timeout: Duration,
    /// How long a cached route is used before it is fetched again (RocketMQ: 30 s).
    pub route_refresh: Duration,
    /// `instanceName`: part of the client id; distinct values let one process hold several
    /// members of a group.
    pub instance_name: String,
    /// Against a Thruster broker that advertises its shards, send each queue's requests to
    /// the shard that owns it, so they never cross cores on the broker. Other brokers are
    /// unaffected.
    pub shard_aware: bool,
    /// `heartbeatBrokerInterval`: how often producers that must be reachable by brokers
    /// (transaction checks, replies) say so (RocketMQ: 30 s).
    pub heartbeat_interval: Duration,
    /// ACL account (`AclClientRPCHook`): when set, every request is signed with it
    /// (`AccessKey`, `Signature`), name server requests too, as the Java client does.
    pub credentials: Option<SessionCredentials>,
}

impl ClientConfig {
    /// `addrs`: `host:port;host:port`.
    pub fn new(addrs: &str) -> ClientResult<ClientConfig> {
        let mut namesrv_addrs = Vec::new();
        for part in addrs
            .split([';', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let addr = part
                .to_socket_addrs()
                .map_err(|e| ClientError::InvalidArgument(format!("name server {part:?}: {e}")))?
                .next()
                .ok_or_else(|| ClientError::InvalidArgument(format!("name server {part:?}")))?;
            namesrv_addrs.push(addr);
        }
        if namesrv_addrs.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no name server address".into(),
            ));
        }
        Ok(ClientConfig {
            namesrv_addrs,
            request_timeout: Duration::from_secs(3),
            route_refresh: Duration::from_secs(30),
            instance_name: format!("{}", std::process::id()),
            shard_aware: true,
            heartbeat_interval: Duration::from_secs(30),
            credentials: None,
        })
    }

    pub fn with_credentials(mut self, credentials: SessionCredentials) -> ClientConfig {
        self.credentials = Some(credentials);
        self
    }

    /// Signs `request` with the configured credentials, if any; the front ends call this on
    /// every request they send, last, so the signature covers the header as sent.
    pub fn sign(&self, request: &mut RemotingCommand) {
        if let Some(credentials) = &self.credentials {
            acl::sign(request, credentials);
        }
    }

    pub fn with_instance_name(mut self, name: impl Into<String>) -> ClientConfig {
        self.instance_name = name.into();
        self
    }
}

//! GET_BROKER_CONFIG (26) and UPDATE_BROKER_CONFIG (25). The body is Java properties text; the
//! answer to GET carries the config's `DataVersion` in its `version` header field, as Java's.
//! Only the keys of `live_config::LIVE_KEYS` change at runtime (every shard takes them at
//! once); an update naming any other key is refused whole, saying which keys need a restart.

use thruster_protocol::body::DataVersion;
use thruster_protocol::{response_code, RemotingCommand};
use tracing::info;

use super::{BrokerProcessor, Handled};
use crate::config::parse_properties;
use crate::live_config::properties_text;
use crate::remoting::Failure;
use crate::shard::MeshMessage;

/// GET_BROKER_CONFIG: every key with its current value.
pub fn get(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let text = properties_text(&shard.config, &shard.live.get());
    let version = DataVersion {
        counter: shard.live.get().version,
        state_version: 0,
        timestamp: shard.boot_ms,
    };
    let mut response = request.success().with_body(text.into_bytes());
    response.ext_fields.insert(
        "version",
        serde_json::to_string(&version).expect("plain data"),
    );
    Ok(response.into())
}

/// UPDATE_BROKER_CONFIG: applies the body's keys on every shard, or refuses them all.
pub async fn update(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let text = std::str::from_utf8(&request.body)
        .map_err(|e| Failure::system(format!("the config body is not UTF-8: {e}")))?;
    let pairs = parse_properties(text);
    if pairs.is_empty() {
        return Err(Failure::system("no key=value in the request body"));
    }
    let settings = shard
        .live
        .get()
        .updated(&shard.config, &pairs)
        .map_err(|reason| Failure::new(response_code::SYSTEM_ERROR, reason))?;
    info!(peer_keys = ?pairs, "broker config updated");
    shard.apply_settings(settings);
    shard
        .broadcast(|| MeshMessage::SettingsChanged(settings))
        .await;
    Ok(request.success().into())
}

//! Name server settings, as UPDATE_NAMESRV_CONFIG / GET_NAMESRV_CONFIG see them
//! (Java properties text, `key=value` lines).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::route_info::BROKER_EXPIRE_MS_DEFAULT;
use crate::config::parse_properties;

#[derive(Debug, Clone)]
pub struct NamesrvConfig {
    pub listen_addr: SocketAddr,
    /// How often silent brokers are looked for (Java `scanNotActiveBrokerInterval`).
    pub scan_not_active_broker_interval_ms: u64,
    /// Silence after which a broker is removed (Java's fixed 120 s; per broker in 5.x).
    pub broker_channel_expired_time_ms: u64,
    /// Put `orderTopicConf` from the `ORDER_TOPIC_CONFIG` KV namespace into route data.
    pub order_message_enable: bool,
    /// 5.x: GET_ALL_TOPIC_LIST_FROM_NAMESERVER may be disabled.
    pub enable_all_topic_list: bool,
    pub kv_config_path: Option<PathBuf>,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        NamesrvConfig {
            listen_addr: "127.0.0.1:9876".parse().expect("literal address"),
            scan_not_active_broker_interval_ms: 5_000,
            broker_channel_expired_time_ms: BROKER_EXPIRE_MS_DEFAULT,
            order_message_enable: false,
            enable_all_topic_list: true,
            kv_config_path: None,
        }
    }
}

/// Keys Java refuses to change at run time (`configBlackList`).
const BLACK_LIST: [&str; 3] = ["configStorePath", "kvConfigPath", "listenPort"];

impl NamesrvConfig {
    /// Properties text for GET_NAMESRV_CONFIG.
    pub fn to_properties(&self) -> String {
        let kv_path = self
            .kv_config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "brokerChannelExpiredTime={}\nenableAllTopicList={}\nkvConfigPath={kv_path}\nlistenPort={}\norderMessageEnable={}\nscanNotActiveBrokerInterval={}\n",
            self.broker_channel_expired_time_ms,
            self.enable_all_topic_list,
            self.listen_addr.port(),
            self.order_message_enable,
            self.scan_not_active_broker_interval_ms,
        )
    }

    /// Applies UPDATE_NAMESRV_CONFIG properties. Unknown keys are ignored (as in Java);
    /// black-listed keys and unparsable values refuse the whole update.
    pub fn update(&mut self, properties: &str) -> Result<Vec<String>, String> {
        let pairs = parse_properties(properties);
        if let Some((key, _)) = pairs.iter().find(|(k, _)| BLACK_LIST.contains(&k.as_str())) {
            return Err(format!("Can not update config in black list: {key}"));
        }
        let mut next = self.clone();
        let mut ignored = Vec::new();
        for (key, value) in &pairs {
            let bad = || format!("illegal value {value:?} for {key}");
            match key.as_str() {
                "scanNotActiveBrokerInterval" => {
                    next.scan_not_active_broker_interval_ms =
                        value.parse().ok().filter(|v| *v > 0).ok_or_else(bad)?
                }
                "brokerChannelExpiredTime" => {
                    next.broker_channel_expired_time_ms =
                        value.parse().ok().filter(|v| *v > 0).ok_or_else(bad)?
                }
                "orderMessageEnable" => {
                    next.order_message_enable = value.parse().map_err(|_| bad())?
                }
                "enableAllTopicList" => {
                    next.enable_all_topic_list = value.parse().map_err(|_| bad())?
                }
                _ => ignored.push(key.clone()),
            }
        }
        *self = next;
        Ok(ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_applies_known_keys_ignores_unknown_and_refuses_black_listed() {
        let mut config = NamesrvConfig::default();
        let ignored = config
            .update("# c\norderMessageEnable=true\nscanNotActiveBrokerInterval = 700\nfoo=bar\n")
            .unwrap();
        assert_eq!(ignored, vec!["foo".to_string()]);
        assert!(config.order_message_enable);
        assert_eq!(config.scan_not_active_broker_interval_ms, 700);
        assert!(config.update("kvConfigPath=/tmp/x").is_err());
        assert!(config.update("orderMessageEnable=maybe").is_err());
        assert!(config.update("scanNotActiveBrokerInterval=0").is_err());
        assert!(
            config.order_message_enable,
            "a refused update changes nothing"
        );
        let text = config.to_properties();
        assert!(text.contains("orderMessageEnable=true\n") && text.contains("listenPort=9876\n"));
    }
}

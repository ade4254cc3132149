//! Name server KV configuration (namespace -> key -> value), e.g. `ORDER_TOPIC_CONFIG`.
//!
//! Persisted, when a path is configured, as Java's `kvConfig.json`
//! (`{"configTable":{"<namespace>":{"<key>":"<value>"}}}`), written to a temporary file and
//! renamed so a crash never leaves a torn file.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct KvConfigFile {
    config_table: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
pub struct KvConfig {
    table: BTreeMap<String, BTreeMap<String, String>>,
    path: Option<PathBuf>,
}

impl KvConfig {
    /// Loads `path` if given and present.
    pub fn load(path: Option<PathBuf>) -> io::Result<KvConfig> {
        let mut config = KvConfig {
            table: BTreeMap::new(),
            path,
        };
        if let Some(path) = &config.path {
            match fs::read(path) {
                Ok(bytes) => {
                    let file: KvConfigFile = thruster_protocol::body::decode_lenient(
                        "kvConfig", &bytes,
                    )
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    config.table = file.config_table;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", path.display()),
                    ))
                }
            }
        }
        Ok(config)
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.table.get(namespace)?.get(key).map(String::as_str)
    }

    pub fn namespace(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.table.get(namespace)
    }

    pub fn put(&mut self, namespace: &str, key: &str, value: &str) {
        self.table
            .entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        self.persist();
    }

    pub fn delete(&mut self, namespace: &str, key: &str) {
        if let Some(entries) = self.table.get_mut(namespace) {
            entries.remove(key);
            if entries.is_empty() {
                self.table.remove(namespace);
            }
        }
        self.persist();
    }

    /// Best effort, as in Java: a failed write is logged and the in-memory table still serves.
    fn persist(&self) {
        let Some(path) = &self.path else { return };
        let file = KvConfigFile {
            config_table: self.table.clone(),
        };
        let result = (|| -> io::Result<()> {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            fs::write(&tmp, serde_json::to_vec_pretty(&file)?)?;
            fs::rename(&tmp, path)
        })();
        if let Err(error) = result {
            warn!(path = %path.display(), %error, "persisting KV config failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namesrv/kvConfig.json");
        let mut kv = KvConfig::load(Some(path.clone())).unwrap();
        kv.put("ORDER_TOPIC_CONFIG", "T", "broker-a:4");
        kv.put("ns", "k", "v");
        kv.delete("ns", "k");
        assert_eq!(kv.get("ORDER_TOPIC_CONFIG", "T"), Some("broker-a:4"));
        assert_eq!(kv.get("ns", "k"), None);
        let reloaded = KvConfig::load(Some(path.clone())).unwrap();
        assert_eq!(reloaded.get("ORDER_TOPIC_CONFIG", "T"), Some("broker-a:4"));
        assert!(reloaded.namespace("ns").is_none());
        fs::write(&path, b"{garbage").unwrap();
        let error = KvConfig::load(Some(path.clone())).unwrap_err();
        assert!(error.to_string().contains("kvConfig.json"), "{error}");
    }
}

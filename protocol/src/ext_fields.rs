//! [`ExtFields`]: a command's "custom header" map, into which typed headers (`header/`) encode
//! and which both header serializations (`json_header.rs`, `binary_header.rs`) carry.

/// Fields a decoded header may carry. RocketMQ's headers have at most ~25; the decoders refuse
/// more, so the linear `insert` below stays bounded (a header of 100 000 fields, 11 MB, once
/// held a reactor for 15.6 s).
pub const EXT_FIELDS_MAX: usize = 256;

/// The "custom header" map (`extFields`): every typed header field as a string.
///
/// A small vector, not a hash map: headers carry at most ~20 entries, and a linear scan over
/// them is cheaper than hashing on the hot send path. Keys are unique; `insert` replaces.
/// Decoded headers hold at most [`EXT_FIELDS_MAX`].
#[derive(Debug, Clone, Default)]
pub struct ExtFields {
    entries: Vec<(String, String)>,
}

/// Equality ignores order: the map is a Java `HashMap` on the other side.
impl PartialEq for ExtFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for ExtFields {}

impl ExtFields {
    pub fn new() -> ExtFields {
        ExtFields::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing an earlier value (the last duplicate wins, as in Java's
    /// `HashMap`).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut ext = ExtFields::new();
        for (k, v) in iter {
            ext.insert(k, v);
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_fields_insert_replaces_and_keeps_order() {
        let mut ext = ExtFields::new();
        ext.insert("b", "1");
        ext.insert("a", "2");
        ext.insert("b", "3");
        assert_eq!(ext.get("b"), Some("3"));
        assert_eq!(ext.iter().collect::<Vec<_>>(), vec![("b", "3"), ("a", "2")]);
        assert_eq!(ext.remove("b"), Some("3".to_string()));
        assert_eq!(ext.get("b"), None);
        assert_eq!(ext.len(), 1);
    }
}

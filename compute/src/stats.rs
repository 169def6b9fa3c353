//! The storage side's counters as data: [`StorageStats`] from `AUTOLOC.STATS` (a typed reply,
//! what the placement controller reads the storage side's load from), and [`info_field`], the
//! one reader of `INFO` text left (for the server's version in benchmark headers).

use std::collections::BTreeMap;

use autoloc_dataplane::{Connection, Frame};
use autoloc_functions::Error as FnError;

use crate::{Error, Result};

/// The module's counters at one moment: per function `<function>_<counter>`, the data plane's
/// `dataplane_*`, and `budget_us`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    fields: BTreeMap<String, u64>,
}

impl StorageStats {
    /// Reads `AUTOLOC.STATS` over `conn`.
    pub fn read(conn: &mut Connection) -> Result<StorageStats> {
        let reply = conn
            .call(&["AUTOLOC.STATS"])
            .map_err(|source| Error::Connection {
                url: conn.url().to_string(),
                source,
            })?;
        StorageStats::from_reply(reply)
    }

    /// Parses an `AUTOLOC.STATS` reply: `name value` pairs.
    pub fn from_reply(reply: Frame) -> Result<StorageStats> {
        let bad =
            |what: String| Error::Function(FnError::Malformed(format!("AUTOLOC.STATS: {what}")));
        let items = match reply {
            Frame::Array(Some(items)) if items.len() % 2 == 0 => items,
            Frame::Error(e) => return Err(Error::Function(FnError::from_resp(&e))),
            other => return Err(bad(format!("unexpected reply {other:?}"))),
        };
        let mut fields = BTreeMap::new();
        let mut items = items.into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            match (name, value) {
                (Frame::Bulk(Some(name)), Frame::Int(v)) => {
                    let v = u64::try_from(v).map_err(|_| bad(format!("negative value {v}")))?;
                    fields.insert(String::from_utf8_lossy(&name).into_owned(), v);
                }
                (n, v) => return Err(bad(format!("bad pair {n:?} {v:?}"))),
            }
        }
        Ok(StorageStats { fields })
    }

    /// One counter, by its full name (e.g. `khop_calls`, `dataplane_requests`).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }

    /// The share of the last window the storage side's data-plane threads held Redis's lock.
    pub fn busy(&self) -> Option<f64> {
        self.get("dataplane_busy_permille")
            .map(|p| p as f64 / 1000.0)
    }

    /// The counters of the function `name`: `calls`, `errors`, `pushbacks`, `cpu_us`,
    /// `keys_read`, `bytes_read`.
    pub fn function(&self, name: &str) -> BTreeMap<String, u64> {
        let prefix = format!("{name}_");
        self.fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), *v)))
            .collect()
    }
}

/// The value of `field` in `INFO <section>` over `conn`, if the server has it.
pub fn info_field(conn: &mut Connection, section: &str, field: &str) -> Option<String> {
    let Ok(Frame::Bulk(Some(text))) = conn.call(&["INFO", section]) else {
        return None;
    };
    String::from_utf8_lossy(&text).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_rejects_others() {
        let b = |s: &str| Frame::Bulk(Some(s.as_bytes().to_vec()));
        let s = StorageStats::from_reply(Frame::Array(Some(vec![
            b("khop_calls"),
            Frame::Int(3),
            b("dataplane_busy_permille"),
            Frame::Int(250),
        ])))
        .unwrap();
        assert_eq!(s.get("khop_calls"), Some(3));
        assert_eq!(s.busy(), Some(0.25));
        assert_eq!(s.function("khop").get("calls"), Some(&3));
        assert!(StorageStats::from_reply(Frame::Array(Some(vec![b("x")]))).is_err());
        let e = StorageStats::from_reply(Frame::Error("NOAUTH Authentication required.".into()));
        assert!(
            matches!(e, Err(Error::Function(f)) if f.code() == autoloc_functions::ErrorCode::NoPerm)
        );
    }
}

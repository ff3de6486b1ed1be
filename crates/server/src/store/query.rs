//! Twins read page by page for IoT Hub's query API (`SELECT * FROM devices`, optionally
//! `WHERE tags.NAME = 'VALUE'`): keyset paging in device id order, so every page is one range
//! scan of the primary key whose cost does not grow with the fleet.

use sqlx::Row as _;

use super::twins::twin_from_row;
use super::{Backend, Store, StoreError, Twin};

/// A twin as the query API lists it, with the device facts it shows beside the twin.
#[derive(Debug, Clone, PartialEq)]
pub struct QueriedTwin {
    /// The twin.
    pub twin: Twin,
    /// Last MQTT activity (RFC 3339).
    pub last_activity: Option<String>,
    /// When the connection state last changed (RFC 3339).
    pub connection_state_updated: Option<String>,
}

/// Which twins a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwinFilter {
    /// Every twin.
    All,
    /// Twins whose top-level tag `name` is the string `value`.
    TagEquals {
        /// The tag: letters, digits, `_` and `-` only (checked by [`TwinFilter::tag`]).
        name: String,
        /// The string it must equal.
        value: String,
    },
}

impl TwinFilter {
    /// `tags.<name> = '<value>'`; `None` when `name` is not letters, digits, `_` and `-`.
    pub fn tag(name: &str, value: &str) -> Option<Self> {
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        plain.then(|| Self::TagEquals { name: name.to_owned(), value: value.to_owned() })
    }
}

/// The columns [`twin_from_row`] reads, and the device facts of [`QueriedTwin`].
macro_rules! columns {
    () => {
        "SELECT device_id, tags, desired, desired_version, reported, reported_version, twin_version, model_id, \
         status, connection_state, last_activity, connection_state_updated FROM devices WHERE device_id > $1"
    };
}

const ALL: &str = concat!(columns!(), " ORDER BY device_id LIMIT $2");

// The tag name is bound, never spliced into the SQL. A tag that is a number or an object never
// equals a string, on either backend.
const TAG_SQLITE: &str = concat!(
    columns!(),
    " AND json_type(tags, $2) = 'text' AND json_extract(tags, $2) = $3 ORDER BY device_id LIMIT $4"
);
const TAG_POSTGRES: &str =
    concat!(columns!(), " AND (CAST(tags AS jsonb) -> $2) = to_jsonb(CAST($3 AS text)) ORDER BY device_id LIMIT $4");

impl Store {
    /// Up to `limit` twins selected by `filter`, in device id order, starting after the device
    /// id `after` (`""` for the first page).
    pub async fn query_twins(
        &self,
        filter: &TwinFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<QueriedTwin>, StoreError> {
        let limit = limit.clamp(1, 10_000);
        let rows = match filter {
            TwinFilter::All => sqlx::query(ALL).bind(after).bind(limit).fetch_all(&self.pool).await?,
            TwinFilter::TagEquals { name, value } => {
                let (sql, key) = match self.backend {
                    Backend::Sqlite => (TAG_SQLITE, format!("$.\"{name}\"")),
                    Backend::Postgres => (TAG_POSTGRES, name.clone()),
                };
                sqlx::query(sql).bind(after).bind(key).bind(value).bind(limit).fetch_all(&self.pool).await?
            }
        };
        rows.iter()
            .map(|row| {
                Ok(QueriedTwin {
                    twin: twin_from_row(row)?,
                    last_activity: row.try_get("last_activity")?,
                    connection_state_updated: row.try_get("connection_state_updated")?,
                })
            })
            .collect()
    }
}

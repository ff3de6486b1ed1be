//! The event bus: changes other parts of the node react to (a desired patch to deliver, a
//! session that moved to another connection, a revoked device), crossing nodes through
//! PostgreSQL `LISTEN/NOTIFY` with a payload that names the device and version only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use super::{Backend, Store, StoreError};

/// The PostgreSQL notification channel of events.
pub(super) const NOTIFY_CHANNEL: &str = "duhub_events";

/// A change other parts of the system react to. Events cross nodes on PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The desired properties of a device changed.
    DesiredChanged {
        /// The device.
        device_id: String,
        /// The new desired `$version`.
        version: i64,
        /// The patch with `$version`, when known (events from other nodes carry none; read it
        /// with [`Store::desired_patch`]). Shared: every subscriber's copy of the event is a
        /// pointer, not a copy of the document.
        patch: Option<Arc<Value>>,
    },
    /// A device connected to some node: other connections of it must close.
    SessionOpened {
        /// The device.
        device_id: String,
        /// The node and connection that now own it.
        session: String,
    },
    /// A device was deleted or disabled: its connections must close.
    DeviceRevoked {
        /// The device.
        device_id: String,
    },
}

impl Store {
    /// Subscribes to events from this node and, on PostgreSQL, from the others.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Publishes an event to this node's subscribers and the other nodes.
    pub async fn publish(&self, event: Event) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(wire_event(&self.node_id, &event).to_string())
                .execute(&self.pool)
                .await?;
        }
        let _ = self.events.send(event);
        Ok(())
    }

    pub(super) async fn listen(&self, url: &str) -> Result<(), StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let events = self.events.clone();
        let node_id = self.node_id.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => {
                        if let Some(event) = parse_wire_event(notification.payload(), &node_id) {
                            let _ = events.send(event);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the database event listener; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

/// An event as other nodes receive it through `NOTIFY` (patches are read from the table: a
/// notification carries at most 8000 bytes).
pub(super) fn wire_event(node: &str, event: &Event) -> Value {
    match event {
        Event::DesiredChanged { device_id, version, .. } => {
            serde_json::json!({"node": node, "kind": "desired", "device": device_id, "version": version})
        }
        Event::SessionOpened { device_id, session } => {
            serde_json::json!({"node": node, "kind": "session", "device": device_id, "session": session})
        }
        Event::DeviceRevoked { device_id } => serde_json::json!({"node": node, "kind": "revoked", "device": device_id}),
    }
}

fn parse_wire_event(payload: &str, own_node: &str) -> Option<Event> {
    let value: Value = serde_json::from_str(payload).ok()?;
    if value.get("node").and_then(Value::as_str) == Some(own_node) {
        return None;
    }
    let device_id = value.get("device")?.as_str()?.to_owned();
    match value.get("kind")?.as_str()? {
        "desired" => Some(Event::DesiredChanged { device_id, version: value.get("version")?.as_i64()?, patch: None }),
        "session" => Some(Event::SessionOpened { device_id, session: value.get("session")?.as_str()?.to_owned() }),
        "revoked" => Some(Event::DeviceRevoked { device_id }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_nodes_without_their_patch() {
        let events = [
            Event::DesiredChanged {
                device_id: "d1".into(),
                version: 7,
                patch: Some(Arc::new(serde_json::json!({"a": 1}))),
            },
            Event::SessionOpened { device_id: "d1".into(), session: "n1/3".into() },
            Event::DeviceRevoked { device_id: "d1".into() },
        ];
        for event in events {
            let payload = wire_event("n1", &event).to_string();
            assert_eq!(parse_wire_event(&payload, "n1"), None, "a node ignores its own events");
            let received = parse_wire_event(&payload, "n2").unwrap();
            match (&event, received) {
                (Event::DesiredChanged { version, .. }, Event::DesiredChanged { version: v, patch, .. }) => {
                    assert_eq!((*version, patch), (v, None));
                }
                (expected, received) => assert_eq!(expected, &received),
            }
        }
        assert_eq!(parse_wire_event("{}", "n2"), None);
        assert_eq!(parse_wire_event("not json", "n2"), None);
    }
}

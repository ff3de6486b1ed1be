//! The device endpoint: MQTT 3.1.1 sessions as IoT Hub speaks them (twin GET, reported and
//! desired patches), and the registry of connected devices on this node.
//!
//! One task per connection ([`connection`]); no thread per device. The registry maps a device
//! id to its live session so that desired patches reach it and a second connection replaces
//! the first (on this node directly, on other nodes through [`Event::SessionOpened`]).

mod connection;
pub(crate) mod frame;
mod lease;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::FutureExt as _;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use crate::store::{Event, Store};

/// What the hub tells a live session.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// Deliver a desired patch (with `$version`), shared with the event it came from.
    Desired(Arc<Value>),
    /// Close the connection.
    Close(&'static str),
}

/// With the `test-hooks` feature: a request to this path panics in its handler.
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC_PATH: &str = "/test-hooks/panic";

/// With the `test-hooks` feature: a device publishing to this topic panics its connection task.
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC_TOPIC: &str = "$duhub/test-hooks/panic";

struct Session {
    connection: u64,
    commands: Arc<Inbox>,
}

/// Most commands waiting in one session's inbox; more are dropped (as a full channel's
/// `try_send` would): a device that far behind catches up with a twin GET when it reconnects.
const INBOX_CAPACITY: usize = 64;

/// The commands waiting for one live session: a queue and a wake-up. Every connected device has
/// one while it is idle, so it is kept small: about a hundred bytes and nothing allocated while
/// empty, where a tokio channel allocated its first block of 32 slots (about 1 KiB) up front.
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<Command>>,
    ready: Notify,
}

impl Inbox {
    fn new() -> Arc<Self> {
        Arc::new(Self { queue: Mutex::new(VecDeque::new()), ready: Notify::new() })
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Command>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `command` unless the inbox is full.
    fn offer(&self, command: Command) {
        {
            let mut queue = self.queue();
            if queue.len() >= INBOX_CAPACITY {
                return;
            }
            queue.push_back(command);
        }
        self.ready.notify_one();
    }

    /// The next command, once there is one. Cancel-safe: a command is taken only in the poll that
    /// returns it (and a wake-up that finds nothing waits again).
    pub(crate) async fn next(&self) -> Command {
        loop {
            {
                let mut queue = self.queue();
                if let Some(command) = queue.pop_front() {
                    if queue.is_empty() {
                        queue.shrink_to_fit();
                    }
                    return command;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// Limits and names the hub enforces.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The host name devices' SAS tokens must name.
    pub hostname: String,
    /// Largest MQTT packet accepted.
    pub max_packet_bytes: usize,
    /// How long a client has to send CONNECT.
    pub connect_timeout: std::time::Duration,
}

impl HubSettings {
    /// Defaults for `hostname`.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            max_packet_bytes: 256 * 1024 + 1024,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The device endpoint of one node.
pub struct Hub {
    store: Store,
    settings: HubSettings,
    sessions: Mutex<HashMap<String, Session>>,
    next_connection: AtomicU64,
}

impl Hub {
    /// A hub over `store`; starts the task that routes store events to sessions.
    pub fn start(store: Store, settings: HubSettings) -> Arc<Self> {
        let hub = Arc::new(Self {
            store,
            settings,
            sessions: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&hub);
        let mut events = hub.store.subscribe();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "hub fell behind the event stream; devices catch up with a twin GET");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(hub) = weak.upgrade() else { return };
                hub.on_event(event).await;
            }
        });
        hub
    }

    /// The limits and names it enforces.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Number of devices connected to this node.
    pub fn connected(&self) -> usize {
        self.sessions().len()
    }

    /// The session map. A panic elsewhere while it was held (a bug) does not make it unusable:
    /// every change to it is a single insert or remove, so it is consistent.
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one device connection (TLS already terminated) until it ends.
    ///
    /// A panic in the connection (a bug) ends this connection only: it is logged, and the
    /// device's session is removed here and recorded as disconnected, as at any other end.
    ///
    /// The session's future is boxed: the task that awaits it (and whatever else that task did
    /// before, such as the TLS handshake) then holds a pointer, not a second copy of the stream,
    /// for every idle connection.
    pub fn serve<S>(self: Arc<Self>, stream: S, peer: SocketAddr) -> Pin<Box<impl Future<Output = ()> + Send>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let mut registered = None;
            let outcome =
                std::panic::AssertUnwindSafe(connection::run(self.clone(), stream, peer, id, &mut registered))
                    .catch_unwind()
                    .await;
            if let Err(panic) = outcome {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|m| (*m).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%peer, device = registered.as_deref().unwrap_or(""), panic = %message,
                    "a device connection panicked (a bug); closed it");
                if let Some(device_id) = registered
                    && self.unregister(&device_id, id)
                    && let Err(error) = self.store.set_connection(&device_id, false, None, None).await
                {
                    tracing::warn!(%error, device = %device_id, "could not record the disconnection");
                }
            }
        })
    }

    async fn on_event(&self, event: Event) {
        match event {
            Event::DesiredChanged { device_id, version, patch } => {
                let Some(sender) = self.sender(&device_id) else { return };
                let patch = match patch {
                    Some(patch) => Some(patch),
                    None => self.store.desired_patch(&device_id, version).await.ok().flatten().map(Arc::new),
                };
                match patch {
                    Some(patch) => sender.offer(Command::Desired(patch)),
                    // The patch is gone: make the device reconnect, which makes it GET the twin.
                    None => sender.offer(Command::Close("desired patch no longer available")),
                }
            }
            Event::SessionOpened { device_id, session } => {
                if !session.starts_with(&format!("{}/", self.store.node_id())) {
                    self.close(&device_id, "the device connected to another node", true);
                }
            }
            Event::DeviceRevoked { device_id } => {
                self.close(&device_id, "the device was deleted, disabled or re-keyed", false)
            }
        }
    }

    /// Asks every session on this node to close (at shutdown).
    pub fn close_all(&self, reason: &'static str) {
        let sessions: Vec<Arc<Inbox>> = self.sessions().values().map(|s| s.commands.clone()).collect();
        for commands in sessions {
            commands.offer(Command::Close(reason));
        }
    }

    fn sender(&self, device_id: &str) -> Option<Arc<Inbox>> {
        self.sessions().get(device_id).map(|s| s.commands.clone())
    }

    /// Closes the device's session. With `taken_over` (it connected to another node) the session
    /// is forgotten here at once, so that its end does not record the device as disconnected;
    /// otherwise the ending session records it.
    fn close(&self, device_id: &str, reason: &'static str, taken_over: bool) {
        let mut sessions = self.sessions();
        let commands = if taken_over {
            sessions.remove(device_id).map(|s| s.commands)
        } else {
            sessions.get(device_id).map(|s| s.commands.clone())
        };
        if let Some(commands) = commands {
            commands.offer(Command::Close(reason));
        }
    }

    /// Makes `connection` the session of `device_id`, closing the one it replaces.
    fn register(&self, device_id: &str, connection: u64) -> Arc<Inbox> {
        let commands = Inbox::new();
        let previous = self.sessions().insert(device_id.to_owned(), Session { connection, commands: commands.clone() });
        if let Some(previous) = previous {
            previous.commands.offer(Command::Close("a new connection with the same device id replaced it"));
        }
        commands
    }

    /// Removes the session if it is still `connection`'s; returns whether it was.
    fn unregister(&self, device_id: &str, connection: u64) -> bool {
        let mut sessions = self.sessions();
        if sessions.get(device_id).is_some_and(|s| s.connection == connection) {
            sessions.remove(device_id);
            return true;
        }
        false
    }
}

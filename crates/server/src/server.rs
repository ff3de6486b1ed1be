//! Starting and stopping a node: bootstrap the data directory, open the store, bind the
//! listeners (MQTT/TLS, optional plain MQTT, HTTPS), write `admin.json`, serve until told to
//! stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use duhub_proto::connection_string::ConnectionString;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::du::content::ContentStore;
use crate::du::{DeviceUpdate, DuSettings};
use crate::https::{ConnectionCap, HttpsLimits};
use crate::hub::{Hub, HubSettings};
use crate::store::Store;
use crate::tls::TlsFiles;

/// The shared access policy with all rights, as IoT Hub names it.
pub const OWNER_POLICY: &str = "iothubowner";

/// What a node writes to `<data_dir>/admin.json` (mode 0600) for CLI commands on the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admin {
    /// `HostName=<host>:<https port>;SharedAccessKeyName=iothubowner;SharedAccessKey=...`.
    pub service_connection_string: String,
    /// Bearer token for the Device Update REST API.
    pub api_token: String,
    /// Path of the CA certificate to trust.
    pub ca_certificate: PathBuf,
    /// `https://<host>:<port>`.
    pub https_url: String,
    /// Host name devices connect to.
    pub mqtt_host: String,
    /// MQTT/TLS port.
    pub mqtt_port: u16,
    /// Device Update instance id.
    #[serde(default = "default_instance")]
    pub instance_id: String,
    /// The signing key store (its `rootkeys.json` lists the root keys agents trust).
    #[serde(default)]
    pub keys_dir: PathBuf,
}

fn default_instance() -> String {
    "default".into()
}

/// A running node.
pub struct Running {
    /// Where HTTPS listens.
    pub https: SocketAddr,
    /// Where MQTT/TLS listens.
    pub mqtt: SocketAddr,
    /// Where plain MQTT listens, if enabled.
    pub mqtt_plain: Option<SocketAddr>,
    /// The admin settings written to `admin.json`.
    pub admin: Admin,
    /// Path of `admin.json`.
    pub admin_path: PathBuf,
    /// The hub.
    pub hub: Arc<Hub>,
    /// The Device Update service.
    pub du: Arc<DeviceUpdate>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The lock on the data directory, held while the node runs (released when dropped, and by
    /// the kernel when the process dies however it dies).
    _lock: std::fs::File,
}

impl Running {
    /// Stops accepting, closes device sessions (recording them as disconnected), and waits at
    /// most a few seconds for connections to finish.
    pub async fn shutdown(mut self) {
        self.hub.close_all("the server is shutting down");
        let _ = self.stop.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                () = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
        self.hub.release_lease().await;
    }
}

/// Boots a node from `config`.
pub async fn start(config: &Config) -> Result<Running> {
    crate::fs::create_private_dir(&config.data_dir)?;
    let lock = lock_data_dir(&config.data_dir)?;
    let tls = TlsFiles::in_data_dir(&config.data_dir);
    if tls.ensure(&config.hostname)? {
        tracing::info!(ca = %tls.ca_cert.display(), "created the TLS certificates");
    }
    let acceptor = TlsAcceptor::from(tls.server_config()?);
    let node_id = format!("{:016x}", crate::ids::random_u64());
    let store = Store::open(&config.database_url, &node_id)
        .await
        .with_context(|| format!("opening the database {}", redact(&config.database_url)))?;
    let policy_key = store.ensure_policy(OWNER_POLICY).await?;
    let hub = Hub::start(store.clone(), HubSettings::new(&config.hostname));
    // The node id of this data directory's previous run: its sessions died with it.
    let node_id_path = config.data_dir.join(NODE_ID_FILE);
    let previous_node = std::fs::read_to_string(&node_id_path).ok().map(|id| id.trim().to_owned());
    hub.take_lease(config.node_lease, previous_node.as_deref()).await.context("taking this node's lease")?;
    crate::fs::write_private(&node_id_path, node_id.as_bytes())?;

    let mqtt_listener = bind(config, config.mqtt_port).await?;
    let https_listener = bind(config, config.https_port).await?;
    let plain_listener = match config.mqtt_plain_port {
        Some(port) => Some(bind(config, port).await?),
        None => None,
    };
    let mqtt = mqtt_listener.local_addr()?;
    let https = https_listener.local_addr()?;
    let mqtt_plain = plain_listener.as_ref().map(TcpListener::local_addr).transpose()?;

    let admin_path = config.data_dir.join("admin.json");
    let api_token = match read_admin(&admin_path) {
        Some(previous) => previous.api_token,
        None => crate::ids::generate_api_token(),
    };
    store.add_api_token("admin", &api_token).await?;
    let host_with_port =
        if https.port() == 443 { config.hostname.clone() } else { format!("{}:{}", config.hostname, https.port()) };
    let admin = Admin {
        service_connection_string: ConnectionString::service(&host_with_port, OWNER_POLICY, &policy_key).to_string(),
        api_token,
        ca_certificate: std::path::absolute(&tls.ca_cert).unwrap_or(tls.ca_cert.clone()),
        https_url: format!("https://{host_with_port}"),
        mqtt_host: config.hostname.clone(),
        mqtt_port: mqtt.port(),
        instance_id: config.instance_id.clone(),
        keys_dir: std::path::absolute(&config.keys_dir).unwrap_or(config.keys_dir.clone()),
    };
    let content = match &config.content_url {
        None => ContentStore::open(&config.content_dir)
            .with_context(|| format!("opening the content store {}", config.content_dir.display()))?,
        Some(url) => ContentStore::open_url(url, &config.content_dir, &[]).context("opening the content store")?,
    };
    let du_settings = DuSettings {
        instance_id: config.instance_id.clone(),
        public_url: config.public_url.clone().unwrap_or_else(|| admin.https_url.clone()),
        keys_dir: config.keys_dir.clone(),
        page_size: config.page_size,
        reconcile_interval: config.reconcile_interval,
        upload_expiry: config.upload_expiry,
        max_pending_upload_bytes: config.max_pending_upload_bytes,
    };
    let ca_pem = std::fs::read(&tls.ca_cert).with_context(|| format!("reading {}", tls.ca_cert.display()))?;
    let du = DeviceUpdate::new(store.clone(), content, du_settings, Some(&ca_pem))
        .context("starting the Device Update service")?;
    crate::fs::write_private(&admin_path, serde_json::to_string_pretty(&admin)?.as_bytes())?;

    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_mqtt(mqtt_listener, Some(acceptor.clone()), hub.clone(), stopped.clone()));
    if let Some(listener) = plain_listener {
        tasks.spawn(accept_mqtt(listener, None, hub.clone(), stopped.clone()));
    }
    tasks.spawn(du.clone().run(stopped.clone()));
    tasks.spawn(du.clone().expire_uploads(stopped.clone()));
    tasks.spawn(hub.clone().hold_lease(config.node_lease, stopped.clone()));
    let app = crate::app::app(hub.clone(), du.clone(), config.hostname.clone());
    tasks.spawn(accept_https(https_listener, acceptor, app, config.https, stopped));
    Ok(Running { https, mqtt, mqtt_plain, admin, admin_path, hub, du, stop, tasks, _lock: lock })
}

/// The file in the data directory that names the node running on it (its id in the store).
pub const NODE_ID_FILE: &str = "node-id";

/// The name of the lock file in the data directory.
pub const LOCK_FILE: &str = "duhub.lock";

/// Locks `<data_dir>/duhub.lock` (an advisory lock the kernel drops with the process) and writes
/// this process's id into it; fails, naming the other process, when another node holds it. Two
/// nodes on one data directory would share `admin.json`, keys and (with SQLite) the database
/// while each believing it alone holds its devices' sessions.
pub fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = data_dir.join(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another process".to_owned() } else { format!("process {holder}") };
            anyhow::bail!(
                "the data directory {} is in use by another duhub node ({who} holds {}); stop it, or give this node \
                 a data directory of its own (--data-dir)",
                data_dir.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0).and_then(|()| file.rewind()).with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{}", std::process::id()).with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

async fn bind(config: &Config, port: u16) -> Result<TcpListener> {
    let address = SocketAddr::new(config.bind, port);
    TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))
}

/// Reads a previous `admin.json`, if any.
pub fn read_admin(path: &std::path::Path) -> Option<Admin> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Accepts connections until stopped, serving each with `serve` on its own task; at the end,
/// lets running connections finish for a moment (see [`drain`]).
async fn accept_loop<F, Fut>(listener: TcpListener, what: &'static str, mut stopped: watch::Receiver<bool>, serve: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    // Connections ended since the heap was last trimmed (crate::memory), checked every 5 s.
    let mut ended: u64 = 0;
    let mut trim_check = tokio::time::interval(Duration::from_secs(5));
    trim_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an {what} connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
            // Finished connections are reaped as they end, not at the next accept: a finished
            // task keeps its whole allocation until it is joined (after 19,000 devices left, the
            // node kept hundreds of megabytes until a new one came).
            Some(_) = connections.join_next(), if !connections.is_empty() => {
                ended += 1;
                continue;
            }
            _ = trim_check.tick(), if ended >= crate::memory::TRIM_AFTER_ENDED => {
                ended = 0;
                let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
                continue;
            }
        };
        connections.spawn(serve(stream, peer));
    }
    drain(connections).await;
}

/// Lets running connections finish for a moment, then aborts the rest.
async fn drain(mut connections: JoinSet<()>) {
    let finished =
        tokio::time::timeout(Duration::from_secs(3), async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        connections.abort_all();
    }
}

/// The TLS handshake of an accepted connection, bounded in time. The stream is boxed: the
/// futures that hold it (a connection task, its session) then keep a pointer to rustls' state
/// (a kilobyte and more) wherever they move it, instead of a copy of it in each of their states.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Box<tokio_rustls::server::TlsStream<TcpStream>>> {
    match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

async fn accept_mqtt(listener: TcpListener, tls: Option<TlsAcceptor>, hub: Arc<Hub>, stopped: watch::Receiver<bool>) {
    accept_loop(listener, "MQTT", stopped, move |stream, peer| {
        let hub = hub.clone();
        let tls = tls.clone();
        async move {
            let _ = stream.set_nodelay(true);
            match tls {
                Some(tls) => {
                    // Boxed: the handshake's state is freed when it is done, so an idle
                    // connection's task keeps none of it.
                    if let Some(stream) = Box::pin(handshake(&tls, stream, peer)).await {
                        hub.serve(stream, peer).await;
                    }
                }
                None => hub.serve(stream, peer).await,
            }
        }
    })
    .await;
}

async fn accept_https(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: axum::Router,
    limits: HttpsLimits,
    stopped: watch::Receiver<bool>,
) {
    let cap = ConnectionCap::new(limits.max_connections);
    accept_loop(listener, "HTTPS", stopped, move |stream, peer| {
        let tls = tls.clone();
        let app = app.clone();
        let permit = cap.try_admit(peer);
        async move {
            let Some(_permit) = permit else { return };
            let Some(stream) = handshake(&tls, stream, peer).await else { return };
            crate::https::serve_connection(stream, peer, app, limits).await;
        }
    })
    .await;
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/duhub.db"), "sqlite://data/duhub.db");
        assert_eq!(redact("postgres://\u{e9}:p\u{e9}@h/db"), "postgres://\u{e9}:***@h/db");
    }
}

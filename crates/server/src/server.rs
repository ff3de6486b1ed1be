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
    }
}

/// Boots a node from `config`.
pub async fn start(config: &Config) -> Result<Running> {
    crate::fs::create_private_dir(&config.data_dir)?;
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
    let app = crate::app::app(hub.clone(), du.clone(), config.hostname.clone());
    tasks.spawn(accept_https(https_listener, acceptor, app, stopped));
    Ok(Running { https, mqtt, mqtt_plain, admin, admin_path, hub, du, stop, tasks })
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
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
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

/// The TLS handshake of an accepted connection, bounded in time.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
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

async fn accept_https(listener: TcpListener, tls: TlsAcceptor, app: axum::Router, stopped: watch::Receiver<bool>) {
    accept_loop(listener, "HTTPS", stopped, move |stream, peer| {
        let tls = tls.clone();
        let app = app.clone();
        async move {
            let Some(stream) = handshake(&tls, stream, peer).await else { return };
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(error) =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service).await
            {
                tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
            }
        }
    })
    .await;
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

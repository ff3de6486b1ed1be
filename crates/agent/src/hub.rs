//! The agent's MQTT session with the hub (over TLS, or over WebSocket on the HTTPS port), as
//! IoT Hub devices speak it: SAS authentication, the Device Update model id in the username, twin
//! GET, reported patches answered by status, and desired patches delivered to a channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duhub_proto::connection_string::ConnectionString;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// The model id the agent announces.
pub const MODEL_ID: &str = duhub_proto::twin::DEVICE_UPDATE_MODEL_V3;
/// How long a twin request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the SAS token of one connection.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why talking to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The hub refused the connection.
    #[error("the hub refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The connection ended or could not be made.
    #[error("connection: {0}")]
    Connection(String),
    /// No answer in time.
    #[error("no answer from the hub within {0:?}")]
    Timeout(Duration),
    /// A twin request was answered with an error status.
    #[error("the hub answered {status} to {what}")]
    Status {
        /// Status.
        status: u16,
        /// The request.
        what: &'static str,
    },
    /// Local configuration problem.
    #[error("{0}")]
    Config(String),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<(u16, Vec<u8>)>>>>;

/// A live session.
pub struct HubLink {
    client: AsyncClient,
    pending: Pending,
    next_rid: u64,
    /// Desired patches (the JSON documents), in arrival order.
    pub desired: mpsc::UnboundedReceiver<Value>,
    /// Resolves when the connection ends, with why.
    pub closed: oneshot::Receiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Parsed device connection string.
    pub connection: ConnectionString,
    /// Host to dial (the connection string's host).
    pub host: String,
    /// MQTT/TLS port, or the HTTPS port with `websocket`.
    pub port: u16,
    /// MQTT over WebSocket (`wss://host:port/$iothub/websocket`) instead of MQTT over TLS.
    pub websocket: bool,
    /// TLS settings.
    pub tls: Arc<rustls::ClientConfig>,
}

impl HubLink {
    /// Connects, subscribes to desired patches and twin responses.
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, HubError> {
        let device_id = endpoint.connection.device_id.clone().ok_or_else(|| HubError::Config("no DeviceId".into()))?;
        let expiry =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + TOKEN_LIFETIME.as_secs();
        let password = endpoint.connection.sas_token(expiry).map_err(|e| HubError::Config(e.to_string()))?;
        let username = format!(
            "{}/{device_id}/?api-version=2021-04-12&model-id={}",
            endpoint.connection.host_name,
            duhub_proto::sas::percent_encode(MODEL_ID)
        );
        let mut options = if endpoint.websocket {
            let url = format!("wss://{}:{}/$iothub/websocket", endpoint.host, endpoint.port);
            MqttOptions::new(&device_id, url, endpoint.port)
        } else {
            MqttOptions::new(&device_id, &endpoint.host, endpoint.port)
        };
        options.set_credentials(username, password);
        options.set_keep_alive(Duration::from_secs(60));
        options.set_clean_session(true);
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        let tls = TlsConfiguration::Rustls(endpoint.tls.clone());
        options.set_transport(if endpoint.websocket {
            Transport::wss_with_config(tls)
        } else {
            Transport::tls_with_config(tls)
        });
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let connected = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                        return Ok(());
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Err(HubError::Refused(ack.code)),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Err(HubError::Refused(code)),
                    Err(error) => return Err(HubError::Connection(error.to_string())),
                }
            }
        })
        .await
        .map_err(|_| HubError::Timeout(REQUEST_TIMEOUT))?;
        connected?;
        let pending: Pending = Arc::default();
        let (desired_tx, desired) = mpsc::unbounded_channel();
        let (closed_tx, closed) = oneshot::channel();
        let routes = pending.clone();
        let task = tokio::spawn(async move {
            let reason = loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if let Some(rest) = publish.topic.strip_prefix("$iothub/twin/res/") {
                            let Some((status, query)) = rest.split_once("/?") else { continue };
                            let rid = query.split('&').find_map(|p| p.strip_prefix("$rid=")).unwrap_or_default();
                            let sender = routes.lock().ok().and_then(|mut map| map.remove(rid));
                            if let Some(sender) = sender {
                                let _ = sender.send((status.parse().unwrap_or(0), publish.payload.to_vec()));
                            }
                        } else if publish.topic.starts_with("$iothub/twin/PATCH/properties/desired/") {
                            match serde_json::from_slice::<Value>(&publish.payload) {
                                Ok(patch) => {
                                    let _ = desired_tx.send(patch);
                                }
                                Err(error) => tracing::warn!(%error, "a desired patch is not JSON; ignored"),
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => break error.to_string(),
                }
            };
            let _ = closed_tx.send(reason);
        });
        let link = Self { client, pending, next_rid: 0, desired, closed, task };
        for filter in ["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"] {
            link.client.subscribe(filter, QoS::AtLeastOnce).await.map_err(|e| HubError::Connection(e.to_string()))?;
        }
        Ok(link)
    }

    async fn request(&mut self, topic: String, rid: String, payload: Vec<u8>) -> Result<(u16, Vec<u8>), HubError> {
        let (sender, answer) = oneshot::channel();
        if let Ok(mut map) = self.pending.lock() {
            map.insert(rid.clone(), sender);
        }
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .map_err(|e| HubError::Connection(e.to_string()))?;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, answer).await;
        if let Ok(mut map) = self.pending.lock() {
            map.remove(&rid);
        }
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(HubError::Connection("the connection closed".into())),
            Err(_) => Err(HubError::Timeout(REQUEST_TIMEOUT)),
        }
    }

    fn rid(&mut self) -> String {
        self.next_rid += 1;
        self.next_rid.to_string()
    }

    /// The twin: `{"desired": {...}, "reported": {...}}`.
    pub async fn get_twin(&mut self) -> Result<Value, HubError> {
        let rid = self.rid();
        let (status, body) = self.request(duhub_proto::iothub::twin_get_topic(&rid), rid, b" ".to_vec()).await?;
        if status != 200 {
            return Err(HubError::Status { status, what: "the twin GET" });
        }
        serde_json::from_slice(&body).map_err(|e| HubError::Connection(format!("the twin is not JSON: {e}")))
    }

    /// Sends a reported patch; succeeds on 204.
    pub async fn report(&mut self, patch: &Value) -> Result<(), HubError> {
        let rid = self.rid();
        let topic = duhub_proto::iothub::reported_patch_topic(&rid);
        let (status, _) = self.request(topic, rid, patch.to_string().into_bytes()).await?;
        if status == 204 { Ok(()) } else { Err(HubError::Status { status, what: "a reported patch" }) }
    }

    /// Disconnects politely.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// TLS trusting `ca_pem` (all certificates in it), or the system's bundle when `None`.
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, HubError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let system;
    let pem = match ca_pem {
        Some(pem) => pem,
        None => {
            system = crate::download::system_ca_bundle().ok_or_else(|| {
                HubError::Config(format!(
                    "no CA given and no system bundle in {}",
                    crate::download::SYSTEM_CA_BUNDLES.join(", ")
                ))
            })?;
            &system
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|e| HubError::Config(format!("a CA certificate does not parse: {e}")))?;
        roots.add(certificate).map_err(|e| HubError::Config(format!("a CA certificate is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(HubError::Config("no CA certificate to trust".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HubError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

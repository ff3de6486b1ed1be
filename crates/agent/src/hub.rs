//! The agent's MQTT session with the hub (over TLS, or over WebSocket on the HTTPS port), as
//! IoT Hub devices speak it: SAS authentication, the Device Update model id in the username, twin
//! GET, reported patches answered by status, and desired patches delivered to a channel.
//!
//! The session is our own small client over rumqttc's MQTT 3.1.1 codec: one tokio task per
//! connection owning the socket (reads, writes, keep-alive, PUBACKs), no thread and no large
//! buffers, so thousands of agents share one runtime (the fleet simulator). It can dial one of
//! several servers and bind a chosen local address first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use duhub_proto::connection_string::ConnectionString;
use rumqttc::mqttbytes;
use rumqttc::{ConnectReturnCode, Packet, PubAck, Publish, QoS, Subscribe, SubscribeFilter};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

/// The model id the agent announces.
pub const MODEL_ID: &str = duhub_proto::twin::DEVICE_UPDATE_MODEL_V3;
/// How long a twin request (and connecting) may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the SAS token of one connection.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// MQTT keep-alive: a PINGREQ after this long without anything sent.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Largest packet accepted from the hub (a twin is at most 32 KiB of desired plus reported).
const MAX_PACKET: usize = 256 * 1024;

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
    outgoing: mpsc::Sender<Packet>,
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
    /// Parsed device connection string; its host name (without port) is the name the server's
    /// certificate is checked against and the one in the MQTT username.
    pub connection: ConnectionString,
    /// The servers to dial (host or address, port: the MQTT/TLS port, or the HTTPS port with
    /// `websocket`), tried in turn: a device whose server goes away connects to the next.
    pub servers: Vec<(String, u16)>,
    /// MQTT over WebSocket (`wss://host:port/$iothub/websocket`) instead of MQTT over TLS.
    pub websocket: bool,
    /// TLS settings.
    pub tls: Arc<rustls::ClientConfig>,
    /// Local address to connect from (bound before connecting), e.g. one of several
    /// `127.0.0.x` so that a simulator is not limited to one address's ephemeral ports.
    pub source: Option<IpAddr>,
}

impl Endpoint {
    /// The host name of the connection string, without a `:port`.
    pub fn tls_name(&self) -> &str {
        let host = self.connection.host_name.as_str();
        match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            _ => host,
        }
    }

    /// The server to dial on attempt `attempt` (round robin).
    pub fn server(&self, attempt: usize) -> Option<&(String, u16)> {
        match self.servers.len() {
            0 => None,
            count => self.servers.get(attempt % count),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// TCP (from the source address, if any), then TLS, then optionally WebSocket.
async fn open(endpoint: &Endpoint, host: &str, port: u16) -> Result<Box<dyn Stream>, HubError> {
    let connection = |e: std::io::Error| HubError::Connection(format!("{host}:{port}: {e}"));
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(connection)?.collect();
    let address = addresses
        .iter()
        .find(|a| endpoint.source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
        .copied()
        .ok_or_else(|| HubError::Connection(format!("{host}:{port}: no usable address")))?;
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(connection)?;
    if let Some(source) = endpoint.source {
        socket.bind(SocketAddr::new(source, 0)).map_err(connection)?;
    }
    let tcp = socket.connect(address).await.map_err(connection)?;
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from(endpoint.tls_name().to_owned())
        .map_err(|e| HubError::Config(format!("host name {:?}: {e}", endpoint.tls_name())))?;
    let tls = rumqttc::tokio_rustls::TlsConnector::from(endpoint.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| HubError::Connection(format!("TLS with {host}:{port}: {e}")))?;
    if !endpoint.websocket {
        return Ok(Box::new(tls));
    }
    use async_tungstenite::tungstenite::client::IntoClientRequest as _;
    let url = format!("wss://{}:{port}/$iothub/websocket", endpoint.tls_name());
    let mut request = url.as_str().into_client_request().map_err(|e| HubError::Config(format!("{url}: {e}")))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", async_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"));
    let (socket, _) = async_tungstenite::tokio::client_async(request, tls)
        .await
        .map_err(|e| HubError::Connection(format!("WebSocket with {host}:{port}: {e}")))?;
    Ok(Box::new(ws_stream_tungstenite::WsStream::new(socket)))
}

/// Reads the next packet, keeping what follows it in `buffer`.
async fn read_packet(stream: &mut (impl AsyncRead + Unpin), buffer: &mut BytesMut) -> Result<Packet, String> {
    loop {
        match Packet::read(buffer, MAX_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(error) => return Err(format!("malformed packet from the hub: {error}")),
        }
        buffer.reserve(4096);
        match stream.read_buf(buffer).await {
            Ok(0) => return Err("the hub closed the connection".into()),
            Ok(_) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
}

async fn write_packet(stream: &mut (impl AsyncWrite + Unpin), packet: &Packet) -> Result<(), String> {
    let mut bytes = BytesMut::with_capacity(packet.size() + 8);
    packet.write(&mut bytes, MAX_PACKET).map_err(|e| format!("cannot encode a packet: {e}"))?;
    stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

impl HubLink {
    /// Connects to the server of attempt `attempt` (see [`Endpoint::server`]), subscribes to
    /// desired patches and twin responses.
    pub async fn connect(endpoint: &Endpoint, attempt: usize) -> Result<Self, HubError> {
        let device_id = endpoint.connection.device_id.clone().ok_or_else(|| HubError::Config("no DeviceId".into()))?;
        let (host, port) = endpoint.server(attempt).cloned().ok_or_else(|| HubError::Config("no server".into()))?;
        let expiry =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + TOKEN_LIFETIME.as_secs();
        let password = endpoint.connection.sas_token(expiry).map_err(|e| HubError::Config(e.to_string()))?;
        let username = format!(
            "{}/{device_id}/?api-version=2021-04-12&model-id={}",
            endpoint.connection.host_name,
            duhub_proto::sas::percent_encode(MODEL_ID)
        );
        let mut connect = rumqttc::Connect::new(device_id);
        connect.keep_alive = u16::try_from(KEEP_ALIVE.as_secs()).unwrap_or(60);
        connect.clean_session = true;
        connect.set_login(username, password);
        let subscribe = Subscribe::new_many([
            SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("$iothub/twin/PATCH/properties/desired/#".into(), QoS::AtLeastOnce),
        ]);
        let mut buffer = BytesMut::new();
        let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut stream = open(endpoint, &host, port).await?;
            write_packet(&mut stream, &Packet::Connect(connect)).await.map_err(HubError::Connection)?;
            match read_packet(&mut stream, &mut buffer).await.map_err(HubError::Connection)? {
                Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
                Packet::ConnAck(ack) => return Err(HubError::Refused(ack.code)),
                other => return Err(HubError::Connection(format!("expected CONNACK, got {other:?}"))),
            }
            let mut subscribe = subscribe;
            subscribe.pkid = 1;
            write_packet(&mut stream, &Packet::Subscribe(subscribe)).await.map_err(HubError::Connection)?;
            Ok(stream)
        })
        .await
        .map_err(|_| HubError::Timeout(REQUEST_TIMEOUT))??;
        let pending: Pending = Arc::default();
        let (desired_tx, desired) = mpsc::unbounded_channel();
        let (closed_tx, closed) = oneshot::channel();
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Packet>(16);
        let routes = pending.clone();
        let task = tokio::spawn(async move {
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
            let reason = loop {
                let packet = tokio::select! {
                    read = read_packet(&mut stream, &mut buffer) => match read {
                        Ok(packet) => packet,
                        Err(error) => break error,
                    },
                    out = outgoing_rx.recv() => {
                        let Some(packet) = out else { break "closed by the agent".to_owned() };
                        let disconnect = matches!(packet, Packet::Disconnect);
                        if let Err(error) = write_packet(&mut stream, &packet).await {
                            break error;
                        }
                        if disconnect {
                            let _ = stream.shutdown().await;
                            break "disconnected".to_owned();
                        }
                        ping.reset();
                        continue;
                    }
                    _ = ping.tick() => {
                        if let Err(error) = write_packet(&mut stream, &Packet::PingReq).await {
                            break error;
                        }
                        continue;
                    }
                };
                let Packet::Publish(publish) = packet else { continue };
                if publish.qos == QoS::AtLeastOnce
                    && let Err(error) = write_packet(&mut stream, &Packet::PubAck(PubAck::new(publish.pkid))).await
                {
                    break error;
                }
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
            };
            let _ = closed_tx.send(reason);
        });
        Ok(Self { outgoing, pending, next_rid: 0, desired, closed, task })
    }

    async fn request(&mut self, topic: String, rid: String, payload: Vec<u8>) -> Result<(u16, Vec<u8>), HubError> {
        let (sender, answer) = oneshot::channel();
        if let Ok(mut map) = self.pending.lock() {
            map.insert(rid.clone(), sender);
        }
        self.outgoing
            .send(Packet::Publish(Publish::new(topic, QoS::AtMostOnce, payload)))
            .await
            .map_err(|_| HubError::Connection("the connection closed".into()))?;
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

    /// Disconnects politely (sends DISCONNECT and closes the socket).
    pub async fn disconnect(&mut self) {
        if self.outgoing.send(Packet::Disconnect).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.closed).await;
        }
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

//! One device connection: CONNECT and SAS authentication, then twin requests, reported patches,
//! subscriptions and desired-patch delivery, until the device leaves, the keep-alive lapses, or
//! the hub closes the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use duhub_proto::iothub::{self, ConnectUsername, DeviceTopic};
use duhub_proto::sas::SasToken;
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, Protocol, PubAck, Publish, QoS, SubAck, SubscribeReasonCode, UnsubAck,
};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Command, Hub};
use crate::store::{DeviceStatus, MqttSession, StoreError};

/// Why a connection ended (for the log).
#[derive(Debug)]
enum End {
    Closed(&'static str),
    Refused(ConnectReturnCode, String),
    Protocol(String),
    Io(std::io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(why) => f.write_str(why),
            Self::Refused(code, why) => write!(f, "refused ({code:?}): {why}"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::Io(error) => write!(f, "I/O error: {error}"),
        }
    }
}

/// Buffer capacity a session keeps between packets; a larger one (after a large packet) is freed.
const KEPT_BUFFER: usize = 4096;

struct Conn<S> {
    stream: S,
    read: BytesMut,
    write: BytesMut,
    max_packet: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The next packet, reading as needed; `None` when the peer closed cleanly between packets.
    async fn next(&mut self) -> Result<Option<Packet>, End> {
        loop {
            match Packet::read(&mut self.read, self.max_packet) {
                Ok(packet) => {
                    if self.read.is_empty() && self.read.capacity() > KEPT_BUFFER {
                        self.read = BytesMut::new();
                    }
                    return Ok(Some(packet));
                }
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(error) => return Err(End::Protocol(error.to_string())),
            }
            self.read.reserve(1024);
            let n = self.stream.read_buf(&mut self.read).await.map_err(End::Io)?;
            if n == 0 {
                return if self.read.is_empty() { Ok(None) } else { Err(End::Closed("connection closed mid-packet")) };
            }
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), End> {
        packet.write(&mut self.write, usize::MAX).map_err(|e| End::Protocol(e.to_string()))?;
        self.stream.write_all(&self.write).await.map_err(End::Io)?;
        self.write.clear();
        // A large packet (a twin document) does not leave its buffer behind for the session.
        if self.write.capacity() > KEPT_BUFFER {
            self.write = BytesMut::new();
        }
        self.stream.flush().await.map_err(End::Io)
    }
}

/// The authenticated identity of a connection.
struct Identity {
    device_id: String,
    model_id: Option<String>,
    keep_alive: u16,
    /// `clean_session=0`: the session (its subscriptions) outlives the connection.
    persistent: bool,
    /// The stored session this connection resumes, if any.
    resumed: Option<MqttSession>,
}

pub(super) async fn run<S>(hub: Arc<Hub>, stream: S, peer: SocketAddr, connection: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut conn =
        Conn { stream, read: BytesMut::new(), write: BytesMut::new(), max_packet: hub.settings.max_packet_bytes };
    // The futures of one-off steps are boxed, so that an idle session's future is only as large as
    // its wait for the next packet (it is held for every connected device).
    let identity =
        match tokio::time::timeout(hub.settings.connect_timeout, Box::pin(authenticate(&hub, &mut conn))).await {
            Ok(Ok(identity)) => identity,
            Ok(Err(End::Refused(code, why))) => {
                tracing::info!(%peer, ?code, "refused connection: {why}");
                let _ = conn.send(Packet::ConnAck(ConnAck::new(code, false))).await;
                return;
            }
            Ok(Err(end)) => {
                tracing::debug!(%peer, %end, "connection ended before CONNECT");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no CONNECT in time");
                return;
            }
        };
    let device_id = identity.device_id.clone();
    let (commands, mut inbox) = mpsc::channel(64);
    hub.register(&device_id, connection, commands);
    let session = format!("{}/{connection}", hub.store.node_id());
    if let Err(error) =
        Box::pin(hub.store.publish(crate::store::Event::SessionOpened { device_id: device_id.clone(), session })).await
    {
        tracing::warn!(%error, "could not announce the session to other nodes");
    }
    // MQTT 3.1.1 §3.1.2.4: a clean session discards any stored one; otherwise it is resumed or
    // created, and CONNACK says whether one was present.
    let session_present = identity.resumed.is_some();
    let session = match (identity.persistent, session_present) {
        (false, _) => Some(None),
        (true, false) => Some(Some(MqttSession::default())),
        (true, true) => None,
    };
    if let Err(error) =
        Box::pin(hub.store.set_connection(&device_id, true, identity.model_id.as_deref(), session)).await
    {
        tracing::warn!(%error, device = %device_id, "could not record the connection");
    }
    if conn.send(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present))).await.is_err() {
        hub.unregister(&device_id, connection);
        return;
    }
    tracing::info!(%peer, device = %device_id, model = identity.model_id.as_deref().unwrap_or(""), "device connected");

    let mut state =
        SessionState { desired_subscribed: identity.resumed.is_some_and(|session| session.desired), next_pkid: 1 };
    let end = serve(&hub, &mut conn, &identity, &mut inbox, &mut state).await;
    tracing::info!(%peer, device = %device_id, %end, "device disconnected");
    if hub.unregister(&device_id, connection)
        && let Err(error) = Box::pin(hub.store.set_connection(&device_id, false, None, None)).await
    {
        tracing::warn!(%error, device = %device_id, "could not record the disconnection");
    }
}

struct SessionState {
    desired_subscribed: bool,
    next_pkid: u16,
}

async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(hub: &Hub, conn: &mut Conn<S>) -> Result<Identity, End> {
    let packet = conn.next().await?.ok_or(End::Closed("closed before CONNECT"))?;
    let Packet::Connect(connect) = packet else {
        return Err(End::Protocol("the first packet is not CONNECT".into()));
    };
    let refuse = |code, why: String| Err(End::Refused(code, why));
    if connect.protocol != Protocol::V4 {
        return refuse(ConnectReturnCode::RefusedProtocolVersion, "only MQTT 3.1.1 is supported".into());
    }
    let (device_id, module_id) = iothub::split_client_id(&connect.client_id);
    if device_id.is_empty() {
        return refuse(ConnectReturnCode::BadClientId, "empty client id".into());
    }
    if module_id.is_some() {
        return refuse(ConnectReturnCode::BadClientId, "module identities are not supported yet".into());
    }
    let Some(login) = connect.login else {
        return refuse(ConnectReturnCode::BadUserNamePassword, "no username and password".into());
    };
    let username = match ConnectUsername::parse(&login.username) {
        Ok(u) => u,
        Err(e) => return refuse(ConnectReturnCode::BadUserNamePassword, e.to_string()),
    };
    if username.client_id != connect.client_id {
        return refuse(ConnectReturnCode::BadUserNamePassword, "the username names another client id".into());
    }
    let token = match SasToken::parse(&login.password) {
        Ok(t) => t,
        Err(e) => return refuse(ConnectReturnCode::BadUserNamePassword, format!("password is not a SAS token: {e}")),
    };
    match token.device_of() {
        Some((host, id, None)) if id == device_id && host.eq_ignore_ascii_case(&hub.settings.hostname) => {}
        _ => {
            return refuse(
                ConnectReturnCode::NotAuthorized,
                format!(
                    "the token's resource {:?} is not {}/devices/{device_id}",
                    token.resource, hub.settings.hostname
                ),
            );
        }
    }
    let device = match hub.store.device(device_id).await {
        Ok(d) => d,
        Err(StoreError::NotFound(_)) => return refuse(ConnectReturnCode::NotAuthorized, "unknown device".into()),
        Err(e) => return refuse(ConnectReturnCode::ServiceUnavailable, e.to_string()),
    };
    if device.status == DeviceStatus::Disabled {
        return refuse(ConnectReturnCode::NotAuthorized, "the device is disabled".into());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let verified = [&device.primary_key, &device.secondary_key].iter().any(|key| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| token.verify(&k, now).is_ok())
    });
    if !verified {
        let why = if token.is_expired(now) { "the token expired" } else { "the token's signature does not match" };
        return refuse(ConnectReturnCode::NotAuthorized, why.into());
    }
    Ok(Identity {
        device_id: device_id.to_owned(),
        model_id: username.model_id().map(str::to_owned),
        keep_alive: connect.keep_alive,
        persistent: !connect.clean_session,
        resumed: if connect.clean_session { None } else { device.mqtt_session },
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    conn: &mut Conn<S>,
    identity: &Identity,
    inbox: &mut mpsc::Receiver<Command>,
    state: &mut SessionState,
) -> End {
    // MQTT 3.1.1 §3.1.2.10: one and a half keep-alive periods without a packet end the session.
    let keep_alive = (identity.keep_alive > 0).then(|| Duration::from_millis(u64::from(identity.keep_alive) * 1500));
    let mut deadline = keep_alive.map(|k| Instant::now() + k);
    loop {
        let packet = tokio::select! {
            packet = conn.next() => packet,
            command = inbox.recv() => {
                match command {
                    Some(Command::Desired(patch)) => {
                        if let Err(end) = Box::pin(deliver_desired(conn, state, &patch)).await {
                            return end;
                        }
                        continue;
                    }
                    Some(Command::Close(reason)) => return End::Closed(reason),
                    None => return End::Closed("the hub closed the session"),
                }
            }
            () = sleep_until(deadline) => return End::Closed("keep-alive timeout"),
        };
        let packet = match packet {
            Ok(Some(packet)) => packet,
            Ok(None) => return End::Closed("the device closed the connection"),
            Err(end) => return end,
        };
        deadline = keep_alive.map(|k| Instant::now() + k);
        if let Err(end) = Box::pin(handle(hub, conn, identity, state, packet)).await {
            return end;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    conn: &mut Conn<S>,
    identity: &Identity,
    state: &mut SessionState,
    packet: Packet,
) -> Result<(), End> {
    match packet {
        Packet::PingReq => conn.send(Packet::PingResp).await,
        Packet::Disconnect => Err(End::Closed("the device disconnected")),
        Packet::Subscribe(subscribe) => {
            let mut codes = Vec::with_capacity(subscribe.filters.len());
            for filter in &subscribe.filters {
                if iothub::subscription_allowed(&filter.path, &identity.device_id, None) {
                    if iothub::filter_matches(&filter.path, &iothub::desired_patch_topic(1)) {
                        state.desired_subscribed = true;
                    }
                    let qos = if filter.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                    codes.push(SubscribeReasonCode::Success(qos));
                } else {
                    tracing::info!(device = %identity.device_id, filter = %filter.path, "refused subscription");
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
            remember_subscriptions(hub, identity, state).await;
            conn.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes))).await
        }
        Packet::Unsubscribe(unsubscribe) => {
            if unsubscribe.topics.iter().any(|t| iothub::filter_matches(t, &iothub::desired_patch_topic(1))) {
                state.desired_subscribed = false;
            }
            remember_subscriptions(hub, identity, state).await;
            conn.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))).await
        }
        Packet::PubAck(_) => Ok(()),
        Packet::Publish(publish) => on_publish(hub, conn, identity, publish).await,
        Packet::Connect(_) => Err(End::Protocol("a second CONNECT".into())),
        other => Err(End::Protocol(format!("unexpected packet {other:?}"))),
    }
}

/// Stores the subscriptions of a persistent session so that the next connection resumes them.
async fn remember_subscriptions(hub: &Hub, identity: &Identity, state: &SessionState) {
    if !identity.persistent {
        return;
    }
    let session = MqttSession { desired: state.desired_subscribed };
    if let Err(error) = hub.store.set_mqtt_session(&identity.device_id, Some(session)).await {
        tracing::warn!(%error, device = %identity.device_id, "could not store the MQTT session");
    }
}

async fn on_publish<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    conn: &mut Conn<S>,
    identity: &Identity,
    publish: Publish,
) -> Result<(), End> {
    if publish.qos == QoS::ExactlyOnce {
        return Err(End::Protocol("QoS 2 is not supported".into()));
    }
    let topic = DeviceTopic::parse(&publish.topic);
    if matches!(topic, DeviceTopic::Unknown) {
        return Err(End::Protocol(format!("publish to an unknown topic {:?}", publish.topic)));
    }
    if let DeviceTopic::Telemetry { device_id, .. } = &topic
        && device_id != &identity.device_id
    {
        return Err(End::Protocol(format!("telemetry for another device {device_id:?}")));
    }
    if publish.qos == QoS::AtLeastOnce {
        conn.send(Packet::PubAck(PubAck::new(publish.pkid))).await?;
    }
    match topic {
        DeviceTopic::TwinGet { rid } => {
            let (status, version, body) = match hub.store.twin(&identity.device_id).await {
                Ok(twin) => {
                    (200, None, json!({"desired": twin.desired_document(), "reported": twin.reported_document()}))
                }
                Err(error) => failure(&error),
            };
            respond(conn, status, &rid, version, &body).await
        }
        DeviceTopic::TwinPatchReported { rid } => {
            let (status, version, body) = match serde_json::from_slice::<Value>(&publish.payload) {
                Ok(patch) => match hub.store.patch_reported(&identity.device_id, &patch).await {
                    Ok(twin) => (204, u64::try_from(twin.reported_version).ok(), Value::Null),
                    Err(error) => failure(&error),
                },
                Err(error) => {
                    (400, None, json!({"errorCode": 400, "message": format!("the patch is not JSON: {error}")}))
                }
            };
            respond(conn, status, &rid, version, &body).await
        }
        DeviceTopic::MethodResponse { rid, .. } => {
            tracing::debug!(device = %identity.device_id, %rid, "ignoring a method response (no methods are invoked)");
            Ok(())
        }
        DeviceTopic::Telemetry { .. } => {
            tracing::debug!(device = %identity.device_id, bytes = publish.payload.len(), "telemetry received (not stored)");
            Ok(())
        }
        DeviceTopic::Unknown => Ok(()),
    }
}

/// Status and body of a twin request that failed.
fn failure(error: &StoreError) -> (u16, Option<u64>, Value) {
    let status = match error {
        StoreError::InvalidDocument(_) | StoreError::Invalid(_) => 400,
        StoreError::NotFound(_) => 404,
        StoreError::PreconditionFailed => 412,
        // The store logs the cause once per episode; the device retries later.
        error if error.is_unavailable() => {
            return (503, None, json!({"errorCode": 503, "message": "the service is unavailable; try again later"}));
        }
        _ => 500,
    };
    if status == 500 {
        tracing::error!(%error, "twin request failed");
        return (500, None, json!({"errorCode": 500, "message": "internal error"}));
    }
    (status, None, json!({"errorCode": status, "message": error.to_string()}))
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    status: u16,
    rid: &str,
    version: Option<u64>,
    body: &Value,
) -> Result<(), End> {
    let payload = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    let publish = Publish::new(iothub::twin_response_topic(status, rid, version), QoS::AtMostOnce, payload);
    conn.send(Packet::Publish(publish)).await
}

async fn deliver_desired<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &mut SessionState,
    patch: &Value,
) -> Result<(), End> {
    if !state.desired_subscribed {
        return Ok(());
    }
    let version = patch.get("$version").and_then(Value::as_u64).unwrap_or(0);
    let mut publish = Publish::new(iothub::desired_patch_topic(version), QoS::AtLeastOnce, patch.to_string());
    publish.pkid = state.next_pkid;
    state.next_pkid = state.next_pkid.checked_add(1).unwrap_or(1);
    conn.send(Packet::Publish(publish)).await
}

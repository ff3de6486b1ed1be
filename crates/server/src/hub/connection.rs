//! One device connection: CONNECT and SAS authentication, then twin requests, reported patches,
//! subscriptions and desired-patch delivery, until the device leaves, the keep-alive lapses, or
//! the hub closes the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use duhub_proto::iothub::{self, DeviceTopic};
use rumqttc::{ConnAck, ConnectReturnCode, Packet, PubAck, Publish, QoS, SubAck, SubscribeReasonCode, UnsubAck};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use super::{Command, Hub, Inbox, frame};
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

/// Bytes a read asks for at least (most device packets are smaller).
const READ_CHUNK: usize = 256;

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
            if let Some(packet) = frame::read_packet(&mut self.read, self.max_packet).map_err(End::Protocol)? {
                if self.read.is_empty() && self.read.capacity() > KEPT_BUFFER {
                    self.read = BytesMut::new();
                }
                return Ok(Some(packet));
            }
            // Small: an idle session holds this buffer while it waits (a larger packet grows it).
            self.read.reserve(READ_CHUNK);
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
    /// When the SAS token expires (seconds since the Unix epoch): the session ends then, as on
    /// IoT Hub, and the device reconnects with a fresh token.
    token_expiry: u64,
}

/// Serves the connection; `registered` is set to the device id once its session is registered
/// (so that [`Hub::serve`] can clean up after a panic).
pub(super) async fn run<S>(hub: Arc<Hub>, stream: S, peer: SocketAddr, connection: u64, registered: &mut Option<String>)
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
    let inbox = hub.register(&device_id, connection);
    *registered = Some(device_id.clone());
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
    let end = serve(&hub, &mut conn, &identity, &inbox, &mut state).await;
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
    let claims =
        frame::connect_claims(&connect, &hub.settings.hostname).map_err(|(code, why)| End::Refused(code, why))?;
    let refuse = |code, why: String| Err(End::Refused(code, why));
    let device_id = claims.device_id.as_str();
    let token = &claims.token;
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
        resumed: if claims.persistent { device.mqtt_session } else { None },
        device_id: claims.device_id,
        model_id: claims.model_id,
        keep_alive: claims.keep_alive,
        persistent: claims.persistent,
        token_expiry: claims.token.expiry,
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    conn: &mut Conn<S>,
    identity: &Identity,
    inbox: &Inbox,
    state: &mut SessionState,
) -> End {
    // MQTT 3.1.1 §3.1.2.10: one and a half keep-alive periods without a packet end the session.
    let keep_alive = (identity.keep_alive > 0).then(|| Duration::from_millis(u64::from(identity.keep_alive) * 1500));
    let mut deadline = keep_alive.map(|k| Instant::now() + k);
    let token_expires = token_deadline(identity.token_expiry, SystemTime::now());
    loop {
        let packet = tokio::select! {
            packet = conn.next() => packet,
            command = inbox.next() => {
                match command {
                    Command::Desired(patch) => {
                        if let Err(end) = Box::pin(deliver_desired(conn, state, &patch)).await {
                            return end;
                        }
                        continue;
                    }
                    Command::Close(reason) => return End::Closed(reason),
                }
            }
            () = sleep_until(deadline) => return End::Closed("keep-alive timeout"),
            () = sleep_until(token_expires) => return End::Closed("the SAS token expired"),
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

/// The instant a token expiring at `expiry` (seconds since the Unix epoch) runs out, `now`
/// being the wall clock (the first instant a check at whole seconds calls it expired).
/// `None` when that is too far away to represent (the session then never expires).
fn token_deadline(expiry: u64, now: SystemTime) -> Option<Instant> {
    let left = match UNIX_EPOCH.checked_add(Duration::from_secs(expiry)) {
        Some(expires) => expires.duration_since(now).unwrap_or(Duration::ZERO),
        None => return None,
    };
    Instant::now().checked_add(left)
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
    #[cfg(feature = "test-hooks")]
    if let Packet::Publish(publish) = &packet
        && publish.topic == super::TEST_PANIC_TOPIC
    {
        #[allow(clippy::panic)]
        {
            panic!("test hook: a panicking device connection");
        }
    }
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
    let topic = frame::classify_publish(&publish, &identity.device_id).map_err(End::Protocol)?;
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
            let (status, version, body) = match frame::reported_patch(&publish.payload) {
                Ok(patch) => match hub.store.patch_reported(&identity.device_id, &patch).await {
                    Ok(twin) => (204, u64::try_from(twin.reported_version).ok(), Value::Null),
                    Err(error) => failure(&error),
                },
                Err(message) => (400, None, json!({"errorCode": 400, "message": message})),
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

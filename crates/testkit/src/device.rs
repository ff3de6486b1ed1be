//! A test device: rumqttc's `AsyncClient` over TLS with the server's private CA, authenticated
//! the way the Azure device SDKs do it (client id = device id, username
//! `<host>/<id>/?api-version=..&model-id=..`, password = SAS token), plus twin helpers.
//!
//! A task polls the event loop and forwards what arrives; it stops at the first connection error
//! (rumqttc would otherwise reconnect on the next poll), so a closed connection stays closed and
//! is reported as [`DeviceError::Closed`]. Twin requests carry a fresh `$rid` and wait for the
//! response with that `$rid`; desired patches that arrive meanwhile are kept for
//! [`TestDevice::next_desired`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duhub_proto::iothub::{self, ServiceTopic};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{TIMEOUT, now_unix};

/// The model id test devices announce (Device Update's PnP model).
pub const MODEL_ID: &str = "dtmi:azure:iot:deviceUpdateModel;3";

/// The desired-patch subscription filter.
const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";

/// The twin-response subscription filter.
const RESPONSE_FILTER: &str = "$iothub/twin/res/#";

/// Where devices connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host name to dial and to check the certificate against.
    pub dial_host: String,
    /// The MQTT/TLS port.
    pub mqtt_port: u16,
    /// The hub's host name: what usernames and SAS resources name.
    pub hostname: String,
    /// The CA certificate(s) to trust, PEM.
    pub ca_pem: Vec<u8>,
}

/// Everything a device connection is made of; change fields to forge bad connections.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// MQTT client id (the device id).
    pub client_id: String,
    /// MQTT username.
    pub username: String,
    /// MQTT password (a SAS token).
    pub password: String,
    /// MQTT keep-alive (zero: none).
    pub keep_alive: Duration,
}

impl DeviceOptions {
    /// Options for `device_id` with a SAS token signed by `key_b64`, valid for an hour.
    pub fn new(endpoint: &Endpoint, device_id: &str, key_b64: &str) -> Self {
        Self {
            client_id: device_id.to_owned(),
            username: Self::username(&endpoint.hostname, device_id),
            password: Self::sas_token(&endpoint.hostname, device_id, key_b64, now_unix() + 3600),
            endpoint: endpoint.clone(),
            keep_alive: Duration::from_secs(60),
        }
    }

    /// `<hostname>/<device_id>/?api-version=2021-04-12&model-id=<MODEL_ID, encoded>`.
    pub fn username(hostname: &str, device_id: &str) -> String {
        format!(
            "{hostname}/{device_id}/?api-version=2021-04-12&model-id={}",
            duhub_proto::sas::percent_encode(MODEL_ID)
        )
    }

    /// A device SAS token for `<hostname>/devices/<device_id>` signed with `key_b64`.
    ///
    /// # Panics
    ///
    /// If `key_b64` is not base64 (a broken test).
    pub fn sas_token(hostname: &str, device_id: &str, key_b64: &str, expiry: u64) -> String {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_b64)
            .unwrap_or_else(|e| panic!("the test key {key_b64:?} is not base64: {e}"));
        duhub_proto::sas::generate(&duhub_proto::sas::device_resource(hostname, device_id, None), &key, expiry, None)
    }

    /// Connects; see [`TestDevice::connect`].
    pub async fn connect(&self) -> Result<TestDevice, DeviceError> {
        TestDevice::connect(self).await
    }
}

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The server answered CONNECT with an error return code.
    #[error("the server refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// Nothing (or not the awaited thing) arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The connection is closed.
    #[error("the connection is closed: {0}")]
    Closed(String),
    /// The client could not queue a request.
    #[error("the MQTT client failed: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// The server answered something the helper did not expect.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A twin response: `$iothub/twin/res/<status>/?$rid=..[&$version=n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinResponse {
    /// The status in the topic.
    pub status: u16,
    /// `$version` in the topic, if any.
    pub version: Option<u64>,
    /// The payload as JSON (`Null` when empty).
    pub body: Value,
}

/// A desired patch the server delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPatch {
    /// The topic it came on.
    pub topic: String,
    /// `$version` in the topic.
    pub topic_version: Option<u64>,
    /// The payload.
    pub body: Value,
}

#[derive(Debug)]
enum Incoming {
    Publish(Publish),
    SubAck(Vec<SubscribeReasonCode>),
    Disconnected,
    Closed(String),
}

/// A connected device.
pub struct TestDevice {
    /// The client id.
    pub client_id: String,
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    desired: VecDeque<DesiredPatch>,
    closed: Option<String>,
    responses_subscribed: bool,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDevice").field("client_id", &self.client_id).field("closed", &self.closed).finish()
    }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        // Drops the event loop and with it the socket (no DISCONNECT).
        self.task.abort();
    }
}

impl TestDevice {
    /// Connects and waits (at most [`TIMEOUT`]) for the CONNACK. A refusal is
    /// [`DeviceError::Refused`] with the server's return code.
    pub async fn connect(options: &DeviceOptions) -> Result<Self, DeviceError> {
        crate::install_crypto_provider();
        let tls = crate::tls_client_config(&options.endpoint.ca_pem).map_err(|e| DeviceError::Tls(format!("{e:#}")))?;
        let mut mqtt = MqttOptions::new(&options.client_id, &options.endpoint.dial_host, options.endpoint.mqtt_port);
        mqtt.set_credentials(&options.username, &options.password);
        mqtt.set_keep_alive(options.keep_alive);
        mqtt.set_clean_session(true);
        mqtt.set_max_packet_size(1024 * 1024, 1024 * 1024);
        mqtt.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut event_loop) = AsyncClient::new(mqtt, 64);
        let connected = tokio::time::timeout(TIMEOUT, async {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                        return Ok(());
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Err(DeviceError::Refused(ack.code)),
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => return Err(DeviceError::Refused(code)),
                    Err(error) => return Err(DeviceError::Closed(error.to_string())),
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(DeviceError::Timeout("CONNACK".into())),
        }
        let (sender, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let forward = match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => Incoming::Publish(publish),
                    Ok(Event::Incoming(Packet::SubAck(ack))) => Incoming::SubAck(ack.return_codes),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Incoming::Disconnected,
                    Ok(_) => continue,
                    Err(error) => {
                        let _ = sender.send(Incoming::Closed(error.to_string()));
                        return;
                    }
                };
                if sender.send(forward).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            client_id: options.client_id.clone(),
            client,
            incoming,
            desired: VecDeque::new(),
            closed: None,
            responses_subscribed: false,
            task,
        })
    }

    /// `GET` the twin; returns `{"desired": {..}, "reported": {..}}`, failing unless the status
    /// is 200.
    pub async fn get_twin(&mut self) -> Result<Value, DeviceError> {
        let response = self.twin_request(iothub::twin_get_topic, b" ".to_vec()).await?;
        if response.status != 200 {
            return Err(DeviceError::Unexpected(format!("twin GET answered {response:?}")));
        }
        Ok(response.body)
    }

    /// Sends a reported-properties patch; returns the status and the `$version` of the response.
    pub async fn patch_reported(&mut self, patch: &Value) -> Result<(u16, Option<u64>), DeviceError> {
        let response = self.patch_reported_raw(patch.to_string().into_bytes()).await?;
        Ok((response.status, response.version))
    }

    /// Sends any payload as a reported patch; returns the whole response.
    pub async fn patch_reported_raw(&mut self, payload: Vec<u8>) -> Result<TwinResponse, DeviceError> {
        self.twin_request(iothub::reported_patch_topic, payload).await
    }

    /// Subscribes to desired patches and checks the SUBACK grants it.
    pub async fn subscribe_desired(&mut self) -> Result<(), DeviceError> {
        match self.subscribe(DESIRED_FILTER).await? {
            SubscribeReasonCode::Success(_) => Ok(()),
            code => Err(DeviceError::Unexpected(format!("the desired subscription was refused: {code:?}"))),
        }
    }

    /// Subscribes to `filter` (QoS 1) and returns the SUBACK's code.
    pub async fn subscribe(&mut self, filter: &str) -> Result<SubscribeReasonCode, DeviceError> {
        self.ensure_open()?;
        let sent = self.client.subscribe(filter, QoS::AtLeastOnce).await;
        self.sent(sent)?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Incoming::SubAck(codes) = self.next_incoming(deadline, "SUBACK").await? {
                return codes.first().copied().ok_or_else(|| DeviceError::Unexpected("an empty SUBACK".into()));
            }
        }
    }

    /// The next desired patch (one that already arrived, or the next to arrive within
    /// `timeout`).
    pub async fn next_desired(&mut self, timeout: Duration) -> Result<DesiredPatch, DeviceError> {
        if let Some(patch) = self.desired.pop_front() {
            return Ok(patch);
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.next_incoming(deadline, "a desired patch").await?;
            if let Some(patch) = self.desired.pop_front() {
                return Ok(patch);
            }
        }
    }

    /// Publishes `payload` to `topic` at QoS 1 (not waiting for the PUBACK).
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<(), DeviceError> {
        self.ensure_open()?;
        let sent = self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).await;
        self.sent(sent)
    }

    /// Waits until the connection closes (within `timeout`) and returns why. Desired patches
    /// that arrive meanwhile are kept.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<String, DeviceError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_incoming(deadline, "the connection to close").await {
                Ok(_) => {}
                Err(DeviceError::Closed(why)) => return Ok(why),
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether the connection is known to be closed (without waiting). Events that arrived
    /// meanwhile are dropped, except desired patches.
    pub fn is_closed(&mut self) -> bool {
        while let Ok(incoming) = self.incoming.try_recv() {
            self.take(incoming);
        }
        self.closed.is_some()
    }

    /// `Closed` if the connection is known to be closed.
    fn ensure_open(&mut self) -> Result<(), DeviceError> {
        if self.is_closed() {
            return Err(DeviceError::Closed(self.closed.clone().unwrap_or_default()));
        }
        Ok(())
    }

    /// The outcome of queueing a request: a failure because the event loop ended is `Closed`.
    fn sent(&mut self, outcome: Result<(), rumqttc::ClientError>) -> Result<(), DeviceError> {
        match outcome {
            Ok(()) => Ok(()),
            Err(error) => {
                self.ensure_open()?;
                Err(error.into())
            }
        }
    }

    /// Sends DISCONNECT and waits until it is on the wire; then drops the connection.
    pub async fn disconnect(mut self) -> Result<(), DeviceError> {
        self.ensure_open()?;
        let sent = self.client.disconnect().await;
        self.sent(sent)?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.next_incoming(deadline, "DISCONNECT to be sent").await {
                Ok(Incoming::Disconnected) | Err(DeviceError::Closed(_)) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    }

    async fn twin_request(
        &mut self,
        topic_of: fn(&str) -> String,
        payload: Vec<u8>,
    ) -> Result<TwinResponse, DeviceError> {
        self.ensure_open()?;
        if !self.responses_subscribed {
            match self.subscribe(RESPONSE_FILTER).await? {
                SubscribeReasonCode::Success(_) => self.responses_subscribed = true,
                code => {
                    return Err(DeviceError::Unexpected(format!("the response subscription was refused: {code:?}")));
                }
            }
        }
        let rid = next_rid();
        let sent = self.client.publish(topic_of(&rid), QoS::AtLeastOnce, false, payload).await;
        self.sent(sent)?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let Incoming::Publish(publish) = self.next_incoming(deadline, "a twin response").await? else { continue };
            if let ServiceTopic::TwinResponse { status, rid: response_rid, version } =
                ServiceTopic::parse(&publish.topic)
                && response_rid == rid
            {
                let body = if publish.payload.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&publish.payload).map_err(|e| {
                        DeviceError::Unexpected(format!(
                            "the response on {} is not JSON ({e}): {}",
                            publish.topic,
                            String::from_utf8_lossy(&publish.payload)
                        ))
                    })?
                };
                return Ok(TwinResponse { status, version, body });
            }
        }
    }

    /// The next event, keeping desired patches aside; `Closed` once the connection is closed.
    async fn next_incoming(&mut self, deadline: Instant, what: &str) -> Result<Incoming, DeviceError> {
        if let Some(why) = &self.closed {
            return Err(DeviceError::Closed(why.clone()));
        }
        let incoming = match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            Ok(Some(incoming)) => incoming,
            Ok(None) => Incoming::Closed("the event loop ended".into()),
            Err(_) => return Err(DeviceError::Timeout(what.to_owned())),
        };
        self.take(incoming).ok_or_else(|| DeviceError::Closed(self.closed.clone().unwrap_or_default()))
    }

    /// Records desired patches and closure; returns what the caller may look at.
    fn take(&mut self, incoming: Incoming) -> Option<Incoming> {
        match incoming {
            Incoming::Closed(why) => {
                self.closed = Some(why);
                None
            }
            Incoming::Publish(publish) if publish.topic.starts_with("$iothub/twin/PATCH/properties/desired/") => {
                let topic_version = match ServiceTopic::parse(&publish.topic) {
                    ServiceTopic::DesiredPatch { version } => version,
                    _ => None,
                };
                let body = serde_json::from_slice(&publish.payload)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&publish.payload).into_owned()));
                self.desired.push_back(DesiredPatch { topic: publish.topic.clone(), topic_version, body });
                Some(Incoming::Publish(publish))
            }
            other => Some(other),
        }
    }
}

/// A fresh request id.
fn next_rid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("rid-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

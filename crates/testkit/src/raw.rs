//! A bare TLS socket to the MQTT port that sends hand-built packets (rumqttc's encoders) and
//! reads what comes back, for behaviour a client library hides: other protocol levels, a client
//! that stops talking, exact bytes on the wire.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{Connect, Login, Packet, Protocol};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::device::{DeviceOptions, Endpoint};

/// One raw MQTT-over-TLS connection.
#[derive(Debug)]
pub struct RawConnection {
    stream: TlsStream<TcpStream>,
    read: BytesMut,
}

impl RawConnection {
    /// Opens TCP and completes the TLS handshake (trusting the endpoint's CA).
    pub async fn open(endpoint: &Endpoint) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let config = crate::tls_client_config(&endpoint.ca_pem)?;
        let tcp =
            tokio::time::timeout(crate::TIMEOUT, TcpStream::connect((endpoint.dial_host.as_str(), endpoint.mqtt_port)))
                .await
                .context("TCP connect timed out")?
                .context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(endpoint.dial_host.clone()).context("server name")?;
        let stream = tokio::time::timeout(crate::TIMEOUT, TlsConnector::from(config).connect(name, tcp))
            .await
            .context("TLS handshake timed out")?
            .context("TLS handshake")?;
        Ok(Self { stream, read: BytesMut::new() })
    }

    /// Writes `bytes` and flushes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Encodes an MQTT 3.1.1 packet and sends it.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut buffer = BytesMut::new();
        packet.write(&mut buffer, usize::MAX).map_err(|e| anyhow::anyhow!("encoding {packet:?}: {e}"))?;
        Ok(self.send_bytes(&buffer).await?)
    }

    /// The MQTT 3.1.1 CONNECT of `options` with a keep-alive of `keep_alive_secs`.
    pub fn connect_packet(options: &DeviceOptions, keep_alive_secs: u16) -> Packet {
        Packet::Connect(Connect {
            protocol: Protocol::V4,
            keep_alive: keep_alive_secs,
            client_id: options.client_id.clone(),
            clean_session: true,
            last_will: None,
            login: Some(Login { username: options.username.clone(), password: options.password.clone() }),
        })
    }

    /// The next MQTT 3.1.1 packet within `timeout`: `Ok(None)` when the server closed the
    /// connection (TLS close or EOF, or a reset) between packets.
    pub async fn read_packet(&mut self, timeout: Duration) -> anyhow::Result<Option<Packet>> {
        let deadline = Instant::now() + timeout;
        loop {
            match Packet::read(&mut self.read, usize::MAX) {
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(error) => anyhow::bail!("the server sent a malformed packet: {error}"),
            }
            match self.fill(deadline).await? {
                0 if self.read.is_empty() => return Ok(None),
                0 => anyhow::bail!("the connection closed mid-packet after {:?}", &self.read[..]),
                _ => {}
            }
        }
    }

    /// Every byte the server sends until it closes the connection (within `timeout`).
    pub async fn read_to_close(&mut self, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while self.fill(deadline).await? > 0 {}
        Ok(self.read.split().to_vec())
    }

    /// Reads more bytes; 0 at the end of the stream. A reset counts as the end.
    async fn fill(&mut self, deadline: Instant) -> anyhow::Result<usize> {
        self.read.reserve(4096);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                Ok(0)
            }
            Ok(Err(error)) => Err(error.into()),
            Err(_) => anyhow::bail!("the server sent nothing and kept the connection open until the timeout"),
        }
    }
}

/// An MQTT 5 CONNECT (protocol level 5, empty properties) for `options`, encoded.
pub fn mqtt5_connect_packet(options: &DeviceOptions, keep_alive_secs: u16) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::{Connect, Login};
    let connect = Connect {
        keep_alive: keep_alive_secs,
        client_id: options.client_id.clone(),
        clean_start: true,
        properties: None,
    };
    let login = Login { username: options.username.clone(), password: options.password.clone() };
    let mut buffer = BytesMut::new();
    // Invariant: encoding into a growable buffer only fails for packets over 256 MB.
    connect.write(&None, &Some(login), &mut buffer).expect("encoding an MQTT 5 CONNECT");
    buffer.to_vec()
}

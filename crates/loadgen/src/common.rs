//! What the subcommands share: admin.json, device ids and keys, the TLS client configuration,
//! a minimal MQTT connection, /proc readings and percentiles.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use bytes::BytesMut;
use rumqttc::{ConnectReturnCode, Packet};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::{CommonArgs, ConnectArgs};

/// The IoT Hub API version devices announce.
pub(crate) const API_VERSION: &str = "2021-04-12";

/// The fields of the server's admin.json the load generator uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Admin {
    pub(crate) service_connection_string: String,
    pub(crate) ca_certificate: PathBuf,
    pub(crate) https_url: String,
    pub(crate) mqtt_host: String,
    pub(crate) mqtt_port: u16,
}

impl Admin {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The CA certificate as PEM bytes.
    pub(crate) fn ca_pem(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.ca_certificate)
            .with_context(|| format!("reading the CA certificate {}", self.ca_certificate.display()))
    }
}

/// The id of device `index`.
pub(crate) fn device_id(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:06}")
}

/// The symmetric key of a device: SHA-256 of `<seed>:<id>`, base64 (32 bytes, as IoT Hub keys).
pub(crate) fn device_key(seed: &str, device_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{seed}:{device_id}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The devices a run addresses.
pub(crate) fn device_ids(common: &CommonArgs) -> Vec<String> {
    (common.first..common.first + common.count).map(|i| device_id(&common.prefix, i)).collect()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Everything needed to open device connections.
pub(crate) struct Dialer {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    server: SocketAddr,
    sources: Vec<IpAddr>,
    host: String,
    seed: String,
    keep_alive: u16,
    timeout: Duration,
    plain: bool,
}

impl Dialer {
    pub(crate) fn new(admin: &Admin, common: &CommonArgs, connect: &ConnectArgs) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&admin.ca_pem()?) {
            roots.add(cert.context("parsing the CA certificate")?).context("adding the CA certificate")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every simulated device is a separate client: full handshakes, no session resumption.
        config.resumption = rustls::client::Resumption::disabled();
        let server_name = ServerName::try_from(admin.mqtt_host.clone())
            .with_context(|| format!("mqttHost {:?} is not a valid TLS server name", admin.mqtt_host))?;
        let server = connect.server.unwrap_or_else(|| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), admin.mqtt_port));
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            server,
            sources: connect.sources.clone(),
            host: admin.mqtt_host.clone(),
            seed: common.key_seed.clone(),
            keep_alive: connect.keep_alive,
            timeout: Duration::from_secs(connect.connect_timeout.max(1)),
            plain: connect.plain,
        })
    }

    pub(crate) fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    /// "mqtt+tls" or "mqtt" (--plain).
    pub(crate) fn transport(&self) -> &'static str {
        if self.plain { "mqtt" } else { "mqtt+tls" }
    }

    /// Opens connection number `n` (which picks the source address) for `device_id`: TCP, TLS,
    /// CONNECT, and a successful CONNACK.
    pub(crate) async fn connect(&self, n: usize, device_id: &str) -> Result<MqttConn, ConnectError> {
        match tokio::time::timeout(self.timeout, self.connect_inner(n, device_id)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn connect_inner(&self, n: usize, device_id: &str) -> Result<MqttConn, ConnectError> {
        let socket = if self.server.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| ConnectError::Tcp(format!("socket: {e}")))?;
        if !self.sources.is_empty() {
            let source = self.sources[n % self.sources.len()];
            socket.bind(SocketAddr::new(source, 0)).map_err(|e| ConnectError::Tcp(format!("bind {source}: {e}")))?;
        }
        let tcp = socket.connect(self.server).await.map_err(|e| ConnectError::Tcp(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if self.plain {
            Box::new(tcp)
        } else {
            Box::new(
                self.connector
                    .connect(self.server_name.clone(), tcp)
                    .await
                    .map_err(|e| ConnectError::Tls(e.to_string()))?,
            )
        };
        let mut conn = MqttConn::new(stream);
        let mut connect = rumqttc::Connect::new(device_id);
        connect.keep_alive = self.keep_alive;
        connect.clean_session = true;
        let key = base64::engine::general_purpose::STANDARD
            .decode(device_key(&self.seed, device_id))
            .map_err(|e| ConnectError::Mqtt(format!("device key: {e}")))?;
        let resource = duhub_proto::sas::device_resource(&self.host, device_id, None);
        let password = duhub_proto::sas::generate(&resource, &key, unix_now() + 24 * 3600, None);
        connect.set_login(format!("{}/{device_id}/?api-version={API_VERSION}", self.host), password);
        conn.send(&Packet::Connect(connect)).await.map_err(|e| ConnectError::Mqtt(format!("CONNECT: {e:#}")))?;
        match conn.next().await {
            Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => Ok(conn),
            Ok(Packet::ConnAck(ack)) => Err(ConnectError::Refused(format!("{:?}", ack.code))),
            Ok(other) => Err(ConnectError::Mqtt(format!("expected CONNACK, got {other:?}"))),
            Err(e) => Err(ConnectError::Mqtt(format!("waiting for CONNACK: {e:#}"))),
        }
    }
}

/// Why a connection attempt failed, by phase.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Tcp(String),
    Tls(String),
    Mqtt(String),
    Refused(String),
    Timeout,
}

impl ConnectError {
    /// A short key to count failures by.
    pub(crate) fn kind(&self) -> String {
        match self {
            Self::Tcp(m) => format!("tcp: {m}"),
            Self::Tls(m) => format!("tls: {m}"),
            Self::Mqtt(m) => format!("mqtt: {m}"),
            Self::Refused(code) => format!("connack refused: {code}"),
            Self::Timeout => "timeout".into(),
        }
    }
}

/// A byte stream: TLS over TCP, or plain TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One MQTT connection: rumqttc's packet codec over a byte stream.
pub(crate) struct MqttConn {
    stream: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
}

/// Largest packet accepted from the server.
const MAX_PACKET: usize = 1024 * 1024;

impl MqttConn {
    fn new(stream: Box<dyn Io>) -> Self {
        Self { stream, read: BytesMut::with_capacity(256), write: BytesMut::with_capacity(256) }
    }

    /// The next packet; an error when the server closes the connection.
    pub(crate) async fn next(&mut self) -> Result<Packet> {
        loop {
            match Packet::read(&mut self.read, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(error) => bail!("malformed packet from the server: {error}"),
            }
            self.read.reserve(512);
            let n = self.stream.read_buf(&mut self.read).await.context("reading")?;
            if n == 0 {
                return Err(anyhow!("the server closed the connection"));
            }
        }
    }

    pub(crate) async fn send(&mut self, packet: &Packet) -> Result<()> {
        self.write.clear();
        packet.write(&mut self.write, MAX_PACKET).map_err(|e| anyhow!("encoding {packet:?}: {e}"))?;
        self.stream.write_all(&self.write).await.context("writing")?;
        self.stream.flush().await.context("flushing")
    }

    /// Sends DISCONNECT and closes the TLS session (best effort).
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.send(&Packet::Disconnect).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// Memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProcSample {
    /// VmRSS in KiB.
    pub(crate) rss_kib: u64,
    /// VmHWM (peak RSS) in KiB.
    pub(crate) peak_rss_kib: u64,
    /// User + system CPU seconds so far.
    pub(crate) cpu_seconds: f64,
    /// Threads.
    pub(crate) threads: u64,
    /// Open file descriptors, when readable.
    pub(crate) open_fds: Option<u64>,
}

/// Reads `/proc/<pid>` (`pid` "self" for this process).
pub(crate) fn proc_sample(pid: &str) -> Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the process running?)"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("/proc/{pid}/status has no {name}"))?;
        let number = line.trim_start_matches(':').split_whitespace().next().unwrap_or("");
        number.parse().with_context(|| format!("/proc/{pid}/status: {name} is {line:?}"))
    };
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux (the kernel ABI fixes it for /proc).
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / 100.0;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64);
    Ok(ProcSample {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
        cpu_seconds,
        threads: field("Threads:")?,
        open_fds,
    })
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

/// Percentiles of `samples` (microseconds), sorting them.
pub(crate) fn percentiles(samples: &mut [u64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
    };
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Percentiles {
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        p999: at(99.9),
        max: at(100.0),
        mean: (sum as f64 / samples.len() as f64) / 1000.0,
    }
}

/// Prints progress on stderr at most once a second.
pub(crate) struct Progress {
    last: Instant,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self { last: Instant::now() }
    }

    pub(crate) fn tick(&mut self, message: impl FnOnce() -> String) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprintln!("{}", message());
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("encoding the results")?);
    Ok(())
}

/// Up to `limit` (count, message) pairs, most frequent first.
pub(crate) fn top_errors(errors: &std::collections::HashMap<String, u64>, limit: usize) -> Vec<(u64, String)> {
    let mut list: Vec<(u64, String)> = errors.iter().map(|(k, v)| (*v, k.clone())).collect();
    list.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    list.truncate(limit);
    list
}

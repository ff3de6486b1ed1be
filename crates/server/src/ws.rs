//! MQTT over WebSocket (`wss://<host>/$iothub/websocket`, subprotocol `mqtt`), as IoT Hub offers
//! it on port 443 for networks that block 8883. The WebSocket's binary messages carry the MQTT
//! byte stream; [`WsStream`] turns them back into a byte stream for the ordinary session code.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::{Buf as _, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::hub::Hub;

/// The WebSocket path of IoT Hub's MQTT endpoint.
pub const PATH: &str = "/$iothub/websocket";

/// The route of the WebSocket endpoint.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(hub)
}

/// Upgrades to a WebSocket speaking MQTT and serves it as a device connection.
pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    ws.protocols(["mqtt"])
        .max_message_size(hub.settings().max_packet_bytes + 16)
        .on_upgrade(move |socket| async move { hub.serve(WsStream::new(socket), peer).await })
}

/// A WebSocket seen as a byte stream: binary messages in, binary messages out.
pub struct WsStream {
    socket: WebSocket,
    pending: Bytes,
    closed: bool,
}

impl WsStream {
    /// Wraps an upgraded socket.
    pub fn new(socket: WebSocket) -> Self {
        Self { socket, pending: Bytes::new(), closed: false }
    }
}

impl AsyncRead for WsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary messages",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => self.closed = true,
                Some(Err(error)) => return Poll::Ready(Err(std::io::Error::other(error))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        ready!(Pin::new(&mut self.socket).poll_ready(cx)).map_err(std::io::Error::other)?;
        Pin::new(&mut self.socket)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(std::io::Error::other)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(std::io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_close(cx).map_err(std::io::Error::other)
    }
}

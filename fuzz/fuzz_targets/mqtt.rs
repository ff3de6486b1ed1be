//! What a device sends, through the hub's own decoding path (crates/server/src/hub/frame.rs,
//! compiled here by path): MQTT 3.1.1 packets from arbitrary bytes, CONNECT claims, PUBLISH
//! classification and reported-properties patches. Nothing panics; a decoded packet re-encodes.
//!
//! Input: bytes as they arrive on the socket (several packets in a row are decoded in turn).
#![no_main]

#[path = "../../crates/server/src/hub/frame.rs"]
#[allow(dead_code)]
mod frame;

use bytes::BytesMut;
use duhub_proto::iothub::DeviceTopic;
use libfuzzer_sys::fuzz_target;
use rumqttc::Packet;

/// The hub's packet limit (`HubSettings::max_packet_bytes`).
const MAX_PACKET: usize = 256 * 1024 + 1024;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    // At most as many packets as bytes: each takes at least two.
    for _ in 0..data.len() {
        let packet = match frame::read_packet(&mut buffer, MAX_PACKET) {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(_) => break,
        };
        match &packet {
            Packet::Connect(connect) => {
                let _ = frame::connect_claims(connect, "localhost");
            }
            Packet::Publish(publish) => {
                if let Ok(DeviceTopic::TwinPatchReported { .. }) = frame::classify_publish(publish, "dev1") {
                    let _ = frame::reported_patch(&publish.payload);
                }
            }
            _ => {}
        }
        let mut encoded = BytesMut::new();
        let _ = packet.write(&mut encoded, usize::MAX);
    }
    // The same bytes as a patch body.
    let _ = frame::reported_patch(data);
});

//! What a device sends, decoded without I/O or server state: MQTT 3.1.1 packets from bytes, the
//! identity a CONNECT claims, what a PUBLISH asks for, and a reported-properties patch as
//! validated JSON. `connection` reads bytes and calls these; the answers that need the store
//! (is the device known, is the token's signature right) stay there.
//!
//! Pure on purpose: the fuzz target `mqtt` (fuzz/) compiles this very file, so the hub's own
//! decoding path is what gets fuzzed. It may use only `bytes`, `rumqttc`, `serde_json` and
//! `duhub_proto`.

use bytes::BytesMut;
use duhub_proto::iothub::{self, ConnectUsername, DeviceTopic};
use duhub_proto::sas::SasToken;
use duhub_proto::twin_doc::{self, Section};
use rumqttc::{Connect, ConnectReturnCode, Packet, Protocol, Publish, QoS};
use serde_json::Value;

/// The next complete packet in `buffer` (consumed from it): `Ok(None)` when more bytes are
/// needed, `Err` (with the reason) when the bytes are not MQTT 3.1.1 or the packet is larger
/// than `max_packet`.
pub(crate) fn read_packet(buffer: &mut BytesMut, max_packet: usize) -> Result<Option<Packet>, String> {
    match Packet::read(buffer, max_packet) {
        Ok(packet) => Ok(Some(packet)),
        Err(rumqttc::Error::InsufficientBytes(_)) => Ok(None),
        Err(error) => Err(error.to_string()),
    }
}

/// What a CONNECT claims, checked for form: whether it is true (a known, enabled device whose
/// key signed the token) the connection asks the store.
#[derive(Debug, Clone)]
pub(crate) struct ConnectClaims {
    /// The device id of the client id.
    pub(crate) device_id: String,
    /// `model-id` of the username.
    pub(crate) model_id: Option<String>,
    /// The SAS token of the password, parsed (its signature not yet checked).
    pub(crate) token: SasToken,
    /// Keep-alive in seconds (0: none).
    pub(crate) keep_alive: u16,
    /// `clean_session=0`.
    pub(crate) persistent: bool,
}

/// A CONNECT refused: the CONNACK code and why (for the log).
pub(crate) type Refusal = (ConnectReturnCode, String);

/// Checks a CONNECT for form: MQTT 3.1.1, a device (not module) client id, a username naming
/// that client id, a SAS token for `<hostname>/devices/<device id>` as password.
pub(crate) fn connect_claims(connect: &Connect, hostname: &str) -> Result<ConnectClaims, Refusal> {
    let refuse = |code, why: String| Err((code, why));
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
    let Some(login) = &connect.login else {
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
        Some((host, id, None)) if id == device_id && host.eq_ignore_ascii_case(hostname) => {}
        _ => {
            return refuse(
                ConnectReturnCode::NotAuthorized,
                format!("the token's resource {:?} is not {hostname}/devices/{device_id}", token.resource),
            );
        }
    }
    Ok(ConnectClaims {
        device_id: device_id.to_owned(),
        model_id: username.model_id().map(str::to_owned),
        token,
        keep_alive: connect.keep_alive,
        persistent: !connect.clean_session,
    })
}

/// What a PUBLISH from `device_id` asks for; `Err` (a protocol error: the connection closes)
/// for QoS 2, an unknown topic, or telemetry in another device's name.
pub(crate) fn classify_publish(publish: &Publish, device_id: &str) -> Result<DeviceTopic, String> {
    if publish.qos == QoS::ExactlyOnce {
        return Err("QoS 2 is not supported".into());
    }
    let topic = DeviceTopic::parse(&publish.topic);
    match &topic {
        DeviceTopic::Unknown => Err(format!("publish to an unknown topic {:?}", publish.topic)),
        DeviceTopic::Telemetry { device_id: other, .. } if other != device_id => {
            Err(format!("telemetry for another device {other:?}"))
        }
        _ => Ok(topic),
    }
}

/// A reported-properties patch body: JSON that keeps IoT Hub's twin rules (an object, names,
/// depth, value types). `Err` is the message of the 400 answered.
pub(crate) fn reported_patch(payload: &[u8]) -> Result<Value, String> {
    let patch: Value = serde_json::from_slice(payload).map_err(|e| format!("the patch is not JSON: {e}"))?;
    twin_doc::validate_patch(&patch, Section::Reported).map_err(|e| e.to_string())?;
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::Login;

    fn connect(client_id: &str, username: &str, password: &str) -> Connect {
        Connect {
            protocol: Protocol::V4,
            keep_alive: 30,
            client_id: client_id.into(),
            clean_session: true,
            last_will: None,
            login: Some(Login { username: username.into(), password: password.into() }),
        }
    }

    #[test]
    fn packets_come_whole_or_not_at_all() {
        let mut bytes = BytesMut::new();
        Packet::PingReq.write(&mut bytes, 1024).unwrap();
        let mut partial = BytesMut::from(&bytes[..1]);
        assert_eq!(read_packet(&mut partial, 1024), Ok(None));
        assert_eq!(read_packet(&mut bytes, 1024), Ok(Some(Packet::PingReq)));
        let mut garbage = BytesMut::from(&[0xF0u8, 0x00][..]);
        assert!(read_packet(&mut garbage, 1024).is_err());
    }

    #[test]
    fn connect_claims_are_checked_for_form() {
        let token = duhub_proto::sas::generate("hub/devices/d1", &[1u8; 32], 4_000_000_000, None);
        let claims = connect_claims(&connect("d1", "hub/d1/?api-version=2021-04-12", &token), "hub").unwrap();
        assert_eq!(claims.device_id, "d1");
        assert_eq!(claims.token.expiry, 4_000_000_000);
        let refused = |c: Connect| connect_claims(&c, "hub").unwrap_err().0;
        assert_eq!(refused(connect("d1", "hub/d2/?", &token)), ConnectReturnCode::BadUserNamePassword);
        assert_eq!(refused(connect("d1", "hub/d1/?", "password")), ConnectReturnCode::BadUserNamePassword);
        assert_eq!(refused(connect("d1/m1", "hub/d1/m1/?", &token)), ConnectReturnCode::BadClientId);
        let other = duhub_proto::sas::generate("hub/devices/d2", &[1u8; 32], 4_000_000_000, None);
        assert_eq!(refused(connect("d1", "hub/d1/?", &other)), ConnectReturnCode::NotAuthorized);
    }

    #[test]
    fn publishes_are_classified() {
        let publish = |topic: &str| Publish::new(topic, QoS::AtLeastOnce, Vec::new());
        assert!(matches!(
            classify_publish(&publish("$iothub/twin/GET/?$rid=1"), "d1"),
            Ok(DeviceTopic::TwinGet { .. })
        ));
        assert!(classify_publish(&publish("devices/d2/messages/events/"), "d1").is_err());
        assert!(classify_publish(&publish("elsewhere"), "d1").is_err());
        assert!(
            classify_publish(&Publish::new("$iothub/twin/GET/?$rid=1", QoS::ExactlyOnce, Vec::new()), "d1").is_err()
        );
    }

    #[test]
    fn reported_patches_are_json_objects_within_the_rules() {
        assert!(reported_patch(br#"{"a": {"b": 1}}"#).is_ok());
        assert!(reported_patch(b"[1]").is_err());
        assert!(reported_patch(b"{").is_err());
        assert!(reported_patch(br#"{"a b$": 1}"#).is_err());
    }
}

//! IoT Hub conformance: SAS tokens, connection strings, the device MQTT grammar and twin document rules, against
//! the SDK captures of protocol-reference §8 and §9 (`spec/azure-api/mqtt_wire_capture_*.log`,
//! `spec/azure-api/iothub_service_sdk_http_capture.jsonl`), RFC 7396 and MQTT 3.1.1 §4.7.

use duhub_proto::connection_string::{ConnectionString, ConnectionStringError};
use duhub_proto::iothub::{
    ConnectUsername, DeviceTopic, ServiceTopic, TopicError, c2d_topic, decode_properties, desired_patch_topic,
    encode_properties, filter_matches, method_request_topic, method_response_topic, module_input_topic, property,
    reported_patch_topic, split_client_id, subscription_allowed, telemetry_topic, twin_get_topic, twin_response_topic,
};
use duhub_proto::sas::{self, SasError, SasToken, device_resource, percent_decode, percent_encode};
use duhub_proto::twin_doc::{
    MAX_SECTION_BYTES, MAX_TAGS_BYTES, Section, TwinDocError, apply_patch, merge_patch, merge_patch_value,
    section_size, strip_metadata, validate_patch,
};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Captured values (protocol-reference §8, §9)

/// The device key of the MQTT captures: base64 of `0123456789abcdef0123456789abcdef` (§8.4 example).
const DEVICE_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const DEVICE_KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// CONNECT password of the twin capture.
const PASSWORD_TWIN: &str = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=lK0ex83aXH1pY1K8lOqVKaVGlbW%2FtepRYAFP5zaMQQs%3D&se=1795459871";
/// CONNECT password of the methods / C2D / telemetry capture.
const PASSWORD_METHODS: &str = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=ygzBqUqAqrCtq%2BG%2Bh5WpX5wcc2Su33TeOYRTt%2BQiMLo%3D&se=1795459867";
/// `Authorization` of the service SDK capture; its policy key is not recorded anywhere, so only its format is tested.
const SERVICE_TOKEN: &str = "SharedAccessSignature sr=localhost%3A8443&sig=YeJFYorUK91QRxQSpw/8aeR471HBfC6TMkS7GLxw1X8%3D&se=1795459895&skn=iothubowner";

/// CONNECT username of the twin capture (`product_info` = the DU model id).
const USERNAME_MODEL: &str = "localhost/dev1/?api-version=2020-09-30&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29&model-id=dtmi%3Aazure%3Aiot%3AdeviceUpdateModel%3B3";
/// CONNECT username of the methods capture (no model id).
const USERNAME_PLAIN: &str = "localhost/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29";
const CLIENT_TYPE: &str = "azure-iot-device-iothub-py/2.14.0(3.11.7;Linux #1 SMP PREEMPT_DYNAMIC @0;x86_64)";

const RID_GET: &str = "21d3b3d4-14ca-4839-9b5c-4e96e1ea096d";
const RID_PATCH: &str = "ff82bcbc-9290-45b2-ad2a-9fee2b136c57";
const TOPIC_GET: &str = "$iothub/twin/GET/?$rid=21d3b3d4-14ca-4839-9b5c-4e96e1ea096d";
const TOPIC_GET_RES: &str = "$iothub/twin/res/200/?$rid=21d3b3d4-14ca-4839-9b5c-4e96e1ea096d";
const TOPIC_PATCH: &str = "$iothub/twin/PATCH/properties/reported/?$rid=ff82bcbc-9290-45b2-ad2a-9fee2b136c57";
const TOPIC_PATCH_RES: &str = "$iothub/twin/res/204/?$rid=ff82bcbc-9290-45b2-ad2a-9fee2b136c57&$version=2";
const TOPIC_DESIRED: &str = "$iothub/twin/PATCH/properties/desired/?$version=2";
const TOPIC_METHOD: &str = "$iothub/methods/POST/reboot/?$rid=42";
const TOPIC_METHOD_RES: &str = "$iothub/methods/res/200/?$rid=42";
const TOPIC_C2D: &str = "devices/dev1/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&%24.ct=application%2Fjson&prop1=v1";
const TOPIC_TELEMETRY: &str = "devices/dev1/messages/events/%24.mid=t1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=no";

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn c2d_properties() -> Vec<(String, String)> {
    pairs(&[
        (property::MESSAGE_ID, "m1"),
        (property::TO, "/devices/dev1/messages/deviceBound"),
        (property::CONTENT_TYPE, "application/json"),
        ("prop1", "v1"),
    ])
}

fn telemetry_properties() -> Vec<(String, String)> {
    pairs(&[
        (property::MESSAGE_ID, "t1"),
        (property::CONTENT_TYPE, "application/json"),
        (property::CONTENT_ENCODING, "utf-8"),
        ("alert", "no"),
    ])
}

/// A tiny deterministic generator for the property-style loops (no extra dependencies).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A string of up to `max` pieces drawn from `pieces`, sometimes with an arbitrary character mixed in.
    fn text(&mut self, pieces: &[&str], max: usize) -> String {
        let mut out = String::new();
        for _ in 0..self.below(max + 1) {
            if self.below(8) == 0 {
                out.push(char::from_u32(u32::try_from(self.below(0x11_0000)).unwrap()).unwrap_or('\u{fffd}'));
            } else {
                out.push_str(self.pick(pieces));
            }
        }
        out
    }

    /// `seed` with up to three random edits: a piece inserted, a range deleted, or the end cut off. One input in
    /// four is the seed itself.
    fn mutate(&mut self, seed: &str, pieces: &[&str]) -> String {
        let mut text = seed.to_owned();
        for _ in 0..self.below(4) {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let at = boundaries[self.below(boundaries.len())];
            match self.below(3) {
                0 => text.insert_str(at, &self.text(pieces, 2)),
                1 => {
                    let end = boundaries[self.below(boundaries.len())].max(at);
                    text.replace_range(at..end, "");
                }
                _ => text.truncate(at),
            }
        }
        text
    }
}

const GRAMMAR_PIECES: &[&str] = &[
    "$iothub/",
    "twin/",
    "GET/",
    "res/",
    "PATCH/",
    "properties/",
    "reported/",
    "desired/",
    "methods/",
    "POST/",
    "devices/",
    "dev1/",
    "modules/",
    "m1/",
    "messages/",
    "events/",
    "devicebound/",
    "inputs/",
    "?",
    "/?",
    "$rid=",
    "$version=",
    "&",
    "=",
    "%",
    "%2F",
    "%zz",
    "%C3",
    "%A9",
    "+",
    "#",
    "/",
    "200",
    "7",
    "a",
    "$.mid",
    ";",
    " ",
    "SharedAccessSignature ",
    "sr=",
    "sig=",
    "se=",
    "skn=",
    "HostName=",
    "DeviceId=",
    "ModuleId=",
    "SharedAccessKey=",
    "SharedAccessKeyName=",
    "GatewayHostName=",
    "x509=",
    "true",
    "\u{e9}",
    "\0",
];

// ---------------------------------------------------------------------------------------------
// SAS tokens

#[test]
fn captured_device_tokens_verify_with_the_documented_key() {
    for (password, expiry) in [(PASSWORD_TWIN, 1_795_459_871), (PASSWORD_METHODS, 1_795_459_867)] {
        let token = SasToken::parse(password).unwrap();
        assert_eq!(token.resource, "localhost/devices/dev1");
        assert_eq!(token.encoded_resource, "localhost%2Fdevices%2Fdev1");
        assert_eq!(token.expiry, expiry);
        assert_eq!(token.key_name, None);
        assert_eq!(token.signature.len(), 32);
        assert_eq!(token.device_of(), Some(("localhost".to_owned(), "dev1".to_owned(), None)));
        assert_eq!(token.verify(DEVICE_KEY, expiry - 1), Ok(()));
        assert_eq!(token.verify(DEVICE_KEY, expiry), Err(SasError::Expired { expiry, now: expiry }));
        assert_eq!(token.verify(b"0123456789abcdef0123456789abcdeF", expiry - 1), Err(SasError::BadSignature));
        // What the Python device SDK sends, byte for byte.
        assert_eq!(sas::generate("localhost/devices/dev1", DEVICE_KEY, expiry, None), password);
    }
}

#[test]
fn captured_service_token_parses_but_its_key_is_unknown() {
    // The capture does not record the iothubowner key, so the signature itself cannot be checked here.
    let token = SasToken::parse(SERVICE_TOKEN).unwrap();
    assert_eq!(token.resource, "localhost:8443");
    assert_eq!(token.encoded_resource, "localhost%3A8443");
    assert_eq!(token.expiry, 1_795_459_895);
    assert_eq!(token.key_name.as_deref(), Some("iothubowner"));
    assert_eq!(token.signature.len(), 32, "sig with an unescaped '/' decodes to an HMAC-SHA256");
    assert_eq!(token.device_of(), None);
    assert_eq!(token.verify(DEVICE_KEY, 0), Err(SasError::BadSignature));
}

#[test]
fn service_sdk_style_token_with_unescaped_slash_verifies() {
    // azure-iot-hub writes sig with quote(), which leaves '/' alone; find an expiry whose signature has one.
    let key = b"service policy key, 32 bytes...!";
    let (expiry, generated) = (1_700_000_000u64..)
        .map(|expiry| (expiry, sas::generate("localhost:8443", key, expiry, Some("iothubowner"))))
        .find(|(_, token)| token.contains("%2F"))
        .unwrap();
    assert!(generated.starts_with("SharedAccessSignature sr=localhost%3A8443&sig="));
    assert!(generated.ends_with(&format!("&se={expiry}&skn=iothubowner")));
    let service_style = generated.replace("%2F", "/");
    for text in [&generated, &service_style] {
        let token = SasToken::parse(text).unwrap();
        assert_eq!(token.verify(key, expiry - 1), Ok(()), "{text}");
        assert_eq!(token.key_name.as_deref(), Some("iothubowner"));
    }
}

#[test]
fn generated_tokens_round_trip() {
    let key = b"\x00\x01\x02 any bytes at all";
    for (host, device, module, key_name) in [
        ("localhost", "dev1", None, None),
        ("hub.azure-devices.net", "dev-\u{e9}:1", Some("mod.1"), None),
        ("localhost:8443", "d", None, Some("device policy")),
    ] {
        let resource = device_resource(host, device, module);
        let text = sas::generate(&resource, key, 2_000_000_000, key_name);
        let token = SasToken::parse(&text).unwrap();
        assert_eq!(token.resource, resource);
        assert_eq!(token.encoded_resource, percent_encode(&resource));
        assert_eq!(token.expiry, 2_000_000_000);
        assert_eq!(token.key_name.as_deref(), key_name);
        assert_eq!(token.verify(key, 1_999_999_999), Ok(()));
        assert_eq!(token.device_of(), Some((host.to_owned(), device.to_owned(), module.map(str::to_owned))));
    }
    assert_eq!(device_resource("h", "d", Some("m")), "h/devices/d/modules/m");
    assert_eq!(device_resource("h", "d", None), "h/devices/d");
}

#[test]
fn tampered_tokens_fail_with_bad_signature() {
    let expiry = 1_795_459_871;
    let genuine = PASSWORD_TWIN;
    for tampered in [
        genuine.replace("devices%2Fdev1", "devices%2Fdev2"),
        genuine.replace("sr=localhost", "sr=LOCALHOST"),
        genuine.replace("1795459871", "1795459872"),
        genuine.replace("sig=lK0", "sig=lK1"),
    ] {
        let token = SasToken::parse(&tampered).unwrap();
        assert_eq!(token.verify(DEVICE_KEY, 0), Err(SasError::BadSignature), "{tampered}");
        assert_eq!(token.verify(DEVICE_KEY, u64::MAX), Err(SasError::BadSignature), "signature is checked first");
    }
    // The same resource spelled with lower-case escapes is a different signed text.
    let lower = SasToken::parse(&genuine.replace("%2F", "%2f")).unwrap();
    assert_eq!(lower.resource, "localhost/devices/dev1");
    assert_eq!(lower.verify(DEVICE_KEY, 0), Err(SasError::BadSignature));
    assert_eq!(SasToken::parse(genuine).unwrap().verify(DEVICE_KEY, expiry - 1), Ok(()));
}

#[test]
fn expiry_boundaries() {
    let token = SasToken::parse(&sas::generate("h/devices/d", DEVICE_KEY, 100, None)).unwrap();
    assert!(!token.is_expired(0));
    assert!(!token.is_expired(99));
    assert!(token.is_expired(100));
    assert!(token.is_expired(101));
    assert_eq!(token.verify(DEVICE_KEY, 99), Ok(()));
    assert_eq!(token.verify(DEVICE_KEY, 100), Err(SasError::Expired { expiry: 100, now: 100 }));
    assert_eq!(token.verify(DEVICE_KEY, u64::MAX), Err(SasError::Expired { expiry: 100, now: u64::MAX }));
    let never = SasToken::parse(&sas::generate("h/devices/d", DEVICE_KEY, u64::MAX, None)).unwrap();
    assert_eq!(never.verify(DEVICE_KEY, u64::MAX - 1), Ok(()));
}

#[test]
fn token_fields_in_any_order_with_unknown_fields_and_any_name_case() {
    let expiry = 1_795_459_871;
    let reordered = "SharedAccessSignature se=1795459871&skn=&sig=lK0ex83aXH1pY1K8lOqVKaVGlbW%2FtepRYAFP5zaMQQs%3D&future=1&&SR=localhost%2Fdevices%2Fdev1";
    let token = SasToken::parse(reordered).unwrap();
    assert_eq!(token.encoded_resource, "localhost%2Fdevices%2Fdev1");
    assert_eq!(token.key_name.as_deref(), Some(""));
    assert_eq!(token.verify(DEVICE_KEY, expiry - 1), Ok(()));
    // Unpadded and URL-alphabet signatures decode to the same bytes.
    let unpadded = PASSWORD_TWIN.replace("%3D&se", "&se");
    assert_eq!(SasToken::parse(&unpadded).unwrap().verify(DEVICE_KEY, 0), Ok(()));
}

#[test]
fn malformed_tokens_are_refused() {
    let good_fields =
        "sr=localhost%2Fdevices%2Fdev1&sig=lK0ex83aXH1pY1K8lOqVKaVGlbW%2FtepRYAFP5zaMQQs%3D&se=1795459871";
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        (good_fields.to_owned(), "no scheme"),
        (format!("sharedaccesssignature {good_fields}"), "scheme case"),
        (format!("SharedAccessSignature  {good_fields}"), "two spaces"),
        (format!("SharedAccessSignature {good_fields} "), "trailing space"),
        (format!("SharedAccessSignature\t{good_fields}"), "tab"),
        ("SharedAccessSignature ".to_owned(), "no fields"),
        ("SharedAccessSignature sig=AAAA&se=1".to_owned(), "no sr"),
        ("SharedAccessSignature sr=h&se=1".to_owned(), "no sig"),
        ("SharedAccessSignature sr=h&sig=AAAA".to_owned(), "no se"),
        ("SharedAccessSignature sr=&sig=AAAA&se=1".to_owned(), "empty sr"),
        ("SharedAccessSignature sr=h&sig=&se=1".to_owned(), "empty sig"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=".to_owned(), "empty se"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=1&se=2".to_owned(), "duplicate se"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=1&SE=1".to_owned(), "duplicate se, other case"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=1&skn=a&skn=b".to_owned(), "duplicate skn"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=abc".to_owned(), "se not a number"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=-1".to_owned(), "se negative"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=+1".to_owned(), "se with sign"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=01".to_owned(), "se leading zero"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=1.0".to_owned(), "se fractional"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=99999999999999999999".to_owned(), "se overflow"),
        ("SharedAccessSignature sr=h&sig=%%%&se=1".to_owned(), "sig bad escape"),
        ("SharedAccessSignature sr=h&sig=A&se=1".to_owned(), "sig not base64"),
        ("SharedAccessSignature sr=h&sig=@@@@&se=1".to_owned(), "sig not base64 alphabet"),
        ("SharedAccessSignature sr=%zz&sig=AAAA&se=1".to_owned(), "sr bad escape"),
        ("SharedAccessSignature sr=%FF&sig=AAAA&se=1".to_owned(), "sr not UTF-8"),
        ("SharedAccessSignature sr=h&sig=AAAA&se=1&skn=%2".to_owned(), "skn bad escape"),
        ("SharedAccessSignature sr=h&sig&se=1".to_owned(), "field without ="),
        ("Bearer abc".to_owned(), "other scheme"),
    ];
    for (text, why) in cases {
        assert!(matches!(SasToken::parse(&text), Err(SasError::Malformed(_))), "{why}: {text:?} was accepted");
    }
}

#[test]
fn device_of_reads_device_and_module_resources_only() {
    type Parts<'a> = (&'a str, &'a str, Option<&'a str>);
    let cases: &[(&str, Option<Parts>)] = &[
        ("localhost/devices/dev1", Some(("localhost", "dev1", None))),
        ("localhost:8883/DEVICES/Dev1", Some(("localhost:8883", "Dev1", None))),
        ("hub/Devices/d/Modules/m", Some(("hub", "d", Some("m")))),
        ("hub/devices/d/modules/m", Some(("hub", "d", Some("m")))),
        ("localhost:8443", None),
        ("hub/devices", None),
        ("hub/devices/", None),
        ("/devices/d", None),
        ("hub/devices/d/", None),
        ("hub/devices/d/modules/", None),
        ("hub/devices/d/modules", None),
        ("hub/devices/d/things/m", None),
        ("hub/things/d", None),
        ("hub/devices/d/modules/m/x", None),
    ];
    for (resource, expected) in cases {
        let token = SasToken::parse(&sas::generate(resource, DEVICE_KEY, 1, None)).unwrap();
        assert_eq!(token.resource, *resource);
        let expected = expected.map(|(h, d, m)| (h.to_owned(), d.to_owned(), m.map(str::to_owned)));
        assert_eq!(token.device_of(), expected, "{resource}");
    }
}

#[test]
fn percent_encoding_matches_python_quote_with_nothing_safe() {
    assert_eq!(percent_encode("localhost/devices/dev1"), "localhost%2Fdevices%2Fdev1");
    assert_eq!(percent_encode("localhost:8443"), "localhost%3A8443");
    assert_eq!(percent_encode("dtmi:azure:iot:deviceUpdateModel;3"), "dtmi%3Aazure%3Aiot%3AdeviceUpdateModel%3B3");
    assert_eq!(percent_encode(CLIENT_TYPE), USERNAME_PLAIN.split("DeviceClientType=").nth(1).unwrap());
    assert_eq!(percent_encode("AZaz09-._~ +/=&$"), "AZaz09-._~%20%2B%2F%3D%26%24");
    assert_eq!(percent_decode("a%2Bb+c%20d").unwrap(), "a+b+c d");
    assert!(matches!(percent_decode("%"), Err(SasError::Malformed(_))));
}

#[test]
fn sas_parsers_never_panic_and_percent_round_trips() {
    let mut rng = Rng(0x5A5_5A5);
    for _ in 0..20_000 {
        let text = rng.text(GRAMMAR_PIECES, 12);
        if let Ok(token) = SasToken::parse(&text) {
            // A parsed token can be checked without panicking and never verifies with a random key.
            assert!(token.verify(b"k", 0).is_err());
            let _ = token.device_of();
        }
        let _ = SasToken::parse(&format!("SharedAccessSignature {text}"));
        if let Ok(decoded) = percent_decode(&text) {
            assert_eq!(percent_decode(&percent_encode(&decoded)).unwrap(), decoded);
        }
        assert_eq!(percent_decode(&percent_encode(&text)).unwrap(), text);
    }
}

// ---------------------------------------------------------------------------------------------
// Connection strings

#[test]
fn device_connection_string_of_the_capture() {
    let text = format!("HostName=localhost;DeviceId=dev1;SharedAccessKey={DEVICE_KEY_B64}");
    let cs = ConnectionString::parse(&text).unwrap();
    assert_eq!(cs.host_name, "localhost");
    assert_eq!(cs.device_id.as_deref(), Some("dev1"));
    assert_eq!(cs.module_id, None);
    assert_eq!(cs.shared_access_key.as_deref(), Some(DEVICE_KEY_B64));
    assert!(!cs.x509 && !cs.is_service());
    assert_eq!(cs.dial_host(), "localhost");
    assert_eq!(cs.key_bytes().unwrap(), DEVICE_KEY);
    assert_eq!(cs.to_string(), text);
    assert_eq!(cs, ConnectionString::device("localhost", "dev1", DEVICE_KEY_B64));
    assert_eq!(text.parse::<ConnectionString>().unwrap(), cs);
    assert_eq!(cs.sas_resource(), "localhost/devices/dev1");
    assert_eq!(cs.sas_token(1_795_459_871).unwrap(), PASSWORD_TWIN);
}

#[test]
fn gateway_module_service_and_x509_strings_round_trip() {
    let cases = [
        "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=a2V5;GatewayHostName=localhost",
        "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5",
        "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5;GatewayHostName=edge",
        "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5",
        "HostName=h;DeviceId=d;x509=true",
        "HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=h%2Fdevices%2Fd&sig=AA%3D%3D&se=1",
        "HostName=h;DeviceId=d;SharedAccessKeyName=devicepolicy;SharedAccessKey=a2V5",
    ];
    for text in cases {
        let cs = ConnectionString::parse(text).unwrap();
        assert_eq!(cs.to_string(), text);
        assert_eq!(ConnectionString::parse(&cs.to_string()).unwrap(), cs);
    }
    let gateway = ConnectionString::parse(cases[0]).unwrap();
    assert_eq!(gateway.dial_host(), "localhost");
    assert_eq!(gateway.sas_resource(), "myhub.azure-devices.net/devices/dev1", "the SAS keeps HostName");
    assert_eq!(gateway, ConnectionString::device("myhub.azure-devices.net", "dev1", "a2V5").with_gateway("localhost"));
    let module = ConnectionString::parse(cases[1]).unwrap();
    assert_eq!(module, ConnectionString::module("h", "d", "m", "a2V5"));
    assert_eq!(module.sas_resource(), "h/devices/d/modules/m");
    let service = ConnectionString::parse(cases[3]).unwrap();
    assert!(service.is_service());
    assert_eq!(service, ConnectionString::service("localhost:8443", "iothubowner", "a2V5"));
    assert_eq!(service.sas_resource(), "localhost:8443");
    let x509 = ConnectionString::parse(cases[4]).unwrap();
    assert!(x509.x509);
    assert_eq!(x509.key_bytes(), Err(ConnectionStringError::NoKey));
    assert_eq!(x509.sas_token(1), Err(ConnectionStringError::NoKey));
    let sas = ConnectionString::parse(cases[5]).unwrap();
    assert_eq!(
        sas.shared_access_signature.as_deref(),
        Some("SharedAccessSignature sr=h%2Fdevices%2Fd&sig=AA%3D%3D&se=1")
    );
}

#[test]
fn service_connection_string_signs_like_the_service_sdk() {
    let cs = ConnectionString::service("localhost:8443", "iothubowner", "c2VydmljZSBrZXk=");
    let text = cs.sas_token(1_795_459_895).unwrap();
    assert!(text.starts_with("SharedAccessSignature sr=localhost%3A8443&sig="), "{text}");
    assert!(text.ends_with("&se=1795459895&skn=iothubowner"), "{text}");
    let token = SasToken::parse(&text).unwrap();
    assert_eq!(token.verify(b"service key", 1_795_459_894), Ok(()));
}

#[test]
fn connection_strings_are_printed_in_canonical_order() {
    let scrambled = "SharedAccessKey=a2V5;GatewayHostName=gw;DeviceId=d;HostName=h;ModuleId=m";
    let cs = ConnectionString::parse(scrambled).unwrap();
    assert_eq!(cs.to_string(), "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5;GatewayHostName=gw");
    // Tolerated: surrounding whitespace, one trailing ';', '=' inside values, x509 in any case, x509=false.
    let loose = "  HostName=h;DeviceId=d;SharedAccessKey=a2V5==;  ";
    assert_eq!(ConnectionString::parse(loose).unwrap().shared_access_key.as_deref(), Some("a2V5=="));
    assert!(ConnectionString::parse("HostName=h;DeviceId=d;x509=TRUE").unwrap().x509);
    let no_x509 = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=a2V5;x509=false").unwrap();
    assert!(!no_x509.x509);
    assert_eq!(no_x509.to_string(), "HostName=h;DeviceId=d;SharedAccessKey=a2V5");
}

#[test]
fn bad_connection_strings_are_refused() {
    use ConnectionStringError as E;
    let cases: &[(&str, E)] = &[
        ("", E::Empty),
        ("  ;", E::Empty),
        ("HostName", E::NotKeyValue("HostName".to_owned())),
        ("HostName=h;;DeviceId=d;SharedAccessKey=k", E::NotKeyValue(String::new())),
        ("HostName=h;=x;DeviceId=d;SharedAccessKey=k", E::EmptyKey),
        ("HostName=h;HostName=h;DeviceId=d;SharedAccessKey=k", E::DuplicateKey("HostName".to_owned())),
        ("HostName=h;X=1;X=2;DeviceId=d;SharedAccessKey=k", E::DuplicateKey("X".to_owned())),
        ("HostName=;DeviceId=d;SharedAccessKey=k", E::EmptyValue("HostName".to_owned())),
        ("DeviceId=d;SharedAccessKey=k", E::MissingHostName),
        ("hostname=h;DeviceId=d;SharedAccessKey=k", E::MissingHostName),
        ("HostName=h;DeviceId=d;x509=yes", E::BadX509("yes".to_owned())),
        ("HostName=h;DeviceId=d;SharedAccessKey=k;x509=true", E::MixedAuthentication),
        ("HostName=h", E::Incomplete("a service string needs SharedAccessKeyName and SharedAccessKey, or a DeviceId")),
        (
            "HostName=h;SharedAccessKey=k",
            E::Incomplete("a service string needs SharedAccessKeyName and SharedAccessKey, or a DeviceId"),
        ),
        ("HostName=h;DeviceId=d", E::Incomplete("a device needs SharedAccessKey, SharedAccessSignature or x509=true")),
        (
            "HostName=h;DeviceId=d;x509=false",
            E::Incomplete("a device needs SharedAccessKey, SharedAccessSignature or x509=true"),
        ),
        ("HostName=h;ModuleId=m;SharedAccessKeyName=p;SharedAccessKey=k", E::Incomplete("ModuleId without DeviceId")),
    ];
    for (text, expected) in cases {
        assert_eq!(ConnectionString::parse(text).as_ref(), Err(expected), "{text:?}");
    }
    let bad_key = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=!!!!").unwrap();
    assert!(matches!(bad_key.key_bytes(), Err(E::BadKey(_))));
    assert!(matches!(bad_key.sas_token(1), Err(E::BadKey(_))));
}

#[test]
fn connection_string_parser_never_panics_and_printing_is_stable() {
    let mut rng = Rng(0xC0FFEE);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let seed = rng.pick(&[
            "HostName=h;DeviceId=d;SharedAccessKey=a2V5",
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5;GatewayHostName=gw",
            "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5",
            "HostName=h;DeviceId=d;x509=true;Extra=1",
        ]);
        let text = if rng.below(4) == 0 { rng.text(GRAMMAR_PIECES, 10) } else { rng.mutate(seed, GRAMMAR_PIECES) };
        if let Ok(cs) = ConnectionString::parse(&text) {
            parsed += 1;
            // Whitespace around the whole string is trimmed, so a value that ends in whitespace and is printed
            // last does not survive; every other string prints to one that parses back to the same value.
            if cs.other.last().is_some_and(|(_, value)| value.ends_with(char::is_whitespace)) {
                continue;
            }
            let printed = cs.to_string();
            assert_eq!(ConnectionString::parse(&printed).as_ref(), Ok(&cs), "{text:?} printed as {printed:?}");
            let _ = cs.key_bytes();
        }
    }
    assert!(parsed > 0, "the generator never produced a valid connection string");
}

// ---------------------------------------------------------------------------------------------
// CONNECT usernames

#[test]
fn captured_usernames_parse() {
    let with_model = ConnectUsername::parse(USERNAME_MODEL).unwrap();
    assert_eq!(with_model.host, "localhost");
    assert_eq!(with_model.client_id, "dev1");
    assert_eq!(with_model.device_id(), "dev1");
    assert_eq!(with_model.module_id(), None);
    assert_eq!(with_model.api_version(), Some("2020-09-30"));
    assert_eq!(with_model.model_id(), Some("dtmi:azure:iot:deviceUpdateModel;3"));
    assert_eq!(with_model.device_client_type(), Some(CLIENT_TYPE));
    assert_eq!(with_model.query.len(), 3);
    assert_eq!(with_model.to_string(), USERNAME_MODEL, "printing is byte-exact with the Python SDK");

    let plain = ConnectUsername::parse(USERNAME_PLAIN).unwrap();
    assert_eq!((plain.host.as_str(), plain.client_id.as_str()), ("localhost", "dev1"));
    assert_eq!(plain.api_version(), Some("2019-10-01"));
    assert_eq!(plain.model_id(), None);
    assert_eq!(plain.device_client_type(), Some(CLIENT_TYPE));
    assert_eq!(plain.to_string(), USERNAME_PLAIN);
}

#[test]
fn module_and_loose_usernames() {
    let module = ConnectUsername::parse("hub.example:8883/dev1/mod1/?api-version=2019-10-01").unwrap();
    assert_eq!(module.host, "hub.example:8883");
    assert_eq!(module.client_id, "dev1/mod1");
    assert_eq!((module.device_id(), module.module_id()), ("dev1", Some("mod1")));
    for (username, client_id) in [("h/dev1", "dev1"), ("h/dev1/", "dev1"), ("h/dev1/?", "dev1"), ("h/d/m", "d/m")] {
        let parsed = ConnectUsername::parse(username).unwrap();
        assert_eq!(parsed.client_id, client_id, "{username}");
        assert!(parsed.query.is_empty(), "{username}");
    }
    let odd = ConnectUsername::parse("h/d/?flag&api-version=1&&x=%3D").unwrap();
    assert_eq!(odd.query, pairs(&[("flag", ""), ("api-version", "1"), ("x", "=")]));
    assert_eq!(odd.get("x"), Some("="));
    assert_eq!(odd.get("API-VERSION"), None, "query names are case-sensitive");
}

#[test]
fn malformed_usernames_are_refused() {
    for bad in
        ["", "localhost", "/dev1/?a=b", "h//?a=b", "h/", "h/dev1//?a=b", "h/d/m/x/?a=b", "h/d/?a=%zz", "h/d/?%FF=1"]
    {
        assert!(ConnectUsername::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert!(matches!(ConnectUsername::parse("h/d/?a=%zz"), Err(TopicError::Encoding(_))));
    assert!(matches!(ConnectUsername::parse("nohost"), Err(TopicError::Username(_))));
}

#[test]
fn client_ids_split_at_the_first_slash() {
    assert_eq!(split_client_id("dev1"), ("dev1", None));
    assert_eq!(split_client_id("dev1/mod1"), ("dev1", Some("mod1")));
    assert_eq!(split_client_id("a/b/c"), ("a", Some("b/c")));
    assert_eq!(split_client_id(""), ("", None));
}

// ---------------------------------------------------------------------------------------------
// Topics

#[test]
fn captured_device_topics_are_classified() {
    assert_eq!(DeviceTopic::parse(TOPIC_GET), DeviceTopic::TwinGet { rid: RID_GET.to_owned() });
    assert_eq!(DeviceTopic::parse(TOPIC_PATCH), DeviceTopic::TwinPatchReported { rid: RID_PATCH.to_owned() });
    assert_eq!(DeviceTopic::parse(TOPIC_METHOD_RES), DeviceTopic::MethodResponse { status: 200, rid: "42".to_owned() });
    assert_eq!(
        DeviceTopic::parse(TOPIC_TELEMETRY),
        DeviceTopic::Telemetry { device_id: "dev1".to_owned(), module_id: None, properties: telemetry_properties() }
    );
    // Topics only the hub publishes are not device topics.
    for topic in [TOPIC_GET_RES, TOPIC_PATCH_RES, TOPIC_DESIRED, TOPIC_METHOD, TOPIC_C2D] {
        assert_eq!(DeviceTopic::parse(topic), DeviceTopic::Unknown, "{topic}");
    }
}

#[test]
fn captured_service_topics_are_classified() {
    assert_eq!(
        ServiceTopic::parse(TOPIC_GET_RES),
        ServiceTopic::TwinResponse { status: 200, rid: RID_GET.to_owned(), version: None }
    );
    assert_eq!(
        ServiceTopic::parse(TOPIC_PATCH_RES),
        ServiceTopic::TwinResponse { status: 204, rid: RID_PATCH.to_owned(), version: Some(2) }
    );
    assert_eq!(ServiceTopic::parse(TOPIC_DESIRED), ServiceTopic::DesiredPatch { version: Some(2) });
    assert_eq!(
        ServiceTopic::parse(TOPIC_METHOD),
        ServiceTopic::MethodRequest { name: "reboot".to_owned(), rid: "42".to_owned() }
    );
    assert_eq!(
        ServiceTopic::parse(TOPIC_C2D),
        ServiceTopic::CloudToDevice { device_id: "dev1".to_owned(), properties: c2d_properties() }
    );
    for topic in [TOPIC_GET, TOPIC_PATCH, TOPIC_METHOD_RES, TOPIC_TELEMETRY] {
        assert_eq!(ServiceTopic::parse(topic), ServiceTopic::Unknown, "{topic}");
    }
}

#[test]
fn topics_are_formatted_byte_exactly_as_captured() {
    assert_eq!(twin_response_topic(200, RID_GET, None), TOPIC_GET_RES);
    assert_eq!(twin_response_topic(204, RID_PATCH, Some(2)), TOPIC_PATCH_RES);
    assert_eq!(desired_patch_topic(2), TOPIC_DESIRED);
    assert_eq!(method_request_topic("reboot", "42"), TOPIC_METHOD);
    assert_eq!(c2d_topic("dev1", &c2d_properties()), TOPIC_C2D);
    assert_eq!(twin_get_topic(RID_GET), TOPIC_GET);
    assert_eq!(reported_patch_topic(RID_PATCH), TOPIC_PATCH);
    assert_eq!(method_response_topic(200, "42"), TOPIC_METHOD_RES);
    assert_eq!(telemetry_topic("dev1", None, &telemetry_properties()), TOPIC_TELEMETRY);
    assert_eq!(c2d_topic("dev1", &[]), "devices/dev1/messages/devicebound/");
    assert_eq!(
        telemetry_topic("d", Some("m"), &pairs(&[(property::OUTPUT_NAME, "out")])),
        "devices/d/modules/m/messages/events/%24.on=out"
    );
    assert_eq!(module_input_topic("d", "m", "in1", &pairs(&[("k", "v")])), "devices/d/modules/m/inputs/in1/k=v");
}

#[test]
fn awkward_request_ids_and_names_survive_the_round_trip() {
    for rid in ["a/b", "x&$version=9", "100%", "\u{e9}t\u{e9}", "a+b c"] {
        assert_eq!(DeviceTopic::parse(&twin_get_topic(rid)), DeviceTopic::TwinGet { rid: rid.to_owned() });
        assert_eq!(
            DeviceTopic::parse(&reported_patch_topic(rid)),
            DeviceTopic::TwinPatchReported { rid: rid.to_owned() }
        );
        assert_eq!(
            DeviceTopic::parse(&method_response_topic(500, rid)),
            DeviceTopic::MethodResponse { status: 500, rid: rid.to_owned() }
        );
        assert_eq!(
            ServiceTopic::parse(&twin_response_topic(429, rid, Some(7))),
            ServiceTopic::TwinResponse { status: 429, rid: rid.to_owned(), version: Some(7) }
        );
        assert_eq!(
            ServiceTopic::parse(&method_request_topic(rid, rid)),
            ServiceTopic::MethodRequest { name: rid.to_owned(), rid: rid.to_owned() }
        );
    }
}

#[test]
fn other_device_topic_forms() {
    let cases: &[(&str, DeviceTopic)] = &[
        ("$iothub/twin/GET/?$rid=1&extra=x", DeviceTopic::TwinGet { rid: "1".to_owned() }),
        ("$iothub/twin/GET/?%24rid=1", DeviceTopic::TwinGet { rid: "1".to_owned() }),
        ("$iothub/methods/res/0/?$rid=1", DeviceTopic::MethodResponse { status: 0, rid: "1".to_owned() }),
        ("$iothub/methods/res/65535/?$rid=1", DeviceTopic::MethodResponse { status: 65535, rid: "1".to_owned() }),
        (
            "devices/dev1/messages/events",
            DeviceTopic::Telemetry { device_id: "dev1".to_owned(), module_id: None, properties: vec![] },
        ),
        (
            "devices/dev1/messages/events/",
            DeviceTopic::Telemetry { device_id: "dev1".to_owned(), module_id: None, properties: vec![] },
        ),
        (
            "devices/dev1/modules/m1/messages/events/%24.on=out1&k=a%3Db",
            DeviceTopic::Telemetry {
                device_id: "dev1".to_owned(),
                module_id: Some("m1".to_owned()),
                properties: pairs(&[("$.on", "out1"), ("k", "a=b")]),
            },
        ),
    ];
    for (topic, expected) in cases {
        assert_eq!(&DeviceTopic::parse(topic), expected, "{topic}");
    }
}

#[test]
fn malformed_device_topics_are_unknown() {
    for topic in [
        "",
        "/",
        "random",
        "$iothub/twin/GET/?",
        "$iothub/twin/GET/?$rid=",
        "$iothub/twin/GET/?$rid=1&x",
        "$iothub/twin/GET/?$rid=1&",
        "$iothub/twin/GET/?$rid=1&$rid=2",
        "$iothub/twin/GET?$rid=1",
        "$iothub/twin/GET/$rid=1",
        "$iothub/twin/get/?$rid=1",
        "$iothub/twin/GET/?$rid=%zz",
        "$iothub/twin/GET/?$RID=1",
        "$iothub/twin/PATCH/properties/reported/?x=1",
        "$iothub/methods/res/abc/?$rid=1",
        "$iothub/methods/res/70000/?$rid=1",
        "$iothub/methods/res/-1/?$rid=1",
        "$iothub/methods/res//?$rid=1",
        "$iothub/methods/res/200?$rid=1",
        "$iothub/methods/res/200/?$rid",
        "devices//messages/events/",
        "devices/dev1",
        "devices/dev1/messages/event",
        "devices/dev1/messages/eventsX",
        "devices/dev1/messages/events/a",
        "devices/dev1/messages/events/=v",
        "devices/dev1/messages/events/a=%zz",
        "devices/dev1/messages/events/a=1&&b=2",
        "devices/dev1/modules//messages/events/",
        "devices/dev1/modules/m1/messages/devicebound/",
        "devices/dev1/messages/devicebound/a=b",
    ] {
        assert_eq!(DeviceTopic::parse(topic), DeviceTopic::Unknown, "{topic:?}");
    }
}

#[test]
fn other_service_topic_forms() {
    let cases: &[(&str, ServiceTopic)] = &[
        ("$iothub/twin/PATCH/properties/desired/?", ServiceTopic::DesiredPatch { version: None }),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=18446744073709551615",
            ServiceTopic::DesiredPatch { version: Some(u64::MAX) },
        ),
        (
            "$iothub/twin/res/404/?$rid=r",
            ServiceTopic::TwinResponse { status: 404, rid: "r".to_owned(), version: None },
        ),
        (
            "devices/d/messages/devicebound",
            ServiceTopic::CloudToDevice { device_id: "d".to_owned(), properties: vec![] },
        ),
        (
            "devices/d/modules/m/inputs/in1",
            ServiceTopic::ModuleInput {
                device_id: "d".to_owned(),
                module_id: "m".to_owned(),
                input: "in1".to_owned(),
                properties: vec![],
            },
        ),
        (
            "devices/d/modules/m/inputs/in1/%24.mid=x&iothub-ack=full",
            ServiceTopic::ModuleInput {
                device_id: "d".to_owned(),
                module_id: "m".to_owned(),
                input: "in1".to_owned(),
                properties: pairs(&[("$.mid", "x"), (property::ACK, "full")]),
            },
        ),
    ];
    for (topic, expected) in cases {
        assert_eq!(&ServiceTopic::parse(topic), expected, "{topic}");
    }
    let props = pairs(&[("a b", "c/d"), ("$.ct", "text/plain")]);
    assert_eq!(
        ServiceTopic::parse(&module_input_topic("d", "m", "in", &props)),
        ServiceTopic::ModuleInput {
            device_id: "d".to_owned(),
            module_id: "m".to_owned(),
            input: "in".to_owned(),
            properties: props,
        }
    );
    for topic in [
        "$iothub/twin/res/200/?",
        "$iothub/twin/res/200/?$rid=1&$version=x",
        "$iothub/twin/res/200/?$rid=1&$version=1&$version=2",
        "$iothub/twin/res/x/?$rid=1",
        "$iothub/twin/PATCH/properties/desired/?$version=-1",
        "$iothub/twin/PATCH/properties/desired/?v",
        "$iothub/methods/POST//?$rid=1",
        "$iothub/methods/POST/reboot/?",
        "$iothub/methods/POST/reboot",
        "devices//messages/devicebound/",
        "devices/d/messages/devicebound/x",
        "devices/d/modules//inputs/in",
        "devices/d/modules/m/inputs/",
        "devices/d/modules/m/inputs/in/x",
        "devices/d/modules/m/outputs/o",
    ] {
        assert_eq!(ServiceTopic::parse(topic), ServiceTopic::Unknown, "{topic:?}");
    }
}

#[test]
fn topic_parsers_never_panic_and_agree_with_the_formatters() {
    let mut rng = Rng(0x7091C5);
    let mut classified = 0;
    for _ in 0..20_000 {
        let seed = rng.pick(&[
            TOPIC_GET,
            TOPIC_GET_RES,
            TOPIC_PATCH,
            TOPIC_PATCH_RES,
            TOPIC_DESIRED,
            TOPIC_METHOD,
            TOPIC_METHOD_RES,
            TOPIC_C2D,
            TOPIC_TELEMETRY,
            USERNAME_MODEL,
            "devices/d/modules/m/messages/events/a=b",
            "devices/d/modules/m/inputs/in/a=b",
        ]);
        let topic = if rng.below(4) == 0 { rng.text(GRAMMAR_PIECES, 10) } else { rng.mutate(seed, GRAMMAR_PIECES) };
        match DeviceTopic::parse(&topic) {
            DeviceTopic::TwinGet { rid } => {
                classified += 1;
                assert_eq!(DeviceTopic::parse(&twin_get_topic(&rid)), DeviceTopic::TwinGet { rid });
            }
            DeviceTopic::Telemetry { device_id, module_id, properties } => {
                classified += 1;
                let again = telemetry_topic(&device_id, module_id.as_deref(), &properties);
                assert_eq!(DeviceTopic::parse(&again), DeviceTopic::Telemetry { device_id, module_id, properties });
            }
            DeviceTopic::TwinPatchReported { .. } | DeviceTopic::MethodResponse { .. } => classified += 1,
            DeviceTopic::Unknown => {}
        }
        let _ = ServiceTopic::parse(&topic);
        let _ = ConnectUsername::parse(&topic);
        if let Ok(bag) = decode_properties(&topic) {
            assert_eq!(decode_properties(&encode_properties(&bag)).unwrap(), bag);
        }
        let other = rng.text(GRAMMAR_PIECES, 6);
        let _ = filter_matches(&topic, &other);
        let _ = subscription_allowed(&topic, "dev1", None);
        let _ = subscription_allowed(&topic, &other, Some(&other));
    }
    assert!(classified > 0, "the generator never produced a device topic");
}

// ---------------------------------------------------------------------------------------------
// Subscriptions and filters

#[test]
fn subscriptions_of_a_device() {
    let allowed = [
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/methods/POST/#",
        "devices/dev1/messages/devicebound/#",
        "$iothub/twin/res/+",
        "$iothub/twin/res/200/#",
        "$iothub/twin/res",
        "$iothub/methods/POST/+/#",
        "$iothub/methods/POST/reboot/+",
        "devices/dev1/messages/devicebound/+",
        "devices/dev1/messages/devicebound",
    ];
    for filter in allowed {
        assert!(subscription_allowed(filter, "dev1", None), "{filter} refused");
    }
    let refused = [
        "#",
        "+",
        "+/#",
        "$iothub/#",
        "$iothub/+/res/#",
        "$iothub/twin/#",
        "$iothub/twin/+/#",
        "$iothub/twin/+",
        "$iothub/twin/GET/#",
        "$iothub/twin/PATCH/properties/+/#",
        "$iothub/twin/PATCH/properties/reported/#",
        "$iothub/methods/#",
        "$iothub/methods/res/#",
        "$IOTHUB/twin/res/#",
        "devices/other/messages/devicebound/#",
        "devices/+/messages/devicebound/#",
        "devices/#",
        "devices/dev1/#",
        "devices/dev1/messages/#",
        "devices/dev1/messages/+",
        "devices/dev1/messages/+/#",
        "devices/dev1/messages/events/#",
        "devices/DEV1/messages/devicebound/#",
        "devices/dev1/modules/m1/inputs/#",
        "$iothub/twin/res/#/x",
        "$iothub/twin/res/a+",
        "$iothub/twin/res/a#",
        "",
    ];
    for filter in refused {
        assert!(!subscription_allowed(filter, "dev1", None), "{filter:?} allowed");
    }
}

#[test]
fn subscriptions_of_a_module_and_odd_ids() {
    for filter in ["devices/dev1/modules/m1/inputs/#", "devices/dev1/modules/m1/inputs/in1/+", "$iothub/methods/POST/#"]
    {
        assert!(subscription_allowed(filter, "dev1", Some("m1")), "{filter} refused");
    }
    for filter in [
        "devices/dev1/messages/devicebound/#",
        "devices/dev1/modules/m2/inputs/#",
        "devices/dev1/modules/+/inputs/#",
        "devices/dev1/modules/m1/#",
        "devices/dev1/modules/m1/messages/events/#",
        "devices/dev2/modules/m1/inputs/#",
    ] {
        assert!(!subscription_allowed(filter, "dev1", Some("m1")), "{filter} allowed");
    }
    // An id that is itself a wildcard must not open other devices' trees.
    assert!(!subscription_allowed("devices/+/messages/devicebound/#", "+", None));
    assert!(!subscription_allowed("devices/#", "#", None));
    assert!(!subscription_allowed("devices/a/b/messages/devicebound/#", "a/b", None));
    assert!(!subscription_allowed("devices//messages/devicebound/#", "", None));
    assert!(!subscription_allowed("devices/d/modules/+/inputs/#", "d", Some("+")));
    assert!(subscription_allowed("$iothub/twin/res/#", "", None), "the $iothub trees do not depend on the ids");
}

#[test]
fn allowed_filters_only_match_topics_of_their_own_trees() {
    let levels = [
        "$iothub",
        "twin",
        "res",
        "PATCH",
        "properties",
        "desired",
        "methods",
        "POST",
        "devices",
        "dev1",
        "dev2",
        "messages",
        "devicebound",
        "events",
        "modules",
        "m1",
        "inputs",
        "200",
        "+",
        "#",
        "",
    ];
    let topics: Vec<String> = [
        TOPIC_GET,
        TOPIC_GET_RES,
        TOPIC_PATCH,
        TOPIC_PATCH_RES,
        TOPIC_DESIRED,
        TOPIC_METHOD,
        TOPIC_METHOD_RES,
        TOPIC_C2D,
        TOPIC_TELEMETRY,
        "devices/dev2/messages/devicebound/a=b",
        "devices/dev1/modules/m1/inputs/in/a=b",
        "devices/dev1/modules/m2/inputs/in/a=b",
        "$iothub/twin/res",
        "devices/dev1/messages/devicebound",
    ]
    .iter()
    .map(|t| (*t).to_owned())
    .collect();
    let inside = |topic: &str, module: Option<&str>| {
        let own = match module {
            None => "devices/dev1/messages/devicebound".to_owned(),
            Some(m) => format!("devices/dev1/modules/{m}/inputs"),
        };
        ["$iothub/twin/res", "$iothub/twin/PATCH/properties/desired", "$iothub/methods/POST", own.as_str()]
            .iter()
            .any(|tree| topic == *tree || topic.starts_with(&format!("{tree}/")))
    };
    let mut rng = Rng(0xF117E2);
    let mut allowed = 0;
    for _ in 0..20_000 {
        // A tree of one client or another, cut short, with levels swapped and levels added.
        let tree = rng.pick(&[
            "$iothub/twin/res",
            "$iothub/twin/PATCH/properties/desired",
            "$iothub/methods/POST",
            "devices/dev1/messages/devicebound",
            "devices/dev1/modules/m1/inputs",
            "devices/dev2/modules/m1/inputs",
        ]);
        let mut filter: Vec<&str> = tree.split('/').take(1 + rng.below(6)).collect();
        for level in &mut filter {
            if rng.below(5) == 0 {
                *level = rng.pick(&levels);
            }
        }
        for _ in 0..rng.below(3) {
            filter.push(rng.pick(&levels));
        }
        let filter = filter.join("/");
        for module in [None, Some("m1")] {
            if subscription_allowed(&filter, "dev1", module) {
                allowed += 1;
                for topic in &topics {
                    if filter_matches(&filter, topic) {
                        assert!(inside(topic, module), "{filter} allowed for {module:?} but matches {topic}");
                    }
                }
            }
        }
    }
    assert!(allowed > 100, "only {allowed} allowed filters generated");
}

#[test]
fn filter_matching_follows_mqtt_3_1_1() {
    let cases: &[(&str, &str, bool)] = &[
        // MQTT 3.1.1 §4.7.1.2 and §4.7.1.3 examples.
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        ("sport/#", "sport", true),
        ("#", "sport/tennis", true),
        ("sport/tennis/#", "sport/tennis", true),
        ("sport/tennis#", "sport/tennis", false),
        ("sport/tennis/#/ranking", "sport/tennis/x/ranking", false),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("sport+", "sport+", false),
        // §4.7.2: '$' topics and leading wildcards.
        ("#", "$SYS/monitor/Clients", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        ("#", "$iothub/twin/res/200/?$rid=1", false),
        ("+/twin/res/#", "$iothub/twin/res/200/?$rid=1", false),
        // IoT Hub trees.
        ("$iothub/twin/res/#", TOPIC_GET_RES, true),
        ("$iothub/twin/res/#", TOPIC_DESIRED, false),
        ("$iothub/twin/PATCH/properties/desired/#", TOPIC_DESIRED, true),
        ("$iothub/methods/POST/#", TOPIC_METHOD, true),
        ("$iothub/methods/POST/+", TOPIC_METHOD, false),
        ("$iothub/methods/POST/+/+", TOPIC_METHOD, true),
        ("devices/dev1/messages/devicebound/#", TOPIC_C2D, true),
        ("devices/dev2/messages/devicebound/#", TOPIC_C2D, false),
        ("devices/+/messages/devicebound/#", TOPIC_C2D, true),
        // Exact, case-sensitive, invalid input.
        ("a/b", "a/b", true),
        ("a/b", "a/B", false),
        ("a/b", "a", false),
        ("a", "a/b", false),
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
        ("#", "a/+", false),
        ("#", "a/#", false),
        ("+", "", false),
        ("", "a", false),
        ("", "", false),
        ("a\0", "a\0", false),
    ];
    for (filter, topic, expected) in cases {
        assert_eq!(filter_matches(filter, topic), *expected, "{filter:?} vs {topic:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property bags

#[test]
fn property_bags_round_trip_and_decode_like_the_sdk() {
    assert_eq!(encode_properties(&telemetry_properties()), TOPIC_TELEMETRY.rsplit('/').next().unwrap());
    assert_eq!(
        decode_properties(
            "%24.mid=m1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&%24.ct=application%2Fjson&prop1=v1"
        )
        .unwrap(),
        c2d_properties()
    );
    assert_eq!(decode_properties("").unwrap(), vec![]);
    assert_eq!(decode_properties("a=").unwrap(), pairs(&[("a", "")]));
    assert_eq!(decode_properties("a=b=c").unwrap(), pairs(&[("a", "b=c")]), "split at the first '='");
    assert_eq!(decode_properties("a=1&a=2").unwrap(), pairs(&[("a", "1"), ("a", "2")]), "repeats kept");
    assert_eq!(decode_properties("a=1+2").unwrap(), pairs(&[("a", "1+2")]), "'+' is not a space");
    let awkward = pairs(&[("k&=/ ", "v&=/ \u{e9}%"), ("$.uid", ""), ("\u{1F600}", "+")]);
    assert_eq!(decode_properties(&encode_properties(&awkward)).unwrap(), awkward);
    assert_eq!(encode_properties(&[]), "");
    for bad in ["a", "a=1&", "&a=1", "a=1&&b=2", "=1", "%=1", "a=%zz", "a=%FF", "%="] {
        assert!(decode_properties(bad).is_err(), "{bad:?} decoded");
    }
    assert!(matches!(decode_properties("a"), Err(TopicError::Properties(_))));
    assert!(matches!(decode_properties("a=%zz"), Err(TopicError::Encoding(_))));
}

// ---------------------------------------------------------------------------------------------
// Twin documents

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn merge_patch_follows_rfc_7396_appendix_a() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
        (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
        (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
        (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
    ];
    for (target, patch, expected) in cases {
        let mut merged = target.clone();
        merge_patch_value(&mut merged, &patch);
        // Compare texts: member order matters too.
        assert_eq!(merged.to_string(), expected.to_string(), "{target} + {patch}");
        if let (Value::Object(target), Value::Object(patch)) = (&target, &patch) {
            let mut merged = target.clone();
            merge_patch(&mut merged, patch);
            assert_eq!(Value::Object(merged).to_string(), expected.to_string(), "{target:?} + {patch:?}");
        }
    }
}

#[test]
fn merge_patch_keeps_the_order_of_existing_members() {
    let mut target = object(json!({"x": 1, "y": 2, "z": {"p": 1, "q": 2}, "w": 0}));
    merge_patch(&mut target, &object(json!({"y": null, "new": 4, "x": 5, "z": {"p": null, "r": 3, "q": 9}})));
    assert_eq!(Value::Object(target).to_string(), r#"{"x":5,"z":{"q":9,"r":3},"w":0,"new":4}"#);
}

#[test]
fn validation_rules_with_their_pointers() {
    let long_name = "n".repeat(1025);
    let wide_name = "\u{e9}".repeat(513); // 513 characters, 1026 bytes
    let long_string = "s".repeat(4097);
    let wide_string = "\u{e9}".repeat(2049); // 2049 characters, 4098 bytes
    let nested =
        |depth: usize, leaf: Value| (1..=depth).rev().fold(leaf, |inner, level| json!({ format!("l{level}"): inner }));
    let deep_pointer = |depth: usize| (1..=depth).map(|level| format!("/l{level}")).collect::<String>();
    let cases: Vec<(Section, Value, &str, &str)> = vec![
        (Section::Desired, json!([1]), "", "type"),
        (Section::Tags, json!("x"), "", "type"),
        (Section::Reported, json!(null), "", "type"),
        (Section::Reported, json!({"": 1}), "/", "emptyName"),
        (Section::Desired, json!({"a": {"": 1}}), "/a/", "emptyName"),
        (Section::Desired, json!({"a.b": 1}), "/a.b", "nameChars"),
        (Section::Desired, json!({"a b": 1}), "/a b", "nameChars"),
        (Section::Desired, json!({"a$": 1}), "/a$", "nameChars"),
        (Section::Tags, json!({"x": {"$ref": 1}}), "/x/$ref", "nameChars"),
        (Section::Reported, json!({"a\u{1}": 1}), "/a\u{1}", "nameChars"),
        (Section::Reported, json!({"tab\there": 1}), "/tab\there", "nameChars"),
        (Section::Reported, json!({"del\u{7f}": 1}), "/del\u{7f}", "nameChars"),
        (Section::Reported, json!({"c1\u{85}": 1}), "/c1\u{85}", "nameChars"),
        (Section::Tags, json!({ long_name.clone(): 1 }), "", "maxNameLength"),
        (Section::Tags, json!({ wide_name.clone(): 1 }), "", "maxNameLength"),
        (Section::Desired, json!({"s": long_string}), "/s", "maxStringLength"),
        (Section::Desired, json!({"s": wide_string}), "/s", "maxStringLength"),
        (Section::Desired, json!({"a": ["ok", "x".repeat(4097)]}), "/a/1", "maxStringLength"),
        (Section::Desired, json!({"a": [{"b.c": 1}]}), "/a/0/b.c", "nameChars"),
        (Section::Desired, json!({"a/b": {"c~d": {"e.f": 1}}}), "/a~1b/c~0d/e.f", "nameChars"),
        (Section::Desired, json!({"ok": 1, "bad.1": 1, "bad 2": 1}), "/bad.1", "nameChars"),
        (Section::Reported, nested(11, json!({"property": "value"})), "", "maxDepth"),
        (Section::Reported, nested(10, json!({"l11": []})), "", "maxDepth"),
        (Section::Reported, nested(10, json!([[1]])), "", "maxDepth"),
        (Section::Tags, json!({"$version": 3}), "/$version", "nameChars"),
        (Section::Desired, json!({"a": {"$version": 1}}), "/a/$version", "nameChars"),
        (Section::Desired, json!({"$metadata": {}}), "/$metadata", "nameChars"),
    ];
    for (section, patch, pointer, rule) in cases {
        let Err(error) = validate_patch(&patch, section) else { panic!("{patch} accepted for {section:?}") };
        // Pointers of too-long names and too-deep values are checked below, where they are long.
        if rule == "maxNameLength" {
            assert!(error.pointer.len() > 1024, "{error}");
        } else if rule == "maxDepth" {
            assert!(error.pointer.starts_with("/l1/l2/l3/l4/l5/l6/l7/l8/l9"), "{error}");
        } else {
            assert_eq!(error.pointer, pointer, "{patch}");
        }
        assert_eq!(error.rule, rule, "{patch}");
        assert!(!error.message.is_empty());
        // apply_patch reports the same error.
        assert_eq!(apply_patch(&Map::new(), &patch, section), Err(error));
    }
    let too_deep = validate_patch(&nested(11, json!({"property": "value"})), Section::Desired).unwrap_err();
    assert_eq!(too_deep.pointer, deep_pointer(11));
    let array_too_deep = validate_patch(&nested(10, json!([[1]])), Section::Desired).unwrap_err();
    assert_eq!(array_too_deep.pointer, format!("{}/0", deep_pointer(10)));
    let name_error = validate_patch(&json!({ long_name.clone(): 1 }), Section::Desired).unwrap_err();
    assert_eq!(name_error.pointer, format!("/{long_name}"));
}

#[test]
fn valid_patches_at_the_limits() {
    let nested =
        |depth: usize, leaf: Value| (1..=depth).rev().fold(leaf, |inner, level| json!({ format!("l{level}"): inner }));
    let cases = [
        (Section::Desired, json!({})),
        (Section::Desired, json!({"$version": 3, "a": 1})),
        (Section::Reported, json!({"$version": "ignored, whatever it is", "a": null})),
        (Section::Tags, json!({"ADUGroup": "g1", "n": 1.5, "b": true, "z": null, "arr": [1, "x", {"k": [null]}]})),
        (Section::Desired, json!({ "n".repeat(1024): "s".repeat(4096) })),
        (Section::Desired, json!({ "\u{e9}".repeat(512): "\u{e9}".repeat(2048) })),
        (
            Section::Desired,
            json!({"deviceUpdate": {"__t": "c", "service": {"workflow": {"action": 3, "id": "x-y:z"}}}}),
        ),
        // IoT Hub's documented example: ten nested objects holding a primitive.
        (Section::Tags, nested(10, json!({"property": "value"}))),
        (Section::Tags, nested(9, json!([1, 2]))),
        (Section::Tags, nested(10, json!(["leaf"]))),
        (Section::Reported, json!({"\u{1F600}-:#@!'()": "\u{0}control chars are fine in values"})),
    ];
    for (section, patch) in cases {
        assert_eq!(validate_patch(&patch, section), Ok(()), "{patch} refused for {section:?}");
    }
}

#[test]
fn twin_doc_errors_display_pointer_and_message() {
    let error = validate_patch(&json!({"a.b": 1}), Section::Desired).unwrap_err();
    assert_eq!(error.to_string(), "/a.b: member names must not contain '.'");
    let root = validate_patch(&json!(1), Section::Tags).unwrap_err();
    assert_eq!(root.to_string(), "/: a tags patch must be a JSON object");
    let custom = TwinDocError { pointer: "/x".to_owned(), rule: "maxSize", message: "too big".to_owned() };
    assert_eq!(custom.to_string(), "/x: too big");
}

#[test]
fn apply_patch_merges_into_a_copy_and_leaves_versions_to_the_caller() {
    let current = object(json!({"$version": 3, "a": 1, "b": {"c": 2, "e": 0}}));
    let patch = json!({"$version": 9, "b": {"c": null, "d": 3}, "f": "x"});
    let next = apply_patch(&current, &patch, Section::Desired).unwrap();
    assert_eq!(Value::Object(next).to_string(), r#"{"$version":3,"a":1,"b":{"e":0,"d":3},"f":"x"}"#);
    assert_eq!(Value::Object(current.clone()).to_string(), r#"{"$version":3,"a":1,"b":{"c":2,"e":0}}"#);
    let reported = apply_patch(&Map::new(), &json!({"$version": 1, "x": 1}), Section::Reported).unwrap();
    assert!(!reported.contains_key("$version"), "a patch's $version is not merged");
    // Tags have no `$version` exemption.
    assert_eq!(apply_patch(&current, &json!({"$version": 1}), Section::Tags).unwrap_err().rule, "nameChars");
}

#[test]
fn section_size_limit_is_inclusive_and_the_original_is_untouched() {
    for (section, limit) in
        [(Section::Desired, MAX_SECTION_BYTES), (Section::Reported, MAX_SECTION_BYTES), (Section::Tags, MAX_TAGS_BYTES)]
    {
        assert_eq!(section.max_bytes(), limit);
        let mut current = Map::new();
        current.insert("$version".to_owned(), json!(12));
        current.insert("$metadata".to_owned(), json!({"$lastUpdated": "x".repeat(limit)}));
        while section_size(&current) + 4100 < limit {
            current.insert(format!("k{}", current.len()), json!("x".repeat(4000)));
        }
        let before = current.clone();
        let with_empty_pad = apply_patch(&current, &json!({"pad": ""}), section).unwrap();
        let room = limit - section_size(&with_empty_pad);
        assert!(room < 4096, "the filler leaves {room} bytes, more than one string can take");

        let exact = apply_patch(&current, &json!({"pad": "p".repeat(room)}), section).unwrap();
        assert_eq!(section_size(&exact), limit);
        let error = apply_patch(&current, &json!({"pad": "p".repeat(room + 1)}), section).unwrap_err();
        assert_eq!((error.pointer.as_str(), error.rule), ("", "maxSize"));
        assert!(error.message.contains(&(limit + 1).to_string()), "{error}");
        assert_eq!(current, before);
        assert_eq!(Value::Object(current.clone()).to_string(), Value::Object(before).to_string());

        // Deleting members always fits, even from an oversized document.
        let mut oversized = current.clone();
        oversized.insert("huge".to_owned(), json!("h".repeat(limit)));
        assert!(section_size(&oversized) > limit);
        let shrunk = apply_patch(&oversized, &json!({"huge": null}), section).unwrap();
        assert!(!shrunk.contains_key("huge"));
    }
    // The same patch fits desired but not tags.
    let patch = json!({"a": "a".repeat(3000), "b": "b".repeat(3000), "c": "c".repeat(3000)});
    assert!(apply_patch(&Map::new(), &patch, Section::Desired).is_ok());
    assert_eq!(apply_patch(&Map::new(), &patch, Section::Tags).unwrap_err().rule, "maxSize");
}

#[test]
fn section_size_counts_compact_json_without_metadata() {
    let docs = [
        json!({}),
        json!({"$version": 1}),
        json!({"a": 1, "$metadata": {"$lastUpdated": "2024-01-01"}, "b": [true, null, 1.5, "q\"uote"]}),
        json!({"\u{e9}": "\u{1F600}\n\t\\", "n": {"m": {}}}),
    ];
    for doc in docs {
        let map = object(doc);
        let mut stripped = map.clone();
        strip_metadata(&mut stripped);
        assert_eq!(section_size(&map), serde_json::to_string(&stripped).unwrap().len(), "{map:?}");
    }
}

#[test]
fn strip_metadata_removes_only_top_level_metadata() {
    let mut section = object(json!({"z": 1, "$version": 4, "a": {"$version": 1}, "$metadata": {}, "m": 2}));
    strip_metadata(&mut section);
    assert_eq!(Value::Object(section).to_string(), r#"{"z":1,"a":{"$version":1},"m":2}"#);
}

//! Byte-exact JSON serialisations that signatures cover.
//!
//! The official agent (C, parson) verifies a root key package's signatures over
//! `json_serialize_to_string(protected)`: compact, members in the order received, `/` written
//! as `\/`, control characters as `\uXXXX` (lower-case hex), other characters raw, numbers as
//! C's `%1.17g`. [`to_parson_string`] reproduces that byte for byte, so packages we sign verify
//! on official agents and packages they accept verify here.
//!
//! Update manifests, by contrast, are signed as the exact string sent, and the Azure service
//! writes them with `serde_json`'s compact form (no `\/`); see [`crate::update_manifest`].

use serde_json::Value;
use std::fmt::Write as _;

/// Serialises `value` exactly as parson's `json_serialize_to_string` does.
pub fn to_parson_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (name, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, member);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// parson stores every number as a C `double` and prints it with `%1.17g`.
fn write_number(out: &mut String, n: &serde_json::Number) {
    let double = n.as_f64().unwrap_or(0.0);
    out.push_str(&format_g17(double));
}

/// C's `printf("%1.17g", v)`.
pub fn format_g17(v: f64) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan".into() } else { "nan".into() };
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    const PRECISION: i32 = 17;
    // Round to 17 significant digits in scientific form to learn the decimal exponent.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, v);
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exponent) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        let decimals = (PRECISION - 1 - exponent).max(0) as usize;
        trim_fraction(&format!("{v:.decimals$}")).to_owned()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_package_protected_bytes_match_official_serialisation() {
        // rootkeyfiles-rootkey.data.json holds the exact bytes the official tool signed;
        // rootkeyfiles-rootkey.json is the same package pretty-printed.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vectors/rootkeys/");
        let expected = std::fs::read_to_string(format!("{dir}rootkeyfiles-rootkey.data.json")).unwrap();
        let pretty: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}rootkeyfiles-rootkey.json")).unwrap()).unwrap();
        assert_eq!(to_parson_string(&pretty["protected"]), expected.trim_end());
    }

    #[test]
    fn escapes_like_parson() {
        let v = serde_json::json!({"a/b": "x\"\\/\n\u{1}é", "n": [1, 1.5, -0.1, 1e300, 65537]});
        assert_eq!(
            to_parson_string(&v),
            r#"{"a\/b":"x\"\\\/\n\u0001é","n":[1,1.5,-0.10000000000000001,1.0000000000000001e+300,65537]}"#
        );
    }

    #[test]
    fn g17_matches_c() {
        assert_eq!(format_g17(1675972876.0), "1675972876");
        assert_eq!(format_g17(0.0001), "0.0001");
        assert_eq!(format_g17(0.00001), "1.0000000000000001e-05");
        assert_eq!(format_g17(1e17), "1e+17");
        assert_eq!(format_g17(12345678901234567.0), "12345678901234568");
    }
}

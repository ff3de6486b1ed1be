//! The Device Update REST API's OData subset (`filter` and `orderby`), through the server's own
//! parser (crates/server/src/rest/du/filter.rs, compiled here by path): nothing panics on any
//! text, and what parses can be checked and matched.
//!
//! Input: `<filter>\n<orderby>` (no newline: the whole input is both).
#![no_main]

#[path = "../../crates/server/src/rest/du/filter.rs"]
#[allow(dead_code)]
mod filter;

use filter::{Filter, OrderBy};
use libfuzzer_sys::fuzz_target;

/// Filterable fields as the handlers name them (one ends in `/`: a prefix, as `compatProperties/`).
const KNOWN: &[&str] = &["groupId", "deviceClassId", "compatProperties/", "status", "\u{e9}/", "a"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (filter_text, orderby_text) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(filter) = Filter::parse(filter_text) {
        let fields: Vec<&str> = filter.fields().collect();
        assert!(!fields.is_empty(), "a parsed filter names at least one field");
        let _ = filter.only(KNOWN);
        let _ = filter.matches(|field| Some(field.to_owned()));
        let _ = filter.matches(|field| field.get(1..).map(str::to_owned));
    }
    if let Ok(order) = OrderBy::parse(orderby_text, KNOWN) {
        assert!(order.field < KNOWN.len());
    }
});

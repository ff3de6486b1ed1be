//! Commands over the Device Update data-plane REST API of a running server: `update
//! import|list|show|delete`, `group`, `device-class`, `deployment`, `compliance` and `token`.
//!
//! All HTTP goes through [`client::DuClient`]; the submodules only choose the calls and print
//! the answers: with `--json` the JSON the server returned (lists as one array of every page),
//! otherwise aligned tables and `key: value` lines built by the helpers here.

pub(super) mod client;
pub(super) mod deployments;
pub(super) mod management;
pub(super) mod rollouts;
pub(super) mod tokens;
pub(super) mod updates;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Runs `future` on a single-threaded runtime.
fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?.block_on(future)
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    duhub_proto::sas::percent_encode(text)
}

/// The member at `pointer` (`/a/b`) as text: strings as they are, numbers and booleans written
/// out, anything else (missing, null, objects) empty.
fn text(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// An `updateId` object (`{"provider", "name", "version"}`) as `PROVIDER/NAME/VERSION`, or empty.
fn update_id_text(update_id: Option<&Value>) -> String {
    let Some(update_id) = update_id.filter(|v| v.is_object()) else { return String::new() };
    format!("{}/{}/{}", text(update_id, "/provider"), text(update_id, "/name"), text(update_id, "/version"))
}

/// A JSON object of strings as `key=value` items separated by spaces.
fn key_values(object: Option<&Value>) -> String {
    object
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(key, value)| {
                    format!("{key}={}", value.as_str().map_or_else(|| value.to_string(), str::to_owned))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// An array of strings joined with ", ".
fn string_list(array: Option<&Value>) -> String {
    array
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|item| item.as_str().unwrap_or_default()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// A plain-text table: a header row and columns padded to their widest cell.
#[derive(Debug)]
pub(super) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each ending in a newline, without trailing spaces.
    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                match widths.get_mut(column) {
                    Some(width) => *width = (*width).max(cell.chars().count()),
                    None => widths.push(cell.chars().count()),
                }
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                let width = widths.get(column).copied().unwrap_or(0);
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count()) + 2));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table, or `empty` when it has no rows.
    pub(super) fn print(&self, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", self.render());
        }
    }
}

/// A title line and indented, aligned `key: value` lines; empty values are left out.
fn fields(title: &str, rows: &[(&str, String)]) -> String {
    let width = rows.iter().filter(|(_, value)| !value.is_empty()).map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut out = format!("{title}\n");
    for (key, value) in rows.iter().filter(|(_, value)| !value.is_empty()) {
        out.push_str(&format!("  {key}:{} {value}\n", " ".repeat(width - key.len())));
    }
    out
}

/// Whether to draw progress on stderr: not with `--json`, and only on a terminal.
fn show_progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A progress bar for uploading `name` (hidden unless `visible`).
fn upload_bar(name: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0).with_message(name.to_owned());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:24!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner for waiting on the server (hidden unless `visible`).
fn spinner(message: String, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell_without_trailing_spaces() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["a".into(), "first".into()]);
        table.row(vec!["longer-id".into(), String::new()]);
        assert_eq!(table.render(), "ID         NAME\na          first\nlonger-id\n");
    }

    #[test]
    fn fields_align_keys_and_skip_empty_values() {
        let out =
            fields("update a/b/1.0", &[("name", "x".into()), ("empty", String::new()), ("longer key", "y".into())]);
        assert_eq!(out, "update a/b/1.0\n  name:       x\n  longer key: y\n");
    }

    #[test]
    fn values_as_text() {
        let value =
            json!({"s": "x", "n": 3, "b": false, "o": {}, "id": {"provider": "P", "name": "N", "version": "1.0"}});
        assert_eq!(text(&value, "/s"), "x");
        assert_eq!(text(&value, "/n"), "3");
        assert_eq!(text(&value, "/b"), "false");
        assert_eq!(text(&value, "/o"), "");
        assert_eq!(text(&value, "/missing"), "");
        assert_eq!(update_id_text(value.get("id")), "P/N/1.0");
        assert_eq!(update_id_text(value.get("missing")), "");
        assert_eq!(
            key_values(Some(&json!({"manufacturer": "Contoso", "model": "Toaster"}))),
            "manufacturer=Contoso model=Toaster"
        );
        assert_eq!(string_list(Some(&json!(["a", "b"]))), "a, b");
    }
}

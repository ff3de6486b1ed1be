//! `duhub token list|create|revoke`: the bearer tokens of the Device Update REST API, through
//! duhub's own `/duhub/tokens` extension of it. A token's secret is shown once, when created.

use anyhow::Result;
use serde_json::json;

use super::client::DuClient;
use super::{Table, block_on, segment, text};
use crate::cli::{DuArgs, TokenCreateArgs, TokenRevokeArgs};
use crate::output::{Outcome, print_json};

pub(in crate::commands) fn list(args: &DuArgs) -> Result<Outcome> {
    let client = DuClient::connect(args)?;
    let tokens = block_on(client.pages("/duhub/tokens", &[]))?;
    if args.json {
        print_json(&tokens)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["ID", "NAME", "CREATED", "REVOKED"]);
    for token in &tokens {
        table.row(vec![
            text(token, "/id"),
            text(token, "/name"),
            text(token, "/createdDateTime"),
            text(token, "/revokedDateTime"),
        ]);
    }
    table.print("no tokens");
    Ok(Outcome::Success)
}

pub(in crate::commands) fn create(args: &TokenCreateArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    let body = json!({"name": args.name});
    let created = block_on(async { client.post("/duhub/tokens", Some(&body)).await })?.body.unwrap_or_default();
    if args.du.json {
        print_json(&created)?;
        eprintln!("note: the token cannot be shown again; store it now");
        return Ok(Outcome::Success);
    }
    println!("created token {} ({})", text(&created, "/id"), text(&created, "/name"));
    println!("token: {}", text(&created, "/token"));
    println!("This token cannot be shown again: store it now.");
    Ok(Outcome::Success)
}

pub(in crate::commands) fn revoke(args: &TokenRevokeArgs) -> Result<Outcome> {
    let client = DuClient::connect(&args.du)?;
    block_on(client.delete(&format!("/duhub/tokens/{}", segment(&args.id))))?;
    if args.du.json {
        print_json(&json!({"revoked": args.id}))?;
    } else {
        println!("revoked token {}", args.id);
    }
    Ok(Outcome::Success)
}

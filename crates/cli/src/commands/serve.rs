//! `duhub serve`: run a node until Ctrl-C or SIGTERM.

use std::io::IsTerminal as _;

use anyhow::{Context as _, Result};
use duhub_server::config::{Config, Settings};
use serde_json::json;

use crate::cli::ServeArgs;
use crate::output::{Outcome, print_json};

pub(super) fn serve(args: &ServeArgs) -> Result<Outcome> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = Settings::defaults();
    if let Some(path) = &args.config {
        settings = settings.overridden_by(Settings::from_file(path)?);
    }
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    settings = settings.overridden_by(Settings::from_env(&env)?);
    settings = settings.overridden_by(Settings {
        data_dir: args.data_dir.clone(),
        hostname: args.hostname.clone(),
        bind: args.bind,
        https_port: args.https_port,
        mqtt_port: args.mqtt_port,
        mqtt_plain_port: args.mqtt_plain_port,
        database_url: args.database_url.clone(),
        instance_id: args.instance_id.clone(),
        public_url: args.public_url.clone(),
        keys_dir: args.keys_dir.clone(),
        content_url: args.content_url.clone(),
        ..Settings::default()
    });
    let config = Config::resolve(settings);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let running = duhub_server::server::start(&config).await?;
        // The connection string carries the owner key: on stdout only when a person reads it
        // (under systemd stdout lands in the journal); otherwise it is in admin.json (0600).
        let on_terminal = std::io::stdout().is_terminal();
        let connection_string = on_terminal.then(|| running.admin.service_connection_string.clone());
        if args.json {
            print_json(&json!({
                "https": running.https.to_string(),
                "mqtt": running.mqtt.to_string(),
                "mqttPlain": running.mqtt_plain.map(|a| a.to_string()),
                "admin": running.admin_path,
                "caCertificate": running.admin.ca_certificate,
                "serviceConnectionString": connection_string,
                "database": duhub_server::server::redact(&config.database_url),
                "deviceUpdate": format!("{}/deviceUpdate/{}", running.admin.https_url, running.admin.instance_id),
                "dashboard": format!("{}/ui/", running.admin.https_url),
                "keysDir": running.admin.keys_dir,
            }))?;
        } else {
            banner(&config, &running, connection_string.as_deref());
        }
        wait_for_stop().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}

fn banner(config: &Config, running: &duhub_server::server::Running, connection_string: Option<&str>) {
    let admin = &running.admin;
    println!("duhub is running (data in {})", config.data_dir.display());
    println!("  REST API and MQTT over WebSocket: {} (listening on {})", admin.https_url, running.https);
    println!(
        "  MQTT over TLS:                    {}:{} (listening on {})",
        admin.mqtt_host, admin.mqtt_port, running.mqtt
    );
    if let Some(plain) = running.mqtt_plain {
        println!("  MQTT without TLS:                 {plain} (trusted networks only)");
    }
    println!("  database:                         {}", duhub_server::server::redact(&config.database_url));
    println!("  Device Update API:                {}/deviceUpdate/{}", admin.https_url, admin.instance_id);
    println!("  dashboard:                        {}/ui/ (sign in with an API token)", admin.https_url);
    println!("  update signing keys:              {} (agents trust rootkeys.json)", admin.keys_dir.display());
    println!();
    println!("The server's certificate is issued by a private CA. Trust it where devices and tools connect:");
    println!("  CA certificate: {}", admin.ca_certificate.display());
    println!("  curl --cacert {} {}/devices ...", admin.ca_certificate.display(), admin.https_url);
    println!(
        "  Python SDKs: server_verification_cert=open(\"{}\").read(), or REQUESTS_CA_BUNDLE",
        admin.ca_certificate.display()
    );
    println!(
        "  system-wide (Debian): cp {} /usr/local/share/ca-certificates/duhub.crt && update-ca-certificates",
        admin.ca_certificate.display()
    );
    println!();
    match connection_string {
        Some(connection_string) => println!("Service connection string (keep it secret): {connection_string}"),
        None => println!(
            "The service connection string is serviceConnectionString in {} (not printed: stdout is not a terminal).",
            running.admin_path.display()
        ),
    }
    println!("CLI commands on this machine read {}.", running.admin_path.display());
    println!("The Device Update API token is apiToken in that file (`duhub token create NAME` makes more).");
    println!("Create a device:  duhub device create my-device");
    println!("Import an update: duhub update import contoso.toaster.1.0.importmanifest.json");
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

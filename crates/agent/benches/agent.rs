//! The agent's hot decision path on a real service-signed desired property (`desired/01`):
//! parse the twin patch, let the workflow core decide, verify the signature chain with
//! Microsoft's production roots, parse the manifest and check compatibility.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use duhub_agent::workflow::{Action, Core, Event, Journal};
use duhub_proto::trust::TrustStore;
use duhub_proto::twin::DesiredService;
use duhub_proto::update_manifest::UpdateManifest;
use indexmap::IndexMap;

fn verify_desired(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/tests/fixtures/vectors/desired/01_v4_valid_startupworkflowdata.json");
    let text = std::fs::read_to_string(path).unwrap();
    // As a desired patch carries it: with a workflow to act on.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["workflow"] = serde_json::json!({"action": 3, "id": "w1"});
    let patch = serde_json::json!({"deviceUpdate": {"__t": "c", "service": value}, "$version": 2}).to_string();
    let trust = TrustStore::production();
    let device: IndexMap<String, String> = [("deviceManufacturer", "contoso"), ("deviceModel", "virtual-vacuum-v1")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    c.bench_function("agent/desired_01_patch_to_verified_compatible_manifest", |b| {
        b.iter(|| {
            let document: serde_json::Value = serde_json::from_str(&patch).unwrap();
            let desired = DesiredService::locate(&document).unwrap().unwrap();
            let mut core = Core::new(&Journal::default());
            let actions = core.handle(Event::Desired(desired));
            let Some(Action::Start(job)) = actions.iter().find(|a| matches!(a, Action::Start(_))) else { panic!() };
            let manifest = job.service.update_manifest_text().unwrap();
            trust.verify_update_manifest(Some(manifest), job.service.update_manifest_signature.as_deref()).unwrap();
            let UpdateManifest::Full(full) = UpdateManifest::parse(manifest).unwrap() else { panic!() };
            assert!(full.is_compatible_with(&device));
        });
    });
}

criterion_group!(benches, verify_desired);
criterion_main!(benches);

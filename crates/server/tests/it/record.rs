//! The per-device Device Update record (`du_device`) against the twins it is derived from: on a
//! randomized fleet (reports, class changes, tag moves and replacements, desired workflows of
//! deployments, cancels and retries, agents removed, devices deleted) the record of every
//! device, and every deployment count computed from the records' `GROUP BY`, equal what the
//! twins say; and a database from before the record gets its records built once at startup.

use std::collections::BTreeMap;

use duhub_proto::update_id::UpdateId;
use duhub_server::du::deploy::{self, Counts};
use duhub_server::du::fleet::DeviceView;
use duhub_server::du::model::{StoredDeployment, SubgroupState};
use duhub_server::store::{DeviceSpec, DeviceStatus, RecordFilter, Store};
use duhub_testkit::{Backend, TestDatabase, postgres_url};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const DEVICES: usize = 6;
const WORKFLOWS: [&str; 2] = ["w-one", "w-two"];
const VERSIONS: [&str; 2] = ["1.0", "2.0"];

/// One change to the fleet.
#[derive(Debug, Clone)]
enum Op {
    /// The agent's startup report: device properties (model picks the class).
    Startup { device: usize, model: usize, names: bool },
    /// A workflow report.
    Report { device: usize, state: Option<i64>, workflow: Option<usize>, result: Option<i64>, installed: Option<usize> },
    /// The agent's properties removed.
    RemoveAgent { device: usize },
    /// The group tag set (`Some`) or removed.
    Tag { device: usize, group: Option<usize> },
    /// IoT Hub's twin PUT: tags replaced.
    Replace { device: usize, group: Option<usize> },
    /// The service writes a workflow (a deployment, a cancel, a retry); with `bulk` as the
    /// reconciler does (`Store::replace_desired_members`), else as a desired patch.
    Desired { device: usize, workflow: usize, cancel: bool, retry: bool, bulk: bool },
    /// The device deleted and created again.
    Recreate { device: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let device = 0..DEVICES;
    prop_oneof![
        (device.clone(), 0..2usize, any::<bool>()).prop_map(|(device, model, names)| Op::Startup {
            device,
            model,
            names
        }),
        (
            device.clone(),
            prop::option::of(prop::sample::select(vec![0i64, 6, 255, 3])),
            prop::option::of(0..2usize),
            prop::option::of(prop::sample::select(vec![700i64, -1, 0, 1, 500])),
            prop::option::of(0..2usize),
        )
            .prop_map(|(device, state, workflow, result, installed)| Op::Report {
                device,
                state,
                workflow,
                result,
                installed
            }),
        device.clone().prop_map(|device| Op::RemoveAgent { device }),
        (device.clone(), prop::option::of(0..2usize)).prop_map(|(device, group)| Op::Tag { device, group }),
        (device.clone(), prop::option::of(0..2usize)).prop_map(|(device, group)| Op::Replace { device, group }),
        (device.clone(), 0..2usize, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(device, workflow, cancel, retry, bulk)| Op::Desired { device, workflow, cancel, retry, bulk }),
        device.prop_map(|device| Op::Recreate { device }),
    ]
}

fn device_id(index: usize) -> String {
    format!("rec-{index}")
}

fn spec(index: usize) -> DeviceSpec {
    DeviceSpec {
        device_id: device_id(index),
        primary_key: None,
        secondary_key: None,
        status: DeviceStatus::Enabled,
        status_reason: None,
    }
}

fn installed(version: usize) -> String {
    UpdateId::new("contoso", "toaster", VERSIONS[version]).to_installed_update_id()
}

async fn apply(store: &Store, op: &Op) -> Result<(), String> {
    let e = |e: duhub_server::store::StoreError| e.to_string();
    match op {
        Op::Startup { device, model, names } => {
            let mut agent = json!({"deviceProperties": {"manufacturer": "contoso", "model": format!("m{model}"),
                "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3"}});
            if *names {
                agent["compatPropertyNames"] = "manufacturer,model".into();
            }
            store
                .patch_reported(&device_id(*device), &json!({"deviceUpdate": {"__t": "c", "agent": agent}}))
                .await
                .map_err(e)?;
        }
        Op::Report { device, state, workflow, result, installed: version } => {
            let agent = json!({
                "state": state,
                "workflow": workflow.map(|w| json!({"action": 3, "id": WORKFLOWS[w]})),
                "lastInstallResult": result.map(|r| json!({"resultCode": r, "extendedResultCodes": "00000000", "resultDetails": ""})),
                "installedUpdateId": version.map(installed),
            });
            store
                .patch_reported(&device_id(*device), &json!({"deviceUpdate": {"__t": "c", "agent": agent}}))
                .await
                .map_err(e)?;
        }
        Op::RemoveAgent { device } => {
            store.patch_reported(&device_id(*device), &json!({"deviceUpdate": null})).await.map_err(e)?;
        }
        Op::Tag { device, group } => {
            let tag = group.map_or(Value::Null, |g| format!("group-{g}").into());
            store.patch_tags(&device_id(*device), &json!({"ADUGroup": tag}), None).await.map_err(e)?;
        }
        Op::Replace { device, group } => {
            let tags = group.map_or(json!({}), |g| json!({"ADUGroup": format!("group-{g}"), "other": 1}));
            store.replace_twin(&device_id(*device), Some(&tags), None, None).await.map_err(e)?;
        }
        Op::Desired { device, workflow, cancel, retry, bulk } => {
            let mut flow = json!({"action": if *cancel { 255 } else { 3 }, "id": WORKFLOWS[*workflow]});
            if *bulk {
                if *retry {
                    flow["retryTimestamp"] = "2026-12-06T00:00:00Z".into();
                }
                let service = std::sync::Arc::new(json!({"workflow": flow}));
                let mut outcomes =
                    store.replace_desired_members("deviceUpdate", "service", vec![(device_id(*device), service)]).await;
                outcomes.pop().unwrap_or(Ok(())).map_err(e)?;
            } else {
                flow["retryTimestamp"] = if *retry { "2026-12-06T00:00:00Z".into() } else { Value::Null };
                let patch = json!({"deviceUpdate": {"__t": "c", "service": {"workflow": flow}}});
                store.patch_desired(&device_id(*device), &patch, None).await.map_err(e)?;
            }
        }
        Op::Recreate { device } => {
            store.delete_device(&device_id(*device), None).await.map_err(e)?;
            store.create_device(&spec(*device)).await.map_err(e)?;
        }
    }
    Ok(())
}

fn deployment(workflow: usize, version: usize, canceled: bool, group: &str, class: &str) -> StoredDeployment {
    StoredDeployment {
        deployment_id: "d".into(),
        group_id: group.into(),
        start_date_time: "2026-01-01T00:00:00Z".into(),
        update: UpdateId::new("contoso", "toaster", VERSIONS[version]),
        rollback_policy: None,
        is_cloud_initiated_rollback: false,
        download_security: None,
        created_date_time: "2026-01-01T00:00:00Z".into(),
        subgroups: BTreeMap::from([(
            class.to_owned(),
            SubgroupState {
                workflow_id: WORKFLOWS[workflow].into(),
                started: "2026-01-01T00:00:00Z".into(),
                canceled,
                retry_timestamp: None,
                retry_count: 0,
                retry_devices: Vec::new(),
                rollback_deployment: None,
            },
        )]),
        excluded_subgroups: Default::default(),
        target_devices: None,
        target_device_class: None,
        rollout: None,
    }
}

/// Record and twins agree: device by device, and in the counts of every possible deployment.
async fn agree(store: &Store) -> Result<(), String> {
    let ids: Vec<String> = (0..DEVICES).map(device_id).collect();
    let twins = store.fleet_of(&ids).await.map_err(|e| e.to_string())?;
    let views: BTreeMap<String, DeviceView> =
        twins.iter().filter_map(DeviceView::from_row).map(|v| (v.device_id.clone(), v)).collect();
    let records = store.records(&RecordFilter::default(), None, 1000).await.map_err(|e| e.to_string())?;
    let recorded: Vec<&String> = records.iter().map(|r| &r.device_id).collect();
    let viewed: Vec<&String> = views.keys().collect();
    if recorded != viewed {
        return Err(format!("devices with a record {recorded:?}, devices with an agent {viewed:?}"));
    }
    for record in &records {
        let view = &views[&record.device_id];
        let from_twin = (
            &view.group_id,
            &view.class.id,
            view.reported_workflow(),
            view.agent.state.map(|s| s.code()),
            view.reported_result().map(|r| i64::from(r.0)),
            view.installed.clone(),
            &view.desired,
        );
        let from_record = (
            &record.group_id,
            &record.class_id,
            record.facts.workflow_id.as_deref(),
            record.facts.agent_state,
            record.facts.result_code,
            record.facts.installed(),
            &record.desired,
        );
        if from_twin != from_record {
            return Err(format!("{}: twin says {from_twin:?}, record says {from_record:?}", record.device_id));
        }
        if view.class.compat != duhub_server::du::fleet::DeviceClass::from_body(&record.class_body).compat {
            return Err(format!("{}: class body {} differs from the twin's", record.device_id, record.class_body));
        }
    }
    let buckets = store.record_buckets(None, None).await.map_err(|e| e.to_string())?;
    let subgroups: std::collections::BTreeSet<(String, String)> =
        views.values().map(|v| (v.group_id.clone(), v.class.id.clone())).collect();
    for (group, class) in &subgroups {
        for workflow in 0..2 {
            for version in 0..2 {
                for canceled in [false, true] {
                    let d = deployment(workflow, version, canceled, group, class);
                    let subgroup = &d.subgroups[class];
                    let from_twins = Counts::of(
                        views
                            .values()
                            .filter(|v| &v.group_id == group && &v.class.id == class)
                            .map(|v| deploy::device_state(&d, subgroup, v)),
                    );
                    let mut from_records = Counts::default();
                    for bucket in buckets.iter().filter(|b| &b.group_id == group && &b.class_id == class) {
                        from_records.add(deploy::device_state(&d, subgroup, &bucket.facts), bucket.count);
                    }
                    if from_twins != from_records {
                        return Err(format!(
                            "{group}/{class} w{workflow} v{version} canceled={canceled}: twins {from_twins:?}, records {from_records:?}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every record, as text to compare.
async fn all_records(store: &Store) -> String {
    format!("{:?}", store.records(&RecordFilter::default(), None, 1000).await.unwrap())
}

async fn open(backend: Backend, dir: &std::path::Path) -> Option<(Store, Option<TestDatabase>)> {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.join("record.db").display());
            Some((Store::open(&url, "node-a").await.unwrap(), None))
        }
        Backend::Postgres => {
            let maintenance = postgres_url().await?;
            let database = TestDatabase::create(&maintenance).await.unwrap();
            let store = Store::open(&database.url, "node-a").await.unwrap();
            Some((store, Some(database)))
        }
    }
}

/// Property: after any sequence of changes, records and twins never disagree.
pub(crate) async fn the_record_always_agrees_with_the_twins(backend: Backend) {
    if backend == Backend::Postgres && postgres_url().await.is_none() {
        eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
        return;
    }
    let cases = if backend == Backend::Sqlite { 48 } else { 12 };
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let Some((store, database)) = open(backend, dir.path()).await else { return Ok(()) };
                for index in 0..DEVICES {
                    store.create_device(&spec(index)).await.unwrap();
                }
                let mut outcome = Ok(());
                for (step, op) in ops.iter().enumerate() {
                    let before = (store.data_version().await.unwrap(), all_records(&store).await);
                    if let Err(error) = apply(&store, op).await {
                        outcome = Err(TestCaseError::fail(format!("step {step} {op:?} failed: {error}")));
                        break;
                    }
                    if let Err(disagreement) = agree(&store).await {
                        outcome = Err(TestCaseError::fail(format!("after step {step} {op:?}: {disagreement}")));
                        break;
                    }
                    // What caches status (du::snapshot) relies on: changed records change the
                    // data version.
                    let after = (store.data_version().await.unwrap(), all_records(&store).await);
                    if after.1 != before.1 && after.0 == before.0 {
                        outcome = Err(TestCaseError::fail(format!(
                            "after step {step} {op:?}: the records changed, the data version {} did not",
                            after.0
                        )));
                        break;
                    }
                }
                if outcome.is_ok() && backend == Backend::Sqlite {
                    // Without writes it stays put (PostgreSQL's moves with other databases' writes).
                    let version = store.data_version().await.unwrap();
                    all_records(&store).await;
                    if store.data_version().await.unwrap() != version {
                        outcome = Err(TestCaseError::fail("the data version moved without a write"));
                    }
                }
                drop(store);
                if let Some(database) = database {
                    database.drop_database().await.ok();
                }
                outcome
            })
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// A database whose records are missing (one from before the table existed) gets them built
/// from the twins at the next start, once.
pub(crate) async fn records_are_built_from_existing_twins_at_startup(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((store, database)) = open(backend, dir.path()).await else {
        eprintln!("skipped: no PostgreSQL (set DUHUB_TEST_DATABASE_URL)");
        return;
    };
    let url = database
        .as_ref()
        .map_or_else(|| format!("sqlite://{}", dir.path().join("record.db").display()), |d| d.url.clone());
    let ops = [
        Op::Startup { device: 0, model: 0, names: true },
        Op::Startup { device: 1, model: 1, names: false },
        Op::Tag { device: 1, group: Some(1) },
        Op::Report { device: 1, state: Some(255), workflow: Some(0), result: Some(0), installed: Some(0) },
        Op::Desired { device: 0, workflow: 1, cancel: false, retry: true, bulk: false },
    ];
    for index in 0..DEVICES {
        store.create_device(&spec(index)).await.unwrap();
    }
    for op in &ops {
        apply(&store, op).await.unwrap();
    }
    agree(&store).await.unwrap();
    drop(store);
    // Make it look like a database of the previous schema: no records, backfill pending.
    {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("DELETE FROM du_device; INSERT INTO du_record_backfill (pending) VALUES (1);")
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
    }
    let store = Store::open(&url, "node-a").await.unwrap();
    let records = store.records(&RecordFilter::default(), None, 100).await.unwrap();
    assert_eq!(records.len(), 2, "both devices with an agent have a record again");
    let failed = records.iter().find(|r| r.device_id == device_id(1)).unwrap();
    assert_eq!(failed.group_id, "group-1");
    assert_eq!(failed.facts.agent_state, Some(255));
    assert_eq!(failed.facts.workflow_id.as_deref(), Some(WORKFLOWS[0]));
    assert_eq!(failed.facts.installed(), Some(UpdateId::new("contoso", "toaster", VERSIONS[0])));
    let retried = records.iter().find(|r| r.device_id == device_id(0)).unwrap();
    assert_eq!(retried.desired.id.as_deref(), Some(WORKFLOWS[1]));
    assert!(retried.desired.retry_timestamp.is_some());
    agree(&store).await.unwrap();
    drop(store);
    if let Some(database) = database {
        database.drop_database().await.unwrap();
    }
}

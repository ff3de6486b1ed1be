//! Schema creation and upgrades: numbered steps, applied in order and recorded in
//! `schema_version`.

use sqlx::AnyPool;

use super::{Backend, StoreError};

/// The steps, in SQL that SQLite and PostgreSQL both accept. Never edit a released step; add a
/// new one.
const STEPS: &[&str] = &[
    "CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        primary_key TEXT NOT NULL,
        secondary_key TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        etag TEXT NOT NULL,
        generation_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        connection_state TEXT NOT NULL DEFAULT 'Disconnected',
        connection_state_updated TEXT,
        last_activity TEXT,
        model_id TEXT,
        mqtt_session TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        desired TEXT NOT NULL DEFAULT '{}',
        desired_version BIGINT NOT NULL DEFAULT 1,
        reported TEXT NOT NULL DEFAULT '{}',
        reported_version BIGINT NOT NULL DEFAULT 1,
        twin_version BIGINT NOT NULL DEFAULT 1
    );
    CREATE TABLE desired_patches (
        device_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        patch TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (device_id, version)
    );
    CREATE TABLE access_policies (
        name TEXT PRIMARY KEY,
        primary_key TEXT NOT NULL,
        secondary_key TEXT NOT NULL
    );
    CREATE TABLE api_tokens (
        token_sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );",
    "CREATE TABLE du_updates (
        update_key TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        imported_at TEXT NOT NULL
    );
    CREATE TABLE du_operations (
        operation_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE du_deployments (
        group_id TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        body TEXT NOT NULL,
        revision BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (group_id, deployment_id)
    );
    CREATE TABLE du_entities (
        kind TEXT NOT NULL,
        entity_key TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (kind, entity_key)
    );",
    "CREATE TABLE du_device (
        device_id TEXT PRIMARY KEY,
        group_id TEXT NOT NULL,
        class_id TEXT NOT NULL,
        class_body TEXT NOT NULL,
        agent_state BIGINT,
        workflow_id TEXT,
        workflow_action BIGINT,
        result_code BIGINT,
        extended_result_code BIGINT,
        installed_update TEXT,
        desired_workflow_id TEXT,
        desired_action BIGINT,
        desired_retry TEXT,
        connection_state TEXT NOT NULL,
        connection_time TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX du_device_subgroup ON du_device (group_id, class_id, device_id);
    CREATE INDEX du_device_status ON du_device
        (group_id, class_id, class_body, workflow_id, agent_state, result_code, installed_update);
    CREATE INDEX du_device_workflow ON du_device (workflow_id, device_id);
    CREATE TABLE du_record_backfill (pending BIGINT NOT NULL);
    INSERT INTO du_record_backfill (pending) VALUES (1);",
    "CREATE TABLE ui_sessions (
        session_sha256 TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX ui_sessions_token ON ui_sessions (token_sha256);",
    // Issue 11: uploads no import has claimed yet (they expire), and which node holds each
    // device's session under a lease that other nodes see expire.
    "CREATE TABLE du_uploads (
        blob_id TEXT PRIMARY KEY,
        size_bytes BIGINT NOT NULL,
        uploaded_at_ms BIGINT NOT NULL
    );
    CREATE INDEX du_uploads_by_time ON du_uploads (uploaded_at_ms);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        lease_until_ms BIGINT NOT NULL
    );
    CREATE INDEX nodes_by_lease ON nodes (lease_until_ms);
    ALTER TABLE devices ADD COLUMN connected_node TEXT;
    CREATE INDEX devices_by_connected_node ON devices (connected_node);",
    // Issue 15: members of phased rollouts (rank, wave, started, first seen installed, settled).
    "CREATE TABLE du_rollout_member (
        group_id TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        class_id TEXT NOT NULL,
        rank BIGINT NOT NULL,
        wave BIGINT,
        started_ms BIGINT,
        installed_ms BIGINT,
        outcome TEXT,
        PRIMARY KEY (group_id, deployment_id, device_id)
    );
    CREATE INDEX du_rollout_member_pick ON du_rollout_member (group_id, deployment_id, wave, rank);
    CREATE INDEX du_rollout_member_started ON du_rollout_member (group_id, deployment_id, started_ms);",
    // Read paths at 100,000 devices: a group's records in device id order (keyset pages of the
    // dashboard's deployment and group pages, without sorting the group), and the count of
    // connected devices (the overview) without reading every twin.
    "CREATE INDEX du_device_members ON du_device (group_id, device_id);
    CREATE INDEX devices_by_connection_state ON devices (connection_state);",
];

/// Brings the schema up to date. Safe to run from several nodes at once on PostgreSQL (an
/// advisory lock serialises them).
pub(super) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(74220331)").execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)").execute(&mut *tx).await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM schema_version").fetch_one(&mut *tx).await?;
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    for (index, step) in STEPS.iter().enumerate().skip(current) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*step)).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(i64::try_from(index + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

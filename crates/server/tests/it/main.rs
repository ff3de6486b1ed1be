//! Integration tests of the server: the real server in-process on ephemeral ports, real MQTT over
//! TLS devices (rumqttc, or raw packets), the real REST API over HTTPS; no mocks.
//!
//! The suite is written once as functions taking a [`Backend`] and instantiated twice by
//! [`suite!`]: `sqlite::<test>` and `postgres::<test>`. Each PostgreSQL test runs on a database
//! of its own (`duhub_test_<random>`), so everything runs in parallel. Without a PostgreSQL
//! server the `postgres::` tests print `skipped: no PostgreSQL` and pass, unless
//! `DUHUB_REQUIRE_POSTGRES=1` (see `duhub_testkit::postgres_url`).
#![allow(clippy::unwrap_used)]

use duhub_testkit::Backend;

mod connect;
mod du;
mod hardening;
mod isolation;
mod query;
mod record;
mod rest;
mod rollout;
#[cfg(feature = "object-store")]
mod s3;
mod support;
mod twin;
mod ui;

/// Instantiates every `module::test` of the suite for SQLite and for PostgreSQL. Attributes
/// before a test (such as `#[ignore = "bug: ..."]`) apply to both; `{ sqlite: #[...] }` after it
/// to the SQLite one only.
macro_rules! suite {
    ($($(#[$both:meta])* $module:ident::$test:ident $({ sqlite: #[$sqlite:meta] })?),* $(,)?) => {
        mod sqlite {
            $(
                $(#[$both])*
                $(#[$sqlite])?
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::$module::$test(crate::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                $(#[$both])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::$module::$test(crate::Backend::Postgres).await;
                }
            )*
        }
    };
}

suite! {
    connect::a_device_connects_over_tls_and_is_recorded_as_connected,
    connect::bad_credentials_are_refused_with_a_connack_error,
    connect::an_mqtt_5_client_is_not_let_in,
    #[ignore = "bug: the server closes an MQTT 5 CONNECT without CONNACK 0x01 (its v4 parser fails first)"]
    connect::mqtt_5_is_refused_with_connack_unacceptable_protocol_version,
    connect::a_second_connection_with_the_same_id_takes_over,
    connect::a_silent_client_is_disconnected_after_one_and_a_half_keep_alives,
    twin::get_returns_desired_and_reported_with_versions,
    twin::reported_patch_answers_204_with_the_new_version_and_rest_sees_it,
    twin::null_in_a_reported_patch_deletes_the_member,
    twin::concurrent_writes_of_many_devices_all_land_and_each_device_keeps_its_order,
    twin::desired_patch_reaches_subscribed_devices_only_and_honours_the_etag,
    twin::a_reconnecting_device_sees_the_latest_desired_properties,
    twin::patches_breaking_the_twin_limits_are_refused_and_change_nothing,
    twin::concurrent_twin_and_registry_writes_all_succeed,
    twin::a_desired_member_replaced_on_many_devices_is_a_patch_against_each_twin,
    isolation::a_device_cannot_reach_another_devices_topics_or_twin,
    rest::rest_requests_need_a_valid_service_token,
    rest::devices_are_created_listed_read_and_deleted,
    rest::deleting_or_disabling_a_connected_device_disconnects_it,
    rest::a_device_disconnected_by_disabling_it_is_recorded_as_disconnected,
    query::the_query_api_pages_twins_and_filters_by_tag,
    du::import_fetches_checks_and_signs,
    du::bad_imports_fail_with_a_reason_and_leave_nothing_behind,
    du::reference_steps_ship_child_manifests,
    du::a_deployment_reaches_devices_and_their_reports_drive_its_status,
    du::a_rollback_policy_redeploys_to_the_failed_devices,
    rollout::a_device_that_goes_back_during_the_bake_is_no_success,
    rollout::the_rate_and_the_window_hold_devices_back_on_the_rollout_clock,
    rollout::operators_pause_resume_promote_and_abort_with_their_names_recorded,
    rollout::two_nodes_on_one_database_start_each_wave_and_each_budget_once,
    rollout::a_tripped_gate_rolls_back_the_failed_and_a_late_device_joins_the_current_wave,
    du::lists_page_and_requests_are_authenticated,
    record::the_record_always_agrees_with_the_twins,
    record::records_are_built_from_existing_twins_at_startup,
    ui::sessions_csrf_and_origins_guard_every_page,
    ui::pages_show_groups_deployments_and_decoded_results,
}

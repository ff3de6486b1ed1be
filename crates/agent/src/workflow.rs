//! The agent's workflow core: pure decisions, no I/O, no clock.
//!
//! [`Core::handle`] takes one [`Event`] (a desired `deviceUpdate.service` from the twin, or the
//! end of the deployment job the runtime ran) and returns the [`Action`]s the runtime performs:
//! reports, acknowledgements, starting or cancelling the job, and journal records. Its state is
//! what the journal holds ([`Journal`]), so a runtime restarted after a crash or power cut
//! rebuilds the same core and converges from the twin it reads on connect.
//!
//! The rules are those of the official agent 1.1.0 (`protocol-reference.md` §5.5, §6.3) without
//! its defects (§6.4): a workflow that already completed is never reported "in progress" again
//! when the twin is re-delivered; a service object without `rootKeyPackageUrl` is processed (the
//! runtime verifies with the root key package it holds) instead of silently dropped; an invalid
//! service object is acknowledged and logged, never ignored without trace.

use duhub_proto::twin::{
    AgentProperties, DesiredService, LastInstallResult, ServiceAck, ServiceProperties, UpdateAction, Workflow,
};
use duhub_proto::update_id::UpdateId;
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The desired `deviceUpdate.service` (from the twin read at connect, or a desired patch).
    Desired(DesiredService),
    /// The deployment job of `workflow_id` ended.
    Finished {
        /// The workflow the job ran.
        workflow_id: String,
        /// How it ended.
        outcome: Outcome,
    },
}

/// How a deployment job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Installed (or found already installed).
    Succeeded {
        /// The result with its step results.
        result: LastInstallResult,
        /// The update now installed.
        installed: UpdateId,
    },
    /// Failed; nothing claims to be installed.
    Failed(LastInstallResult),
    /// Stopped because [`Action::Cancel`] asked it to.
    Cancelled,
    /// The handler asked for a reboot or agent restart before the result is final; the
    /// deployment is re-run (idempotently) after it.
    RestartRequired {
        /// `true` for a reboot, `false` for an agent restart.
        reboot: bool,
    },
}

/// A deployment for the runtime to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The workflow (id and retry timestamp).
    pub workflow: Workflow,
    /// The service object: manifest, signature, file URLs, root key package URL.
    pub service: ServiceProperties,
    /// A retry of the same workflow: keep the sandbox (files already downloaded).
    pub is_retry: bool,
}

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this reported patch (`deviceUpdate.agent`).
    Report(Box<AgentProperties>),
    /// Send this writable-property acknowledgement.
    Ack(ServiceAck),
    /// Persist this journal (atomically) before anything that follows.
    Journal(Journal),
    /// Run this deployment.
    Start(Box<Job>),
    /// Ask the running job of this workflow to stop; it ends with [`Outcome::Cancelled`].
    Cancel {
        /// The workflow to stop.
        workflow_id: String,
    },
    /// Reboot the device (or restart the agent when `reboot` is false). The workflow stays
    /// running; if the reboot cannot be done, the runtime ends it with
    /// [`Event::Finished`] and [`Outcome::Failed`].
    Restart {
        /// The workflow that asked for it.
        workflow_id: String,
        /// `true` for a reboot.
        reboot: bool,
    },
    /// Nothing to do with this service object; say why in the log.
    Ignore(String),
}

/// What the agent remembers across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The workflow running (or interrupted by a crash) and its retry timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<JournalWorkflow>,
    /// The last workflow that reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<JournalWorkflow>,
}

/// A workflow as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalWorkflow {
    /// Workflow id.
    pub id: String,
    /// Retry timestamp, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timestamp: Option<String>,
}

impl JournalWorkflow {
    fn of(workflow: &Workflow) -> Option<Self> {
        Some(Self { id: workflow.id.clone()?, retry_timestamp: workflow.retry_timestamp.clone() })
    }

    /// Same id and retry timestamp.
    fn is(&self, workflow: &Workflow) -> bool {
        workflow.id.as_deref() == Some(self.id.as_str()) && workflow.retry_timestamp == self.retry_timestamp
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Running {
    workflow: Workflow,
    /// Why it is being stopped, if it is.
    stopping: Option<Stop>,
}

#[derive(Debug, Clone, PartialEq)]
enum Stop {
    /// Action 255: report the cancel when it ends.
    Cancel,
    /// A retry or a replacement: start this one when it ends, report nothing for the old one.
    Then(Box<Job>),
}

/// The workflow core of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Core {
    running: Option<Running>,
    completed: Option<JournalWorkflow>,
}

impl Core {
    /// A core restored from its journal. A workflow the journal says was running did not end:
    /// it is processed again when the twin names it (the handlers' is-installed check makes that
    /// safe), and never counted as completed.
    pub fn new(journal: &Journal) -> Self {
        Self { running: None, completed: journal.completed.clone() }
    }

    /// The journal of the current state.
    pub fn journal(&self) -> Journal {
        Journal {
            running: self.running.as_ref().and_then(|r| JournalWorkflow::of(&r.workflow)),
            completed: self.completed.clone(),
        }
    }

    /// Whether a deployment job is running.
    pub fn is_busy(&self) -> bool {
        self.running.is_some()
    }

    /// Decides what to do about `event`.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Desired(desired) => self.on_desired(&desired),
            Event::Finished { workflow_id, outcome } => self.on_finished(&workflow_id, outcome),
        }
    }

    fn on_desired(&mut self, desired: &DesiredService) -> Vec<Action> {
        let ack = Action::Ack(ServiceAck::acknowledge(desired));
        let Some(workflow) = desired.service.workflow.clone() else {
            return vec![Action::Ignore("the service object has no workflow".into()), ack];
        };
        let Some(id) = workflow.id.clone() else {
            return vec![Action::Ignore("the workflow has no id".into()), ack];
        };
        match workflow.action.map(UpdateAction::code) {
            Some(255) => self.on_cancel(&id, ack),
            Some(3) => self.on_process(workflow, &desired.service, ack),
            Some(other) => vec![Action::Ignore(format!("workflow action {other} is not supported (3 or 255)")), ack],
            None => vec![Action::Ignore("the workflow has no action".into()), ack],
        }
    }

    fn on_cancel(&mut self, id: &str, ack: Action) -> Vec<Action> {
        match &mut self.running {
            Some(running) if running.stopping.is_none() || matches!(running.stopping, Some(Stop::Then(_))) => {
                running.stopping = Some(Stop::Cancel);
                let workflow_id = running.workflow.id.clone().unwrap_or_default();
                vec![Action::Cancel { workflow_id }, ack]
            }
            Some(_) => vec![Action::Ignore(format!("cancel of {id}: already cancelling")), ack],
            None => vec![Action::Ignore(format!("cancel of {id}: no deployment in progress")), ack],
        }
    }

    fn on_process(&mut self, workflow: Workflow, service: &ServiceProperties, ack: Action) -> Vec<Action> {
        if let Some(running) = &mut self.running {
            let same_id = running.workflow.id == workflow.id;
            let retry = same_id && workflow.is_retry_of(&running.workflow);
            if same_id && !retry {
                return vec![Action::Ignore("this deployment is already in progress".into()), ack];
            }
            let old = running.workflow.id.clone().unwrap_or_default();
            let job = Job { workflow, service: service.clone(), is_retry: retry };
            running.stopping = Some(Stop::Then(Box::new(job)));
            return vec![Action::Cancel { workflow_id: old }, ack];
        }
        if let Some(completed) = &self.completed
            && workflow.id.as_deref() == Some(completed.id.as_str())
            && (workflow.retry_timestamp.is_none() || completed.is(&workflow))
        {
            // Defect 6.4-1 of agent 1.1.0: a re-delivered twin must not report "in progress"
            // for a workflow that completed.
            return vec![Action::Ignore("this deployment already completed".into()), ack];
        }
        let is_retry = self.completed.as_ref().is_some_and(|c| workflow.id.as_deref() == Some(c.id.as_str()));
        self.start(Job { workflow, service: service.clone(), is_retry }, Some(ack))
    }

    fn start(&mut self, job: Job, ack: Option<Action>) -> Vec<Action> {
        self.running = Some(Running { workflow: job.workflow.clone(), stopping: None });
        let mut actions = vec![
            Action::Journal(self.journal()),
            Action::Report(Box::new(AgentProperties::in_progress(job.workflow.clone()))),
        ];
        actions.push(Action::Start(Box::new(job)));
        actions.extend(ack);
        actions
    }

    fn on_finished(&mut self, workflow_id: &str, outcome: Outcome) -> Vec<Action> {
        let Some(running) = self.running.take() else {
            return vec![Action::Ignore(format!("job {workflow_id} ended, but none was running"))];
        };
        if running.workflow.id.as_deref() != Some(workflow_id) {
            self.running = Some(running);
            return vec![Action::Ignore(format!("job {workflow_id} ended, but another one is running"))];
        }
        let workflow = running.workflow.clone();
        if let Some(Stop::Then(next)) = running.stopping {
            // A job that ended on its own before it saw the stop still gets its report.
            let mut actions = Vec::new();
            let report = match outcome {
                Outcome::Succeeded { result, installed } => {
                    Some(AgentProperties::succeeded(Some(workflow.clone()), result, &installed))
                }
                Outcome::Failed(result) => Some(AgentProperties::failed(Some(workflow.clone()), result)),
                Outcome::Cancelled | Outcome::RestartRequired { .. } => None,
            };
            if let Some(report) = report {
                self.completed = JournalWorkflow::of(&workflow);
                actions.push(Action::Report(Box::new(report)));
            }
            actions.extend(self.start(*next, None));
            return actions;
        }
        if let Outcome::RestartRequired { reboot } = outcome {
            // Stays "running" in the journal: after the restart the twin names it again and it
            // is processed again (the handler's is-installed check finds it done).
            self.running = Some(Running { workflow, stopping: None });
            return vec![
                Action::Journal(self.journal()),
                Action::Restart { workflow_id: workflow_id.to_owned(), reboot },
            ];
        }
        self.completed = JournalWorkflow::of(&workflow);
        let report = match outcome {
            Outcome::Succeeded { result, installed } => AgentProperties::succeeded(Some(workflow), result, &installed),
            Outcome::Failed(result) => AgentProperties::failed(Some(workflow), result),
            Outcome::Cancelled => AgentProperties::cancelled(Some(workflow)),
            Outcome::RestartRequired { .. } => return Vec::new(),
        };
        // The report reaches the outbox before the journal says "completed": a crash between
        // the two then re-sends the report and runs the (installed) job again, instead of
        // remembering a completion the service never hears of.
        vec![Action::Report(Box::new(report)), Action::Journal(self.journal())]
    }
}

#[cfg(test)]
mod tests {
    use duhub_proto::result::{ExtendedResultCode, InstallResult, ResultCode};
    use serde_json::{Value, json};

    use super::*;

    fn desired(action: i64, id: &str, retry: Option<&str>, version: i64) -> Event {
        let mut workflow = json!({"action": action, "id": id});
        if let Some(retry) = retry {
            workflow["retryTimestamp"] = retry.into();
        }
        let patch = json!({"deviceUpdate": {"__t": "c", "service": {
            "workflow": workflow, "rootKeyPackageUrl": "https://hub/rkp.json",
            "updateManifest": "{}", "updateManifestSignature": "sig", "fileUrls": {}}}, "$version": version});
        Event::Desired(DesiredService::locate(&patch).unwrap().unwrap())
    }

    fn states(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Report(p) => format!("report {}", p.state.map(|s| s.code()).unwrap_or(-99)),
                Action::Ack(_) => "ack".into(),
                Action::Journal(_) => "journal".into(),
                Action::Start(job) => format!("start{}", if job.is_retry { " retry" } else { "" }),
                Action::Cancel { .. } => "cancel".into(),
                Action::Restart { .. } => "restart".into(),
                Action::Ignore(_) => "ignore".into(),
            })
            .collect()
    }

    fn success() -> Outcome {
        Outcome::Succeeded {
            result: LastInstallResult::new(InstallResult::success(ResultCode::APPLY_SUCCESS)),
            installed: UpdateId::new("c", "t", "1.0"),
        }
    }

    fn failure() -> Outcome {
        Outcome::Failed(LastInstallResult::new(InstallResult::new(
            ResultCode::FAILURE,
            ExtendedResultCode(0x3050_1001),
        )))
    }

    #[test]
    fn a_deployment_reports_in_progress_then_its_result() {
        let mut core = Core::new(&Journal::default());
        assert_eq!(states(&core.handle(desired(3, "w1", None, 2))), ["journal", "report 6", "start", "ack"]);
        assert!(core.is_busy());
        assert_eq!(
            states(&core.handle(Event::Finished { workflow_id: "w1".into(), outcome: success() })),
            ["report 0", "journal"],
            "the result is in the outbox before the journal remembers the completion"
        );
        assert_eq!(core.journal().completed.unwrap().id, "w1");
    }

    #[test]
    fn a_redelivered_completed_workflow_is_not_reported_in_progress_again() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        core.handle(Event::Finished { workflow_id: "w1".into(), outcome: success() });
        // Reconnect: the twin is read again.
        assert_eq!(states(&core.handle(desired(3, "w1", None, 2))), ["ignore", "ack"]);
        // Also after a restart, from the journal.
        let mut restarted = Core::new(&core.journal());
        assert_eq!(states(&restarted.handle(desired(3, "w1", None, 2))), ["ignore", "ack"]);
    }

    #[test]
    fn an_interrupted_workflow_runs_again_after_a_restart() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        let journal = core.journal();
        assert_eq!(journal.running.as_ref().unwrap().id, "w1");
        let mut restarted = Core::new(&journal);
        assert_eq!(states(&restarted.handle(desired(3, "w1", None, 2))), ["journal", "report 6", "start", "ack"]);
    }

    #[test]
    fn retry_restarts_the_same_workflow_keeping_its_files() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        core.handle(Event::Finished { workflow_id: "w1".into(), outcome: failure() });
        assert_eq!(
            states(&core.handle(desired(3, "w1", Some("2026-11-29T10:00:00Z"), 3))),
            ["journal", "report 6", "start retry", "ack"]
        );
        // A retry while running: stop, then start again without reporting the stop.
        assert_eq!(states(&core.handle(desired(3, "w1", Some("2026-11-29T11:00:00Z"), 4))), ["cancel", "ack"]);
        assert_eq!(
            states(&core.handle(Event::Finished { workflow_id: "w1".into(), outcome: Outcome::Cancelled })),
            ["journal", "report 6", "start retry"]
        );
    }

    #[test]
    fn a_replacement_stops_the_running_one_and_starts_the_new_one() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        assert_eq!(states(&core.handle(desired(3, "w2", None, 3))), ["cancel", "ack"]);
        let actions = core.handle(Event::Finished { workflow_id: "w1".into(), outcome: Outcome::Cancelled });
        assert_eq!(states(&actions), ["journal", "report 6", "start"]);
        let Some(Action::Start(job)) = actions.iter().find(|a| matches!(a, Action::Start(_))) else { panic!() };
        assert_eq!(job.workflow.id.as_deref(), Some("w2"));
    }

    #[test]
    fn a_replaced_job_that_finished_anyway_is_reported_before_the_next_starts() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        core.handle(desired(3, "w2", None, 3));
        let actions = core.handle(Event::Finished { workflow_id: "w1".into(), outcome: success() });
        assert_eq!(states(&actions), ["report 0", "journal", "report 6", "start"]);
        assert_eq!(core.journal().completed.unwrap().id, "w1");
        assert_eq!(core.journal().running.unwrap().id, "w2");
    }

    #[test]
    fn cancel_stops_a_running_deployment_and_reports_idle_with_minus_one() {
        let mut core = Core::new(&Journal::default());
        assert_eq!(states(&core.handle(desired(255, "w0", None, 1))), ["ignore", "ack"], "nothing to cancel");
        core.handle(desired(3, "w1", None, 2));
        assert_eq!(states(&core.handle(desired(255, "w1", None, 3))), ["cancel", "ack"]);
        assert_eq!(states(&core.handle(desired(255, "w1", None, 3))), ["ignore", "ack"], "duplicate cancel");
        let actions = core.handle(Event::Finished { workflow_id: "w1".into(), outcome: Outcome::Cancelled });
        let Some(Action::Report(report)) = actions.iter().find(|a| matches!(a, Action::Report(_))) else { panic!() };
        assert_eq!(report.state.map(|s| s.code()), Some(0));
        assert_eq!(report.last_install_result.as_ref().map(|r| r.result_code), Some(ResultCode::FAILURE_CANCELLED));
    }

    #[test]
    fn a_restart_request_keeps_the_workflow_running_in_the_journal() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        let actions = core
            .handle(Event::Finished { workflow_id: "w1".into(), outcome: Outcome::RestartRequired { reboot: true } });
        assert_eq!(states(&actions), ["journal", "restart"]);
        assert_eq!(core.journal().running.unwrap().id, "w1");
        assert!(core.journal().completed.is_none(), "not reported as completed before the restart");
    }

    #[test]
    fn a_reboot_that_cannot_be_done_fails_the_workflow() {
        let mut core = Core::new(&Journal::default());
        core.handle(desired(3, "w1", None, 2));
        core.handle(Event::Finished { workflow_id: "w1".into(), outcome: Outcome::RestartRequired { reboot: true } });
        // The runtime could not reboot and ends the workflow.
        let actions = core.handle(Event::Finished { workflow_id: "w1".into(), outcome: failure() });
        assert_eq!(states(&actions), ["report 255", "journal"]);
        assert_eq!(core.journal().completed.unwrap().id, "w1");
        assert!(!core.is_busy());
    }

    #[test]
    fn service_objects_without_workflow_are_acknowledged_and_logged() {
        let mut core = Core::new(&Journal::default());
        let patch = json!({"deviceUpdate": {"__t": "c", "service": {"updateManifest": "{}"}}, "$version": 5});
        let actions = core.handle(Event::Desired(DesiredService::locate(&patch).unwrap().unwrap()));
        assert_eq!(states(&actions), ["ignore", "ack"]);
        let Some(Action::Ack(ack)) = actions.last() else { panic!() };
        assert_eq!(ack.to_patch()["deviceUpdate"]["service"]["av"], Value::from(5));
    }

    #[test]
    fn the_journal_round_trips_as_json() {
        let journal = Journal {
            running: Some(JournalWorkflow { id: "w2".into(), retry_timestamp: Some("t".into()) }),
            completed: Some(JournalWorkflow { id: "w1".into(), retry_timestamp: None }),
        };
        let text = serde_json::to_string(&journal).unwrap();
        assert_eq!(serde_json::from_str::<Journal>(&text).unwrap(), journal);
    }
}

//! Builds the condition list of a run so that kstatus (and with it Argo CD and Flux) reads it
//! right: `Reconciling=True` while work is in flight, `Stalled=True` when the run cannot make
//! progress, `Ready=True` once it succeeded. A condition keeps its `lastTransitionTime` while its
//! status does not change.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{RunCondition, SharedText};

use super::reasons::*;

/// The most bytes of a condition message, an Event note or an attempt's message. Values copied
/// from a spec or from a worker are cut to this, so no input can grow a status or an Event
/// without bound.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] (on a character boundary), with a marker saying
/// how long it was. Short text is returned as it is.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_string();
    }
    let marker = format!(" … [truncated: {} bytes in all]", text.len());
    let mut end = MAX_MESSAGE_BYTES - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end])
}

/// The conditions every run carries, set together on every status write.
pub const RUN_CONDITIONS: [&str; 6] = [READY, RECONCILING, STALLED, RUNNING, SUCCEEDED, FAILED];

pub struct ConditionSet<'a> {
    previous: &'a [RunCondition],
    generation: i64,
    now: Timestamp,
    current: Vec<RunCondition>,
}

impl<'a> ConditionSet<'a> {
    pub fn new(previous: &'a [RunCondition], generation: i64, now: Timestamp) -> Self {
        Self { previous, generation, now, current: Vec::new() }
    }

    fn set(&mut self, type_: &str, status: bool, reason: &SharedText, message: &SharedText) {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        self.current.push(RunCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.clone(),
            message: message.clone(),
            last_transition_time,
            observed_generation: Some(self.generation),
        });
    }

    /// All six conditions at once, so none is ever left stale from an earlier phase. `truths`
    /// holds the status of Ready, Reconciling, Stalled, Running, Succeeded, Failed, in that order.
    /// The six share one reason and one message.
    fn all(&mut self, truths: [bool; 6], reason: &str, message: &str) {
        let (reason, message) = (SharedText::from(reason), SharedText::from(bounded(message)));
        for (type_, status) in RUN_CONDITIONS.into_iter().zip(truths) {
            self.set(type_, status, &reason, &message);
        }
    }

    pub fn invalid(&mut self, problems: &str) {
        self.all([false, false, true, false, false, false], INVALID_SPEC, problems);
    }
    pub fn running(&mut self, message: &str) {
        self.all([false, true, false, true, false, false], ATTEMPT_RUNNING, message);
    }
    pub fn backing_off(&mut self, message: &str) {
        self.all([false, true, false, false, false, false], BACKING_OFF, message);
    }
    /// Waiting for something outside the run (the shared request budget) before an attempt.
    pub fn waiting(&mut self, reason: &str, message: &str) {
        self.all([false, true, false, false, false, false], reason, message);
    }
    /// Stopped by something no retry can change; waits for a change to the run or its children.
    pub fn stalled(&mut self, reason: &str, message: &str) {
        self.all([false, false, true, false, false, false], reason, message);
    }
    pub fn suspended(&mut self, message: &str) {
        self.all([false, false, false, false, false, false], SUSPENDED, message);
    }
    pub fn succeeded(&mut self, message: &str) {
        self.all([true, false, false, false, true, false], ATTEMPT_SUCCEEDED, message);
    }
    pub fn failed(&mut self, reason: &str, message: &str) {
        self.all([false, false, true, false, false, true], reason, message);
    }

    /// A scheduled `KraJob`: ready while its schedule runs and its newest finished run did not
    /// fail; reconciling while a child run is active.
    pub fn schedule(&mut self, ready: bool, active: bool, last_failed: bool, reason: &str, message: &str) {
        self.all([ready, active, false, active, false, last_failed], reason, message);
    }

    /// A condition a worker's result decides (for example `Promoted`).
    pub fn extra(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        self.set(type_, status, &reason.into(), &bounded(message).into());
    }

    pub fn finish(self) -> Vec<RunCondition> {
        self.current
    }
}

/// Conditions that a worker's result summary decides, beyond the run's own.
pub trait ResultConditions {
    /// (type, status, reason, message) of each.
    fn result_conditions(&self) -> Vec<(&'static str, bool, String, String)> {
        Vec::new()
    }

    /// The KRA API requests the attempt reported making (kinds with a request budget).
    fn requests_used(&self) -> Option<i64> {
        None
    }
}

impl ResultConditions for crate::crd::CollectionSummary {
    fn requests_used(&self) -> Option<i64> {
        self.api_calls
    }
}

impl ResultConditions for crate::crd::EvaluationSummary {
    fn result_conditions(&self) -> Vec<(&'static str, bool, String, String)> {
        self.promotion
            .iter()
            .map(|p| {
                let message = format!(
                    "{} paired races: exact top-3 hit rate {:+.4} against the baseline run, McNemar p = {:.4}",
                    p.paired, p.exact_hit_rate_difference, p.mcnemar_p_value
                );
                (super::reasons::PROMOTED, p.promoted, p.reason.clone(), message)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary_with_a_marker() {
        assert_eq!(bounded("short"), "short");
        let exact = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(bounded(&exact), exact);
        let long = format!("bad value {}", "x".repeat(100_000));
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.starts_with("bad value xxx") && cut.ends_with("[truncated: 100010 bytes in all]"), "{cut}");
        // Three-byte characters: the cut never splits one.
        let korean = "경마".repeat(1000);
        let cut = bounded(&korean);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.contains("[truncated: 6000 bytes in all]"));
        assert_eq!(bounded(&cut), cut, "bounding is idempotent, so a status does not churn");
    }
    use crate::crd::{EvaluationSummary, PromotionDecision};

    #[test]
    fn a_promotion_decision_becomes_a_condition_with_its_figures() {
        let summary = EvaluationSummary {
            promotion: Some(PromotionDecision {
                promoted: true,
                reason: "Promoted".into(),
                paired: 512,
                exact_hit_rate_difference: 0.031,
                mcnemar_p_value: 0.012,
                guard_rails: Vec::new(),
            }),
            ..Default::default()
        };
        let conditions = summary.result_conditions();
        assert_eq!(conditions.len(), 1);
        let (type_, status, reason, message) = &conditions[0];
        assert_eq!((*type_, *status, reason.as_str()), ("Promoted", true, "Promoted"));
        assert!(
            message.contains("512 paired races") && message.contains("+0.0310") && message.contains("p = 0.0120"),
            "{message}"
        );
        assert!(EvaluationSummary::default().result_conditions().is_empty(), "no baseline, no condition");
    }
}

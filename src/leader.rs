//! Lease-based leader election (coordination.k8s.io/v1), so that of several replicas exactly one
//! reconciles. Every write carries the Lease's resourceVersion: two candidates racing for an
//! expired Lease cannot both win, the API server answers the loser with 409.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::controller::error::{is_conflict, is_not_found};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    /// Between renewals by the holder.
    pub renew_interval: Duration,
    /// Between attempts of a standby to acquire the Lease (controller-runtime's retry period):
    /// a failover takes at most the lease duration and this.
    pub retry_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {step} Lease {name}: {source}")]
pub struct LeaseError {
    step: &'static str,
    name: String,
    source: kube::Error,
}

/// What one round of the election found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// This candidate holds the Lease (acquired or renewed).
    Leader,
    /// Someone else holds an unexpired Lease.
    Follower { holder: Option<String> },
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return true };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0 + duration < now
}

pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl Elector {
    pub fn new(api: Api<Lease>, settings: LeaseSettings) -> Self {
        Self { api, settings }
    }

    fn spec(&self, now: Timestamp, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs() as i32),
            acquire_time: acquire_time.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn error(&self, step: &'static str, source: kube::Error) -> LeaseError {
        LeaseError { step, name: self.settings.name.clone(), source }
    }

    /// One round: create, renew or take over the Lease, or report who holds it.
    pub async fn round(&self) -> Result<Round, LeaseError> {
        let now = Timestamp::now();
        let existing = match self.api.get(&self.settings.name).await {
            Ok(lease) => lease,
            Err(e) if is_not_found(&e) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..Default::default() },
                    spec: Some(self.spec(now, None, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Leader),
                    Err(e) if is_conflict(&e) => Ok(Round::Follower { holder: None }),
                    Err(e) => Err(self.error("create", e)),
                };
            }
            Err(e) => return Err(self.error("read", e)),
        };
        let spec = existing.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.settings.identity.as_str());
        if !mine && !expired(&spec, now) && spec.holder_identity.is_some() {
            return Ok(Round::Follower { holder: spec.holder_identity });
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquire_time = if mine { spec.acquire_time.clone() } else { None };
        let mut lease = existing.clone();
        lease.spec = Some(self.spec(now, acquire_time, transitions));
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Round::Leader),
            Err(e) if is_conflict(&e) => Ok(Round::Follower { holder: None }),
            Err(e) => Err(self.error(if mine { "renew" } else { "take over" }, e)),
        }
    }

    /// Give the Lease up on shutdown so that a standby replica takes over at once.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let mut lease = self.api.get(&self.settings.name).await.map_err(|e| self.error("read", e))?;
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self.api.replace(&self.settings.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.error("release", e)),
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed: Option<i64>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(duration),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_only_after_its_duration_without_renewal() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(!expired(&spec(Some(990), 15), now));
        assert!(!expired(&spec(Some(985), 15), now), "exactly at the boundary it still holds");
        assert!(expired(&spec(Some(984), 15), now));
        assert!(expired(&spec(None, 15), now), "a released Lease is free");
    }
}

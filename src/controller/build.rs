//! Pure construction of an attempt's Job. No client here: everything the Job needs is passed in.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::validate::{WorkerDefaults, WorkerInvocation};
use crate::crd::PodOverrides;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_OWNER_KIND: &str = "kra.dev/owner-kind";
pub const LABEL_OWNER_UID: &str = "kra.dev/owner-uid";
pub const LABEL_ATTEMPT: &str = "kra.dev/attempt";
pub const LABEL_GENERATION: &str = "kra.dev/generation";
/// On the pod template: the Job a pod belongs to (independent of the Job controller's labels).
pub const LABEL_JOB: &str = "kra.dev/job";
pub const MANAGER: &str = "kra-operator";
pub const CONTAINER: &str = "worker";
/// The UID worker containers run as (the image's non-root user).
pub const WORKER_UID: i64 = 65532;
const MAX_NAME: usize = 63;

/// Deterministic Job name of an attempt: `<owner>-<attempt>`, shortened with a hash of the
/// owner's name when that would exceed 63 characters (the limit of the `job-name` label).
pub fn job_name(owner: &str, attempt: i32) -> String {
    let suffix = format!("-{attempt}");
    let plain = format!("{owner}{suffix}");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let hash = format!("-{:08x}", fnv1a(owner.as_bytes()));
    let keep = MAX_NAME - suffix.len() - hash.len();
    let prefix = owner[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}{hash}{suffix}")
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Identity of the resource that owns the Job.
pub struct Owner<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

/// Everything an attempt's Job is built from.
pub struct JobInput<'a> {
    pub owner: Owner<'a>,
    pub worker_binary: &'a str,
    pub attempt: i32,
    pub generation: i64,
    pub active_deadline_seconds: Option<i64>,
    pub overrides: Option<&'a PodOverrides>,
    pub invocation: &'a WorkerInvocation,
    pub defaults: &'a WorkerDefaults,
}

/// Labels that select every Job of one owner.
pub fn owner_selector(kind: &str, uid: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_OWNER_KIND}={kind},{LABEL_OWNER_UID}={uid}")
}

pub fn build_job(input: &JobInput<'_>) -> Job {
    let name = job_name(input.owner.name, input.attempt);
    let overrides = input.overrides.cloned().unwrap_or_default();

    let mut labels: BTreeMap<String, String> = overrides.labels.clone().unwrap_or_default();
    labels.extend([
        (LABEL_NAME.to_string(), input.worker_binary.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_OWNER_KIND.to_string(), input.owner.kind.to_string()),
        (LABEL_OWNER_UID.to_string(), input.owner.uid.to_string()),
        (LABEL_ATTEMPT.to_string(), input.attempt.to_string()),
        (LABEL_GENERATION.to_string(), input.generation.to_string()),
    ]);
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_JOB.to_string(), name.clone());
    let annotations = overrides.annotations.clone().filter(|a| !a.is_empty());

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(input.invocation.volumes.iter().cloned());
    let mut mounts = vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() }];
    mounts.extend(input.invocation.mounts.iter().cloned());

    let container = Container {
        name: CONTAINER.into(),
        image: Some(overrides.image.clone().unwrap_or_else(|| input.defaults.image.clone())),
        image_pull_policy: input.defaults.image_pull_policy.clone(),
        command: Some(vec![input.worker_binary.to_string()]),
        args: Some(input.invocation.args.clone()),
        env: Some(input.invocation.env.clone()).filter(|e| !e.is_empty()),
        resources: overrides.resources.clone(),
        volume_mounts: Some(mounts),
        termination_message_path: Some(super::validate::SUMMARY_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        ..Default::default()
    };

    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(input.owner.namespace.to_string()),
            labels: Some(labels),
            annotations: annotations.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: input.owner.api_version.to_string(),
                kind: input.owner.kind.to_string(),
                name: input.owner.name.to_string(),
                uid: input.owner.uid.to_string(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Retries are the operator's: one pod per Job, so each retry is a new, named attempt.
            backoff_limit: Some(0),
            active_deadline_seconds: input.active_deadline_seconds,
            managed_by: input.defaults.job_managed_by.clone(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations, ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: overrides
                        .service_account_name
                        .clone()
                        .or_else(|| input.defaults.service_account_name.clone()),
                    automount_service_account_token: Some(false),
                    node_selector: overrides.node_selector.clone(),
                    tolerations: overrides.tolerations.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKER_UID),
                        run_as_group: Some(WORKER_UID),
                        fs_group: Some(WORKER_UID),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

//! Pure construction of an attempt's Job. No client here: everything the Job needs is passed in.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, LocalObjectReference, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::validate::WorkerDefaults;
use crate::crd::{PodOverrides, QueueRef, RequestGrant};
use crate::worker::WorkerInvocation;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// The run the Job belongs to (its owner's name, shortened to a label value when longer).
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// The application every worker belongs to.
pub const PART_OF: &str = "kra-operator";
/// What this operator's own labels and annotations begin with (the caches keep only these).
pub const LABEL_PREFIX: &str = "kra.dev/";
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
    shortened(owner, &format!("-{attempt}"))
}

/// `<name><suffix>`, or when that would exceed 63 characters `name` cut and followed by a
/// hash of the whole name, then the suffix: distinct names stay distinct.
fn shortened(name: &str, suffix: &str) -> String {
    let plain = format!("{name}{suffix}");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let hash = format!("-{:08x}", fnv1a(name.as_bytes()));
    let keep = MAX_NAME - suffix.len() - hash.len();
    let prefix = name[..keep].trim_end_matches(['-', '.', '_']);
    format!("{prefix}{hash}{suffix}")
}

/// The `app.kubernetes.io/instance` value of an owner's Jobs and pods: its name, shortened to
/// the 63 characters a label value may have.
pub fn instance_label(owner: &str) -> String {
    shortened(owner, "")
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
    /// The Kueue queue that admits the Job: it is created suspended, with Kueue's labels.
    pub queue: Option<&'a QueueRef>,
    /// The attempt's share of the KRA API budget: passed to the collector and kept in an
    /// annotation, so an adopted Job's grant is known.
    pub grant: Option<&'a RequestGrant>,
    /// The worker's exit codes that no retry can change: a `FailJob` rule of the Job's
    /// `podFailurePolicy`, so the Job itself says why it failed (reason `PodFailurePolicy`).
    pub permanent_exit_codes: &'a [i32],
    /// The W3C trace context of the reconcile that creates the Job, given to the worker as
    /// `TRACEPARENT` so that its spans join the reconcile's trace (only while tracing is on).
    pub traceparent: Option<&'a str>,
}

/// Annotation holding a Job's request grant (JSON).
pub const ANNOTATION_REQUEST_BUDGET: &str = "kra.dev/request-budget";

/// Kueue's label naming the LocalQueue of a Job.
pub const LABEL_KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's label naming the WorkloadPriorityClass of a Job.
pub const LABEL_KUEUE_PRIORITY: &str = "kueue.x-k8s.io/priority-class";

/// Labels that select every Job of one owner.
pub fn owner_selector(kind: &str, uid: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_OWNER_KIND}={kind},{LABEL_OWNER_UID}={uid}")
}

pub fn build_job(input: &JobInput<'_>) -> Job {
    let name = job_name(input.owner.name, input.attempt);
    let overrides = input.overrides.cloned().unwrap_or_default();
    let labels = job_labels(input, &overrides);
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_JOB.to_string(), name.clone());
    let mut annotations = overrides.annotations.clone().unwrap_or_default();
    let mut args = input.invocation.args.clone();
    if let Some(grant) = input.grant {
        annotations.insert(ANNOTATION_REQUEST_BUDGET.to_string(), serde_json::to_string(grant).unwrap_or_default());
        args.extend([
            "--requests-per-second".to_string(),
            grant.requests_per_second.to_string(),
            "--max-requests".to_string(),
            grant.requests.to_string(),
        ]);
    }
    let annotations = Some(annotations).filter(|a| !a.is_empty());
    let container = worker_container(input, &overrides, args);

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
            pod_failure_policy: Some(pod_failure_policy(input.permanent_exit_codes)),
            // Kueue admits a queued Job by unsuspending it.
            suspend: input.queue.map(|_| true),
            active_deadline_seconds: input.active_deadline_seconds,
            managed_by: input.defaults.job_managed_by.clone(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations, ..Default::default() }),
                spec: Some(restricted_pod(input, &overrides, container)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod the cluster took away (eviction, preemption, node drain: the `DisruptionTarget`
/// condition) is not a failure of the attempt, so the Job controller starts another pod; a
/// permanent exit code of the worker container fails the Job at once, with the rule named.
fn pod_failure_policy(permanent_exit_codes: &[i32]) -> PodFailurePolicy {
    let mut rules = vec![PodFailurePolicyRule {
        action: "Ignore".into(),
        on_exit_codes: None,
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
        }]),
    }];
    if !permanent_exit_codes.is_empty() {
        let mut values = permanent_exit_codes.to_vec();
        values.sort_unstable();
        values.dedup();
        rules.push(PodFailurePolicyRule {
            action: "FailJob".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(CONTAINER.into()),
                operator: "In".into(),
                values,
            }),
            on_pod_conditions: None,
        });
    }
    PodFailurePolicy { rules }
}

/// The Job's labels: the user's pod-override labels, then this operator's (which win).
fn job_labels(input: &JobInput<'_>, overrides: &PodOverrides) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = overrides.labels.clone().unwrap_or_default();
    labels.extend([
        (LABEL_NAME.to_string(), input.worker_binary.to_string()),
        (LABEL_INSTANCE.to_string(), instance_label(input.owner.name)),
        (LABEL_PART_OF.to_string(), PART_OF.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_OWNER_KIND.to_string(), input.owner.kind.to_string()),
        (LABEL_OWNER_UID.to_string(), input.owner.uid.to_string()),
        (LABEL_ATTEMPT.to_string(), input.attempt.to_string()),
        (LABEL_GENERATION.to_string(), input.generation.to_string()),
    ]);
    if let Some(queue) = input.queue {
        labels.insert(LABEL_KUEUE_QUEUE.to_string(), queue.name.clone());
        if let Some(priority) = &queue.priority_class {
            labels.insert(LABEL_KUEUE_PRIORITY.to_string(), priority.clone());
        }
    }
    labels
}

/// The worker container: restricted (non-root, read-only root, no capabilities), a writable
/// `/tmp`, the summary in the termination message.
/// The worker's environment: what its task needs, then where its traces go (the operator's OTLP
/// endpoint, its binary as the service) and the trace it continues.
fn worker_env(input: &JobInput<'_>) -> Vec<EnvVar> {
    let mut env = input.invocation.env.clone();
    let var = |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), value_from: None };
    if let Some(endpoint) = &input.defaults.otlp_endpoint {
        env.push(var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
        env.push(var("OTEL_SERVICE_NAME", input.worker_binary));
        if let Some(traceparent) = input.traceparent {
            env.push(var(crate::telemetry::TRACEPARENT, traceparent));
        }
    }
    env
}

fn worker_container(input: &JobInput<'_>, overrides: &PodOverrides, args: Vec<String>) -> Container {
    let mut mounts = vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() }];
    mounts.extend(input.invocation.mounts.iter().cloned());
    Container {
        name: CONTAINER.into(),
        image: Some(overrides.image.clone().unwrap_or_else(|| input.defaults.image.clone())),
        image_pull_policy: input.defaults.image_pull_policy.clone(),
        command: Some(vec![input.worker_binary.to_string()]),
        args: Some(args),
        env: Some(worker_env(input)).filter(|e| !e.is_empty()),
        resources: Some(super::resources::merge(input.defaults.resources.as_ref(), overrides.resources.as_ref()))
            .filter(|r| r.requests.is_some() || r.limits.is_some() || r.claims.is_some()),
        volume_mounts: Some(mounts),
        termination_message_path: Some(crate::worker::SUMMARY_PATH.into()),
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
    }
}

/// The pod of an attempt: never restarted, no service account token, the worker's uid.
fn restricted_pod(input: &JobInput<'_>, overrides: &PodOverrides, container: Container) -> PodSpec {
    let mut volumes =
        vec![Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }];
    volumes.extend(input.invocation.volumes.iter().cloned());
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: overrides
            .service_account_name
            .clone()
            .or_else(|| input.defaults.service_account_name.clone()),
        automount_service_account_token: Some(false),
        image_pull_secrets: Some(
            input.defaults.image_pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect(),
        )
        .filter(|s: &Vec<_>| !s.is_empty()),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::resources;
    use crate::crd::PodOverrides;
    use kube::ResourceExt;

    fn job(overrides: Option<&PodOverrides>) -> Job {
        queued(overrides, None)
    }

    fn queued(overrides: Option<&PodOverrides>, queue: Option<&QueueRef>) -> Job {
        let invocation = WorkerInvocation { args: vec!["collect".into()], ..Default::default() };
        let defaults = WorkerDefaults {
            image: "registry/kra:1".into(),
            service_account_name: Some("workers".into()),
            ..Default::default()
        };
        build_job(&JobInput {
            owner: Owner {
                api_version: "kra.dev/v1alpha1",
                kind: "KraJob",
                name: "cards",
                namespace: "racing",
                uid: "u-1",
            },
            worker_binary: "kra-collector",
            attempt: 3,
            generation: 2,
            active_deadline_seconds: Some(600),
            overrides,
            invocation: &invocation,
            defaults: &defaults,
            queue,
            grant: None,
            permanent_exit_codes: &[2, 5, 7],
            traceparent: None,
        })
    }

    /// The pod of attempt 1 of KraJob `a`, built with these defaults, overrides and trace context.
    fn pod(defaults: &WorkerDefaults, overrides: Option<&PodOverrides>, traceparent: Option<&str>) -> PodSpec {
        let owner = Owner { api_version: "kra.dev/v1alpha1", kind: "KraJob", name: "a", namespace: "n", uid: "u" };
        let job = build_job(&JobInput {
            owner,
            worker_binary: "kra-collector",
            attempt: 1,
            generation: 1,
            active_deadline_seconds: None,
            overrides,
            invocation: &WorkerInvocation::default(),
            defaults,
            queue: None,
            grant: None,
            permanent_exit_codes: &[],
            traceparent,
        });
        job.spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn a_queued_job_is_created_suspended_with_kueues_labels() {
        let plain = job(None);
        assert_eq!(plain.spec.as_ref().unwrap().suspend, None);
        assert!(!plain.labels().contains_key(LABEL_KUEUE_QUEUE));
        let queue = QueueRef { name: "team-a".into(), priority_class: Some("race-day".into()) };
        let queued = queued(None, Some(&queue));
        assert_eq!(queued.spec.as_ref().unwrap().suspend, Some(true), "Kueue admits it by unsuspending");
        assert_eq!(queued.labels()[LABEL_KUEUE_QUEUE], "team-a");
        assert_eq!(queued.labels()[LABEL_KUEUE_PRIORITY], "race-day");
    }

    #[test]
    fn job_names_are_deterministic_and_fit_the_label_limit() {
        assert_eq!(job_name("cards", 1), "cards-1");
        let long = "a".repeat(70);
        let name = job_name(&long, 12);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-12"));
        assert_eq!(name, job_name(&long, 12), "same input, same name");
        assert_ne!(job_name(&format!("{long}x"), 12), name, "different owners do not collide");
    }

    #[test]
    fn the_job_is_owned_labelled_and_retried_by_the_operator_only() {
        let job = job(None);
        let meta = &job.metadata;
        assert_eq!(meta.name.as_deref(), Some("cards-3"));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("KraJob", "u-1", Some(true)));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_ATTEMPT], "3");
        assert_eq!(labels[LABEL_GENERATION], "2");
        assert_eq!(labels[LABEL_OWNER_UID], "u-1");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.ttl_seconds_after_finished, None, "the operator deletes Jobs once their outcome is recorded");
        let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(template_labels[LABEL_JOB], "cards-3");
    }

    #[test]
    fn a_disrupted_pod_is_not_a_failed_attempt_and_a_permanent_exit_code_fails_the_job() {
        let spec = job(None).spec.unwrap();
        let rules = spec.pod_failure_policy.expect("a pod failure policy").rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].action, "Ignore");
        let on = rules[0].on_pod_conditions.as_ref().unwrap();
        assert_eq!((on[0].type_.as_str(), on[0].status.as_str()), ("DisruptionTarget", "True"));
        assert_eq!(rules[1].action, "FailJob");
        let codes = rules[1].on_exit_codes.as_ref().unwrap();
        assert_eq!((codes.container_name.as_deref(), codes.operator.as_str()), (Some(CONTAINER), "In"));
        assert_eq!(codes.values, vec![2, 5, 7]);
        assert!(pod_failure_policy(&[]).rules.len() == 1, "no empty exit-code rule (the API server refuses one)");
        assert_eq!(spec.template.spec.unwrap().restart_policy.as_deref(), Some("Never"), "required by the policy");
    }

    #[test]
    fn every_pod_runs_with_the_restricted_security_profile() {
        let job = job(None);
        let pod = job.spec.unwrap().template.spec.unwrap();
        let pod_security = pod.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("workers"));
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(security.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(container.command.as_deref(), Some(&["kra-collector".to_string()][..]));
        assert_eq!(container.termination_message_path.as_deref(), Some("/dev/termination-log"));
        let tmp = container.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == "/tmp");
        assert!(tmp.is_some(), "a writable /tmp on a read-only root filesystem");
    }

    #[test]
    fn overrides_apply_but_cannot_replace_the_operators_labels() {
        let overrides = PodOverrides {
            image: Some("custom:2".into()),
            node_selector: Some([("pool".to_string(), "batch".to_string())].into()),
            service_account_name: Some("own".into()),
            labels: Some(
                [("team".to_string(), "data".to_string()), (LABEL_ATTEMPT.to_string(), "99".to_string())].into(),
            ),
            annotations: Some([("note".to_string(), "x".to_string())].into()),
            ..Default::default()
        };
        let job = job(Some(&overrides));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels[LABEL_ATTEMPT], "3");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("custom:2"));
        assert_eq!(pod.service_account_name.as_deref(), Some("own"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "batch");
    }

    #[test]
    fn jobs_and_pods_carry_the_standard_labels_of_their_run() {
        let job = job(None);
        let template = job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        for labels in [job.metadata.labels.as_ref().unwrap(), &template] {
            assert_eq!(labels[LABEL_NAME], "kra-collector");
            assert_eq!(labels[LABEL_INSTANCE], "cards");
            assert_eq!(labels[LABEL_PART_OF], "kra-operator");
            assert_eq!(labels[LABEL_MANAGED_BY], "kra-operator");
        }
        let long = format!("nightly-collection-{}", "x".repeat(240));
        let value = instance_label(&long);
        assert!(value.len() <= 63 && value.starts_with("nightly-collection-x"), "{value}");
        assert_ne!(value, instance_label(&format!("{long}y")), "distinct runs keep distinct values");
    }

    #[test]
    fn worker_resources_and_pull_secrets_come_from_the_defaults_and_the_overrides() {
        let defaults = WorkerDefaults {
            image: "registry/kra:1".into(),
            resources: resources::defaults(
                &resources::parse_list(resources::DEFAULT_REQUESTS).unwrap(),
                &resources::parse_list(resources::DEFAULT_LIMITS).unwrap(),
            ),
            image_pull_secrets: vec!["registry-a".into(), "registry-b".into()],
            ..Default::default()
        };
        let overrides = PodOverrides {
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(
                    [("memory".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into()))]
                        .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let quantity = |pod: &PodSpec, part: &str, name: &str| {
            let resources = pod.containers[0].resources.as_ref().unwrap();
            let map = if part == "requests" { &resources.requests } else { &resources.limits };
            map.as_ref().and_then(|m| m.get(name)).map(|q| q.0.clone())
        };
        let plain = pod(&defaults, None, None);
        assert_eq!(quantity(&plain, "requests", "cpu").as_deref(), Some("100m"));
        assert_eq!(quantity(&plain, "requests", "memory").as_deref(), Some("256Mi"));
        assert_eq!(quantity(&plain, "limits", "memory").as_deref(), Some("1Gi"));
        assert_eq!(quantity(&plain, "limits", "cpu"), None, "no CPU limit by default");
        let secrets: Vec<String> = plain.image_pull_secrets.unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(secrets, ["registry-a", "registry-b"]);

        let own = pod(&defaults, Some(&overrides), None);
        assert_eq!(quantity(&own, "requests", "memory").as_deref(), Some("2Gi"));
        assert_eq!(
            quantity(&own, "limits", "memory").as_deref(),
            Some("2Gi"),
            "a default limit never undercuts a request"
        );
        assert_eq!(quantity(&own, "requests", "cpu").as_deref(), Some("100m"));

        let bare = pod(&WorkerDefaults { image: "i".into(), ..Default::default() }, None, None);
        assert_eq!(bare.containers[0].resources, None, "no defaults and nothing of its own: none");
        assert_eq!(bare.image_pull_secrets, None);
    }

    #[test]
    fn a_traced_reconcile_gives_its_worker_the_endpoint_its_name_and_the_trace_to_continue() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let env_of = |endpoint: Option<&str>, traceparent: Option<&str>| {
            let defaults =
                WorkerDefaults { image: "i".into(), otlp_endpoint: endpoint.map(String::from), ..Default::default() };
            let container = pod(&defaults, None, traceparent).containers.remove(0);
            let env = container.env.unwrap_or_default().into_iter();
            env.map(|e| (e.name, e.value.unwrap_or_default())).collect::<Vec<_>>()
        };
        let traced = env_of(Some("http://otel:4318"), Some(traceparent));
        let value = |name: &str| traced.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(value("OTEL_EXPORTER_OTLP_ENDPOINT"), Some("http://otel:4318"));
        assert_eq!(value("OTEL_SERVICE_NAME"), Some("kra-collector"));
        assert_eq!(value("TRACEPARENT"), Some(traceparent));
        assert!(env_of(None, Some(traceparent)).is_empty(), "tracing off: no trace variables");
    }
}

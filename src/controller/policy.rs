//! What a resource may ask of the operator on its creator's behalf (pure). Whoever may create a
//! `KraJob` or an `EvaluationRun` need not be allowed to create Pods or read Secrets, yet the
//! operator (a confused deputy, if it let them) would run any image under any service account
//! with the Secrets the resource names, or send the Secret an `EvaluationRun` names as a bearer
//! token to any URL. The platform team sets what is allowed (operator flags, chart `policy.*`);
//! the defaults are the safe ones: the configured worker image only, no service-account override,
//! https LLM endpoints only, any host unless a host allowlist is set. The chart's
//! ValidatingAdmissionPolicy refuses the same at `kubectl apply`.

use crate::crd::PodOverrides;

use super::validate::Problems;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Images `podOverrides.image` may name besides the configured worker image: exact names,
    /// or prefixes ending in `*` (`registry.example/kra-operator:*`).
    pub allowed_images: Vec<String>,
    /// Service accounts `podOverrides.serviceAccountName` may name; none by default.
    pub allowed_service_accounts: Vec<String>,
    /// Whether an LLM endpoint may be plain `http://` (an in-cluster server without TLS).
    pub allow_http_llm_endpoints: bool,
    /// Hosts an LLM endpoint may name: exact names, or `*.suffix` for any host under a domain.
    /// Empty: any host.
    pub allowed_llm_hosts: Vec<String>,
}

fn matches_image(allowed: &str, image: &str) -> bool {
    match allowed.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix),
        None => image == allowed,
    }
}

fn matches_host(allowed: &str, host: &str) -> bool {
    match allowed.strip_prefix("*.") {
        Some(domain) => host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => host.eq_ignore_ascii_case(allowed),
    }
}

fn listed(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

impl Policy {
    /// The image and service-account overrides of a worker pod.
    pub fn check_overrides(&self, worker_image: &str, overrides: Option<&PodOverrides>, problems: &mut Problems) {
        let Some(overrides) = overrides else { return };
        if let Some(image) = &overrides.image
            && image != worker_image
            && !self.allowed_images.iter().any(|allowed| matches_image(allowed, image))
        {
            problems.field(
                "podOverrides.image",
                format!(
                    "{image:?} is not an allowed worker image (the configured worker image; also allowed: {}; operator flag --allowed-worker-images)",
                    listed(&self.allowed_images)
                ),
            );
        }
        if let Some(account) = &overrides.service_account_name
            && !self.allowed_service_accounts.contains(account)
        {
            problems.field(
                "podOverrides.serviceAccountName",
                format!(
                    "{account:?} is not an allowed service account (allowed: {}; operator flag --allowed-service-accounts)",
                    listed(&self.allowed_service_accounts)
                ),
            );
        }
    }

    /// An LLM endpoint the evaluator will send the run's API key to.
    pub fn check_llm_endpoint(&self, endpoint: &str, problems: &mut Problems) {
        const FIELD: &str = "predictor.llm.endpoint";
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            problems.field(FIELD, "is not a URL");
            return;
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http_llm_endpoints => {}
            "http" => problems.field(
                FIELD,
                "must be https (the run's API key is sent to it; operator flag --allow-http-llm-endpoints allows http)",
            ),
            other => problems.field(FIELD, format!("scheme {other:?} is not allowed (https only)")),
        }
        let host = url.host_str().unwrap_or_default();
        if !self.allowed_llm_hosts.is_empty()
            && !self.allowed_llm_hosts.iter().any(|allowed| matches_host(allowed, host))
        {
            problems.field(
                FIELD,
                format!(
                    "host {host:?} is not an allowed LLM host (allowed: {}; operator flag --allowed-llm-hosts)",
                    listed(&self.allowed_llm_hosts)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(image: Option<&str>, account: Option<&str>) -> PodOverrides {
        PodOverrides {
            image: image.map(String::from),
            service_account_name: account.map(String::from),
            ..Default::default()
        }
    }

    fn problems(check: impl FnOnce(&mut Problems)) -> String {
        let mut problems = Problems::default();
        check(&mut problems);
        problems.to_string()
    }

    const WORKER: &str = "registry.example/kra-operator:0.2.0";

    #[test]
    fn by_default_only_the_worker_image_and_no_service_account_override() {
        let policy = Policy::default();
        assert_eq!(problems(|p| policy.check_overrides(WORKER, Some(&overrides(Some(WORKER), None)), p)), "");
        let evil =
            problems(|p| policy.check_overrides(WORKER, Some(&overrides(Some("evil/miner:1"), Some("admin"))), p));
        assert!(evil.contains("podOverrides.image: \"evil/miner:1\" is not an allowed worker image"), "{evil}");
        assert!(
            evil.contains(
                "podOverrides.serviceAccountName: \"admin\" is not an allowed service account (allowed: none"
            ),
            "{evil}"
        );
        assert_eq!(problems(|p| policy.check_overrides(WORKER, None, p)), "");
    }

    #[test]
    fn allowlists_take_exact_names_and_prefixes() {
        let policy = Policy {
            allowed_images: vec!["registry.example/kra-operator:*".into(), "mirror.example/kra:1".into()],
            allowed_service_accounts: vec!["kra-worker-gpu".into()],
            ..Default::default()
        };
        for image in ["registry.example/kra-operator:0.3.0", "mirror.example/kra:1"] {
            assert_eq!(
                problems(|p| policy.check_overrides(WORKER, Some(&overrides(Some(image), None)), p)),
                "",
                "{image}"
            );
        }
        for image in ["registry.example/kra-operator-evil:1", "mirror.example/kra:2"] {
            assert_ne!(
                problems(|p| policy.check_overrides(WORKER, Some(&overrides(Some(image), None)), p)),
                "",
                "{image}"
            );
        }
        assert_eq!(problems(|p| policy.check_overrides(WORKER, Some(&overrides(None, Some("kra-worker-gpu"))), p)), "");
    }

    #[test]
    fn llm_endpoints_are_https_unless_allowed_and_within_the_host_allowlist() {
        let strict = Policy::default();
        assert_eq!(problems(|p| strict.check_llm_endpoint("https://llm.example/v1", p)), "");
        let http = problems(|p| strict.check_llm_endpoint("http://vllm.models.svc:8000/v1", p));
        assert!(http.contains("must be https"), "{http}");
        assert!(
            problems(|p| strict.check_llm_endpoint("file:///etc/passwd", p)).contains("scheme \"file\" is not allowed")
        );
        assert!(problems(|p| strict.check_llm_endpoint("not a url", p)).contains("is not a URL"));

        let hosts = Policy {
            allow_http_llm_endpoints: true,
            allowed_llm_hosts: vec!["*.models.svc".into(), "api.openai.com".into()],
            ..Default::default()
        };
        for endpoint in ["http://vllm.models.svc:8000/v1", "https://API.openai.com/v1"] {
            assert_eq!(problems(|p| hosts.check_llm_endpoint(endpoint, p)), "", "{endpoint}");
        }
        for endpoint in ["https://attacker.example/v1", "https://models.svc/v1", "https://evilmodels.svc/v1"] {
            let found = problems(|p| hosts.check_llm_endpoint(endpoint, p));
            assert!(found.contains("is not an allowed LLM host"), "{endpoint}: {found}");
        }
    }
}

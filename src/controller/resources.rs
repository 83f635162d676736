//! Compute resources of worker containers: the operator's defaults (`--worker-requests`,
//! `--worker-limits`), a resource's own `podOverrides.resources` merged over them, and the
//! Kubernetes quantities both are written in. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The worker defaults when the operator is given none: enough for the collector and for the
/// evaluator's baselines on a season; no CPU limit (throttling a batch Job only slows it).
pub const DEFAULT_REQUESTS: &str = "cpu=100m,memory=256Mi";
pub const DEFAULT_LIMITS: &str = "memory=1Gi";

/// The value of a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `64`), in base units. `None`
/// for anything the API server would refuse as a container's request or limit (negative too).
pub fn quantity_value(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-'))).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with(['+', '-']) && number.len() == 1 || number.matches('.').count() > 1 {
        return None;
    }
    if number.starts_with('-') {
        // Valid for the API server in general, refused for compute resources.
        return None;
    }
    if number[1..].contains(['+', '-']) {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            let power: i32 = digits.parse().ok().filter(|_| !digits.is_empty())?;
            10f64.powi(power)
        }
    };
    Some(value * scale)
}

/// Quantities by resource name, as in a container's `requests` and `limits`.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Parse `name=quantity` pairs separated by commas (`cpu=100m,memory=256Mi`), as the operator's
/// options take them. An empty text is no resources.
pub fn parse_list(text: &str) -> Result<ResourceList, String> {
    let mut list = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("expected <resource>=<quantity>, got {pair:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(format!("no resource name in {pair:?}"));
        }
        if quantity_value(value).is_none() {
            return Err(format!("{value:?} (of {name}) is not a Kubernetes quantity such as 100m, 256Mi or 2"));
        }
        if list.insert(name.to_string(), Quantity(value.to_string())).is_some() {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok(list)
}

/// The operator's default worker resources, from its two options; none when both are empty.
pub fn defaults(requests: &ResourceList, limits: &ResourceList) -> Option<ResourceRequirements> {
    let resources = ResourceRequirements {
        requests: Some(requests.clone()).filter(|r| !r.is_empty()),
        limits: Some(limits.clone()).filter(|l| !l.is_empty()),
        claims: None,
    };
    Some(resources).filter(|r| r.requests.is_some() || r.limits.is_some())
}

/// The worker container's resources: the resource's own, each request and limit by name, over
/// the operator's defaults. A default limit below the resource's own request of the same name
/// is raised to that request (the API server refuses a request above its limit).
pub fn merge(defaults: Option<&ResourceRequirements>, own: Option<&ResourceRequirements>) -> ResourceRequirements {
    let pick = |get: fn(&ResourceRequirements) -> &Option<BTreeMap<String, Quantity>>| {
        let mut map = defaults.and_then(|d| get(d).clone()).unwrap_or_default();
        map.extend(own.and_then(|o| get(o).clone()).unwrap_or_default());
        map
    };
    let requests = pick(|r| &r.requests);
    let mut limits = pick(|r| &r.limits);
    let own_limits = own.and_then(|o| o.limits.as_ref());
    for (name, request) in &requests {
        let own_limit = own_limits.is_some_and(|l| l.contains_key(name));
        if let Some(limit) = limits.get_mut(name)
            && !own_limit
            && quantity_value(&request.0) > quantity_value(&limit.0)
        {
            *limit = request.clone();
        }
    }
    ResourceRequirements {
        requests: Some(requests).filter(|r| !r.is_empty()),
        limits: Some(limits).filter(|l| !l.is_empty()),
        claims: own.and_then(|o| o.claims.clone()),
    }
}

/// What is wrong with a resource's own resources, as (field, message): quantities the API
/// server would refuse, and requests above their limit.
pub fn problems(own: &ResourceRequirements) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (part, map) in [("requests", &own.requests), ("limits", &own.limits)] {
        for (name, value) in map.iter().flatten() {
            if quantity_value(&value.0).is_none() {
                found.push((
                    format!("podOverrides.resources.{part}.{name}"),
                    format!(
                        "{:?} is not a Kubernetes quantity such as 100m, 256Mi or 2",
                        super::conditions::bounded(&value.0)
                    ),
                ));
            }
        }
    }
    for (name, request) in own.requests.iter().flatten() {
        let limit = own.limits.as_ref().and_then(|l| l.get(name));
        if let (Some(r), Some(l)) = (quantity_value(&request.0), limit.and_then(|l| quantity_value(&l.0)))
            && r > l
        {
            found.push((
                format!("podOverrides.resources.requests.{name}"),
                format!("{} is above its limit {}", request.0, limit.map(|l| l.0.as_str()).unwrap_or_default()),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Option<ResourceList> {
        Some(parse_list(text).unwrap()).filter(|l| !l.is_empty())
    }

    fn resources(requests: &str, limits: &str) -> ResourceRequirements {
        ResourceRequirements { requests: list(requests), limits: list(limits), claims: None }
    }

    #[test]
    fn quantities_are_read_as_the_api_server_reads_them() {
        for (text, value) in [
            ("100m", 0.1),
            ("2", 2.0),
            ("1.5", 1.5),
            ("256Mi", 256.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("1G", 1e9),
            ("2e3", 2000.0),
            ("1E2", 100.0),
            ("64k", 64e3),
            ("500u", 500e-6),
            ("+3", 3.0),
        ] {
            let read = quantity_value(text).unwrap_or_else(|| panic!("{text} refused"));
            assert!((read - value).abs() <= value.abs() * 1e-12, "{text}: {read} is not {value}");
        }
        for bad in ["", "lots", "1gi", "1.2.3", "--1", "1e", "Mi", "1 Gi x", "1-2", "-1", "-100m"] {
            assert_eq!(quantity_value(bad), None, "{bad:?}");
        }
        assert!(quantity_value("1Gi") > quantity_value("1000Mi"));
    }

    #[test]
    fn option_lists_name_what_is_wrong() {
        assert_eq!(parse_list("").unwrap(), BTreeMap::new());
        assert_eq!(parse_list(" cpu=100m , memory=256Mi ").unwrap().len(), 2);
        assert!(parse_list("cpu").unwrap_err().contains("<resource>=<quantity>"));
        assert!(parse_list("memory=lots").unwrap_err().contains("\"lots\" (of memory)"));
        assert!(parse_list("cpu=1,cpu=2").unwrap_err().contains("cpu is given twice"));
        assert_eq!(defaults(&ResourceList::new(), &ResourceList::new()), None, "no defaults: no resources");
    }

    #[test]
    fn a_resources_own_values_win_name_by_name_over_the_defaults() {
        let defaults = resources(DEFAULT_REQUESTS, DEFAULT_LIMITS);
        let merged = merge(Some(&defaults), None);
        assert_eq!(merged, defaults, "nothing of its own: the defaults");

        let merged = merge(Some(&defaults), Some(&resources("cpu=2", "cpu=4")));
        assert_eq!(merged, resources("cpu=2,memory=256Mi", "cpu=4,memory=1Gi"));
    }

    #[test]
    fn a_default_limit_below_the_resources_own_request_is_raised_to_it() {
        let defaults = resources(DEFAULT_REQUESTS, DEFAULT_LIMITS);
        let merged = merge(Some(&defaults), Some(&resources("memory=4Gi", "")));
        assert_eq!(merged, resources("cpu=100m,memory=4Gi", "memory=4Gi"));
        // Its own limit is its own business (validation reports a request above it).
        let merged = merge(Some(&defaults), Some(&resources("memory=4Gi", "memory=2Gi")));
        assert_eq!(merged.limits, list("memory=2Gi"));
    }

    #[test]
    fn bad_quantities_and_requests_above_their_limit_are_problems() {
        let own = ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("memory".to_string(), Quantity("4Gi".into())),
                ("cpu".to_string(), Quantity("lots".into())),
            ])),
            limits: list("memory=2Gi"),
            claims: None,
        };
        let found = problems(&own);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, "podOverrides.resources.requests.cpu");
        assert!(found[0].1.contains("\"lots\" is not a Kubernetes quantity"));
        assert_eq!(found[1], ("podOverrides.resources.requests.memory".into(), "4Gi is above its limit 2Gi".into()));
        assert!(problems(&resources("cpu=1", "cpu=1")).is_empty());
    }
}

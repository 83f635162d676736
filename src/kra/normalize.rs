//! Field normalisation for KRA rows, whichever format they came in: JSON gives dates as
//! integers and some IDs as numbers, XML gives strings; `-` means unknown; the racecourse comes as
//! a code or a Korean name.

use jiff::civil::{Date, Time};
use serde_json::Value;

use crate::crd::Meet;

/// The text of a field, `None` for null, empty and the `-` sentinel.
pub fn text(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty() && text != "-").then_some(text)
}

/// An identifier as a string: leading zeros kept, a trailing `.0` (from a float) removed.
pub fn id(value: Option<&Value>) -> Option<String> {
    let raw = match value? {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => text(Some(other))?,
    };
    let trimmed = raw.strip_suffix(".0").unwrap_or(&raw);
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// An integer field; `None` for the sentinels and for text that is not a number.
pub fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        other => {
            let t = text(Some(other))?;
            t.parse::<i64>().ok().or_else(|| t.parse::<f64>().ok().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        }
    }
}

/// A decimal field.
pub fn float(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        other => text(Some(other))?.replace(',', "").parse().ok(),
    }
}

/// A date given as `20250523` (integer or string) or `2025-05-23`.
pub fn date(value: Option<&Value>) -> Option<Date> {
    let raw = text(value)?;
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 8 {
        return None;
    }
    Date::strptime("%Y%m%d", &digits).ok()
}

/// The racecourse from its code (1, 2, 3) or its Korean name.
pub fn meet(value: Option<&Value>) -> Option<Meet> {
    match text(value)?.as_str() {
        "1" | "서울" => Some(Meet::Seoul),
        "2" | "제주" => Some(Meet::Jeju),
        "3" | "부산" | "부경" | "부산경남" => Some(Meet::Busan),
        _ => None,
    }
}

/// A scheduled start time: `HHMM` (integer or string; a 3-digit value lacks its leading zero) or
/// an ISO-8601 timestamp such as `2025-05-03T10:35:00+09:00`.
pub fn start_time(value: Option<&Value>) -> Option<Time> {
    let raw = text(value)?;
    if let Some((_, clock)) = raw.split_once('T') {
        let hhmm: String = clock.chars().take(5).filter(char::is_ascii_digit).collect();
        return parse_hhmm(&hhmm);
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        3 => parse_hhmm(&format!("0{digits}")),
        4 => parse_hhmm(&digits),
        _ => None,
    }
}

fn parse_hhmm(hhmm: &str) -> Option<Time> {
    let hour: i8 = hhmm.get(..2)?.parse().ok()?;
    let minute: i8 = hhmm.get(2..4)?.parse().ok()?;
    Time::new(hour, minute, 0, 0).ok()
}

/// Body weight and its change since the last race from `"511(+2)"`.
pub fn body_weight(value: Option<&Value>) -> (Option<i64>, Option<i64>) {
    let Some(raw) = text(value) else { return (None, None) };
    let (weight, rest) = raw.split_once('(').unwrap_or((raw.as_str(), ""));
    let delta = rest.trim_end_matches(')').trim();
    (weight.trim().parse().ok(), delta.trim_start_matches('+').parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_keep_leading_zeros_and_lose_float_tails() {
        assert_eq!(id(Some(&json!("0051228"))), Some("0051228".into()));
        assert_eq!(id(Some(&json!(118011))), Some("118011".into()));
        assert_eq!(id(Some(&json!(118011.0))), Some("118011".into()));
        assert_eq!(id(Some(&json!("070180.0"))), Some("070180".into()));
        assert_eq!(id(Some(&json!("-"))), None);
        assert_eq!(id(Some(&json!(""))), None);
        assert_eq!(id(None), None);
    }

    #[test]
    fn dates_arrive_as_integers_or_strings() {
        let day = Date::new(2025, 5, 23).unwrap();
        assert_eq!(date(Some(&json!(20250523))), Some(day));
        assert_eq!(date(Some(&json!("20250523"))), Some(day));
        assert_eq!(date(Some(&json!("2025-05-23"))), Some(day));
        assert_eq!(date(Some(&json!("-"))), None);
        assert_eq!(date(Some(&json!(20250230))), None, "not a calendar date");
    }

    #[test]
    fn the_meet_comes_as_a_code_or_a_korean_name() {
        for (value, expected) in [
            (json!(1), Meet::Seoul),
            (json!("1"), Meet::Seoul),
            (json!("서울"), Meet::Seoul),
            (json!(2), Meet::Jeju),
            (json!("제주"), Meet::Jeju),
            (json!(3), Meet::Busan),
            (json!("부경"), Meet::Busan),
            (json!("부산"), Meet::Busan),
            (json!("부산경남"), Meet::Busan),
        ] {
            assert_eq!(meet(Some(&value)), Some(expected), "{value}");
        }
        assert_eq!(meet(Some(&json!("광명"))), None);
    }

    #[test]
    fn sentinels_and_numbers() {
        assert_eq!(int(Some(&json!("-"))), None);
        assert_eq!(int(Some(&json!("14"))), Some(14));
        assert_eq!(int(Some(&json!(14.0))), Some(14));
        assert_eq!(float(Some(&json!("62.4"))), Some(62.4));
        assert_eq!(float(Some(&json!("30,000"))), Some(30000.0));
        assert_eq!(text(Some(&json!(" 건조 (2%) "))), Some("건조 (2%)".into()));
    }

    #[test]
    fn start_times_in_both_formats() {
        let t = |h, m| Some(Time::new(h, m, 0, 0).unwrap());
        assert_eq!(start_time(Some(&json!(1035))), t(10, 35));
        assert_eq!(start_time(Some(&json!(935))), t(9, 35), "three digits lack the leading zero");
        assert_eq!(start_time(Some(&json!("1650"))), t(16, 50));
        assert_eq!(start_time(Some(&json!("2025-05-03T10:35:00+09:00"))), t(10, 35));
        assert_eq!(start_time(Some(&json!("2561"))), None);
    }

    #[test]
    fn body_weight_and_its_change() {
        assert_eq!(body_weight(Some(&json!("511(+2)"))), (Some(511), Some(2)));
        assert_eq!(body_weight(Some(&json!("470(-12)"))), (Some(470), Some(-12)));
        assert_eq!(body_weight(Some(&json!("498(0)"))), (Some(498), Some(0)));
        assert_eq!(body_weight(Some(&json!("502"))), (Some(502), None));
        assert_eq!(body_weight(Some(&json!("-"))), (None, None));
    }
}

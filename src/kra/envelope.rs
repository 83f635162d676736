//! The KRA (data.go.kr) response envelope as it really arrives, and the classification of every
//! way a response can fail. Pure: bytes in, a [`Page`] or an [`ApiFailure`] out.
//!
//! ```text
//! response.header.resultCode   "00" = success
//! response.body.items.item     a list | one object | absent, "" or null when there are no rows
//! response.body.numOfRows, pageNo, totalCount
//! ```
//! The same shape comes as XML, and gateway errors come as an `OpenAPI_ServiceResponse` XML body
//! with HTTP 200 even when JSON was asked for.

use std::time::Duration;

use quick_xml::events::Event;
use serde_json::{Map, Value};

/// One row of an endpoint's `items`, field names as the API spells them.
pub type Row = Map<String, Value>;

/// One page of rows, with the body it was parsed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub rows: Vec<Row>,
    pub body: Vec<u8>,
    pub total_count: Option<u64>,
    pub page_no: Option<u64>,
    pub num_of_rows: Option<u64>,
}

/// Why a call failed, decided from what the API actually returned.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiFailure {
    /// The service key is not accepted (HTTP 401/403, codes 20, 30, 31, 32). Never retried.
    #[error("the KRA API rejected the service key ({code}: {message})")]
    Auth { code: String, message: String },
    /// The daily quota is used up (code 22). Never retried: the run stops and reports it.
    #[error("the KRA API quota is exhausted ({code}: {message})")]
    QuotaExhausted { code: String, message: String },
    /// The request itself is wrong (codes 10, 12, other 4xx). Never retried.
    #[error("the KRA API refused the request ({code}: {message})")]
    InvalidRequest { code: String, message: String },
    /// A service-side error code (01, 99 and codes not known here). Retried.
    #[error("the KRA API reported a service error ({code}: {message})")]
    Service { code: String, message: String },
    /// HTTP 429. Retried after `Retry-After` when given.
    #[error("the KRA API is rate limiting (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 5xx. Retried.
    #[error("the KRA API failed with HTTP {status}")]
    Server { status: u16 },
    /// No answer in time. Retried.
    #[error("the KRA API did not answer in time")]
    Timeout,
    /// The connection failed. Retried.
    #[error("failed to reach the KRA API: {0}")]
    Network(String),
    /// The server's TLS certificate is not trusted (unknown issuer, expired, wrong name). Never
    /// retried, and the run stops: no call to this endpoint can succeed.
    #[error("the KRA API's TLS certificate is not trusted: {0}")]
    Tls(String),
    /// A body that is not the envelope (truncated, not JSON or XML, wrong shape). Retried.
    #[error("the KRA API answered with a malformed body: {0}")]
    Malformed(String),
}

impl ApiFailure {
    /// Whether trying the same call again can help.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ApiFailure::Service { .. }
                | ApiFailure::RateLimited { .. }
                | ApiFailure::Server { .. }
                | ApiFailure::Timeout
                | ApiFailure::Network(_)
                | ApiFailure::Malformed(_)
        )
    }

    /// Whether the whole run must stop: nothing else will succeed with this key today.
    pub fn fatal(&self) -> bool {
        matches!(self, ApiFailure::Auth { .. } | ApiFailure::QuotaExhausted { .. } | ApiFailure::Tls(_))
    }

    /// A fixed, bounded name of the failure class (for summaries and metrics).
    pub fn class(&self) -> &'static str {
        match self {
            ApiFailure::Auth { .. } => "auth",
            ApiFailure::QuotaExhausted { .. } => "quota_exhausted",
            ApiFailure::InvalidRequest { .. } => "invalid_request",
            ApiFailure::Service { .. } => "service_error",
            ApiFailure::RateLimited { .. } => "rate_limited",
            ApiFailure::Server { .. } => "server_error",
            ApiFailure::Timeout => "timeout",
            ApiFailure::Network(_) => "network",
            ApiFailure::Tls(_) => "tls",
            ApiFailure::Malformed(_) => "malformed",
        }
    }

    /// Classify a data.go.kr result code that is not `00`. `03` (no data) is not a failure and
    /// never reaches here.
    pub fn from_code(code: &str, message: &str) -> ApiFailure {
        let (code, message) = (code.to_string(), message.to_string());
        match code.as_str() {
            "20" | "30" | "31" | "32" => ApiFailure::Auth { code, message },
            "22" => ApiFailure::QuotaExhausted { code, message },
            "10" | "12" => ApiFailure::InvalidRequest { code, message },
            _ => ApiFailure::Service { code, message },
        }
    }

    /// Classify an HTTP status other than 200.
    pub fn from_http(status: u16, retry_after: Option<Duration>) -> ApiFailure {
        match status {
            401 | 403 => ApiFailure::Auth { code: format!("HTTP {status}"), message: "unauthorized".into() },
            429 => ApiFailure::RateLimited { retry_after },
            500..=599 => ApiFailure::Server { status },
            _ => ApiFailure::InvalidRequest { code: format!("HTTP {status}"), message: "unexpected status".into() },
        }
    }
}

/// Parse a response body (JSON or XML, decided by its first character) into a page.
pub fn parse(body: &[u8]) -> Result<Page, ApiFailure> {
    let text = decode_text(body);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let document = if trimmed.starts_with('<') {
        xml_to_value(trimmed)?
    } else if trimmed.starts_with('{') {
        serde_json::from_str::<Value>(trimmed).map_err(|e| ApiFailure::Malformed(format!("invalid JSON: {e}")))?
    } else if trimmed.is_empty() {
        return Err(ApiFailure::Malformed("empty body".into()));
    } else {
        return Err(ApiFailure::Malformed("neither JSON nor XML".into()));
    };
    let mut page = envelope_to_page(&document)?;
    page.body = body.to_vec();
    Ok(page)
}

/// UTF-8 first; the KRA gateway has served EUC-KR.
fn decode_text(body: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(body) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => {
            let (text, _, _) = encoding_rs::EUC_KR.decode(body);
            std::borrow::Cow::Owned(text.into_owned())
        }
    }
}

fn scalar_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn count(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn envelope_to_page(document: &Value) -> Result<Page, ApiFailure> {
    if let Some(gateway) = document.get("OpenAPI_ServiceResponse") {
        let header = gateway.get("cmmMsgHeader").unwrap_or(gateway);
        let code = scalar_text(header.get("returnReasonCode"));
        let message = scalar_text(header.get("returnAuthMsg").or_else(|| header.get("errMsg")));
        return Err(ApiFailure::from_code(if code.is_empty() { "99" } else { &code }, &message));
    }
    let response =
        document.get("response").ok_or_else(|| ApiFailure::Malformed("no `response` object in the envelope".into()))?;
    let header = response.get("header");
    let code = scalar_text(header.and_then(|h| h.get("resultCode")));
    // Some answers carry the message under `resultMessage`; the documented key is `resultMsg`.
    let message = scalar_text(header.and_then(|h| h.get("resultMsg").or_else(|| h.get("resultMessage"))));
    let no_data = code == "03";
    if !code.is_empty() && code != "00" && !no_data {
        return Err(ApiFailure::from_code(&code, &message));
    }
    let body = match response.get("body") {
        Some(body @ Value::Object(_)) => body,
        Some(Value::Null) | None if no_data || header.is_some() => return Ok(Page::default()),
        _ => return Err(ApiFailure::Malformed("no `body` object in the envelope".into())),
    };
    let rows = match body.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
        Some(Value::Object(items)) => match items.get("item") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
            Some(Value::Object(row)) => vec![row.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|item| match item {
                    Value::Object(row) => Ok(row.clone()),
                    other => Err(ApiFailure::Malformed(format!("an item is not an object but {}", kind_of(other)))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(ApiFailure::Malformed(format!("`items.item` is {}", kind_of(other)))),
        },
        Some(other) => return Err(ApiFailure::Malformed(format!("`items` is {}", kind_of(other)))),
    };
    Ok(Page {
        rows,
        body: Vec::new(),
        total_count: count(body.get("totalCount")),
        page_no: count(body.get("pageNo")),
        num_of_rows: count(body.get("numOfRows")),
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The value of an XML text node: digits become numbers unless they carry a leading zero (IDs
/// such as `0051228` stay strings), empty text becomes null.
fn xml_scalar(text: &str) -> Value {
    let text = text.trim();
    if text.is_empty() {
        return Value::Null;
    }
    let leading_zero = text.len() > 1 && text.starts_with('0') && !text.starts_with("0.");
    let numeric = text.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && text.chars().any(|c| c.is_ascii_digit())
        && !text[1..].contains('-');
    if numeric && !leading_zero {
        if let Ok(int) = text.parse::<i64>() {
            return Value::from(int);
        }
        if let Ok(float) = text.parse::<f64>() {
            return serde_json::Number::from_f64(float).map(Value::Number).unwrap_or(Value::String(text.into()));
        }
    }
    Value::String(text.to_string())
}

struct XmlNode {
    name: String,
    children: Vec<(String, Value)>,
    text: String,
}

impl XmlNode {
    fn into_value(self) -> Value {
        if self.children.is_empty() {
            return xml_scalar(&self.text);
        }
        let mut object = Map::new();
        for (name, value) in self.children {
            match object.get_mut(&name) {
                // A repeated tag becomes a list.
                Some(Value::Array(list)) => list.push(value),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                }
                None => {
                    object.insert(name, value);
                }
            }
        }
        Value::Object(object)
    }
}

fn xml_to_value(text: &str) -> Result<Value, ApiFailure> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<XmlNode> = vec![XmlNode { name: String::new(), children: Vec::new(), text: String::new() }];
    let malformed = |e: &dyn std::fmt::Display| ApiFailure::Malformed(format!("invalid XML: {e}"));
    loop {
        match reader.read_event().map_err(|e| malformed(&e))? {
            Event::Start(start) => {
                let name = start.local_name().as_ref().to_string();
                stack.push(XmlNode { name, children: Vec::new(), text: String::new() });
            }
            Event::Empty(empty) => {
                let name = empty.local_name().as_ref().to_string();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push((name, Value::Null));
                }
            }
            Event::Text(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t);
                }
            }
            Event::CData(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t);
                }
            }
            Event::GeneralRef(reference) => {
                let name: &str = &reference;
                let resolved = match name {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    other => other
                        .strip_prefix("#x")
                        .map(|hex| u32::from_str_radix(hex, 16))
                        .or_else(|| other.strip_prefix('#').map(str::parse::<u32>))
                        .and_then(Result::ok)
                        .and_then(char::from_u32),
                };
                if let (Some(c), Some(node)) = (resolved, stack.last_mut()) {
                    node.text.push(c);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| ApiFailure::Malformed("invalid XML: unbalanced tags".into()))?;
                let parent =
                    stack.last_mut().ok_or_else(|| ApiFailure::Malformed("invalid XML: unbalanced tags".into()))?;
                let name = node.name.clone();
                parent.children.push((name, node.into_value()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(ApiFailure::Malformed("invalid XML: the document ends inside an element".into()));
    }
    let root = stack.pop().map(XmlNode::into_value).unwrap_or(Value::Null);
    if !root.is_object() {
        return Err(ApiFailure::Malformed("invalid XML: no root element".into()));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_body(items: Value, total: u64) -> Vec<u8> {
        json!({"response": {
            "header": {"resultCode": "00", "resultMsg": "NORMAL SERVICE."},
            "body": {"items": items, "numOfRows": 10, "pageNo": 1, "totalCount": total}
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn item_as_a_list_an_object_or_absent() {
        let list = parse(&json_body(json!({"item": [{"chulNo": 1}, {"chulNo": 2}]}), 2)).unwrap();
        assert_eq!(list.rows.len(), 2);
        assert_eq!((list.total_count, list.page_no, list.num_of_rows), (Some(2), Some(1), Some(10)));
        let single = parse(&json_body(json!({"item": {"hrNo": "0051228"}}), 1)).unwrap();
        assert_eq!(single.rows.len(), 1);
        assert_eq!(single.rows[0]["hrNo"], "0051228");
        for empty in
            [json!(""), json!(null), json!({}), json!({"item": ""}), json!({"item": null}), json!({"item": []})]
        {
            let page = parse(&json_body(empty.clone(), 0)).unwrap();
            assert!(page.rows.is_empty(), "{empty}");
        }
        let no_items = br#"{"response":{"header":{"resultCode":"00"},"body":{"totalCount":0}}}"#;
        assert!(parse(no_items).unwrap().rows.is_empty());
    }

    #[test]
    fn xml_bodies_have_the_same_shape_with_string_typed_values() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><response><header><resultCode>00</resultCode>\
            <resultMsg>NORMAL SERVICE.</resultMsg></header><body><items>\
            <item><chulNo>3</chulNo><hrNo>0049911</hrNo><rcDate>20250524</rcDate><wgHr>488(-3)</wgHr><hrName>바다&amp;별</hrName><ordBigo>-</ordBigo><rcTime>74.1</rcTime><spDate/></item>\
            <item><chulNo>4</chulNo><hrNo>0050002</hrNo><rcDate>20250524</rcDate><wgHr>501(+1)</wgHr><hrName>한강</hrName><ordBigo>-</ordBigo><rcTime>75.0</rcTime><spDate></spDate></item>\
            </items><numOfRows>10</numOfRows><pageNo>1</pageNo><totalCount>2</totalCount></body></response>";
        let page = parse(xml.as_bytes()).unwrap();
        assert_eq!(page.total_count, Some(2));
        let row = &page.rows[0];
        assert_eq!(row["chulNo"], 3);
        assert_eq!(row["hrNo"], "0049911", "a leading zero keeps an ID a string");
        assert_eq!(row["rcDate"], 20250524);
        assert_eq!(row["hrName"], "바다&별");
        assert_eq!(row["rcTime"], 74.1);
        assert_eq!(row["spDate"], Value::Null);
        assert_eq!(page.rows[1]["wgHr"], "501(+1)");
        let one = "<response><header><resultCode>00</resultCode></header><body><items><item><jkNo>080405</jkNo></item></items><totalCount>1</totalCount></body></response>";
        assert_eq!(parse(one.as_bytes()).unwrap().rows[0]["jkNo"], "080405");
        let none = "<response><header><resultCode>00</resultCode></header><body><items/><totalCount>0</totalCount></body></response>";
        assert!(parse(none.as_bytes()).unwrap().rows.is_empty());
    }

    #[test]
    fn euc_kr_bodies_are_decoded() {
        let (encoded, _, _) = encoding_rs::EUC_KR.encode("<response><header><resultCode>00</resultCode></header><body><items><item><meet>서울</meet></item></items></body></response>");
        assert!(std::str::from_utf8(&encoded).is_err());
        assert_eq!(parse(&encoded).unwrap().rows[0]["meet"], "서울");
    }

    #[test]
    fn business_errors_with_http_200_are_classified() {
        let error = |code: &str| {
            let body = json!({"response": {"header": {"resultCode": code, "resultMsg": "SOMETHING"}}});
            parse(body.to_string().as_bytes()).unwrap_err()
        };
        assert!(matches!(error("30"), ApiFailure::Auth { .. }));
        assert!(matches!(error("22"), ApiFailure::QuotaExhausted { .. }));
        assert!(matches!(error("10"), ApiFailure::InvalidRequest { .. }));
        assert!(matches!(error("99"), ApiFailure::Service { .. }));
        let no_data = json!({"response": {"header": {"resultCode": "03", "resultMsg": "NODATA_ERROR"}}});
        assert!(parse(no_data.to_string().as_bytes()).unwrap().rows.is_empty(), "no data is an empty answer");
        let named = json!({"response": {"header": {"resultCode": "99", "resultMessage": "from the other key"}}});
        assert_eq!(
            parse(named.to_string().as_bytes()).unwrap_err(),
            ApiFailure::Service { code: "99".into(), message: "from the other key".into() }
        );
    }

    #[test]
    fn gateway_errors_arrive_as_xml_even_when_json_was_asked_for() {
        let gateway = |code: &str, auth: &str| {
            format!(
                "<OpenAPI_ServiceResponse><cmmMsgHeader><errMsg>SERVICE ERROR</errMsg><returnAuthMsg>{auth}</returnAuthMsg>\
                 <returnReasonCode>{code}</returnReasonCode></cmmMsgHeader></OpenAPI_ServiceResponse>"
            )
        };
        let auth = parse(gateway("30", "SERVICE_KEY_IS_NOT_REGISTERED_ERROR").as_bytes()).unwrap_err();
        assert_eq!(auth, ApiFailure::Auth { code: "30".into(), message: "SERVICE_KEY_IS_NOT_REGISTERED_ERROR".into() });
        assert!(auth.fatal() && !auth.retryable());
        let quota = parse(gateway("22", "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR").as_bytes()).unwrap_err();
        assert!(matches!(quota, ApiFailure::QuotaExhausted { .. }) && quota.fatal() && !quota.retryable());
    }

    #[test]
    fn malformed_bodies_are_named_not_guessed() {
        for (body, expected) in [
            (&b""[..], "empty body"),
            (b"<html>Bad Gateway", "invalid XML"),
            (b"{\"response\": {\"header\": {\"resultCode\": \"00\"}, \"body\": {\"items\": {\"item\": [{\"chulNo\": 1}", "invalid JSON"),
            (b"Service Unavailable", "neither JSON nor XML"),
            (b"{\"result\": []}", "no `response` object"),
            (b"{\"response\": {\"header\": {\"resultCode\": \"00\"}, \"body\": {\"items\": {\"item\": 7}}}}", "`items.item` is a number"),
        ] {
            match parse(body) {
                Err(ApiFailure::Malformed(detail)) => assert!(detail.contains(expected), "{detail:?} lacks {expected:?}"),
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn http_statuses_are_classified() {
        assert!(matches!(ApiFailure::from_http(401, None), ApiFailure::Auth { .. }));
        assert!(matches!(ApiFailure::from_http(403, None), ApiFailure::Auth { .. }));
        let limited = ApiFailure::from_http(429, Some(Duration::from_secs(3)));
        assert_eq!(limited, ApiFailure::RateLimited { retry_after: Some(Duration::from_secs(3)) });
        assert!(limited.retryable());
        assert!(ApiFailure::from_http(503, None).retryable());
        assert!(!ApiFailure::from_http(404, None).retryable());
    }
}

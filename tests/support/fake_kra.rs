//! A fake KRA (data.go.kr B551015) API for the collector tests: it serves the rows it is given
//! in the real envelope (JSON, or XML for endpoints switched to it), pages them by `pageNo` and
//! `numOfRows` (with an optional cap on the page size, as the real service has), and injects
//! faults on request: an HTTP status (with `Retry-After`), a raw body (business and gateway
//! errors), a delay, or a body cut off mid-way. Raw TCP, one request per connection, so that a
//! truncated body really is truncated.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Fault {
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    Body(String),
    Delay(Duration),
    /// Announce the whole body, send half of it, close.
    Truncate,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub raw_line: String,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Rows served when every (parameter, value) pair matches the request.
type Served = (Vec<(String, String)>, Vec<Value>);

/// Rows computed per request (a generated season), consulted before the rows given with
/// [`FakeKra::rows`]; and control requests to `/_fake/...`, for a fake world that moves on.
pub trait Source: Send + Sync {
    /// The rows for a request to `path` (`API214_1/RaceDetailResult_1`), or None for the given rows.
    fn rows(&self, path: &str, query: &[(String, String)]) -> Option<Vec<Value>>;
    /// The answer to `/_fake/<path>`, or None for 404.
    fn control(&self, _path: &str, _query: &[(String, String)]) -> Option<String> {
        None
    }
}

#[derive(Default)]
struct State {
    /// Per endpoint path.
    data: HashMap<String, Vec<Served>>,
    faults: HashMap<String, Vec<Fault>>,
    xml: Vec<String>,
    page_cap: Option<usize>,
    /// Requests for a page after the first that are served page 1 instead (a server that ignores
    /// `pageNo`).
    page_one_again: usize,
    requests: Vec<Recorded>,
    source: Option<Arc<dyn Source>>,
}

#[derive(Clone)]
pub struct FakeKra {
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

impl FakeKra {
    pub async fn start() -> FakeKra {
        Self::start_on("127.0.0.1:0").await
    }

    /// Listen on `addr` (the kind end-to-end job serves the fake to cluster pods from the host).
    pub async fn start_on(addr: &str) -> FakeKra {
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("failed to listen on {addr}: {e}"));
        let base_url = format!("http://{}/B551015", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let server_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                tokio::spawn(serve(socket, server_state.clone()));
            }
        });
        FakeKra { base_url, state }
    }

    /// Serve `rows` at `path` (for example `API214_1/RaceDetailResult_1`) for requests whose
    /// parameters include every pair of `matching`.
    pub fn rows(&self, path: &str, matching: &[(&str, &str)], rows: Vec<Value>) {
        let matching = matching.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.state.lock().unwrap().data.entry(path.to_string()).or_default().push((matching, rows));
    }

    /// Serve `rows` instead of whatever was served for exactly these parameters.
    pub fn replace_rows(&self, path: &str, matching: &[(&str, &str)], rows: Vec<Value>) {
        let matching: Vec<(String, String)> = matching.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut state = self.state.lock().unwrap();
        let served = state.data.entry(path.to_string()).or_default();
        served.retain(|(m, _)| *m != matching);
        served.push((matching, rows));
    }

    /// Answer requests from `source` first.
    pub fn source(&self, source: Arc<dyn Source>) {
        self.state.lock().unwrap().source = Some(source);
    }

    /// Faults for the next requests to `path`, in order.
    pub fn faults(&self, path: &str, faults: Vec<Fault>) {
        self.state.lock().unwrap().faults.entry(path.to_string()).or_default().extend(faults);
    }

    pub fn serve_xml(&self, path: &str) {
        self.state.lock().unwrap().xml.push(path.to_string());
    }

    /// Serve at most this many rows per page, whatever `numOfRows` asks.
    pub fn cap_page_size(&self, rows: usize) {
        self.state.lock().unwrap().page_cap = Some(rows);
    }

    /// Answer the next `requests` requests for a page after the first with page 1, as a server
    /// that ignores `pageNo` does.
    pub fn repeat_page_one(&self, requests: usize) {
        self.state.lock().unwrap().page_one_again = requests;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

fn decode(component: &str) -> String {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

async fn serve(mut socket: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buffer).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let control = path.strip_prefix("/_fake/").map(String::from);
    let path = path.trim_start_matches("/B551015/").to_string();
    let query: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();

    if let Some(control) = control {
        let source = state.lock().unwrap().source.clone();
        let answer = source.and_then(|s| s.control(&control, &query));
        let (status, body) = match answer {
            Some(body) => (200, body),
            None => (404, format!("no control request {control}")),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(body.as_bytes()).await;
        let _ = socket.shutdown().await;
        return;
    }
    let (fault, response) = {
        let mut state = state.lock().unwrap();
        state.requests.push(Recorded { path: path.clone(), query: query.clone(), raw_line: line });
        let fault = state.faults.get_mut(&path).and_then(|f| (!f.is_empty()).then(|| f.remove(0)));
        let mut page_no: usize =
            query.iter().find(|(k, _)| k == "pageNo").and_then(|(_, v)| v.parse().ok()).unwrap_or(1);
        if page_no > 1 && state.page_one_again > 0 {
            state.page_one_again -= 1;
            page_no = 1;
        }
        let asked: usize = query.iter().find(|(k, _)| k == "numOfRows").and_then(|(_, v)| v.parse().ok()).unwrap_or(10);
        let size = state.page_cap.map_or(asked, |cap| asked.min(cap));
        let generated = state.source.as_ref().and_then(|s| s.rows(&path, &query));
        let rows: Vec<Value> = generated.unwrap_or_else(|| {
            state
                .data
                .get(&path)
                .into_iter()
                .flatten()
                .filter(|(matching, _)| matching.iter().all(|m| query.contains(m)))
                .flat_map(|(_, rows)| rows.clone())
                .collect()
        });
        let total = rows.len();
        let page: Vec<Value> = rows.into_iter().skip((page_no - 1) * size).take(size).collect();
        let body = if state.xml.contains(&path) {
            xml_envelope(&page, page_no, size, total)
        } else {
            json_envelope(&page, page_no, size, total)
        };
        (fault, body)
    };

    let (status, extra_header, body, truncate) = match fault {
        None => (200, String::new(), response, false),
        Some(Fault::Delay(wait)) => {
            tokio::time::sleep(wait).await;
            (200, String::new(), response, false)
        }
        Some(Fault::Status { code, retry_after }) => {
            let header = retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
            (code, header, format!("HTTP {code}"), false)
        }
        Some(Fault::Body(body)) => (200, String::new(), body, false),
        Some(Fault::Truncate) => (200, String::new(), response, true),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n{extra_header}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let bytes = body.as_bytes();
    let sent = if truncate { &bytes[..bytes.len() / 2] } else { bytes };
    let _ = socket.write_all(sent).await;
    let _ = socket.shutdown().await;
}

pub fn json_envelope(rows: &[Value], page_no: usize, size: usize, total: usize) -> String {
    let items = match rows.len() {
        0 => json!(""),
        1 => json!({"item": rows[0]}),
        _ => json!({"item": rows}),
    };
    json!({"response": {
        "header": {"resultCode": "00", "resultMsg": "NORMAL SERVICE."},
        "body": {"items": items, "numOfRows": size, "pageNo": page_no, "totalCount": total}
    }})
    .to_string()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn xml_envelope(rows: &[Value], page_no: usize, size: usize, total: usize) -> String {
    let mut items = String::new();
    for row in rows {
        items.push_str("<item>");
        for (key, value) in row.as_object().into_iter().flatten() {
            let text = match value {
                Value::String(s) => xml_escape(s),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            items.push_str(&format!("<{key}>{text}</{key}>"));
        }
        items.push_str("</item>");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><response><header><resultCode>00</resultCode>\
         <resultMsg>NORMAL SERVICE.</resultMsg></header><body><items>{items}</items><numOfRows>{size}</numOfRows>\
         <pageNo>{page_no}</pageNo><totalCount>{total}</totalCount></body></response>"
    )
}

pub fn business_error(code: &str, message: &str) -> String {
    json!({"response": {"header": {"resultCode": code, "resultMsg": message}}}).to_string()
}

pub fn gateway_error(code: &str, message: &str) -> String {
    format!(
        "<OpenAPI_ServiceResponse><cmmMsgHeader><errMsg>SERVICE ERROR</errMsg><returnAuthMsg>{message}</returnAuthMsg>\
         <returnReasonCode>{code}</returnReasonCode></cmmMsgHeader></OpenAPI_ServiceResponse>"
    )
}

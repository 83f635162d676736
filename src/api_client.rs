//! The operator's Kubernetes client: kube's, configured as kube's own (`Config::infer`: the
//! in-cluster service account, or `KUBECONFIG`), and with `--api-http2` one that speaks HTTP/2
//! when the API server offers it (as client-go does): for every request but the watches
//! (`requests`), or for the watches too (`all`).
//!
//! Over HTTP/1.1 a burst of reconciles opens a connection for each write in flight (dozens,
//! each with its TLS state and buffers, on both ends); over HTTP/2 they are streams of one
//! connection. A connection that stops answering is found by HTTP/2 pings (every 30 s, 15 s to
//! answer, as client-go's defaults), since nothing else would time out a quiet watch.
//! Without `--api-http2`, and with a configured proxy, the client is kube's own HTTP/1.1 stack;
//! with `requests`, the watches still are (each holds a connection of its own, as without
//! HTTP/2). `all` is not the default: at 10,000 runs its watches restarted far more often and
//! the operator spent more CPU and latency than over HTTP/1.1 (docs/benchmarks.md, step 7).

use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use kube::{Client, Config};
use tower::ServiceBuilder;
use tower::util::BoxService;

/// kube's client stack, as its builder makes it from a configuration.
type GenericService = BoxService<http::Request<Body>, http::Response<Box<DynBody>>, tower::BoxError>;

/// How long an idle HTTP/2 connection waits between pings, and for each answer.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// The HTTP versions the client offers the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocols {
    /// HTTP/1.1 only: kube's own client stack.
    #[value(name = "off", alias = "false")]
    Http1,
    /// Watches over kube's own HTTP/1.1 stack (a connection each, as without HTTP/2); every
    /// other request offers HTTP/2, so the requests of a burst of reconciles share one
    /// connection instead of opening one each.
    #[value(name = "requests")]
    Http2ForRequests,
    /// HTTP/2 when the server offers it (by ALPN) for every request and watch, HTTP/1.1 otherwise.
    #[value(name = "all", alias = "true")]
    Http2OrHttp1,
}

/// The client for `config`, offering `protocols`.
pub fn build(config: Config, protocols: Protocols) -> anyhow::Result<Client> {
    // A proxy is kube's business: its stack tunnels through it, this one would not.
    if protocols == Protocols::Http1 || config.proxy_url.is_some() {
        return Client::try_from(config).context("failed to build the Kubernetes client");
    }
    let default_namespace = config.default_namespace.clone();
    let http2 = http2_stack(&config)?;
    if protocols == Protocols::Http2ForRequests {
        let watches = ClientBuilder::try_from(config).context("failed to build the Kubernetes client")?;
        let split = SplitLayer { requests: std::sync::Mutex::new(Some(http2)) };
        return Ok(watches.with_layer(&split).build());
    }
    Ok(ClientBuilder::new(http2, default_namespace).build())
}

/// The service stack kube builds from `config` (base URL, retries, authentication, extra
/// headers) over a connection that offers HTTP/2.
fn http2_stack(config: &Config) -> anyhow::Result<GenericService> {
    let tls = config.rustls_client_config().context("failed to build the client's TLS configuration")?;
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(config.connect_timeout);
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    let connector = match &config.tls_server_name {
        Some(name) => {
            let name = name.clone().try_into().context("the kubeconfig's tls-server-name is not a valid name")?;
            connector.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => connector,
    };
    let connector = connector.enable_http1().enable_http2().wrap_connector(tcp);
    let http: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(PING_EVERY)
            .http2_keep_alive_timeout(PING_ANSWER_WITHIN)
            .http2_keep_alive_while_idle(true)
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer().context("failed to set up the client's authentication")?)
        .layer(config.extra_headers_layer().context("failed to set up the client's extra headers")?)
        .map_err(tower::BoxError::from)
        .map_response(|response: http::Response<hyper::body::Incoming>| {
            response.map(|body| Box::new(body.map_err(tower::BoxError::from)) as Box<DynBody>)
        })
        .service(http);
    Ok(BoxService::new(service))
}

/// Watches to kube's own HTTP/1.1 stack, every other request to `requests`.
struct Split {
    watches: GenericService,
    requests: GenericService,
}

/// The layer that puts [`Split`] in place of kube's stack, which it takes for the watches.
struct SplitLayer {
    /// Taken when kube's builder applies the layer (once, as the client is built).
    requests: std::sync::Mutex<Option<GenericService>>,
}

impl tower::Layer<GenericService> for SplitLayer {
    type Service = Split;

    fn layer(&self, watches: GenericService) -> Split {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner()).take();
        Split { watches, requests: requests.expect("the split client's layer is applied once") }
    }
}

/// Whether a request is a watch (`watch=true` or `watch=1` in its query, as kube sends it).
fn is_watch<B>(request: &http::Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| matches!(pair.split_once('='), Some(("watch", "true" | "1")))))
}

impl tower::Service<http::Request<Body>> for Split {
    type Response = http::Response<Box<DynBody>>;
    type Error = tower::BoxError;
    type Future = <GenericService as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Ready when both are: a request's kind is known only when it is called.
        let watches = self.watches.poll_ready(cx)?;
        let requests = self.requests.poll_ready(cx)?;
        if watches.is_ready() && requests.is_ready() {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if is_watch(&request) { self.watches.call(request) } else { self.requests.call(request) }
    }
}

/// The client for the inferred configuration (in-cluster, or `KUBECONFIG`).
pub async fn connect(protocols: Protocols) -> anyhow::Result<Client> {
    let config = Config::infer().await.context("failed to find the Kubernetes client's configuration")?;
    build(config, protocols)
}

#[cfg(test)]
mod tests {
    use super::is_watch;

    fn request(uri: &str) -> http::Request<()> {
        http::Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn only_a_watch_parameter_makes_a_watch() {
        assert!(is_watch(&request("/api/v1/namespaces/a/pods?labelSelector=x&watch=true&resourceVersion=7")));
        assert!(is_watch(&request("/api/v1/pods?watch=1")));
        // A LIST, or a parameter that only contains the word, is a request like any other.
        assert!(!is_watch(&request("/api/v1/pods?allowWatchBookmarks=true&limit=500")));
        assert!(!is_watch(&request("/api/v1/pods?watch=false")));
        assert!(!is_watch(&request("/apis/kra.dev/v1alpha1/namespaces/a/krajobs/watch-me/status")));
    }
}

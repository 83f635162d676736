//! The operator's client of the Kubernetes API: kube's, configured as kube's own
//! (`Config::infer`: the in-cluster service account, or `KUBECONFIG`), and with `--api-http2`
//! (off by default) one that speaks HTTP/2 when the API server offers it (as client-go does), so
//! every request and watch shares one TLS connection instead of one connection per request in
//! flight.
//!
//! Over HTTP/1.1 a burst of reconciles opens a connection for each write in flight (dozens,
//! each with its TLS state and buffers, on both ends); over HTTP/2 they are streams of one
//! connection. A connection that stops answering is found by HTTP/2 pings (every 30 s, 15 s to
//! answer, as client-go's defaults), since nothing else would time out a quiet watch.
//! Without `--api-http2`, and with a configured proxy, the client is kube's own HTTP/1.1 stack.
//! HTTP/2 is not the default yet: at 10,000 runs its watches restarted far more often and the
//! operator spent more CPU and latency than over HTTP/1.1 (docs/benchmarks.md, step 7).

use std::time::Duration;

use anyhow::Context;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::ServiceBuilder;

/// How long an idle HTTP/2 connection waits between pings, and for each answer.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// The HTTP versions the client offers the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/2 when the server offers it (by ALPN), HTTP/1.1 otherwise.
    Http2OrHttp1,
    /// HTTP/1.1 only: kube's own client stack.
    Http1,
}

/// The client for `config`, offering `protocols`.
pub fn build(config: Config, protocols: Protocols) -> anyhow::Result<Client> {
    // A proxy is kube's business: its stack tunnels through it, this one would not.
    if protocols == Protocols::Http1 || config.proxy_url.is_some() {
        return Client::try_from(config).context("failed to build the Kubernetes client");
    }
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
        .service(http);
    Ok(ClientBuilder::new(service, config.default_namespace).build())
}

/// The client for the inferred configuration (in-cluster, or `KUBECONFIG`).
pub async fn connect(protocols: Protocols) -> anyhow::Result<Client> {
    let config = Config::infer().await.context("failed to find the Kubernetes client's configuration")?;
    build(config, protocols)
}

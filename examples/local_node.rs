//! A local node for a control plane without kubelets (`scripts/control-plane`): it registers a
//! Node, binds this project's worker Pods and runs each as a local process of the binaries built
//! here, reporting their status as a kubelet would. What it does and does not do is in
//! tests/support/local_node.rs, which the end-to-end tests run in-process. `scripts/demo` runs it:
//!
//!   KUBECONFIG=… cargo run --example local_node -- --image ghcr.io/kra-dev/kra-operator:0.1.0 \
//!     --bin-dir target/debug --dir /tmp/kra-node

#[path = "../tests/support/local_node.rs"]
mod local_node;

use std::path::PathBuf;

use clap::Parser;

/// Run this project's worker Pods as local processes.
#[derive(Parser)]
struct Args {
    /// Name of the Node to register.
    #[arg(long, default_value = "kra-local-node")]
    name: String,
    /// Only Pods of this namespace (default: every namespace).
    #[arg(long)]
    namespace: Option<String>,
    /// An image the node runs (repeatable): the operator's worker image.
    #[arg(long = "image", required = true)]
    images: Vec<String>,
    /// Where kra-collector and kra-evaluator are.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// Where Pod folders, volumes and logs go.
    #[arg(long)]
    dir: PathBuf,
    /// Run the Pods as podman containers of this local image (from `scripts/image`) instead of
    /// local processes.
    #[arg(long)]
    podman_image: Option<String>,
    /// The Pods it binds and runs.
    #[arg(long, default_value = "app.kubernetes.io/managed-by=kra-operator")]
    selector: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kra_operator::telemetry::install_crypto_provider();
    let client = kube::Client::try_default().await?;
    let binaries = ["kra-collector", "kra-evaluator"]
        .iter()
        .map(|name| (name.to_string(), std::path::absolute(args.bin_dir.join(name)).unwrap_or_default()))
        .collect();
    let config = local_node::NodeConfig {
        name: args.name.clone(),
        namespace: args.namespace,
        selector: args.selector,
        images: args.images,
        binaries,
        dir: std::path::absolute(&args.dir)?,
        base_env: vec![("KRA_LOG_FORMAT".into(), "json".into())],
        podman_image: args.podman_image,
    };
    let _node = local_node::LocalNode::start(client, config).await?;
    eprintln!("local node {} running Pods as local processes", args.name);
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

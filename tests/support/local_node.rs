//! A local node for a control plane without kubelets: it registers a Node, binds the Pods that
//! match its selector (no scheduler runs), and runs each Pod's container as a local process, as
//! far as a process can stand in for a container:
//!
//! - the image must be one the node knows; the container's `command[0]` is looked up among the
//!   binaries it was given (`kra-collector`, `kra-evaluator`). An unknown image leaves the Pod
//!   Pending with the waiting reason `ErrImagePull`; an unknown command fails it with `StartError`.
//! - `env` is resolved as the kubelet does (`value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef`,
//!   and `envFrom`); a missing Secret or ConfigMap gives `CreateContainerConfigError` until it exists.
//! - emptyDir, ConfigMap and Secret volumes become folders under the node's directory; every
//!   argument and environment value that names a mount path (or the termination-message path) is
//!   rewritten to the local folder (or file), since a process cannot have its own mount table.
//! - phase, container state, exit code, reason and the termination message (with
//!   `FallbackToLogsOnError`) are reported through `pods/status`, as a kubelet reports them.
//! - a Pod being deleted gets SIGTERM, then SIGKILL after its grace period (at most 5 s here), its
//!   final status, and then the kubelet's deletion with grace period 0.
//!
//! With `podman_image` set it runs each Pod as a podman container of that image instead (the
//! image `scripts/image` builds), with the Pod's user, read-only root, capabilities and
//! no-new-privileges, its resolved environment, and its volumes and termination-message file
//! mounted where the Pod says: then the real image runs under the real Pod spec.
//!
//! What it does not do: isolation as a process (user, read-only root and capabilities apply only
//! to containers), resource limits, probes, init containers, more than one container, restarts.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Node, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const MANAGER: &str = "kra-local-node";
/// Longest wait between SIGTERM and SIGKILL, whatever the Pod's grace period says.
const MAX_GRACE: Duration = Duration::from_secs(5);
/// What the kubelet keeps of a termination message, and of the log tail it falls back to.
const MESSAGE_LIMIT: usize = 4096;
const LOG_FALLBACK_LIMIT: usize = 2048;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    /// Only Pods in this namespace (None: every namespace).
    pub namespace: Option<String>,
    /// A label selector: the Pods this node binds and runs.
    pub selector: String,
    /// Images it can run. Every one of them maps commands to `binaries`.
    pub images: Vec<String>,
    /// Command name → local executable.
    pub binaries: Vec<(String, PathBuf)>,
    /// Where Pod folders, volumes and logs go.
    pub dir: PathBuf,
    /// Environment every process gets before the Pod's own (for example `KRA_LOG_FORMAT`).
    pub base_env: Vec<(String, String)>,
    /// Run each Pod as a podman container of this local image (built by `scripts/image`), under
    /// the Pod's security context; None: as a local process of `binaries`.
    pub podman_image: Option<String>,
}

/// podman's global options as it works on these machines (../shared/docs/toolchain.md): vfs
/// storage, runc, cgroupfs.
pub const PODMAN_GLOBAL: &[&str] = &["--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"];
/// `podman run` options every test container gets: host networking (what the tests serve
/// listens on loopback) and open-file and process limits under the machine's hard limit.
pub const PODMAN_HOST: &[&str] =
    &["--network", "host", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"];

pub fn podman() -> tokio::process::Command {
    let mut command = tokio::process::Command::new("podman");
    command.args(PODMAN_GLOBAL);
    command
}

/// Whether podman can run `image` here (a container that prints the binary's version).
pub async fn podman_runs(image: &str) -> bool {
    let probe = podman().args(["run", "--rm"]).args(PODMAN_HOST).args([image, "--version"]).output().await;
    matches!(probe, Ok(output) if output.status.success())
}

pub struct LocalNode {
    pub name: String,
    pub dir: PathBuf,
    containers: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        // Aborting the agent drops its JoinSet, whose tasks drop their children (kill_on_drop);
        // containers outlive their podman client, so they are removed by this node's label.
        self.task.abort();
        if self.containers {
            let filter = format!("label={NODE_LABEL}={}", self.name);
            let listed = std::process::Command::new("podman")
                .args(PODMAN_GLOBAL)
                .args(["ps", "--all", "--quiet", "--filter", &filter])
                .output();
            let ids: Vec<String> = listed
                .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            if !ids.is_empty() {
                let _ = std::process::Command::new("podman")
                    .args(PODMAN_GLOBAL)
                    .args(["rm", "--force", "--time", "0"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// The label of every container a node starts: its name.
const NODE_LABEL: &str = "kra.dev/local-node";

impl LocalNode {
    /// Register the Node and start binding and running Pods.
    pub async fn start(client: Client, config: NodeConfig) -> anyhow::Result<LocalNode> {
        std::fs::create_dir_all(&config.dir)?;
        register(&client, &config.name).await?;
        let name = config.name.clone();
        let dir = config.dir.clone();
        let containers = config.podman_image.is_some();
        let task = tokio::spawn(agent(client, Arc::new(config)));
        Ok(LocalNode { name, dir, containers, task })
    }

    /// Whether it runs Pods as podman containers (else as local processes).
    pub fn runs_containers(&self) -> bool {
        self.containers
    }

    /// The combined stdout and stderr of a Pod's container, as far as it has run here.
    pub fn logs(&self, namespace: &str, pod: &str) -> String {
        std::fs::read_to_string(pod_dir(&self.dir, namespace, pod).join("container.log")).unwrap_or_default()
    }
}

async fn register(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                               "kra.dev/local-node": "true"}},
    });
    nodes
        .patch(name, &params, &Patch::Apply(&node))
        .await
        .map_err(|e| anyhow::anyhow!("registering Node {name}: {e}"))?;
    let now = now();
    let status = json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "LocalNodeReady",
                            "message": "kra local node: runs Pods as local processes",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                         "containerRuntimeVersion": "local-process://1", "kubeletVersion": MANAGER,
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH},
        },
    });
    nodes
        .patch_status(name, &params, &Patch::Apply(&status))
        .await
        .map_err(|e| anyhow::anyhow!("reporting Node {name} Ready: {e}"))?;
    Ok(())
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn pod_dir(root: &Path, namespace: &str, pod: &str) -> PathBuf {
    root.join(format!("{namespace}_{pod}"))
}

async fn agent(client: Client, config: Arc<NodeConfig>) {
    let pods: Api<Pod> = match &config.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let mut events =
        watcher::watcher(pods, watcher::Config::default().labels(&config.selector)).default_backoff().boxed();
    let mut running: HashMap<String, Arc<Notify>> = HashMap::new();
    let mut bound: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut tasks = JoinSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            Some(uid) = done_rx.recv() => {
                running.remove(&uid);
                finished.insert(uid);
                continue;
            }
        };
        let pod = match event {
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => pod,
            Some(Ok(Event::Delete(pod))) => {
                if let Some(stop) = pod.metadata.uid.as_ref().and_then(|uid| running.get(uid)) {
                    stop.notify_one();
                }
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                eprintln!("local node {}: watching pods: {error}", config.name);
                continue;
            }
            None => return,
        };
        let (Some(uid), Some(name), Some(namespace)) =
            (pod.metadata.uid.clone(), pod.metadata.name.clone(), pod.metadata.namespace.clone())
        else {
            continue;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match spec.node_name.as_deref() {
            None | Some("") => {
                if pod.metadata.deletion_timestamp.is_none()
                    && bound.insert(uid.clone())
                    && let Err(error) = bind(&api, &name, &config.name).await
                {
                    eprintln!("local node {}: binding pod {namespace}/{name}: {error}", config.name);
                    bound.remove(&uid);
                }
            }
            Some(node) if node == config.name => {
                if pod.metadata.deletion_timestamp.is_some() {
                    match running.get(&uid) {
                        Some(stop) => stop.notify_one(),
                        // Stopped (or never started): the kubelet's last word is the deletion.
                        None => {
                            if finished.insert(uid.clone()) || !terminal(&pod) {
                                let _ = api
                                    .delete(
                                        &name,
                                        &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
                                    )
                                    .await;
                            }
                        }
                    }
                } else if !running.contains_key(&uid) && !finished.contains(&uid) && !terminal(&pod) {
                    let stop = Arc::new(Notify::new());
                    running.insert(uid.clone(), stop.clone());
                    let (client, config, done) = (client.clone(), config.clone(), done_tx.clone());
                    tasks.spawn(async move {
                        let deleting = run_pod(&client, &config, &pod, &stop).await;
                        let api: Api<Pod> = Api::namespaced(client, &namespace);
                        if deleting {
                            let _ = api
                                .delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                                .await;
                        }
                        let _ = done.send(uid);
                    });
                }
            }
            Some(_) => {}
        }
        while tasks.try_join_next().is_some() {}
    }
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

async fn bind(api: &Api<Pod>, pod: &str, node: &str) -> kube::Result<()> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let _: Value = api.create_subresource("binding", pod, &PostParams::default(), &binding).await?;
    Ok(())
}

async fn patch_status(client: &Client, pod: &Pod, status: Value) {
    let api: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
    let name = pod.metadata.name.clone().unwrap_or_default();
    if let Err(error) =
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(json!({"status": status}))).await
    {
        eprintln!("local node: reporting status of pod {name}: {error}");
    }
}

fn waiting(container: &str, image: &str, reason: &str, message: &str) -> Value {
    json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
                       {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [{"name": container, "image": image, "imageID": "", "ready": false, "restartCount": 0,
                               "started": false, "state": {"waiting": {"reason": reason, "message": message}}}],
    })
}

/// Why a container cannot be created yet (kubelet's waiting reasons).
struct NotYet {
    reason: &'static str,
    message: String,
}

/// Run the Pod's container to its end (or until `stop`), reporting each state. Returns whether
/// the Pod was being deleted.
async fn run_pod(client: &Client, config: &NodeConfig, pod: &Pod, stop: &Notify) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(container) = spec.containers.first().cloned() else { return false };
    let image = container.image.clone().unwrap_or_default();
    if !config.images.contains(&image) {
        let message = format!(
            "local node {}: image \"{image}\" is not one it runs (it runs {}: the locally built {})",
            config.name,
            config.images.join(", "),
            config.binaries.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(" and "),
        );
        patch_status(client, pod, waiting(&container.name, &image, "ErrImagePull", &message)).await;
        stop.notified().await;
        return true;
    }
    let dir = pod_dir(&config.dir, &namespace, &name);
    let prepared = loop {
        match prepare(client, config, pod, &container, &dir).await {
            Ok(prepared) => break prepared,
            Err(not_yet) => {
                patch_status(client, pod, waiting(&container.name, &image, not_yet.reason, &not_yet.message)).await;
                tokio::select! {
                    _ = stop.notified() => return true,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let started_at = now();
    let container_id = std::sync::Mutex::new(String::new());
    let terminated = |code: i32, reason: &str, message: String| {
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        let id = container_id.lock().unwrap().clone();
        json!({
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": started_at,
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Initialized", "status": "True"},
                           {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
                           {"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [{"name": container.name, "image": image, "imageID": "", "ready": false,
                                   "restartCount": 0, "started": false, "containerID": id,
                                   "state": {"terminated": {"exitCode": code, "reason": reason, "message": message,
                                                            "startedAt": started_at, "finishedAt": now()}}}],
        })
    };
    let log_path = dir.join("container.log");
    let log = match std::fs::File::create(&log_path).and_then(|f| Ok((f.try_clone()?, f))) {
        Ok(files) => files,
        Err(error) => {
            patch_status(client, pod, terminated(128, "StartError", format!("creating the log file: {error}"))).await;
            return false;
        }
    };
    let container_name = format!("kra-{}-{name}", config.name);
    let mut command = match &config.podman_image {
        Some(local_image) => {
            match podman_command(config, pod, &container, &prepared, local_image, &container_name, &dir) {
                Ok(command) => command,
                Err(message) => {
                    patch_status(client, pod, terminated(128, "StartError", message)).await;
                    return false;
                }
            }
        }
        None => {
            let Some(binary) = container
                .command
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|command| config.binaries.iter().find(|(name, _)| name == command))
                .map(|(_, path)| path.clone())
            else {
                let message =
                    format!("exec: {:?}: executable file not found on local node {}", container.command, config.name);
                patch_status(client, pod, terminated(128, "StartError", message)).await;
                return false;
            };
            let mut command = tokio::process::Command::new(&binary);
            command
                .args(&prepared.args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(config.base_env.iter().cloned())
                .envs(prepared.env.iter().cloned())
                .current_dir(&prepared.working_dir);
            command
        }
    };
    command.stdin(std::process::Stdio::null()).stdout(log.0).stderr(log.1).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            patch_status(client, pod, terminated(128, "StartError", format!("starting the container: {error}"))).await;
            return false;
        }
    };
    let id = match &config.podman_image {
        Some(_) => format!("podman://{container_name}"),
        None => format!("process://{}", child.id().unwrap_or(0)),
    };
    *container_id.lock().unwrap() = id.clone();
    patch_status(
        client,
        pod,
        json!({
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": started_at,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                           {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": container.name, "image": image, "imageID": "", "ready": true,
                                   "restartCount": 0, "started": true, "containerID": id,
                                   "state": {"running": {"startedAt": started_at}}}],
        }),
    )
    .await;

    let mut deleting = false;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = stop.notified() => {
            deleting = true;
            let grace = spec.termination_grace_period_seconds.map_or(MAX_GRACE, |s| Duration::from_secs(s.max(0) as u64)).min(MAX_GRACE);
            if config.podman_image.is_some() {
                // SIGTERM to the container, SIGKILL after the grace period.
                let seconds = grace.as_secs().to_string();
                let _ = podman().args(["stop", "--time", &seconds, &container_name]).output().await;
            } else if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        }
    };
    let code = match status {
        Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(9)),
        Err(_) => 137,
    };
    let mut message = std::fs::read(&prepared.termination_log).unwrap_or_default();
    message.truncate(MESSAGE_LIMIT);
    let mut message = String::from_utf8_lossy(&message).into_owned();
    if message.is_empty()
        && code != 0
        && container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        message = log_tail(&log_path);
    }
    let reason = if code == 0 { "Completed" } else { "Error" };
    let _ = std::fs::remove_file(dir.join("container.env"));
    patch_status(client, pod, terminated(code, reason, message)).await;
    deleting
}

/// `podman run` of the Pod's container: the Pod's user, read-only root, capabilities and
/// privilege escalation, its environment (in a file only root can read, removed when the Pod
/// ends: never on a command line), its volumes mounted where the Pod mounts them, and host networking
/// (everything the tests serve listens on loopback).
fn podman_command(
    config: &NodeConfig,
    pod: &Pod,
    container: &Container,
    prepared: &Prepared,
    local_image: &str,
    container_name: &str,
    dir: &Path,
) -> Result<tokio::process::Command, String> {
    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let security = container.security_context.clone().unwrap_or_default();
    let mut command = podman();
    command.args(["run", "--rm", "--name", container_name, "--label", &format!("{NODE_LABEL}={}", config.name)]);
    command.args(PODMAN_HOST);
    let user = security.run_as_user.or(pod_security.run_as_user);
    let group = security.run_as_group.or(pod_security.run_as_group);
    match (user, group) {
        (Some(user), Some(group)) => drop(command.args(["--user", &format!("{user}:{group}")])),
        (Some(user), None) => drop(command.args(["--user", &user.to_string()])),
        _ => {}
    }
    if security.read_only_root_filesystem == Some(true) {
        command.args(["--read-only", "--read-only-tmpfs=false"]);
    }
    if let Some(capabilities) = &security.capabilities {
        for dropped in capabilities.drop.iter().flatten() {
            command.args(["--cap-drop", dropped]);
        }
        for added in capabilities.add.iter().flatten() {
            command.args(["--cap-add", added]);
        }
    }
    if security.allow_privilege_escalation == Some(false) {
        command.args(["--security-opt", "no-new-privileges"]);
    }
    let env_file = dir.join("container.env");
    let mut lines = String::new();
    for (name, value) in config.base_env.iter().chain(&prepared.env) {
        if value.contains('\n') {
            return Err(format!("env {name}: a value with a line break cannot be passed to podman here"));
        }
        lines.push_str(&format!("{name}={value}\n"));
    }
    std::fs::write(&env_file, lines).map_err(|e| format!("writing the environment file: {e}"))?;
    std::fs::set_permissions(&env_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("protecting the environment file: {e}"))?;
    command.arg("--env-file").arg(&env_file);
    for (path, local, read_only) in &prepared.mounts {
        command.args(["--volume", &format!("{}:{path}{}", local.display(), if *read_only { ":ro" } else { "" })]);
    }
    if let Some(entrypoint) = container.command.as_ref().filter(|c| !c.is_empty()) {
        command.args(["--entrypoint", &serde_json::to_string(entrypoint).unwrap_or_default()]);
    }
    if let Some(working_dir) = &container.working_dir {
        command.args(["--workdir", working_dir]);
    }
    command.arg(local_image).args(&prepared.args);
    Ok(command)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(LOG_FALLBACK_LIMIT);
    let start = (start..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
    tail[start..].to_string()
}

struct Prepared {
    args: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: PathBuf,
    termination_log: PathBuf,
    /// (container path, local path, read-only), for a container runtime.
    mounts: Vec<(String, PathBuf, bool)>,
}

/// Volumes, environment and arguments, with every container path mapped to the Pod's folder.
async fn prepare(
    client: &Client,
    config: &NodeConfig,
    pod: &Pod,
    container: &Container,
    dir: &Path,
) -> Result<Prepared, NotYet> {
    let containers = config.podman_image.is_some();
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let io = |what: String| {
        move |e: std::io::Error| NotYet { reason: "CreateContainerError", message: format!("{what}: {e}") }
    };
    let volumes_dir = dir.join("volumes");
    let mut volume_dirs: HashMap<String, PathBuf> = HashMap::new();
    for volume in spec.volumes.clone().unwrap_or_default() {
        let local = volumes_dir.join(&volume.name);
        std::fs::create_dir_all(&local).map_err(io(format!("creating volume {}", volume.name)))?;
        let files: Option<BTreeMap<String, Vec<u8>>> = if let Some(source) = &volume.config_map {
            let data = config_map(client, &namespace, &source.name).await?;
            select_items(data, source.items.as_deref())
        } else if let Some(source) = &volume.secret {
            let secret_name = source.secret_name.clone().unwrap_or_default();
            let data = secret(client, &namespace, &secret_name).await?;
            select_items(data, source.items.as_deref())
        } else if volume.empty_dir.is_some() {
            None
        } else {
            return Err(NotYet {
                reason: "CreateContainerConfigError",
                message: format!(
                    "volume {}: only emptyDir, configMap and secret volumes run on a local node",
                    volume.name
                ),
            });
        };
        for (path, bytes) in files.into_iter().flatten() {
            let file = local.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
            }
            std::fs::write(&file, bytes).map_err(io(format!("writing {}", file.display())))?;
        }
        volume_dirs.insert(volume.name.clone(), local);
    }
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut container_mounts: Vec<(String, PathBuf, bool)> = Vec::new();
    let read_only_volume = |name: &str| {
        spec.volumes.iter().flatten().any(|v| v.name == name && (v.config_map.is_some() || v.secret.is_some()))
    };
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let Some(local) = volume_dirs.get(&mount.name) else {
            return Err(NotYet {
                reason: "CreateContainerConfigError",
                message: format!("no volume {} for mount {}", mount.name, mount.mount_path),
            });
        };
        let local = match mount.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => local.join(sub),
            _ => local.clone(),
        };
        let read_only = mount.read_only == Some(true) || read_only_volume(&mount.name);
        if containers && !read_only {
            // An emptyDir is writable by the Pod's user, whoever it is.
            std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .map_err(io(format!("opening volume {} to the Pod's user", mount.name)))?;
        }
        container_mounts.push((mount.mount_path.clone(), local.clone(), read_only));
        mounts.push((mount.mount_path.trim_end_matches('/').to_string(), local));
    }
    let termination_path = container.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
    let termination_log = dir.join("termination-log");
    std::fs::write(&termination_log, b"").map_err(io("creating the termination-message file".into()))?;
    if containers {
        std::fs::set_permissions(&termination_log, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(io("opening the termination-message file to the Pod's user".into()))?;
    }
    container_mounts.push((termination_path.clone(), termination_log.clone(), false));
    mounts.push((termination_path, termination_log.clone()));
    // Longest mount path first, so /tmp/a maps before /tmp.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    // A container has the mounts themselves: nothing is rewritten.
    let local = |value: &str| if containers { value.to_string() } else { map_paths(value, &mounts) };

    let mut env: Vec<(String, String)> = Vec::new();
    for source in container.env_from.clone().unwrap_or_default() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let data = if let Some(reference) = &source.config_map_ref {
            optional(config_map(client, &namespace, &reference.name).await, reference.optional)?
        } else if let Some(reference) = &source.secret_ref {
            optional(secret(client, &namespace, &reference.name).await, reference.optional)?
        } else {
            BTreeMap::new()
        };
        for (key, value) in data {
            env.push((format!("{prefix}{key}"), local(&String::from_utf8_lossy(&value))));
        }
    }
    for variable in container.env.clone().unwrap_or_default() {
        if let Some(value) = env_value(client, pod, &namespace, &variable).await? {
            let value = expand(&value, &env);
            env.retain(|(name, _)| *name != variable.name);
            env.push((variable.name.clone(), local(&value)));
        }
    }
    let args = container.args.clone().unwrap_or_default().iter().map(|a| local(&expand(a, &env))).collect();
    let working_dir = dir.join("root");
    std::fs::create_dir_all(&working_dir).map_err(io("creating the working directory".into()))?;
    Ok(Prepared { args, env, working_dir, termination_log, mounts: container_mounts })
}

/// `value`, with a leading container path (alone, or after `=`) replaced by its local folder.
fn map_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let map_one = |text: &str| -> Option<String> {
        mounts.iter().find_map(|(mount, local)| {
            let rest = text.strip_prefix(mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", local.display()))
        })
    };
    if let Some(mapped) = map_one(value) {
        return mapped;
    }
    if let Some((key, rest)) = value.split_once('=')
        && let Some(mapped) = map_one(rest)
    {
        return format!("{key}={mapped}");
    }
    value.to_string()
}

/// The kubelet's `$(NAME)` expansion from variables defined earlier; `$$(NAME)` escapes it.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = escaped;
        } else if let Some(inner) =
            after.strip_prefix('(').and_then(|s| s.find(')').map(|end| (&s[..end], &s[end + 1..])))
        {
            match env.iter().rev().find(|(name, _)| name == inner.0) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({})", inner.0)),
            }
            rest = inner.1;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn optional(
    found: Result<BTreeMap<String, Vec<u8>>, NotYet>,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, NotYet> {
    match found {
        Err(_) if optional == Some(true) => Ok(BTreeMap::new()),
        other => other,
    }
}

fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Option<BTreeMap<String, Vec<u8>>> {
    Some(match items {
        None => data,
        Some(items) => {
            items.iter().filter_map(|item| data.get(&item.key).map(|v| (item.path.clone(), v.clone()))).collect()
        }
    })
}

async fn config_map(client: &Client, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, NotYet> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(found)) => {
            let mut data: BTreeMap<String, Vec<u8>> =
                found.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(found.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            Ok(data)
        }
        Ok(None) => {
            Err(NotYet { reason: "CreateContainerConfigError", message: format!("configmap \"{name}\" not found") })
        }
        Err(error) => Err(NotYet {
            reason: "CreateContainerConfigError",
            message: format!("reading configmap \"{name}\": {error}"),
        }),
    }
}

async fn secret(client: &Client, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>, NotYet> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(found)) => {
            let mut data: BTreeMap<String, Vec<u8>> =
                found.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            data.extend(found.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            Ok(data)
        }
        Ok(None) => {
            Err(NotYet { reason: "CreateContainerConfigError", message: format!("secret \"{name}\" not found") })
        }
        Err(error) => {
            Err(NotYet { reason: "CreateContainerConfigError", message: format!("reading secret \"{name}\": {error}") })
        }
    }
}

async fn env_value(client: &Client, pod: &Pod, namespace: &str, variable: &EnvVar) -> Result<Option<String>, NotYet> {
    if let Some(value) = &variable.value {
        return Ok(Some(value.clone()));
    }
    let Some(from) = &variable.value_from else { return Ok(Some(String::new())) };
    let keyed = |data: BTreeMap<String, Vec<u8>>, kind: &str, name: &str, key: &str, optional: Option<bool>| match data
        .get(key)
    {
        Some(value) => Ok(Some(String::from_utf8_lossy(value).into_owned())),
        None if optional == Some(true) => Ok(None),
        None => Err(NotYet {
            reason: "CreateContainerConfigError",
            message: format!("couldn't find key {key} in {kind} {namespace}/{name}"),
        }),
    };
    if let Some(selector) = &from.secret_key_ref {
        let data = optional(secret(client, namespace, &selector.name).await, selector.optional)?;
        return keyed(data, "Secret", &selector.name, &selector.key, selector.optional);
    }
    if let Some(selector) = &from.config_map_key_ref {
        let data = optional(config_map(client, namespace, &selector.name).await, selector.optional)?;
        return keyed(data, "ConfigMap", &selector.name, &selector.key, selector.optional);
    }
    if let Some(field) = &from.field_ref {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let path = field.field_path.as_str();
        let label = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            map.as_ref().and_then(|m| m.get(key)).cloned()
        };
        let value = match path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta.namespace.clone(),
            "metadata.uid" => meta.uid.clone(),
            "spec.nodeName" => spec.node_name.clone(),
            "spec.serviceAccountName" => spec.service_account_name.clone(),
            "status.podIP" | "status.hostIP" => Some("127.0.0.1".into()),
            _ => {
                label(&meta.labels, "metadata.labels['").or_else(|| label(&meta.annotations, "metadata.annotations['"))
            }
        };
        return Ok(Some(value.unwrap_or_default()));
    }
    Err(NotYet {
        reason: "CreateContainerConfigError",
        message: format!("env {}: resourceFieldRef does not run on a local node", variable.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_map_to_local_folders_longest_first() {
        let mounts = vec![
            ("/tmp/cache".to_string(), PathBuf::from("/n/cache")),
            ("/tmp".to_string(), PathBuf::from("/n/tmp")),
            ("/dev/termination-log".to_string(), PathBuf::from("/n/log")),
        ];
        assert_eq!(map_paths("/tmp/cache/x", &mounts), "/n/cache/x");
        assert_eq!(map_paths("/tmp/x", &mounts), "/n/tmp/x");
        assert_eq!(map_paths("/tmpfoo", &mounts), "/tmpfoo");
        assert_eq!(map_paths("--out=/tmp", &mounts), "--out=/n/tmp");
        assert_eq!(map_paths("/dev/termination-log", &mounts), "/n/log");
        assert_eq!(map_paths("sqlite:///tmp/x", &mounts), "sqlite:///tmp/x");
    }

    #[test]
    fn variables_expand_as_the_kubelet_expands_them() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$5", &env), "$5");
    }
}

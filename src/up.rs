//! `sintra up`: a whole group on this machine with one command.
//!
//! First run: deals the keys into `--data DIR` (the `sintra keygen` code path, in-process).
//! Every run: starts one `sintra node --config DIR/server-<i>/config.toml` child per server
//! (this very executable), each logging to `DIR/server-<i>/node.log`, waits until every
//! gateway answers `GET /health`, prints the endpoints and a client command to paste, and then
//! supervises: on Ctrl-C or SIGTERM it sends SIGTERM to every child, waits
//! [`STOP_GRACE`], and kills what is left; if a child exits on its own, it says so and stops
//! the others. A later run with the same DIR reuses the keys and the stores, so the group
//! resumes where it stopped.
//!
//! The children run in their own process group, so a Ctrl-C in the terminal reaches only
//! `sintra up`, which then stops them in order (a child must not see the signal twice, nor
//! exit before the supervisor knows it is stopping).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use sintra_config::{GroupFile, LoadedServer};
use sintra_crypto::ServerId;

use crate::keygen;

/// Servers of a new group when `--servers` is not given.
const SERVERS_DEFAULT: u16 = 4;
/// How long the children have to stop after SIGTERM before they are killed. A replica's own
/// shutdown is bounded by a few seconds (tasks, then the store).
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often the supervisor looks at its children and at the signals.
const POLL: Duration = Duration::from_millis(100);
/// Timeout of one `GET /health` while waiting for readiness.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of a child's log shown when it failed.
const LOG_TAIL_LINES: usize = 12;
/// Bytes read from the end of a log for that tail, at most.
const LOG_TAIL_BYTES_MAX: u64 = 64 << 10;
/// The streaming port is the gateway port plus this (the replica's default).
const STREAM_PORT_OFFSET: u16 = sintra_node::STREAM_PORT_OFFSET;

/// Arguments of `sintra up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of servers. A new group has 4 by default; an existing DIR keeps its own count
    /// (and a different --servers is refused).
    #[arg(long)]
    servers: Option<u16>,
    /// Where the keys, configurations, stores and logs live.
    #[arg(long, default_value = "sintra-data")]
    data: PathBuf,
    /// Ports of a new group: server i's links listen on BASE + i, its gateway on BASE + 1000 + i,
    /// its streaming interface on BASE + 2000 + i. Default 7000 (links 7001.., gateways 8001..).
    /// Only used when the keys are generated; an existing DIR keeps its ports.
    #[arg(long)]
    port_base: Option<u16>,
    /// Seconds to wait for every server to answer GET /health.
    #[arg(long, default_value_t = 60)]
    ready_timeout: u64,
}

/// Set once SIGINT or SIGTERM arrived.
#[derive(Clone)]
struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Catches SIGINT and SIGTERM from now on (a small runtime thread waits for them).
    fn install() -> anyhow::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the signal thread")?;
        let signals = runtime.block_on(async { Signals::new() })?;
        let set = flag.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || runtime.block_on(signals.wait(set)))
            .context("starting the signal thread")?;
        Ok(Self(flag))
    }

    fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The signal streams (registered in [`StopFlag::install`], so no signal is missed between
/// installing and waiting).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> anyhow::Result<Self> {
        Ok(Self {})
    }

    #[cfg(unix)]
    async fn wait(mut self, flag: Arc<AtomicBool>) {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        }
    }

    #[cfg(not(unix))]
    async fn wait(self, flag: Arc<AtomicBool>) {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// One child replica.
struct Replica {
    id: ServerId,
    gateway: String,
    links: String,
    stream: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// The children; dropping it stops them (also on an error path).
struct Cluster {
    replicas: Vec<Replica>,
}

/// Runs `sintra up`.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Before anything is written or started: a Ctrl-C during key generation then waits for
    // the files to be complete instead of leaving half a group behind.
    let stop = StopFlag::install()?;
    let servers = prepare(&args)?;
    if stop.raised() {
        eprintln!(
            "sintra up: interrupted; the keys are in {}",
            args.data.display()
        );
        return Ok(ExitCode::from(130));
    }
    let n = servers.len();
    let mut cluster = Cluster::start(&servers)?;
    println!(
        "sintra up: started {n} servers; waiting for them to answer (at most {} s)",
        args.ready_timeout
    );
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout);
    match cluster.wait_ready(deadline, &stop) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("sintra up: interrupted; stopping");
            cluster.stop();
            return Ok(ExitCode::from(130));
        }
        Err(error) => {
            eprintln!("sintra up: {error:#}");
            cluster.stop();
            return Ok(ExitCode::FAILURE);
        }
    }
    print_ready(&args.data, &servers[0], &cluster);
    let code = match cluster.supervise(&stop) {
        None => {
            println!("sintra up: stopping {n} servers");
            ExitCode::SUCCESS
        }
        Some((id, status, log)) => {
            eprintln!(
                "sintra up: {id} exited unexpectedly ({status}); its log: {}",
                log.display()
            );
            eprint!("{}", log_tail(&log));
            eprintln!("sintra up: stopping the others");
            ExitCode::FAILURE
        }
    };
    cluster.stop();
    Ok(code)
}

/// Deals the group on the first run; loads and checks every server's files on every run.
fn prepare(args: &UpArgs) -> anyhow::Result<Vec<LoadedServer>> {
    let group_path = args.data.join("group.toml");
    if group_path.exists() {
        let group = GroupFile::load(&group_path)?;
        let n = group.keys.parameters.servers;
        if let Some(servers) = args.servers
            && servers != n
        {
            bail!(
                "{} holds a group of {n} servers, not {servers}; drop --servers to resume it, or \
                 choose another --data (or remove {}) for a new group",
                args.data.display(),
                args.data.display()
            );
        }
        if let Some(base) = args.port_base {
            let expected = format!("127.0.0.1:{}", u32::from(base) + 1);
            if group.servers.first().map(|entry| &entry.endpoint) != Some(&expected) {
                bail!(
                    "--port-base {base}: {} already holds a group on other ports (server 1's \
                     links at {}); drop --port-base to resume it",
                    args.data.display(),
                    group
                        .servers
                        .first()
                        .map_or("?", |entry| entry.endpoint.as_str())
                );
            }
        }
        println!(
            "sintra up: resuming the group of {n} servers in {} (keys and stores are reused)",
            args.data.display()
        );
    } else {
        let servers = args.servers.unwrap_or(SERVERS_DEFAULT);
        println!(
            "sintra up: first run: generating the keys of {servers} servers into {} \
             (the RSA-2048 service key takes a few seconds)",
            args.data.display()
        );
        let mut keygen_args = keygen::KeygenArgs::local(servers, args.data.clone());
        if let Some(base) = args.port_base {
            keygen_args = keygen_args.with_port_base(base)?;
        }
        keygen::run(keygen_args)?;
    }
    let group = GroupFile::load(&group_path)?;
    ServerId::all(group.keys.parameters.servers)
        .map(|id| {
            let config = args
                .data
                .join(format!("server-{}", id.get()))
                .join("config.toml");
            sintra_config::load_server(&config).with_context(|| format!("{id}"))
        })
        .collect()
}

/// Refuses an address some other process already listens on, naming the server and the role.
fn check_free(id: ServerId, role: &str, addr: SocketAddr) -> anyhow::Result<()> {
    TcpListener::bind(addr).map(drop).with_context(|| {
        format!(
            "{id}'s {role} address {addr} is in use: is another `sintra up` or `sintra node` \
             running with these ports?"
        )
    })
}

fn stream_addr(gateway_listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let port = gateway_listen
        .port()
        .checked_add(STREAM_PORT_OFFSET)
        .context("the streaming port would exceed 65535")?;
    Ok(SocketAddr::new(gateway_listen.ip(), port))
}

impl Cluster {
    /// Starts one child per server, after checking that none of their ports is taken.
    fn start(servers: &[LoadedServer]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the sintra executable")?;
        for server in servers {
            let id = server.config.id;
            check_free(id, "links", server.config.listen)?;
            check_free(id, "gateway", server.config.gateway_listen)?;
            check_free(id, "streaming", stream_addr(server.config.gateway_listen)?)?;
        }
        let mut cluster = Self {
            replicas: Vec::with_capacity(servers.len()),
        };
        for server in servers {
            let id = server.config.id;
            let dir = server
                .config
                .keys
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let log = dir.join("node.log");
            let config = dir.join("config.toml");
            let child = spawn_node(&exe, &config, &log)
                .with_context(|| format!("starting {id} (log {})", log.display()))?;
            cluster.replicas.push(Replica {
                id,
                gateway: server.me.gateway.clone(),
                links: server.me.endpoint.clone(),
                stream: stream_addr(server.config.gateway_listen)?,
                log,
                child: Some(child),
            });
        }
        Ok(cluster)
    }

    /// Waits until every server answers `GET /health` as itself. `Ok(false)` when a signal
    /// arrived first; an error names a server that exited or never answered, and its log.
    fn wait_ready(&mut self, deadline: Instant, stop: &StopFlag) -> anyhow::Result<bool> {
        let mut ready = vec![false; self.replicas.len()];
        while ready.iter().any(|ready| !ready) {
            if stop.raised() {
                return Ok(false);
            }
            for (replica, ready) in self.replicas.iter_mut().zip(ready.iter_mut()) {
                if *ready {
                    continue;
                }
                if let Some(status) = replica.exited() {
                    bail!(
                        "{} exited during start-up ({status}); its log: {}\n{}",
                        replica.id,
                        replica.log.display(),
                        log_tail(&replica.log)
                    );
                }
                if let Some(health) = health(&replica.gateway, replica.id) {
                    println!("  {} ready: {health}", replica.id);
                    *ready = true;
                }
            }
            if Instant::now() >= deadline {
                let late: Vec<String> = self
                    .replicas
                    .iter()
                    .zip(&ready)
                    .filter(|(_, ready)| !**ready)
                    .map(|(replica, _)| {
                        format!(
                            "{} (GET http://{}/health; log {})",
                            replica.id,
                            replica.gateway,
                            replica.log.display()
                        )
                    })
                    .collect();
                bail!("not ready in time: {}", late.join(", "));
            }
            thread::sleep(POLL);
        }
        Ok(true)
    }

    /// Runs until a signal (`None`) or until a child exits on its own (its id, status, log).
    fn supervise(&mut self, stop: &StopFlag) -> Option<(ServerId, ExitStatus, PathBuf)> {
        loop {
            if stop.raised() {
                return None;
            }
            for replica in &mut self.replicas {
                if let Some(status) = replica.exited() {
                    return Some((replica.id, status, replica.log.clone()));
                }
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM to every running child, up to [`STOP_GRACE`] for them to exit, then SIGKILL.
    fn stop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(child) = &replica.child {
                terminate(child);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let mut running = 0;
            for replica in &mut self.replicas {
                let Some(child) = &mut replica.child else {
                    continue;
                };
                match child.try_wait() {
                    Ok(Some(status)) => {
                        println!("  {} stopped ({status})", replica.id);
                        replica.child = None;
                    }
                    Ok(None) => running += 1,
                    Err(_) => replica.child = None,
                }
            }
            if running == 0 {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL);
        }
        for replica in &mut self.replicas {
            if let Some(mut child) = replica.child.take() {
                eprintln!(
                    "  {} did not stop within {} s: killed",
                    replica.id,
                    STOP_GRACE.as_secs()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.replicas.iter().any(|replica| replica.child.is_some()) {
            self.stop();
        }
    }
}

impl Replica {
    /// The child's exit status once it has exited (it is then forgotten).
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }
}

fn spawn_node(exe: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "--- sintra up: starting {} ---", config.display())?;
    let stderr = file.try_clone()?;
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        // The log is a file: no colour codes in it.
        .env("NO_COLOR", "1");
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    Ok(command.spawn()?)
}

/// Asks a child to stop gracefully (SIGTERM; elsewhere the caller's kill stops it). Also used by
/// `sintra bench cluster` for its replicas.
pub(crate) fn terminate(child: &Child) {
    #[cfg(unix)]
    {
        let pid = rustix::process::Pid::from_child(child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    #[cfg(not(unix))]
    {
        let _ = child;
    }
}

/// `height h, round r` when the gateway at `gateway` answers `/health` as server `id`.
fn health(gateway: &str, id: ServerId) -> Option<String> {
    let response = sintra_client::http::get(gateway, "/health", HEALTH_TIMEOUT).ok()?;
    if response.status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    if json.get("server")?.as_u64()? != u64::from(id.get()) {
        return None;
    }
    let field = |name: &str| json.get(name).and_then(serde_json::Value::as_u64);
    Some(format!(
        "height {}, round {}",
        field("height").unwrap_or(0),
        field("round").unwrap_or(0)
    ))
}

/// The last lines of a log, indented; empty if it cannot be read.
fn log_tail(log: &Path) -> String {
    let Ok(file) = File::open(log) else {
        return String::new();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    if length > LOG_TAIL_BYTES_MAX {
        use std::io::{Seek, SeekFrom};
        let _ = reader.seek(SeekFrom::Start(length - LOG_TAIL_BYTES_MAX));
    }
    let lines: Vec<String> = reader
        .split(b'\n')
        .map_while(Result::ok)
        .map(|line| String::from_utf8_lossy(&line).into_owned())
        .collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..]
        .iter()
        .map(|line| format!("    | {line}\n"))
        .collect()
}

fn print_ready(data: &Path, first: &LoadedServer, cluster: &Cluster) {
    let n = cluster.replicas.len();
    let t = first.group.keys.parameters.faults;
    println!(
        "sintra up: {n} servers ready (n = {n}, t = {t}) in {}",
        data.display()
    );
    for replica in &cluster.replicas {
        println!(
            "  {}  gateway http://{}  stream {}  links {}  log {}",
            replica.id,
            replica.gateway,
            replica.stream,
            replica.links,
            replica.log.display()
        );
    }
    let group = data.join("group.toml");
    println!("service key: {}", data.join("service-key.pem").display());
    println!();
    println!("Try:");
    println!(
        "  sintra client --group {} put hello world",
        group.display()
    );
    println!("  sintra client --group {} get hello", group.display());
    println!(
        "  curl -s -X POST 'http://{}/v1/kv/put?key=hello' --data world",
        first.me.gateway
    );
    let gateway = &first.me.gateway;
    let at = |file: &str| data.join(file).display().to_string();
    println!("The notary (RFC 3161), with stock tools:");
    println!(
        "  openssl ts -query -data FILE -sha256 -cert -out q.tsq && curl -s --data-binary @q.tsq \\\n    -H 'Content-Type: application/timestamp-query' http://{gateway}/tsa -o r.tsr && \\\n    openssl ts -verify -in r.tsr -queryfile q.tsq -CAfile {}",
        at("tsa-certificate.pem")
    );
    println!(
        "  sintra client --group {} notarize FILE [--encrypt]",
        group.display()
    );
    println!(
        "The certification authority (names under the policy in {}):",
        at("ca-policy.toml")
    );
    println!(
        "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem \\\n    -subj /CN=www.sintra.internal -out r.csr && curl -s --data-binary @r.csr \\\n    -H \"Authorization: Bearer $(cat {})\" http://{gateway}/ca/certificates -o c.pem && \\\n    openssl verify -CAfile {} c.pem",
        at("ca-admin-token"),
        at("ca-certificate.pem")
    );
    println!("The directory:");
    println!(
        "  sintra client --group {} dir-put alice alice@example.org --owner-key alice.key",
        group.display()
    );
    println!(
        "  sintra client --group {} dir-get alice --out alice.json",
        group.display()
    );
    println!(
        "  sintra client --group {} dir-get alice --local   # one server, as of the last checkpoint",
        group.display()
    );
    println!();
    println!(
        "Ctrl-C stops every server; the keys and the stores stay in {} and `sintra up` resumes them.",
        data.display()
    );
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("    | line 99\n"), "{tail}");
        assert_eq!(log_tail(&dir.path().join("missing")), "");
    }
}

//! The services as processes of their own, the way a deployment runs them: built once,
//! each started with its configuration in the environment on free ports, over mutual TLS.
//! Used by the fault-injection run and by the load generator's out-of-process mode, with
//! each process's CPU time read from `/proc`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::Channel;

pub(crate) fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One service process.
pub struct Proc {
    pub name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether it exited by itself since it was started (a crash), and which way.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(format!("{} exited: {status}", self.name))
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Proc {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the service binaries (a no-op when they are current), in the release profile
/// when `release`, and returns their folder; `CLEARINGHOUSE_SERVICE_BINARIES` names a
/// folder of binaries built before instead (two builds compared in one run).
pub fn build_binaries(release: bool) -> anyhow::Result<PathBuf> {
    if let Some(built) = std::env::var_os("CLEARINGHOUSE_SERVICE_BINARIES") {
        return Ok(PathBuf::from(built));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--quiet"];
    if release {
        args.push("--release");
    }
    for bin in [
        "clearinghouse-filing",
        "clearinghouse-settlement",
        "clearinghouse-fund-ledger",
    ] {
        args.extend(["--bin", bin]);
    }
    run(Command::new(cargo).current_dir(workspace()).args(args))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    Ok(target.join(if release { "release" } else { "debug" }))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where a started service listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// What a service process is given.
pub struct ServiceSpec<'a> {
    pub name: &'a str,
    pub binary: &'a Path,
    pub run_dir: &'a Path,
    pub database: &'a str,
    pub schema: &'a str,
    pub kafka: &'a str,
    pub suffix: &'a str,
    pub max_connections: u32,
    /// More settings, as `CLEARINGHOUSE_`-less variable names.
    pub extra: &'a [(&'a str, String)],
}

/// Starts a service process on free ports.
pub fn service(spec: &ServiceSpec<'_>) -> anyhow::Result<(Proc, Listening)> {
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let tls = crate::service_tls();
    let mut env: Vec<(String, String)> = [
        ("SERVER__GRPC_ADDR", grpc.to_string()),
        ("SERVER__METRICS_ADDR", metrics.to_string()),
        ("SERVER__TLS__CA_CERT", tls.ca_cert.clone()),
        ("SERVER__TLS__CERT", tls.cert.clone()),
        ("SERVER__TLS__KEY", tls.key.clone()),
        ("DATABASE__URL", spec.database.to_string()),
        ("DATABASE__SCHEMA", spec.schema.to_string()),
        (
            "DATABASE__MAX_CONNECTIONS",
            spec.max_connections.to_string(),
        ),
        ("KAFKA__BOOTSTRAP_SERVERS", spec.kafka.to_string()),
        ("KAFKA__NAME_SUFFIX", spec.suffix.to_string()),
        ("TELEMETRY__LOG_FILTER", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("CLEARINGHOUSE_{k}"), v))
    .collect();
    env.extend(
        spec.extra
            .iter()
            .map(|(k, v)| (format!("CLEARINGHOUSE_{k}"), v.clone())),
    );
    let mut proc = Proc {
        name: spec.name.to_string(),
        binary: spec.binary.to_path_buf(),
        env,
        log: spec.run_dir.join(format!("{}.log", spec.name)),
        child: None,
    };
    proc.start()?;
    Ok((proc, Listening { grpc, metrics }))
}

/// A client channel to `addr` over mutual TLS as `identity`.
pub async fn channel_to(addr: SocketAddr, identity: &str) -> anyhow::Result<Channel> {
    let tls = crate::caller_tls(identity);
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .connect_timeout(Duration::from_secs(2));
    if let Some(client) = tls.client()? {
        endpoint = endpoint.tls_config(client)?;
    }
    Ok(endpoint.connect_lazy())
}

/// Waits until something listens on `addr` (a minute at most).
pub async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing listens on {addr} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// CPU seconds (user and system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of every process whose command is `name` (all of PostgreSQL's backends,
/// say), summed.
pub fn cpu_seconds_of_all(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .filter_map(cpu_seconds)
        .sum()
}

//! Faults a test can inject into one service's dependencies without touching anyone
//! else's: a TCP proxy in front of PostgreSQL that can be cut (every connection reset, new
//! ones refused) and restored, and a durable broker of the test's own that can be killed
//! with SIGKILL and started again on the same port and storage.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch};

/// A loopback TCP proxy to `target`.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: the copies of earlier connections end when it changes.
    generation: watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (is_cut, generations) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut ended = generations.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = ended.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            cut,
            generation,
        })
    }

    /// Resets every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The database URL of `url` with its host and port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{addr}/{path}")
}

/// Where the set-up caches the durable broker (nisshi 0.8.1).
pub fn nisshi_binary() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let binary = cache.join("clearinghouse/nisshi-0.8.1/bin/nisshi");
    binary.exists().then_some(binary)
}

/// A durable broker of one test's own: its own port and its own storage database.
pub struct Broker {
    pub bootstrap: String,
    binary: PathBuf,
    /// nisshi's `--storage-engine`: a PostgreSQL URL, or `memory://…` for the memory broker.
    storage: String,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts nisshi on an ephemeral port with its storage in a fresh database.
    pub async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let url = clearinghouse_testkit::fresh_database("ch_broker").await?;
        Self::start_with(binary, format!("{url}?sslmode=disable")).await
    }

    /// Starts a broker that keeps nothing (the memory Tansu of earlier set-ups, cached by
    /// them), to reproduce what its restarts did to the services.
    pub async fn start_memory(binary: PathBuf) -> anyhow::Result<Self> {
        Self::start_with(binary, "memory://tansu/".into()).await
    }

    async fn start_with(binary: PathBuf, storage: String) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::env::temp_dir().join(format!(
            "ch-nisshi-{port}-{}.log",
            clearinghouse_testkit::unique_suffix()
        ));
        let mut broker = Self {
            bootstrap: format!("127.0.0.1:{port}"),
            binary,
            storage,
            port,
            log,
            child: None,
        };
        broker.restart().await?;
        Ok(broker)
    }

    /// Starts the broker process again (after a kill) on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .args(["broker", "--storage-engine", &self.storage])
            .args([
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            // nisshi's option; the memory Tansu does not know it.
            .args(if self.storage.starts_with("memory:") {
                &[][..]
            } else {
                &["--group-initial-rebalance-delay", "0s"][..]
            })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "nisshi did not listen within 30 s (log: {})",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// SIGKILL: the process dies between any two of its instructions.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

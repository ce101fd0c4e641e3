//! `shop-controller serve` as a child process of a test, over a simulated AWS the test hosts
//! behind the remote sim server (`sim_server`), which journals every mutation with the process
//! that sent it. `processes.rs` runs replicas on one PostgreSQL database with it;
//! `process_kills.rs` kills and restarts one process over a SQLite file.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reconcilers::sim::SimulatedAws;
use shop_controller::sim_server::{self, Journal};
use shop_controller::store::Store;
use tokio::sync::oneshot;

use crate::convergence::fixture::{INSTALLATION, scaled_sim};

/// A simulated AWS served to child processes, with a journal of their mutations; it stops
/// when dropped.
pub(crate) struct HostedSim {
    /// What `serve --simulated-aws-url` takes.
    pub(crate) url: String,
    pub(crate) journal: Arc<Journal>,
    _stop: oneshot::Sender<()>,
}

impl HostedSim {
    pub(crate) async fn start(aws: Arc<SimulatedAws>) -> Self {
        let journal = Arc::new(Journal::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let served = sim_server::serve(listener, aws, Some(journal.clone()), stopped);
        tokio::spawn(served);
        Self {
            url,
            journal,
            _stop: stop,
        }
    }
}

/// How a `serve` process is started: reconciling, without authentication, on a free port.
pub(crate) struct Launch {
    pub(crate) database_url: String,
    pub(crate) sim_url: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) resync: Duration,
    /// Where its JSON log goes, one file per process name.
    pub(crate) log_dir: PathBuf,
}

/// What a test's `serve` processes share besides their database: the simulated account,
/// seeded as `shop-controller dev` seeds it, and the hosted server of it.
pub(crate) struct SharedSim {
    pub(crate) aws: Arc<SimulatedAws>,
    pub(crate) hosted: HostedSim,
    /// Stands in for the proxies' EFS directory.
    pub(crate) nginx_dir: PathBuf,
    /// Processes over `database_url`, resyncing every second, logging into `dir`.
    pub(crate) launch: Launch,
}

impl SharedSim {
    /// Seeds `store` (reached by processes at `database_url`) and a simulated account with a
    /// scaled clock, keeping the nginx directory and the logs in `dir`, and serves it.
    pub(crate) async fn seed(
        store: &dyn Store,
        database_url: &str,
        dir: &Path,
        lease_ttl: Duration,
    ) -> Self {
        let aws = Arc::new(SimulatedAws::with_config(scaled_sim()));
        let nginx_dir = dir.join("nginx");
        std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
        shop_controller::dev::seed(store, &aws, &nginx_dir)
            .await
            .expect("seed");
        let hosted = HostedSim::start(aws.clone()).await;
        let launch = Launch {
            database_url: database_url.to_owned(),
            sim_url: hosted.url.clone(),
            lease_ttl,
            resync: Duration::from_secs(1),
            log_dir: dir.to_owned(),
        };
        Self {
            aws,
            hosted,
            nginx_dir,
            launch,
        }
    }
}

/// One `shop-controller serve` process and its JSON log; SIGKILLed when dropped.
pub(crate) struct ServeProcess {
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
}

impl ServeProcess {
    pub(crate) fn spawn(name: &str, launch: &Launch) -> Self {
        let log = launch.log_dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let lease_ttl = format!("{}ms", launch.lease_ttl.as_millis());
        let resync = format!("{}ms", launch.resync.as_millis());
        let child = Command::new(env!("CARGO_BIN_EXE_shop-controller"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-auth",
                "--reconcile",
            ])
            .args(["--installation", INSTALLATION])
            .args(["--lease-ttl", &lease_ttl, "--resync", &resync])
            .args([
                "--simulated-aws-url",
                &launch.sim_url,
                "--log-format",
                "json",
            ])
            .env("SHOP_CONTROLLER_DATABASE_URL", &launch.database_url)
            // The lease holder name starts with the host name: it tells processes apart.
            .env("HOSTNAME", name)
            .env("RUST_LOG", "info")
            .env_remove("AWS_ENDPOINT_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start shop-controller serve");
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Whether a lease holder or journaled caller is this process.
    pub(crate) fn is(&self, holder: &str) -> bool {
        is_process(&self.name, holder)
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Lines of its log containing `message`.
    pub(crate) fn logged(&self, message: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|line| line.contains(message)).count()
    }

    /// Waits until the process serves gRPC, watching its log every 5 ms, and returns the
    /// address; fails when the process exits first or takes longer than `within`.
    pub(crate) async fn serving(&mut self, within: Duration) -> SocketAddr {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(address) = log.lines().find_map(grpc_address) {
                return address;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("{} exited with {status} before serving:\n{log}", self.name);
            }
            assert!(
                started.elapsed() < within,
                "{} not serving:\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends SIGKILL and waits for the process to die; returns when it was sent. Fails when
    /// the process had exited on its own before.
    pub(crate) fn kill(&mut self) -> Instant {
        if let Some(status) = self.child.try_wait().expect("wait") {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited on its own with {status}:\n{log}", self.name);
        }
        let sent = Instant::now();
        // std's kill is SIGKILL on Unix.
        self.child.kill().expect("kill -9");
        let status = self.child.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "{}: {status}", self.name);
        sent
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die of anything but SIGKILL; SIGKILL it is.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a lease holder or journaled caller is the process called `name`.
pub(crate) fn is_process(name: &str, holder: &str) -> bool {
    holder.starts_with(&format!("{name}-"))
}

/// The address of a "serving grpc" line of the JSON log (`"address":"Some(127.0.0.1:port)"`).
fn grpc_address(line: &str) -> Option<SocketAddr> {
    let line: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = line.get("fields")?;
    if fields.get("message")?.as_str()? != "serving grpc" {
        return None;
    }
    let address = fields.get("address")?.as_str()?;
    let address = address.strip_prefix("Some(")?.strip_suffix(')')?;
    address.parse().ok()
}

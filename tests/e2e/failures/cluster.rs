//! A throwaway PostgreSQL cluster of one test's own, which the test may stop and start again:
//! the shared server of the other suites must never go down under them. Built the way
//! `scripts/test` builds one when no server answers: `initdb` and `pg_ctl` from the newest
//! `/usr/lib/postgresql/*/bin`, run as the `postgres` user when we are root (PostgreSQL
//! refuses to run as root), in a temporary data directory on a free port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running (or stopped) cluster; stopped for good and removed when dropped.
pub(crate) struct Cluster {
    bin: PathBuf,
    data: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Creates and starts a cluster, trusting local connections of the `postgres` user.
    pub(crate) fn start() -> Cluster {
        let bin = newest_bin_dir();
        let data = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            run("chown", &["postgres", path_str(data.path())]);
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Cluster {
            bin,
            data,
            port,
            as_postgres,
        };
        let data = path_str(cluster.data.path());
        cluster.pg(
            "initdb",
            &["-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        cluster.resume();
        cluster
    }

    /// The URL of its `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server as an operator's restart does: `-m fast` ends every session at once
    /// and rolls back what they had open.
    pub(crate) fn stop(&self) {
        let data = path_str(self.data.path());
        self.pg("pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts the stopped server again on the same port and data.
    pub(crate) fn resume(&self) {
        let data = path_str(self.data.path());
        // The socket goes into the data directory: no other cluster's files are touched, and
        // fsync is off because nothing here needs to survive a power cut.
        let options = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = self.data.path().join("log");
        let log = path_str(&log);
        self.pg(
            "pg_ctl",
            &["-D", data, "-o", &options, "-l", log, "-w", "start"],
        );
    }

    /// Runs one of the cluster's programs, as `postgres` when we are root.
    fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let program = path_str(&program);
        if self.as_postgres {
            let mut all = vec!["-u", "postgres", "--", program];
            all.extend_from_slice(args);
            run("runuser", &all);
        } else {
            run(program, args);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = path_str(self.data.path()).to_owned();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // Best effort: a server that is already down answers with an error, which is fine.
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The bin directory of the newest PostgreSQL installed.
fn newest_bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
    let mut found: Vec<(u32, PathBuf)> = versions
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().expect("an initdb under /usr/lib/postgresql").1
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("run id");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

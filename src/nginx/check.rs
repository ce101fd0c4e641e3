//! The `nginx -t` check of a shop config directory, run in a private prefix so it never
//! touches `/etc/nginx`: which files it includes, the main config it generates around them,
//! and what nginx answered. What to do with the answer stays with [`NginxDir`].
//!
//! `nginx -t` loads the configuration as a start would, minus the workers: it opens every
//! file the config names and binds every `listen` address (an address already in use is
//! tolerated in test mode, one the process may not bind is not). The generated main config
//! therefore puts pid and temp paths in a scratch directory and logs to stderr, which is where
//! nginx's message comes from; the listen port must be one this process may bind (root,
//! `CAP_NET_BIND_SERVICE`, `net.ipv4.ip_unprivileged_port_start`, or a port above 1023).
//! Upstream names need no DNS at check time: the renderer hands them to `proxy_pass` through
//! variables, which nginx resolves per request, not at load.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reconcilers::nginx::ConfigFileName;
use tracing::debug;

use super::{NginxDir, NginxError, Result, SHOPS_PLACEHOLDER, config_path};

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What `nginx -t` said about a configuration it could run on.
pub(super) enum Verdict {
    Accepted { warnings: Vec<String> },
    Rejected { message: String },
}

/// Which shop files a check includes.
pub(super) enum Includes<'a> {
    /// The live files, by the glob the proxies use.
    Live,
    /// The live files with `file_name`'s replaced by its candidate.
    WithCandidate(&'a ConfigFileName),
}

impl NginxDir {
    pub(super) async fn run_check(&self, includes: Includes<'_>) -> Result<Verdict> {
        let scratch = ScratchDir::create().await?;
        let include_lines = self.include_lines(&includes).await?;
        let main_config = self.main_config(&scratch.path, &include_lines)?;
        let config_file = scratch.path.join("nginx.conf");
        tokio::fs::write(&config_file, main_config)
            .await
            .map_err(|source| NginxError::PrepareCheck {
                path: config_file.clone(),
                source,
            })?;

        let output = self.run_nginx_test(&scratch.path, &config_file).await?;
        let lines = nginx_messages(&String::from_utf8_lossy(&output.stderr));
        debug!(status = %output.status, messages = lines.len(), "ran nginx -t");
        if output.status.success() {
            return Ok(Verdict::Accepted { warnings: lines });
        }
        let message = if lines.is_empty() {
            format!("nginx -t exited with {}", output.status)
        } else {
            lines.join("; ")
        };
        Ok(Verdict::Rejected { message })
    }

    async fn run_nginx_test(
        &self,
        prefix: &Path,
        config_file: &Path,
    ) -> Result<std::process::Output> {
        let mut prefix = prefix.as_os_str().to_owned();
        prefix.push("/");
        let mut command = tokio::process::Command::new(&self.nginx_binary);
        command
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(config_file)
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .kill_on_drop(true);

        let run = tokio::time::timeout(CHECK_TIMEOUT, command.output()).await;
        match run {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(source)) => Err(NginxError::RunCheck {
                binary: self.nginx_binary.clone(),
                source,
            }),
            Err(_) => Err(NginxError::CheckTimedOut {
                seconds: CHECK_TIMEOUT.as_secs(),
            }),
        }
    }

    /// The include glob the proxies use, or an explicit list: nginx globs cannot leave out the
    /// one live file a candidate replaces.
    async fn include_lines(&self, includes: &Includes<'_>) -> Result<Vec<String>> {
        let file_name = match includes {
            Includes::Live => {
                let glob = self.dir.join("*.conf");
                return Ok(vec![format!("include {};", config_path(&glob)?)]);
            }
            Includes::WithCandidate(file_name) => file_name,
        };
        let mut paths: Vec<PathBuf> = self
            .entry_names()
            .await?
            .into_iter()
            .filter(|name| is_included(name) && name != file_name.as_str())
            .map(|name| self.dir.join(name))
            .collect();
        paths.sort();
        paths.push(self.candidate_path(file_name));
        paths
            .iter()
            .map(|path| Ok(format!("include {};", config_path(path)?)))
            .collect()
    }

    fn main_config(&self, scratch: &Path, include_lines: &[String]) -> Result<String> {
        let scratch = config_path(scratch)?;
        let mut http = vec!["access_log off;".to_owned()];
        for (directive, dir) in [
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ] {
            http.push(format!("{directive} {scratch}/{dir};"));
        }
        http.extend_from_slice(include_lines);

        let body = self
            .main_config_template
            .replace(SHOPS_PLACEHOLDER, &http.join("\n    "));
        Ok(format!(
            "# generated by shop-controller for nginx -t only\npid {scratch}/nginx.pid;\n{body}"
        ))
    }
}

/// A private directory for one `nginx -t` run, removed when dropped (also when the check is
/// cancelled). The removal blocks briefly; it holds a handful of empty directories.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    async fn create() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "shop-controller-nginx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        match tokio::fs::create_dir(&path).await {
            Ok(()) => Ok(Self { path }),
            Err(source) => Err(NginxError::PrepareCheck { path, source }),
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            debug!(path = %self.path.display(), error = %error, "could not remove nginx scratch");
        }
    }
}

/// Whether nginx's `*.conf` glob picks up `name` (glob(3) skips names starting with a dot).
pub(super) fn is_included(name: &str) -> bool {
    name.ends_with(".conf") && !name.starts_with('.')
}

/// nginx's messages without timestamps, pids and the closing "test failed" line.
pub(super) fn nginx_messages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|line| line.strip_prefix("nginx: ").unwrap_or(line))
        .filter(|line| {
            !line.starts_with("configuration file ") && !line.starts_with("the configuration file ")
        })
        .filter_map(|line| line.find('[').map(|start| &line[start..]))
        .map(strip_pid)
        .collect()
}

/// `[emerg] 12#12: unknown directive` → `[emerg] unknown directive`.
fn strip_pid(message: &str) -> String {
    let Some((level, rest)) = message.split_once("] ") else {
        return message.to_owned();
    };
    let rest = match rest.split_once(": ") {
        Some((pid, text)) if pid.chars().all(|c| c.is_ascii_digit() || c == '#') => text,
        _ => rest,
    };
    format!("{level}] {rest}")
}

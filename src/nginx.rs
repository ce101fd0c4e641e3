//! The nginx configuration directory on a region's shared EFS volume, one file per shop.
//!
//! A file goes live only after the real `nginx -t` accepted the whole configuration with it in
//! place: it is written as a candidate (a name the proxies' `*.conf` include skips), checked,
//! then renamed over the live file, so a proxy never reads half a file or an unchecked one. A
//! candidate nginx rejects moves to `quarantine/` and the previous good file stays live.
//! Rendering lives in `reconcilers::nginx`; reloading the proxies belongs to the nginx_config
//! reconciler.
//!
//! `nginx -t` loads the configuration as a start would, minus the workers: it opens every
//! file the config names and binds every `listen` address (an address already in use is
//! tolerated in test mode, one the process may not bind is not). The generated main config
//! therefore puts pid and temp paths in a scratch directory and logs to stderr, which is where
//! nginx's message comes from; the listen port must be one this process may bind (root,
//! `CAP_NET_BIND_SERVICE`, `net.ipv4.ip_unprivileged_port_start`, or a port above 1023).
//! Upstream names need no DNS at check time: the renderer hands them to `proxy_pass` through
//! variables, which nginx resolves per request, not at load.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reconcilers::nginx::ConfigFileName;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

/// Where the shop includes go in a main config template.
pub const SHOPS_PLACEHOLDER: &str = "{{shops}}";

/// A main config that accepts what the renderer produces, for a proxy whose own `nginx.conf`
/// adds nothing the shop files depend on.
///
/// Server names are up to 253 characters and a proxy serves thousands of them; nginx's default
/// server name hash (64-byte buckets, at most 512 of them) refuses both as soon as two servers
/// share a port.
pub const DEFAULT_MAIN_CONFIG_TEMPLATE: &str = "\
events {}

http {
    server_names_hash_bucket_size 512;
    server_names_hash_max_size 32768;

    {{shops}}
}
";

/// Subdirectory holding candidates nginx rejected, with nginx's message beside each.
pub const QUARANTINE_DIR: &str = "quarantine";

const CANDIDATE_SUFFIX: &str = ".candidate";
const ERROR_SUFFIX: &str = ".error";
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

pub type Result<T, E = NginxError> = std::result::Result<T, E>;

/// A failed operation on the nginx directory.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("main config template has {found} `{{{{shops}}}}` placeholders; it needs exactly one")]
    ParseTemplate { found: usize },
    #[error("path {path} cannot be written into an nginx config")]
    QuotePath { path: PathBuf },
    #[error("write candidate {file_name}")]
    WriteCandidate {
        file_name: String,
        #[source]
        source: io::Error,
    },
    #[error("prepare nginx -t in {path}")]
    PrepareCheck {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("run {binary} -t")]
    RunCheck {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("run nginx -t: no answer within {seconds}s")]
    CheckTimedOut { seconds: u64 },
    #[error("check {file_name}: nginx rejected it (quarantined): {message}")]
    CheckCandidate { file_name: String, message: String },
    #[error("check nginx config in {dir}: nginx rejected it: {message}")]
    CheckConfig { dir: PathBuf, message: String },
    #[error("quarantine {file_name}")]
    Quarantine {
        file_name: String,
        #[source]
        source: io::Error,
    },
    #[error("install {file_name}")]
    Install {
        file_name: String,
        #[source]
        source: io::Error,
    },
    #[error("remove {file_name}")]
    Remove {
        file_name: String,
        #[source]
        source: io::Error,
    },
    #[error("read {file_name}")]
    Read {
        file_name: String,
        #[source]
        source: io::Error,
    },
    #[error("list {dir}")]
    List {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A file that went live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub path: PathBuf,
    /// Whether it replaced an earlier live file.
    pub replaced: bool,
    /// What nginx warned about while accepting it (a server name another file also claims).
    pub warnings: Vec<String>,
}

/// A candidate nginx rejected, kept for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub text: String,
    /// nginx's message about it.
    pub message: String,
}

/// One region's shop config directory and the nginx that checks it.
#[derive(Clone, Debug)]
pub struct NginxDir {
    dir: PathBuf,
    nginx_binary: PathBuf,
    main_config_template: String,
}

/// What `nginx -t` said about a configuration it could run on.
enum Verdict {
    Accepted { warnings: Vec<String> },
    Rejected { message: String },
}

/// Which shop files a check includes.
enum Includes<'a> {
    /// The live files, by the glob the proxies use.
    Live,
    /// The live files with `file_name`'s replaced by its candidate.
    WithCandidate(&'a ConfigFileName),
}

impl NginxError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NginxError::ParseTemplate { .. } => "parse_template",
            NginxError::QuotePath { .. } => "quote_path",
            NginxError::WriteCandidate { .. } => "write_candidate",
            NginxError::PrepareCheck { .. } => "prepare_check",
            NginxError::RunCheck { .. } => "run_check",
            NginxError::CheckTimedOut { .. } => "check_timed_out",
            NginxError::CheckCandidate { .. } => "check_candidate",
            NginxError::CheckConfig { .. } => "check_config",
            NginxError::Quarantine { .. } => "quarantine",
            NginxError::Install { .. } => "install",
            NginxError::Remove { .. } => "remove",
            NginxError::Read { .. } => "read",
            NginxError::List { .. } => "list",
        }
    }
}

impl NginxDir {
    /// `dir` is the directory the proxies include as `<dir>/*.conf`; it must exist (creating it
    /// would hide an EFS volume that is not mounted). `main_config_template` is the proxies'
    /// main config with [`SHOPS_PLACEHOLDER`] inside its `http` block; it must not set `pid`,
    /// `error_log`, `access_log` or temp paths (the check sets its own) and must name other
    /// files by absolute path.
    pub fn new(
        dir: impl Into<PathBuf>,
        nginx_binary: impl Into<PathBuf>,
        main_config_template: impl Into<String>,
    ) -> Result<Self> {
        let main_config_template = main_config_template.into();
        let found = main_config_template.matches(SHOPS_PLACEHOLDER).count();
        if found != 1 {
            return Err(NginxError::ParseTemplate { found });
        }
        let dir = dir.into();
        config_path(&dir)?;
        Ok(Self {
            dir,
            nginx_binary: nginx_binary.into(),
            main_config_template,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live path of `file_name`.
    pub fn path(&self, file_name: &ConfigFileName) -> PathBuf {
        self.dir.join(file_name.as_str())
    }

    /// Writes `text` as `file_name`'s candidate and makes it durable (file and directory
    /// fsynced), ready to be renamed over the live file.
    pub async fn write_candidate(&self, file_name: &ConfigFileName, text: &str) -> Result<PathBuf> {
        let path = self.candidate_path(file_name);
        write_durably(&path, text.as_bytes())
            .await
            .map_err(|source| NginxError::WriteCandidate {
                file_name: file_name.to_string(),
                source,
            })?;
        Ok(path)
    }

    /// Checks the live configuration (every `*.conf` in the directory) as the proxies would
    /// load it, returning nginx's warnings.
    pub async fn check(&self) -> Result<Vec<String>> {
        match self.run_check(Includes::Live).await? {
            Verdict::Accepted { warnings } => Ok(warnings),
            Verdict::Rejected { message } => Err(self.config_rejected(message)),
        }
    }

    /// Makes `text` the live file of `file_name` if nginx accepts the whole configuration with
    /// it. A rejected candidate is quarantined and the previous file stays live; if the live
    /// configuration is broken without it, nothing is quarantined and the error says so.
    pub async fn install(&self, file_name: &ConfigFileName, text: &str) -> Result<Installed> {
        let candidate = self.write_candidate(file_name, text).await?;

        let verdict = match self.run_check(Includes::WithCandidate(file_name)).await {
            Ok(verdict) => verdict,
            Err(error) => {
                self.discard_candidate(file_name, &candidate).await;
                return Err(error);
            }
        };

        match verdict {
            Verdict::Accepted { warnings } => self.promote(file_name, &candidate, warnings).await,
            Verdict::Rejected { message } => self.reject(file_name, &candidate, message).await,
        }
    }

    /// Removes `file_name`'s live file, with any candidate or quarantined copy. Returns whether
    /// a live file existed; a missing one counts as removed.
    pub async fn remove(&self, file_name: &ConfigFileName) -> Result<bool> {
        let removed = self
            .remove_files(file_name)
            .await
            .map_err(|source| NginxError::Remove {
                file_name: file_name.to_string(),
                source,
            })?;

        if removed {
            info!(file = %file_name, "removed nginx config");
        }
        Ok(removed)
    }

    /// The live text of `file_name`, or `None` when there is no such file.
    pub async fn read(&self, file_name: &ConfigFileName) -> Result<Option<String>> {
        read_if_present(&self.path(file_name))
            .await
            .map_err(|source| NginxError::Read {
                file_name: file_name.to_string(),
                source,
            })
    }

    /// The shop files in the directory, sorted; other files are not ours and are skipped.
    pub async fn list(&self) -> Result<Vec<ConfigFileName>> {
        let names = self.entry_names().await?;
        let mut files: Vec<ConfigFileName> = names
            .iter()
            .filter_map(|name| ConfigFileName::parse(name))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The candidate nginx last rejected for `file_name`, if it is still quarantined.
    pub async fn quarantined(&self, file_name: &ConfigFileName) -> Result<Option<Quarantined>> {
        let read_error = |source| NginxError::Read {
            file_name: format!("{QUARANTINE_DIR}/{file_name}"),
            source,
        };
        let Some(text) = read_if_present(&self.quarantine_path(file_name))
            .await
            .map_err(read_error)?
        else {
            return Ok(None);
        };
        let message = read_if_present(&self.quarantine_message_path(file_name))
            .await
            .map_err(read_error)?;
        Ok(Some(Quarantined {
            text,
            message: message.unwrap_or_default().trim_end().to_owned(),
        }))
    }

    async fn remove_files(&self, file_name: &ConfigFileName) -> io::Result<bool> {
        let removed = remove_if_present(&self.path(file_name)).await?;
        for leftover in [
            self.candidate_path(file_name),
            self.quarantine_path(file_name),
            self.quarantine_message_path(file_name),
        ] {
            remove_if_present(&leftover).await?;
        }
        sync_dir(&self.dir).await?;
        Ok(removed)
    }

    async fn promote(
        &self,
        file_name: &ConfigFileName,
        candidate: &Path,
        warnings: Vec<String>,
    ) -> Result<Installed> {
        let path = self.path(file_name);
        let replaced = tokio::fs::try_exists(&path).await.unwrap_or(false);
        let renamed = async {
            tokio::fs::rename(candidate, &path).await?;
            sync_dir(&self.dir).await
        };
        renamed.await.map_err(|source| NginxError::Install {
            file_name: file_name.to_string(),
            source,
        })?;

        self.clear_quarantine(file_name).await;
        info!(file = %file_name, replaced, warnings = warnings.len(), "installed nginx config");
        Ok(Installed {
            path,
            replaced,
            warnings,
        })
    }

    /// Quarantines the candidate, unless the live configuration fails without it too: then
    /// the candidate is not to blame (another file broke the directory) and is dropped instead.
    async fn reject(
        &self,
        file_name: &ConfigFileName,
        candidate: &Path,
        message: String,
    ) -> Result<Installed> {
        match self.run_check(Includes::Live).await {
            Ok(Verdict::Accepted { .. }) => {}
            Ok(Verdict::Rejected { message }) => {
                self.discard_candidate(file_name, candidate).await;
                return Err(self.config_rejected(message));
            }
            Err(error) => {
                self.discard_candidate(file_name, candidate).await;
                return Err(error);
            }
        }

        self.quarantine(file_name, candidate, &message)
            .await
            .map_err(|source| NginxError::Quarantine {
                file_name: file_name.to_string(),
                source,
            })?;
        warn!(file = %file_name, message = %message, "quarantined nginx config");
        Err(NginxError::CheckCandidate {
            file_name: file_name.to_string(),
            message,
        })
    }

    async fn quarantine(
        &self,
        file_name: &ConfigFileName,
        candidate: &Path,
        message: &str,
    ) -> io::Result<()> {
        tokio::fs::create_dir_all(self.dir.join(QUARANTINE_DIR)).await?;
        let message_path = self.quarantine_message_path(file_name);
        write_durably(&message_path, format!("{message}\n").as_bytes()).await?;
        tokio::fs::rename(candidate, self.quarantine_path(file_name)).await?;
        sync_dir(&self.dir.join(QUARANTINE_DIR)).await?;
        sync_dir(&self.dir).await
    }

    /// A file that went live is no longer quarantined. Best effort: a leftover only misleads
    /// an operator until the next quarantine or removal overwrites it.
    async fn clear_quarantine(&self, file_name: &ConfigFileName) {
        for path in [
            self.quarantine_path(file_name),
            self.quarantine_message_path(file_name),
        ] {
            if let Err(error) = remove_if_present(&path).await {
                warn!(path = %path.display(), error = %error, "could not clear quarantine");
            }
        }
    }

    /// Best effort: the include glob skips candidates, and the next install overwrites it.
    async fn discard_candidate(&self, file_name: &ConfigFileName, candidate: &Path) {
        if let Err(error) = remove_if_present(candidate).await {
            warn!(file = %file_name, error = %error, "could not remove nginx candidate");
        }
    }

    fn config_rejected(&self, message: String) -> NginxError {
        NginxError::CheckConfig {
            dir: self.dir.clone(),
            message,
        }
    }

    async fn run_check(&self, includes: Includes<'_>) -> Result<Verdict> {
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

    /// Names of the directory's entries that are not directories.
    async fn entry_names(&self) -> Result<Vec<String>> {
        let list_error = |source| NginxError::List {
            dir: self.dir.clone(),
            source,
        };
        let mut entries = tokio::fs::read_dir(&self.dir).await.map_err(list_error)?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(list_error)? {
            let is_dir = entry.file_type().await.map_err(list_error)?.is_dir();
            if let (false, Some(name)) = (is_dir, entry.file_name().to_str()) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn candidate_path(&self, file_name: &ConfigFileName) -> PathBuf {
        self.dir.join(format!("{file_name}{CANDIDATE_SUFFIX}"))
    }

    fn quarantine_path(&self, file_name: &ConfigFileName) -> PathBuf {
        self.dir.join(QUARANTINE_DIR).join(file_name.as_str())
    }

    fn quarantine_message_path(&self, file_name: &ConfigFileName) -> PathBuf {
        let name = format!("{file_name}{ERROR_SUFFIX}");
        self.dir.join(QUARANTINE_DIR).join(name)
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

/// Writes `bytes` to `path` and fsyncs the file and its directory, so the content survives a
/// crash before the rename that publishes it.
async fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = tokio::fs::File::create(path).await?;
    file.write_all(bytes).await?;
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    sync_dir(path.parent().unwrap_or(Path::new("."))).await
}

/// Makes renames and removals in `dir` durable (rename(2) alone may be lost on a crash).
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

async fn read_if_present(path: &Path) -> io::Result<Option<String>> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

async fn remove_if_present(path: &Path) -> io::Result<bool> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether nginx's `*.conf` glob picks up `name` (glob(3) skips names starting with a dot).
fn is_included(name: &str) -> bool {
    name.ends_with(".conf") && !name.starts_with('.')
}

/// A path as an nginx config word. Paths come from our configuration and the temp directory,
/// so instead of escaping we refuse anything beyond a plain character set.
fn config_path(path: &Path) -> Result<String> {
    let unsafe_path = || NginxError::QuotePath {
        path: path.to_owned(),
    };
    let text = path.to_str().ok_or_else(unsafe_path)?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+*".contains(c);
    if text.is_empty() || !text.chars().all(plain) {
        return Err(unsafe_path());
    }
    Ok(text.to_owned())
}

/// nginx's messages without timestamps, pids and the closing "test failed" line.
fn nginx_messages(stderr: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {

    use proptest::prelude::*;
    use reconcilers::Hostname;
    use reconcilers::nginx::{MAX_FILE_SHOP_DOMAIN_LEN, ProxySettings, ShopSite, Upstream, render};

    use super::*;

    const NGINX: &str = "/usr/sbin/nginx";
    /// `nginx -t` binds the listen port: 8080 needs no privilege, and a port already in use
    /// (another test's check) is tolerated in test mode.
    const TEST_LISTEN_PORT: u16 = 8080;
    /// `.invalid` never resolves (RFC 6761), so these prove the check needs no DNS.
    const NLB: &str = "shops-0123456789abcdef.elb.eu-west-1.invalid";
    const ACME: &str = "acme.shop-controller.invalid";

    /// The directory under test; the nginx binary must be installed (`scripts/test` does).
    fn nginx_dir(dir: &Path) -> Option<NginxDir> {
        nginx_dir_with(dir, DEFAULT_MAIN_CONFIG_TEMPLATE)
    }

    fn nginx_dir_with(dir: &Path, template: &str) -> Option<NginxDir> {
        // These tests are the proof that generated configs load: they never skip.
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing; scripts/test installs Debian's nginx-light"
        );
        Some(NginxDir::new(dir, NGINX, template).expect("valid nginx dir"))
    }

    fn host(name: &str) -> Hostname {
        Hostname::parse(name).expect("valid test hostname")
    }

    fn settings() -> ProxySettings {
        ProxySettings {
            listen_port: TEST_LISTEN_PORT,
            acme_responder: Some(Upstream {
                host: host(ACME),
                port: 8402,
            }),
            ..ProxySettings::default()
        }
    }

    fn shop_file(domain: &Hostname, custom: Option<&Hostname>, generation: i64) -> String {
        let site = ShopSite {
            shop_domain: domain.clone(),
            custom_domain: custom.cloned(),
            upstream: Upstream {
                host: host(NLB),
                port: 8123,
            },
            generation,
        };
        render(&site, &settings())
    }

    fn file_name(domain: &str) -> ConfigFileName {
        ConfigFileName::for_shop(&host(domain)).expect("short enough for a file name")
    }

    fn broken(text: &str) -> String {
        text.replace("proxy_read_timeout 60s;", "proxy_read_timeout sixty;")
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn rendered_config_with_unresolvable_upstreams_passes_nginx_check() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        let name = file_name("example.es-hs.com");
        let text = shop_file(name.shop(), Some(&host("shop.example.com")), 1);

        let installed = nginx.install(&name, &text).await.expect("install");

        assert!(!installed.replaced);
        assert_eq!(installed.warnings, Vec::<String>::new());
        assert_eq!(nginx.read(&name).await.expect("read"), Some(text));
        assert_eq!(nginx.list().await.expect("list"), [name]);
        assert_eq!(dir_entries(temp.path()), ["example.es-hs.com.conf"]);
        nginx.check().await.expect("live config passes");
    }

    #[tokio::test]
    async fn broken_candidate_is_quarantined_and_previous_file_stays_live() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        let name = file_name("example.es-hs.com");
        let good = shop_file(name.shop(), None, 1);
        nginx
            .install(&name, &good)
            .await
            .expect("install good file");

        let bad = broken(&shop_file(name.shop(), None, 2));
        let error = nginx.install(&name, &bad).await.expect_err("nginx rejects");

        let NginxError::CheckCandidate { message, .. } = &error else {
            panic!("expected a rejected candidate, got {error:?}");
        };
        assert!(message.contains("proxy_read_timeout"), "{message}");
        assert_eq!(error.kind(), "check_candidate");
        assert_eq!(nginx.read(&name).await.expect("read"), Some(good.clone()));
        let quarantined = nginx.quarantined(&name).await.expect("read quarantine");
        assert_eq!(
            quarantined.map(|q| (q.text, q.message)),
            Some((bad, message.clone()))
        );
        assert_eq!(
            dir_entries(temp.path()),
            ["example.es-hs.com.conf", "quarantine"]
        );
        nginx.check().await.expect("live config still passes");

        let fixed = shop_file(name.shop(), None, 3);
        let installed = nginx
            .install(&name, &fixed)
            .await
            .expect("install fixed file");
        assert!(installed.replaced);
        assert_eq!(
            nginx.quarantined(&name).await.expect("read quarantine"),
            None
        );
    }

    #[tokio::test]
    async fn broken_neighbour_does_not_get_a_good_candidate_quarantined() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        let neighbour = host("other.es-hs.com");
        let neighbour_text = broken(&shop_file(&neighbour, None, 1));
        std::fs::write(temp.path().join("other.es-hs.com.conf"), neighbour_text)
            .expect("write broken neighbour out of band");
        let name = file_name("example.es-hs.com");

        let error = nginx
            .install(&name, &shop_file(name.shop(), None, 1))
            .await
            .expect_err("the directory is broken");

        assert!(matches!(error, NginxError::CheckConfig { .. }), "{error:?}");
        assert_eq!(nginx.read(&name).await.expect("read"), None);
        assert_eq!(
            nginx.quarantined(&name).await.expect("read quarantine"),
            None
        );
        assert_eq!(dir_entries(temp.path()), ["other.es-hs.com.conf"]);
    }

    #[tokio::test]
    async fn two_shops_coexist_and_removal_leaves_a_valid_config() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        let first = file_name("example.es-hs.com");
        let second = file_name("demo.es-hs.com");
        let custom = host("www.demo-shop.example");
        nginx
            .install(&first, &shop_file(first.shop(), None, 1))
            .await
            .expect("install first");
        nginx
            .install(&second, &shop_file(second.shop(), Some(&custom), 4))
            .await
            .expect("install second");

        assert_eq!(
            nginx.list().await.expect("list"),
            [second.clone(), first.clone()]
        );
        nginx.check().await.expect("both shops pass");

        assert!(nginx.remove(&first).await.expect("remove"));
        assert!(!nginx.remove(&first).await.expect("remove again"));
        assert_eq!(nginx.read(&first).await.expect("read"), None);
        assert_eq!(nginx.list().await.expect("list"), [second]);
        nginx.check().await.expect("remaining shop passes");
    }

    #[tokio::test]
    async fn removal_clears_a_quarantined_candidate() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        let name = file_name("example.es-hs.com");
        let bad = broken(&shop_file(name.shop(), None, 1));
        nginx.install(&name, &bad).await.expect_err("nginx rejects");

        assert!(!nginx.remove(&name).await.expect("remove"));
        assert_eq!(
            nginx.quarantined(&name).await.expect("read quarantine"),
            None
        );
    }

    #[tokio::test]
    async fn longest_names_fit_the_server_name_hash_of_the_default_template() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        let longest_shop = format!("{0}.{0}.{0}.{1}", "s".repeat(63), "t".repeat(48));
        for (shop, custom_first_label) in [("example.es-hs.com", "a"), (&longest_shop, "b")] {
            let custom = format!(
                "{custom_first_label}.{0}.{0}.{0}.{1}",
                "x".repeat(63),
                "y".repeat(59)
            );
            assert_eq!(custom.len(), 253);
            let name = file_name(shop);
            nginx
                .install(&name, &shop_file(name.shop(), Some(&host(&custom)), 1))
                .await
                .expect("long names install");
        }
        assert_eq!(nginx.list().await.expect("list").len(), 2);
    }

    /// Why the default template sets the hash sizes: nginx's defaults reject a long name as
    /// soon as a second server shares the port, and the check must catch that.
    #[tokio::test]
    async fn nginx_default_hash_sizes_reject_long_names() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir_with(temp.path(), "events {}\nhttp {\n{{shops}}\n}\n") else {
            return;
        };
        let short = file_name("example.es-hs.com");
        nginx
            .install(&short, &shop_file(short.shop(), None, 1))
            .await
            .expect("short name installs");

        let long = file_name(&format!("{}.com", "z".repeat(63)));
        let error = nginx
            .install(&long, &shop_file(long.shop(), None, 1))
            .await
            .expect_err("hash too small");

        assert!(
            error.to_string().contains("server_names_hash_bucket_size"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn thousands_of_shops_pass_one_check() {
        let temp = tempfile::tempdir().expect("temp dir");
        let Some(nginx) = nginx_dir(temp.path()) else {
            return;
        };
        for index in 0..3_000 {
            let shop = host(&format!("shop-{index}.es-hs.com"));
            let custom = host(&format!("www.merchant-{index}.example"));
            let name = ConfigFileName::for_shop(&shop).expect("short enough");
            std::fs::write(nginx.path(&name), shop_file(&shop, Some(&custom), 1))
                .expect("write shop file");
        }

        nginx.check().await.expect("3,000 shops pass");
        assert_eq!(nginx.list().await.expect("list").len(), 3_000);
    }

    #[test]
    fn construction_refuses_bad_templates_and_paths() {
        for (dir, template, kind) in [
            ("/efs/nginx", "http { }", "parse_template"),
            ("/efs/nginx", "{{shops}} {{shops}}", "parse_template"),
            ("/efs/ng inx", DEFAULT_MAIN_CONFIG_TEMPLATE, "quote_path"),
            ("/efs/nginx;", DEFAULT_MAIN_CONFIG_TEMPLATE, "quote_path"),
            ("/efs/\"nginx", DEFAULT_MAIN_CONFIG_TEMPLATE, "quote_path"),
        ] {
            let error = NginxDir::new(dir, NGINX, template).expect_err(dir);
            assert_eq!(error.kind(), kind, "{dir:?} {template:?}");
        }
        assert!(NginxDir::new("/mnt/efs/nginx/shops", NGINX, DEFAULT_MAIN_CONFIG_TEMPLATE).is_ok());
    }

    #[test]
    fn nginx_messages_lose_timestamps_pids_and_summary_lines() {
        let stderr = "\
nginx: [emerg] unknown directive \"bogus\" in /d/a.conf.candidate:4
2026/12/03 16:41:41 [warn] 6118#6118: conflicting server name \"b.com\" on 0.0.0.0:80, ignored
nginx: the configuration file /t/nginx.conf syntax is ok
nginx: configuration file /t/nginx.conf test failed
";
        assert_eq!(
            nginx_messages(stderr),
            [
                "[emerg] unknown directive \"bogus\" in /d/a.conf.candidate:4",
                "[warn] conflicting server name \"b.com\" on 0.0.0.0:80, ignored",
            ]
        );
    }

    #[test]
    fn included_names_follow_the_glob() {
        for (name, included) in [
            ("example.es-hs.com.conf", true),
            ("default.conf", true),
            ("example.es-hs.com.conf.candidate", false),
            (".hidden.conf", false),
            ("notes.txt", false),
        ] {
            assert_eq!(is_included(name), included, "{name}");
        }
    }

    fn hostname() -> impl Strategy<Value = Hostname> {
        let labels = prop::collection::vec("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 1..5);
        (labels, "[a-z]{2,10}").prop_filter_map("not a valid hostname", |(labels, tld)| {
            Hostname::parse(&format!("{}.{tld}", labels.join("."))).ok()
        })
    }

    /// One install (one `nginx -t`) per case, next to a neighbour with a 253-character custom
    /// domain, so every case also builds nginx's server name hash.
    fn install_generated_shop(shop: &Hostname, custom: Option<&Hostname>) -> Option<String> {
        let temp = tempfile::tempdir().expect("temp dir");
        let nginx = nginx_dir(temp.path())?;
        let neighbour = file_name("neighbour.es-hs.com");
        let long = host(&format!("{0}.{0}.{0}.{1}", "n".repeat(63), "e".repeat(61)));
        std::fs::write(
            nginx.path(&neighbour),
            shop_file(neighbour.shop(), Some(&long), 1),
        )
        .expect("write neighbour");
        let name = ConfigFileName::for_shop(shop).expect("generated short enough");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");

        runtime.block_on(async {
            let installed = nginx.install(&name, &shop_file(shop, custom, 1)).await;
            installed.unwrap_or_else(|error| panic!("{name}: {error}"));
            nginx.read(&name).await.expect("read")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn generated_hostnames_render_configs_nginx_accepts(
            shop in hostname(),
            custom in prop::option::of(hostname()),
        ) {
            prop_assume!(custom.as_ref() != Some(&shop));
            prop_assume!(shop.as_str().len() <= MAX_FILE_SHOP_DOMAIN_LEN);
            let Some(text) = install_generated_shop(&shop, custom.as_ref()) else {
                return Ok(());
            };

            let names: Vec<&str> = std::iter::once(&shop).chain(&custom).map(Hostname::as_str).collect();
            let server_name = format!("    server_name {};", names.join(" "));
            prop_assert_eq!(text.matches("server {").count(), 1);
            prop_assert_eq!(
                text.lines().filter(|line| line.trim_start().starts_with("server_name")).collect::<Vec<_>>(),
                vec![server_name.as_str()]
            );
        }
    }
}

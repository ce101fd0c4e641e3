//! The nginx configuration directory on a region's shared EFS volume, one file per shop.
//!
//! A file goes live only after the real `nginx -t` accepted the whole configuration with it in
//! place: it is written as a candidate (a name the proxies' `*.conf` include skips), checked,
//! then renamed over the live file, so a proxy never reads half a file or an unchecked one. A
//! candidate nginx rejects moves to `quarantine/` and the previous good file stays live.
//! Rendering lives in `reconcilers::nginx`; reloading the proxies belongs to the nginx_config
//! reconciler. Running `nginx -t` lives in `check`, keeping rejected candidates in
//! `quarantine`.

use std::io;
use std::path::{Path, PathBuf};

use reconcilers::nginx::ConfigFileName;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use check::{Includes, Verdict};

mod check;
mod quarantine;

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
    /// the candidate is not to blame (another file broke the directory) and its quarantined
    /// copy is dropped. The candidate moves aside before the live check, so that the check
    /// sees the directory as the proxies will: an include pattern of theirs that matches the
    /// candidate's name (`*.conf*`) would otherwise fail it and blame the fleet.
    async fn reject(
        &self,
        file_name: &ConfigFileName,
        candidate: &Path,
        message: String,
    ) -> Result<Installed> {
        self.quarantine(file_name, candidate, &message)
            .await
            .map_err(|source| NginxError::Quarantine {
                file_name: file_name.to_string(),
                source,
            })?;
        let not_to_blame = match self.run_check(Includes::Live).await {
            Ok(Verdict::Accepted { .. }) => None,
            Ok(Verdict::Rejected { message }) => Some(self.config_rejected(message)),
            Err(error) => Some(error),
        };
        if let Some(error) = not_to_blame {
            self.clear_quarantine(file_name).await;
            return Err(error);
        }

        warn!(file = %file_name, message = %message, "quarantined nginx config");
        Err(NginxError::CheckCandidate {
            file_name: file_name.to_string(),
            message,
        })
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

#[cfg(test)]
mod tests;

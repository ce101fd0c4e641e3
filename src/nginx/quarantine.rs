//! Candidates nginx rejected: kept under `quarantine/` with nginx's message beside each, so
//! an operator can see what failed, and cleared once a file for the shop goes live (removal
//! clears it too). Deciding that a candidate is to blame stays with [`NginxDir::install`].

use std::io;
use std::path::{Path, PathBuf};

use reconcilers::nginx::ConfigFileName;
use tracing::warn;

use super::{
    NginxDir, NginxError, QUARANTINE_DIR, Quarantined, Result, read_if_present, remove_if_present,
    sync_dir, write_durably,
};

const ERROR_SUFFIX: &str = ".error";

impl NginxDir {
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

    pub(super) async fn quarantine(
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
    pub(super) async fn clear_quarantine(&self, file_name: &ConfigFileName) {
        for path in [
            self.quarantine_path(file_name),
            self.quarantine_message_path(file_name),
        ] {
            if let Err(error) = remove_if_present(&path).await {
                warn!(path = %path.display(), error = %error, "could not clear quarantine");
            }
        }
    }

    pub(super) fn quarantine_path(&self, file_name: &ConfigFileName) -> PathBuf {
        self.dir.join(QUARANTINE_DIR).join(file_name.as_str())
    }

    pub(super) fn quarantine_message_path(&self, file_name: &ConfigFileName) -> PathBuf {
        let name = format!("{file_name}{ERROR_SUFFIX}");
        self.dir.join(QUARANTINE_DIR).join(name)
    }
}

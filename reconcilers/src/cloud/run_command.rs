//! Run Command: shell commands on instances through SSM, with per-instance results.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::CloudError;

/// Which instances a command runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandTarget {
    Instances(Vec<String>),
    /// Every instance carrying tag `key` = `value`.
    Tag {
        key: String,
        value: String,
    },
}

/// A shell script for `AWS-RunShellScript`. Customer-derived values must reach it only as
/// validated types, quoted by one function (see the reconcilers' command builder).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub target: CommandTarget,
    pub commands: Vec<String>,
    pub comment: String,
    pub timeout_seconds: u32,
}

/// The state of a command on one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvocationStatus {
    Pending,
    InProgress,
    Success,
    Failed,
    TimedOut,
    Cancelled,
}

impl InvocationStatus {
    pub fn is_done(self) -> bool {
        !matches!(
            self,
            InvocationStatus::Pending | InvocationStatus::InProgress
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub command_id: String,
    pub instance_id: String,
    pub status: InvocationStatus,
    /// Standard output, truncated by SSM to 2,500 characters.
    pub output: String,
    pub error: String,
}

/// Sending commands and reading their per-instance results.
#[async_trait]
pub trait RunCommand: Send + Sync {
    /// Sends a command and returns its id.
    async fn send_command(&self, request: &CommandRequest) -> Result<String, CloudError>;

    /// One invocation per targeted instance (all pages).
    async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>, CloudError>;
}

//! The wire format of the remote simulated AWS: one HTTP POST of JSON per [`CloudProvider`]
//! call, so several controller processes can share one [`reconcilers::sim::SimulatedAws`]
//! (`shop-controller dev --share-sim`, `serve --simulated-aws-url`, the multi-process tests).
//!
//! [`cloud_calls!`] is the one list of the calls: the client
//! ([`crate::aws::RemoteSim`]) and the server ([`crate::sim_server`]) both expand it, so a
//! method added to a trait is added here once and both sides follow. A call is
//! `{"region": ..., "method": "load_balancing:create_listener", "args": [...]}` (the arguments
//! in the trait's order, owned) and its answer `{"ok": ...}` or `{"err": CloudError}`. The
//! caller names itself in [`REPLICA_HEADER`], so the server can tell processes apart.
//!
//! [`CloudProvider`]: reconcilers::cloud::CloudProvider

use reconcilers::cloud::{
    BuildRequest, CertificateMaterial, CloudError, CommandRequest, DeploymentRequest,
    HttpListenerSpec, ListenerAction, ListenerSpec, RuleSpec, TargetGroupSpec,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The one path every call is posted to.
pub const CALL_PATH: &str = "/v1/call";

/// The header naming the calling replica (its lease holder name).
pub const REPLICA_HEADER: &str = "x-shop-replica";

/// One call: the region whose capability is asked, `capability:method`, the arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call<A> {
    pub region: String,
    pub method: String,
    pub args: A,
}

/// The answer to a call, as the trait method returned it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Ok(T),
    Err(CloudError),
}

impl<T> From<Result<T, CloudError>> for Reply<T> {
    fn from(result: Result<T, CloudError>) -> Self {
        match result {
            Ok(value) => Reply::Ok(value),
            Err(error) => Reply::Err(error),
        }
    }
}

impl<T> From<Reply<T>> for Result<T, CloudError> {
    fn from(reply: Reply<T>) -> Self {
        match reply {
            Reply::Ok(value) => Ok(value),
            Reply::Err(error) => Err(error),
        }
    }
}

/// How a trait method's parameter type travels: as its owned form, lent back to the method
/// on the server (`&str` travels as a `String`, `&[T]` as a `Vec<T>`).
pub trait Arg<'a>: Sized {
    type Owned: DeserializeOwned + Send;

    fn lend(owned: &'a Self::Owned) -> Self;
}

impl<'a> Arg<'a> for &'a str {
    type Owned = String;

    fn lend(owned: &'a String) -> Self {
        owned
    }
}

impl<'a> Arg<'a> for Option<&'a str> {
    type Owned = Option<String>;

    fn lend(owned: &'a Option<String>) -> Self {
        owned.as_deref()
    }
}

impl<'a> Arg<'a> for Option<String> {
    type Owned = Option<String>;

    fn lend(owned: &'a Option<String>) -> Self {
        owned.clone()
    }
}

impl<'a> Arg<'a> for u64 {
    type Owned = u64;

    fn lend(owned: &'a u64) -> Self {
        *owned
    }
}

impl<'a, T: DeserializeOwned + Send + 'a> Arg<'a> for &'a [T] {
    type Owned = Vec<T>;

    fn lend(owned: &'a Vec<T>) -> Self {
        owned
    }
}

/// Request types passed by reference travel as themselves.
macro_rules! by_reference {
    ($($request:ty),* $(,)?) => {
        $(
            impl<'a> Arg<'a> for &'a $request {
                type Owned = $request;

                fn lend(owned: &'a $request) -> Self {
                    owned
                }
            }
        )*
    };
}

by_reference!(
    BuildRequest,
    DeploymentRequest,
    CommandRequest,
    TargetGroupSpec,
    ListenerSpec,
    HttpListenerSpec,
    ListenerAction,
    RuleSpec,
    CertificateMaterial,
);

/// Every [`reconcilers::cloud::CloudProvider`] call, by capability (the provider's method
/// that hands it out, then the trait), each `read` or `write` (a write changes the account:
/// the server records who made it). Expands `$then!` with the list.
macro_rules! cloud_calls {
    ($then:ident) => {
        $then! {
            object_storage: ObjectStorage {
                read head_object(bucket: &str, key: &str, version: Option<&str>) -> ObjectHead;
                read latest_version(bucket: &str, key: &str) -> Option<String>;
                read get_range(
                    bucket: &str, key: &str, version: &str, start: u64, len: u64
                ) -> Bytes;
            }
            builds: Builds {
                write start_build(request: &BuildRequest) -> Build;
                read batch_get_builds(ids: &[String]) -> Vec<Build>;
                read list_build_ids(project: &str, next_token: Option<String>) -> Page<String>;
            }
            deployments: Deployments {
                write create_deployment(request: &DeploymentRequest) -> Deployment;
                read get_deployment(id: &str) -> Deployment;
                write stop_deployment(id: &str) -> ();
                read list_deployment_ids(
                    application: &str,
                    deployment_group: &str,
                    statuses: &[DeploymentStatus],
                    next_token: Option<String>
                ) -> Page<String>;
            }
            fleet: Fleet {
                read running_instances(name: &str) -> Vec<Instance>;
            }
            run_command: RunCommand {
                write send_command(request: &CommandRequest) -> String;
                read invocations(command_id: &str) -> Vec<Invocation>;
            }
            load_balancing: LoadBalancing {
                read describe_load_balancers(arns: &[String]) -> Vec<LoadBalancer>;
                read describe_target_groups(arns: &[String]) -> Vec<TargetGroup>;
                read list_target_groups() -> Vec<TargetGroup>;
                write create_target_group(spec: &TargetGroupSpec) -> TargetGroup;
                write delete_target_group(arn: &str) -> ();
                write register_targets(target_group_arn: &str, targets: &[Target]) -> ();
                write deregister_targets(target_group_arn: &str, targets: &[Target]) -> ();
                read describe_target_health(target_group_arn: &str) -> Vec<TargetHealth>;
                read describe_listeners(load_balancer_arn: &str) -> Vec<Listener>;
                write create_listener(spec: &ListenerSpec) -> Listener;
                write delete_listener(arn: &str) -> ();
                write create_http_listener(spec: &HttpListenerSpec) -> Listener;
                write modify_listener_default_action(
                    listener_arn: &str, action: &ListenerAction
                ) -> Listener;
                read describe_rules(listener_arn: &str) -> Vec<ListenerRule>;
                write create_rule(spec: &RuleSpec) -> ListenerRule;
                write modify_rule(
                    rule_arn: &str, path_patterns: &[String], action: &ListenerAction
                ) -> ListenerRule;
                write delete_rule(rule_arn: &str) -> ();
                read describe_listener_certificates(listener_arn: &str) -> Vec<String>;
                write add_listener_certificates(
                    listener_arn: &str, certificate_arns: &[String]
                ) -> ();
                write remove_listener_certificates(
                    listener_arn: &str, certificate_arns: &[String]
                ) -> ();
                read describe_tags(arns: &[String]) -> Vec<(String, Vec<Tag>)>;
                write add_tags(arn: &str, tags: &[Tag]) -> ();
            }
            certificates: Certificates {
                write import_certificate(
                    material: &CertificateMaterial, existing_arn: Option<&str>, tags: &[Tag]
                ) -> String;
                read describe_certificate(arn: &str) -> CertificateSummary;
                read list_certificates() -> Vec<String>;
                write delete_certificate(arn: &str) -> ();
                read list_tags(arn: &str) -> Vec<Tag>;
                write add_tags(arn: &str, tags: &[Tag]) -> ();
            }
        }
    };
}

pub(crate) use cloud_calls;

/// Whether a call of the table changes the account.
macro_rules! writes {
    (read) => {
        false
    };
    (write) => {
        true
    };
}

pub(crate) use writes;

//! Contract suites: one per cloud trait, each case run against the simulated AWS, against the
//! same simulation through the remote sim protocol, and against moto through the real SDK
//! adapters. Where moto falls short of AWS, the backend's [`Gaps`]
//! says so with the reason, and the simulated AWS keeps the behaviour pinned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use reconcilers::cloud::{
    Builds, CertificateMaterial, Certificates, Deployments, Fleet, LoadBalancing, ObjectStorage,
    RunCommand,
};

use crate::support::unique;

mod builds;
mod certificates;
mod deployments;
mod fleet;
mod load_balancing;
pub(crate) mod moto;
mod remote_sim;
mod sim;

/// Where moto differs from AWS (moto 5.2, pinned in tests/requirements.txt).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gaps {
    /// moto creates a second listener on a port that already has one.
    pub duplicate_listeners_allowed: bool,
    /// moto ignores the 50-listeners-per-NLB quota.
    pub listener_quota_ignored: bool,
    /// moto keeps no deployment-group lock: a second deployment is accepted.
    pub concurrent_deployments_allowed: bool,
    /// moto has no StopDeployment.
    pub stop_deployment_missing: bool,
    /// moto still lists a target right after its deregistration.
    pub deregistered_targets_linger: bool,
    /// moto has no ListCommandInvocations.
    pub command_invocations_missing: bool,
    /// moto answers an identical CreateTargetGroup with DuplicateTargetGroupName; AWS returns
    /// the existing group.
    pub identical_target_group_rejected: bool,
    /// moto runs no build: it reports one succeeded at the first look and writes no artifact.
    pub builds_write_no_artifact: bool,
    /// moto's deployments stay `Created`: no agent ever runs them.
    pub deployments_never_progress: bool,
    /// moto's deployment ids are UUIDs; AWS's are `d-` and nine letters and digits.
    pub deployment_ids_not_aws_shaped: bool,
    /// moto answers DeleteRule for a rule that is gone with success; AWS with RuleNotFound.
    pub missing_rule_deleted_quietly: bool,
}

/// One backend with the objects every contract needs already in place.
pub struct Backend {
    pub region: String,
    pub account: String,
    pub object_storage: Arc<dyn ObjectStorage>,
    pub load_balancing: Arc<dyn LoadBalancing>,
    pub certificates: Arc<dyn Certificates>,
    pub builds: Arc<dyn Builds>,
    pub deployments: Arc<dyn Deployments>,
    pub fleet: Arc<dyn Fleet>,
    pub run_command: Arc<dyn RunCommand>,
    pub vpc_id: String,
    pub nlb_arn: String,
    /// The proxy ALB, with an HTTPS listener on 443 and port 80 free.
    pub alb_arn: String,
    pub alb_listener_arn: String,
    /// An HTTP target group in the VPC, used by no load balancer: the ACME responder's.
    pub responder_target_group_arn: String,
    pub name_tag: String,
    pub instance_ids: Vec<String>,
    pub codebuild_project: String,
    pub codedeploy_application: String,
    pub deployment_group: String,
    pub bucket: String,
    pub source_version: String,
    pub gaps: Gaps,
    settle: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>,
}

impl Backend {
    /// A name unique to this test, short enough for a target group (32 characters).
    pub fn unique_name(&self, prefix: &str) -> String {
        let name = unique(prefix);
        name[..name.len().min(32)].to_owned()
    }

    /// A listener port no other test of this process uses.
    pub fn unique_port(&self) -> u16 {
        static NEXT: AtomicU16 = AtomicU16::new(21000);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Lets time pass so asynchronous work (commands, builds) completes.
    pub async fn settle(&self) {
        (self.settle)().await;
    }

    /// A fresh self-signed certificate for `domain`.
    pub fn certificate_material(&self, domain: &str) -> CertificateMaterial {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).expect("params");
        // Like Let's Encrypt's certificates: the common name is the first domain.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, domain);
        let certificate = params.self_signed(&key).expect("certificate");
        CertificateMaterial {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
            chain_pem: String::new(),
        }
    }

    pub async fn import_test_certificate(&self, domain: &str) -> String {
        let material = self.certificate_material(domain);
        self.certificates
            .import_certificate(&material, None, &[])
            .await
            .expect("import")
    }
}

macro_rules! contracts {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod against_sim {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$module::$case(super::sim::backend().await).await;
                }
            )*
        }

        mod against_remote_sim {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$module::$case(super::remote_sim::backend().await).await;
                }
            )*
        }

        mod against_moto {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$module::$case(super::moto::backend().await).await;
                }
            )*
        }
    };
}

contracts!(
    load_balancing::target_groups_are_created_found_tagged_and_deleted,
    load_balancing::targets_register_and_report_health,
    load_balancing::listeners_forward_to_their_target_group,
    load_balancing::an_nlb_holds_fifty_listeners,
    load_balancing::listener_certificates_attach_and_detach,
    load_balancing::unknown_objects_are_not_found,
    load_balancing::http_listeners_redirect_and_rules_forward_paths,
    load_balancing::the_challenge_listener_converges_and_heals,
    certificates::certificates_import_reimport_and_delete,
    builds::builds_start_and_are_found_again,
    builds::a_succeeded_build_wrote_its_artifact,
    deployments::deployments_are_created_and_one_runs_per_group,
    deployments::deployments_run_to_success,
    fleet::running_instances_are_found_by_name_tag,
    fleet::commands_report_one_result_per_instance,
);

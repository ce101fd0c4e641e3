//! The one list of every [`reconcilers::cloud::CloudProvider`] call, as a macro that hands it
//! to another: the remote simulated AWS's client and server ([`crate::sim_protocol`]) and the
//! controller's fencing guard (`controller/fenced.rs`) each expand it into their
//! implementations of the traits, so those cannot drift from the traits or from each other.

/// Every [`reconcilers::cloud::CloudProvider`] call, by capability (the provider's method
/// that hands it out, then the trait), each `read` or `write` (a write changes the account:
/// the sim server journals it, the fencing guard checks the lease first). Expands `$then!`
/// with the list.
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

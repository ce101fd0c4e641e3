//! The `Fleet` and `RunCommand` contracts.

use reconcilers::cloud::{CommandRequest, CommandTarget};

use super::Backend;

pub(super) async fn running_instances_are_found_by_name_tag(backend: Backend) {
    let instances = backend
        .fleet
        .running_instances(&backend.name_tag)
        .await
        .expect("list");
    let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    let mut expected: Vec<&str> = backend.instance_ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let none = backend
        .fleet
        .running_instances(&backend.unique_name("nobody"))
        .await
        .expect("list");
    assert!(none.is_empty());
}

pub(super) async fn commands_report_one_result_per_instance(backend: Backend) {
    let request = CommandRequest {
        target: CommandTarget::Instances(backend.instance_ids.clone()),
        commands: vec!["true".to_owned()],
        comment: "contract".to_owned(),
        timeout_seconds: 60,
    };
    let command_id = backend
        .run_command
        .send_command(&request)
        .await
        .expect("send");
    backend.settle().await;
    let invocations = backend.run_command.invocations(&command_id).await;
    if backend.gaps.command_invocations_missing {
        assert!(
            invocations.is_err(),
            "moto learned ListCommandInvocations: drop the gap"
        );
        return;
    }
    let invocations = invocations.expect("invocations");
    let mut instances: Vec<&str> = invocations.iter().map(|i| i.instance_id.as_str()).collect();
    instances.sort_unstable();
    let mut expected: Vec<&str> = backend.instance_ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(instances, expected);
    assert!(invocations.iter().all(|i| i.command_id == command_id));
}

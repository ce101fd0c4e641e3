//! Telling the controller's AWS calls apart: reads and mutations, by operation name, as the
//! adapters count them (`service:Operation` and an outcome).

use reconcilers::cloud::CallKey;

/// Name prefixes of AWS operations that only read.
const READS: [&str; 5] = ["Describe", "List", "Get", "Head", "BatchGet"];
/// Name prefixes of AWS operations that change something.
const MUTATIONS: [&str; 21] = [
    "Create",
    "Delete",
    "Modify",
    "Register",
    "Deregister",
    "Add",
    "Remove",
    "Put",
    "Start",
    "Stop",
    "Send",
    "Import",
    "Run",
    "Terminate",
    "Update",
    "Set",
    "Tag",
    "Untag",
    "Attach",
    "Detach",
    "Cancel",
];

/// The calls whose operation changes something, as `service:Operation outcome ×count`.
pub(super) fn mutations(calls: &[(CallKey, u64)]) -> Vec<String> {
    let changing: Vec<(CallKey, u64)> = calls
        .iter()
        .filter(|((_, operation, _), _)| is_mutation(operation))
        .cloned()
        .collect();
    described(&changing)
}

/// Whether an AWS operation changes something, by its name; an operation neither list knows
/// fails the test rather than pass unseen.
fn is_mutation(operation: &str) -> bool {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| operation.starts_with(p));
    if starts(&READS) {
        return false;
    }
    assert!(
        starts(&MUTATIONS),
        "operation {operation} is neither a known read nor a known mutation: classify it"
    );
    true
}

pub(super) fn described(calls: &[(CallKey, u64)]) -> Vec<String> {
    calls
        .iter()
        .map(|((service, operation, outcome), n)| format!("{service}:{operation} {outcome} ×{n}"))
        .collect()
}

pub(super) fn count(calls: &[(CallKey, u64)], operation: &str) -> u64 {
    calls
        .iter()
        .filter(|((service, name, _), _)| format!("{service}:{name}") == operation)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn operations_are_told_apart_by_name() {
    let cases = [
        ("DescribeTargetHealth", false),
        ("ListBuildsForProject", false),
        ("BatchGetBuilds", false),
        ("HeadObject", false),
        ("GetDeployment", false),
        ("CreateListener", true),
        ("DeregisterTargets", true),
        ("AddTags", true),
        ("SendCommand", true),
        ("StartBuild", true),
        ("PutObject", true),
        ("ImportCertificate", true),
    ];
    for (operation, mutating) in cases {
        assert_eq!(is_mutation(operation), mutating, "{operation}");
    }
}

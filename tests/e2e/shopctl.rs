//! The `shopctl` binary against a real server: the README's YAML files, deploys, errors.

use std::process::Command;

use crate::support::dev_server;

fn shopctl(server: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shopctl"))
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("SHOPCTL_TOKEN")
        .output()
        .expect("run shopctl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_apply_and_shops_deploy() {
    let (server, _aws, _store) = dev_server().await;
    let url = server.url();
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || shopctl(&url, args))
    };

    let region = example("region.yaml");
    let group = example("group.yaml");
    let url2 = url.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        shopctl(&url2, &["region", "put", "-f", &region]);
        shopctl(&url2, &["group", "put", "-f", &group])
    })
    .await
    .expect("join");
    assert!(ok, "group put failed: {err}");
    assert_eq!(out.trim(), "instance group shops-eu-a stored");

    let (ok, out, err) = run(&["region", "get", "eu-west-1"]).await.expect("join");
    assert!(ok, "{err}");
    assert!(
        out.contains("acme_responder_target_group_arn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/acme-responder/"),
        "the example's responder round-trips: {out}"
    );

    let (ok, out, _) = run(&["group", "list", "--region", "eu-west-1"])
        .await
        .expect("join");
    assert!(
        ok && out.contains("shops-eu-a") && out.contains("20000-20999"),
        "{out}"
    );

    let (ok, out, err) = run(&[
        "deploy",
        "example.es-hs.com",
        "--region",
        "eu-west-1",
        "--source-bucket",
        "shop-sources",
    ])
    .await
    .expect("join");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("example.es-hs.com: recorded at generation 1"),
        "{out}"
    );

    let (ok, out, _) = run(&["get", "example.es-hs.com", "-o", "json"])
        .await
        .expect("join");
    assert!(ok);
    let shop: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shop["spec"]["generation"], 1);
    assert_eq!(shop["status"]["blocked_by"]["kind"], "artifact");

    let (ok, out, err) = run(&[
        "deploy",
        "a.com;",
        "--region",
        "eu-west-1",
        "--source-bucket",
        "shop-sources",
    ])
    .await
    .expect("join");
    assert!(!ok, "a hostile name was accepted: {out}");
    assert_eq!(
        err.trim(),
        "error: shop_domain \"a.com;\" contains `;`; only letters, digits, hyphens and dots are allowed"
    );

    let (ok, out, _) = run(&["list"]).await.expect("join");
    assert!(ok && out.lines().count() == 2, "{out}");
}

#[tokio::test]
async fn an_unreachable_server_is_reported() {
    let (ok, _, err) = tokio::task::spawn_blocking(|| shopctl("http://127.0.0.1:1", &["list"]))
        .await
        .expect("join");
    assert!(!ok);
    assert!(
        err.starts_with("error: connect to http://127.0.0.1:1"),
        "{err}"
    );
}

/// `shopctl patch`: the README's policy file goes in, and `status` shows when the fleet was
/// last patched and how its last run went.
#[tokio::test(flavor = "multi_thread")]
async fn patch_status_shows_when_each_fleet_was_last_patched() {
    use reconcilers::patching::{FleetId, InstanceResult, InstanceState, RunState};

    let (server, _aws, store) = dev_server().await;
    let url = server.url();
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            shopctl(&url, &args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (ok, out, err) = run(args(&["patch", "put", "-f", &example("patch-policy.yaml")]))
        .await
        .expect("join");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "patch policy of group/shops-eu-a stored");

    // A run that patched both instances, finished 2024-01-06 03:25 UTC.
    let fleet = FleetId::parse("group/shops-eu-a").expect("valid");
    let instances = vec!["i-1".to_owned(), "i-2".to_owned()];
    let started = 1_704_499_200_000 + 3 * 3_600_000;
    let finished = started + 25 * 60_000;
    let patch_run = store
        .store
        .start_patch_run(&fleet, &instances, None, started)
        .await
        .expect("start");
    for id in &instances {
        let result = InstanceResult {
            instance_id: id.clone(),
            state: InstanceState::Succeeded,
            started_at: started,
            finished_at: Some(finished),
            output: "Complete!".to_owned(),
        };
        store
            .store
            .record_patch_result(patch_run.id, &result)
            .await
            .expect("result");
    }
    let message = "patched 2 of 2 instance(s)";
    store
        .store
        .finish_patch_run(patch_run.id, RunState::Succeeded, message, finished)
        .await
        .expect("finish");

    let (ok, out, err) = run(args(&["patch", "status", "--instances"]))
        .await
        .expect("join");
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|line| line.starts_with("group/shops-eu-a"))
        .unwrap_or_else(|| panic!("no row for the fleet: {out}"));
    assert!(row.contains("2024-01-06 03:25"), "last patched: {row}");
    assert!(row.contains("succeeded 2/2"), "last run: {row}");
    assert!(out.contains(message) && out.contains("i-2"), "{out}");

    let (ok, out, _) = run(args(&["patch", "status", "-o", "json"]))
        .await
        .expect("join");
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status[0]["last_patched"], finished);
    assert_eq!(status[0]["last_run"]["results"][1]["state"], "succeeded");
    assert_eq!(
        status[0]["policy"]["weekdays"],
        serde_json::json!(["sat", "sun"])
    );

    let (ok, _, err) = run(args(&["patch", "put", "-f", &example("region.yaml")]))
        .await
        .expect("join");
    assert!(!ok, "a region file is no patch policy");
    assert!(err.contains("unknown field"), "{err}");
}

//! Tests of the nginx directory against the real nginx binary: install, quarantine, removal,
//! long server names, thousands of shops, and generated hostnames.

use proptest::prelude::*;
use reconcilers::Hostname;
use reconcilers::nginx::{MAX_FILE_SHOP_DOMAIN_LEN, ProxySettings, ShopSite, Upstream, render};

use super::check::{is_included, nginx_messages};
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
    assert_eq!(
        dir_entries(temp.path()),
        ["other.es-hs.com.conf", "quarantine"]
    );
    assert_eq!(
        dir_entries(&temp.path().join("quarantine")),
        Vec::<String>::new()
    );
}

/// An operator's include pattern that also matches candidates (`<shop>.conf*`) fails every
/// check made while the candidate sits in the directory: the live check runs once it moved
/// aside, so the candidate is quarantined instead of the fleet being blamed.
#[tokio::test]
async fn a_candidate_an_operator_pattern_pulls_in_is_quarantined_not_blamed_on_the_fleet() {
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
    let pattern = temp.path().join("example.es-hs.com.conf.cand*");
    let operator = format!(
        "server {{\n    listen {TEST_LISTEN_PORT};\n    server_name operator.invalid;\n    include {};\n}}\n",
        pattern.display()
    );
    std::fs::write(temp.path().join("operator_includes.conf"), operator)
        .expect("write operator file");

    let next = shop_file(name.shop(), None, 2);
    let error = nginx
        .install(&name, &next)
        .await
        .expect_err("nginx rejects");

    let NginxError::CheckCandidate { message, .. } = &error else {
        panic!("expected a rejected candidate, got {error:?}");
    };
    assert!(
        message.contains("\"server\" directive is not allowed here"),
        "{message}"
    );
    assert_eq!(nginx.read(&name).await.expect("read"), Some(good));
    let quarantined = nginx.quarantined(&name).await.expect("read quarantine");
    assert_eq!(quarantined.map(|q| q.text), Some(next));
    nginx.check().await.expect("live config still passes");
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

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

/// A request's domains as the fuzz test generates them: built from labels, then often
/// damaged with characters that would end an nginx directive, open a block, expand a
/// variable, split a shell word, or look like a dot or a letter without being one.
struct NameFuzzer {
    state: u64,
}

/// What a hostile request may slip into a name.
const HOSTILE: &[&str] = &[
    ";", "{", "}", "$", "$host", "(", ")", "`", "*", "_", "\"", "'", "\\", "/", "#", "~", " ",
    "\t", "\n", "\r", "\0", ":", "@", "%", "A", "Z", "..", "-", "xn--", "é", "ß", "İ", "ı",
    "\u{ff0e}", "\u{3002}", "\u{200b}", "\u{fe0f}", "к", "\u{ff21}", "*.",
];
const LABEL_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";

impl NameFuzzer {
    fn new(seed: u64) -> Self {
        Self { state: seed.max(1) }
    }

    /// xorshift64*: fixed, small, and the same on every machine.
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("fits")
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn label(&mut self) -> String {
        // Mostly ordinary lengths, sometimes around the 63-character limit.
        let len = if self.chance(5) {
            60 + self.below(8)
        } else {
            1 + self.below(14)
        };
        (0..len)
            .map(|_| char::from(LABEL_CHARS[self.below(LABEL_CHARS.len())]))
            .collect()
    }

    fn name(&mut self, parent: &str) -> String {
        let most = if self.chance(3) { 40 } else { 3 };
        let labels = 1 + self.below(most);
        let mut name: Vec<String> = (0..labels).map(|_| self.label()).collect();
        name.push(parent.to_owned());
        let mut name = name.join(".");
        if self.chance(35) {
            for _ in 0..1 + self.below(3) {
                let at = self.boundary(&name);
                name.insert_str(at, HOSTILE[self.below(HOSTILE.len())]);
            }
        }
        if self.chance(2) {
            name.push('.');
        }
        name
    }

    /// A random char boundary of `text`.
    fn boundary(&mut self, text: &str) -> usize {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(at, _)| at)
            .chain([text.len()])
            .collect();
        boundaries[self.below(boundaries.len())]
    }

    /// Anything at all, from the label characters and the hostile pieces.
    fn noise(&mut self) -> String {
        (0..self.below(40))
            .map(|_| {
                if self.chance(70) {
                    char::from(LABEL_CHARS[self.below(LABEL_CHARS.len())]).to_string()
                } else {
                    HOSTILE[self.below(HOSTILE.len())].to_owned()
                }
            })
            .collect()
    }

    fn request(&mut self) -> (String, Option<String>) {
        let shop = match self.below(10) {
            0 => self.noise(),
            1 => self.name("example.com"),
            _ => self.name("es-hs.com"),
        };
        let custom = match self.below(10) {
            0..=4 => None,
            5 => Some(self.noise()),
            6 => Some(self.name("es-hs.com")),
            _ => {
                let tld = ["com", "shop", "vn", "co.uk", "example"][self.below(5)];
                Some(self.name(tld))
            }
        };
        (shop, custom)
    }
}

/// One `nginx -t` of every file written since the last, which are then removed.
async fn check_and_clear(nginx: &NginxDir, seed: u64) {
    if let Err(error) = nginx.check().await {
        panic!("seed {seed}: nginx refused generated configs: {error}");
    }
    for file in nginx.list().await.expect("list") {
        std::fs::remove_file(nginx.path(&file)).expect("clear the batch");
    }
}

fn is_config_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Issue #7's fuzzing: at least 100,000 generated deploy requests go through the write path's
/// domain rules (`validate_domains`, what `DeployShop` runs), and every accepted one is
/// rendered and loaded by the real `nginx -t`, a few thousand files per check. An accepted
/// name holds only what a hostname may (nothing that ends a directive, opens a block, expands
/// a variable or splits a shell word), and its file holds exactly one server block whose
/// `server_name` is exactly the shop's names. `SHOP_TEST_FUZZ_NAMES` and
/// `SHOP_TEST_FUZZ_SEED` change the count and the seed.
#[tokio::test]
async fn a_hundred_thousand_generated_requests_are_refused_or_load_in_nginx() {
    const BATCH: usize = 5_000;
    let count: usize = std::env::var("SHOP_TEST_FUZZ_NAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("SHOP_TEST_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_2026);
    let parents = [host("es-hs.com")];
    let mut fuzzer = NameFuzzer::new(seed);
    let temp = tempfile::tempdir().expect("temp dir");
    let nginx = nginx_dir(temp.path()).expect("nginx");
    let (mut accepted, mut with_custom, mut checks) = (0_usize, 0_usize, 0_usize);
    let mut pending = 0_usize;

    for index in 0..count {
        let (shop, custom) = fuzzer.request();
        let Ok((shop, custom)) =
            crate::intent::validate_domains(&shop, custom.as_deref(), &parents)
        else {
            continue;
        };
        accepted += 1;
        with_custom += usize::from(custom.is_some());
        let names: Vec<&str> = std::iter::once(&shop)
            .chain(&custom)
            .map(Hostname::as_str)
            .collect();
        assert!(
            names.iter().all(|name| is_config_safe(name)),
            "seed {seed}, request {index}: accepted {names:?}"
        );
        let text = shop_file(&shop, custom.as_ref(), 1);
        let server_name = format!("    server_name {};", names.join(" "));
        assert_eq!(text.matches("server {").count(), 1, "{text}");
        assert_eq!(
            text.matches('{').count(),
            text.matches('}').count(),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|line| line.trim_start().starts_with("server_name"))
                .collect::<Vec<_>>(),
            [server_name.as_str()],
            "seed {seed}, request {index}"
        );
        let file = ConfigFileName::for_shop(&shop).expect("validated length");
        std::fs::write(nginx.path(&file), &text).expect("write shop file");
        pending += 1;
        if pending == BATCH {
            check_and_clear(&nginx, seed).await;
            (checks, pending) = (checks + 1, 0);
        }
    }
    if pending > 0 {
        check_and_clear(&nginx, seed).await;
        checks += 1;
    }

    eprintln!(
        "fuzz seed {seed}: {count} requests, {accepted} accepted ({with_custom} with a custom \
         domain), {checks} nginx checks"
    );
    // The generator must reach both sides, or the test proves nothing.
    assert!(
        accepted >= count / 10,
        "only {accepted} of {count} accepted"
    );
    assert!(
        count - accepted >= count / 10,
        "only {} refused",
        count - accepted
    );
    assert!(with_custom >= accepted / 10, "{with_custom} of {accepted}");
}

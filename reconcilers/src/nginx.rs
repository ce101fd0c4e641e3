//! One shop's nginx server block for the proxy fleet: rendering it, naming its file and
//! reading it back for drift detection.
//!
//! The proxies sit behind an ALB that terminates TLS, so a block listens on plain HTTP and
//! forwards to the shop's NLB port. Only typed values reach the text: [`Hostname`]s (lowercase
//! LDH names), integers and an IPv4 address, so no value can close a directive or open a
//! block. Writing the file, `nginx -t` and reloading the proxies belong to the binary
//! (`src/nginx.rs`) and the nginx_config reconciler.

use std::fmt::Display;
use std::net::Ipv4Addr;

use crate::hostname::Hostname;

/// Port the proxies listen on by default, behind the TLS-terminating ALB.
pub const DEFAULT_LISTEN_PORT: u16 = 80;

/// The Amazon-provided DNS server, reachable from every instance in a VPC at this link-local
/// address, so the proxies resolve NLB names without knowing the VPC's CIDR.
pub const AMAZON_DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);

/// Suffix of every shop file; the proxies include `<dir>/*.conf`.
pub const FILE_SUFFIX: &str = ".conf";

/// Longest suffix the config directory appends to a shop's file name (its candidate).
pub const LONGEST_FILE_SUFFIX: &str = ".conf.candidate";

/// Longest shop domain that names a file: file systems (ext4, EFS) allow 255 bytes per name,
/// so a 253-character hostname plus a suffix does not fit. The write path should refuse longer
/// shop domains; custom domains only appear inside the file and may use all 253.
pub const MAX_FILE_SHOP_DOMAIN_LEN: usize = 255 - LONGEST_FILE_SUFFIX.len();

const MANAGED_MARKER: &str = "# managed by shop-controller; edits here are overwritten";
const GENERATION_PREFIX: &str = "# generation: ";

/// A host and port nginx forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// A DNS name (an NLB's, say), resolved by the proxies at request time.
    pub host: Hostname,
    pub port: u16,
}

/// What one shop's server block says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopSite {
    pub shop_domain: Hostname,
    pub custom_domain: Option<Hostname>,
    /// The shop's NLB (its DNS name) and the shop's port on it.
    pub upstream: Upstream,
    /// The shop's spec generation, written into the header for drift detection.
    pub generation: i64,
}

/// Settings shared by every shop of a region's proxy fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Port the server blocks listen on (the ALB's target port).
    pub listen_port: u16,
    /// Where `/.well-known/acme-challenge/` goes; without one, the shop answers it.
    pub acme_responder: Option<Upstream>,
    /// DNS server nginx asks for upstream addresses at request time.
    pub resolver: Ipv4Addr,
}

/// The file name of a shop's config, `<shop_domain>.conf`. Built only from a [`Hostname`], so
/// it never holds a path separator, a leading dot or a name outside the include glob.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigFileName {
    shop: Hostname,
    name: String,
}

/// A shop domain too long to name its config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "shop domain {shop} is {len} characters long; nginx config file names allow at most \
     {MAX_FILE_SHOP_DOMAIN_LEN}"
)]
pub struct ShopDomainTooLong {
    pub shop: Hostname,
    pub len: usize,
}

/// How the file on disk compares with the rendered one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileDrift {
    /// Byte for byte what we would write.
    InSync,
    /// No file: never written, or deleted out of band.
    Missing,
    /// Different text: an older generation, or edited out of band (then the generation is
    /// usually unchanged or gone).
    Changed { observed_generation: Option<i64> },
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            listen_port: DEFAULT_LISTEN_PORT,
            acme_responder: None,
            resolver: AMAZON_DNS,
        }
    }
}

impl ConfigFileName {
    /// The file name of `shop`'s config.
    pub fn for_shop(shop: &Hostname) -> Result<Self, ShopDomainTooLong> {
        let len = shop.as_str().len();
        if len > MAX_FILE_SHOP_DOMAIN_LEN {
            return Err(ShopDomainTooLong {
                shop: shop.clone(),
                len,
            });
        }
        Ok(Self {
            shop: shop.clone(),
            name: format!("{shop}{FILE_SUFFIX}"),
        })
    }

    /// Reads a directory entry back; `None` for anything [`ConfigFileName::for_shop`] would not
    /// have produced (other files, upper case, candidates, temp files).
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(FILE_SUFFIX)?;
        let shop = Hostname::parse(stem).ok()?;
        if shop.as_str() != stem {
            return None;
        }
        Self::for_shop(&shop).ok()
    }

    /// The shop this file belongs to.
    pub fn shop(&self) -> &Hostname {
        &self.shop
    }

    /// The bare file name, `<shop_domain>.conf`.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for ConfigFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Renders the complete file for one shop: a header comment and one `server` block.
///
/// Upstreams are given to `proxy_pass` through variables on purpose. With a literal name nginx
/// resolves it once, when the config loads: a name that does not resolve where the config is
/// checked fails `nginx -t`, and a running proxy keeps an NLB's old addresses forever. With a
/// variable nginx resolves per request through `resolver`, honouring the record's TTL.
pub fn render(site: &ShopSite, settings: &ProxySettings) -> String {
    let mut lines = header(site);
    lines.push("server {".to_owned());
    lines.push(format!("    listen {};", word(settings.listen_port)));
    lines.push(format!("    server_name {};", server_names(site).join(" ")));
    lines.push(String::new());
    lines.extend(resolver(settings.resolver));
    if let Some(acme) = &settings.acme_responder {
        lines.push(String::new());
        lines.extend(acme_location(acme));
    }
    lines.push(String::new());
    lines.extend(shop_location(&site.upstream));
    lines.push("}".to_owned());
    lines.join("\n") + "\n"
}

/// The generation in a file's header, if it has one (a file we wrote).
pub fn parse_generation(text: &str) -> Option<i64> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix(GENERATION_PREFIX))
        .and_then(|value| value.trim().parse().ok())
}

/// Compares the rendered file with what is on disk. Byte for byte: rendering is
/// deterministic, so any other difference was made by someone else.
pub fn compare(desired: &str, observed: Option<&str>) -> FileDrift {
    match observed {
        None => FileDrift::Missing,
        Some(text) if text == desired => FileDrift::InSync,
        Some(text) => FileDrift::Changed {
            observed_generation: parse_generation(text),
        },
    }
}

fn header(site: &ShopSite) -> Vec<String> {
    vec![
        MANAGED_MARKER.to_owned(),
        format!("# shop: {}", word(&site.shop_domain)),
        format!("{GENERATION_PREFIX}{}", word(site.generation)),
    ]
}

fn server_names(site: &ShopSite) -> Vec<String> {
    std::iter::once(&site.shop_domain)
        .chain(&site.custom_domain)
        .map(word)
        .collect()
}

/// `ipv6=off`: the proxies reach NLBs over IPv4; a dualstack name's AAAA records would only
/// add failed connection attempts.
fn resolver(address: Ipv4Addr) -> Vec<String> {
    vec![
        format!("    resolver {} ipv6=off;", word(address)),
        "    resolver_timeout 5s;".to_owned(),
    ]
}

/// `^~` so that no regex location a future template adds can take challenges away.
fn acme_location(acme: &Upstream) -> Vec<String> {
    vec![
        "    location ^~ /.well-known/acme-challenge/ {".to_owned(),
        format!("        set $acme_upstream {};", upstream_address(acme)),
        "        proxy_pass http://$acme_upstream;".to_owned(),
        "        proxy_set_header Host $host;".to_owned(),
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;".to_owned(),
        "        proxy_connect_timeout 5s;".to_owned(),
        "        proxy_read_timeout 10s;".to_owned(),
        "    }".to_owned(),
    ]
}

/// X-Forwarded-Proto is the ALB's: it saw the client's scheme, the proxy only sees HTTP.
fn shop_location(upstream: &Upstream) -> Vec<String> {
    vec![
        "    location / {".to_owned(),
        format!("        set $shop_upstream {};", upstream_address(upstream)),
        "        proxy_pass http://$shop_upstream;".to_owned(),
        "        proxy_http_version 1.1;".to_owned(),
        "        proxy_set_header Host $host;".to_owned(),
        "        proxy_set_header X-Real-IP $remote_addr;".to_owned(),
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;".to_owned(),
        "        proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;".to_owned(),
        "        proxy_connect_timeout 5s;".to_owned(),
        "        proxy_send_timeout 60s;".to_owned(),
        "        proxy_read_timeout 60s;".to_owned(),
        "    }".to_owned(),
    ]
}

fn upstream_address(upstream: &Upstream) -> String {
    format!("{}:{}", word(&upstream.host), word(upstream.port))
}

/// Formats one interpolated value. The types already guarantee `[a-z0-9.-]+`; the assertion
/// catches a future field that slips in a type without that guarantee.
fn word(value: impl Display) -> String {
    let text = value.to_string();
    debug_assert!(
        is_config_word(&text),
        "unsafe value {text:?} in nginx config"
    );
    text
}

fn is_config_word(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Hostname {
        Hostname::parse(name).expect("valid test hostname")
    }

    fn site(custom_domain: Option<&str>) -> ShopSite {
        ShopSite {
            shop_domain: host("example.es-hs.com"),
            custom_domain: custom_domain.map(host),
            upstream: Upstream {
                host: host("shops-0123.elb.eu-west-1.amazonaws.com"),
                port: 8123,
            },
            generation: 7,
        }
    }

    const EXPECTED_WITH_ACME: &str = "\
# managed by shop-controller; edits here are overwritten
# shop: example.es-hs.com
# generation: 7
server {
    listen 80;
    server_name example.es-hs.com shop.example.com;

    resolver 169.254.169.253 ipv6=off;
    resolver_timeout 5s;

    location ^~ /.well-known/acme-challenge/ {
        set $acme_upstream acme.internal.example:8402;
        proxy_pass http://$acme_upstream;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 5s;
        proxy_read_timeout 10s;
    }

    location / {
        set $shop_upstream shops-0123.elb.eu-west-1.amazonaws.com:8123;
        proxy_pass http://$shop_upstream;
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;
        proxy_connect_timeout 5s;
        proxy_send_timeout 60s;
        proxy_read_timeout 60s;
    }
}
";

    #[test]
    fn renders_the_whole_block_with_custom_domain_and_acme() {
        let settings = ProxySettings {
            acme_responder: Some(Upstream {
                host: host("acme.internal.example"),
                port: 8402,
            }),
            ..ProxySettings::default()
        };

        assert_eq!(
            render(&site(Some("shop.example.com")), &settings),
            EXPECTED_WITH_ACME
        );
    }

    #[test]
    fn options_change_only_their_lines() {
        let custom_port = ProxySettings {
            listen_port: 8080,
            resolver: Ipv4Addr::new(10, 0, 0, 2),
            ..ProxySettings::default()
        };
        let cases: [(ShopSite, ProxySettings, &[&str], &[&str]); 3] = [
            (
                site(None),
                ProxySettings::default(),
                &["    server_name example.es-hs.com;", "    listen 80;"],
                &["acme", "shop.example.com"],
            ),
            (
                site(None),
                custom_port,
                &["    listen 8080;", "    resolver 10.0.0.2 ipv6=off;"],
                &["listen 80;", "169.254.169.253"],
            ),
            (
                ShopSite {
                    generation: -3,
                    ..site(Some("xn--mnchen-3ya.de"))
                },
                ProxySettings::default(),
                &[
                    "# generation: -3",
                    "    server_name example.es-hs.com xn--mnchen-3ya.de;",
                ],
                &[],
            ),
        ];
        for (site, settings, present, absent) in cases {
            let text = render(&site, &settings);
            for line in present {
                assert!(
                    text.lines().any(|l| l == *line),
                    "{line:?} missing in\n{text}"
                );
            }
            for fragment in absent {
                assert!(!text.contains(fragment), "{fragment:?} present in\n{text}");
            }
        }
    }

    #[test]
    fn rendering_has_one_server_block_and_balanced_braces() {
        let text = render(&site(Some("shop.example.com")), &ProxySettings::default());

        assert_eq!(text.matches("server {").count(), 1);
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(text.lines().all(|l| l.is_empty()
            || l.starts_with('#')
            || l.ends_with(';')
            || l.ends_with('{')
            || l.ends_with('}')));
    }

    #[test]
    fn generation_is_read_back_from_the_header_only() {
        let rendered = render(&site(None), &ProxySettings::default());
        let cases = [
            (rendered.as_str(), Some(7)),
            ("# generation: 42\nserver {}\n", Some(42)),
            ("# generation: -1\n", Some(-1)),
            ("server {}\n# generation: 42\n", None),
            ("# generation: many\n", None),
            ("# generation: 99999999999999999999\n", None),
            ("", None),
            ("server { listen 80; }\n", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_generation(text), expected, "{text:?}");
        }
    }

    #[test]
    fn comparison_tells_missing_changed_and_in_sync_apart() {
        let desired = render(&site(None), &ProxySettings::default());
        let older = render(
            &ShopSite {
                generation: 6,
                ..site(None)
            },
            &ProxySettings::default(),
        );
        let edited = desired.replace("60s", "600s");
        let cases = [
            (None, FileDrift::Missing),
            (Some(desired.as_str()), FileDrift::InSync),
            (
                Some(older.as_str()),
                FileDrift::Changed {
                    observed_generation: Some(6),
                },
            ),
            (
                Some(edited.as_str()),
                FileDrift::Changed {
                    observed_generation: Some(7),
                },
            ),
            (
                Some("server {}\n"),
                FileDrift::Changed {
                    observed_generation: None,
                },
            ),
        ];
        for (observed, expected) in cases {
            assert_eq!(compare(&desired, observed), expected, "{observed:?}");
        }
    }

    #[test]
    fn file_names_come_only_from_hostnames() {
        let name = ConfigFileName::for_shop(&host("example.es-hs.com")).expect("short enough");
        assert_eq!(name.as_str(), "example.es-hs.com.conf");
        assert_eq!(name.shop(), &host("example.es-hs.com"));

        for (entry, parsed) in [
            ("example.es-hs.com.conf", Some("example.es-hs.com")),
            ("xn--mnchen-3ya.de.conf", Some("xn--mnchen-3ya.de")),
            ("Example.es-hs.com.conf", None),
            ("example.es-hs.com.conf.candidate", None),
            ("example.es-hs.com", None),
            ("default.conf", None),
            (".conf", None),
            ("../etc/passwd.conf", None),
            ("a b.com.conf", None),
        ] {
            let actual = ConfigFileName::parse(entry);
            assert_eq!(
                actual.as_ref().map(|n| n.shop().as_str()),
                parsed,
                "{entry:?}"
            );
            if let Some(name) = actual {
                assert_eq!(name.as_str(), entry);
            }
        }
    }

    #[test]
    fn file_names_fit_every_file_system_name_limit() {
        let longest = host(&format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(48)));
        let too_long = host(&format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(49)));
        assert_eq!(longest.as_str().len(), MAX_FILE_SHOP_DOMAIN_LEN);

        let name = ConfigFileName::for_shop(&longest).expect("fits");
        assert_eq!(format!("{name}.candidate").len(), 255);
        assert_eq!(
            ConfigFileName::for_shop(&too_long),
            Err(ShopDomainTooLong {
                shop: too_long.clone(),
                len: 241
            })
        );
        assert_eq!(ConfigFileName::parse(&format!("{too_long}.conf")), None);
    }

    #[test]
    fn config_words_are_lowercase_ldh_and_dots_only() {
        for (value, safe) in [
            ("example.com", true),
            ("8123", true),
            ("-3", true),
            ("169.254.169.253", true),
            ("", false),
            ("a;b", false),
            ("a b", false),
            ("a}", false),
            ("$host", false),
            ("A.com", false),
            ("::1", false),
        ] {
            assert_eq!(is_config_word(value), safe, "{value:?}");
        }
    }
}

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::cloud::CaaRecord;

const GA_1: Ipv4Addr = Ipv4Addr::new(75, 2, 0, 1);
const GA_2: Ipv4Addr = Ipv4Addr::new(99, 83, 0, 1);

fn region() -> Vec<IpAddr> {
    vec![GA_1.into(), GA_2.into()]
}

fn domain() -> Hostname {
    Hostname::parse("shop.example.com").expect("hostname")
}

fn a(addresses: &[Ipv4Addr]) -> DnsAnswers {
    DnsAnswers {
        a: addresses.to_vec(),
        ..DnsAnswers::default()
    }
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().expect("ipv6")
}

fn caa(critical: bool, tag: &str, value: &str) -> CaaRecord {
    CaaRecord {
        critical,
        tag: tag.to_owned(),
        value: value.to_owned(),
    }
}

fn check(answers: &DnsAnswers) -> Diagnosis {
    diagnose(
        &domain(),
        Ok(answers),
        &region(),
        LETS_ENCRYPT_CAA_IDENTITY,
        None,
    )
}

#[test]
fn dns_cases_give_their_findings() {
    let cases: Vec<(&str, DnsAnswers, Vec<&str>)> = vec![
        (
            "both static ips",
            a(&[GA_1, GA_2]),
            vec!["PointsAtRegion", "CaaAllowsCa"],
        ),
        (
            "one static ip",
            a(&[GA_1]),
            vec!["PointsAtRegion", "CaaAllowsCa"],
        ),
        (
            "elsewhere",
            a(&[Ipv4Addr::new(192, 0, 2, 1)]),
            vec!["NotPointingAtRegion", "CaaAllowsCa"],
        ),
        (
            "half elsewhere",
            a(&[GA_1, Ipv4Addr::new(192, 0, 2, 1)]),
            vec!["NotPointingAtRegion", "CaaAllowsCa"],
        ),
        (
            "stray aaaa",
            DnsAnswers {
                aaaa: vec![v6("2001:db8::1")],
                ..a(&[GA_1, GA_2])
            },
            vec!["StrayAaaa", "CaaAllowsCa"],
        ),
        (
            "only a stray aaaa",
            DnsAnswers {
                aaaa: vec![v6("2001:db8::1")],
                ..DnsAnswers::default()
            },
            vec!["NotPointingAtRegion", "CaaAllowsCa"],
        ),
        (
            "no address",
            DnsAnswers::default(),
            vec!["NoAddress", "CaaAllowsCa"],
        ),
        (
            "cname to the region",
            DnsAnswers {
                cnames: vec!["ga.example.net".to_owned()],
                ..a(&[GA_1, GA_2])
            },
            vec!["PointsAtRegion", "CaaAllowsCa"],
        ),
        (
            "cloudflare ipv4",
            a(&[Ipv4Addr::new(104, 21, 3, 4)]),
            vec!["Cloudflare", "CaaAllowsCa"],
        ),
        (
            "cloudflare ipv6 beside a stray ipv4 of cloudflare",
            DnsAnswers {
                aaaa: vec![v6("2606:4700:3030::6815:1")],
                ..a(&[Ipv4Addr::new(172, 67, 1, 1)])
            },
            vec!["Cloudflare", "CaaAllowsCa"],
        ),
        (
            "cloudflare cname",
            DnsAnswers {
                cnames: vec!["shop.example.com.cdn.cloudflare.net.".to_owned()],
                ..a(&[Ipv4Addr::new(192, 0, 2, 7)])
            },
            vec!["Cloudflare", "CaaAllowsCa"],
        ),
        (
            "caa allows letsencrypt",
            DnsAnswers {
                caa: vec![caa(false, "issue", "letsencrypt.org")],
                ..a(&[GA_1])
            },
            vec!["PointsAtRegion", "CaaAllowsCa"],
        ),
        (
            "caa names another ca",
            DnsAnswers {
                caa: vec![caa(false, "issue", "digicert.com")],
                ..a(&[GA_1])
            },
            vec!["PointsAtRegion", "CaaForbidsCa"],
        ),
        (
            "caa forbids every ca",
            DnsAnswers {
                caa: vec![caa(false, "issue", ";")],
                ..a(&[GA_1])
            },
            vec!["PointsAtRegion", "CaaForbidsCa"],
        ),
        (
            "critical unknown caa tag",
            DnsAnswers {
                caa: vec![
                    caa(false, "issue", "letsencrypt.org"),
                    caa(true, "future", "x"),
                ],
                ..a(&[GA_1])
            },
            vec!["PointsAtRegion", "CaaForbidsCa"],
        ),
    ];
    for (name, answers, expected) in cases {
        assert_eq!(check(&answers).codes(), expected, "{name}");
    }
}

#[test]
fn ipv6_static_ips_count_as_the_region() {
    let ours = v6("2600:9000::1");
    let answers = DnsAnswers {
        aaaa: vec![ours],
        ..a(&[GA_1])
    };
    let region = vec![GA_1.into(), ours.into()];

    let diagnosis = diagnose(&domain(), Ok(&answers), &region, "letsencrypt.org", None);

    assert_eq!(diagnosis.codes(), vec!["PointsAtRegion", "CaaAllowsCa"]);
    assert_eq!(diagnosis.blocking(), None);
}

#[test]
fn a_region_without_static_ips_cannot_be_judged() {
    let answers = a(&[GA_1]);

    let diagnosis = diagnose(&domain(), Ok(&answers), &[], "letsencrypt.org", None);

    assert_eq!(diagnosis.codes(), vec!["RegionIpsUnknown", "CaaAllowsCa"]);
    assert_eq!(diagnosis.findings[0].severity, Severity::Warning);
}

#[test]
fn a_failed_lookup_blocks_and_still_reports_the_self_check() {
    let failed = Err(FetchError::NoAddress);

    let diagnosis = diagnose(
        &domain(),
        Err("SERVFAIL"),
        &region(),
        "letsencrypt.org",
        Some(&failed),
    );

    assert_eq!(diagnosis.codes(), vec!["ResolveFailed", "SelfCheckFailed"]);
    let blocking = diagnosis.blocking().expect("blocking");
    assert_eq!(blocking.code, "ResolveFailed");
    assert!(
        blocking.message.contains("SERVFAIL"),
        "{}",
        blocking.message
    );
}

#[test]
fn errors_block_and_warnings_do_not() {
    let stray = DnsAnswers {
        aaaa: vec![v6("2001:db8::1")],
        ..a(&[GA_1])
    };
    let cloudflare = a(&[Ipv4Addr::new(104, 16, 0, 1)]);

    let blocked = check(&stray);
    let proxied = check(&cloudflare);

    assert_eq!(blocked.blocking().map(|f| f.code), Some("StrayAaaa"));
    assert!(blocked.findings[0].message.contains("IPv6 first"));
    assert_eq!(proxied.blocking(), None);
    assert_eq!(proxied.findings[0].severity, Severity::Warning);
}

#[test]
fn the_cloudflare_finding_names_full_strict_and_the_wildcard_limit() {
    let diagnosis = check(&a(&[Ipv4Addr::new(104, 16, 0, 1)]));

    let fix = &diagnosis.findings[0].fix;
    assert!(fix.contains("Full (strict)"), "{fix}");
    assert!(fix.contains("too many redirects"), "{fix}");
    assert!(fix.contains("wildcard"), "{fix}");
}

#[test]
fn every_error_carries_a_fix() {
    let answers = DnsAnswers {
        aaaa: vec![v6("2001:db8::1")],
        caa: vec![caa(false, "issue", "digicert.com")],
        ..a(&[Ipv4Addr::new(192, 0, 2, 1)])
    };
    let failed = Err(FetchError::Status {
        address: "192.0.2.1".to_owned(),
        status: 404,
    });

    let diagnosis = diagnose(
        &domain(),
        Ok(&answers),
        &region(),
        "letsencrypt.org",
        Some(&failed),
    );

    assert_eq!(
        diagnosis.codes(),
        vec![
            "NotPointingAtRegion",
            "StrayAaaa",
            "CaaForbidsCa",
            "SelfCheckFailed"
        ]
    );
    for finding in &diagnosis.findings {
        assert_eq!(finding.severity, Severity::Error, "{}", finding.code);
        assert!(!finding.fix.is_empty(), "{}", finding.code);
    }
    assert!(diagnosis.findings[0].fix.contains("75.2.0.1, 99.83.0.1"));
    assert!(
        diagnosis.findings[2]
            .fix
            .contains("issue \"letsencrypt.org\"")
    );
}

#[test]
fn self_check_results_become_findings_with_fixes() {
    let cases = [
        (Ok(()), "SelfCheckPassed", ""),
        (
            Err(FetchError::NoAddress),
            "SelfCheckFailed",
            "add A records",
        ),
        (
            Err(FetchError::Connect {
                address: "[2001:db8::1]:80".to_owned(),
                message: "refused".to_owned(),
            }),
            "SelfCheckFailed",
            "[2001:db8::1]:80 does not accept HTTP",
        ),
        (
            Err(FetchError::Status {
                address: "75.2.0.1:80".to_owned(),
                status: 301,
            }),
            "SelfCheckFailed",
            "redirects",
        ),
        (
            Err(FetchError::Status {
                address: "75.2.0.1:80".to_owned(),
                status: 404,
            }),
            "SelfCheckFailed",
            "does not know the probe",
        ),
        (
            Err(FetchError::Timeout {
                address: "75.2.0.1:80".to_owned(),
            }),
            "SelfCheckFailed",
            "firewall",
        ),
    ];
    for (result, expected_code, fix_part) in cases {
        let diagnosis = diagnose(
            &domain(),
            Ok(&a(&[GA_1])),
            &region(),
            "letsencrypt.org",
            Some(&result),
        );

        let finding = diagnosis.findings.last().expect("a finding");
        assert_eq!(finding.code, expected_code, "{result:?}");
        assert!(
            finding.fix.contains(fix_part),
            "{result:?}: {}",
            finding.fix
        );
    }
}

//! Domain diagnostics: what is wrong with a custom domain's DNS for serving it through a
//! region and getting a certificate for it, each finding with the fix a merchant can apply.
//!
//! Pure: the caller resolves the records and runs the HTTP-01 self-check (through
//! [`crate::cloud::Domains`]) and hands the results in; this module only judges them.

use std::net::IpAddr;

use crate::cloud::{DnsAnswers, Domains, FetchError};
use crate::hostname::Hostname;

mod caa;
mod cloudflare;

use caa::CaaVerdict;

/// The issuer domain name Let's Encrypt checks CAA records for.
pub const LETS_ENCRYPT_CAA_IDENTITY: &str = "letsencrypt.org";

/// Prefix of the tokens of self-check probes. The challenge responder answers any token
/// with this prefix with [`PROBE_BODY`], so a probe needs no pending order.
pub const PROBE_TOKEN_PREFIX: &str = "shop-controller-probe-";

/// What the challenge responder answers for a probe token.
pub const PROBE_BODY: &str = "shop-controller-probe";

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// As it should be.
    Ok,
    /// May work, but needs attention.
    Warning,
    /// Blocks serving the domain or issuing its certificate.
    Error,
}

impl Severity {
    /// A stable lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing the check found, with how to fix it (empty when there is nothing to fix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable code such as `NotPointingAtRegion`; see the constants of [`code`].
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

/// Stable codes of [`Finding`]s.
pub mod code {
    /// The name could not be resolved.
    pub const RESOLVE_FAILED: &str = "ResolveFailed";
    /// The name has no A or AAAA records.
    pub const NO_ADDRESS: &str = "NoAddress";
    /// Every address is one of the region's static IPs.
    pub const POINTS_AT_REGION: &str = "PointsAtRegion";
    /// An A record (or an AAAA when there are no A records) leads elsewhere.
    pub const NOT_POINTING_AT_REGION: &str = "NotPointingAtRegion";
    /// An AAAA record leads elsewhere; Let's Encrypt tries IPv6 first.
    pub const STRAY_AAAA: &str = "StrayAaaa";
    /// The region has no static IPs configured, so where the domain points cannot be judged.
    pub const REGION_IPS_UNKNOWN: &str = "RegionIpsUnknown";
    /// The name is proxied by Cloudflare.
    pub const CLOUDFLARE: &str = "Cloudflare";
    /// CAA records let our CA issue.
    pub const CAA_ALLOWS_CA: &str = "CaaAllowsCa";
    /// CAA records forbid our CA.
    pub const CAA_FORBIDS_CA: &str = "CaaForbidsCa";
    /// The HTTP-01 self-check got the expected answer.
    pub const SELF_CHECK_PASSED: &str = "SelfCheckPassed";
    /// The HTTP-01 self-check failed.
    pub const SELF_CHECK_FAILED: &str = "SelfCheckFailed";
}

/// Every finding of one check, in the order they were made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnosis {
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// The first finding that blocks the domain, if any.
    pub fn blocking(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.severity == Severity::Error)
    }

    /// The codes of the findings, in order (handy for tests and logs).
    pub fn codes(&self) -> Vec<&'static str> {
        self.findings.iter().map(|f| f.code).collect()
    }

    fn push(&mut self, severity: Severity, code: &'static str, message: String, fix: String) {
        self.findings.push(Finding {
            severity,
            code,
            message,
            fix,
        });
    }
}

/// Judges what DNS answered for `domain` (or why it could not) against the region's static
/// IPs and the CA we use (`ca_identity`, such as [`LETS_ENCRYPT_CAA_IDENTITY`]), and the
/// HTTP-01 self-check's result when one ran.
pub fn diagnose(
    domain: &Hostname,
    answers: Result<&DnsAnswers, &str>,
    region_ips: &[IpAddr],
    ca_identity: &str,
    self_check: Option<&Result<(), FetchError>>,
) -> Diagnosis {
    let mut diagnosis = Diagnosis::default();

    match answers {
        Ok(answers) => {
            if is_cloudflare(answers) {
                cloudflare_finding(&mut diagnosis, domain);
            } else {
                address_findings(&mut diagnosis, domain, answers, region_ips);
            }
            caa_finding(&mut diagnosis, domain, answers, ca_identity);
        }
        Err(reason) => diagnosis.push(
            Severity::Error,
            code::RESOLVE_FAILED,
            format!("could not resolve {domain}: {reason}"),
            format!(
                "check that {domain} is registered and that its DNS servers answer; \
                 then try again"
            ),
        ),
    }

    if let Some(result) = self_check {
        self_check_finding(&mut diagnosis, domain, result, region_ips);
    }
    diagnosis
}

/// Resolves `domain`, runs the HTTP-01 self-check with `probe_token` (which must start with
/// [`PROBE_TOKEN_PREFIX`]) and judges both with [`diagnose`].
pub async fn check(
    domains: &dyn Domains,
    domain: &Hostname,
    region_ips: &[IpAddr],
    ca_identity: &str,
    probe_token: &str,
) -> Diagnosis {
    let resolved = domains.resolve(domain).await;
    let self_check = match domains.fetch_challenge(domain, probe_token).await {
        Ok(body) if body.trim() == PROBE_BODY => Ok(()),
        Ok(body) => Err(FetchError::Other(format!(
            "answered {:?} instead of the probe's body",
            body.chars().take(64).collect::<String>()
        ))),
        Err(error) => Err(error),
    };
    let failure;
    let answers = match &resolved {
        Ok(answers) => Ok(answers),
        Err(error) => {
            failure = error.to_string();
            Err(failure.as_str())
        }
    };
    diagnose(domain, answers, region_ips, ca_identity, Some(&self_check))
}

fn is_cloudflare(answers: &DnsAnswers) -> bool {
    let addresses = addresses(answers);
    answers
        .cnames
        .iter()
        .any(|name| cloudflare::is_cloudflare_name(name))
        || addresses.iter().any(|&a| cloudflare::is_cloudflare_ip(a))
}

/// Cloudflare's proxy hides where the domain really points, so the address checks are
/// skipped and the self-check decides.
fn cloudflare_finding(diagnosis: &mut Diagnosis, domain: &Hostname) {
    diagnosis.push(
        Severity::Warning,
        code::CLOUDFLARE,
        format!("{domain} is proxied by Cloudflare, so where it points cannot be seen from DNS"),
        "in Cloudflare, set SSL/TLS encryption mode to Full (strict): with Flexible, Cloudflare \
         calls us over HTTP, we redirect to HTTPS and the browser loops with 'too many \
         redirects'. Keep the origin record pointing at the region's static IPs. Cloudflare \
         does not proxy a wildcard (*) record, so a default shop domain served through a \
         wildcard cannot sit behind Cloudflare that way: give each shop its own proxied record \
         or switch the record to DNS only"
            .to_owned(),
    );
}

fn address_findings(
    diagnosis: &mut Diagnosis,
    domain: &Hostname,
    answers: &DnsAnswers,
    region_ips: &[IpAddr],
) {
    let expected = list(region_ips);
    if answers.a.is_empty() && answers.aaaa.is_empty() {
        diagnosis.push(
            Severity::Error,
            code::NO_ADDRESS,
            format!("{domain} has no A or AAAA record"),
            format!("add A records for {domain} pointing at {expected}"),
        );
        return;
    }
    if region_ips.is_empty() {
        diagnosis.push(
            Severity::Warning,
            code::REGION_IPS_UNKNOWN,
            "the region has no Global Accelerator static IPs configured".to_owned(),
            "set global_accelerator_ips in the region's configuration".to_owned(),
        );
        return;
    }

    let ours = |address: &IpAddr| region_ips.contains(address);
    let stray_a: Vec<IpAddr> = answers
        .a
        .iter()
        .map(|&a| a.into())
        .filter(|a| !ours(a))
        .collect();
    let stray_aaaa: Vec<IpAddr> = answers
        .aaaa
        .iter()
        .map(|&a| a.into())
        .filter(|a| !ours(a))
        .collect();
    if !stray_a.is_empty() || (answers.a.is_empty() && !stray_aaaa.is_empty()) {
        let stray = if stray_a.is_empty() {
            &stray_aaaa
        } else {
            &stray_a
        };
        diagnosis.push(
            Severity::Error,
            code::NOT_POINTING_AT_REGION,
            format!("{domain} points at {}, not at the region", list(stray)),
            format!("replace the A records of {domain} with {expected}"),
        );
    }
    if !answers.a.is_empty() && !stray_aaaa.is_empty() {
        diagnosis.push(
            Severity::Error,
            code::STRAY_AAAA,
            format!(
                "{domain} has AAAA records {} that do not lead to us; Let's Encrypt tries \
                 IPv6 first and fails on them",
                list(&stray_aaaa)
            ),
            format!("delete the AAAA records of {domain}"),
        );
    }
    if stray_a.is_empty() && stray_aaaa.is_empty() {
        diagnosis.push(
            Severity::Ok,
            code::POINTS_AT_REGION,
            format!("{domain} points at the region's static IPs"),
            String::new(),
        );
    }
}

fn caa_finding(
    diagnosis: &mut Diagnosis,
    domain: &Hostname,
    answers: &DnsAnswers,
    ca_identity: &str,
) {
    let add_ours = format!("add a CAA record `0 issue \"{ca_identity}\"` beside the existing ones");
    match caa::verdict(&answers.caa, ca_identity) {
        CaaVerdict::NoRecords => diagnosis.push(
            Severity::Ok,
            code::CAA_ALLOWS_CA,
            format!("{domain} has no CAA records, so any CA may issue"),
            String::new(),
        ),
        CaaVerdict::Allowed => diagnosis.push(
            Severity::Ok,
            code::CAA_ALLOWS_CA,
            format!("the CAA records of {domain} allow {ca_identity}"),
            String::new(),
        ),
        CaaVerdict::NotListed { allowed } if allowed.is_empty() => diagnosis.push(
            Severity::Error,
            code::CAA_FORBIDS_CA,
            format!("the CAA records of {domain} forbid every CA (`issue \";\"`)"),
            format!("replace the `issue \";\"` CAA record with `0 issue \"{ca_identity}\"`"),
        ),
        CaaVerdict::NotListed { allowed } => diagnosis.push(
            Severity::Error,
            code::CAA_FORBIDS_CA,
            format!(
                "the CAA records of {domain} allow only {}, not {ca_identity}",
                allowed.join(", ")
            ),
            add_ours,
        ),
        CaaVerdict::UnknownCritical { tag } => diagnosis.push(
            Severity::Error,
            code::CAA_FORBIDS_CA,
            format!(
                "{domain} has a critical CAA record with tag `{tag}` that {ca_identity} does \
                 not understand, which forbids issuance"
            ),
            format!("clear the critical flag of the `{tag}` CAA record, or delete it"),
        ),
    }
}

fn self_check_finding(
    diagnosis: &mut Diagnosis,
    domain: &Hostname,
    result: &Result<(), FetchError>,
    region_ips: &[IpAddr],
) {
    let error = match result {
        Ok(()) => {
            diagnosis.push(
                Severity::Ok,
                code::SELF_CHECK_PASSED,
                format!("an HTTP-01 probe of {domain} reached our challenge responder"),
                String::new(),
            );
            return;
        }
        Err(error) => error,
    };
    let expected = list(region_ips);
    let fix = match error {
        FetchError::NoAddress => format!("add A records for {domain} pointing at {expected}"),
        FetchError::Connect { address, .. } => {
            format!("{address} does not accept HTTP on port 80: point {domain} at {expected} only")
        }
        FetchError::Status { status, .. } if (300..400).contains(status) => format!(
            "something in front of us redirects /.well-known/acme-challenge/ on {domain}; let \
             plain HTTP for that path through (with Cloudflare: SSL mode Full (strict) and no \
             'Always Use HTTPS' rule for it)"
        ),
        FetchError::Status { .. } => format!(
            "the request reached a server that does not know the probe: point {domain} at \
             {expected}, or let a proxy in front forward /.well-known/acme-challenge/ to them"
        ),
        FetchError::Timeout { address } => format!(
            "{address} did not answer: check that {domain} points at {expected} and that no \
             firewall drops port 80"
        ),
        FetchError::Other(_) => format!("point {domain} at {expected} and try again"),
    };
    diagnosis.push(
        Severity::Error,
        code::SELF_CHECK_FAILED,
        format!("an HTTP-01 probe of {domain} failed: {error}"),
        fix,
    );
}

fn addresses(answers: &DnsAnswers) -> Vec<IpAddr> {
    let a = answers.a.iter().map(|&a| IpAddr::from(a));
    a.chain(answers.aaaa.iter().map(|&a| IpAddr::from(a)))
        .collect()
}

/// `192.0.2.1, 192.0.2.2`, or a placeholder when there is nothing to list.
fn list(addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        return "the region's Global Accelerator static IPs".to_owned();
    }
    let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    addresses.join(", ")
}

#[cfg(test)]
mod tests;

//! Whether a CAA record set lets a CA issue a certificate for a (non-wildcard) name, by the
//! rules of RFC 8659: no records allow every CA; otherwise only the `issue` records count, and
//! a critical record with a tag the CA does not know forbids issuance outright.

use crate::cloud::CaaRecord;

/// Property tags a CA understands (RFC 8659 §4, RFC 8657 account binding parameters ride on
/// `issue`, the contact tags come from the CA/Browser Forum's baseline requirements).
const KNOWN_TAGS: &[&str] = &[
    "issue",
    "issuewild",
    "iodef",
    "contactemail",
    "contactphone",
];

/// What a CAA record set says about one CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum CaaVerdict {
    /// No CAA records: any CA may issue.
    NoRecords,
    /// An `issue` record names the CA, or there are records but no `issue` ones.
    Allowed,
    /// `issue` records exist and none names the CA; the CAs they do name (none for `;`).
    NotListed { allowed: Vec<String> },
    /// A critical record carries a tag the CA cannot interpret.
    UnknownCritical { tag: String },
}

/// Judges `records` (the relevant set, from the closest name holding any) for `ca_identity`,
/// the CA's issuer domain name such as `letsencrypt.org`.
pub(super) fn verdict(records: &[CaaRecord], ca_identity: &str) -> CaaVerdict {
    if records.is_empty() {
        return CaaVerdict::NoRecords;
    }
    if let Some(record) = records.iter().find(|r| r.critical && !is_known(&r.tag)) {
        return CaaVerdict::UnknownCritical {
            tag: record.tag.clone(),
        };
    }

    let issuers: Vec<Option<String>> = records
        .iter()
        .filter(|r| r.tag.eq_ignore_ascii_case("issue"))
        .map(|r| issuer_domain(&r.value))
        .collect();
    if issuers.is_empty() {
        return CaaVerdict::Allowed;
    }
    let listed = issuers
        .iter()
        .flatten()
        .any(|issuer| issuer.eq_ignore_ascii_case(ca_identity));
    if listed {
        CaaVerdict::Allowed
    } else {
        CaaVerdict::NotListed {
            allowed: issuers.into_iter().flatten().collect(),
        }
    }
}

fn is_known(tag: &str) -> bool {
    KNOWN_TAGS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(tag))
}

/// The issuer domain name of an `issue` value (`letsencrypt.org; accounturi=...`), or `None`
/// when the value names no CA (`;` or empty), which authorizes nobody.
fn issuer_domain(value: &str) -> Option<String> {
    let issuer = value.split(';').next().unwrap_or_default().trim();
    (!issuer.is_empty()).then(|| issuer.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(critical: bool, tag: &str, value: &str) -> CaaRecord {
        CaaRecord {
            critical,
            tag: tag.to_owned(),
            value: value.to_owned(),
        }
    }

    fn not_listed(allowed: &[&str]) -> CaaVerdict {
        CaaVerdict::NotListed {
            allowed: allowed.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn verdicts_follow_rfc_8659() {
        let cases = [
            ("no records", vec![], CaaVerdict::NoRecords),
            (
                "issue names the ca",
                vec![record(false, "issue", "letsencrypt.org")],
                CaaVerdict::Allowed,
            ),
            (
                "issue with parameters and odd case",
                vec![record(
                    false,
                    "ISSUE",
                    " LetsEncrypt.org ; accounturi=https://x/1",
                )],
                CaaVerdict::Allowed,
            ),
            (
                "one of several issue records",
                vec![
                    record(false, "issue", "pki.goog"),
                    record(false, "issue", "letsencrypt.org"),
                ],
                CaaVerdict::Allowed,
            ),
            (
                "issue names another ca",
                vec![record(false, "issue", "digicert.com")],
                not_listed(&["digicert.com"]),
            ),
            (
                "issue semicolon forbids every ca",
                vec![record(false, "issue", ";")],
                not_listed(&[]),
            ),
            (
                "empty issue forbids every ca",
                vec![record(false, "issue", "")],
                not_listed(&[]),
            ),
            (
                "issuewild alone does not restrict a plain name",
                vec![record(false, "issuewild", "digicert.com")],
                CaaVerdict::Allowed,
            ),
            (
                "iodef alone does not restrict",
                vec![record(false, "iodef", "mailto:security@example.com")],
                CaaVerdict::Allowed,
            ),
            (
                "unknown tag without the critical flag is ignored",
                vec![
                    record(false, "tbs", "whatever"),
                    record(false, "issue", "letsencrypt.org"),
                ],
                CaaVerdict::Allowed,
            ),
            (
                "unknown critical tag forbids",
                vec![
                    record(true, "tbs", "whatever"),
                    record(false, "issue", "letsencrypt.org"),
                ],
                CaaVerdict::UnknownCritical {
                    tag: "tbs".to_owned(),
                },
            ),
            (
                "known critical tag is fine",
                vec![record(true, "issue", "letsencrypt.org")],
                CaaVerdict::Allowed,
            ),
        ];
        for (name, records, expected) in cases {
            assert_eq!(verdict(&records, "letsencrypt.org"), expected, "{name}");
        }
    }
}

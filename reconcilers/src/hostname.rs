//! The one hostname validator. A [`Hostname`] can only hold a name that is safe to put in an
//! nginx `server_name`, a file name, a tag value and a shell word, so every later consumer
//! (renderer, command builder, tagger) takes this type instead of a `String`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest hostname in presentation form without the trailing dot (RFC 1035 §2.3.4).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A lowercase hostname of LDH labels (letters, digits, hyphens) in A-label (ASCII) form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

/// Why a string is not an acceptable hostname. Messages name the offending part so the caller
/// can fix the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long; the limit is {MAX_HOSTNAME_LEN}")]
    TooLong { len: usize },
    #[error("has a trailing dot; write the name without it")]
    TrailingDot,
    #[error("needs at least two labels, like example.com")]
    SingleLabel,
    #[error("has an empty label (two dots in a row or a leading dot)")]
    EmptyLabel,
    #[error("has label `{label}` of {len} characters; the limit is {MAX_LABEL_LEN}")]
    LabelTooLong { label: String, len: usize },
    #[error("is a wildcard; name one host")]
    Wildcard,
    #[error("contains {found}; only letters, digits, hyphens and dots are allowed")]
    InvalidCharacter { found: String },
    #[error("has label `{label}` starting or ending with a hyphen")]
    HyphenAtEdge { label: String },
    #[error("has an all-numeric top-level label `{label}`")]
    NumericTld { label: String },
    #[error("has label `{label}` mixing {first} and {second} letters (a look-alike name)")]
    MixedScript {
        label: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("is not a valid internationalized name")]
    InvalidIdn,
    #[error("has label `{label}` that is not a valid punycode (xn--) label")]
    InvalidPunycode { label: String },
}

impl Hostname {
    /// Validates `input`, converting an internationalized name to its A-label form.
    ///
    /// Upper case is folded to lower case; nothing else is repaired.
    pub fn parse(input: &str) -> Result<Self, HostnameError> {
        if input.is_empty() {
            return Err(HostnameError::Empty);
        }
        if input.ends_with('.') {
            return Err(HostnameError::TrailingDot);
        }
        if input.contains('*') {
            return Err(HostnameError::Wildcard);
        }
        let ascii = if input.is_ascii() {
            check_characters(input)?;
            input.to_ascii_lowercase()
        } else {
            to_a_labels(input)?
        };
        check_ldh(&ascii)?;
        check_a_labels(&ascii)?;
        Ok(Self(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels from left to right.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// Whether `self` is a strict subdomain of `parent` (`a.b.com` is under `b.com`; `b.com`
    /// is not under itself, and `xb.com` is not under `b.com`).
    pub fn is_under(&self, parent: &Hostname) -> bool {
        self.0
            .strip_suffix(parent.as_str())
            .is_some_and(|prefix| prefix.ends_with('.'))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Hostname {
    type Err = HostnameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("hostname {raw:?} {e}")))
    }
}

/// Rejects anything outside lowercase or uppercase LDH and dots, naming the first offender.
fn check_characters(input: &str) -> Result<(), HostnameError> {
    match input
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        Some(c) => Err(HostnameError::InvalidCharacter {
            found: describe_char(c),
        }),
        None => Ok(()),
    }
}

/// Converts a Unicode name to A-labels with the strict (STD3) UTS #46 rules, after refusing
/// labels that mix scripts, the usual trick of look-alike domains.
fn to_a_labels(input: &str) -> Result<String, HostnameError> {
    for label in input.split(['.', '。', '．', '｡']) {
        check_single_script(label).map_err(|(first, second)| HostnameError::MixedScript {
            label: label.to_owned(),
            first: first.name(),
            second: second.name(),
        })?;
    }
    let ascii = idna::domain_to_ascii_strict(input).map_err(|_| HostnameError::InvalidIdn)?;
    if ascii.ends_with('.') {
        return Err(HostnameError::TrailingDot);
    }
    check_characters(&ascii)?;
    Ok(ascii)
}

/// Checks the LDH shape of an ASCII, lowercase name.
fn check_ldh(name: &str) -> Result<(), HostnameError> {
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(HostnameError::TooLong { len: name.len() });
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|label| label.is_empty()) {
        return Err(HostnameError::EmptyLabel);
    }
    if labels.len() < 2 {
        return Err(HostnameError::SingleLabel);
    }
    for label in &labels {
        if label.len() > MAX_LABEL_LEN {
            let shown = format!("{}...", &label[..16]);
            return Err(HostnameError::LabelTooLong {
                label: shown,
                len: label.len(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::HyphenAtEdge {
                label: (*label).to_owned(),
            });
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostnameError::NumericTld {
            label: tld.to_owned(),
        });
    }
    Ok(())
}

/// A label that claims to be punycode must decode, and must not hide a look-alike either.
fn check_a_labels(name: &str) -> Result<(), HostnameError> {
    for label in name.split('.').filter(|label| label.starts_with("xn--")) {
        let (unicode, result) = idna::domain_to_unicode(label);
        if result.is_err() {
            return Err(HostnameError::InvalidPunycode {
                label: label.to_owned(),
            });
        }
        check_single_script(&unicode).map_err(|(first, second)| HostnameError::MixedScript {
            label: label.to_owned(),
            first: first.name(),
            second: second.name(),
        })?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Other,
}

impl Script {
    fn of(c: char) -> Option<Self> {
        if !c.is_alphabetic() {
            return None;
        }
        Some(match c as u32 {
            0x0041..=0x024F | 0x1E00..=0x1EFF | 0xFF21..=0xFF5A => Script::Latin,
            0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
            0x0400..=0x052F => Script::Cyrillic,
            _ => Script::Other,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Script::Latin => "Latin",
            Script::Greek => "Greek",
            Script::Cyrillic => "Cyrillic",
            Script::Other => "other",
        }
    }
}

/// Latin, Greek and Cyrillic share many glyphs (`а` and `a`); a label using two of them is
/// almost always an attempt to pass for another name.
fn check_single_script(label: &str) -> Result<(), (Script, Script)> {
    let mut seen: Option<Script> = None;
    for script in label.chars().filter_map(Script::of) {
        if script == Script::Other {
            continue;
        }
        match seen {
            None => seen = Some(script),
            Some(first) if first != script => return Err((first, script)),
            Some(_) => {}
        }
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("`{c}`")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_plain_and_folds_case() {
        for (input, expected) in [
            ("example.es-hs.com", "example.es-hs.com"),
            ("Shop-1.Example.COM", "shop-1.example.com"),
            ("a.b", "a.b"),
            ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
            ("münchen.de", "xn--mnchen-3ya.de"),
            ("ｅｘａｍｐｌｅ.com", "example.com"),
        ] {
            assert_eq!(
                Hostname::parse(input).map(|h| h.0),
                Ok(expected.to_owned()),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_hostile_and_malformed_names() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", "abcdefghi.".repeat(30));
        type Expectation = fn(&HostnameError) -> bool;
        let cases: Vec<(&str, Expectation)> = vec![
            ("", |e| matches!(e, HostnameError::Empty)),
            ("a.com;", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("a.com{", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("$(id).com", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("`id`.com", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("a.com\nserver_name evil", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("a b.com", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("a_b.com", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("a/../b.com", |e| {
                matches!(e, HostnameError::InvalidCharacter { .. })
            }),
            ("*.es-hs.com", |e| matches!(e, HostnameError::Wildcard)),
            ("example.com.", |e| matches!(e, HostnameError::TrailingDot)),
            ("localhost", |e| matches!(e, HostnameError::SingleLabel)),
            ("a..com", |e| matches!(e, HostnameError::EmptyLabel)),
            (".a.com", |e| matches!(e, HostnameError::EmptyLabel)),
            ("-a.com", |e| {
                matches!(e, HostnameError::HyphenAtEdge { .. })
            }),
            ("a-.com", |e| {
                matches!(e, HostnameError::HyphenAtEdge { .. })
            }),
            ("10.0.0.1", |e| {
                matches!(e, HostnameError::NumericTld { .. })
            }),
            ("exаmple.com", |e| {
                matches!(e, HostnameError::MixedScript { .. })
            }),
            ("xn--exmple-4nf.com", |e| {
                matches!(e, HostnameError::MixedScript { .. })
            }),
            ("xn--zz.com", |e| {
                matches!(e, HostnameError::InvalidPunycode { .. })
            }),
        ];
        for (input, expected) in cases {
            let error = Hostname::parse(input).expect_err(input);
            assert!(expected(&error), "{input:?} gave {error:?}");
        }
        assert!(matches!(
            Hostname::parse(&format!("{long_label}.com")),
            Err(HostnameError::LabelTooLong { len: 64, .. })
        ));
        assert!(matches!(
            Hostname::parse(&long_name),
            Err(HostnameError::TooLong { .. })
        ));
        assert!(Hostname::parse(&format!("{}.com", "a".repeat(63))).is_ok());
    }

    #[test]
    fn subdomain_check_respects_label_boundaries() {
        let parent = Hostname::parse("es-hs.com").expect("valid");
        for (name, under) in [
            ("example.es-hs.com", true),
            ("a.b.es-hs.com", true),
            ("es-hs.com", false),
            ("xes-hs.com", false),
            ("es-hs.com.evil.com", false),
        ] {
            let host = Hostname::parse(name).expect("valid");
            assert_eq!(host.is_under(&parent), under, "{name}");
        }
    }

    fn is_safe(name: &str) -> bool {
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn accepted_names_are_always_safe(input in "\\PC{0,80}") {
            if let Ok(host) = Hostname::parse(&input) {
                prop_assert!(is_safe(host.as_str()), "{:?} -> {}", input, host);
                prop_assert!(host.as_str().len() <= MAX_HOSTNAME_LEN);
                prop_assert!(host.labels().count() >= 2);
                prop_assert!(host.labels().all(|l| !l.is_empty() && l.len() <= MAX_LABEL_LEN));
                prop_assert_eq!(Hostname::parse(host.as_str()), Ok(host.clone()));
            }
        }

        #[test]
        fn near_hostnames_are_judged_consistently(
            input in "[a-z0-9;{}$() `*_.-]{1,40}\\.[a-z]{2,6}"
        ) {
            let accepted = Hostname::parse(&input).is_ok();
            let plausible = is_safe(&input)
                && input.split('.').all(|l| {
                    !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && !l.starts_with("xn--")
                });
            prop_assert_eq!(accepted, plausible, "{:?}", input);
        }

        #[test]
        fn generated_valid_names_are_accepted_unchanged(
            labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5),
            tld in "[a-z]{2,10}",
        ) {
            let name = format!("{}.{tld}", labels.join("."));
            prop_assume!(!name.split('.').any(|l| l.starts_with("xn--")));
            let parsed = Hostname::parse(&name);
            prop_assert_eq!(parsed.map(|h| h.0), Ok(name));
        }
    }
}

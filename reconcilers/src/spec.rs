//! The desired state of a shop, as the write path records it, and the small validated value
//! types it is made of. Nothing here talks to a store or a cloud.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hostname::{Hostname, HostnameError};

/// An AWS region name such as `eu-west-1` or `us-gov-west-1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionName(String);

/// An S3 bucket name following the general-purpose bucket naming rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BucketName(String);

/// An S3 object version id. `null` is the version id S3 gives objects written before
/// versioning was enabled.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceVersion(String);

/// Why a value of the spec was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("region {0:?} is not an AWS region name like eu-west-1")]
    Region(String),
    #[error("bucket name {name:?} {why}")]
    Bucket { name: String, why: &'static str },
    #[error("source version {0:?} is not an S3 version id (1-1024 letters, digits, . _ -)")]
    SourceVersion(String),
}

impl RegionName {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let parts: Vec<&str> = input.split('-').collect();
        let well_formed = parts.len() >= 3
            && input.len() <= 32
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && !parts[parts.len() - 1].is_empty();
        if well_formed {
            Ok(Self(input.to_owned()))
        } else {
            Err(ValueError::Region(input.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl BucketName {
    /// See <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let fail = |why| {
            Err(ValueError::Bucket {
                name: input.to_owned(),
                why,
            })
        };
        if !(3..=63).contains(&input.len()) {
            return fail("must be 3 to 63 characters long");
        }
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
        if !input.bytes().all(allowed) {
            return fail("may hold only lowercase letters, digits, dots and hyphens");
        }
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = input.as_bytes();
        if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
            return fail("must begin and end with a letter or digit");
        }
        if input.contains("..") || input.contains(".-") || input.contains("-.") {
            return fail("must not have two dots in a row or a dot next to a hyphen");
        }
        if input.split('.').count() == 4 && input.split('.').all(|p| p.parse::<u8>().is_ok()) {
            return fail("must not look like an IP address");
        }
        let reserved_prefix = ["xn--", "sthree-", "amzn-s3-demo-"];
        let reserved_suffix = ["-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3"];
        if reserved_prefix.iter().any(|p| input.starts_with(p))
            || reserved_suffix.iter().any(|s| input.ends_with(s))
        {
            return fail("uses a prefix or suffix that S3 reserves");
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl SourceVersion {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if (1..=1024).contains(&input.len()) && input.bytes().all(allowed) {
            Ok(Self(input.to_owned()))
        } else {
            Err(ValueError::SourceVersion(input.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    )*};
}

string_newtype_impls!(RegionName, BucketName, SourceVersion);

/// The key of the source zip for a shop: `<shop_domain>.zip`, the seed system's convention.
pub fn source_key(shop_domain: &Hostname) -> String {
    format!("{shop_domain}.zip")
}

/// What the caller asked for. The write path stores it; reconcilers converge AWS to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopSpec {
    pub shop_domain: Hostname,
    pub region: RegionName,
    pub source_bucket: BucketName,
    /// Always exact: "latest" is resolved to a version id before the spec is written.
    pub source_version: SourceVersion,
    pub custom_domain: Option<Hostname>,
}

/// A stored shop: its spec plus the bookkeeping the write path maintains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopRecord {
    pub spec: ShopSpec,
    /// Increases by one on every change of the spec, deletion mark included.
    pub generation: i64,
    /// Increases by one on every restart request.
    pub restart_generation: i64,
    /// Milliseconds since the Unix epoch at which deletion was requested.
    pub deletion_requested_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ShopRecord {
    pub fn is_deleting(&self) -> bool {
        self.deletion_requested_at.is_some()
    }

    /// The resource kinds this shop needs before it is ready, in dependency order.
    pub fn needed_kinds(&self) -> Vec<crate::status::ResourceKind> {
        use crate::status::ResourceKind;
        ResourceKind::ALL
            .into_iter()
            .filter(|kind| match kind {
                ResourceKind::Certificate => self.spec.custom_domain.is_some(),
                ResourceKind::Restart => self.restart_generation > 0,
                _ => true,
            })
            .collect()
    }
}

/// Checks that a hostname is acceptable as a shop's ES domain in a region: under one of the
/// region's allowed parent domains.
pub fn check_shop_domain(domain: &Hostname, allowed_parents: &[Hostname]) -> Result<(), String> {
    if allowed_parents.iter().any(|parent| domain.is_under(parent)) {
        return Ok(());
    }
    let parents: Vec<&str> = allowed_parents.iter().map(Hostname::as_str).collect();
    Err(format!(
        "shop domain {domain} is not under an allowed parent domain of the region ({})",
        if parents.is_empty() {
            "none configured".to_owned()
        } else {
            parents.join(", ")
        }
    ))
}

/// Checks that a custom domain is the merchant's own: not one of ours, not the shop itself.
pub fn check_custom_domain(
    custom: &Hostname,
    shop_domain: &Hostname,
    allowed_parents: &[Hostname],
) -> Result<(), String> {
    if custom == shop_domain {
        return Err(format!("custom domain {custom} is the shop domain itself"));
    }
    if let Some(parent) = allowed_parents
        .iter()
        .find(|parent| custom == *parent || custom.is_under(parent))
    {
        return Err(format!(
            "custom domain {custom} is under {parent}, a shop parent domain; use a domain of the merchant's own"
        ));
    }
    Ok(())
}

/// Parses a hostname field, naming the field in the error.
pub fn parse_hostname(field: &str, input: &str) -> Result<Hostname, String> {
    Hostname::parse(input).map_err(|e: HostnameError| format!("{field} {input:?} {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in ["eu-west-1", "us-east-2", "us-gov-west-1", "ap-southeast-3"] {
            assert!(RegionName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "eu",
            "eu-west",
            "EU-west-1",
            "eu-west-x",
            "eu--1",
            "eu-west-1;",
            "eu west 1",
        ] {
            assert!(RegionName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_names() {
        for ok in ["my-bucket", "abc", "a.b.c", "shop-sources-2024"] {
            assert!(BucketName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "My-Bucket",
            "-bucket",
            "bucket-",
            "a..b",
            "a.-b",
            "192.168.5.4",
            "xn--bucket",
            "bucket-s3alias",
            "bucket_name",
            &"a".repeat(64),
        ] {
            assert!(BucketName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_versions() {
        for ok in ["null", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", "c0ffee-1_2.3"] {
            assert!(SourceVersion::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "v;1", "$(id)", &"a".repeat(1025)] {
            assert!(SourceVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shop_and_custom_domain_placement_rules() {
        let parents = vec![Hostname::parse("es-hs.com").expect("valid")];
        let shop = Hostname::parse("example.es-hs.com").expect("valid");
        assert!(check_shop_domain(&shop, &parents).is_ok());
        let foreign = Hostname::parse("example.com").expect("valid");
        assert!(check_shop_domain(&foreign, &parents).is_err());
        assert!(check_shop_domain(&shop, &[]).is_err());

        assert!(check_custom_domain(&foreign, &shop, &parents).is_ok());
        assert!(check_custom_domain(&shop, &shop, &parents).is_err());
        let ours = Hostname::parse("other.es-hs.com").expect("valid");
        assert!(check_custom_domain(&ours, &shop, &parents).is_err());
        assert!(check_custom_domain(&parents[0], &shop, &parents).is_err());
    }
}

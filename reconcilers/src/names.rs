//! Names of the AWS objects we create where AWS limits the name. They derive from a hash of the
//! shop and its port, never from the raw domain (a 63-character label alone would not fit);
//! the readable identity lives in the ownership tags.

use crate::hostname::Hostname;

/// Prefix of every target group this controller names.
pub const TARGET_GROUP_PREFIX: &str = "sc-";

/// The target group of a shop on a port: `sc-<port>-<12 hex>`, at most 22 characters (AWS
/// allows 32 letters, digits and hyphens), stable across reconciles and replicas.
pub fn target_group_name(shop: &Hostname, port: u16) -> String {
    let digest = fnv1a64(format!("{shop}:{port}").as_bytes());
    format!("{TARGET_GROUP_PREFIX}{port}-{:012x}", digest >> 16)
}

/// FNV-1a, 64 bits: stable across releases and platforms, unlike `std`'s hasher.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Hostname {
        Hostname::parse(name).expect("valid")
    }

    #[test]
    fn names_are_stable_short_and_distinct() {
        let name = target_group_name(&host("example.es-hs.com"), 20001);
        assert_eq!(name, target_group_name(&host("example.es-hs.com"), 20001));
        assert!(name.len() <= 32, "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(!name.ends_with('-'));
        assert_ne!(name, target_group_name(&host("example.es-hs.com"), 20002));
        assert_ne!(name, target_group_name(&host("other.es-hs.com"), 20001));
        let longest = format!("{}.{}.com", "a".repeat(63), "b".repeat(63));
        assert!(target_group_name(&host(&longest), 65535).len() <= 32);
    }

    #[test]
    fn the_hash_is_the_published_fnv1a() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

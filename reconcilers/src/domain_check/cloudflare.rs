//! Whether DNS leads to Cloudflare's proxy: an address in the ranges Cloudflare publishes, or
//! a CNAME into its zone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cloudflare's IPv4 ranges as published at <https://www.cloudflare.com/ips-v4>. Embedded,
/// because the controller reaches no network it does not need: refresh it with each release
/// from that page (and ips-v6). A range added meanwhile only costs the Cloudflare hint; the
/// self-check still decides, and the CNAME check catches the usual setups.
const IPV4_RANGES: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(173, 245, 48, 0), 20),
    (Ipv4Addr::new(103, 21, 244, 0), 22),
    (Ipv4Addr::new(103, 22, 200, 0), 22),
    (Ipv4Addr::new(103, 31, 4, 0), 22),
    (Ipv4Addr::new(141, 101, 64, 0), 18),
    (Ipv4Addr::new(108, 162, 192, 0), 18),
    (Ipv4Addr::new(190, 93, 240, 0), 20),
    (Ipv4Addr::new(188, 114, 96, 0), 20),
    (Ipv4Addr::new(197, 234, 240, 0), 22),
    (Ipv4Addr::new(198, 41, 128, 0), 17),
    (Ipv4Addr::new(162, 158, 0, 0), 15),
    (Ipv4Addr::new(104, 16, 0, 0), 13),
    (Ipv4Addr::new(104, 24, 0, 0), 14),
    (Ipv4Addr::new(172, 64, 0, 0), 13),
    (Ipv4Addr::new(131, 0, 72, 0), 22),
];

/// Cloudflare's IPv6 ranges as published at <https://www.cloudflare.com/ips-v6>.
const IPV6_RANGES: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2400, 0xcb00, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2606, 0x4700, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2803, 0xf800, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2405, 0xb500, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2405, 0x8100, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2a06, 0x98c0, 0, 0, 0, 0, 0, 0), 29),
    (Ipv6Addr::new(0x2c0f, 0xf248, 0, 0, 0, 0, 0, 0), 32),
];

/// Whether `address` is one of Cloudflare's proxy addresses.
pub(super) fn is_cloudflare_ip(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => IPV4_RANGES.iter().any(|&(network, prefix)| {
            same_prefix(v4.to_bits().into(), network.to_bits().into(), prefix, 32)
        }),
        IpAddr::V6(v6) => IPV6_RANGES
            .iter()
            .any(|&(network, prefix)| same_prefix(v6.to_bits(), network.to_bits(), prefix, 128)),
    }
}

/// Whether a CNAME target lies in Cloudflare's zone (`<name>.cdn.cloudflare.net`, the target
/// of partial, CNAME-only setups).
pub(super) fn is_cloudflare_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "cloudflare.net" || name.ends_with(".cloudflare.net")
}

/// Whether the first `prefix` of `width` bits of two addresses (as integers) agree.
fn same_prefix(address: u128, network: u128, prefix: u8, width: u8) -> bool {
    let shift = u32::from(width.saturating_sub(prefix));
    address.checked_shr(shift).unwrap_or(0) == network.checked_shr(shift).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_published_ranges_are_cloudflare() {
        for (address, expected) in [
            ("104.16.1.1", true),
            ("104.23.255.255", true),
            ("104.28.0.1", false),
            ("104.27.255.255", true),
            ("172.67.10.10", true),
            ("198.41.255.1", true),
            ("198.41.127.1", false),
            ("192.0.2.1", false),
            ("2606:4700::6810:1", true),
            ("2a06:98c7::1", true),
            ("2a06:98c8::1", false),
            ("2001:db8::1", false),
            ("::1", false),
        ] {
            let address: IpAddr = address.parse().expect("address");
            assert_eq!(is_cloudflare_ip(address), expected, "{address}");
        }
    }

    #[test]
    fn names_under_cloudflare_net_are_cloudflare() {
        assert!(is_cloudflare_name("shop.example.com.cdn.cloudflare.net."));
        assert!(is_cloudflare_name("Shop.Example.com.CDN.cloudflare.net"));
        assert!(!is_cloudflare_name("notcloudflare.net"));
        assert!(!is_cloudflare_name("ga.example.com"));
    }
}

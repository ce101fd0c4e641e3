//! Just enough X.509 for what the controller and the simulated ACM read of a certificate: the
//! domain (the first DNS name of the subject alternative names, else the subject's common
//! name) and the validity, read from a PEM certificate with a small DER walker. Anything it
//! cannot read yields `None`.

const TAG_SEQUENCE: u8 = 0x30;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_OID: u8 = 0x06;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
const TAG_DNS_NAME: u8 = 0x82;
/// 2.5.4.3, the common name.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, subject alternative names.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.29.35, the authority key identifier.
const OID_AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
/// The `[0] keyIdentifier` of an authority key identifier.
const TAG_KEY_IDENTIFIER: u8 = 0x80;

/// What ACM reads from a certificate.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub domain: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub not_before: Option<i64>,
    /// Milliseconds since the Unix epoch.
    pub not_after: Option<i64>,
    /// The serial number's content octets.
    pub serial: Option<Vec<u8>>,
    /// The issuer's key identifier (the authority key identifier's `keyIdentifier` octets).
    pub authority_key_id: Option<Vec<u8>>,
}

/// Reads the first certificate of a PEM text.
pub fn parse_pem(pem: &str) -> Option<Parsed> {
    let der = pem_body(pem)?;
    let (_, certificate, _) = element(&der)?;
    let (_, tbs, _) = element(certificate)?;
    let fields = elements(tbs)?;
    // The version is optional; every field after it has a fixed place.
    let offset = usize::from(fields.first()?.0 == TAG_VERSION);
    let validity = fields.get(offset + 3)?.1;
    let subject = fields.get(offset + 4)?.1;
    let extensions = fields.iter().find(|(tag, _)| *tag == TAG_EXTENSIONS);
    let alt_name = extensions.and_then(|(_, body)| first_dns_name(body));
    let serial = fields.get(offset).map(|(_, body)| body.to_vec());
    let authority_key_id = extensions.and_then(|(_, body)| authority_key_id(body));
    Some(Parsed {
        serial,
        authority_key_id,
        domain: alt_name.or_else(|| common_name(subject)),
        not_before: elements(validity)?
            .first()
            .and_then(|(tag, t)| time(*tag, t)),
        not_after: elements(validity)?
            .get(1)
            .and_then(|(tag, t)| time(*tag, t)),
    })
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let (_, rest) = pem.split_once("-----BEGIN CERTIFICATE-----")?;
    let (body, _) = rest.split_once("-----END CERTIFICATE-----")?;
    base64(body)
}

fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let symbols = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=');
    let (mut bits, mut count, mut out) = (0u32, 0u32, Vec::new());
    for symbol in symbols {
        bits = (bits << 6) | u32::from(value(symbol)?);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let width = usize::from(first & 0x7f);
        if width == 0 || width > 4 || rest.len() < width {
            return None;
        }
        let len = rest[..width]
            .iter()
            .fold(0, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[width..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Every element of a constructed value's contents.
fn elements(mut input: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut found = Vec::new();
    while !input.is_empty() {
        let (tag, body, rest) = element(input)?;
        found.push((tag, body));
        input = rest;
    }
    Some(found)
}

fn common_name(subject: &[u8]) -> Option<String> {
    for (_, set) in elements(subject)? {
        for (_, attribute) in elements(set)? {
            let parts = elements(attribute)?;
            if let [(TAG_OID, OID_COMMON_NAME), (_, value)] = parts.as_slice() {
                return String::from_utf8(value.to_vec()).ok();
            }
        }
    }
    None
}

/// The value of the extension `oid`, its octet string's contents.
fn extension_value<'a>(extensions: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let (_, list, _) = element(extensions)?;
    for (_, extension) in elements(list)? {
        let parts = elements(extension)?;
        if parts.first() == Some(&(TAG_OID, oid)) {
            return parts
                .iter()
                .find(|(tag, _)| *tag == TAG_OCTET_STRING)
                .map(|(_, value)| *value);
        }
    }
    None
}

fn authority_key_id(extensions: &[u8]) -> Option<Vec<u8>> {
    let value = extension_value(extensions, OID_AUTHORITY_KEY_ID)?;
    let (_, fields, _) = element(value)?;
    elements(fields)?
        .into_iter()
        .find(|(tag, _)| *tag == TAG_KEY_IDENTIFIER)
        .map(|(_, id)| id.to_vec())
}

fn first_dns_name(extensions: &[u8]) -> Option<String> {
    let (_, list, _) = element(extensions)?;
    for (_, extension) in elements(list)? {
        let parts = elements(extension)?;
        if parts.first() != Some(&(TAG_OID, OID_SUBJECT_ALT_NAME)) {
            continue;
        }
        let (_, value) = parts.iter().find(|(tag, _)| *tag == TAG_OCTET_STRING)?;
        let (tag, names, _) = element(value)?;
        let names = if tag == TAG_SEQUENCE {
            elements(names)?
        } else {
            return None;
        };
        let dns = names.into_iter().find(|(tag, _)| *tag == TAG_DNS_NAME)?;
        return String::from_utf8(dns.1.to_vec()).ok();
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        TAG_UTC_TIME => {
            let short: i64 = text.get(..2)?.parse().ok()?;
            (
                if short < 50 {
                    2000 + short
                } else {
                    1900 + short
                },
                text.get(2..)?,
            )
        }
        TAG_GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let days = crate::utc::days_from_civil(year, field(0)?, field(2)?);
    let seconds = days * 86_400 + field(4)? * 3_600 + field(6)? * 60 + field(8)?;
    Some(seconds * 1_000)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `openssl req -x509 -subj /CN=cn.example.com` with two DNS alternative names.
    pub(crate) const WITH_ALT_NAMES: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBuzCCAWKgAwIBAgIUbRRRQzOMiRp8Uf+wK2nAcTx8NfgwCgYIKoZIzj0EAwIw\n\
GTEXMBUGA1UEAwwOY24uZXhhbXBsZS5jb20wHhcNMjYxMjAzMTYzMTI4WhcNMjcw\n\
MzAzMTYzMTI4WjAZMRcwFQYDVQQDDA5jbi5leGFtcGxlLmNvbTBZMBMGByqGSM49\n\
AgEGCCqGSM49AwEHA0IABEFfjnBM4o0+oUEFPwJ2/pwDqvjH0uFOR5z/9LaELNG2\n\
CWkkzVtepPJOL0Cx8wTCFdm7DZUGwraVEIteIC6075SjgYcwgYQwHQYDVR0OBBYE\n\
FH8i2sG72cxHWOY0di1Z3xN93bogMB8GA1UdIwQYMBaAFH8i2sG72cxHWOY0di1Z\n\
3xN93bogMA8GA1UdEwEB/wQFMAMBAf8wMQYDVR0RBCowKIIQc2hvcC5leGFtcGxl\n\
LmNvbYIUd3d3LnNob3AuZXhhbXBsZS5jb20wCgYIKoZIzj0EAwIDRwAwRAIgeURj\n\
iZgWT5TMs8gbKERg96+uNi67x1glrK8Ql7KLj48CIDF+sUPnoNV0+BLaxNbmgjI/\n\
eq/b2gqU6pnCP1ckQ5gd\n\
-----END CERTIFICATE-----\n\
";

    /// `openssl req -x509 -subj /CN=only-cn.example.com`, no alternative names.
    const COMMON_NAME_ONLY: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBkDCCATegAwIBAgIUZNs5lOf6r2QGfuy3Pj6KWiRy52AwCgYIKoZIzj0EAwIw\n\
HjEcMBoGA1UEAwwTb25seS1jbi5leGFtcGxlLmNvbTAeFw0yNjEyMDMxNjMxMjha\n\
Fw0yNzAxMDIxNjMxMjhaMB4xHDAaBgNVBAMME29ubHktY24uZXhhbXBsZS5jb20w\n\
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASmK5bq9oSe2cIUpQH5RIw5XgNgIdOP\n\
X8x6kNNHEonE3MZrk1eAeb0s2tJl1nLKNcUCe0AxJW9PSymfg0h412JLo1MwUTAd\n\
BgNVHQ4EFgQUaOGY8L4HuY9MybdyfWYByFfxPUMwHwYDVR0jBBgwFoAUaOGY8L4H\n\
uY9MybdyfWYByFfxPUMwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBE\n\
AiApO6v3YTaI8daVcuCdYz1gCeDuo5j9Vyo9uLjOnmwbngIgbibDiXM36zvIU2+/\n\
F7urJ5Wn3Oeoq42imiIkur5yyV8=\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn serial_and_authority_key_id_are_read_as_their_octets() {
        let parsed = parse_pem(WITH_ALT_NAMES).expect("parsed");
        let hex = |bytes: Option<Vec<u8>>| {
            bytes
                .expect("present")
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        };
        assert_eq!(
            hex(parsed.serial),
            "6D145143338C891A7C51FFB02B69C0713C7C35F8"
        );
        assert_eq!(
            hex(parsed.authority_key_id),
            "7F22DAC1BBD9CC4758E634762D59DF137DDDBA20"
        );
    }

    #[test]
    fn the_domain_is_the_first_dns_name_else_the_common_name() {
        let cases = [
            (WITH_ALT_NAMES, "shop.example.com", 1_804_091_488_000),
            (COMMON_NAME_ONLY, "only-cn.example.com", 1_798_907_488_000),
        ];
        for (pem, domain, not_after) in cases {
            let parsed = parse_pem(pem).expect("a certificate");
            assert_eq!(parsed.domain.as_deref(), Some(domain));
            assert_eq!(parsed.not_after, Some(not_after));
            let not_before = parsed.not_before.expect("validity starts");
            assert!(not_before < not_after, "{not_before} < {not_after}");
        }
    }

    #[test]
    fn times_convert_to_epoch_millis() {
        let cases: [(u8, &[u8], Option<i64>); 5] = [
            (TAG_UTC_TIME, b"700101000000Z", Some(0)),
            (TAG_UTC_TIME, b"260101000000Z", Some(1_767_225_600_000)),
            (
                TAG_GENERALIZED_TIME,
                b"20000229120000Z",
                Some(951_825_600_000),
            ),
            (TAG_UTC_TIME, b"2601010000Z", None),
            (TAG_OID, b"260101000000Z", None),
        ];
        for (tag, text, expected) in cases {
            assert_eq!(time(tag, text), expected, "{text:?}");
        }
    }

    #[test]
    fn base64_decodes_with_padding_and_line_breaks() {
        assert_eq!(base64("aGVs\nbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64("a*"), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(parse_pem(garbage), None);
        assert_eq!(parse_pem("no pem here"), None);
    }
}

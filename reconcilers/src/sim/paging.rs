//! Paging like AWS: listings come in pages of a service's size with an opaque token for the
//! next page. A token marks the last key returned, so a page stays right when items are added
//! or removed between calls.

use crate::cloud::{CloudError, ErrorKind, Page};

use super::error;

/// Page sizes of the listings the controller calls.
pub(crate) const DESCRIBE_TARGET_GROUPS: usize = 400;
pub(crate) const DESCRIBE_LISTENERS: usize = 400;
pub(crate) const DESCRIBE_LISTENER_CERTIFICATES: usize = 400;
pub(crate) const DESCRIBE_RULES: usize = 400;
/// DescribeLoadBalancers and DescribeTags take at most 20 ARNs per call.
pub(crate) const ELB_ARNS_PER_CALL: usize = 20;
pub(crate) const LIST_BUILDS_FOR_PROJECT: usize = 100;
pub(crate) const BATCH_GET_BUILDS: usize = 100;
pub(crate) const LIST_DEPLOYMENTS: usize = 100;
pub(crate) const LIST_CERTIFICATES: usize = 1000;
pub(crate) const LIST_COMMAND_INVOCATIONS: usize = 50;
pub(crate) const DESCRIBE_INSTANCES: usize = 1000;

/// One page of `items` (sorted here by key) after the key the token marks.
pub(crate) fn page<T>(
    operation: &'static str,
    mut items: Vec<(String, T)>,
    token: Option<&str>,
    size: usize,
) -> Result<Page<T>, CloudError> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let after = token.map(|t| decode(operation, t)).transpose()?;
    let mut rest = items
        .into_iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|marker| key > marker))
        .peekable();
    let mut page = Vec::new();
    let mut last_key = None;
    while page.len() < size {
        let Some((key, item)) = rest.next() else {
            break;
        };
        page.push(item);
        last_key = Some(key);
    }
    let next_token = match (rest.peek(), last_key) {
        (Some(_), Some(key)) => Some(encode(&key)),
        _ => None,
    };
    Ok(Page {
        items: page,
        next_token,
    })
}

/// A key that sorts newest first for a sequence number that grows.
pub(crate) fn newest_first(sequence: u64) -> String {
    format!("{:016x}", u64::MAX - sequence)
}

fn encode(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(operation: &'static str, token: &str) -> Result<String, CloudError> {
    let invalid = || {
        error(
            ErrorKind::Invalid,
            operation,
            "InvalidNextToken",
            "the next token is not valid",
        )
    };
    if token.is_empty() || !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(count: usize) -> Vec<(String, usize)> {
        (0..count).map(|i| (format!("{i:04}"), i)).collect()
    }

    #[test]
    fn pages_split_at_the_size_and_end_without_a_token() {
        let cases = [(0, 3, vec![0]), (3, 3, vec![3]), (7, 3, vec![3, 3, 1])];
        for (count, size, expected) in cases {
            let mut sizes = Vec::new();
            let mut token = None;
            loop {
                let page = page("x:List", numbered(count), token.as_deref(), size).expect("page");
                sizes.push(page.items.len());
                token = page.next_token;
                if token.is_none() {
                    break;
                }
            }
            assert_eq!(sizes, expected, "{count} items by {size}");
        }
    }

    #[test]
    fn a_token_survives_items_removed_before_it() {
        let first = page("x:List", numbered(6), None, 3).expect("page");
        let mut fewer = numbered(6);
        fewer.remove(0);
        let second = page("x:List", fewer, first.next_token.as_deref(), 3).expect("page");
        assert_eq!(second.items, vec![3, 4, 5]);
    }

    #[test]
    fn a_forged_token_is_invalid() {
        for token in ["", "z", "zz", "ff"] {
            let error = page("x:List", numbered(2), Some(token), 1).expect_err(token);
            assert_eq!(error.kind, ErrorKind::Invalid, "{token}");
        }
    }
}

//! `application/x-www-form-urlencoded`, decoded as Stripe's servers read it.

use std::collections::BTreeMap;

/// Decodes a form body; `payload%5Bvalue%5D` and `payload[value]` are the same key.
pub(crate) fn decode_form(body: &[u8]) -> Option<BTreeMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut params = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(unescape(key)?, unescape(value)?);
    }
    Some(params)
}

pub(crate) fn unescape(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_bracket_spellings() {
        let a = decode_form(b"event_name=a+b%2F&payload[value]=1").unwrap();
        let b = decode_form(b"event_name=a+b%2F&payload%5Bvalue%5D=1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a["event_name"], "a b/");
    }
}

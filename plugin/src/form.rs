//! `application/x-www-form-urlencoded` exactly as Stripe's official clients write it.
//!
//! stripe-python form-encodes every key and value (`urllib.parse.urlencode`:
//! space as `+`, everything but `A-Za-z0-9_.-~` as `%XX`), then turns `%5B` and
//! `%5D` back into `[` and `]`. Same fields in, same bytes out.

use crate::prelude::*;

/// Encodes `(key, value)` pairs in the order given.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_escaped(&mut out, key.as_ref());
        out.push('=');
        push_escaped(&mut out, value.as_ref());
    }
    out
}

/// One value escaped as [`encode`] escapes it (for a path segment or query value).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

fn push_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let safe =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'[' | b']');
    // Runs of safe bytes copied at once, not pushed a char at a time.
    let mut start = 0;
    for (at, &b) in text.as_bytes().iter().enumerate() {
        if safe(b) {
            continue;
        }
        // All ASCII from `start` to `at`: both are char boundaries.
        if start < at {
            out.push_str(&text[start..at]);
        }
        if b == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        start = at + 1;
    }
    if start < text.len() {
        out.push_str(&text[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn escapes_every_byte_as_one_at_a_time_would() {
        let one_at_a_time = |text: &str| {
            let mut out = String::new();
            for &b in text.as_bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => out.push(b as char),
                    b'_' | b'.' | b'-' | b'~' | b'[' | b']' => out.push(b as char),
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        let pieces = [
            "a", "Z9", " ", "é", "中", "😀", "%", "[x]", "\u{0}", "~-._", "&=",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let text = format!("{a}{b}{c}");
                    let mut out = String::new();
                    super::push_escaped(&mut out, &text);
                    assert_eq!(out, one_at_a_time(&text), "{text:?}");
                }
            }
        }
    }

    // Expected bodies printed by stripe-python 16.1.0 (`_api_encode` + `urlencode`
    // + its bracket replacement) for the same fields in the same order.
    #[test]
    fn matches_stripe_python_byte_for_byte() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[
                    ("event_name", "api_calls"),
                    ("payload[stripe_customer_id]", "cus_1"),
                    ("payload[value]", "25"),
                ],
                "event_name=api_calls&payload[stripe_customer_id]=cus_1&payload[value]=25",
            ),
            (
                &[
                    ("event_name", "api calls/é"),
                    ("payload[stripe_customer_id]", "cus_1"),
                    ("payload[value]", "25"),
                    ("identifier", "usync-1-2-abc"),
                    ("timestamp", "1732579199"),
                ],
                "event_name=api+calls%2F%C3%A9&payload[stripe_customer_id]=cus_1&payload[value]=25&identifier=usync-1-2-abc&timestamp=1732579199",
            ),
            (
                &[
                    ("event_name", "a&b=c+d%e[f]~_.-!*'()"),
                    ("payload[stripe_customer_id]", "cus x;y,z:@$?#"),
                    ("payload[value]", "-7"),
                    ("identifier", "idé中😀"),
                    ("timestamp", "0"),
                ],
                "event_name=a%26b%3Dc%2Bd%25e[f]~_.-%21%2A%27%28%29&payload[stripe_customer_id]=cus+x%3By%2Cz%3A%40%24%3F%23&payload[value]=-7&identifier=id%C3%A9%E4%B8%AD%F0%9F%98%80&timestamp=0",
            ),
            (
                &[
                    ("event_name", "tab\tnl\ncr\r"),
                    ("payload[stripe_customer_id]", "\"<>\\^`{|}"),
                    ("payload[value]", "0"),
                ],
                "event_name=tab%09nl%0Acr%0D&payload[stripe_customer_id]=%22%3C%3E%5C%5E%60%7B%7C%7D&payload[value]=0",
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(encode(fields), expected);
        }
    }
}

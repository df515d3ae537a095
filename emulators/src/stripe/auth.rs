//! Stripe's authentication: the secret key as Bearer, or as Basic's user.

use super::errors::{canned, error};
use crate::server::Reply;

pub(crate) fn check_auth(secret: &str, header: Option<&str>) -> Option<Reply> {
    let Some(header) = header else {
        return Some(error(
            401,
            "invalid_request_error",
            None,
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
        ));
    };
    let given = if let Some(token) = header.strip_prefix("Bearer ") {
        Some(token.to_string())
    } else if let Some(basic) = header.strip_prefix("Basic ") {
        base64_decode(basic)
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|user_pass| user_pass.split_once(':').map(|(u, _)| u.to_string()))
    } else {
        None
    };
    match given {
        Some(key) if key == secret => None,
        // Stripe echoes the key masked, never whole.
        Some(key) => Some(error(
            401,
            "invalid_request_error",
            None,
            None,
            &format!("Invalid API Key provided: {}", mask(&key)),
        )),
        None => Some(canned(401)),
    }
}

pub(crate) fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len());
    }
    let prefix: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}{}{tail}", "*".repeat(chars.len() - 12))
}

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_takes_the_key_as_user() {
        // "sk_test_x:" in base64
        assert_eq!(base64_decode("c2tfdGVzdF94Og==").unwrap(), b"sk_test_x:");
        assert!(check_auth("sk_test_x", Some("Basic c2tfdGVzdF94Og==")).is_none());
        assert!(check_auth("sk_test_x", Some("Bearer sk_test_x")).is_none());
        assert!(check_auth("sk_test_x", Some("Bearer sk_test_y")).is_some());
    }

    #[test]
    fn masks_keys_in_errors() {
        assert_eq!(mask("sk_test_abcdefgh1234"), "sk_test_********1234");
    }
}

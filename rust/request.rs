//! What the hot route reads from a request's headers before its body, in one pass: the SHA-256 of the API key,
//! when the key is one the fast path can judge as the Python code would (`web.api_key_from`, `auth.well_formed`),
//! and the declared body length; and the names a chat body's messages may use (`pipeline/validate.py`).

use sha2::{Digest, Sha256};

use crate::audit::hex;

pub const KEY_PREFIX: &[u8] = b"wj_live_";

/// `auth.well_formed`: the prefix, then at least 32 ASCII letters and digits, 128 bytes at most in all.
pub fn well_formed(key: &[u8]) -> bool {
    key.len() <= 128
        && key.starts_with(KEY_PREFIX)
        && key.len() - KEY_PREFIX.len() >= 32
        && key[KEY_PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric)
}

/// The key `api_key_from` takes from the last `authorization` and `x-api-key` values (`Bearer KEY`, else the
/// `x-api-key`), when it is well formed as sent; `None` for anything else (no key, another scheme, blanks to
/// strip, a malformed key), which the Python code then judges and reports.
pub fn api_key<'a>(authorization: Option<&'a [u8]>, x_api_key: Option<&'a [u8]>) -> Option<&'a [u8]> {
    match authorization {
        Some(auth) if !auth.is_empty() => {
            let space = auth.iter().position(|&b| b == b' ')?;
            let (scheme, token) = (&auth[..space], &auth[space + 1..]);
            (scheme.eq_ignore_ascii_case(b"bearer") && well_formed(token)).then_some(token)
        }
        _ => x_api_key.filter(|k| well_formed(k)),
    }
}

/// `auth.hash_key`: the key's SHA-256 in lower-case hex.
pub fn key_hash(key: &[u8]) -> String {
    hex(&Sha256::digest(key))
}

/// `validate.ROLES`: the message roles the gateway accepts.
pub fn known_role(role: &str) -> bool {
    matches!(
        role,
        "system" | "user" | "assistant" | "developer" | "tool" | "function"
    )
}

/// `validate._PART_TYPES`: the content part types the gateway accepts.
pub fn known_part_type(kind: &str) -> bool {
    matches!(kind, "text" | "image_url" | "input_audio" | "file" | "refusal")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"wj_live_abcdefghijABCDEFGHIJ0123456789abcdefghij";

    #[test]
    fn keys_as_the_python_code_takes_them() {
        assert_eq!(
            api_key(Some(b"Bearer wj_live_abcdefghijABCDEFGHIJ0123456789abcdefghij"), None),
            Some(KEY)
        );
        assert_eq!(
            api_key(Some(b"bEaReR wj_live_abcdefghijABCDEFGHIJ0123456789abcdefghij"), None),
            Some(KEY)
        );
        assert_eq!(api_key(None, Some(KEY)), Some(KEY));
        assert_eq!(api_key(Some(b""), Some(KEY)), Some(KEY)); // an empty authorization is no authorization
        // Left to Python: blanks to strip, another scheme, no space, a malformed or absent key.
        assert_eq!(
            api_key(Some(b"Bearer  wj_live_abcdefghijABCDEFGHIJ0123456789abcdefghij"), None),
            None
        );
        assert_eq!(
            api_key(
                Some(b"Basic wj_live_abcdefghijABCDEFGHIJ0123456789abcdefghij"),
                Some(KEY)
            ),
            None
        );
        assert_eq!(api_key(Some(b"Bearer"), None), None);
        assert_eq!(api_key(Some(b"Bearer wj_live_short"), None), None);
        assert_eq!(
            api_key(None, Some(b"wj_live_abcdefghijABCDEFGHIJ0123456789abcdefgh-j")),
            None
        );
        assert_eq!(api_key(None, None), None);
        assert!(!well_formed(&[b"wj_live_".as_slice(), &[b'a'; 121]].concat())); // 129 bytes
        assert!(well_formed(&[b"wj_live_".as_slice(), &[b'a'; 120]].concat()));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            key_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

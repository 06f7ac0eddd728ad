//! Validators: the checks that turn a pattern match into a finding.
//!
//! A validator sees the matched bytes and at most the one byte before them (`prev`); it never looks past the
//! match end, so the streaming scanner can decide a candidate as soon as the pattern's automaton is done with it.
//! It returns the accepted length (equal to the match, or shorter when trailing junk was glued to an IBAN).

/// A named validator; custom rules refer to these by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// Luhn checksum over 13-19 digits (separators `-`/space, not mixed).
    Luhn,
    /// US SSN area/group/serial rules, one delimiter, famous samples rejected.
    Ssn,
    /// ISO 13616: per-country length and mod-97 check digits; trailing glued groups are trimmed.
    Iban,
    /// Dotted quad, octets <= 255, no leading zeros, not part of a longer dotted run.
    Ipv4,
    /// Parses as an IPv6 address (eight groups or a `::`).
    Ipv6,
    /// base64url header decodes to a JSON object with `"alg"`.
    Jwt,
    /// Local part and domain sanity.
    Email,
    /// Not all one digit, 10-15 digits.
    Phone,
    /// Not a known placeholder, Shannon entropy >= 3.0 bits/char.
    Token,
    /// [`Validator::Token`] with entropy >= 3.5 on the 40-char value.
    AwsSecret,
    /// Entropy >= 3.5, not a template or placeholder, at least one digit or symbol.
    GenericSecret,
}

impl Validator {
    pub fn by_name(name: &str) -> Option<Validator> {
        Some(match name {
            "luhn" => Validator::Luhn,
            "ssn" => Validator::Ssn,
            "iban" => Validator::Iban,
            "ipv4" => Validator::Ipv4,
            "ipv6" => Validator::Ipv6,
            "jwt" => Validator::Jwt,
            "email" => Validator::Email,
            "phone" => Validator::Phone,
            "token" | "entropy" => Validator::Token,
            "aws_secret" => Validator::AwsSecret,
            "generic_secret" => Validator::GenericSecret,
            _ => return None,
        })
    }

    /// `prev` is the byte before the match, if any.
    pub fn check(self, m: &[u8], prev: Option<u8>) -> Option<usize> {
        let ok = match self {
            Validator::Luhn => luhn_card(m),
            Validator::Ssn => ssn(m),
            Validator::Iban => return iban(m),
            Validator::Ipv4 => ipv4(m, prev),
            Validator::Ipv6 => ipv6(m),
            Validator::Jwt => jwt(m),
            Validator::Email => email(m),
            Validator::Phone => phone(m),
            Validator::Token => !is_placeholder(m) && shannon_entropy(m) >= 3.0,
            Validator::AwsSecret => !is_placeholder(m) && shannon_entropy(m) >= 3.5,
            Validator::GenericSecret => generic_secret(m),
        };
        ok.then_some(m.len())
    }
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| f64::from(c) / n)
        .map(|p| -p * p.log2())
        .sum()
}

/// Documentation placeholders: AWS's `...EXAMPLE` keys, `xxxx` runs, long runs of one character.
pub fn is_placeholder(s: &[u8]) -> bool {
    const KNOWN: &[&[u8]] = &[b"AKIAIOSFODNN7EXAMPLE", b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"];
    if KNOWN.contains(&s) {
        return true;
    }
    let upper: Vec<u8> = s.to_ascii_uppercase();
    if upper.ends_with(b"EXAMPLE") || upper.ends_with(b"EXAMPLEKEY") || memchr::memmem::find(&upper, b"XXXX").is_some()
    {
        return true;
    }
    // Six or more repeats of one character (`000000`, `aaaaaa`).
    let mut run = 1;
    for w in s.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 1 };
        if run >= 6 {
            return true;
        }
    }
    false
}

fn digits(m: &[u8]) -> Vec<u8> {
    m.iter().filter(|b| b.is_ascii_digit()).map(|b| b - b'0').collect()
}

fn separators_consistent(m: &[u8]) -> bool {
    let has_dash = m.contains(&b'-');
    let has_space = m.contains(&b' ');
    !(has_dash && has_space)
}

pub fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = u32::from(x);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

fn luhn_card(m: &[u8]) -> bool {
    let d = digits(m);
    (13..=19).contains(&d.len()) && separators_consistent(m) && !d.iter().all(|&x| x == d[0]) && luhn(&d)
}

fn ssn(m: &[u8]) -> bool {
    // m is `ddd?dd?dddd` with ? in {'-', ' '}.
    if m.len() != 11 || m[3] != m[6] {
        return false;
    }
    let d = digits(m);
    if d.len() != 9 || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let area = &d[0..3];
    let group = &d[3..5];
    let serial = &d[5..9];
    if area == [0, 0, 0] || area == [6, 6, 6] || area[0] == 9 || group == [0, 0] || serial == [0, 0, 0, 0] {
        return false;
    }
    // Famous samples: the Woolworth wallet card, the 1964 ad card, the "123-45-6789" placeholder.
    const FAMOUS: &[[u8; 9]] = &[
        [0, 7, 8, 0, 5, 1, 1, 2, 0],
        [2, 1, 9, 0, 9, 9, 9, 9, 9],
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
        [4, 5, 7, 5, 5, 5, 4, 6, 2],
    ];
    !FAMOUS.iter().any(|f| f[..] == d[..])
}

/// ISO 13616 lengths per country (SWIFT IBAN registry).
fn iban_length(cc: &[u8]) -> Option<usize> {
    Some(match cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VG" => 24,
        b"XK" => 20,
        _ => return None,
    })
}

pub fn iban_mod97(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Returns the accepted length: the first `len(country)` alphanumerics, when they end at a group boundary.
fn iban(m: &[u8]) -> Option<usize> {
    let want = iban_length(m.get(..2)?)?;
    let mut chars = Vec::with_capacity(want);
    let mut end = 0;
    for (i, &b) in m.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        chars.push(b);
        if chars.len() == want {
            end = i + 1;
            break;
        }
    }
    if chars.len() != want {
        return None;
    }
    // What is cut off must be a whole space-separated group, not the middle of one.
    if end < m.len() && m[end] != b' ' {
        return None;
    }
    let spaced = m[..end].contains(&b' ');
    if spaced && m[..end].split(|&b| b == b' ').any(|g| g.len() > 4) {
        return None;
    }
    iban_mod97(&chars).then_some(end)
}

fn ipv4(m: &[u8], prev: Option<u8>) -> bool {
    if matches!(prev, Some(b'.')) || matches!(prev, Some(b) if b.is_ascii_digit()) {
        return false;
    }
    let parts: Vec<&[u8]> = m.split(|&b| b == b'.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && !(p.len() > 1 && p[0] == b'0')
                && p.iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0')) <= 255
        })
}

fn ipv6(m: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(m) else { return false };
    let groups = s.split(':').count();
    (groups == 8 || s.contains("::")) && s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn email(m: &[u8]) -> bool {
    let Some(at) = memchr::memchr(b'@', m) else {
        return false;
    };
    let (local, domain) = (&m[..at], &m[at + 1..]);
    !local.is_empty()
        && local[0] != b'.'
        && local[local.len() - 1] != b'.'
        && memchr::memmem::find(local, b"..").is_none()
        && domain
            .split(|&b| b == b'.')
            .all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-')
}

fn phone(m: &[u8]) -> bool {
    let d = digits(m);
    (10..=15).contains(&d.len()) && !d.iter().all(|&x| x == d[d.len() - 1])
}

/// Decodes unpadded base64url (also accepts the standard alphabet).
pub fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn jwt(m: &[u8]) -> bool {
    let Some(dot) = memchr::memchr(b'.', m) else {
        return false;
    };
    let Some(header) = base64url_decode(&m[..dot]) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(&header) {
        Ok(serde_json::Value::Object(map)) => map.contains_key("alg"),
        _ => false,
    }
}

fn generic_secret(m: &[u8]) -> bool {
    !is_placeholder(m)
        && !m.starts_with(b"${")
        && !m.starts_with(b"{{")
        && m.iter().any(|b| b.is_ascii_digit() || !b.is_ascii_alphabetic())
        && shannon_entropy(m) >= 3.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_cards() {
        assert!(luhn_card(b"4111 1111 1111 1111"));
        assert!(luhn_card(b"378282246310005"));
        assert!(!luhn_card(b"4111 1111 1111 1112"));
        assert!(!luhn_card(b"4111-1111 1111-1111"));
    }

    #[test]
    fn iban_check() {
        assert_eq!(iban(b"DE89 3704 0044 0532 0130 00"), Some(27));
        assert_eq!(iban(b"GB82WEST12345698765432"), Some(22));
        assert_eq!(iban(b"DE89 3704 0044 0532 0130 00 ABC"), Some(27));
        assert_eq!(iban(b"DE88 3704 0044 0532 0130 00"), None);
        assert_eq!(iban(b"ZZ89 3704 0044 0532 0130 00"), None);
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(b"536-22-8146"));
        assert!(!ssn(b"536-22 8146"));
        assert!(!ssn(b"000-22-8146"));
        assert!(!ssn(b"666-22-8146"));
        assert!(!ssn(b"078-05-1120"));
        assert!(!ssn(b"536-00-8146"));
    }

    #[test]
    fn ips() {
        assert!(ipv4(b"192.168.1.20", None));
        assert!(!ipv4(b"192.168.1.256", None));
        assert!(!ipv4(b"1.2.3.4.5", None));
        assert!(!ipv4(b"2.3.4.5", Some(b'.')));
        assert!(ipv6(b"2001:db8:85a3:0:0:8a2e:370:7334"));
        assert!(ipv6(b"fe80::1"));
        assert!(!ipv6(b"12:30:45"));
    }

    #[test]
    fn entropy_and_placeholders() {
        assert!(shannon_entropy(b"aaaa") < 0.1);
        assert!(is_placeholder(b"AKIAIOSFODNN7EXAMPLE"));
        assert!(is_placeholder(b"AKIAXXXXXXXXXXXXXXXX"));
        assert!(!is_placeholder(b"AKIA2E0A8F3B244C9986"));
    }

    #[test]
    fn jwt_header() {
        assert!(jwt(
            b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl"
        ));
        assert!(!jwt(b"eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijkl"));
    }
}

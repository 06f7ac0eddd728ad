//! OpenAI's `x-ratelimit-*` response headers from the limiter's bucket levels, as bytes: the values
//! `ratelimit_headers` in `pipeline/limits.py` gives, built without a Python string per header.

/// Seconds in which a bucket refills completely (`WINDOW` in `pipeline/limits.py`).
const WINDOW: f64 = 60.0;
/// `_EPS` there: remaining counts absorb float error.
const EPS: f64 = 1e-6;
/// Limits up to here convert to a float exactly, as Python converts them; larger ones stay with Python.
pub const MAX_EXACT: u64 = 1 << 53;

/// What is left of `limit` at bucket level `level` (seconds of the window in use), as Python computes it:
/// `min(limit, int((WINDOW - level) * limit / WINDOW + _EPS + limit * 2e-9))`, shown as 0 when not positive.
pub fn remaining(limit: u64, level: f64) -> u64 {
    let n = limit as f64;
    let left = ((WINDOW - level) * n / WINDOW + EPS + n * 2e-9).trunc();
    if left <= 0.0 {
        0
    } else if left >= n {
        limit
    } else {
        left as u64
    }
}

/// A duration as Go's `time.Duration.String` prints it, to the millisecond (`go_duration` in Python).
pub fn go_duration(seconds: f64) -> String {
    let ms = (seconds * 1000.0 - 1e-6).ceil();
    if ms.is_nan() || ms <= 0.0 {
        return "0s".to_owned();
    }
    let ms = ms as u64;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, frac) = (rem / 1000, rem % 1000);
    let sec = if frac == 0 {
        s.to_string()
    } else {
        format!("{s}.{frac:03}").trim_end_matches('0').to_owned()
    };
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// One response header: a static name and its value.
pub type Header = (&'static [u8], Vec<u8>);

/// The headers for the limits that exist, in the order Python gives them; `None` when a limit is too large to
/// compute here exactly (Python then does it) or a level is not a finite number.
pub fn ratelimit_headers(rpm: Option<u64>, tpm: Option<u64>, rpm_level: f64, tpm_level: f64) -> Option<Vec<Header>> {
    const REQUESTS: [&[u8]; 3] = [
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
    ];
    const TOKENS: [&[u8]; 3] = [
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-tokens",
    ];
    let mut out = Vec::with_capacity(6);
    for (limit, level, [l, r, s]) in [(rpm, rpm_level, REQUESTS), (tpm, tpm_level, TOKENS)] {
        let Some(limit) = limit else { continue };
        if limit > MAX_EXACT || !level.is_finite() {
            return None;
        }
        out.push((l, limit.to_string().into_bytes()));
        out.push((r, remaining(limit, level).to_string().into_bytes()));
        out.push((s, go_duration(level).into_bytes()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        for (s, want) in [
            (0.0, "0s"),
            (-3.0, "0s"),
            (0.0004, "1ms"),
            (0.012, "12ms"),
            (1.0, "1s"),
            (1.5, "1.5s"),
            (1.05, "1.05s"),
            (60.0, "1m0s"),
            (61.25, "1m1.25s"),
            (3600.0, "1h0m0s"),
            (3725.001, "1h2m5.001s"),
        ] {
            assert_eq!(go_duration(s), want, "{s}");
        }
    }

    #[test]
    fn remaining_counts() {
        assert_eq!(remaining(5, 0.0), 5);
        assert_eq!(remaining(5, 12.0), 4);
        assert_eq!(remaining(5, 60.0), 0);
        assert_eq!(remaining(5, 75.0), 0);
        assert_eq!(remaining(60, 59.0), 1);
    }

    #[test]
    fn headers_for_the_limits_that_exist() {
        let h = ratelimit_headers(Some(5), None, 12.0, 0.0).unwrap_or_default();
        let got: Vec<(&[u8], &[u8])> = h.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        assert_eq!(
            got,
            [
                (&b"x-ratelimit-limit-requests"[..], &b"5"[..]),
                (b"x-ratelimit-remaining-requests", b"4"),
                (b"x-ratelimit-reset-requests", b"12s"),
            ]
        );
        assert_eq!(ratelimit_headers(None, None, 0.0, 0.0), Some(Vec::new()));
        assert_eq!(ratelimit_headers(None, Some(MAX_EXACT + 1), 0.0, 0.0), None);
        assert_eq!(ratelimit_headers(Some(5), None, f64::NAN, 0.0), None);
    }
}

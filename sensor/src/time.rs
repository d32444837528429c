//! Capture time.
//!
//! Every clock in the core is packet time: a [`Timestamp`] taken from the capture
//! record, never the wall clock (architecture principle 2).

use std::fmt;

/// Nanoseconds since the Unix epoch, as recorded by the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A span of capture time in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

impl Duration {
    pub const fn from_secs(s: i64) -> Self {
        Duration(s * 1_000_000_000)
    }
    pub const fn from_millis(ms: i64) -> Self {
        Duration(ms * 1_000_000)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl Timestamp {
    /// Builds a timestamp from seconds and a fraction counted in `units_per_sec`.
    pub fn from_parts(secs: i64, frac: u64, units_per_sec: u64) -> Self {
        let nanos = if units_per_sec == 0 {
            0
        } else {
            ((frac as u128 * 1_000_000_000u128) / units_per_sec as u128) as i64
        };
        Timestamp(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }
    pub fn subsec_nanos(self) -> u32 {
        self.0.rem_euclid(1_000_000_000) as u32
    }
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Timestamp {
    /// Writes `2024-01-02T03:04:05.678901+0000` into `buf` without the
    /// formatting machinery (events carry several timestamps each).
    pub fn rfc3339<'b>(&self, buf: &'b mut [u8; 31]) -> &'b str {
        *buf = self.rfc3339_bytes();
        // only ASCII digits and punctuation were written
        std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000000+0000")
    }

    /// [`Timestamp::rfc3339`] as bytes. Events of one day share the date:
    /// each thread keeps the last day's text (finding a date from a day
    /// number takes divisions a time of day does not need).
    pub fn rfc3339_bytes(&self) -> [u8; 31] {
        thread_local! {
            static LAST: std::cell::Cell<(i64, [u8; 10])> =
                const { std::cell::Cell::new((i64::MIN, [0; 10])) };
        }
        let secs = self.secs();
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let mut buf = *b"0000-00-00T00:00:00.000000+0000";
        let (last, text) = LAST.with(std::cell::Cell::get);
        if last == days {
            buf[..10].copy_from_slice(&text);
        } else {
            date(&mut buf, days);
            let mut text = [0; 10];
            text.copy_from_slice(&buf[..10]);
            LAST.with(|c| c.set((days, text)));
        }
        two_digits(&mut buf, 11, sod / 3600);
        two_digits(&mut buf, 14, sod / 60 % 60);
        two_digits(&mut buf, 17, sod % 60);
        let micros = self.subsec_nanos() / 1000;
        two_digits(&mut buf, 20, micros / 10_000);
        two_digits(&mut buf, 22, micros / 100 % 100);
        two_digits(&mut buf, 24, micros % 100);
        buf
    }
}

/// `v` (below 100) as two digits at `buf[at..at + 2]`.
fn two_digits(buf: &mut [u8; 31], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// The date of day number `days` (since the epoch) into `buf[..10]`.
fn date(buf: &mut [u8; 31], days: i64) {
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    two_digits(buf, 0, y / 100);
    two_digits(buf, 2, y % 100);
    two_digits(buf, 5, m);
    two_digits(buf, 8, d);
}

/// RFC 3339 with microseconds and an explicit UTC offset, as EVE writes it:
/// `2024-01-02T03:04:05.678901+0000`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc3339(&mut [0; 31]))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.rfc3339(&mut [0; 31]))
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s}")))
    }
}

impl Timestamp {
    /// An RFC 3339 time as events write it (`2026-11-01T10:00:00.000100+0000`;
    /// `Z` and `+hh:mm` too).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut at = 19;
        let mut nanos = 0i64;
        if s.as_bytes().get(at) == Some(&b'.') {
            let n = s[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let digits = &s[at + 1..at + 1 + n];
            at += 1 + n;
            for (i, c) in digits.bytes().take(9).enumerate() {
                nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
            }
        }
        let zone = s.get(at..)?;
        let offset = match zone.as_bytes().first() {
            Some(b'Z') | None => 0,
            Some(sign @ (b'+' | b'-')) => {
                let z = zone[1..].replace(':', "");
                let (zh, zm): (i64, i64) = (z.get(0..2)?.parse().ok()?, z.get(2..4)?.parse().ok()?);
                let o = zh * 3600 + zm * 60;
                if *sign == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return None,
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
        Some(Timestamp(
            secs.checked_mul(1_000_000_000)?.checked_add(nanos)?,
        ))
    }
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats() {
        for ns in [
            0i64,
            1_700_000_000_123_456_000,
            -86_400_000_000_000,
            4_102_444_800_000_001_000,
        ] {
            let t = Timestamp(ns);
            assert_eq!(
                Timestamp::parse_rfc3339(t.rfc3339(&mut [0; 31])),
                Some(t),
                "{ns}"
            );
        }
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T01:00:00Z"),
            Some(Timestamp(3_600_000_000_000))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T01:00:00+01:00"),
            Some(Timestamp(0))
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-01-01",
            "x026-01-01T00:00:00Z",
            "2026-01-01T00:00:00?",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_rfc3339_with_micros() {
        let t = Timestamp::from_parts(1_340_954_905, 298_858, 1_000_000);
        assert_eq!(t.to_string(), "2012-06-29T07:28:25.298858+0000");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000+0000");
        // leap day and nanosecond input
        let t = Timestamp::from_parts(951_782_400, 123_456_789, 1_000_000_000);
        assert_eq!(t.to_string(), "2000-02-29T00:00:00.123456+0000");
    }

    /// The day kept per thread is only ever the one asked for: times
    /// around midnight (back and forth across it), a day or a year apart,
    /// and across the epoch read the same as when made afresh, whatever
    /// came before.
    #[test]
    fn the_kept_day_never_leaks_into_another() {
        // 2023-11-13T23:59:59.5
        let midnight = 1_699_919_999_500_000_000i64;
        let steps = [
            0i64,
            999_999_999,
            1,
            1_000_000_000,
            -1_000_000_000,
            86_400_000_000_000,
            -31_536_000_000_000_000,
            999,
            500_000_000,
        ];
        let mut times: Vec<i64> = Vec::new();
        for start in [midnight, 0] {
            let mut ns = start;
            for (i, step) in steps.iter().cycle().take(120).enumerate() {
                // drift back to the start now and then: the walk crosses
                // midnight (and the epoch) both ways
                ns = if i % 10 == 9 { start } else { ns };
                ns = ns.wrapping_add(*step).wrapping_add(i as i64 * 7_919);
                times.push(ns);
            }
        }
        times.extend([
            0,
            -1,
            0,
            -86_400_000_000_001,
            86_399_999_999_999,
            86_400_000_000_000,
        ]);
        // the walk does cross midnight and the epoch
        let day = |ns: i64| ns.div_euclid(86_400_000_000_000);
        let days: std::collections::BTreeSet<i64> = times.iter().map(|n| day(*n)).collect();
        for d in [day(midnight), day(midnight) + 1, -1, 0] {
            assert!(days.contains(&d), "day {d} never visited");
        }
        for ns in times {
            let t = Timestamp(ns);
            // the same text made afresh, without the kept day
            let secs = ns.div_euclid(1_000_000_000);
            let mut fresh = *b"0000-00-00T00:00:00.000000+0000";
            date(&mut fresh, secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            let micros = ns.rem_euclid(1_000_000_000) / 1_000;
            let want = format!(
                "{}T{:02}:{:02}:{:02}.{micros:06}+0000",
                std::str::from_utf8(&fresh[..10]).expect("ascii"),
                sod / 3600,
                sod / 60 % 60,
                sod % 60
            );
            assert_eq!(t.to_string(), want, "{ns}");
        }
    }

    #[test]
    fn negative_times_do_not_panic() {
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999+0000");
    }
}

//! The session `TimeZone`: which zone `timestamptz` values are shown in.
//! Values are stored as UTC instants; only their text form changes.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, Utc};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset"))
    }
}

/// Parses a TimeZone setting: a zone name (`UTC`, `Europe/Paris`), or an
/// hour offset east of UTC as `SET TIME ZONE -5` gives it.
pub fn parse_zone(name: &str) -> Option<Zone> {
    let name = name.trim().trim_matches('\'');
    if let Ok(hours) = name.parse::<f64>() {
        let seconds = (hours * 3600.0).round() as i32;
        return FixedOffset::east_opt(seconds).map(Zone::Fixed);
    }
    if matches!(
        name.to_ascii_uppercase().as_str(),
        "UTC" | "GMT" | "Z" | "ZULU"
    ) {
        return Some(Zone::default());
    }
    name.parse::<chrono_tz::Tz>()
        .ok()
        .map(Zone::Named)
        .or_else(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .find(|tz| tz.name().eq_ignore_ascii_case(name))
                .copied()
                .map(Zone::Named)
        })
}

/// `2024-01-01 07:00:00.5-05`, as PostgreSQL prints a timestamptz.
pub fn format_instant(utc: NaiveDateTime, zone: &Zone) -> String {
    let utc = DateTime::<Utc>::from_naive_utc_and_offset(utc, Utc);
    let (local, offset) = match zone {
        Zone::Fixed(z) => (utc.with_timezone(z).naive_local(), z.fix()),
        Zone::Named(tz) => {
            let local = utc.with_timezone(tz);
            (local.naive_local(), local.offset().fix())
        }
    };
    let mut text = format_naive(local);
    let secs = offset.local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let (h, m, s) = (secs.abs() / 3600, secs.abs() / 60 % 60, secs.abs() % 60);
    text.push_str(&format!("{sign}{h:02}"));
    if m != 0 || s != 0 {
        text.push_str(&format!(":{m:02}"));
    }
    if s != 0 {
        text.push_str(&format!(":{s:02}"));
    }
    text
}

/// `2024-01-01 12:00:00[.ffffff]` with trailing fraction zeros dropped.
pub fn format_naive(value: NaiveDateTime) -> String {
    let mut text = value.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn zones() {
        let t = at("2024-01-01 12:00:00");
        assert_eq!(
            format_instant(t, &Zone::default()),
            "2024-01-01 12:00:00+00"
        );
        assert_eq!(
            format_instant(t, &parse_zone("America/New_York").unwrap()),
            "2024-01-01 07:00:00-05"
        );
        assert_eq!(
            format_instant(t, &parse_zone("-5").unwrap()),
            "2024-01-01 07:00:00-05"
        );
        assert_eq!(
            format_instant(
                at("2024-01-01 12:00:00.250"),
                &parse_zone("Asia/Kolkata").unwrap()
            ),
            "2024-01-01 17:30:00.25+05:30"
        );
        assert!(parse_zone("Mars/Olympus").is_none());
    }
}

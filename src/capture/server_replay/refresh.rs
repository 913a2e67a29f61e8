//! Refreshing a replayed response (mitmproxy's `server_replay_refresh`): its `Date`,
//! `Expires` and `Last-Modified` fields, and the `Expires` of its cookies, moved
//! forward by the time since it was recorded, so that a client sees it as fresh as
//! it was then.
//!
//! Dates are read in the forms HTTP allows (IMF-fixdate, RFC 850, asctime) and in
//! RFC 2822's with a numeric zone, and written as IMF-fixdate. A date that cannot be
//! read is left as it is (where mitmproxy drops a cookie's unreadable `Expires`).

use bytes::Bytes;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::http::message::Headers;

/// The header fields holding a date to move.
const DATED: &[&str] = &["date", "expires", "last-modified"];

/// Moves the dates of `headers` forward by `delta` seconds; the fields keep their
/// order.
pub(super) fn refresh(headers: &mut Headers, delta: i64) {
    let mut moved = Headers::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let text = std::str::from_utf8(value).ok();
        let new = if DATED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            text.and_then(|t| shifted(t, delta))
        } else if name.eq_ignore_ascii_case("set-cookie") {
            text.and_then(|t| cookie_shifted(t, delta))
        } else {
            None
        };
        let value = new.map_or_else(|| Bytes::copy_from_slice(value), Bytes::from);
        moved.append(Bytes::copy_from_slice(name.as_bytes()), value);
    }
    *headers = moved;
}

/// A `Set-Cookie` value with its `Expires` attribute moved, the rest as it was; `None`
/// when there is none to move.
fn cookie_shifted(cookie: &str, delta: i64) -> Option<String> {
    let mut out = String::with_capacity(cookie.len() + 8);
    let mut moved = false;
    for (i, part) in cookie.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        // The first part is the cookie's name and value, never an attribute.
        let attribute = (i > 0).then(|| part.split_once('=')).flatten();
        match attribute {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("expires") => {
                match shifted(value, delta) {
                    Some(new) => {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(&new);
                        moved = true;
                    }
                    None => out.push_str(part),
                }
            }
            _ => out.push_str(part),
        }
    }
    moved.then_some(out)
}

/// `value` read as a date, moved by `delta` seconds, as IMF-fixdate.
fn shifted(value: &str, delta: i64) -> Option<String> {
    let when = parse_date(value)?;
    let moved = when.unix_timestamp().checked_add(delta)?;
    format_date(OffsetDateTime::from_unix_timestamp(moved).ok()?)
}

/// An HTTP date: `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`,
/// `Sun Nov  6 08:49:37 1994`, or with a numeric zone (`+0100`); no zone is UTC.
pub(super) fn parse_date(value: &str) -> Option<OffsetDateTime> {
    let mut words: Vec<&str> = value
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    // A day name first is only a name.
    if words
        .first()
        .is_some_and(|w| w.chars().all(|c| c.is_ascii_alphabetic()) && month(w).is_none())
    {
        words.remove(0);
    }
    // RFC 850: the date in one word.
    if let Some(first) = words.first().copied() {
        let parts: Vec<&str> = first.split('-').collect();
        if parts.len() == 3 {
            words.splice(0..1, parts);
        }
    }
    let (day, month, year, clock, zone) = match words.as_slice() {
        // asctime: month, day, time, year.
        [m, d, clock, y] if month(m).is_some() => (*d, *m, *y, *clock, None),
        [d, m, y, clock] => (*d, *m, *y, *clock, None),
        [d, m, y, clock, zone] => (*d, *m, *y, *clock, Some(*zone)),
        _ => return None,
    };
    let day: u8 = day.parse().ok()?;
    let month = self::month(month)?;
    let mut year: i32 = year.parse().ok()?;
    if year.abs() < 100 && year >= 0 {
        // Two digits, as Python reads them.
        year += if year > 68 { 1900 } else { 2000 };
    }
    let mut hms = clock.split(':');
    let hour: u8 = hms.next()?.parse().ok()?;
    let minute: u8 = hms.next()?.parse().ok()?;
    let second: u8 = hms.next().map_or(Some(0), |s| s.parse().ok())?;
    if hms.next().is_some() {
        return None;
    }
    let offset = match zone {
        None => UtcOffset::UTC,
        Some(zone) => offset(zone)?,
    };
    let date = Date::from_calendar_date(year, month, day).ok()?;
    // A leap second is read as the second before it.
    let time = Time::from_hms(hour, minute, second.min(59)).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

fn month(word: &str) -> Option<Month> {
    const MONTHS: [(&str, Month); 12] = [
        ("jan", Month::January),
        ("feb", Month::February),
        ("mar", Month::March),
        ("apr", Month::April),
        ("may", Month::May),
        ("jun", Month::June),
        ("jul", Month::July),
        ("aug", Month::August),
        ("sep", Month::September),
        ("oct", Month::October),
        ("nov", Month::November),
        ("dec", Month::December),
    ];
    let prefix = word.get(..3)?;
    MONTHS
        .iter()
        .find(|(name, _)| prefix.eq_ignore_ascii_case(name))
        .map(|&(_, m)| m)
}

/// A zone: `GMT`, `UT`, `UTC`, `Z`, or `+hhmm` / `-hhmm`.
fn offset(zone: &str) -> Option<UtcOffset> {
    if ["gmt", "ut", "utc", "z"]
        .iter()
        .any(|z| zone.eq_ignore_ascii_case(z))
    {
        return Some(UtcOffset::UTC);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = digits[2..].parse().ok()?;
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

/// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT` (`None` for a year of more than four
/// digits or before year 0).
fn format_date(when: OffsetDateTime) -> Option<String> {
    if !(0..=9999).contains(&when.year()) {
        return None;
    }
    let weekday = &when.weekday().to_string()[..3];
    let month = &when.month().to_string()[..3];
    Some(format!(
        "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
        when.day(),
        when.year(),
        when.hour(),
        when.minute(),
        when.second()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_read_in_every_http_form_and_moved() {
        let hour = 3600;
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 09:49:37 +0100",
            "6 Nov 1994 08:49:37",
        ] {
            assert_eq!(
                shifted(form, hour).as_deref(),
                Some("Sun, 06 Nov 1994 09:49:37 GMT"),
                "{form}"
            );
        }
        // Across a year's end.
        assert_eq!(
            shifted("Thu, 31 Dec 2037 23:59:59 GMT", 1).as_deref(),
            Some("Fri, 01 Jan 2038 00:00:00 GMT")
        );
        for bad in [
            "",
            "0",
            "tomorrow",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8h GMT",
        ] {
            assert_eq!(shifted(bad, hour), None, "{bad}");
        }
    }

    #[test]
    fn headers_and_cookie_expiries_move_and_the_rest_stays() {
        let mut h = Headers::new();
        h.append("Date", "Sun, 06 Nov 1994 08:49:37 GMT");
        h.append("Expires", "0");
        h.append(
            "Set-Cookie",
            "a=1; Path=/; Expires=Sun, 06 Nov 1994 08:49:37 GMT; HttpOnly",
        );
        h.append("X-Other", "Sun, 06 Nov 1994 08:49:37 GMT");
        h.append("Set-Cookie", "b=2; Max-Age=60");
        refresh(&mut h, 60);
        let all: Vec<(&str, &[u8])> = h.iter().collect();
        assert_eq!(
            all,
            [
                ("Date", &b"Sun, 06 Nov 1994 08:50:37 GMT"[..]),
                ("Expires", b"0"),
                (
                    "Set-Cookie",
                    b"a=1; Path=/; Expires=Sun, 06 Nov 1994 08:50:37 GMT; HttpOnly"
                ),
                ("X-Other", b"Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Set-Cookie", b"b=2; Max-Age=60"),
            ]
        );
    }
}

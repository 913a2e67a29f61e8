//! `stickycookie`: the cookies origins set, remembered by the proxy and sent back on
//! later requests, whichever client makes them.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lru::LruCache;

use crate::core::Connection;
use crate::filter::{Filter, Live};
use crate::http::message::{HttpFlow, Verdict};
use crate::middleware::HttpHandler;

use super::block_list::body_limit_for;

/// How many domains [`StickyCookie`] keeps cookies for; past that, the least recently
/// used domain's cookies are forgotten.
pub const STICKYCOOKIE_MAX_DOMAINS: usize = 256;

/// How many cookies [`StickyCookie`] keeps per domain (RFC 6265 asks for at least 50);
/// past that, the oldest is forgotten.
pub const STICKYCOOKIE_MAX_PER_DOMAIN: usize = 50;

/// The largest cookie (name and value) [`StickyCookie`] keeps, as RFC 6265 asks user
/// agents to keep at least; larger ones are not kept.
pub const STICKYCOOKIE_MAX_COOKIE: usize = 4096;

/// mitmproxy's `stickycookie`: remembers the cookies of every response's `Set-Cookie`
/// headers and adds them to later requests that match the filter, as a browser would:
/// a client without a cookie jar (curl, a script) then acts in the session another
/// client (a browser) opened, or keeps its own across requests.
///
/// The jar is shared by every connection of the proxy, behind a lock, and bounded
/// ([`STICKYCOOKIE_MAX_DOMAINS`] domains of [`STICKYCOOKIE_MAX_PER_DOMAIN`] cookies).
/// As in mitmproxy, cookies are remembered from every response and the filter chooses
/// only the requests that get them; a `Set-Cookie` that has expired (`Max-Age=0`, an
/// `Expires` in the past) removes the cookie, and one whose `Domain` the request's
/// host is not in is ignored. `CONNECT` requests are left as they are.
///
/// Where mitmproxy departs from RFC 6265, this follows the RFC:
/// - mitmproxy keys cookies by port too (a cookie set by `host:8080` is not sent to
///   `host:443`); RFC 6265 cookies do not depend on the port, and here they do not;
/// - mitmproxy sends a cookie with `Domain=example.com` only to `example.com` (its
///   subdomains only with `Domain=.example.com`); here both reach the subdomains, and
///   a cookie without `Domain` only its own host;
/// - mitmproxy's default path is `/` and its path match a string prefix; here the
///   default path is the request's directory and paths match on `/` boundaries;
/// - mitmproxy keeps a cookie until a `Set-Cookie` deletes it; here it also expires
///   when its `Max-Age` or `Expires` says, and a `Secure` cookie goes only over HTTPS;
/// - mitmproxy replaces the request's `Cookie` header with the jar's cookies, dropping
///   the client's own; here the client's own cookies are kept after the jar's, unless
///   the jar has one of the same name.
///
/// ```
/// use std::sync::Arc;
/// use mitm::addons::StickyCookie;
///
/// let cookies = StickyCookie::new("~d shop\\.example".parse()?);
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(cookies));
/// # Ok::<(), mitm::filter::FilterError>(())
/// ```
#[derive(Debug)]
pub struct StickyCookie {
    filter: Filter,
    body_limit: usize,
    jar: Mutex<LruCache<String, Vec<Stored>>>,
}

/// A cookie in the jar, under its domain.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    name: String,
    value: String,
    path: String,
    /// Sent only to the domain itself (no `Domain` attribute), not its subdomains.
    host_only: bool,
    secure: bool,
    /// When it expires, in seconds since the Unix epoch; `None` for a session cookie.
    expires: Option<i64>,
}

impl StickyCookie {
    /// The handler adding the remembered cookies to requests matching `filter`.
    pub fn new(filter: Filter) -> Self {
        let cap = NonZeroUsize::new(STICKYCOOKIE_MAX_DOMAINS).unwrap_or(NonZeroUsize::MIN);
        StickyCookie {
            body_limit: body_limit_for([&filter]),
            filter,
            jar: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The filter choosing the requests that get the cookies.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    fn jar(&self) -> MutexGuard<'_, LruCache<String, Vec<Stored>>> {
        // A panic while holding the lock leaves a jar that is still whole.
        self.jar.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers (or, expired, forgets) the cookie of one `Set-Cookie` value, set by a
    /// response to `host` for `path`.
    fn set(&self, host: &str, path: &str, header: &[u8], now: i64) {
        let Some(set) = SetCookie::parse(header) else {
            return;
        };
        if set.name.len() + set.value.len() > STICKYCOOKIE_MAX_COOKIE {
            return;
        }
        let (domain, host_only) = match set.domain {
            Some(domain) => {
                // A domain the host is not in, or a bare name above it (a top-level
                // domain): refused, as a user agent refuses it.
                if !domain_matches(host, &domain) || (domain != host && !domain.contains('.')) {
                    return;
                }
                (domain, false)
            }
            None => (host.to_owned(), true),
        };
        let path = match set.path {
            Some(p) if p.starts_with('/') => p,
            _ => default_path(path).to_owned(),
        };
        let expires = match (set.max_age, set.expires) {
            (Some(secs), _) => Some(now.saturating_add(secs)),
            (None, expires) => expires,
        };
        let mut jar = self.jar();
        let same = |a: &Stored, b: &Stored| a.name == b.name && a.path == b.path;
        let cookie = Stored {
            name: set.name,
            value: set.value,
            path,
            host_only,
            secure: set.secure,
            expires,
        };
        if expires.is_some_and(|t| t <= now) {
            if let Some(list) = jar.get_mut(&domain) {
                list.retain(|c| !same(c, &cookie));
                if list.is_empty() {
                    jar.pop(&domain);
                }
            }
            return;
        }
        match jar.get_mut(&domain) {
            Some(list) => match list.iter_mut().find(|c| same(c, &cookie)) {
                // Replaced in place: it keeps its creation order.
                Some(old) => *old = cookie,
                None => {
                    if list.len() >= STICKYCOOKIE_MAX_PER_DOMAIN {
                        list.remove(0);
                    }
                    list.push(cookie);
                }
            },
            None => {
                jar.put(domain, vec![cookie]);
            }
        }
    }

    /// The cookies for a request to `host` (over TLS or not) for `path`, as
    /// `(name, value)` pairs in the order RFC 6265 sends them: longer paths first, then
    /// older first. Expired cookies met on the way are dropped from the jar.
    fn cookies_for(&self, host: &str, tls: bool, path: &str, now: i64) -> Vec<(String, String)> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let mut found: Vec<&Stored> = Vec::new();
        let mut jar = self.jar();
        let mut emptied = Vec::new();
        for domain in domains_of(host) {
            if let Some(list) = jar.get_mut(domain) {
                list.retain(|c| c.expires.is_none_or(|t| t > now));
                if list.is_empty() {
                    emptied.push(domain);
                }
            }
        }
        for domain in emptied {
            jar.pop(domain);
        }
        for domain in domains_of(host) {
            let Some(list) = jar.peek(domain) else {
                continue;
            };
            found.extend(list.iter().filter(|c| {
                (!c.host_only || domain == host)
                    && path_matches(&c.path, path)
                    && (tls || !c.secure)
            }));
        }
        // A stable sort: within one length, the jar's order (older first).
        found.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        found
            .into_iter()
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect()
    }
}

#[async_trait]
impl HttpHandler for StickyCookie {
    /// 0 unless the filter reads bodies
    /// ([`FILTER_BODY_LIMIT`](super::FILTER_BODY_LIMIT)).
    fn body_limit(&self) -> usize {
        self.body_limit
    }

    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.is_connect() || !self.filter.matches(&Live::new(conn, flow)) {
            return Verdict::Continue;
        }
        let request = &flow.request;
        let host = request.target.host.to_ascii_lowercase();
        let jar = self.cookies_for(&host, request.target.tls, &request.path, unix_now());
        if jar.is_empty() {
            return Verdict::Continue;
        }
        let header = cookie_header(&jar, request.headers.get_all("cookie"));
        flow.request.headers.insert("cookie", header);
        Verdict::Continue
    }

    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let Some(response) = &flow.response else {
            return Verdict::Continue;
        };
        let request = &flow.request;
        if request.is_connect() || !response.headers.contains("set-cookie") {
            return Verdict::Continue;
        }
        let host = request.target.host.to_ascii_lowercase();
        let now = unix_now();
        for header in response.headers.get_all("set-cookie") {
            self.set(&host, &request.path, header, now);
        }
        Verdict::Continue
    }
}

/// The request's `Cookie` value: the jar's cookies, then those of the client's own
/// `Cookie` fields (HTTP/2 may split them) whose names the jar does not have.
fn cookie_header<'a>(jar: &[(String, String)], own: impl Iterator<Item = &'a [u8]>) -> String {
    let mut out: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
    for field in own {
        for pair in String::from_utf8_lossy(field).split(';') {
            let pair = pair.trim();
            let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
            if !pair.is_empty() && !jar.iter().any(|(n, _)| n == name) {
                out.push(pair.to_owned());
            }
        }
    }
    out.join("; ")
}

/// One `Set-Cookie` value, parsed as RFC 6265 section 5.2 says.
#[derive(Debug, Default, PartialEq)]
struct SetCookie {
    name: String,
    value: String,
    /// Lower-case, without a leading dot; `None` when absent or empty.
    domain: Option<String>,
    path: Option<String>,
    /// Seconds; a value of 0 or less means expired.
    max_age: Option<i64>,
    /// Seconds since the Unix epoch.
    expires: Option<i64>,
    secure: bool,
}

impl SetCookie {
    /// `None` for a value without a name, or that is not text.
    fn parse(header: &[u8]) -> Option<SetCookie> {
        let header = std::str::from_utf8(header).ok()?;
        let mut parts = header.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let mut cookie = SetCookie {
            name: name.to_owned(),
            value: value.trim().to_owned(),
            ..SetCookie::default()
        };
        for attribute in parts {
            let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "domain" => {
                    let domain = value.trim_start_matches('.').to_ascii_lowercase();
                    cookie.domain = (!domain.is_empty()).then_some(domain);
                }
                "path" => cookie.path = Some(value.to_owned()),
                "max-age" => {
                    // Digits with an optional leading `-`; anything else is ignored.
                    let digits = value.strip_prefix('-').unwrap_or(value);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        // Only too many digits fail to parse: the far past or future.
                        let beyond = if digits.len() < value.len() {
                            i64::MIN
                        } else {
                            i64::MAX
                        };
                        cookie.max_age = Some(value.parse().unwrap_or(beyond));
                    }
                }
                "expires" => {
                    if let Some(t) = parse_cookie_date(value) {
                        cookie.expires = Some(t);
                    }
                }
                "secure" => cookie.secure = true,
                _ => {}
            }
        }
        Some(cookie)
    }
}

/// Whether `host` is `domain` or a name under it (RFC 6265 section 5.1.3: not for an
/// IP address).
fn domain_matches(host: &str, domain: &str) -> bool {
    if host == domain {
        return true;
    }
    host.len() > domain.len()
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        && host.parse::<std::net::IpAddr>().is_err()
}

/// `host` and each domain it is under: `a.b.c`, `b.c`, `c` (an IP address: itself).
fn domains_of(host: &str) -> impl Iterator<Item = &str> {
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let parents = host
        .match_indices('.')
        .map(move |(i, _)| &host[i + 1..])
        .filter(move |_| !ip);
    std::iter::once(host).chain(parents)
}

/// The path a cookie without a `Path` gets: the request path's directory (RFC 6265
/// section 5.1.4).
fn default_path(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return "/";
    }
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Whether a cookie for `cookie_path` goes with a request for `path` (RFC 6265 section
/// 5.1.4).
fn path_matches(cookie_path: &str, path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path.as_bytes()[cookie_path.len()] == b'/'))
}

/// Now, in seconds since the Unix epoch.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A cookie's `Expires` date in seconds since the Unix epoch, read as RFC 6265 section
/// 5.1.1 says (lenient: `Wed, 21 Oct 2015 07:28:00 GMT`, `Wednesday, 21-Oct-15 …`, and
/// other orders all read); `None` when a part is missing or out of range.
fn parse_cookie_date(text: &str) -> Option<i64> {
    let delimiter = |c: char| matches!(c, '\t' | ' '..='/' | ';'..='@' | '['..='`' | '{'..='~');
    let (mut time, mut day, mut month, mut year) = (None, None, None, None);
    for token in text.split(delimiter).filter(|t| !t.is_empty()) {
        if time.is_none() {
            if let Some(t) = hms(token) {
                time = Some(t);
                continue;
            }
        }
        if day.is_none() {
            if let Some(d) = leading_digits(token, 1, 2) {
                day = Some(d);
                continue;
            }
        }
        if month.is_none() {
            if let Some(m) = month_of(token) {
                month = Some(m);
                continue;
            }
        }
        if year.is_none() {
            if let Some(y) = leading_digits(token, 2, 4) {
                year = Some(y);
            }
        }
    }
    let (h, m, s) = time?;
    let (day, month, mut year) = (day?, month?, year?);
    if (70..=99).contains(&year) {
        year += 1900;
    } else if year <= 69 {
        year += 2000;
    }
    if !(1..=31).contains(&day) || year < 1601 || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, i64::from(day));
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}

/// A token that starts with `min..=max` digits followed by no digit (what follows is
/// ignored, as RFC 6265 says).
fn leading_digits(token: &str, min: usize, max: usize) -> Option<u32> {
    let n = token.bytes().take_while(u8::is_ascii_digit).count();
    if n < min || n > max {
        return None;
    }
    token[..n].parse().ok()
}

/// `h:m:s`, each one or two digits (what follows the seconds' digits is ignored).
fn hms(token: &str) -> Option<(u32, u32, u32)> {
    let mut parts = token.splitn(3, ':');
    let h = parts.next()?;
    let m = parts.next()?;
    let s = parts.next()?;
    let exact = |p: &str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if !exact(h) || !exact(m) {
        return None;
    }
    Some((h.parse().ok()?, m.parse().ok()?, leading_digits(s, 1, 2)?))
}

/// The month (1–12) a token starting with its English name's first three letters names.
fn month_of(token: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let prefix = token.get(..3)?.to_ascii_lowercase();
    let i = MONTHS.iter().position(|m| *m == prefix)?;
    u32::try_from(i + 1).ok()
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar() -> StickyCookie {
        StickyCookie::new("~q".parse().unwrap())
    }

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn dates_read_as_browsers_read_them() {
        let t = 1_445_412_480; // 2015-10-21 07:28:00 UTC
        for text in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
            "21 oct 2015 7:28:00",
        ] {
            assert_eq!(parse_cookie_date(text), Some(t), "{text}");
        }
        assert_eq!(parse_cookie_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_cookie_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        for bad in [
            "",
            "tomorrow",
            "Wed, 21 Oct 2015",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_cookie_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn set_cookie_values_parse_with_their_attributes() {
        let c = SetCookie::parse(
            b"sid=a b=c; Domain=.Example.COM; Path=/app; Max-Age=60; Secure; HttpOnly",
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.value.as_str()), ("sid", "a b=c"));
        assert_eq!(c.domain.as_deref(), Some("example.com"));
        assert_eq!(c.path.as_deref(), Some("/app"));
        assert_eq!(c.max_age, Some(60));
        assert!(c.secure);
        assert_eq!(SetCookie::parse(b"=x"), None);
        assert_eq!(SetCookie::parse(b"novalue"), None);
        assert_eq!(
            SetCookie::parse(b"a=1; max-age=soon").unwrap().max_age,
            None
        );
        assert_eq!(
            SetCookie::parse(b"a=1; max-age=-5").unwrap().max_age,
            Some(-5)
        );
    }

    #[test]
    fn cookies_go_back_by_domain_and_path_whatever_the_port() {
        let j = jar();
        j.set("a.example.com", "/login/form", b"host=1", NOW);
        j.set("a.example.com", "/", b"wide=2; Domain=example.com", NOW);
        j.set("a.example.com", "/", b"deep=3; Path=/app/x", NOW);
        j.set("a.example.com", "/", b"evil=4; Domain=other.com", NOW);
        j.set("a.example.com", "/", b"tld=5; Domain=com", NOW);
        let names = |host: &str, path: &str| -> Vec<String> {
            j.cookies_for(host, false, path, NOW)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        // Default path: the directory of the request that set it.
        assert_eq!(names("a.example.com", "/login/x"), ["host", "wide"]);
        assert_eq!(names("a.example.com", "/"), ["wide"]);
        // Longer paths first.
        assert_eq!(names("a.example.com", "/app/x/y?q"), ["deep", "wide"]);
        assert_eq!(names("a.example.com", "/app/xy"), ["wide"]);
        // Host-only cookies stay on their host; Domain ones reach the subdomains.
        assert_eq!(names("b.example.com", "/login/x"), ["wide"]);
        assert_eq!(names("example.com", "/"), ["wide"]);
        assert!(names("other.com", "/").is_empty());
        assert!(names("com", "/").is_empty());
    }

    #[test]
    fn expired_and_deleted_cookies_are_not_sent() {
        let j = jar();
        j.set("h", "/", b"a=1; Max-Age=10", NOW);
        j.set("h", "/", b"b=2; Expires=Wed, 21 Oct 2099 07:28:00 GMT", NOW);
        j.set("h", "/", b"c=3", NOW);
        j.set("h", "/", b"d=4; Expires=Wed, 21 Oct 2015 07:28:00 GMT", NOW);
        assert_eq!(j.cookies_for("h", false, "/", NOW).len(), 3);
        assert_eq!(j.cookies_for("h", false, "/", NOW + 10).len(), 2);
        j.set("h", "/", b"c=; Max-Age=0", NOW);
        j.set("h", "/", b"b=2; Expires=Thu, 01 Jan 1970 00:00:00 GMT", NOW);
        assert!(j.cookies_for("h", false, "/", NOW).is_empty());
        assert!(j.jar().is_empty(), "emptied domains are dropped");
    }

    #[test]
    fn secure_cookies_go_only_over_tls_and_values_are_replaced() {
        let j = jar();
        j.set("h", "/", b"s=1; Secure", NOW);
        j.set("h", "/", b"p=1", NOW);
        j.set("h", "/", b"p=2", NOW);
        assert_eq!(
            j.cookies_for("h", false, "/", NOW),
            [("p".into(), "2".into())]
        );
        assert_eq!(j.cookies_for("h", true, "/", NOW).len(), 2);
    }

    #[test]
    fn the_jar_is_bounded() {
        let j = jar();
        for i in 0..STICKYCOOKIE_MAX_PER_DOMAIN + 5 {
            j.set("h", "/", format!("c{i}=1").as_bytes(), NOW);
        }
        let got = j.cookies_for("h", false, "/", NOW);
        assert_eq!(got.len(), STICKYCOOKIE_MAX_PER_DOMAIN);
        assert_eq!(got[0].0, "c5", "the oldest went first");
        for i in 0..STICKYCOOKIE_MAX_DOMAINS + 5 {
            j.set(&format!("h{i}"), "/", b"c=1", NOW);
        }
        assert_eq!(j.jar().len(), STICKYCOOKIE_MAX_DOMAINS);
        let big = format!("big={}", "x".repeat(STICKYCOOKIE_MAX_COOKIE));
        j.set("z", "/", big.as_bytes(), NOW);
        assert!(j.cookies_for("z", false, "/", NOW).is_empty());
    }

    #[test]
    fn the_clients_own_cookies_follow_the_jars() {
        let jar = [("a".to_owned(), "jar".to_owned())];
        let own: [&[u8]; 2] = [b"a=client; b=2", b"c=3"];
        assert_eq!(cookie_header(&jar, own.into_iter()), "a=jar; b=2; c=3");
    }
}

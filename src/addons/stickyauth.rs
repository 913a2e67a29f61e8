//! `stickyauth`: the last `Authorization` a client sent to an origin, added to later
//! requests to it that have none.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use lru::LruCache;

use crate::core::Connection;
use crate::filter::{Filter, Live};
use crate::http::message::{HttpFlow, Verdict};
use crate::middleware::HttpHandler;

use super::block_list::body_limit_for;

/// How many origins [`StickyAuth`] remembers an `Authorization` for; past that, the
/// least recently used is forgotten.
pub const STICKYAUTH_MAX_ORIGINS: usize = 1024;

/// The largest `Authorization` value [`StickyAuth`] remembers (longer ones pass on but
/// are not kept).
pub const STICKYAUTH_MAX_VALUE: usize = 16 * 1024;

/// mitmproxy's `stickyauth`: remembers the `Authorization` header of every request, by
/// origin, and adds it to later requests to that origin which match the filter and
/// carry none: a client that authenticated once (a browser after a login prompt) stays
/// authenticated for clients that did not (curl, an app).
///
/// The state is shared by every connection of the proxy, behind a lock, and bounded
/// ([`STICKYAUTH_MAX_ORIGINS`]).
///
/// mitmproxy keys the header by host alone, so a password given to `host:8080` is also
/// sent to `host:443`. Here it is keyed by host and port, the origin that RFC 7235 makes
/// its protection space. As in mitmproxy, the header is remembered from every request,
/// and the filter chooses only which requests get it; `CONNECT` requests are left as
/// they are.
///
/// ```
/// use std::sync::Arc;
/// use mitm::addons::StickyAuth;
///
/// let auth = StickyAuth::new("~d api\\.example".parse()?);
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(auth));
/// # Ok::<(), mitm::filter::FilterError>(())
/// ```
#[derive(Debug)]
pub struct StickyAuth {
    filter: Filter,
    body_limit: usize,
    origins: Mutex<LruCache<(String, u16), Bytes>>,
}

impl StickyAuth {
    /// The handler adding the remembered header to requests matching `filter`.
    pub fn new(filter: Filter) -> Self {
        let cap = NonZeroUsize::new(STICKYAUTH_MAX_ORIGINS).unwrap_or(NonZeroUsize::MIN);
        StickyAuth {
            body_limit: body_limit_for([&filter]),
            filter,
            origins: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The filter choosing the requests that get the header.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    fn origins(&self) -> std::sync::MutexGuard<'_, LruCache<(String, u16), Bytes>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.origins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl HttpHandler for StickyAuth {
    /// 0 unless the filter reads bodies
    /// ([`FILTER_BODY_LIMIT`](super::FILTER_BODY_LIMIT)).
    fn body_limit(&self) -> usize {
        self.body_limit
    }

    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let request = &flow.request;
        if request.is_connect() {
            return Verdict::Continue;
        }
        let origin = (
            request.target.host.to_ascii_lowercase(),
            request.target.port,
        );
        if let Some(value) = request.headers.get_bytes("authorization") {
            if value.len() <= STICKYAUTH_MAX_VALUE {
                let value = Bytes::copy_from_slice(value);
                self.origins().put(origin, value);
            }
        } else if self.filter.matches(&Live::new(conn, flow)) {
            let value = self.origins().get(&origin).cloned();
            if let Some(value) = value {
                flow.request.headers.insert("authorization", value);
            }
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Host;
    use crate::http::message::Request;

    /// Sends a request for `url` (with `auth`, if any) through `sticky`: the
    /// `Authorization` it leaves.
    async fn send(sticky: &StickyAuth, url: &str, auth: Option<&str>) -> Option<String> {
        let conn = Connection::new(1, Host::default());
        let mut flow = HttpFlow::new(1, Request::new("GET", url).unwrap());
        if let Some(auth) = auth {
            flow.request
                .headers
                .insert("Authorization", auth.to_owned());
        }
        sticky.request(&conn, &mut flow).await;
        flow.request.headers.get("authorization").map(str::to_owned)
    }

    #[tokio::test]
    async fn credentials_stick_to_their_host_and_port() {
        let sticky = StickyAuth::new("~u /api".parse().unwrap());
        assert_eq!(send(&sticky, "http://h/api", None).await, None);
        send(&sticky, "http://h/login", Some("Basic a")).await;
        let got = send(&sticky, "http://H/api/1", None).await;
        assert_eq!(got.as_deref(), Some("Basic a"), "host names ignore case");
        assert_eq!(send(&sticky, "http://h:8080/api", None).await, None);
        assert_eq!(send(&sticky, "https://h/api", None).await, None);
        assert_eq!(send(&sticky, "http://h/other", None).await, None);
        // The last one sent wins; a request's own is left alone.
        send(&sticky, "http://h/login", Some("Basic b")).await;
        let own = send(&sticky, "http://h/api", Some("Basic c")).await;
        assert_eq!(own.as_deref(), Some("Basic c"));
        let got = send(&sticky, "http://h/api", None).await;
        assert_eq!(got.as_deref(), Some("Basic c"));
    }

    #[tokio::test]
    async fn the_origins_remembered_are_bounded() {
        let sticky = StickyAuth::new("~q".parse().unwrap());
        for i in 0..STICKYAUTH_MAX_ORIGINS + 10 {
            send(&sticky, &format!("http://h{i}/"), Some("Basic a")).await;
        }
        assert_eq!(sticky.origins().len(), STICKYAUTH_MAX_ORIGINS);
        assert_eq!(
            send(&sticky, "http://h0/", None).await,
            None,
            "the oldest went"
        );
        let big = "x".repeat(STICKYAUTH_MAX_VALUE + 1);
        send(&sticky, "http://big/", Some(&big)).await;
        assert_eq!(send(&sticky, "http://big/", None).await, None);
    }
}

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

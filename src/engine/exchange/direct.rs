//! An exchange with no client connection: a request the proxy sends itself (client
//! replay), through the same hooks, routes and upstream pool as a client's.

use bytes::{Bytes, BytesMut};

use super::client::{BodyOut, Client, Head};
use crate::core::{Connection, Target};
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::http::message::{Body, Headers, HttpFlow, Request, Response};
use crate::http::settings::Settings;
use crate::upstream::route::Route;
use crate::upstream::{Link, Want};

/// The most response body bytes kept; the rest is counted, not kept.
const KEEP: usize = 64 * 1024 * 1024;

/// Sends `request` (its body held whole, or empty) to its origin through the hooks, as
/// connection `conn`, and returns the response the client would have got, its body
/// (up to 64 MiB) and its full length. The flow is marked `replay`, if given.
pub(crate) async fn send(
    cx: &Context,
    settings: &Settings,
    conn: Connection,
    mut request: Request,
    id: u64,
    replay: Option<crate::http::message::Replay>,
) -> Result<(Response, Bytes, u64)> {
    if matches!(request.body, Body::Streaming) {
        request.body = Body::Empty;
    }
    let mut client = Direct {
        conn,
        connect_timeout: settings.connect_timeout,
        response: None,
        body: BytesMut::new(),
        length: 0,
        killed: false,
        local_error: false,
        error: None,
    };
    let mut flow = HttpFlow::new(id, request);
    flow.is_replay = replay;
    super::run(cx, settings, &mut client, flow).await?;
    if client.killed {
        return Err(Error::Killed);
    }
    if client.local_error {
        // The proxy's own error page: the origin was not reached, or did not answer.
        if let Some(error) = client.error.take() {
            return Err(Error::unshare(error));
        }
        let page = String::from_utf8_lossy(&client.body);
        let why = page.lines().next().unwrap_or("no response").to_string();
        return Err(Error::protocol("replay", why, None));
    }
    let response = client.response.ok_or_else(|| Error::Io {
        side: crate::error::Side::Internal,
        source: std::io::Error::other("the exchange ended without a response"),
    })?;
    Ok((response, client.body.freeze(), client.length))
}

/// The client end of a request the proxy sends itself.
struct Direct {
    conn: Connection,
    connect_timeout: std::time::Duration,
    response: Option<Response>,
    body: BytesMut,
    length: u64,
    killed: bool,
    /// The response is an error page the proxy made (status 5xx).
    local_error: bool,
    /// Why the proxy answered itself, when it did.
    error: Option<std::sync::Arc<Error>>,
}

impl Client for Direct {
    fn conn(&self) -> &Connection {
        &self.conn
    }

    fn data_hooks(&self) -> bool {
        false
    }

    async fn body(&mut self) -> Result<Option<Bytes>> {
        // The body is held on the request: nothing streams.
        Ok(None)
    }

    fn body_done(&self) -> bool {
        true
    }

    fn trailers(&mut self) -> Option<Headers> {
        None
    }

    async fn interim(&mut self, _response: &Response) -> Result<()> {
        Ok(())
    }

    async fn start(&mut self, head: Head<'_>) -> Result<()> {
        self.local_error = head.local && head.response.status >= 500;
        self.error = head.error.cloned();
        let mut response = head.response.clone();
        response.body = match head.body {
            BodyOut::None => Body::Empty,
            _ => Body::Streaming,
        };
        self.response = Some(response);
        Ok(())
    }

    async fn send(&mut self, data: Bytes) -> Result<()> {
        self.length += data.len() as u64;
        let room = KEEP.saturating_sub(self.body.len());
        self.body.extend_from_slice(&data[..data.len().min(room)]);
        Ok(())
    }

    async fn finish(&mut self, _trailers: Option<&Headers>) -> Result<()> {
        Ok(())
    }

    async fn origin(
        &mut self,
        cx: &Context,
        route: &Route,
        target: &Target,
        want: Want,
    ) -> Result<Link> {
        // HTTP/1.1 only: a request at a time needs no multiplexing.
        let want = Want { h2: false, ..want };
        cx.upstreams
            .link(route, target, want, self.connect_timeout)
            .await
    }

    fn release(&mut self, cx: &Context, link: Link, reusable: bool) {
        if reusable {
            super::give_back(cx, link);
        }
    }

    fn kill(&mut self) {
        self.killed = true;
    }
}

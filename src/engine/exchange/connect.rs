//! The `CONNECT` exchange: the request hooks, then the router's say, then a
//! connection to the target made before the tunnel is granted (unless the pool proves
//! it up), answered `200 Connection established` or with the error page. A request
//! hook that answers the `CONNECT` has its answer given inside the tunnel instead
//! ([`TunnelAnswer`]). The tunnel itself is `crate::engine::tunnel`'s.

use std::time::Instant;

use super::{give_back, Client, Exchange, Outcome};
use crate::core::{Connection, Target};
use crate::engine::context::Context;
use crate::error::{Error, Report, Result};
use crate::http::message::{HttpFlow, Response, Verdict};
use crate::http::page;
use crate::http::settings::Settings;
use crate::middleware::TunnelVerdict;
use crate::upstream::{Link, Route, Tcp};

/// What a `CONNECT` came to.
pub(crate) enum Connect {
    /// Answered `200`: the tunnel may start, with what was reached of the target and
    /// the route to it.
    Open(Ahead, Route),
    /// Answered otherwise (refused, or the target unreachable); the client is done.
    Refused,
}

/// What a `CONNECT` reached of its target before it was answered.
#[derive(Debug)]
pub(crate) enum Ahead {
    /// Nothing: the magic host, which the proxy answers itself.
    Nothing,
    /// Nothing, and nothing will be: a request hook answered the `CONNECT`, and the
    /// requests inside the tunnel get its answer ([`TunnelAnswer`]).
    Answered,
    /// A new TCP connection.
    Tcp(Tcp),
    /// A live pooled connection to the target (proof enough that it is up), taken for
    /// this tunnel.
    Pooled(Link),
}

/// Runs a `CONNECT` to `target`: the request hooks, then a connection to the target
/// (unless the pool proves it up), answered `200 Connection established`, or the error
/// page (`502` and the cause) when it cannot be reached.
pub(crate) async fn connect<C: Client>(
    cx: &Context,
    settings: &Settings,
    client: &mut C,
    flow: HttpFlow,
) -> Result<Connect> {
    let target = flow.request.target.clone();
    let mut x = Exchange::new(cx, settings, client, flow);
    let mut opened = None;
    let result = x.connect(&target, &mut opened).await;
    let outcome = x.finished(result).await;
    match (outcome, opened) {
        (Ok(Outcome::Done), Some((ahead, route))) => Ok(Connect::Open(ahead, route)),
        (outcome, opened) => {
            if let Some((Ahead::Pooled(link), _)) = opened {
                give_back(cx, link);
            }
            outcome.map(|_| Connect::Refused)
        }
    }
}

/// The response a request hook answered a `CONNECT` with, kept in the connection's
/// state: the requests the client sends through that tunnel are answered with it.
#[derive(Debug)]
pub(crate) struct TunnelAnswer(pub Response);

/// The answer for every request of `conn`'s tunnel, when a hook gave one.
pub(super) fn tunnel_answer(conn: &Connection) -> Option<Response> {
    if !conn.tunnel_answered {
        return None;
    }
    conn.state().get::<TunnelAnswer>().map(|a| a.0.clone())
}

impl<C: Client> Exchange<'_, C> {
    /// The `CONNECT` exchange.
    pub(super) async fn connect(
        &mut self,
        target: &Target,
        opened: &mut Option<(Ahead, Route)>,
    ) -> Result<Outcome> {
        let conn = self.client.conn();
        let answered = match self.cx.chain.request(conn, &mut self.flow).await {
            Verdict::Continue => false,
            Verdict::Respond(r) => {
                // Answered inside the tunnel, where the client reads it: nothing is
                // connected, and every request the client sends through it gets `r`.
                conn.state().insert(TunnelAnswer(r));
                true
            }
            Verdict::Kill => return Err(self.kill()),
        };
        if !answered {
            if let TunnelVerdict::Refuse(reason) = self.cx.chain.tunnel(conn, target).await {
                let e = Error::TunnelRefused {
                    target: target.to_string(),
                    reason,
                };
                tracing::info!(error = %Report(&e), "CONNECT refused");
                let page = page::error(&e);
                return self.answer(page, Some(e), true).await;
            }
        }
        let route = self.cx.route_for(self.client.conn(), target).await;
        let ahead = if answered {
            Ahead::Answered
        } else if self.settings.is_magic(&target.host) {
            Ahead::Nothing
        } else if let Some(link) = self.cx.upstreams.pooled(&route, target) {
            Ahead::Pooled(link)
        } else {
            let tcp = self
                .cx
                .upstreams
                .tcp(&route, target, self.settings.connect_timeout)
                .await;
            match tcp {
                Ok(tcp) => Ahead::Tcp(tcp),
                Err(e) => {
                    tracing::warn!(error = %Report(&e), %target, "CONNECT failed");
                    let page = page::error(&e);
                    self.flow.undelivered = true;
                    return self.answer(page, Some(e), true).await;
                }
            }
        };
        // Held from here, so that a refusal below gives a pooled connection back.
        *opened = Some((ahead, route));
        self.flow.timings.request_end = Some(Instant::now());
        self.flow.timings.response_first_byte = self.flow.timings.request_end;
        let mut established = Response::new(200);
        established.reason = "Connection established".into();
        self.flow.response = Some(established);
        let response = self.response_hooks().await?;
        if !(200..300).contains(&response.status) {
            // A hook turned the tunnel down after all: its answer goes as it is (the
            // hooks have seen it).
            return self.write_local(response, true).await;
        }
        self.write_head_only(&response, true).await?;
        self.flow.response = Some(response);
        Ok(Outcome::Done)
    }
}

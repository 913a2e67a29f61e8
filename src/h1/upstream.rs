//! The upstream connection of a session: taken from the pool or connected, announced
//! to the middlewares, and released (back to the pool when clean) when the origin
//! changes or the session ends.

use super::*;

impl Session<'_> {
    /// Connects (or reuses) the upstream for `target`, firing the server hooks when
    /// the upstream changes.
    pub(super) async fn ensure_upstream(&mut self, target: &Target) -> Result<()> {
        if let Some(current) = self.upstream.as_mut() {
            if &current.target == target {
                // An origin that closed it meanwhile is caught when the response does
                // not come (`is_stale`), and the request goes again.
                if current.peer.buf.is_empty() {
                    return Ok(());
                }
                self.drop_upstream().await;
            }
        }
        self.release(true).await;
        let (up, reused) = match self.cx.pool.take(target) {
            Some(up) => (up, true),
            None => (self.connect_upstream(target).await?, false),
        };
        self.install(up, reused).await;
        Ok(())
    }

    /// Makes `up` the current upstream and announces it.
    pub(super) async fn install(&mut self, up: Upstream, reused: bool) {
        self.conn.server = Host::new(up.addr);
        self.upstream = Some(Current {
            peer: Peer::new(up.io, Flow::ServerToClient, Bytes::new()),
            addr: up.addr,
            target: up.target,
            reused,
        });
        self.cx.announce_server(self.conn).await;
    }

    pub(super) async fn connect_upstream(&mut self, target: &Target) -> Result<Upstream> {
        let timeout = self.settings.connect_timeout;
        let io: BoxIo = if target.tls {
            let alpn = [b"http/1.1".to_vec()];
            Box::new(
                self.cx
                    .connect_tls(self.conn, target, &target.host, &alpn, timeout)
                    .await?,
            )
        } else {
            Box::new(self.cx.connect(self.conn, target, timeout).await?)
        };
        let addr = self.conn.server.addr.ok_or_else(|| Error::Connect {
            target: target.to_string(),
            source: std::io::Error::other("no peer address"),
        })?;
        Ok(Upstream {
            io,
            addr,
            target: target.clone(),
        })
    }

    /// Gives the current upstream back to the pool (when `reusable` and it is clean),
    /// or closes it, firing `server_disconnected` for the connection's view.
    pub(super) async fn release(&mut self, reusable: bool) {
        let Some(current) = self.upstream.take() else {
            return;
        };
        if reusable && current.peer.buf.is_empty() {
            self.cx.pool.put(Upstream {
                io: current.peer.io,
                addr: current.addr,
                target: current.target,
            });
        }
        self.cx.retire_server(self.conn).await;
    }

    /// At the end of the session: pools the upstream if it is clean, without hooks.
    pub(super) fn park_upstream(&mut self) {
        let Some(current) = self.upstream.take() else {
            return;
        };
        if current.peer.buf.is_empty() && self.reusable_at_end {
            self.cx.pool.put(Upstream {
                io: current.peer.io,
                addr: current.addr,
                target: current.target,
            });
        }
    }

    /// Closes the current upstream: it cannot be reused.
    pub(super) async fn drop_upstream(&mut self) {
        self.release(false).await;
    }
}

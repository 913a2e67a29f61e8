//! The first bytes of a body streaming past, kept for `flow_finished`.

use bytes::{Bytes, BytesMut};

/// The first bytes of a body streaming past, kept for `flow_finished` up to the
/// middlewares' `streamed_body_prefix` (a clone of the first piece when it is enough,
/// else a copy).
pub(super) struct Prefix {
    limit: usize,
    kept: Kept,
    len: usize,
}

enum Kept {
    Nothing,
    One(Bytes),
    Joined(BytesMut),
}

impl Prefix {
    pub(super) fn new(limit: usize) -> Self {
        Prefix {
            limit,
            kept: Kept::Nothing,
            len: 0,
        }
    }

    /// Whether a middleware wants more bytes than are kept.
    pub(super) fn wants_more(&self) -> bool {
        self.len < self.limit
    }

    /// Keeps what fits of the next `piece`.
    pub(super) fn keep(&mut self, piece: &Bytes) {
        let room = self.limit - self.len;
        if room == 0 || piece.is_empty() {
            return;
        }
        let piece = piece.slice(..room.min(piece.len()));
        self.len += piece.len();
        self.kept = match std::mem::replace(&mut self.kept, Kept::Nothing) {
            Kept::Nothing => Kept::One(piece),
            Kept::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + piece.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&piece);
                Kept::Joined(joined)
            }
            Kept::Joined(mut joined) => {
                joined.extend_from_slice(&piece);
                Kept::Joined(joined)
            }
        };
    }

    /// Forgets what was kept (the body is sent again from its start).
    pub(super) fn clear(&mut self) {
        self.kept = Kept::Nothing;
        self.len = 0;
    }

    /// What was kept.
    pub(super) fn take(&mut self) -> Bytes {
        self.len = 0;
        match std::mem::replace(&mut self.kept, Kept::Nothing) {
            Kept::Nothing => Bytes::new(),
            Kept::One(b) => b,
            Kept::Joined(b) => b.freeze(),
        }
    }
}

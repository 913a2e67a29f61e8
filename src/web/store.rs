//! The flows the web UI serves: [`FlowSource`] (what the server asks of any store of
//! flows), [`MemoryStore`] (flows held in memory, packed or as records, bounded,
//! oldest dropped) and [`SqliteSource`] (a saved SQLite capture, read page by page).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::changes::{ChangeHub, Changes};
use super::json::{
    duration_ms, media_type, millis_since_epoch, FlowPage, FlowState, FlowSummary, RowValues,
};
use super::packed::Packed;
#[cfg(feature = "sqlite")]
use crate::capture::sqlite::SqliteReader;
use crate::capture::{Filter, Record};

/// The default of [`MemoryStore::new`]'s `max_flows`, as the CLI uses it: 50 000 flows.
pub const DEFAULT_MAX_FLOWS: usize = 50_000;
/// The default of [`MemoryStore::new`]'s `max_bytes`: 512 MiB of kept bodies.
pub const DEFAULT_MAX_BYTES: usize = 512 * 1024 * 1024;

/// The `Content-Type` of `record`'s response without parameters, in lower case, or
/// empty.
fn content_type(record: &Record) -> Cow<'_, str> {
    media_type(
        record
            .response
            .as_ref()
            .and_then(|r| r.headers.get("content-type")),
    )
}

/// A stored flow as a live socket sends it ([`SummaryRow`]): its [`FlowSummary`],
/// written from its record without the copies a `FlowSummary` makes, and whether it
/// matches the socket's filter.
pub(crate) struct SummaryOf<'a> {
    pub id: u64,
    pub record: &'a Record,
    pub state: FlowState,
    pub matches: bool,
}

/// A [`SummaryOf`] as a JSON array of the values named by [`LIVE_COLUMNS`]: how a
/// live socket sends its rows (the names once per batch, not once per row: half the
/// bytes, and less to escape).
pub(crate) struct SummaryRow<'a>(pub SummaryOf<'a>);

impl Serialize for SummaryRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let SummaryOf {
            id,
            record,
            state,
            matches,
        } = self.0;
        let request = &record.request;
        let response = record.response.as_ref();
        RowValues {
            id,
            time: millis_since_epoch(record.started_at),
            method: Cow::Borrowed(&request.method),
            scheme: &request.scheme,
            host: Cow::Borrowed(&request.host),
            port: request.port,
            path: Cow::Borrowed(&request.path),
            status: response.map(|r| r.status),
            content_type: content_type(record),
            size: response.map_or(0, |r| r.body.size),
            duration: duration_ms(&record.timings),
            state,
            error: record.error.is_some(),
            websocket: record.websocket.is_some(),
            marked: &record.annotations.marked,
            comment: &record.annotations.comment,
            matches,
        }
        .serialize(s)
    }
}

// `FlowSummary` is defined with the other JSON types of the API (json.rs); here is how
// a stored flow becomes one.
impl FlowSummary {
    /// The row of `record`, stored as `id`, in `state`.
    pub fn of(id: u64, record: &Record, state: FlowState) -> Self {
        let response = record.response.as_ref();
        FlowSummary {
            id,
            time: millis_since_epoch(record.started_at),
            method: record.request.method.clone(),
            scheme: record.request.scheme.clone(),
            host: record.request.host.clone(),
            port: record.request.port,
            path: record.request.path.clone(),
            status: response.map(|r| r.status),
            content_type: content_type(record).into_owned(),
            size: response.map_or(0, |r| r.body.size),
            duration: duration_ms(&record.timings),
            pending: state.pending,
            intercepted: state.intercepted,
            error: record.error.is_some(),
            websocket: record.websocket.is_some(),
            marked: record.annotations.marked.clone(),
            comment: record.annotations.comment.clone(),
        }
    }
}

/// Which flows a list asks for: those matching `filter`, with ids after `after` and
/// before `before`, at most `limit` of them: the oldest ones when only `after` is
/// given (paging forwards), else the newest (paging backwards).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only flows that match.
    pub filter: Option<Filter>,
    /// Only flows with a larger id.
    pub after: Option<u64>,
    /// Only flows with a smaller id.
    pub before: Option<u64>,
    /// At most this many (0: the source's own cap).
    pub limit: usize,
}

/// A store of flows the UI can show: [`MemoryStore`] (the proxy's flows, held in
/// memory) and `SqliteSource` (a saved capture, with the `sqlite` feature) are this
/// crate's; an embedder can
/// give [`WebUi::source`](super::WebUi::source) one of its own.
///
/// The UI lists and shows flows from its source, and adds to it the flows it makes
/// itself (a replay's, [`add`](Self::add)); a live socket is told of what changed
/// through [`changes`](Self::changes). Only `add` and the ones with a body here are
/// optional: a source without `add` shows its flows, and a replay from its UI answers
/// with an error (the request is sent, its flow not kept).
///
/// ```
/// use std::sync::Arc;
/// use mitm::capture::{Filter, Record};
/// use mitm::web::{Changes, FlowPage, FlowSource, FlowState, ListQuery, MemoryStore};
///
/// /// The flows of a store, shown as they are: nothing is added or cleared.
/// struct Frozen(MemoryStore);
///
/// impl FlowSource for Frozen {
///     fn list(&self, query: &ListQuery) -> FlowPage {
///         self.0.list(query)
///     }
///     fn get(&self, id: u64) -> Option<(Arc<Record>, FlowState)> {
///         self.0.get(id)
///     }
///     fn records(&self, filter: Option<&Filter>) -> Vec<Arc<Record>> {
///         self.0.records(filter)
///     }
///     fn len(&self) -> usize {
///         self.0.len()
///     }
///     fn clear(&self) {}
///     fn changes(&self) -> Changes {
///         Changes::never()
///     }
///     // No `add`: the default keeps nothing.
/// }
///
/// let source: Arc<dyn FlowSource> = Arc::new(Frozen(MemoryStore::default()));
/// assert!(source.is_empty());
/// ```
pub trait FlowSource: Send + Sync + 'static {
    /// The flows `query` asks for.
    fn list(&self, query: &ListQuery) -> FlowPage;

    /// The flow stored as `id`, and where it is in its life.
    fn get(&self, id: u64) -> Option<(Arc<Record>, FlowState)>;

    /// Every flow that matches `filter` (all without one), oldest first: for exports.
    fn records(&self, filter: Option<&Filter>) -> Vec<Arc<Record>>;

    /// The summary of the flow stored as `id`.
    fn summary(&self, id: u64) -> Option<FlowSummary> {
        self.get(id)
            .map(|(r, state)| FlowSummary::of(id, &r, state))
    }

    /// How many flows there are.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every flow.
    fn clear(&self);

    /// Changes from now on, for a live socket (a [`ChangeHub`] makes them). A source
    /// that never changes returns [`Changes::never`].
    fn changes(&self) -> Changes;

    /// Writes the live row of the flow stored as `id` to `out`, as a live socket sends
    /// it: a JSON array of the values [`LIVE_COLUMNS`](super::json::LIVE_COLUMNS) names,
    /// the last whether the flow matches `filter` (every flow does without one).
    /// `false`, and nothing written, when there is no such flow.
    ///
    /// By default written from [`get`](Self::get)'s record; a source that keeps its
    /// flows in another form may write the row from that form, with no record made.
    fn write_row(&self, id: u64, filter: Option<&Filter>, out: &mut Vec<u8>) -> bool {
        let Some((record, state)) = self.get(id) else {
            return false;
        };
        write_record_row(id, &record, state, filter, out)
    }

    /// Adds `record`, a flow the UI made (a replay's), finished; returns its id, for
    /// [`get`](Self::get), and tells the live sockets ([`ChangeHub::flow`]). `None`
    /// when the source keeps no new flows (the default) or could not keep this one
    /// (logged): the UI then answers the replay with an error.
    ///
    /// Called off the async workers (it may write to a disk).
    fn add(&self, record: Record) -> Option<u64> {
        let _ = record;
        None
    }
}

/// [`FlowSource::write_row`] of `record`, stored as `id`, in `state`.
fn write_record_row(
    id: u64,
    record: &Record,
    state: FlowState,
    filter: Option<&Filter>,
    out: &mut Vec<u8>,
) -> bool {
    let matches = filter.is_none_or(|f| f.matches(record));
    let row = SummaryRow(SummaryOf {
        id,
        record,
        state,
        matches,
    });
    serde_json::to_writer(out, &row).is_ok()
}

/// What the store keeps of a flow.
#[derive(Debug, Clone)]
// A packed flow is held in the store's ring itself: no allocation of its own, and the
// ring is written and dropped from in order, which the cache's prefetch follows.
#[allow(clippy::large_enum_variant)]
enum Kept {
    /// A record as it was given (a saved capture's, a replay's, a flow the intercept
    /// filter or a hook held, one changed by a WebSocket message).
    Record(Arc<Record>),
    /// A flow the feed saw go by, packed ([`Packed`]): a record is made of it when the
    /// UI asks.
    Packed(Packed),
}

impl Kept {
    /// The record of the flow: shared when kept as one, else made now.
    fn record(&self) -> Arc<Record> {
        match self {
            Kept::Record(r) => r.clone(),
            Kept::Packed(p) => Arc::new(p.record()),
        }
    }

    /// Body and message bytes kept.
    fn bytes(&self) -> usize {
        match self {
            Kept::Record(r) => kept_bytes(r),
            Kept::Packed(p) => p.kept_bytes(),
        }
    }
}

/// A stored flow, to be changed in place ([`MemoryStore::change`]): kept packed or as
/// a record.
pub(crate) enum FlowMut<'a> {
    /// Kept packed.
    Packed(&'a mut Packed),
    /// Kept as a record.
    Record(&'a mut Record),
}

/// One stored flow.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    kept: Kept,
    state: FlowState,
    /// Body and message bytes kept, counted against `max_bytes`.
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// In id order, with no gaps: ids are handed out one after the other, and only
    /// the oldest flows are dropped (or all of them).
    flows: VecDeque<Entry>,
    next_id: u64,
    bytes: usize,
}

impl Inner {
    /// Where the flow `id` is in `flows`: its distance from the first, as ids have no
    /// gaps (one look, where a search of a large store would miss the cache at each
    /// step, for each change of each flow).
    fn position(&self, id: u64) -> Option<usize> {
        let first = self.flows.front()?.id;
        let at = usize::try_from(id.checked_sub(first)?).ok()?;
        let entry = self.flows.get(at)?;
        debug_assert_eq!(entry.id, id, "the ids of a store have no gaps");
        (entry.id == id).then_some(at)
    }
}

/// Flows held in memory: at most `max_flows` of them, and about `max_bytes` of
/// bodies; past either, the oldest are dropped.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    changes: ChangeHub,
    max_flows: usize,
    max_bytes: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(DEFAULT_MAX_FLOWS, DEFAULT_MAX_BYTES)
    }
}

/// The most rows one list returns.
pub const MAX_PAGE: usize = 10_000;

fn kept_bytes(record: &Record) -> usize {
    let messages = record
        .websocket
        .as_ref()
        .map_or(0, |m| m.iter().map(|m| m.data.len()).sum());
    record.request.body.data.len()
        + record.response.as_ref().map_or(0, |r| r.body.data.len())
        + messages
}

impl MemoryStore {
    /// An empty store keeping at most `max_flows` flows (at least 1) and about
    /// `max_bytes` of their bodies (the newest flow is kept whatever its size).
    pub fn new(max_flows: usize, max_bytes: usize) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            changes: ChangeHub::new(),
            max_flows: max_flows.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `record` in `state` and returns its id.
    pub fn insert(&self, record: Record, state: FlowState) -> u64 {
        let bytes = kept_bytes(&record);
        self.push(Kept::Record(Arc::new(record)), bytes, state)
    }

    /// Adds a flow the feed packed, in `state`, and returns its id.
    pub(crate) fn insert_packed(&self, flow: Packed, state: FlowState) -> u64 {
        let bytes = flow.kept_bytes();
        self.push(Kept::Packed(flow), bytes, state)
    }

    fn push(&self, kept: Kept, bytes: usize, state: FlowState) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.bytes += bytes;
        inner.flows.push_back(Entry {
            id,
            kept,
            state,
            bytes,
        });
        while inner.flows.len() > self.max_flows
            || (inner.bytes > self.max_bytes && inner.flows.len() > 1)
        {
            if let Some(old) = inner.flows.pop_front() {
                inner.bytes -= old.bytes;
            }
        }
        self.changes.flow(id);
        id
    }

    /// Adds every record of a saved capture, finished.
    pub fn extend(&self, records: impl IntoIterator<Item = Record>) {
        for record in records {
            self.insert(record, FlowState::FINISHED);
        }
    }

    /// Replaces the flow `id` (if still stored) with `record`, in `state`.
    pub fn update(&self, id: u64, record: Record, state: FlowState) {
        let mut inner = self.lock();
        let Some(at) = inner.position(id) else {
            return;
        };
        let entry = &mut inner.flows[at];
        let old = entry.bytes;
        entry.bytes = kept_bytes(&record);
        entry.kept = Kept::Record(Arc::new(record));
        entry.state = state;
        let new = entry.bytes;
        inner.bytes = inner.bytes - old + new;
        self.changes.flow(id);
    }

    /// Changes the flow `id` in place, if it is still stored: as a record (a packed
    /// flow is made one first).
    pub(crate) fn modify(&self, id: u64, change: impl FnOnce(&mut Record, &mut FlowState)) {
        let unpacked = |flow: FlowMut<'_>, state: &mut FlowState| {
            // Always a record: unpacked first.
            if let FlowMut::Record(record) = flow {
                change(record, state);
            }
        };
        self.change(id, unpacked, true);
    }

    /// Changes the flow `id` in place, if it is still stored, as it is kept (packed or
    /// a record); `unpack` makes a packed flow a record first.
    pub(crate) fn change(
        &self,
        id: u64,
        change: impl FnOnce(FlowMut<'_>, &mut FlowState),
        unpack: bool,
    ) {
        let mut inner = self.lock();
        let Some(at) = inner.position(id) else {
            return;
        };
        let entry = &mut inner.flows[at];
        if unpack {
            if let Kept::Packed(p) = &entry.kept {
                entry.kept = Kept::Record(Arc::new(p.record()));
            }
        }
        let old = entry.bytes;
        let flow = match &mut entry.kept {
            Kept::Record(r) => FlowMut::Record(Arc::make_mut(r)),
            Kept::Packed(p) => FlowMut::Packed(p),
        };
        change(flow, &mut entry.state);
        entry.bytes = entry.kept.bytes();
        let new = entry.bytes;
        inner.bytes = inner.bytes - old + new;
        self.changes.flow(id);
    }

    /// Changes the state of the flow `id`, if it is still stored.
    pub(crate) fn set_state(&self, id: u64, change: impl FnOnce(&mut FlowState)) {
        let mut inner = self.lock();
        let Some(at) = inner.position(id) else {
            return;
        };
        change(&mut inner.flows[at].state);
        self.changes.flow(id);
    }

    /// Every stored flow, oldest first, as the store holds them now.
    fn snapshot(&self) -> Vec<Entry> {
        self.lock().flows.iter().cloned().collect()
    }
}

impl FlowSource for MemoryStore {
    fn list(&self, query: &ListQuery) -> FlowPage {
        let limit = match query.limit {
            0 => MAX_PAGE,
            n => n.min(MAX_PAGE),
        };
        // Filtering runs on a copy (records and packed flows' buffers shared), so the
        // proxy's hooks never wait for it; a packed flow's record is made here.
        let flows = self.snapshot();
        let count = flows.len();
        let keep = |e: &&Entry| {
            query.after.is_none_or(|a| e.id > a)
                && query.before.is_none_or(|b| e.id < b)
                && query.filter.as_ref().is_none_or(|f| match &e.kept {
                    Kept::Record(r) => f.matches(r.as_ref()),
                    Kept::Packed(p) => f.matches(&p.record()),
                })
        };
        let row = |e: &Entry| match &e.kept {
            Kept::Record(r) => FlowSummary::of(e.id, r, e.state),
            Kept::Packed(p) => FlowSummary::of(e.id, &p.record(), e.state),
        };
        let forwards = query.after.is_some() && query.before.is_none();
        let (rows, more) = if forwards {
            let mut it = flows.iter().filter(keep);
            let rows: Vec<_> = it.by_ref().take(limit).map(row).collect();
            (rows, it.next().is_some())
        } else {
            let mut it = flows.iter().rev().filter(keep);
            let mut rows: Vec<_> = it.by_ref().take(limit).map(row).collect();
            rows.reverse();
            (rows, it.next().is_some())
        };
        FlowPage {
            flows: rows,
            more,
            count,
        }
    }

    fn get(&self, id: u64) -> Option<(Arc<Record>, FlowState)> {
        let (kept, state) = {
            let inner = self.lock();
            let e = &inner.flows[inner.position(id)?];
            (e.kept.clone(), e.state)
        };
        // A packed flow's record is made once the store is let go.
        Some((kept.record(), state))
    }

    fn write_row(&self, id: u64, filter: Option<&Filter>, out: &mut Vec<u8>) -> bool {
        let (kept, state) = {
            let inner = self.lock();
            let Some(e) = inner.position(id).map(|at| &inner.flows[at]) else {
                return false;
            };
            match (&e.kept, filter) {
                // Written from its buffers, with no record made: a row is a few
                // hundred bytes, written while the store is held.
                (Kept::Packed(p), None) => {
                    return serde_json::to_writer(out, &p.row(id, e.state, true)).is_ok();
                }
                (kept, _) => (kept.clone(), e.state),
            }
        };
        // A filter is matched on a record, made (for a packed flow) once the store is
        // let go.
        write_record_row(id, &kept.record(), state, filter, out)
    }

    fn records(&self, filter: Option<&Filter>) -> Vec<Arc<Record>> {
        self.snapshot()
            .into_iter()
            .map(|e| e.kept.record())
            .filter(|r| filter.is_none_or(|f| f.matches(r.as_ref())))
            .collect()
    }

    fn len(&self) -> usize {
        self.lock().flows.len()
    }

    fn clear(&self) {
        let mut inner = self.lock();
        inner.flows.clear();
        inner.bytes = 0;
        self.changes.cleared();
    }

    fn changes(&self) -> Changes {
        self.changes.subscribe()
    }

    fn add(&self, record: Record) -> Option<u64> {
        Some(self.insert(record, FlowState::FINISHED))
    }
}

#[cfg(feature = "sqlite")]
/// A saved SQLite capture as the UI's flows (`mitm web FILE.sqlite`; a HAR or flow
/// file is first copied into a temporary one, [`SqliteSource::copy_of`]): each page of the
/// list is read from the database and filtered there ([`SqliteReader::query`]), so a
/// capture of a million flows opens at once and holds no flow in memory.
///
/// The file [`open`](Self::open) is given is never written to: clearing the list hides
/// the flows it has from the UI, and the file keeps them; the first flow added
/// ([`insert`](Self::insert), a replay's) copies the file into a temporary database
/// of the source's own (SQLite's `VACUUM INTO`, which keeps every flow's id), and the
/// source reads and writes that copy from then on (flows saved into the file later by
/// someone else are no longer seen).
#[derive(Debug)]
pub struct SqliteSource {
    reader: Mutex<SqliteReader>,
    /// Where added flows are written, once one is: always a database of the source's
    /// own (`copy`).
    writer: Mutex<Option<crate::capture::sqlite::SqliteStore>>,
    /// Flows up to this id are hidden (cleared from the UI), and how many there were.
    hidden: Mutex<(i64, u64)>,
    changes: ChangeHub,
    /// The directory of the database of the source's own ([`copy_of`](Self::copy_of)
    /// made it, or the first [`insert`](Self::insert) into a user's file), removed when
    /// the source is dropped (after `reader` and `writer`, declared before it, have
    /// closed it).
    copy: Mutex<Option<crate::capture::sqlite::TempDir>>,
}

/// The name of the database in a [`SqliteSource`]'s directory of its own.
#[cfg(feature = "sqlite")]
const COPY_NAME: &str = "flows.sqlite";

#[cfg(feature = "sqlite")]
impl SqliteSource {
    /// The capture at `path`. It is only read, never written: see
    /// [`insert`](Self::insert) for the flows added to it.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::open`]: the file is not an SQLite capture this crate reads.
    pub fn open(path: impl AsRef<std::path::Path>) -> crate::Result<Self> {
        Ok(SqliteSource {
            reader: Mutex::new(SqliteReader::open(path)?),
            writer: Mutex::new(None),
            hidden: Mutex::new((0, 0)),
            changes: ChangeHub::new(),
            copy: Mutex::new(None),
        })
    }

    /// A source of the flows `records` yields (a capture file of another format, read
    /// one at a time by [`capture::open`](crate::capture::open), say), copied one at a
    /// time into a database of their own, and read from there page by page: memory
    /// does not grow with their number. The database is made in a private directory in
    /// the system's temporary directory, removed with the source.
    ///
    /// The copy stops at the first error `records` yields (the damage in a file): the
    /// source holds the flows before it, and the error is given back beside it.
    ///
    /// # Errors
    ///
    /// The temporary database could not be made or written ([`Error::CaptureIo`],
    /// [`Error::CaptureStore`](crate::Error::CaptureStore)).
    ///
    /// [`Error::CaptureIo`]: crate::Error::CaptureIo
    pub fn copy_of(
        records: impl IntoIterator<Item = crate::Result<Record>>,
    ) -> crate::Result<(Self, Option<crate::Error>)> {
        use crate::capture::Sink as _;
        let dir = temp_dir()?;
        let path = dir.path.join(COPY_NAME);
        let io = |source| crate::Error::CaptureIo {
            path: path.clone(),
            source,
        };
        let mut store = crate::capture::sqlite::SqliteStore::create(&path)?;
        let mut damage = None;
        for record in records {
            match record {
                Ok(record) => store.write(&record).map_err(io)?,
                Err(e) => {
                    damage = Some(e);
                    break;
                }
            }
        }
        store.flush().map_err(io)?;
        drop(store);
        let source = SqliteSource::open(&path)?;
        *source.copy.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        Ok((source, damage))
    }

    /// Adds `record` (a flow the UI made: a replay's), finished, and returns its id;
    /// the live sockets are told ([`FlowSource::changes`]).
    ///
    /// It goes into the source's own database: the one [`copy_of`](Self::copy_of)
    /// made, or, for a file given to [`open`](Self::open), a copy of that file made
    /// now, on the first flow added (in a private directory in the system's temporary
    /// directory, removed with the source; the time it takes grows with the file).
    /// The file itself is never changed. The copy keeps every flow's id, and the flows
    /// cleared stay hidden.
    ///
    /// # Errors
    ///
    /// The copy could not be made, or the flow written ([`Error::CaptureIo`],
    /// [`Error::CaptureStore`](crate::Error::CaptureStore),
    /// [`Error::CaptureFormat`](crate::Error::CaptureFormat)). The source still shows
    /// what it did.
    ///
    /// [`Error::CaptureIo`]: crate::Error::CaptureIo
    pub fn insert(&self, record: &Record) -> crate::Result<u64> {
        use crate::capture::Sink as _;
        // Held throughout: one flow at a time, and one copy at most.
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let store = match writer.as_mut() {
            Some(store) => store,
            None => writer.insert(crate::capture::sqlite::SqliteStore::open(
                self.own_database()?,
            )?),
        };
        let path = store.path().to_path_buf();
        let io = |source| crate::Error::CaptureIo {
            path: path.clone(),
            source,
        };
        store.write(record).map_err(io)?;
        store.flush().map_err(io)?;
        // The newest row is the one just written: no one else writes this database.
        let id = store
            .query(None, None, 1)?
            .first()
            .and_then(|(id, _)| u64::try_from(*id).ok())
            .ok_or_else(|| crate::Error::CaptureStore {
                path: path.clone(),
                reason: "the flow written is not in the database".into(),
            })?;
        drop(writer);
        self.changes.flow(id);
        Ok(id)
    }

    /// The path of the source's own database: made now, as a copy of the file it
    /// reads, when it has none yet (the reader then reads the copy).
    fn own_database(&self) -> crate::Result<std::path::PathBuf> {
        let mut copy = self.copy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = copy.as_ref() {
            return Ok(dir.path.join(COPY_NAME));
        }
        let dir = temp_dir()?;
        let path = dir.path.join(COPY_NAME);
        let original = self.reader().path().to_path_buf();
        crate::capture::sqlite::copy_database(&original, &path)?;
        let reader = SqliteReader::open(&path)?;
        *self.reader() = reader;
        tracing::info!(
            file = %original.display(),
            copy = %path.display(),
            "web UI: a flow was added; the capture is copied, and the file left as it is"
        );
        *copy = Some(dir);
        Ok(path)
    }

    fn reader(&self) -> MutexGuard<'_, SqliteReader> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hidden(&self) -> (i64, u64) {
        *self.hidden.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new private directory for a [`SqliteSource`]'s own database.
#[cfg(feature = "sqlite")]
fn temp_dir() -> crate::Result<crate::capture::sqlite::TempDir> {
    crate::capture::sqlite::TempDir::new("web").map_err(|source| crate::Error::CaptureIo {
        path: std::env::temp_dir(),
        source,
    })
}

/// A failed read, logged; the UI shows what it got.
#[cfg(feature = "sqlite")]
fn logged<T: Default>(result: crate::Result<T>) -> T {
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %crate::error::Report(&e), "web UI: the capture could not be read");
        T::default()
    })
}

#[cfg(feature = "sqlite")]
impl FlowSource for SqliteSource {
    fn list(&self, query: &ListQuery) -> FlowPage {
        let limit = match query.limit {
            0 => MAX_PAGE,
            n => n.min(MAX_PAGE),
        };
        let (hidden, _) = self.hidden();
        let after = i64::try_from(query.after.unwrap_or(0))
            .unwrap_or(i64::MAX)
            .max(hidden);
        let before = query.before.and_then(|b| i64::try_from(b).ok());
        let filter = query.filter.as_ref();
        let reader = self.reader();
        let forwards = query.after.is_some() && query.before.is_none();
        // One more than the page, to know whether there are more.
        let (mut rows, more) = if forwards {
            let mut rows = logged(reader.query_after(filter, after, limit + 1));
            let more = rows.len() > limit;
            rows.truncate(limit);
            (rows, more)
        } else {
            let mut rows = logged(reader.query(filter, before, limit + 1));
            rows.retain(|(id, _)| *id > after);
            let more = rows.len() > limit;
            rows.truncate(limit);
            rows.reverse();
            (rows, more)
        };
        drop(reader);
        let flows = rows
            .drain(..)
            .map(|(id, record)| FlowSummary::of(id as u64, &record, FlowState::FINISHED))
            .collect();
        FlowPage {
            flows,
            more,
            count: self.len(),
        }
    }

    fn get(&self, id: u64) -> Option<(Arc<Record>, FlowState)> {
        let id = i64::try_from(id).ok().filter(|&id| id > self.hidden().0)?;
        let record = logged(self.reader().get(id))?;
        Some((Arc::new(record), FlowState::FINISHED))
    }

    fn records(&self, filter: Option<&Filter>) -> Vec<Arc<Record>> {
        let (hidden, _) = self.hidden();
        logged(self.reader().query_after(filter, hidden, usize::MAX))
            .into_iter()
            .map(|(_, record)| Arc::new(record))
            .collect()
    }

    fn len(&self) -> usize {
        let all = logged(self.reader().count());
        usize::try_from(all.saturating_sub(self.hidden().1)).unwrap_or(usize::MAX)
    }

    fn clear(&self) {
        let reader = self.reader();
        let newest = logged(reader.query(None, None, 1))
            .first()
            .map(|(id, _)| *id);
        let all = logged(reader.count());
        drop(reader);
        if let Some(newest) = newest {
            *self.hidden.lock().unwrap_or_else(|e| e.into_inner()) = (newest, all);
        }
        self.changes.cleared();
    }

    fn changes(&self) -> Changes {
        self.changes.subscribe()
    }

    fn add(&self, record: Record) -> Option<u64> {
        self.insert(&record)
            .map_err(|e| {
                tracing::warn!(error = %crate::error::Report(&e), "web UI: the new flow could not be kept");
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Record;
    use crate::core::{Connection, Host, Target};
    use crate::http::message::{HttpFlow, Request};
    use crate::web::json::{Phase, LIVE_COLUMNS};

    fn record(path: &str) -> Record {
        let request = Request::new_to(
            "GET".into(),
            Target::new("a.localhost", 8080, false),
            path.into(),
        );
        Record::from_flow(
            &Connection::new(1, Host::default()),
            &HttpFlow::new(1, request),
            1024,
        )
    }

    fn paths(page: &FlowPage) -> Vec<String> {
        page.flows.iter().map(|f| f.path.clone()).collect()
    }

    #[test]
    fn drops_the_oldest_flows_past_the_maximum() {
        let store = MemoryStore::new(3, usize::MAX);
        for i in 0..5 {
            store.insert(record(&format!("/{i}")), FlowState::FINISHED);
        }
        assert_eq!(store.len(), 3);
        assert!(store.get(2).is_none());
        let page = store.list(&ListQuery::default());
        assert_eq!(paths(&page), ["/2", "/3", "/4"]);
        assert_eq!(page.flows[0].id, 3);
    }

    #[test]
    fn pages_forwards_and_backwards_through_filtered_flows() {
        let store = MemoryStore::default();
        for i in 0..10 {
            store.insert(
                record(&format!("/{}{i}", if i % 2 == 0 { "even" } else { "odd" })),
                FlowState::FINISHED,
            );
        }
        let even = Some(Filter::parse("~u even").unwrap());
        let newest = store.list(&ListQuery {
            filter: even.clone(),
            limit: 2,
            ..ListQuery::default()
        });
        assert_eq!(paths(&newest), ["/even6", "/even8"]);
        assert!(newest.more);
        let older = store.list(&ListQuery {
            filter: even.clone(),
            before: Some(newest.flows[0].id),
            limit: 10,
            ..ListQuery::default()
        });
        assert_eq!(paths(&older), ["/even0", "/even2", "/even4"]);
        assert!(!older.more);
        let after = store.list(&ListQuery {
            filter: even,
            after: Some(3),
            limit: 1,
            ..ListQuery::default()
        });
        assert_eq!(paths(&after), ["/even4"]);
        assert!(after.more);
        assert_eq!(after.count, 10);
    }

    #[test]
    fn a_live_row_is_the_json_of_the_flow_summary() {
        let mut r = record("/x?q=1");
        let mut headers = crate::http::message::Headers::new();
        headers.append("Content-Type", "Text/HTML; charset=utf-8");
        r.response = Some(crate::capture::RecordedResponse {
            status: 404,
            reason: "Not Found".into(),
            version: "HTTP/1.1".into(),
            headers,
            body: crate::capture::RecordedBody::default(),
        });
        r.timings.response_end = Some(std::time::Duration::from_micros(1500));
        let state = FlowState {
            pending: false,
            intercepted: Some(Phase::Response),
        };
        let summary = serde_json::to_value(FlowSummary::of(7, &r, state)).unwrap();
        assert_eq!(summary["content_type"], "text/html");
        let mut with = summary.clone();
        with["matches"] = true.into();
        // The array a live socket sends, named by its columns, is the summary.
        let values = serde_json::to_value(SummaryRow(SummaryOf {
            id: 7,
            record: &r,
            state,
            matches: true,
        }))
        .unwrap();
        let named: serde_json::Map<String, serde_json::Value> = LIVE_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .zip(values.as_array().unwrap().iter().cloned())
            .collect();
        assert_eq!(serde_json::Value::Object(named), with);
    }

    #[test]
    fn ids_are_found_by_their_distance_from_the_oldest() {
        let store = MemoryStore::new(3, usize::MAX);
        let ids: Vec<u64> = (0..5)
            .map(|i| store.insert(record(&format!("/{i}")), FlowState::PENDING))
            .collect();
        assert!(store.get(ids[1]).is_none(), "dropped");
        assert_eq!(store.get(ids[3]).unwrap().0.request.path, "/3");
        assert!(store.get(ids[4] + 1).is_none());
        store.clear();
        let id = store.insert(record("/after"), FlowState::PENDING);
        assert!(id > ids[4], "ids go on after a clear");
        assert!(store.get(ids[4]).is_none());
        assert_eq!(store.get(id).unwrap().0.request.path, "/after");
    }

    #[test]
    fn updates_replace_a_flow_and_tell_the_live_sockets() {
        let store = MemoryStore::default();
        let changes = store.changes();
        let id = store.insert(record("/a"), FlowState::PENDING);
        assert!(store.summary(id).unwrap().pending);
        store.update(id, record("/b"), FlowState::FINISHED);
        let row = store.summary(id).unwrap();
        assert_eq!((row.path.as_str(), row.pending), ("/b", false));
        assert_eq!(changes.take().flows, [id]);
        store.update(id, record("/c"), FlowState::FINISHED);
        store.clear();
        let batch = changes.take();
        assert!(batch.cleared);
        assert!(batch.flows.is_empty());
        assert!(store.is_empty());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_saved_sqlite_capture_is_listed_page_by_page_and_cleared_without_loss() {
        use crate::capture::sqlite::{read_sqlite, SqliteStore};
        use crate::capture::Sink;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        for i in 1..=25 {
            store.write(&record(&format!("/{i}"))).unwrap();
        }
        drop(store);
        let source = SqliteSource::open(&path).unwrap();
        assert_eq!(source.len(), 25);
        let page = |after: Option<u64>, before: Option<u64>, filter: Option<&str>| {
            source.list(&ListQuery {
                filter: filter.map(|f| Filter::parse(f).unwrap()),
                after,
                before,
                limit: 10,
            })
        };
        // Forwards from the start, as the page loads the list.
        let first = page(Some(0), None, None);
        assert_eq!(
            paths(&first),
            (1..=10).map(|i| format!("/{i}")).collect::<Vec<_>>()
        );
        assert!(first.more);
        assert_eq!(first.count, 25);
        let last = page(Some(20), None, None);
        assert_eq!(paths(&last).len(), 5);
        assert!(!last.more);
        // Backwards: the newest, oldest first.
        let newest = page(None, None, None);
        assert_eq!(paths(&newest)[0], "/16");
        assert_eq!(paths(&newest)[9], "/25");
        assert_eq!(paths(&page(None, Some(3), None)), ["/1", "/2"]);
        // Filtered in the database.
        assert_eq!(
            paths(&page(Some(0), None, Some("~u /2"))),
            ["/2", "/20", "/21", "/22", "/23", "/24", "/25"]
        );
        assert_eq!(source.get(3).unwrap().0.request.path, "/3");
        assert_eq!(source.records(None).len(), 25);

        // Clearing hides them from the UI; the file keeps every one.
        source.clear();
        assert_eq!(source.len(), 0);
        assert!(page(Some(0), None, None).flows.is_empty());
        assert!(page(None, None, None).flows.is_empty());
        assert!(source.get(3).is_none());
        assert!(source.records(None).is_empty());
        assert_eq!(read_sqlite(&path).unwrap().len(), 25);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_copy_holds_the_flows_before_the_damage_and_goes_with_the_source() {
        let damage = crate::Error::CaptureFormat {
            path: "x.har".into(),
            reason: "at byte 9: the file ends".into(),
        };
        let records = (1..=3)
            .map(|i| Ok(record(&format!("/{i}"))))
            .chain([Err(damage), Ok(record("/never"))]);
        let (source, error) = SqliteSource::copy_of(records).unwrap();
        assert!(error.unwrap().to_string().contains("at byte 9"));
        assert_eq!(source.len(), 3);
        let all: Vec<_> = source
            .records(None)
            .iter()
            .map(|r| r.request.path.clone())
            .collect();
        assert_eq!(all, ["/1", "/2", "/3"]);
        let dir = source.copy.lock().unwrap().as_ref().unwrap().path.clone();
        assert!(dir.join("flows.sqlite").exists());
        drop(source);
        assert!(!dir.exists(), "{} is left", dir.display());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_flow_added_to_a_copy_is_listed_shown_and_announced() {
        let records = (1..=3).map(|i| Ok(record(&format!("/{i}"))));
        let (source, _) = SqliteSource::copy_of(records).unwrap();
        let changes = source.changes();
        let id = source.add(record("/replayed")).unwrap();
        assert_eq!(id, 4);
        assert_eq!(source.get(id).unwrap().0.request.path, "/replayed");
        assert_eq!(source.len(), 4);
        let page = source.list(&ListQuery {
            after: Some(0),
            ..ListQuery::default()
        });
        assert_eq!(paths(&page), ["/1", "/2", "/3", "/replayed"]);
        assert_eq!(changes.take().flows, [id]);

        // After a clear, a new flow is the only one shown.
        source.clear();
        let again = source.add(record("/again")).unwrap();
        assert_eq!(source.len(), 1);
        assert_eq!(paths(&source.list(&ListQuery::default())), ["/again"]);
        let batch = changes.take();
        assert!(batch.cleared);
        assert_eq!(batch.flows, [again]);
        let own = source.copy.lock().unwrap().as_ref().unwrap().path.clone();
        assert_eq!(source.reader().path(), own.join(COPY_NAME));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_flow_added_to_a_saved_file_goes_into_a_copy_and_the_file_is_left_as_it_was() {
        use crate::capture::sqlite::{read_sqlite, SqliteStore};
        use crate::capture::Sink;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        for i in 1..=5 {
            store.write(&record(&format!("/{i}"))).unwrap();
        }
        drop(store);
        // A gap in the ids, which the copy must keep (not number the flows again).
        let conn = rusqlite::Connection::open(&path).unwrap();
        for table in ["messages", "bodies"] {
            conn.execute(&format!("DELETE FROM {table} WHERE flow_id = 2"), [])
                .unwrap();
        }
        conn.execute("DELETE FROM flows WHERE id = 2", []).unwrap();
        drop(conn);
        let before = std::fs::read(&path).unwrap();

        let source = SqliteSource::open(&path).unwrap();
        let changes = source.changes();
        assert!(
            source.copy.lock().unwrap().is_none(),
            "no copy before an add"
        );
        let id = source.add(record("/replayed")).unwrap();
        assert_eq!(id, 6);
        assert_eq!(changes.take().flows, [id]);
        assert_eq!(source.get(id).unwrap().0.request.path, "/replayed");
        assert_eq!(source.get(3).unwrap().0.request.path, "/3", "ids are kept");
        assert!(source.get(2).is_none());
        assert_eq!(source.len(), 5);
        let own = source.copy.lock().unwrap().as_ref().unwrap().path.clone();
        assert_eq!(source.reader().path(), own.join(COPY_NAME));
        // A second flow goes into the same copy.
        assert_eq!(source.add(record("/second")).unwrap(), 7);
        assert_eq!(source.len(), 6);

        drop(source);
        assert!(!own.exists(), "{} is left", own.display());
        assert!(std::fs::read(&path).unwrap() == before, "the file changed");
        let kept: Vec<_> = read_sqlite(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.request.path)
            .collect();
        assert_eq!(kept, ["/1", "/3", "/4", "/5"]);
    }
}

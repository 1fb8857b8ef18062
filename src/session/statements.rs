//! Named prepared statements under transaction pooling. A client's statement names map to
//! proxy-wide names (`pgs_` + a hash of the query and parameter types), so the same
//! statement prepared by many clients is one statement per server connection. A server
//! connection that lacks a statement gets it prepared just before it is used, and the
//! extra replies are swallowed: the client sees exactly the replies it asked for.

use std::collections::VecDeque;

/// Maps looked up at every Bind and Execute: foldhash is several times cheaper than the
/// default SipHash on these short keys, and seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// (Looked up only at Binds of sessions that have such names.)
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::protocol::frame::{c_text, cstr, Flow, HEADER_LEN};

/// Statements kept prepared on one server connection before the least recently used is
/// closed.
pub const SERVER_STATEMENT_LIMIT: usize = 1000;

/// The name a client's Close and already-prepared Parse are turned into: closing a name
/// that does not exist is not an error, and answers CloseComplete in order.
const NO_SUCH_STATEMENT: &[u8] = b"pgs_none";

/// A statement as the proxy prepares it on servers.
#[derive(Debug)]
pub struct Prepared {
    pub name: Vec<u8>,
    /// The whole Parse message under `name`.
    pub parse: BytesMut,
}

/// Bumped when a server reports that a prepared statement's result type changed under it
/// (DDL on a table it reads): every server connection's statements of earlier epochs are
/// deallocated before its next use, so the next Parse really parses again. Without this a
/// shared statement would fail for every client that maps to it, for good.
static PLAN_EPOCH: AtomicU64 = AtomicU64::new(0);

/// A server refused to run a prepared statement whose result type changed: see `PLAN_EPOCH`.
pub fn plans_went_stale() {
    PLAN_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Whether an ErrorResponse body is PostgreSQL's "cached plan must not change result
/// type" (told by its code and routine, which are not translated).
pub fn is_changed_result_type(body: &[u8]) -> bool {
    let fields = crate::protocol::message::error_fields_raw(body);
    fields.code == b"0A000" && fields.routine == b"RevalidateCachedQuery"
}

/// The statements prepared on one server connection, with their last use.
#[derive(Debug, Default)]
pub struct ServerStatements {
    last_use: HashMap<Vec<u8>, u64>,
    clock: u64,
    /// The `PLAN_EPOCH` its statements were prepared in.
    epoch: u64,
}

impl ServerStatements {
    /// Its statements were prepared before a server reported a changed result type: they
    /// must be deallocated before the connection is used again.
    pub fn stale(&self) -> bool {
        !self.last_use.is_empty() && self.epoch < PLAN_EPOCH.load(Ordering::Relaxed)
    }

    /// SQL deallocating each of its statements by name (a pinned session's own SQL-level
    /// statements stay, unlike with DEALLOCATE ALL).
    pub fn deallocate_each_sql(&self) -> String {
        let names: Vec<String> = self
            .last_use
            .keys()
            .map(|name| format!("DEALLOCATE \"{}\"", String::from_utf8_lossy(name)))
            .collect();
        names.join("; ")
    }

    /// The `stale` statements were deallocated.
    pub fn refreshed(&mut self) {
        self.last_use.clear();
        self.epoch = PLAN_EPOCH.load(Ordering::Relaxed);
    }

    fn has(&mut self, name: &[u8]) -> bool {
        self.clock += 1;
        match self.last_use.get_mut(name) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records `name` (being prepared); returns the statement to close if over the limit.
    fn insert(&mut self, name: &[u8]) -> Option<Vec<u8>> {
        if self.last_use.is_empty() {
            self.epoch = PLAN_EPOCH.load(Ordering::Relaxed);
        }
        self.clock += 1;
        self.last_use.insert(name.to_vec(), self.clock);
        if self.last_use.len() <= SERVER_STATEMENT_LIMIT {
            return None;
        }
        let victim = self
            .last_use
            .iter()
            .filter(|(n, _)| n.as_slice() != name)
            .min_by_key(|(_, used)| **used)
            .map(|(n, _)| n.clone())?;
        self.last_use.remove(&victim);
        Some(victim)
    }

    fn forget(&mut self, name: &[u8]) {
        self.last_use.remove(name);
    }

    /// Takes back `name`, whose Close the server skipped: it is still there, and the next
    /// to be closed. Until then the connection holds one statement over the limit.
    fn restore(&mut self, name: Vec<u8>) {
        self.last_use.entry(name).or_insert(0);
    }

    /// After DISCARD ALL or DEALLOCATE ALL.
    pub fn clear(&mut self) {
        self.last_use.clear();
    }

    pub fn len(&self) -> usize {
        self.last_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_use.is_empty()
    }
}

/// What a ParseComplete or CloseComplete from the server stands for, and what to undo if
/// the batch fails before it comes (the server skips to Sync: it never did that message).
#[derive(Debug, Clone)]
enum Reply {
    /// The client's own message, nothing to undo: pass the reply on.
    Client,
    /// The client's Parse of a statement the server already had, sent as a Close of
    /// nothing: the CloseComplete becomes a ParseComplete. Undone: the client's name.
    ParseStandIn { client: ClientStatement },
    /// Prepared `name` (sent by the client or added; `hidden` swallows the reply). Undone:
    /// `name` on the server, and the client's name its Parse brought (`client`).
    Registers {
        name: Vec<u8>,
        hidden: bool,
        client: Option<ClientStatement>,
    },
    /// The proxy's Close of the least recently used `name` (swallowed). Undone: the
    /// statement is still on the server.
    Evicts { name: Vec<u8> },
    /// The client's Close of its statement. Undone: the client has it again.
    ClientClose { client: ClientStatement },
    /// A Parse of the unnamed statement, or (`hidden`) the guard's Close of another
    /// client's. Undone: `unnamed_here` and `unnamed_pending` as they were before it.
    Unnamed {
        hidden: bool,
        here: bool,
        pending: bool,
    },
}

/// A client's name for a statement, as a reply marker remembers it: undoing touches the
/// name only while it still stands for the same statement.
#[derive(Debug, Clone)]
struct ClientStatement {
    name: Vec<u8>,
    prepared: Arc<Prepared>,
}

/// The largest finished batch queue kept for reuse, in replies.
const SPARE_CAPACITY: usize = 64;

/// Per-session state: the client's names and the replies still expected, batch by batch.
/// In declaration order (`repr(C)`): what every message reads comes first (the relay's
/// state is laid out for as few cache lines per wake as can be; see `Relay`).
#[derive(Debug)]
#[repr(C)]
pub struct Statements {
    /// Parse/Close replies expected, for each batch sent (ended by Sync or Query); the
    /// last one is still open.
    batches: VecDeque<VecDeque<Reply>>,
    /// A finished batch's emptied queue, kept for the next batch: a session that parses
    /// in every batch then allocates nothing per batch.
    spare: VecDeque<Reply>,
    /// Syncs sent since the last Execute/Query: if that Execute starts COPY FROM STDIN,
    /// the server swallows them, and the batches they opened belong to the COPY's.
    syncs_since_execute: usize,
    /// The server is in copy-in mode: it ignores Sync, so Syncs open no batch.
    copy_in: bool,
    /// This session parsed the unnamed statement on the connection it holds now.
    unnamed_here: bool,
    /// ... and has not executed it yet: the connection must stay (it holds that statement).
    unnamed_pending: bool,
    by_client_name: HashMap<Vec<u8>, Arc<Prepared>>,
    /// The session's search_path (empty: the server's default), part of each proxy-wide
    /// name: the same text finds other tables under another path, so clients with
    /// different paths never share a statement.
    search_path: Vec<u8>,
    /// The client's statement names whose runs leave something in the session (a SET, a
    /// temporary table, …): each Bind of one is read for its effects, as its text would be
    /// in a Query. Never shrinks: a name parsed again with other text is read anew.
    effectful: HashSet<Vec<u8>>,
}

impl Default for Statements {
    fn default() -> Self {
        Statements {
            by_client_name: HashMap::default(),
            copy_in: false,
            syncs_since_execute: 0,
            unnamed_here: false,
            unnamed_pending: false,
            batches: VecDeque::from([VecDeque::new()]),
            spare: VecDeque::new(),
            search_path: Vec::new(),
            effectful: HashSet::default(),
        }
    }
}

impl Prepared {
    /// The statement's SQL text, as the client sent it.
    pub fn query(&self) -> &[u8] {
        self.parse
            .get(HEADER_LEN..)
            .and_then(cstr)
            .and_then(|(_, rest)| cstr(rest))
            .map_or(&[][..], |(query, _)| query)
    }
}

impl Statements {
    /// The session's search_path changed (or was first known): statements it prepares
    /// from now on are told apart by it.
    pub fn set_search_path(&mut self, settings: &[(String, String)]) {
        self.search_path = settings
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("search_path"))
            .map(|(_, value)| value.as_bytes().to_vec())
            .unwrap_or_default();
    }

    /// The SQL text of the client's statement `name`, if it prepared one.
    pub fn query_of(&self, name: &[u8]) -> Option<&[u8]> {
        self.by_client_name.get(name).map(|p| p.query())
    }

    /// Remembers that running the client's statement `name` leaves something in the
    /// session: see `effectful_query`.
    pub fn mark_effectful(&mut self, name: &[u8]) {
        if !self.effectful.contains(name) {
            self.effectful.insert(name.to_vec());
        }
    }

    /// Whether any of the client's statements was marked by `mark_effectful`.
    pub fn has_effectful(&self) -> bool {
        !self.effectful.is_empty()
    }

    /// The SQL text of the client's statement `name` if running it leaves something in the
    /// session (`mark_effectful`); None for the others.
    pub fn effectful_query(&self, name: &[u8]) -> Option<&[u8]> {
        if !self.effectful.contains(name) {
            return None;
        }
        self.query_of(name)
    }

    /// Rewrites a client message if it names a prepared statement. `len` is the whole
    /// message's length; `body` is what has arrived of it.
    pub fn on_client(
        &mut self,
        tag: u8,
        len: usize,
        body: &[u8],
        complete: bool,
        server: &mut ServerStatements,
    ) -> Flow {
        match tag {
            // Too large to read: it goes as it is (the relay pins the session). If it is
            // the unnamed statement's, that is this session's now.
            b'P' if !complete => {
                let reply = match body.first() {
                    Some(0) => {
                        let undo = self.unnamed_marker(false);
                        self.unnamed_here = true;
                        self.unnamed_pending = true;
                        undo
                    }
                    _ => Reply::Client,
                };
                self.open_batch().push_back(reply);
                Flow::Forward
            }
            b'P' => self.parse(body, server),
            b'B' => match bind_names(body) {
                None => Flow::NeedMore,
                Some((portal, statement)) => self.bind(len, portal, statement, server),
            },
            b'D' | b'C' if !complete => Flow::NeedMore,
            b'D' => self.describe(body, server),
            b'E' => {
                self.unnamed_pending = false;
                self.syncs_since_execute = 0;
                Flow::Forward
            }
            b'C' => self.close(body),
            b'S' if self.copy_in => Flow::Forward,
            b'Q' => {
                self.syncs_since_execute = 0;
                // A simple Query destroys the unnamed statement.
                self.unnamed_here = false;
                self.unnamed_pending = false;
                self.new_batch();
                Flow::Forward
            }
            b'S' => {
                self.syncs_since_execute += 1;
                self.new_batch();
                Flow::Forward
            }
            b'c' | b'f' => {
                self.copy_in = false;
                Flow::Forward
            }
            _ => Flow::Forward,
        }
    }

    fn new_batch(&mut self) {
        self.batches.push_back(std::mem::take(&mut self.spare));
    }

    fn open_batch(&mut self) -> &mut VecDeque<Reply> {
        if self.batches.is_empty() {
            self.new_batch();
        }
        let last = self.batches.len() - 1;
        &mut self.batches[last]
    }

    fn parse(&mut self, body: &[u8], server: &mut ServerStatements) -> Flow {
        let Some((name, rest)) = cstr(body) else {
            return Flow::Forward; // malformed: the server will say so
        };
        if name.is_empty() {
            let undo = self.unnamed_marker(false);
            self.unnamed_here = true;
            self.unnamed_pending = true;
            self.open_batch().push_back(undo);
            return Flow::Forward;
        }
        let skip = body.len() + HEADER_LEN;
        if self.by_client_name.contains_key(name) {
            return self.parse_existing(name, skip, server);
        }
        // Recorded now, for the messages after it; undone if the Parse does not complete.
        let prepared = Arc::new(prepare(&self.search_path, rest));
        self.by_client_name
            .insert(name.to_vec(), Arc::clone(&prepared));
        let client = ClientStatement {
            name: name.to_vec(),
            prepared: Arc::clone(&prepared),
        };
        if server.has(&prepared.name) {
            self.open_batch().push_back(Reply::ParseStandIn { client });
            return Flow::Replace {
                skip,
                with: close_message(NO_SUCH_STATEMENT),
            };
        }
        let mut with = BytesMut::new();
        self.add_to_server(&prepared, Some(client), server, &mut with);
        Flow::Replace { skip, with }
    }

    /// The client prepares a name it already has: PostgreSQL refuses (42P05) and skips to
    /// Sync. Let the server say so: make sure the existing statement is there, then Parse
    /// it again under its proxy name. The client keeps its existing statement.
    fn parse_existing(&mut self, name: &[u8], skip: usize, server: &mut ServerStatements) -> Flow {
        let mut with = BytesMut::new();
        let Some(prepared) = self.ensure(name, server, &mut with) else {
            return Flow::Forward;
        };
        with.extend_from_slice(&prepared.parse);
        self.open_batch().push_back(Reply::Client);
        Flow::Replace { skip, with }
    }

    /// Queues `prepared`'s Parse into `out` (plus a Close of an evicted statement): the
    /// client's own Parse of its new name `client`, or (None) one the proxy adds.
    fn add_to_server(
        &mut self,
        prepared: &Prepared,
        client: Option<ClientStatement>,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        if let Some(victim) = server.insert(&prepared.name) {
            out.extend_from_slice(&close_message(&victim));
            self.open_batch().push_back(Reply::Evicts { name: victim });
        }
        out.extend_from_slice(&prepared.parse);
        self.open_batch().push_back(Reply::Registers {
            name: prepared.name.clone(),
            hidden: client.is_none(),
            client,
        });
    }

    /// The statement behind a client name, added to the server first if it lacks it.
    fn ensure(
        &mut self,
        client_name: &[u8],
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) -> Option<Arc<Prepared>> {
        let prepared = Arc::clone(self.by_client_name.get(client_name)?);
        if !server.has(&prepared.name) {
            self.add_to_server(&prepared, None, server, out);
        }
        Some(prepared)
    }

    fn bind(
        &mut self,
        len: usize,
        portal: &[u8],
        statement: &[u8],
        server: &mut ServerStatements,
    ) -> Flow {
        if statement.is_empty() {
            return self.guard_unnamed(b'B', len);
        }
        let mut with = BytesMut::new();
        let Some(prepared) = self.ensure(statement, server, &mut with) else {
            return Flow::Forward; // unknown: the server answers as it would
        };
        let skip = HEADER_LEN + portal.len() + 1 + statement.len() + 1;
        let new_len = len - statement.len() + prepared.name.len();
        with.put_u8(b'B');
        with.put_i32(new_len as i32 - 1);
        put_cstr(&mut with, portal);
        put_cstr(&mut with, &prepared.name);
        Flow::Replace { skip, with }
    }

    fn describe(&mut self, body: &[u8], server: &mut ServerStatements) -> Flow {
        let (kind, name) = match body.split_first() {
            Some((b'S', rest)) => (b'S', cstr(rest).map(|(n, _)| n)),
            _ => return Flow::Forward,
        };
        let Some(name) = name else {
            return Flow::Forward;
        };
        if name.is_empty() {
            return self.guard_unnamed(b'D', HEADER_LEN + body.len());
        }
        let mut with = BytesMut::new();
        let Some(prepared) = self.ensure(name, server, &mut with) else {
            return Flow::Forward;
        };
        with.put_u8(b'D');
        with.put_i32((4 + 1 + prepared.name.len() + 1) as i32);
        with.put_u8(kind);
        put_cstr(&mut with, &prepared.name);
        Flow::Replace {
            skip: HEADER_LEN + body.len(),
            with,
        }
    }

    /// The unnamed statement on this connection may be another client's: unless this
    /// session parsed it here, close it first, so the server answers as it would to this
    /// client alone ("unnamed prepared statement does not exist").
    fn guard_unnamed(&mut self, tag: u8, len: usize) -> Flow {
        if self.unnamed_here {
            return Flow::Forward;
        }
        let undo = self.unnamed_marker(true);
        self.unnamed_here = true;
        self.open_batch().push_back(undo);
        let mut with = close_message(b"");
        // The message itself follows unchanged: its header again, then its body.
        with.put_u8(tag);
        with.put_i32(len as i32 - 1);
        Flow::Replace {
            skip: HEADER_LEN,
            with,
        }
    }

    /// A Bind of a statement the rules refuse: `portal` is bound instead to `refusal` (a
    /// statement that raises the refusal; prepared here first if needed), with no
    /// parameters, so the server answers BindComplete and fails the Execute, skipping to
    /// Sync as for its own error. `body` is the whole Bind.
    pub fn bind_refused(
        &mut self,
        body: &[u8],
        refusal: &[u8],
        server: &mut ServerStatements,
    ) -> Flow {
        let Some((portal, _)) = bind_names(body) else {
            return Flow::Forward; // malformed: the server will say so
        };
        let mut query_and_types = refusal.to_vec();
        query_and_types.extend_from_slice(b"\0\0\0");
        let prepared = prepare(b"", &query_and_types);
        let mut with = BytesMut::new();
        if !server.has(&prepared.name) {
            self.add_to_server(&prepared, None, server, &mut with);
        }
        with.put_u8(b'B');
        with.put_i32((4 + portal.len() + 1 + prepared.name.len() + 1 + 6) as i32);
        put_cstr(&mut with, portal);
        put_cstr(&mut with, &prepared.name);
        with.put_i16(0); // parameter formats
        with.put_i16(0); // parameters
        with.put_i16(0); // result formats
        Flow::Replace {
            skip: HEADER_LEN + body.len(),
            with,
        }
    }

    /// The marker of a message on the unnamed statement: the state to go back to if the
    /// server skips it.
    fn unnamed_marker(&self, hidden: bool) -> Reply {
        Reply::Unnamed {
            hidden,
            here: self.unnamed_here,
            pending: self.unnamed_pending,
        }
    }

    /// The connection was lost with replies outstanding: none of them will come.
    pub fn lost_connection(&mut self) {
        self.unnamed_here = false;
        self.unnamed_pending = false;
        self.copy_in = false;
        self.syncs_since_execute = 0;
        self.batches = VecDeque::from([VecDeque::new()]);
    }

    /// The connection is kept only because the unnamed statement parsed on it was never
    /// executed: forget that, so it may go (true if so).
    pub fn abandon_unnamed(&mut self) -> bool {
        let only_unnamed = self.unnamed_pending && self.batches.iter().all(VecDeque::is_empty);
        if only_unnamed {
            self.unnamed_pending = false;
        }
        only_unnamed
    }

    /// The session gave its connection back.
    pub fn detached(&mut self) {
        self.unnamed_here = false;
    }

    /// Close of a statement: forgotten by the client, kept on the server for others.
    fn close(&mut self, body: &[u8]) -> Flow {
        let name = match body.split_first() {
            Some((b'S', rest)) => cstr(rest).map(|(name, _)| name),
            _ => None,
        };
        let closed = name
            .filter(|name| !name.is_empty())
            .and_then(|name| self.by_client_name.remove_entry(name));
        let Some((name, prepared)) = closed else {
            self.open_batch().push_back(Reply::Client);
            return Flow::Forward;
        };
        let client = ClientStatement { name, prepared };
        self.open_batch().push_back(Reply::ClientClose { client });
        Flow::Replace {
            skip: HEADER_LEN + body.len(),
            with: close_message(NO_SUCH_STATEMENT),
        }
    }

    /// Decides the fate of a server message. ParseComplete and CloseComplete are matched
    /// with the replies expected; an error drops the rest of its batch (the server skips to
    /// Sync); ReadyForQuery ends a batch.
    pub fn on_server(&mut self, tag: u8, server: &mut ServerStatements) -> Flow {
        match tag {
            b'1' | b'3' => {
                let reply = self.batches.front_mut().and_then(VecDeque::pop_front);
                match reply {
                    Some(
                        Reply::Evicts { .. }
                        | Reply::Registers { hidden: true, .. }
                        | Reply::Unnamed { hidden: true, .. },
                    ) => Flow::Drop,
                    Some(Reply::ParseStandIn { .. }) => {
                        let mut with = BytesMut::new();
                        with.put_u8(b'1');
                        with.put_i32(4);
                        Flow::Replace {
                            skip: HEADER_LEN,
                            with,
                        }
                    }
                    _ => Flow::Forward,
                }
            }
            b'E' => {
                // Latest first: where several touch the same state, the earliest's "before"
                // is what the server still has.
                let skipped = self.batches.front_mut().map(std::mem::take);
                for reply in skipped.into_iter().flatten().rev() {
                    self.undo(reply, server);
                }
                Flow::Forward
            }
            b'Z' => {
                if self.batches.len() > 1 {
                    if let Some(mut done) = self.batches.pop_front() {
                        // (A very large batch's queue is not kept.)
                        if done.capacity() <= SPARE_CAPACITY {
                            done.clear();
                            self.spare = done;
                        }
                    }
                }
                Flow::Forward
            }
            b'G' => {
                // Syncs sent after the COPY's Execute were swallowed by copy-in mode: the
                // (empty) batches they opened will get no ReadyForQuery.
                self.copy_in = true;
                for _ in 0..std::mem::take(&mut self.syncs_since_execute) {
                    if self.batches.len() < 2 {
                        break;
                    }
                    if let Some(next) = self.batches.remove(1) {
                        self.batches[0].extend(next);
                    }
                }
                Flow::Forward
            }
            _ => Flow::Forward,
        }
    }

    /// Takes back what a message the server skipped (after an error) was counted as doing.
    fn undo(&mut self, reply: Reply, server: &mut ServerStatements) {
        match reply {
            Reply::Client => {}
            Reply::ParseStandIn { client } => self.unname(client),
            Reply::Registers { name, client, .. } => {
                server.forget(&name);
                if let Some(client) = client {
                    self.unname(client);
                }
            }
            Reply::Evicts { name } => server.restore(name),
            Reply::ClientClose { client } => {
                self.by_client_name
                    .entry(client.name)
                    .or_insert(client.prepared);
            }
            Reply::Unnamed { here, pending, .. } => {
                self.unnamed_here = here;
                self.unnamed_pending = pending;
            }
        }
    }

    /// Removes a client name whose Parse never completed, unless it was prepared again.
    fn unname(&mut self, client: ClientStatement) {
        let same = self
            .by_client_name
            .get(&client.name)
            .is_some_and(|p| Arc::ptr_eq(p, &client.prepared));
        if same {
            self.by_client_name.remove(&client.name);
        }
    }

    /// A CommandComplete (`body`, its tag). DISCARD ALL and DEALLOCATE ALL are applied only
    /// once done: a failed one (an aborted transaction's 25P02) leaves every statement.
    /// Statements from messages sent after it, whose replies are still to come, stay.
    pub fn on_command_complete(&mut self, body: &[u8], server: &mut ServerStatements) {
        let tag = c_text(body);
        if tag != b"DISCARD ALL" && tag != b"DEALLOCATE ALL" {
            return;
        }
        let later: Vec<&Reply> = self.batches.iter().flatten().collect();
        server.last_use.retain(|name, _| {
            later
                .iter()
                .any(|r| matches!(r, Reply::Registers { name: n, .. } if n == name))
        });
        self.by_client_name.retain(|name, prepared| {
            later.iter().any(|r| match r {
                Reply::ParseStandIn { client }
                | Reply::Registers {
                    client: Some(client),
                    ..
                } => client.name == *name && Arc::ptr_eq(&client.prepared, prepared),
                _ => false,
            })
        });
    }

    /// Nothing expected from the server: the connection may be handed back.
    pub fn is_settled(&self) -> bool {
        !self.unnamed_pending
            && match self.batches.as_slices() {
                // The usual case: one batch, the current one.
                ([only], []) => only.is_empty(),
                _ => self.batches.iter().all(VecDeque::is_empty),
            }
    }

    /// Forgets the client's statement `name` (its Parse is about to be sent again).
    pub fn forget(&mut self, name: &[u8]) {
        self.by_client_name.remove(name);
    }
}

/// Portal and statement names at the start of a Bind body, once both have arrived.
pub fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (portal, rest) = cstr(body)?;
    let (statement, _) = cstr(rest)?;
    Some((portal, statement))
}

/// The proxy-wide statement for a Parse body after its name (query, parameter types).
fn prepare(search_path: &[u8], query_and_types: &[u8]) -> Prepared {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    if !search_path.is_empty() {
        context.update(search_path);
        context.update(b"\0");
    }
    context.update(query_and_types);
    let digest = context.finish();
    let mut name = b"pgs_".to_vec();
    name.extend_from_slice(hex::encode(&digest.as_ref()[..16]).as_bytes());
    let mut parse = BytesMut::with_capacity(HEADER_LEN + name.len() + 1 + query_and_types.len());
    parse.put_u8(b'P');
    parse.put_i32((4 + name.len() + 1 + query_and_types.len()) as i32);
    put_cstr(&mut parse, &name);
    parse.put_slice(query_and_types);
    Prepared { name, parse }
}

fn close_message(name: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(HEADER_LEN + 2 + name.len());
    out.put_u8(b'C');
    out.put_i32((4 + 1 + name.len() + 1) as i32);
    out.put_u8(b'S');
    put_cstr(&mut out, name);
    out
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn replaced(flow: Flow) -> (usize, Vec<u8>) {
        match flow {
            Flow::Replace { skip, with } => (skip, with.to_vec()),
            other => panic!("expected a replacement, got {other:?}"),
        }
    }

    const QUERY: &[u8] = b"SELECT $1\0\0\x01\0\0\0\x17";

    #[test]
    fn same_statement_from_two_clients_shares_a_name() {
        let mut server = ServerStatements::default();
        let (mut a, mut b) = (Statements::default(), Statements::default());
        let parse_a = body(&[b"s1\0", QUERY]);
        let (_, sent) = replaced(a.on_client(b'P', parse_a.len() + 5, &parse_a, true, &mut server));
        assert!(sent.starts_with(b"P"));
        assert!(sent.windows(4).any(|w| w == b"pgs_"));
        // B prepares the same text under another name on the same connection: no second
        // Parse, a stand-in Close whose reply becomes ParseComplete.
        let parse_b = body(&[b"other\0", QUERY]);
        let (_, sent) = replaced(b.on_client(b'P', parse_b.len() + 5, &parse_b, true, &mut server));
        assert_eq!(sent, close_message(NO_SUCH_STATEMENT).to_vec());
        assert_eq!(server.len(), 1);
        let (skip, reply) = replaced(b.on_server(b'3', &mut server));
        assert_eq!((skip, reply), (5, b"1\0\0\0\x04".to_vec()));
    }

    #[test]
    fn bind_on_a_connection_without_the_statement_prepares_it_first() {
        let mut first = ServerStatements::default();
        let mut client = Statements::default();
        let parse = body(&[b"s1\0", QUERY]);
        client.on_client(b'P', parse.len() + 5, &parse, true, &mut first);
        client.on_client(b'S', 5, b"", true, &mut first);
        assert_eq!(client.on_server(b'1', &mut first), Flow::Forward);
        client.on_server(b'Z', &mut first);
        assert!(client.is_settled());
        // The next transaction lands on another server connection.
        let mut second = ServerStatements::default();
        let bind = body(&[b"\0s1\0", b"\0\0\0\x01\0\0\0\x013\0\0"]);
        let (skip, sent) =
            replaced(client.on_client(b'B', bind.len() + 5, &bind, true, &mut second));
        assert_eq!(skip, 5 + 1 + 3);
        assert!(sent.starts_with(b"P"), "Parse injected ahead of the Bind");
        let bind_at = sent.iter().rposition(|b| *b == b'B').unwrap();
        let new_len = i32::from_be_bytes(sent[bind_at + 1..bind_at + 5].try_into().unwrap());
        // Length = old length - old name + new name (36 bytes).
        assert_eq!(new_len as usize, bind.len() + 4 - 2 + 36);
        assert_eq!(second.len(), 1);
        // Its ParseComplete is swallowed; the Bind's own reply passes.
        assert_eq!(client.on_server(b'1', &mut second), Flow::Drop);
        assert_eq!(client.on_server(b'2', &mut second), Flow::Forward);
    }

    #[test]
    fn failed_batch_forgets_statements_not_confirmed() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        let parse = body(&[b"bad\0", b"SELEC oops\0\0\0"]);
        client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
        client.on_client(b'S', 5, b"", true, &mut server);
        assert_eq!(server.len(), 1);
        client.on_server(b'E', &mut server);
        client.on_server(b'Z', &mut server);
        assert!(server.is_empty());
        assert!(client.is_settled());
    }

    #[test]
    fn close_keeps_the_server_statement_and_answers_in_order() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        let parse = body(&[b"s1\0", QUERY]);
        client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
        client.on_server(b'1', &mut server);
        let close = b"Ss1\0";
        let (_, sent) = replaced(client.on_client(b'C', 9, close, true, &mut server));
        assert_eq!(sent, close_message(NO_SUCH_STATEMENT).to_vec());
        assert_eq!(client.on_server(b'3', &mut server), Flow::Forward);
        assert_eq!(server.len(), 1, "other clients may still use it");
        // Binding the closed name goes to the server unchanged: it reports the error.
        let bind = b"\0s1\0\0\0\0\0\0\0";
        assert_eq!(
            client.on_client(b'B', 15, bind, true, &mut server),
            Flow::Forward
        );
    }

    #[test]
    fn unnamed_statements_pass_untouched() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        let parse = body(&[b"\0", QUERY]);
        assert_eq!(
            client.on_client(b'P', parse.len() + 5, &parse, true, &mut server),
            Flow::Forward
        );
        assert_eq!(
            client.on_client(b'B', 15, b"\0\0\0\0\0\0\0\0\0\0", true, &mut server),
            Flow::Forward
        );
        assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
    }

    /// A Parse too large to read whole still makes the unnamed statement this session's:
    /// its Bind is not preceded by a Close of "another client's" unnamed statement.
    #[test]
    fn an_unnamed_parse_too_large_to_read_is_the_sessions() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        let start = b"\0SELECT '";
        assert_eq!(
            client.on_client(b'P', 2 << 20, start, false, &mut server),
            Flow::Forward
        );
        assert_eq!(
            client.on_client(b'B', 15, b"\0\0\0\0\0\0\0\0\0\0", true, &mut server),
            Flow::Forward
        );
        assert!(!client.is_settled(), "parsed here and not yet executed");
        assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
    }

    #[test]
    fn clients_with_other_search_paths_get_other_statements() {
        let name_under = |path: &str| {
            let mut server = ServerStatements::default();
            let mut client = Statements::default();
            let settings = [("search_path".to_owned(), path.to_owned())];
            client.set_search_path(if path.is_empty() { &[] } else { &settings });
            let parse = body(&[b"s1\0", QUERY]);
            let _ = client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
            client.by_client_name[&b"s1"[..]].name.clone()
        };
        assert_eq!(name_under("a"), name_under("a"));
        assert_ne!(name_under("a"), name_under("b"));
        assert_ne!(name_under("a"), name_under(""));
        assert_eq!(name_under(""), name_under(""));
    }

    /// After a server reports a changed result type, every connection's statements of
    /// before are stale until deallocated; statements prepared after are not.
    #[test]
    fn a_changed_result_type_makes_earlier_statements_stale() {
        let mut before = ServerStatements::default();
        let _ = before.insert(b"pgs_a");
        let _ = before.insert(b"pgs_b");
        assert!(!before.stale());
        assert!(
            !ServerStatements::default().stale(),
            "nothing prepared: nothing stale"
        );
        plans_went_stale();
        assert!(before.stale());
        let sql = before.deallocate_each_sql();
        assert!(
            sql.contains("DEALLOCATE \"pgs_a\"") && sql.contains("DEALLOCATE \"pgs_b\""),
            "{sql}"
        );
        before.refreshed();
        assert!(!before.stale() && before.is_empty());
        let mut after = ServerStatements::default();
        let _ = after.insert(b"pgs_c");
        assert!(!after.stale());
    }

    #[test]
    fn the_changed_result_type_error_is_told_by_code_and_routine() {
        let error = |code: &str, routine: &str| {
            format!("SERROR\0C{code}\0Mcached plan must not change result type\0R{routine}\0\0")
        };
        assert!(is_changed_result_type(
            error("0A000", "RevalidateCachedQuery").as_bytes()
        ));
        assert!(!is_changed_result_type(error("0A000", "other").as_bytes()));
        assert!(!is_changed_result_type(
            error("42P01", "RevalidateCachedQuery").as_bytes()
        ));
    }

    #[test]
    fn least_recently_used_statement_is_closed_past_the_limit() {
        let mut server = ServerStatements::default();
        for i in 0..SERVER_STATEMENT_LIMIT {
            assert_eq!(server.insert(format!("n{i}").as_bytes()), None);
        }
        assert!(server.has(b"n0"));
        assert_eq!(server.insert(b"extra").as_deref(), Some(&b"n1"[..]));
    }

    #[test]
    fn another_clients_unnamed_statement_is_closed_before_use() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        let bind = b"\0\0\0\0\0\0\0\0\0\0";
        let (skip, sent) = replaced(client.on_client(b'B', 15, bind, true, &mut server));
        assert_eq!(skip, 5);
        let mut want = close_message(b"").to_vec();
        want.extend_from_slice(b"B\0\0\0\x0e");
        assert_eq!(sent, want);
        assert_eq!(client.on_server(b'3', &mut server), Flow::Drop);
        // Once closed (or parsed) here, later Binds pass; a new connection starts over.
        assert_eq!(
            client.on_client(b'B', 15, bind, true, &mut server),
            Flow::Forward
        );
        client.detached();
        assert!(matches!(
            client.on_client(b'B', 15, bind, true, &mut server),
            Flow::Replace { .. }
        ));
        // Parsed but not yet executed: the connection must be kept.
        let parse = body(&[b"\0", QUERY]);
        client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
        assert!(!client.is_settled());
        client.on_client(b'E', 10, b"\0\0\0\0\0", true, &mut server);
        while client.batches.front().is_some_and(|b| !b.is_empty()) {
            client.on_server(b'1', &mut server);
        }
        assert!(client.is_settled());
    }

    #[test]
    fn a_finished_batch_queue_is_reused_empty() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        // An unnamed Parse whose reply is dropped by an error: nothing of it may show up
        // in the next batch, which reuses the queue.
        let parse = body(&[b"\0", QUERY]);
        for _ in 0..3 {
            client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
            client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
            client.on_client(b'S', 5, b"", true, &mut server);
            assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
            client.on_server(b'Z', &mut server);
            assert_eq!(client.batches.len(), 1);
            assert!(client.batches[0].is_empty());
        }
        assert!(client.spare.is_empty() && client.spare.capacity() >= 2);
        // The queue in use is the spare from before: no allocation per batch.
        client.on_client(b'S', 5, b"", true, &mut server);
        assert_eq!(client.spare.capacity(), 0);
        assert!(client.batches.iter().all(VecDeque::is_empty));
    }

    #[test]
    fn preparing_an_existing_name_gets_the_servers_error() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        let parse = body(&[b"s1\0", QUERY]);
        client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
        client.on_server(b'1', &mut server);
        let original = client.by_client_name[&b"s1"[..]].parse.to_vec();
        let again = body(&[b"s1\0", b"SELECT 2\0\0\0"]);
        let (_, sent) =
            replaced(client.on_client(b'P', again.len() + 5, &again, true, &mut server));
        // The existing statement's Parse again: the server answers 42P05.
        assert_eq!(sent, original);
        assert_eq!(client.by_client_name[&b"s1"[..]].parse.to_vec(), original);
        client.on_client(b'S', 5, b"", true, &mut server);
        client.on_server(b'E', &mut server);
        client.on_server(b'Z', &mut server);
        assert!(client.is_settled());
        assert_eq!(server.len(), 1, "the original statement is still there");
    }

    #[test]
    fn copy_in_swallowed_sync_keeps_replies_aligned() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        // Bind/Execute/Sync of a COPY: the server swallows this Sync.
        client.on_client(b'B', 15, b"\0\0\0\0\0\0\0\0\0\0", true, &mut server);
        client.on_server(b'3', &mut server); // the unnamed guard's Close
        client.on_client(b'E', 10, b"\0\0\0\0\0", true, &mut server);
        client.on_client(b'S', 5, b"", true, &mut server);
        client.on_server(b'G', &mut server);
        client.on_client(b'c', 5, b"", true, &mut server);
        client.on_client(b'S', 5, b"", true, &mut server);
        client.on_server(b'Z', &mut server);
        assert!(client.is_settled());
        // The next batch's hidden ParseComplete is matched with the next batch.
        let parse = body(&[b"s1\0", QUERY]);
        client.on_client(b'P', parse.len() + 5, &parse, true, &mut server);
        client.on_client(b'S', 5, b"", true, &mut server);
        assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
        client.on_server(b'Z', &mut server);
        assert!(client.is_settled());
        assert_eq!(client.batches.len(), 1);
    }

    /// Parse of `name` (SQL `sql`, no parameter types) then Sync, as the client sends them.
    fn send_parse(client: &mut Statements, server: &mut ServerStatements, name: &str, sql: &str) {
        let parse = body(&[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"]);
        client.on_client(b'P', parse.len() + 5, &parse, true, server);
    }

    fn send_sync(client: &mut Statements, server: &mut ServerStatements) {
        client.on_client(b'S', 5, b"", true, server);
    }

    /// A statement prepared and confirmed: Parse, Sync, ParseComplete, ReadyForQuery.
    fn prepared(client: &mut Statements, server: &mut ServerStatements, name: &str, sql: &str) {
        send_parse(client, server, name, sql);
        send_sync(client, server);
        assert_eq!(client.on_server(b'1', server), Flow::Forward);
        client.on_server(b'Z', server);
        assert!(client.is_settled());
    }

    /// The server skipped to Sync: ErrorResponse, then ReadyForQuery.
    fn batch_fails(client: &mut Statements, server: &mut ServerStatements) {
        assert_eq!(client.on_server(b'E', server), Flow::Forward);
        client.on_server(b'Z', server);
    }

    fn has_name(client: &Statements, name: &str) -> bool {
        client.query_of(name.as_bytes()).is_some()
    }

    #[test]
    fn command_complete_of_discard_or_deallocate_all_drops_every_statement() {
        let cases: &[(&[u8], bool)] = &[
            (b"DISCARD ALL\0", true),
            (b"DEALLOCATE ALL\0", true),
            (b"DEALLOCATE\0", false),
            (b"DISCARD PLANS\0", false),
            (b"SELECT 1\0", false),
            (b"DISCARD ALL", true), // no terminator: the tag is the whole body
        ];
        for (tag, drops) in cases {
            let mut server = ServerStatements::default();
            let mut client = Statements::default();
            prepared(&mut client, &mut server, "s1", "SELECT 1");
            client.on_client(b'Q', 17, b"DISCARD ALL\0", true, &mut server);
            client.on_command_complete(tag, &mut server);
            client.on_server(b'C', &mut server);
            client.on_server(b'Z', &mut server);
            let what = String::from_utf8_lossy(tag);
            assert_eq!(has_name(&client, "s1"), !drops, "client name after {what}");
            assert_eq!(server.is_empty(), *drops, "server statements after {what}");
            assert!(client.is_settled());
        }
    }

    #[test]
    fn failed_discard_all_keeps_every_statement() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        prepared(&mut client, &mut server, "s1", "SELECT 1");
        // In an aborted transaction the server answers 25P02 and does nothing.
        client.on_client(b'Q', 17, b"DISCARD ALL\0", true, &mut server);
        batch_fails(&mut client, &mut server);
        assert!(has_name(&client, "s1"));
        assert_eq!(server.len(), 1);
        // Binding it still uses the statement already on the server: no Parse added.
        let bind = b"\0s1\0\0\0\0\0\0\0";
        let (_, sent) = replaced(client.on_client(b'B', 15, bind, true, &mut server));
        assert!(sent.starts_with(b"B"), "{sent:?}");
    }

    #[test]
    fn statements_sent_after_discard_all_survive_it() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        prepared(&mut client, &mut server, "old", "SELECT 1");
        // Pipelined: the Query, then a Parse before the Query's CommandComplete comes.
        client.on_client(b'Q', 17, b"DISCARD ALL\0", true, &mut server);
        send_parse(&mut client, &mut server, "new", "SELECT 2");
        send_sync(&mut client, &mut server);
        client.on_command_complete(b"DISCARD ALL\0", &mut server);
        client.on_server(b'Z', &mut server);
        assert!(!has_name(&client, "old"));
        assert!(has_name(&client, "new"));
        assert_eq!(server.len(), 1, "the new statement's Parse came after");
        assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
        client.on_server(b'Z', &mut server);
        assert!(client.is_settled());
    }

    #[test]
    fn failed_parse_leaves_the_name_free() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        send_parse(&mut client, &mut server, "s1", "SELEC oops");
        send_sync(&mut client, &mut server);
        assert!(has_name(&client, "s1"), "usable by the messages after it");
        batch_fails(&mut client, &mut server);
        assert!(!has_name(&client, "s1"));
        // Prepared again, the new text goes to the server (not the 42P05 path).
        let parse = body(&[b"s1\0", b"SELECT 1\0\0\0"]);
        let (_, sent) =
            replaced(client.on_client(b'P', parse.len() + 5, &parse, true, &mut server));
        assert!(sent.starts_with(b"P"));
        assert!(sent.windows(8).any(|w| w == b"SELECT 1"), "{sent:?}");
        send_sync(&mut client, &mut server);
        assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
        client.on_server(b'Z', &mut server);
        assert_eq!(client.query_of(b"s1"), Some(&b"SELECT 1"[..]));
    }

    /// What each kind of message is taken back to when the server skips it: a batch of
    /// Parses and Closes where the first message fails, with the names that remain.
    #[test]
    fn messages_the_server_skipped_are_undone() {
        /// A message of the failing batch: Parse or Close ("P" / "C"), name, SQL.
        type Step = (&'static str, &'static str, &'static str);
        struct Case {
            case: &'static str,
            /// Confirmed before the batch, as "name=SQL".
            before: &'static [&'static str],
            batch: &'static [Step],
            /// The client's names after it.
            after: &'static [&'static str],
        }
        const BAD: Step = ("P", "bad", "SELEC oops");
        let cases = [
            Case {
                case: "new name",
                before: &[],
                batch: &[("P", "s1", "SELEC oops")],
                after: &[],
            },
            Case {
                case: "names after the failing Parse",
                before: &[],
                batch: &[BAD, ("P", "s2", "SELECT 2")],
                after: &[],
            },
            Case {
                case: "stand-in Parse of a statement the server has",
                before: &["other=SELECT 2"],
                batch: &[BAD, ("P", "s2", "SELECT 2")],
                after: &["other"],
            },
            Case {
                case: "client Close",
                before: &["s1=SELECT 1"],
                batch: &[BAD, ("C", "s1", "")],
                after: &["s1"],
            },
            Case {
                case: "Close, then Parse of the same name",
                before: &["s1=SELECT 1"],
                batch: &[BAD, ("C", "s1", ""), ("P", "s1", "SELECT 3")],
                after: &["s1"],
            },
        ];
        for Case {
            case,
            before,
            batch,
            after,
        } in cases
        {
            let mut server = ServerStatements::default();
            let mut client = Statements::default();
            for statement in before {
                let (name, sql) = statement.split_once('=').unwrap();
                prepared(&mut client, &mut server, name, sql);
            }
            let on_server_before = server.len();
            for (kind, name, sql) in batch {
                match *kind {
                    "P" => send_parse(&mut client, &mut server, name, sql),
                    _ => {
                        let close = body(&[b"S", name.as_bytes(), b"\0"]);
                        client.on_client(b'C', close.len() + 5, &close, true, &mut server);
                    }
                }
            }
            send_sync(&mut client, &mut server);
            batch_fails(&mut client, &mut server);
            let mut names: Vec<&str> = ["s1", "s2", "bad", "other"]
                .into_iter()
                .filter(|n| has_name(&client, n))
                .collect();
            names.sort_unstable();
            assert_eq!(names, after, "{case}");
            assert_eq!(server.len(), on_server_before, "{case}: server statements");
            assert!(client.is_settled(), "{case}");
        }
        // The Close undone gives back the statement the client had, not the new text.
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        prepared(&mut client, &mut server, "s1", "SELECT 1");
        send_parse(&mut client, &mut server, "bad", "SELEC oops");
        client.on_client(b'C', 9, b"Ss1\0", true, &mut server);
        send_parse(&mut client, &mut server, "s1", "SELECT 3");
        send_sync(&mut client, &mut server);
        batch_fails(&mut client, &mut server);
        assert_eq!(client.query_of(b"s1"), Some(&b"SELECT 1"[..]));
    }

    #[test]
    fn name_prepared_again_in_a_later_batch_outlives_the_earlier_failure() {
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        send_parse(&mut client, &mut server, "s1", "SELEC oops");
        send_sync(&mut client, &mut server);
        // Pipelined before the error comes: Close s1 and prepare it again.
        client.on_client(b'C', 9, b"Ss1\0", true, &mut server);
        send_parse(&mut client, &mut server, "s1", "SELECT 1");
        send_sync(&mut client, &mut server);
        batch_fails(&mut client, &mut server);
        assert_eq!(client.query_of(b"s1"), Some(&b"SELECT 1"[..]));
        assert_eq!(client.on_server(b'3', &mut server), Flow::Forward);
        assert_eq!(client.on_server(b'1', &mut server), Flow::Forward);
        client.on_server(b'Z', &mut server);
        assert!(client.is_settled());
        assert_eq!(server.len(), 1);
    }

    /// The unnamed guard and unnamed Parses: whether the next Bind of the unnamed statement
    /// closes it first, after the batch failed at one message or another.
    #[test]
    fn unnamed_state_follows_what_the_server_did() {
        let bind = b"\0\0\0\0\0\0\0\0\0\0";
        let bad = body(&[b"bad\0", b"SELEC oops\0\0\0"]);
        let unnamed = body(&[b"\0", QUERY]);
        // (case, replies before the error, guard Close expected on the next Bind)
        let cases: &[(&str, &[u8], bool)] = &[
            ("guard Close skipped", b"", true),
            ("guard Close done, Bind failed", b"13", false),
        ];
        for (case, replies, guard_again) in cases {
            let mut server = ServerStatements::default();
            let mut client = Statements::default();
            match replies.is_empty() {
                // Parse "bad" fails: the guard's Close and the Bind after it are skipped.
                true => {
                    client.on_client(b'P', bad.len() + 5, &bad, true, &mut server);
                }
                // A good Parse, the guard's Close, then the Bind fails.
                false => send_parse(&mut client, &mut server, "ok", "SELECT 1"),
            }
            client.on_client(b'B', 15, bind, true, &mut server);
            send_sync(&mut client, &mut server);
            for tag in *replies {
                client.on_server(*tag, &mut server);
            }
            batch_fails(&mut client, &mut server);
            assert!(client.is_settled(), "{case}");
            let next = client.on_client(b'B', 15, bind, true, &mut server);
            assert_eq!(matches!(next, Flow::Replace { .. }), *guard_again, "{case}");
        }
        // An unnamed Parse skipped after an error: the connection is not kept for it, and
        // the other client's unnamed statement is still closed before use.
        let mut server = ServerStatements::default();
        let mut client = Statements::default();
        client.on_client(b'P', bad.len() + 5, &bad, true, &mut server);
        client.on_client(b'P', unnamed.len() + 5, &unnamed, true, &mut server);
        send_sync(&mut client, &mut server);
        assert!(!client.is_settled());
        batch_fails(&mut client, &mut server);
        assert!(client.is_settled());
        assert!(matches!(
            client.on_client(b'B', 15, bind, true, &mut server),
            Flow::Replace { .. }
        ));
    }

    #[test]
    fn eviction_skipped_after_an_error_keeps_the_victim() {
        // (case, replies before the error, victim still on the server): the Parse over
        // the limit fails, or something before it does and its Close is skipped too.
        let cases: &[(&str, &[u8], bool)] = &[
            ("Close of the victim skipped", b"", true),
            ("Close of the victim done, its Parse failed", b"3", false),
        ];
        for (case, replies, kept) in cases {
            let mut server = ServerStatements::default();
            for i in 0..SERVER_STATEMENT_LIMIT {
                server.insert(format!("n{i}").as_bytes());
            }
            let mut client = Statements::default();
            send_parse(&mut client, &mut server, "s1", "SELECT 1");
            send_sync(&mut client, &mut server);
            assert!(!server.last_use.contains_key(&b"n0"[..]));
            for tag in *replies {
                assert_eq!(client.on_server(*tag, &mut server), Flow::Drop, "{case}");
            }
            batch_fails(&mut client, &mut server);
            assert_eq!(server.last_use.contains_key(&b"n0"[..]), *kept, "{case}");
            assert!(!has_name(&client, "s1"), "{case}");
            assert!(client.is_settled(), "{case}");
        }
        // Once taken back it is the next to go.
        let mut server = ServerStatements::default();
        for i in 0..SERVER_STATEMENT_LIMIT {
            server.insert(format!("n{i}").as_bytes());
        }
        let victim = server.insert(b"extra").unwrap();
        server.restore(victim.clone());
        assert_eq!(server.insert(b"more"), Some(victim));
    }
}

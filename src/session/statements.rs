//! Named prepared statements under transaction pooling. A client's statement names map to
//! proxy-wide names (`pgs_` + a hash of the query and parameter types), so the same
//! statement prepared by many clients is one statement per server connection. A server
//! connection that lacks a statement gets it prepared just before it is used, and the
//! extra replies are swallowed: the client sees exactly the replies it asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::protocol::frame::{cstr, Flow, HEADER_LEN};

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

/// The statements prepared on one server connection, with their last use.
#[derive(Debug, Default)]
pub struct ServerStatements {
    last_use: HashMap<Vec<u8>, u64>,
    clock: u64,
}

impl ServerStatements {
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

/// What a ParseComplete or CloseComplete from the server stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// The client's own message: pass it on. A Parse registers `name` once complete.
    Client,
    /// A Parse or Close the proxy added: swallow the reply.
    Hidden,
    /// The client's Parse of a statement the server already had, sent as a Close of
    /// nothing: the CloseComplete becomes a ParseComplete.
    ParseStandIn,
    /// Prepared `name` (sent by the client or added): forget it if the batch fails first.
    Registers { name: Vec<u8>, hidden: bool },
}

/// Per-session state: the client's names and the replies still expected, batch by batch.
#[derive(Debug)]
pub struct Statements {
    by_client_name: HashMap<Vec<u8>, Arc<Prepared>>,
    /// The server is in copy-in mode: it ignores Sync, so Syncs open no batch.
    copy_in: bool,
    /// Syncs sent since the last Execute/Query: if that Execute starts COPY FROM STDIN,
    /// the server swallows them, and the batches they opened belong to the COPY's.
    syncs_since_execute: usize,
    /// This session parsed the unnamed statement on the connection it holds now.
    unnamed_here: bool,
    /// ... and has not executed it yet: the connection must stay (it holds that statement).
    unnamed_pending: bool,
    /// Parse/Close replies expected, for each batch sent (ended by Sync or Query); the
    /// last one is still open.
    batches: VecDeque<VecDeque<Reply>>,
}

impl Default for Statements {
    fn default() -> Self {
        Statements {
            by_client_name: HashMap::new(),
            copy_in: false,
            syncs_since_execute: 0,
            unnamed_here: false,
            unnamed_pending: false,
            batches: VecDeque::from([VecDeque::new()]),
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
    /// The SQL text of the client's statement `name`, if it prepared one.
    pub fn query_of(&self, name: &[u8]) -> Option<&[u8]> {
        self.by_client_name.get(name).map(|p| p.query())
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
            // Too large to read: it goes as it is (the relay pins the session).
            b'P' if !complete => {
                self.open_batch().push_back(Reply::Client);
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
                self.batches.push_back(VecDeque::new());
                Flow::Forward
            }
            b'S' => {
                self.syncs_since_execute += 1;
                self.batches.push_back(VecDeque::new());
                Flow::Forward
            }
            b'c' | b'f' => {
                self.copy_in = false;
                Flow::Forward
            }
            _ => Flow::Forward,
        }
    }

    fn open_batch(&mut self) -> &mut VecDeque<Reply> {
        if self.batches.is_empty() {
            self.batches.push_back(VecDeque::new());
        }
        let last = self.batches.len() - 1;
        &mut self.batches[last]
    }

    fn parse(&mut self, body: &[u8], server: &mut ServerStatements) -> Flow {
        let Some((name, rest)) = cstr(body) else {
            return Flow::Forward; // malformed: the server will say so
        };
        if name.is_empty() {
            self.unnamed_here = true;
            self.unnamed_pending = true;
            self.open_batch().push_back(Reply::Client);
            return Flow::Forward;
        }
        let skip = body.len() + HEADER_LEN;
        if self.by_client_name.contains_key(name) {
            return self.parse_existing(name, skip, server);
        }
        let prepared = Arc::new(prepare(rest));
        self.by_client_name
            .insert(name.to_vec(), Arc::clone(&prepared));
        if server.has(&prepared.name) {
            self.open_batch().push_back(Reply::ParseStandIn);
            return Flow::Replace {
                skip,
                with: close_message(NO_SUCH_STATEMENT),
            };
        }
        let mut with = BytesMut::new();
        self.add_to_server(&prepared, false, server, &mut with);
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

    /// Queues `prepared`'s Parse into `out` (plus a Close of an evicted statement).
    fn add_to_server(
        &mut self,
        prepared: &Prepared,
        hidden: bool,
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        if let Some(victim) = server.insert(&prepared.name) {
            out.extend_from_slice(&close_message(&victim));
            self.open_batch().push_back(Reply::Hidden);
        }
        out.extend_from_slice(&prepared.parse);
        self.open_batch().push_back(Reply::Registers {
            name: prepared.name.clone(),
            hidden,
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
            self.add_to_server(&prepared, true, server, out);
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
        self.unnamed_here = true;
        self.open_batch().push_back(Reply::Hidden);
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
        let prepared = prepare(&query_and_types);
        let mut with = BytesMut::new();
        if !server.has(&prepared.name) {
            self.add_to_server(&prepared, true, server, &mut with);
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
        self.open_batch().push_back(Reply::Client);
        let Some((b'S', rest)) = body.split_first() else {
            return Flow::Forward;
        };
        let Some((name, _)) = cstr(rest) else {
            return Flow::Forward;
        };
        if name.is_empty() || self.by_client_name.remove(name).is_none() {
            return Flow::Forward;
        }
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
                    Some(Reply::Hidden) | Some(Reply::Registers { hidden: true, .. }) => Flow::Drop,
                    Some(Reply::ParseStandIn) => {
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
                if let Some(batch) = self.batches.front_mut() {
                    for reply in batch.drain(..) {
                        if let Reply::Registers { name, .. } = reply {
                            server.forget(&name);
                        }
                    }
                }
                Flow::Forward
            }
            b'Z' => {
                if self.batches.len() > 1 {
                    self.batches.pop_front();
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

    /// Nothing expected from the server: the connection may be handed back.
    pub fn is_settled(&self) -> bool {
        !self.unnamed_pending && self.batches.iter().all(VecDeque::is_empty)
    }

    /// Forgets the client's statement `name` (its Parse is about to be sent again).
    pub fn forget(&mut self, name: &[u8]) {
        self.by_client_name.remove(name);
    }

    /// Client DEALLOCATE ALL / DISCARD ALL.
    pub fn forget_all(&mut self) {
        self.by_client_name.clear();
    }
}

/// Portal and statement names at the start of a Bind body, once both have arrived.
pub fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (portal, rest) = cstr(body)?;
    let (statement, _) = cstr(rest)?;
    Some((portal, statement))
}

/// The proxy-wide statement for a Parse body after its name (query, parameter types).
fn prepare(query_and_types: &[u8]) -> Prepared {
    let digest = ring::digest::digest(&ring::digest::SHA256, query_and_types);
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
}

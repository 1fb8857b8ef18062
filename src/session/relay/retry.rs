//! Reads that a replica fails before answering anything are sent again elsewhere, unseen
//! by the client: a replica that went away (connection lost, FATAL such as a shutdown),
//! or one that refused the statement as a write (SQLSTATE 25006: then the primary, and
//! the statement is remembered as a write).

use bytes::BytesMut;

use super::routing::Want;
use super::Relay;
use crate::metrics;
use crate::protocol::frame::{cstr, Frames, MAX_FRAME_LEN};
use crate::protocol::message::{self, Frontend};
use crate::session::error::SessionError;
use crate::session::state::RelayState;

/// Largest request kept for sending again.
const MAX_REPLAY: usize = 64 * 1024;

/// Why a read is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// The replica's connection failed or it said FATAL.
    Lost,
    /// The replica refused it as a write.
    ReadOnly,
}

impl Retry {
    fn as_str(self) -> &'static str {
        match self {
            Retry::Lost => "replica_lost",
            Retry::ReadOnly => "read_only",
        }
    }
}

/// Whether a request can be sent again as it is: small, complete messages, no COPY data
/// and no fast-path call.
fn is_replayable(bytes: &[u8]) -> bool {
    bytes.len() <= MAX_REPLAY
        && Frames::new(bytes, MAX_FRAME_LEN).all(|frame| match frame {
            Ok(f) => !matches!(
                Frontend::from_tag(f.tag),
                Frontend::FunctionCall
                    | Frontend::CopyData
                    | Frontend::CopyDone
                    | Frontend::CopyFail
            ),
            Err(_) => false,
        })
}

/// Names of the statements that the complete Parse messages in `bytes` prepare.
fn parsed_names(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    Frames::new(bytes, MAX_FRAME_LEN)
        .map_while(Result::ok)
        .filter(|f| Frontend::from_tag(f.tag) == Frontend::Parse)
        .filter_map(|f| cstr(f.body(bytes)).map(|(name, _)| name))
        .filter(|name| !name.is_empty())
}

/// The first message of a replica's answer: does it mean "send the read elsewhere"?
pub(super) fn first_reply_retry(tag: u8, body: &[u8]) -> Option<Retry> {
    if message::Backend::from_tag(tag) != message::Backend::ErrorResponse {
        return None;
    }
    if body.starts_with(b"SFATAL\0") || body.starts_with(b"SPANIC\0") {
        return Some(Retry::Lost);
    }
    (message::error_code(body) == b"25006").then_some(Retry::ReadOnly)
}

impl Relay {
    /// A replica connection was taken for a read starting from idle: keep the request.
    pub(super) fn arm_replay(&mut self) {
        let on_replica = self
            .routing
            .as_ref()
            .is_some_and(super::routing::Routing::on_replica);
        self.replay = (on_replica && self.state.is_idle()).then(BytesMut::new);
        self.replay_started = false;
        self.replay_names.clear();
    }

    /// The server answered the first `batches` batches of the kept request in full: they
    /// will not be sent again.
    pub(super) fn replay_answered(&mut self, batches: usize) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        if batches == 0 {
            return;
        }
        let mut ends = Frames::new(replay, MAX_FRAME_LEN)
            .map_while(Result::ok)
            .filter(|f| matches!(Frontend::from_tag(f.tag), Frontend::Sync | Frontend::Query))
            .map(|f| f.start + f.len);
        let cut = ends.nth(batches - 1).unwrap_or(replay.len());
        let _ = replay.split_to(cut);
    }

    /// Before client bytes are taken while a request is kept: the names its Parses will
    /// register (names the session already holds are its own, not this request's).
    pub(super) fn note_replay_names(&mut self) {
        let Some(replay) = self.replay.as_ref() else {
            return;
        };
        if replay.len() + self.from_client.len() > MAX_REPLAY {
            self.replay = None;
            return;
        }
        let Some(statements) = self.statements.as_ref() else {
            return;
        };
        for name in parsed_names(&self.from_client) {
            if statements.query_of(name).is_none() {
                self.replay_names.push(name.to_vec());
            }
        }
    }

    /// Adds the client bytes just taken (`taken`, from before the take) to the request kept.
    pub(super) fn keep_for_replay(&mut self, before: &[u8]) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        let taken = before.len() - self.from_client.len();
        replay.extend_from_slice(&before[..taken]);
        if !is_replayable(replay) {
            self.replay = None;
        }
    }

    /// Sends the kept request again, to another replica or the primary. False when there
    /// is nothing to send again (the caller ends the session as before).
    pub(super) async fn retry_read(&mut self, retry: Retry) -> Result<bool, SessionError> {
        if self.replay_started {
            // Part of the answer reached the client: sending it again would repeat it.
            tracing::debug!("server lost in the middle of an answer: not sent again");
            return Ok(false);
        }
        if !self.client_stream.at_boundary() {
            tracing::debug!("server lost mid client message: not sent again");
            return Ok(false);
        }
        let Some(request) = self.replay.take() else {
            tracing::debug!(role = ?self.routing.as_ref().map(|r| r.role), "server lost with no request kept");
            return Ok(false);
        };
        let Some(mut server) = self.server.take() else {
            return Ok(false);
        };
        self.retry = None;
        // Whatever the connection still holds is for nobody: it is not reused.
        server.broken = true;
        drop(server);
        let Some(routing) = self.routing.as_mut() else {
            return Ok(false);
        };
        match retry {
            Retry::Lost => routing.replica_failed(),
            Retry::ReadOnly => {
                if let Some(sql) = first_statement(&request) {
                    routing.snapshot.router.cache().remember_write(sql);
                }
                routing.released();
            }
        }
        routing.restart_request();
        routing.want = Some(match retry {
            Retry::ReadOnly => Want::Primary,
            Retry::Lost => Want::Read { any: false },
        });
        tracing::debug!(reason = retry.as_str(), "read sent again elsewhere");
        metrics::read_retried(retry.as_str());
        self.state = RelayState::default();
        self.server_stream = Default::default();
        self.to_server.clear();
        if let Some(statements) = self.statements.as_mut() {
            statements.lost_connection();
            // Sent again, its Parses register their names again.
            let again: Vec<&[u8]> = parsed_names(&request).collect();
            for name in self.replay_names.drain(..) {
                if again.contains(&name.as_slice()) {
                    statements.forget(&name);
                }
            }
        }
        let mut again = request;
        again.extend_from_slice(&self.from_client);
        self.from_client = again;
        self.session.cancel_key.clear();
        Ok(true)
    }
}

/// The SQL of the first Query or Parse in a request.
fn first_statement(bytes: &[u8]) -> Option<&[u8]> {
    Frames::new(bytes, MAX_FRAME_LEN).flatten().find_map(|f| {
        let body = f.body(bytes);
        match Frontend::from_tag(f.tag) {
            Frontend::Query => cstr(body).map(|(sql, _)| sql),
            Frontend::Parse => cstr(body)
                .and_then(|(_, rest)| cstr(rest))
                .map(|(sql, _)| sql),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::msg;

    #[test]
    fn only_requests_without_lasting_names_are_replayed() {
        let query = msg(b'Q', b"select 1\0");
        let unnamed = [
            msg(b'P', b"\0select 1\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'S', b""),
        ]
        .concat();
        let named = msg(b'P', b"s1\0select 1\0\0\0");
        let copy = msg(b'd', b"1\t2\n");
        assert!(is_replayable(&query));
        assert!(is_replayable(&unnamed));
        assert!(is_replayable(&named));
        assert!(!is_replayable(&copy));
        let both = [named.clone(), unnamed.clone()].concat();
        let names: Vec<&[u8]> = parsed_names(&both).collect();
        assert_eq!(names, vec![&b"s1"[..]]);
        assert!(!is_replayable(&vec![b'Q'; MAX_REPLAY + 1]));
        assert_eq!(first_statement(&unnamed), Some(&b"select 1"[..]));
    }

    #[test]
    fn fatal_and_read_only_errors_send_the_read_elsewhere() {
        assert_eq!(
            first_reply_retry(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating\0\0"),
            Some(Retry::Lost)
        );
        assert_eq!(
            first_reply_retry(b'E', b"SERROR\0VERROR\0C25006\0Mread-only\0\0"),
            Some(Retry::ReadOnly)
        );
        assert_eq!(
            first_reply_retry(b'E', b"SERROR\0VERROR\0C42P01\0Mno table\0\0"),
            None
        );
        assert_eq!(first_reply_retry(b'T', b"\0\0"), None);
    }
}

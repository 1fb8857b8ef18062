//! Relay state of a session, as data: what the server still owes the client and
//! where the transaction stands. Transitions are pure and tested without sockets.

use std::time::Instant;

use crate::protocol::message::{Backend, Frontend};
use crate::protocol::TxStatus;

/// What the relay knows about the conversation with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayState {
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall sent).
    pub pending_ready: usize,
    /// Status from the last ReadyForQuery.
    pub status: TxStatus,
    /// When the current transaction's first message was sent, if one is under way.
    pub transaction_started: Option<Instant>,
}

/// Something the relay reports after a server message, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    /// A transaction (or single statement outside BEGIN) ended; how long it ran.
    TransactionEnded(std::time::Duration),
}

impl Default for RelayState {
    fn default() -> Self {
        RelayState {
            pending_ready: 0,
            status: TxStatus::Idle,
            transaction_started: None,
        }
    }
}

impl RelayState {
    /// A client message is being sent to the server.
    pub fn on_frontend(&mut self, kind: Frontend, now: Instant) {
        if kind.expects_ready() {
            self.pending_ready += 1;
        }
        if self.transaction_started.is_none() && !matches!(kind, Frontend::Terminate) {
            self.transaction_started = Some(now);
        }
    }

    /// A server message is being sent to the client.
    pub fn on_backend(&mut self, kind: Backend, status: Option<TxStatus>, now: Instant) -> Event {
        if kind != Backend::ReadyForQuery {
            return Event::None;
        }
        self.pending_ready = self.pending_ready.saturating_sub(1);
        if let Some(status) = status {
            self.status = status;
        }
        if self.status == TxStatus::Idle && self.pending_ready == 0 {
            if let Some(started) = self.transaction_started.take() {
                return Event::TransactionEnded(now.saturating_duration_since(started));
            }
        }
        Event::None
    }

    /// Nothing in flight and no open transaction: the server connection could be released.
    pub fn is_idle(&self) -> bool {
        self.pending_ready == 0 && self.status == TxStatus::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn single_statement_is_a_transaction() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        s.on_frontend(Frontend::Query, t0);
        assert!(!s.is_idle());
        let ev = s.on_backend(
            Backend::ReadyForQuery,
            Some(TxStatus::Idle),
            t0 + Duration::from_millis(5),
        );
        assert_eq!(ev, Event::TransactionEnded(Duration::from_millis(5)));
        assert!(s.is_idle());
    }

    #[test]
    fn explicit_transaction_spans_several_ready_messages() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        s.on_frontend(Frontend::Query, t0); // BEGIN
        assert_eq!(
            s.on_backend(Backend::ReadyForQuery, Some(TxStatus::InTransaction), t0),
            Event::None
        );
        assert!(!s.is_idle());
        s.on_frontend(Frontend::Query, t0); // bad statement
        s.on_backend(Backend::ErrorResponse, None, t0);
        s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Failed), t0);
        assert_eq!(s.status, TxStatus::Failed);
        s.on_frontend(Frontend::Query, t0); // ROLLBACK
        let ev = s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), t0);
        assert!(matches!(ev, Event::TransactionEnded(_)));
        assert!(s.is_idle());
    }

    #[test]
    fn pipelined_syncs_keep_the_session_busy_until_the_last_answer() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        for kind in [
            Frontend::Parse,
            Frontend::Bind,
            Frontend::Execute,
            Frontend::Sync,
        ] {
            s.on_frontend(kind, t0);
        }
        for kind in [Frontend::Bind, Frontend::Execute, Frontend::Sync] {
            s.on_frontend(kind, t0);
        }
        assert_eq!(s.pending_ready, 2);
        assert_eq!(
            s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), t0),
            Event::None
        );
        assert!(!s.is_idle());
        assert!(matches!(
            s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), t0),
            Event::TransactionEnded(_)
        ));
        assert!(s.is_idle());
    }

    #[test]
    fn flush_and_describe_expect_no_ready() {
        let mut s = RelayState::default();
        s.on_frontend(Frontend::Describe, Instant::now());
        s.on_frontend(Frontend::Flush, Instant::now());
        assert_eq!(s.pending_ready, 0);
    }
}

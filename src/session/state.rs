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
    /// Extended-protocol messages were sent with no Sync after them: the server may be
    /// running a statement whose end nobody will be told about.
    pub unsynced: bool,
    /// Syncs sent since the last Execute/Query. If that Execute turns out to be
    /// COPY FROM STDIN, the server swallows them (copy-in mode ignores Sync and Flush).
    syncs_since_execute: usize,
    /// The server is in copy-in mode and the client has not ended it yet.
    copy_in: bool,
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
            unsynced: false,
            syncs_since_execute: 0,
            copy_in: false,
        }
    }
}

impl RelayState {
    /// A client message is being sent to the server.
    pub fn on_frontend(&mut self, kind: Frontend, now: impl FnOnce() -> Instant) {
        match kind {
            Frontend::Query | Frontend::FunctionCall => {
                self.pending_ready += 1;
                self.syncs_since_execute = 0;
                self.unsynced = false;
            }
            Frontend::Sync => {
                // In copy-in mode the server ignores Sync: no ReadyForQuery will follow.
                if !self.copy_in {
                    self.pending_ready += 1;
                    self.syncs_since_execute += 1;
                }
                self.unsynced = false;
            }
            Frontend::Execute => {
                self.syncs_since_execute = 0;
                self.unsynced = true;
            }
            Frontend::Parse | Frontend::Bind | Frontend::Describe | Frontend::Close => {
                self.unsynced = true;
            }
            Frontend::CopyDone | Frontend::CopyFail => self.copy_in = false,
            Frontend::Flush
            | Frontend::CopyData
            | Frontend::Terminate
            | Frontend::Password
            | Frontend::Other(_) => {}
        }
        if self.transaction_started.is_none() && !matches!(kind, Frontend::Terminate) {
            self.transaction_started = Some(now());
        }
    }

    /// A server message is being sent to the client.
    pub fn on_backend(
        &mut self,
        kind: Backend,
        status: Option<TxStatus>,
        now: impl FnOnce() -> Instant,
    ) -> Event {
        if kind == Backend::CopyInResponse {
            // Syncs sent right after the COPY's Execute were swallowed by copy-in mode.
            self.pending_ready = self.pending_ready.saturating_sub(self.syncs_since_execute);
            self.syncs_since_execute = 0;
            self.copy_in = true;
        }
        if kind != Backend::ReadyForQuery {
            return Event::None;
        }
        self.pending_ready = self.pending_ready.saturating_sub(1);
        if let Some(status) = status {
            self.status = status;
        }
        if self.status == TxStatus::Idle && self.pending_ready == 0 {
            if let Some(started) = self.transaction_started.take() {
                return Event::TransactionEnded(now().saturating_duration_since(started));
            }
        }
        Event::None
    }

    /// Nothing in flight and no open transaction: the server connection could be released.
    pub fn is_idle(&self) -> bool {
        self.pending_ready == 0 && self.status == TxStatus::Idle && !self.unsynced && !self.copy_in
    }

    /// Nothing is owed by the server and nothing runs unsynced: the connection can be
    /// reset with a query (possibly after ROLLBACK).
    pub fn is_settled(&self) -> bool {
        self.pending_ready == 0 && !self.unsynced && !self.copy_in
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
        s.on_frontend(Frontend::Query, || t0);
        assert!(!s.is_idle());
        let ev = s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || {
            t0 + Duration::from_millis(5)
        });
        assert_eq!(ev, Event::TransactionEnded(Duration::from_millis(5)));
        assert!(s.is_idle());
    }

    #[test]
    fn explicit_transaction_spans_several_ready_messages() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        s.on_frontend(Frontend::Query, || t0); // BEGIN
        assert_eq!(
            s.on_backend(Backend::ReadyForQuery, Some(TxStatus::InTransaction), || t0),
            Event::None
        );
        assert!(!s.is_idle());
        s.on_frontend(Frontend::Query, || t0); // bad statement
        s.on_backend(Backend::ErrorResponse, None, || t0);
        s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Failed), || t0);
        assert_eq!(s.status, TxStatus::Failed);
        s.on_frontend(Frontend::Query, || t0); // ROLLBACK
        let ev = s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || t0);
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
            s.on_frontend(kind, || t0);
        }
        for kind in [Frontend::Bind, Frontend::Execute, Frontend::Sync] {
            s.on_frontend(kind, || t0);
        }
        assert_eq!(s.pending_ready, 2);
        assert_eq!(
            s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || t0),
            Event::None
        );
        assert!(!s.is_idle());
        assert!(matches!(
            s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || t0),
            Event::TransactionEnded(_)
        ));
        assert!(s.is_idle());
    }

    #[test]
    fn extended_copy_in_swallows_the_sync_after_execute() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        // tokio-postgres copy_in: Bind, Execute, Sync; then data, CopyDone, Sync.
        for kind in [
            Frontend::Parse,
            Frontend::Bind,
            Frontend::Execute,
            Frontend::Sync,
        ] {
            s.on_frontend(kind, || t0);
        }
        assert_eq!(s.pending_ready, 1);
        s.on_backend(Backend::CopyInResponse, None, || t0);
        assert_eq!(s.pending_ready, 0);
        assert!(!s.is_idle(), "copy in progress");
        s.on_frontend(Frontend::CopyData, || t0);
        s.on_frontend(Frontend::Flush, || t0);
        s.on_frontend(Frontend::Sync, || t0); // ignored by the server while copying
        s.on_frontend(Frontend::CopyDone, || t0);
        s.on_frontend(Frontend::Sync, || t0);
        assert_eq!(s.pending_ready, 1);
        s.on_backend(Backend::CommandComplete, None, || t0);
        s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || t0);
        assert!(s.is_idle());
    }

    #[test]
    fn simple_copy_in_counts_one_ready() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        s.on_frontend(Frontend::Query, || t0);
        s.on_backend(Backend::CopyInResponse, None, || t0);
        assert_eq!(s.pending_ready, 1);
        s.on_frontend(Frontend::CopyData, || t0);
        s.on_frontend(Frontend::CopyDone, || t0);
        s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || t0);
        assert!(s.is_idle());
    }

    #[test]
    fn execute_without_sync_is_unsettled() {
        let t0 = Instant::now();
        let mut s = RelayState::default();
        for kind in [
            Frontend::Parse,
            Frontend::Bind,
            Frontend::Execute,
            Frontend::Flush,
        ] {
            s.on_frontend(kind, || t0);
        }
        assert_eq!(s.pending_ready, 0);
        assert!(!s.is_settled());
        assert!(!s.is_idle());
        s.on_frontend(Frontend::Sync, || t0);
        s.on_backend(Backend::ReadyForQuery, Some(TxStatus::Idle), || t0);
        assert!(s.is_settled() && s.is_idle());
    }

    #[test]
    fn flush_and_describe_expect_no_ready() {
        let mut s = RelayState::default();
        s.on_frontend(Frontend::Describe, Instant::now);
        s.on_frontend(Frontend::Flush, Instant::now);
        assert_eq!(s.pending_ready, 0);
    }
}

//! The proxy's stop signal. Every session waits for it in its relay loop, which polls it
//! once or twice per transaction: a poll is an atomic load, and a waker registration only
//! when the task's waker is not the one registered already (a `watch` channel's
//! `changed()` takes the channel's lock at every poll).

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::task::AtomicWaker;

/// Fired once, when the proxy starts shutting down; never reset.
#[derive(Debug, Default)]
pub struct Shutdown {
    fired: AtomicBool,
    next_id: AtomicU64,
    /// The waker of each listener, woken when the signal fires.
    listeners: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Fires the signal and wakes every listener.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for waker in listeners.values() {
            waker.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// A handle that can wait for the signal; it stops being woken when dropped.
    pub fn listen(self: &Arc<Shutdown>) -> Listener {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waker = Arc::new(AtomicWaker::new());
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&waker));
        Listener {
            shutdown: Arc::clone(self),
            id,
            waker,
            registered: None,
        }
    }
}

/// One waiter on the stop signal. In declaration order (`repr(C)`): what each poll reads
/// first, together.
#[derive(Debug)]
#[repr(C)]
pub struct Listener {
    shutdown: Arc<Shutdown>,
    /// The waker last registered: registered again only when the task's differs.
    registered: Option<Waker>,
    id: u64,
    waker: Arc<AtomicWaker>,
}

impl Listener {
    pub fn is_fired(&self) -> bool {
        self.shutdown.is_fired()
    }

    /// Ready once the signal has fired. The waker is registered before the flag is read,
    /// so a `fire` at any moment is either seen now or wakes the task. A waker registered
    /// before stays registered until `fire` takes it (and then the flag is set).
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_fired() {
            return Poll::Ready(());
        }
        let waker = cx.waker();
        if !self.registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker.register(waker);
            self.registered = Some(waker.clone());
        }
        match self.is_fired() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Completes once the signal has fired (at once if it already has).
    pub async fn fired(&mut self) {
        poll_fn(|cx| self.poll_fired(cx)).await
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_every_waiting_listener_and_later_ones_see_it_fired() {
        let shutdown = Shutdown::new();
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let mut listener = shutdown.listen();
                tokio::spawn(async move { listener.fired().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiting.iter().all(|task| !task.is_finished()));
        shutdown.fire();
        for task in waiting {
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .expect("a waiting listener was not woken")
                .unwrap();
        }
        let mut late = shutdown.listen();
        assert!(late.is_fired());
        tokio::time::timeout(Duration::from_secs(1), late.fired())
            .await
            .expect("a listener made after firing waits");
    }

    /// A listener polled from another task (another waker) wakes that task, not the first.
    #[test]
    fn the_last_task_to_poll_is_woken() {
        use futures::task::{waker, ArcWake};
        use std::sync::atomic::AtomicUsize;
        #[derive(Default)]
        struct Count(AtomicUsize);
        impl ArcWake for Count {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let shutdown = Shutdown::new();
        let mut listener = shutdown.listen();
        for count in [&first, &first, &second] {
            let waker = waker(Arc::clone(count));
            let poll = listener.poll_fired(&mut Context::from_waker(&waker));
            assert!(poll.is_pending());
        }
        shutdown.fire();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        let waker = waker(Arc::clone(&first));
        assert!(listener
            .poll_fired(&mut Context::from_waker(&waker))
            .is_ready());
    }

    #[test]
    fn dropped_listeners_are_forgotten() {
        let shutdown = Shutdown::new();
        let kept = shutdown.listen();
        drop(shutdown.listen());
        drop(shutdown.listen());
        let count = shutdown.listeners.lock().unwrap().len();
        assert_eq!(count, 1);
        drop(kept);
        assert!(shutdown.listeners.lock().unwrap().is_empty());
    }
}

//! One stop signal for every part of the agent: the signal handler, the poller, the sniff
//! thread, the file watcher, the state writer, the control socket and the HTTP server all
//! watch the same token, and any of them may pull it (a signal, a thread that ended or
//! panicked, a server that failed).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use crossbeam_channel::{Receiver, Sender};

/// The token; clones share it.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

struct Inner {
    triggered: AtomicBool,
    /// Dropped on trigger: its receivers become ready, which wakes every `select!` on them.
    closer: Mutex<Option<Sender<()>>>,
    closed: Receiver<()>,
    /// Wakes async waiters.
    notify: tokio::sync::Notify,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (closer, closed) = crossbeam_channel::bounded(0);
        Self(Arc::new(Inner {
            triggered: AtomicBool::new(false),
            closer: Mutex::new(Some(closer)),
            closed,
            notify: tokio::sync::Notify::new(),
        }))
    }

    /// Asks everything to stop. Idempotent.
    pub fn trigger(&self) {
        if self.0.triggered.swap(true, Ordering::SeqCst) {
            return;
        }
        drop(
            self.0
                .closer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        self.0.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::SeqCst)
    }

    /// A channel that becomes ready (disconnected) when the token is triggered, for
    /// `crossbeam_channel::select!`.
    pub fn channel(&self) -> &Receiver<()> {
        &self.0.closed
    }

    /// Completes when the token is triggered.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_trigger_wakes_blocking_and_async_waiters() {
        let token = Shutdown::new();
        let blocking = {
            let token = token.clone();
            std::thread::spawn(move || {
                crossbeam_channel::select! {
                    recv(token.channel()) -> _ => true,
                    default(Duration::from_secs(10)) => false,
                }
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let waiter = {
            let token = token.clone();
            runtime.spawn(async move { token.wait().await })
        };
        assert!(!token.is_triggered());
        token.trigger();
        token.trigger();
        assert!(
            blocking.join().unwrap(),
            "the blocking waiter was not woken"
        );
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the async waiter was not woken")
                .unwrap();
        });
        // A waiter that comes late returns at once.
        runtime.block_on(token.wait());
    }
}

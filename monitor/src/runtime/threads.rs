//! The agent's threads: each one started here pulls the shutdown token when it ends, also when
//! it panics, so that no thread's failure goes unnoticed; the caller joins them all with one
//! deadline and learns which panicked and why.

use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::shutdown::Shutdown;

/// A thread that died by panicking, and what it said.
#[derive(Debug)]
pub struct ThreadPanic {
    pub thread: &'static str,
    pub message: String,
}

/// A thread of the agent.
pub struct Worker<T> {
    name: &'static str,
    handle: JoinHandle<T>,
}

/// Pulls the token when dropped: at the end of the thread that owns it, also when it unwinds.
struct TriggerOnExit(Shutdown);

impl Drop for TriggerOnExit {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// Starts `body` on a thread named `name`; when it returns or panics, `shutdown` is pulled.
pub fn spawn<T: Send + 'static>(
    name: &'static str,
    shutdown: &Shutdown,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Worker<T>> {
    let on_exit = TriggerOnExit(shutdown.clone());
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _on_exit = on_exit;
            body()
        })?;
    Ok(Worker { name, handle })
}

/// How a worker ended.
#[derive(Debug)]
pub enum Ended<T> {
    Returned(T),
    Panicked(ThreadPanic),
    /// Still running at the deadline (stuck in a system call): left behind.
    Running(&'static str),
}

impl<T> Worker<T> {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits for the thread until `deadline`.
    pub fn join_by(self, deadline: Instant) -> Ended<T> {
        while !self.handle.is_finished() {
            if Instant::now() >= deadline {
                return Ended::Running(self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match self.handle.join() {
            Ok(value) => Ended::Returned(value),
            Err(payload) => Ended::Panicked(ThreadPanic {
                thread: self.name,
                message: panic_message(payload.as_ref()),
            }),
        }
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_pulls_the_token_and_is_reported_with_its_message() {
        let token = Shutdown::new();
        let worker = spawn("doomed", &token, || -> u32 { panic!("out of luck") }).unwrap();
        let ended = worker.join_by(Instant::now() + Duration::from_secs(10));
        assert!(token.is_triggered());
        match ended {
            Ended::Panicked(p) => {
                assert_eq!(p.thread, "doomed");
                assert_eq!(p.message, "out of luck");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stuck_thread_is_left_at_the_deadline() {
        let token = Shutdown::new();
        let (_keep, stuck) = crossbeam_channel::bounded::<()>(0);
        let worker = spawn("stuck", &token, move || stuck.recv().is_ok()).unwrap();
        let started = Instant::now();
        let ended = worker.join_by(started + Duration::from_millis(200));
        assert!(matches!(ended, Ended::Running("stuck")), "{ended:?}");
        assert!(!token.is_triggered());
    }
}

//! SIGINT and SIGTERM.
//!
//! A thread of its own listens for them, so that a signal is seen even while the command's
//! runtime is busy or blocked (a full stdout pipe). The first signal is handed to the command
//! through [`Interrupt`]; `produce` and `consume` then stop reading, abort an open transaction or
//! leave their group, report, and exit with [`Signal::exit_code`]. If that takes longer than
//! [`GRACE`], or a second signal arrives, the process exits at once with the same code. Commands
//! without anything to clean up exit at once on the first signal.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long `produce` and `consume` have to stop after the first signal before kw exits anyway.
pub const GRACE: Duration = Duration::from_secs(5);

/// The part of [`GRACE`] that waiting on the cluster may use (aborting a transaction, waiting for
/// acknowledgements, leaving a group); the rest is left for the report.
pub const CLEANUP: Duration = Duration::from_secs(3);

/// A signal that stops kw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    /// 128 + the signal's number, as a shell reports a process the signal killed.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Int => 130,
            Self::Term => 143,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT",
            Self::Term => "SIGTERM",
        }
    }
}

/// The first signal received (and when), as the command sees it. Cheap to clone.
#[derive(Clone)]
pub struct Interrupt(watch::Receiver<Option<(Signal, Instant)>>);

impl Interrupt {
    /// Starts listening for SIGINT and SIGTERM, and returns once the handlers are in place.
    /// `graceful`: whether the command stops by itself on the first signal (within [`GRACE`]);
    /// otherwise the first signal exits at once.
    pub fn install(graceful: bool) -> std::io::Result<Self> {
        let (tx, rx) = watch::channel(None);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        std::thread::Builder::new().name("kw-signals".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let first = next(&mut int, &mut term).await;
                let _ = tx.send(Some((first, Instant::now())));
                if graceful {
                    tokio::select! {
                        again = next(&mut int, &mut term) => {
                            eprintln!("kw: {} again: stopping at once", again.name());
                        }
                        () = tokio::time::sleep(GRACE) => {
                            eprintln!("kw: not stopped {} s after {}: stopping at once", GRACE.as_secs(), first.name());
                        }
                    }
                }
                std::process::exit(i32::from(first.exit_code()));
            });
        })?;
        ready_rx.recv().map_err(|_| std::io::Error::other("the signal thread stopped"))??;
        Ok(Self(rx))
    }

    /// The first signal, if one arrived.
    pub fn received(&self) -> Option<Signal> {
        self.0.borrow().map(|(s, _)| s)
    }

    /// When waiting on the cluster must end after a signal: [`CLEANUP`] after it (far in the
    /// future if none arrived).
    pub fn cleanup_deadline(&self) -> tokio::time::Instant {
        match *self.0.borrow() {
            Some((_, at)) => tokio::time::Instant::from_std(at + CLEANUP),
            None => tokio::time::Instant::now() + Duration::from_secs(86_400 * 365),
        }
    }

    /// Waits for the first signal (returns at once if one came already). Cancel-safe.
    pub async fn wait(&self) -> Signal {
        let mut rx = self.0.clone();
        loop {
            if let Some((s, _)) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                // The listener is gone: no signal will come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `work` to its end while no signal has arrived; once one has (before or during),
    /// only until [`cleanup_deadline`](Self::cleanup_deadline): `None` if it was cut off then.
    pub async fn bounded<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        if self.received().is_none() {
            tokio::select! {
                biased;
                v = &mut work => return Some(v),
                _ = self.wait() => {}
            }
        }
        tokio::time::timeout_at(self.cleanup_deadline(), work).await.ok()
    }

    /// Runs `work` unless a signal comes first: `Err(signal)` then, and `work` is dropped.
    pub async fn guard<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, Signal> {
        if let Some(s) = self.received() {
            return Err(s);
        }
        let mut work = std::pin::pin!(work);
        // Most work is done at its first poll (a send with room in the buffer): the signal is
        // watched for (a receiver, a registration) only for work that has to wait.
        let first = std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        });
        if let Some(v) = first.await {
            return Ok(v);
        }
        tokio::select! {
            biased;
            s = self.wait() => Err(s),
            v = work => Ok(v),
        }
    }
}

async fn next(int: &mut tokio::signal::unix::Signal, term: &mut tokio::signal::unix::Signal) -> Signal {
    tokio::select! {
        _ = int.recv() => Signal::Int,
        _ = term.recv() => Signal::Term,
    }
}

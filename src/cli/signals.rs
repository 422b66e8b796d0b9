//! The signals that stop a command: Ctrl-C (SIGINT), and SIGTERM and SIGHUP, which CI
//! runners, `timeout`, service managers and a closed terminal send (issue 10). All three
//! mean the same: the first asks for a stop at a safe point, the next one stops at once.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listens for the stopping signals from the moment it is made, so that none is missed
/// between one wait and the next.
pub struct Interrupts {
    listeners: Vec<(Signal, &'static str)>,
}

impl Interrupts {
    pub fn new() -> Self {
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ];
        let listeners = kinds
            .into_iter()
            .filter_map(|(kind, name)| match signal(kind) {
                Ok(listener) => Some((listener, name)),
                Err(e) => {
                    // The signal then keeps its default action: it ends the process.
                    tracing::warn!("cannot listen for {name}: {e}");
                    None
                }
            })
            .collect();
        Interrupts { listeners }
    }

    /// The next stopping signal's name (`SIGTERM`); never returns when none can be heard.
    pub async fn next(&mut self) -> &'static str {
        let waits = self.listeners.iter_mut().map(|(listener, name)| {
            let name = *name;
            Box::pin(async move {
                listener.recv().await;
                name
            })
        });
        let waits: Vec<_> = waits.collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        futures_util::future::select_all(waits).await.0
    }
}

impl Default for Interrupts {
    fn default() -> Self {
        Interrupts::new()
    }
}

/// Completes at the first SIGINT, SIGTERM or SIGHUP: for a wait that one signal cancels.
pub async fn interrupted() -> &'static str {
    Interrupts::new().next().await
}

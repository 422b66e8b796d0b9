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

/// What a command that lost its reader exits with: what a shell reports for a program
/// SIGPIPE ended (128 + 13).
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// `immune history web | head -1`: Rust ignores SIGPIPE, so once the reader is gone
/// `println!` fails with EPIPE and panics. That is no bug to report: this hook keeps
/// such a panic quiet, the unwinding releases the state lock on its way out, and `main`
/// exits with [`BROKEN_PIPE_EXIT`] (see [`is_broken_pipe`]). Any other panic is reported
/// as before.
pub fn quiet_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload_as_str().is_some_and(is_broken_pipe) {
            report(info);
        }
    }));
}

/// Whether a panic's message is `print!`'s failure on a closed pipe.
pub fn is_broken_pipe(message: &str) -> bool {
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

/// The message of a panic caught by `catch_unwind`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_print_to_a_closed_pipe_is_a_broken_pipe() {
        // The words `print!` panics with (std's `print_to`) on EPIPE.
        let epipe = std::io::Error::from_raw_os_error(32);
        assert!(is_broken_pipe(&format!(
            "failed printing to stdout: {epipe}"
        )));
        assert!(is_broken_pipe(
            "failed printing to stderr: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_pipe(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_broken_pipe("Broken pipe while reading the state"));

        let caught =
            std::panic::catch_unwind(|| panic!("{}", "failed printing to stdout: x")).unwrap_err();
        assert_eq!(
            panic_message(caught.as_ref()),
            Some("failed printing to stdout: x")
        );
    }
}

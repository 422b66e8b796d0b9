use clap::Parser;
use immune::cli::{self, signals, Cli, Success};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    signals::quiet_on_broken_pipe();
    // immune's own logs, and (quieter unless asked) the AWS SDK's.
    let (level, others) = match (cli.quiet, cli.verbose) {
        (true, _) => ("error", "error"),
        (false, 0) => ("warn", "error"),
        (false, 1) => ("info", "warn"),
        _ => ("debug", "debug"),
    };
    // Colour only on a terminal, and never with --no-color or NO_COLOR.
    let color = !cli.no_color
        && std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMMUNE_LOG")
                .unwrap_or_else(|_| format!("immune={level},{others}").into()),
        )
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(cli::run(cli))
    }));
    // A prompt still reading the terminal after Ctrl-C must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    let result = match result {
        Ok(result) => result,
        Err(panic)
            if signals::panic_message(panic.as_ref()).is_some_and(signals::is_broken_pipe) =>
        {
            return ExitCode::from(signals::BROKEN_PIPE_EXIT)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    match result {
        Ok(Success::Done) => ExitCode::SUCCESS,
        Ok(Success::Changes) => ExitCode::from(2),
        Ok(Success::LockedOnly) => ExitCode::from(4),
        Err(e) => {
            // Outside the unwind guard: a closed stderr must not turn into a panic.
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

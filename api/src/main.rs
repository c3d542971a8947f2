//! `inboxd`: the one binary. See `inboxd --help`.

use clap::Parser;

/// glibc's allocator spends a tenth of the server's CPU under load on locks and
/// consolidation (measured with perf); mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal (production sets the environment itself).
    let _ = dotenvy::dotenv();
    api::telemetry::init();
    let cli = api::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "inboxd failed");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

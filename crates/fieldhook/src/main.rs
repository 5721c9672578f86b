//! The `fieldhook` binary: parses the command line and hands over to the
//! library.

use clap::Parser;

/// See Cargo.toml: the allocator was a measurable share of the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = fieldhook::cli::Cli::parse();
    match fieldhook::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fieldhook: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

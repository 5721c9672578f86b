//! The `fieldhook` binary: parses the command line and hands over to the
//! library.

use clap::Parser;

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

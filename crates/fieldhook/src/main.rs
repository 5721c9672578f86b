//! The `fieldhook` binary: parses the command line and hands over to the
//! library.

use clap::Parser;

/// See Cargo.toml: the allocator was a measurable share of the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    keep_freed_c_heap();
    let cli = fieldhook::cli::Cli::parse();
    match fieldhook::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fieldhook: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How much free memory glibc's malloc keeps at the top of a heap before it
/// hands it back to the kernel (its default is 128 KiB).
///
/// Only C code allocates through glibc here: SQLite (Rust's allocations go
/// to mimalloc). A SQLite reader empties its page cache whenever another
/// connection has committed, so every claim frees its pages and allocates
/// them again. With the default, each claim's pages went back to the kernel
/// and came back as fresh zeroed pages: in a drain, some 12,700 page faults
/// a second on the claims thread, nearly a third of its CPU time
/// (docs/benchmarks.md, twenty-fourth round). What stays kept is at most
/// what SQLite had in use: its caches are a few MiB (4 for the writer, 2
/// per reader), well within this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const C_HEAP_KEPT: libc::c_int = 16 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_c_heap() {
    // SAFETY: mallopt sets one of malloc's parameters under malloc's own
    // lock; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, C_HEAP_KEPT);
    }
}

/// Elsewhere the C library's allocator is left as it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_c_heap() {}

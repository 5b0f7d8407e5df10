//! The `keyward` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc returns freed memory to the system and fragments less than glibc's allocator under
/// a burst of many small allocations across threads (see the peak RSS figures of `make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = keyward::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyward: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

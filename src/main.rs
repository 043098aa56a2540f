//! The `portcullis` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc: per-thread caches suit a proxy's many short-lived, same-sized allocations
/// (request heads, header maps, boxed futures) better than the system allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = portcullis::cli::Cli::parse();
    portcullis::cli::execute(cli)
}

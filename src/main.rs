//! The `portcullis` binary: parse the command line, start logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = portcullis::cli::Cli::parse();
    portcullis::cli::init_logging();
    portcullis::cli::execute(cli)
}

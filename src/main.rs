//! Parses arguments, runs the command, and turns its result into an exit code.

fn main() {
    std::process::exit(glci::cli::main());
}

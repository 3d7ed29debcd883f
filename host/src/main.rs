//! The `wharf` command.

fn main() -> std::process::ExitCode {
    wharf::cli::main()
}

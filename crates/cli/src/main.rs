//! The `dstack` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    dstack_cli::main_with_args(std::env::args_os())
}

//! The `dstack` binary: parses arguments and hands over to the library.

/// jemalloc instead of glibc's malloc, for Rust and, through the unprefixed `malloc`/`free`
/// symbols, for the bundled SQLite too. The server's rows are allocated on a SQLite
/// connection's thread and freed on the async runtime's: glibc's arenas take a lock for such
/// a cross-thread free, and the two threads woke each other through it for every column of
/// every row (a runs listing spent a third of its CPU in malloc and futex wake-ups).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    dstack_cli::main_with_args(std::env::args_os())
}

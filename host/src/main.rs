//! The `usage-sync` command: a thin binary over the library.

fn main() -> std::process::ExitCode {
    usage_sync::main()
}

fn main() -> std::process::ExitCode {
    usage_sync::cli::main()
}

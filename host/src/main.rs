//! The `usage-sync` command: a thin binary over the library.

// mimalloc rather than glibc's malloc, whose own functions were 8 % of a
// sync's CPU samples: about 7 % less CPU a row (BENCHMARKS.md).
// Without transparent huge pages, so peak RSS stays where glibc's was.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    usage_sync::main()
}

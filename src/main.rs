#![forbid(unsafe_code)]

/// mimalloc rather than the system allocator: the proxy path allocates small, short-lived
/// buffers (header names and values, per-request state) on every request, where glibc's malloc
/// showed up as the largest single cost in profiles of the authenticated path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}

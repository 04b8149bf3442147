#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}

//! The `roost` binary: everything lives in the library; see `roost::cli`.

fn main() -> std::process::ExitCode {
    roost::cli::main()
}

//! The `roost` binary: everything lives in the library; see `roost::cli`.

// mimalloc: measured in `make bench` (see the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    roost::cli::main()
}

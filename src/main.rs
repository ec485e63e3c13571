//! The `roost` binary: everything lives in the library; see `roost::cli`.

// mimalloc: about 16 % less CPU per request than the system allocator (see
// doc/performance.md), once told to give memory back promptly (below).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    // From the mimalloc (v3) linked in by `libmimalloc-sys`; option numbers are its
    // `mi_option_e` enum, fixed by the locked version.
    fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
}
const MI_OPTION_ARENA_EAGER_COMMIT: std::os::raw::c_int = 4;
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

fn main() -> std::process::ExitCode {
    // Commit arena memory as it is used and return freed pages at once: RSS 22 -> 17 MB under
    // the benchmark load, CPU per request within noise.
    // SAFETY: setting documented mimalloc options; no memory is touched.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
    roost::cli::main()
}

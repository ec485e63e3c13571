//! The keeper's saves through real pools and a real directory: writes are atomic, the keeper
//! reads what another writer wrote, the hand-over file of an upgrade is the one taken, a failing
//! write leaves no temporary file.

use super::*;
use crate::ops::state_file::tests::{pools, record};

fn phases() -> broadcast::Receiver<ExecutionPhase> {
    broadcast::channel(1).1
}

#[test]
fn writes_are_atomic_and_the_keeper_reads_what_others_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let old = pools("10.0.0.1:80, 10.0.0.2:80");
    record(&old[0], "k", 1);
    let first = StateKeeper::start(dir.path(), old.clone(), phases(), None);
    first.save(false);
    let new = pools("10.0.0.1:80, 10.0.0.2:80");
    let second = StateKeeper::start(dir.path(), new.clone(), phases(), None);
    assert_eq!(
        &*new[0].state().table_entry(b"k").unwrap().backend,
        "10.0.0.2:80"
    );
    // The old process learns more and writes last (as it does when it exits after an
    // upgrade); the new one merges it at its next save.
    record(&old[0], "late", 0);
    std::thread::sleep(Duration::from_millis(20)); // a distinct modification time
    first.save(false);
    second.save(false);
    assert!(new[0].state().table_entry(b"late").is_some());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names,
        [std::ffi::OsString::from(FILE_NAME)],
        "no temporary file left"
    );
}

#[test]
fn the_new_process_of_an_upgrade_takes_the_hand_over_file_not_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let old_pools = pools("10.0.0.1:80, 10.0.0.2:80");
    record(&old_pools[0], "saved", 0);
    let old = StateKeeper::start(dir.path(), old_pools.clone(), phases(), None);
    old.save(false);
    // A periodic save is not a hand-over: waiting for one finds none, and says so.
    let waiting = pools("10.0.0.1:80, 10.0.0.2:80");
    let keeper = StateKeeper {
        path: dir.path().join(FILE_NAME),
        pools: waiting.clone(),
        seen: Mutex::new(None),
        phases: Mutex::new(None),
        failing: AtomicBool::new(false),
    };
    keeper.take_handover(Handover::before(dir.path()), Duration::from_millis(100));
    assert!(waiting[0].state().table_entry(b"saved").is_none());

    // The key the old process saw after its last periodic save comes with the hand-over.
    let handover = Handover::before(dir.path());
    record(&old_pools[0], "just-seen", 1);
    std::thread::sleep(Duration::from_millis(20)); // a distinct modification time
    old.save(true);
    let new = pools("10.0.0.2:80, 10.0.0.1:80, 10.0.0.3:80");
    StateKeeper::start(dir.path(), new.clone(), phases(), Some(handover));
    let entry = new[0].state().table_entry(b"just-seen").unwrap();
    assert_eq!(&*entry.backend, "10.0.0.2:80");
    assert!(new[0].state().table_entry(b"saved").is_some());
}

#[test]
fn a_failing_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file goes: it can be neither read nor replaced.
    std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
    std::fs::write(dir.path().join(FILE_NAME).join("x"), b"x").unwrap();
    let p = pools("10.0.0.1:80");
    record(&p[0], "k", 0);
    let keeper = StateKeeper::start(dir.path(), p, phases(), None);
    keeper.save(false);
    keeper.save(false);
    assert!(keeper.failing.load(Ordering::Relaxed));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(FILE_NAME)]);
}

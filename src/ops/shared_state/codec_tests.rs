//! The Redis value codec: the wire shape, the clock conversions, the entry keys.

use super::*;
use crate::policy::sticky::Change;
use std::time::Duration;
#[test]
fn the_wire_shape_is_the_state_files_entry_and_what_sharing_adds() {
    let clock = Clock::now();
    let change = Change {
        key: b"abc".to_vec(),
        backend: "10.0.0.1:80".into(),
        idle: Duration::from_millis(5),
        age: Duration::from_millis(1500),
        from: Some("10.0.0.2:80".into()),
    };
    let wire = encode("fp", "host/1/2", &change, &clock);
    let text = serde_json::to_string(&wire).unwrap();
    assert!(
        text.contains(r#""key":"abc","backend":"10.0.0.1:80","idle_ms":5,"age_ms":1500"#),
        "{text}"
    );
    assert!(text.contains(r#""from":"10.0.0.2:80""#), "{text}");
    assert_eq!(wire.since_ms, clock.unix_ms - 1500);
    let back: Wire = serde_json::from_str(&text).unwrap();
    assert_eq!(back, wire);
    // A new key carries no `from`.
    let new = Change {
        from: None,
        ..change
    };
    let text = serde_json::to_string(&encode("fp", "o", &new, &clock)).unwrap();
    assert!(!text.contains("from"), "{text}");
}

#[test]
fn clock_conversions_round_trip_and_clamp_the_future() {
    let clock = Clock::now();
    let ms = clock.unix_ms_ago(Duration::from_secs(3));
    let at = clock.instant_at(ms);
    assert_eq!(clock.instant - at, Duration::from_secs(3));
    assert_eq!(clock.instant_at(clock.unix_ms + 10_000), clock.instant);
}

#[test]
fn entry_keys_carry_prefix_service_and_key() {
    assert_eq!(
        entry_key("roost:", "fp", b"k 1"),
        b"roost:sticky:fp:k 1".to_vec()
    );
}

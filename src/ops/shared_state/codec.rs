//! The shared state's Redis side as data: the Lua script that applies the conflict rule, the
//! values written to Redis and published on the channels (sticky entries, operator states,
//! WPS jobs), their keys, and the clock that converts the tables' `Instant`s to Unix ms.

use crate::ops::state_file::{Saved, SavedBackendState, SavedJobEntry};
use crate::policy::sticky::Change;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The conflict rule and the write, atomically, for a batch of entries. `KEYS[i]`: an entry's
/// Redis key; `ARGV[1]`: the channel; then five per entry: the value, its backend, `since_ms`,
/// `from` (empty: not a move) and the TTL in ms. Returns, per entry, an empty string when it
/// was written (and published), or the stored value that stays (the caller takes it).
pub(super) const SCRIPT: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  local at = 1 + (i - 1) * 5
  local value, backend = ARGV[at + 1], ARGV[at + 2]
  local since, from, ttl = tonumber(ARGV[at + 3]), ARGV[at + 4], tonumber(ARGV[at + 5])
  local verdict = ''
  local cur = redis.call('GET', key)
  local stored = nil
  if cur then
    local ok, decoded = pcall(cjson.decode, cur)
    if ok and type(decoded) == 'table' then stored = decoded end
  end
  if stored and stored.backend == backend then
    -- The same entry, still active: a longer life, never a shorter one.
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
    redis.call('PUBLISH', ARGV[1], value)
  elseif stored and stored.backend ~= from and (tonumber(stored.since_ms) or 0) <= since then
    -- Recorded first elsewhere: it stays.
    verdict = cur
  else
    redis.call('SET', key, value, 'PX', ttl)
    redis.call('PUBLISH', ARGV[1], value)
  end
  out[i] = verdict
end
return out
"#;

/// An entry in Redis and on the channel: the state file's entry shape and what sharing adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Wire {
    pub(super) service: String,
    pub(super) origin: String,
    #[serde(flatten)]
    pub(super) entry: Saved,
    /// Unix ms when the key was recorded on `backend` (the conflict rule's clock).
    pub(super) since_ms: u64,
    /// A move: the backend the key left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) from: Option<String>,
}

/// An operator state in Redis and on `{prefix}state`: the state file's shape, with the
/// service and the writing instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StateWire {
    pub(super) service: String,
    pub(super) origin: String,
    #[serde(flatten)]
    pub(super) state: SavedBackendState,
}

/// A WPS job in Redis and on `{prefix}job`: the state file's shape, with the service and
/// the writing instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct JobWire {
    pub(super) service: String,
    pub(super) origin: String,
    #[serde(flatten)]
    pub(super) job: SavedJobEntry,
}

pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One moment in both clocks: converts between the tables' `Instant`s and Unix ms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) instant: Instant,
    pub(super) unix_ms: u64,
}

impl Clock {
    pub(super) fn now() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// `age` ago, in Unix ms.
    pub(super) fn unix_ms_ago(&self, age: Duration) -> u64 {
        self.unix_ms.saturating_sub(age.as_millis() as u64)
    }

    /// A Unix ms time as an `Instant` (a time ahead of this clock, another machine's skew, is
    /// now).
    pub(super) fn instant_at(&self, unix_ms: u64) -> Instant {
        let ago = Duration::from_millis(self.unix_ms.saturating_sub(unix_ms));
        self.instant.checked_sub(ago).unwrap_or(self.instant)
    }
}

/// The Redis key of `key`'s entry in `service`.
pub(super) fn entry_key(prefix: &str, service: &str, key: &[u8]) -> Vec<u8> {
    let mut k = format!("{prefix}sticky:{service}:").into_bytes();
    k.extend_from_slice(key);
    k
}

/// The value written for a change.
pub(super) fn encode(service: &str, origin: &str, change: &Change, clock: &Clock) -> Wire {
    Wire {
        service: service.to_string(),
        origin: origin.to_string(),
        entry: Saved {
            key: String::from_utf8_lossy(&change.key).into_owned(),
            backend: change.backend.to_string(),
            idle_ms: change.idle.as_millis() as u64,
            age_ms: change.age.as_millis() as u64,
        },
        since_ms: clock.unix_ms_ago(change.age),
        from: change.from.as_ref().map(|f| f.to_string()),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;

//! `hash.algorithm: nginx_hash`: the server choice of NGINX's plain `hash KEY;` directive (the
//! one without `consistent`), so that a site moving from such an NGINX keeps every key where
//! NGINX sent it. Pure: a list of weights in config order in, an index out.
//!
//! NGINX's rule (ngx_http_upstream_hash_module, non-consistent peer selection):
//! - the peers are the upstream's non-backup servers in config order, each with its weight;
//!   a `down` server stays in the list (its weight still counts) but is never chosen;
//! - try `t` (0, 1, 2, ...) computes `crc32(prefix ++ key)`, where the prefix is empty for
//!   try 0 and the decimal `t` otherwise, keeps bits 16..30 (`(crc >> 16) & 0x7fff`) and adds
//!   them to a running sum; the sum modulo the total weight falls into one server's weight
//!   span, walking the list in order;
//! - a server that is down, failed (passive `max_fails`) or already tried for this request is
//!   passed over and the next try is computed; after 21 tries NGINX gives up hashing and takes
//!   its weighted round robin over what is left ([`Pick::RoundRobin`]);
//! - an upstream with a single server skips hashing altogether (round robin over one server);
//! - an empty key is not hashed either: NGINX balances it round robin, which is what
//!   `hash.missing: round_robin` does before this module is asked.
//!
//! NGINX's retry after a failed connection continues the same sequence with the failed server
//! marked tried; asking [`NginxHash::pick`] again with that server reported unusable gives the
//! same answer, because the sequence is a function of the key alone.

/// How many tries NGINX computes before falling back to round robin (it stops once its try
/// counter exceeds 20, i.e. after the 21st unusable pick).
pub const MAX_TRIES: usize = 21;

/// The outcome of [`NginxHash::pick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Backend `index` (config order); `tries` earlier picks were unusable (0: the key's owner).
    Hashed { index: usize, tries: usize },
    /// No usable backend within [`MAX_TRIES`] picks (or a single-server upstream whose server
    /// is unusable): NGINX falls back to round robin over the usable servers.
    RoundRobin,
}

/// The weighted server list of one upstream, in config order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxHash {
    weights: Vec<u32>,
    total: u64,
}

impl NginxHash {
    /// Build from the backends' weights in config order (weights are at least 1).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<u32> = weights.into_iter().collect();
        let total = weights.iter().map(|&w| u64::from(w)).sum();
        Self { weights, total }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The backend `key` goes to when every backend is usable (`None` for an empty list).
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        match self.pick(key, |_| true) {
            Pick::Hashed { index, .. } => Some(index),
            Pick::RoundRobin => None,
        }
    }

    /// Where `key` goes given which backends are `usable` (up, and not already tried for this
    /// request).
    pub fn pick(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Pick {
        if self.total == 0 {
            return Pick::RoundRobin;
        }
        if self.weights.len() == 1 {
            // NGINX does not hash over a single server; round robin then takes it if it can.
            return if usable(0) {
                Pick::Hashed { index: 0, tries: 0 }
            } else {
                Pick::RoundRobin
            };
        }
        let mut sum: u32 = 0;
        for tries in 0..MAX_TRIES {
            sum = sum.wrapping_add(step_hash(tries, key));
            let index = self.slot(u64::from(sum) % self.total);
            if usable(index) {
                return Pick::Hashed { index, tries };
            }
        }
        Pick::RoundRobin
    }

    /// The server whose weight span holds `point` (`point < total`).
    fn slot(&self, mut point: u64) -> usize {
        for (i, &w) in self.weights.iter().enumerate() {
            let w = u64::from(w);
            if point < w {
                return i;
            }
            point -= w;
        }
        unreachable!("point is below the total weight")
    }
}

/// The 15 bits try `tries` adds to the running sum: bits 16..30 of the CRC-32 of the key, with
/// the try number in decimal in front of it from the second try on (Cache::Memcached's rehash).
fn step_hash(tries: usize, key: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    if tries > 0 {
        crc.update(tries.to_string().as_bytes());
    }
    crc.update(key);
    (crc.finalize() >> 16) & 0x7fff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first pick is `crc32(key) >> 16 & 0x7fff` modulo the total weight; computed here
    /// from the published CRC-32 check value (crc32("123456789") = 0xCBF43926).
    #[test]
    fn first_pick_is_the_crc_slot() {
        assert_eq!(step_hash(0, b"123456789"), (0xCBF4_3926u32 >> 16) & 0x7fff);
        let crc_bits = (0xCBF4_3926u32 >> 16) & 0x7fff; // 0x4bf4 = 19444
        for n in 2..9u32 {
            let table = NginxHash::new(vec![1; n as usize]);
            assert_eq!(
                table.owner(b"123456789"),
                Some((crc_bits % n) as usize),
                "{n} servers"
            );
        }
    }

    #[test]
    fn rehash_prefixes_the_try_number() {
        let mut crc = crc32fast::Hasher::new();
        crc.update(b"12abc");
        assert_eq!(step_hash(12, b"abc"), (crc.finalize() >> 16) & 0x7fff);
    }

    #[test]
    fn weights_are_spans_in_config_order() {
        let table = NginxHash::new([2, 5, 3]);
        let spans: Vec<usize> = (0..10).map(|p| table.slot(p)).collect();
        assert_eq!(spans, [0, 0, 1, 1, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn weighted_share_follows_weights() {
        let table = NginxHash::new([1, 2, 1]);
        let mut counts = [0usize; 3];
        for i in 0..40_000 {
            counts[table.owner(format!("key-{i}").as_bytes()).unwrap()] += 1;
        }
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[1]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn unusable_owner_moves_to_the_next_distinct_rehash() {
        let table = NginxHash::new([1, 1, 1]);
        let mut moved = 0;
        for i in 0..3_000 {
            let key = format!("machine-{i}");
            let owner = table.owner(key.as_bytes()).unwrap();
            match table.pick(key.as_bytes(), |j| j != owner) {
                Pick::Hashed { index, tries } => {
                    assert_ne!(index, owner);
                    assert!(tries >= 1);
                    // The retry lands exactly on the first rehash that is not the owner.
                    let mut sum = 0u32;
                    let expected = (0..MAX_TRIES)
                        .map(|t| {
                            sum += step_hash(t, key.as_bytes());
                            (u64::from(sum) % 3) as usize
                        })
                        .find(|&j| j != owner)
                        .unwrap();
                    assert_eq!(index, expected, "{key}");
                    moved += 1;
                }
                Pick::RoundRobin => panic!("{key}: two usable servers and no hashed pick"),
            }
            // Keys whose owner is usable do not move when another server is down.
            let other = (owner + 1) % 3;
            assert_eq!(
                table.pick(key.as_bytes(), |j| j != other),
                Pick::Hashed {
                    index: owner,
                    tries: 0
                }
            );
        }
        assert_eq!(moved, 3_000);
    }

    #[test]
    fn falls_back_to_round_robin_after_21_tries() {
        let table = NginxHash::new([1, 1, 1, 1]);
        assert_eq!(table.pick(b"abc", |_| false), Pick::RoundRobin);
        // With only one usable server out of many, some keys exhaust their tries.
        let big = NginxHash::new(vec![1; 40]);
        let fallbacks = (0..2_000)
            .filter(|i| big.pick(format!("k{i}").as_bytes(), |j| j == 7) == Pick::RoundRobin)
            .count();
        // P(21 misses) = (39/40)^21 ~ 0.59.
        assert!((1_000..1_400).contains(&fallbacks), "{fallbacks}");
        // A usable pick is always found at its try count, never past the limit.
        for i in 0..2_000 {
            if let Pick::Hashed { tries, index } = big.pick(format!("k{i}").as_bytes(), |j| j == 7)
            {
                assert_eq!(index, 7);
                assert!(tries < MAX_TRIES);
            }
        }
    }

    #[test]
    fn single_server_and_empty_list() {
        let one = NginxHash::new([5]);
        assert_eq!(
            one.pick(b"x", |_| true),
            Pick::Hashed { index: 0, tries: 0 }
        );
        assert_eq!(one.pick(b"x", |_| false), Pick::RoundRobin);
        let none = NginxHash::new([]);
        assert!(none.is_empty());
        assert_eq!(none.owner(b"x"), None);
    }
}

//! The Ketama ring over backend identities: NGINX's `hash $key consistent;`, point for point,
//! over the names Roost knows its backends by (an `id`, else the address as written, else an
//! SRV record's target and port).
//!
//! NGINX builds its ring from each server's name as written in the `upstream` block: the host
//! part and the port part (split at the last `:` before a run of digits) hashed as
//! `host \0 port`, then one CRC-32 point per step with the previous point's hash appended, 160
//! points per unit of weight; a key's CRC-32 lands on the first point at or after it.
//! Pingora's `pingora_ketama` computes the same, but over the resolved socket address, so a
//! backend written `wps1:8093` would be hashed by its IP: a restarted container with a new IP
//! would move its keys, and a hostname list would differ from NGINX's ring. Hashing the
//! identity keeps keys where they are as long as the name stays, and matches NGINX for every
//! list (`IP:port` lists hash the same bytes either way: the parity tests with Pingora's ring
//! and with a real NGINX pin it).
//!
//! Pure: built once per config version, walked per request without allocating.

/// Points per unit of weight, as NGINX and Pingora (`DEFAULT_POINT_MULTIPLE`).
pub const POINTS_PER_WEIGHT: u32 = 160;

/// The ring: points sorted by hash, each naming a member (its index in config order).
#[derive(Debug, Default)]
pub struct Ring {
    points: Box<[Point]>,
    members: usize,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    hash: u32,
    member: u32,
}

impl Ring {
    /// The ring over `members` (identity, weight), in config order: a point names the
    /// member's index. The order of the list does not change which member owns a key.
    pub fn new<'a>(members: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let members: Vec<(&str, u32)> = members.into_iter().collect();
        // Points are pushed in identity order, whatever the config order: where two points
        // have the same hash (rare: CRC-32 over a few thousand points), the one kept must not
        // depend on how the list is written.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| members[a].0.cmp(members[b].0));
        let total: usize = members.iter().map(|m| m.1 as usize).sum();
        let mut points = Vec::with_capacity(total * POINTS_PER_WEIGHT as usize);
        for i in order {
            let (identity, weight) = members[i];
            let (host, port) = split(identity);
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(b"\0");
            base.update(port.as_bytes());
            let mut prev: u32 = 0;
            for _ in 0..weight * POINTS_PER_WEIGHT {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push(Point {
                    hash: prev,
                    member: i as u32,
                });
            }
        }
        // Stable: of equal hashes the first pushed stays (as NGINX's and Pingora's rings do).
        points.sort_by_key(|p| p.hash);
        points.dedup_by_key(|p| p.hash);
        Self {
            points: points.into_boxed_slice(),
            members: members.len(),
        }
    }

    /// Points on the ring (a failover walk may need all of them).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The members in ring order from `key`'s point: its owner first, then each other member
    /// the first time the walk meets it, within `max_steps` points (repeated points of a member
    /// count as steps, as in Pingora's walk).
    pub fn walk(&self, key: &[u8], max_steps: usize) -> Walk<'_> {
        let hash = crc32fast::hash(key);
        let start = self.points.partition_point(|p| p.hash < hash);
        Walk {
            ring: self,
            at: if start == self.points.len() { 0 } else { start },
            steps: max_steps.min(self.points.len()),
            seen: Seen::new(self.members),
        }
    }
}

/// `host:port` as NGINX splits a server name: the port is the run of digits after the last
/// `:`; a name without one (an `id` like `wps1`) is all host.
fn split(identity: &str) -> (&str, &str) {
    match identity.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|c| c.is_ascii_digit()) => (host, port),
        _ => (identity, ""),
    }
}

/// A walk over the ring: see [`Ring::walk`].
pub struct Walk<'a> {
    ring: &'a Ring,
    at: usize,
    steps: usize,
    seen: Seen,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.steps > 0 {
            self.steps -= 1;
            let member = self.ring.points[self.at].member as usize;
            self.at = (self.at + 1) % self.ring.points.len();
            if self.seen.first(member) {
                return Some(member);
            }
        }
        None
    }
}

/// Which members a walk has met: a bit set on the stack for up to 128 members (every real
/// service), a vector beyond.
enum Seen {
    Few(u128),
    Many(Vec<bool>),
}

impl Seen {
    fn new(members: usize) -> Self {
        if members <= 128 {
            Seen::Few(0)
        } else {
            Seen::Many(vec![false; members])
        }
    }

    /// Whether this is the first time `member` is met (and remember it).
    fn first(&mut self, member: usize) -> bool {
        match self {
            Seen::Few(bits) => {
                let bit = 1u128 << member;
                let first = *bits & bit == 0;
                *bits |= bit;
                first
            }
            Seen::Many(seen) => !std::mem::replace(&mut seen[member], true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_ketama::{Bucket, Continuum};
    use std::net::SocketAddr;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("machine-{i}")).collect()
    }

    /// For `IP:port` lists the ring is Pingora's (which is NGINX's), key for key and along
    /// the whole failover walk.
    #[test]
    fn ip_lists_map_as_pingoras_ring() {
        let lists: [&[(&str, u32)]; 4] = [
            &[
                ("10.0.0.1:8093", 1),
                ("10.0.0.2:8093", 1),
                ("10.0.0.3:8093", 1),
            ],
            &[("127.0.0.1:9001", 3), ("127.0.0.1:9002", 1)],
            &[
                ("192.168.1.10:80", 1),
                ("192.168.1.9:80", 2),
                ("192.168.1.11:80", 1),
                ("192.168.1.12:80", 5),
            ],
            &[("10.1.2.3:8091", 1)],
        ];
        for list in lists {
            let ring = Ring::new(list.iter().copied());
            let addrs: Vec<SocketAddr> = list.iter().map(|m| m.0.parse().unwrap()).collect();
            let buckets: Vec<Bucket> = list
                .iter()
                .zip(&addrs)
                .map(|(m, a)| Bucket::new(*a, m.1))
                .collect();
            let reference = Continuum::new(&buckets);
            assert_eq!(ring.len(), reference_len(&reference), "{list:?}");
            for key in keys(3000) {
                let ours: Vec<SocketAddr> = ring
                    .walk(key.as_bytes(), ring.len())
                    .map(|i| addrs[i])
                    .collect();
                let mut theirs: Vec<SocketAddr> = Vec::new();
                for a in reference.node_iter(key.as_bytes()).take(ring.len()) {
                    if !theirs.contains(a) {
                        theirs.push(*a);
                    }
                }
                assert_eq!(ours, theirs, "key {key} on {list:?}");
            }
        }
    }

    fn reference_len(c: &Continuum) -> usize {
        // Pingora's ring does not say its length; a full walk from any key visits every point.
        let mut idx = 0;
        let mut n = 0;
        let first = c.get_addr(&mut idx).copied();
        if first.is_none() {
            return 0;
        }
        n += 1;
        while idx != 0 {
            c.get_addr(&mut idx);
            n += 1;
        }
        n
    }

    /// NGINX splits the port off the name as written and hashes the host part as text: a host
    /// name is hashed as the name, an id without a port as itself.
    #[test]
    fn names_are_hashed_as_written() {
        assert_eq!(split("wps1:8093"), ("wps1", "8093"));
        assert_eq!(split("[::1]:8093"), ("[::1]", "8093"));
        assert_eq!(split("wps1"), ("wps1", ""));
        assert_eq!(
            split("fp-0.fp.svc.cluster.local:8093"),
            ("fp-0.fp.svc.cluster.local", "8093")
        );
        assert_eq!(split("node:a"), ("node:a", ""));
        // The first point of a member is CRC-32 of "host\0port" followed by four zero bytes.
        let ring = Ring::new([("wps1:8093", 1)]);
        let mut h = crc32fast::Hasher::new();
        h.update(b"wps1\x008093\0\0\0\0");
        let first = h.finalize();
        assert!(ring.points.iter().any(|p| p.hash == first));
    }

    /// The order the list is written in does not move a key; an identity's keys do not depend
    /// on the other members' addresses (only on their identities).
    #[test]
    fn config_order_does_not_matter() {
        let a = Ring::new([("wps1:8093", 1), ("wps2:8093", 2), ("wps3:8093", 1)]);
        let b = Ring::new([("wps3:8093", 1), ("wps1:8093", 1), ("wps2:8093", 2)]);
        let name_a = ["wps1", "wps2", "wps3"];
        let name_b = ["wps3", "wps1", "wps2"];
        for key in keys(2000) {
            let x = a.walk(key.as_bytes(), 1).next().map(|i| name_a[i]);
            let y = b.walk(key.as_bytes(), 1).next().map(|i| name_b[i]);
            assert_eq!(x, y, "{key}");
        }
    }

    /// Adding a member moves keys only onto it (consistent hashing), about 1/n of them.
    #[test]
    fn a_new_member_takes_keys_only_for_itself() {
        let before = Ring::new([("a", 1), ("b", 1), ("c", 1)]);
        let after = Ring::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let mut moved = 0;
        for key in keys(4000) {
            let x = before.walk(key.as_bytes(), 1).next().unwrap();
            let y = after.walk(key.as_bytes(), 1).next().unwrap();
            if x != y {
                assert_eq!(y, 3, "{key} moved between old members");
                moved += 1;
            }
        }
        assert!((600..1400).contains(&moved), "{moved} of 4000 moved");
    }

    /// A walk meets every member once, owner first, and stops after `max_steps` points.
    #[test]
    fn a_walk_meets_each_member_once() {
        let ring = Ring::new([("a", 1), ("b", 2), ("c", 1)]);
        for key in keys(200) {
            let mut all: Vec<usize> = ring.walk(key.as_bytes(), ring.len()).collect();
            assert_eq!(all.len(), 3);
            all.sort();
            assert_eq!(all, [0, 1, 2]);
            assert_eq!(ring.walk(key.as_bytes(), 1).count(), 1);
        }
        assert_eq!(Ring::new([]).walk(b"k", 10).next(), None);
        // More members than the bit set holds.
        let names: Vec<String> = (0..200)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
            .collect();
        let big = Ring::new(names.iter().map(|n| (n.as_str(), 1)));
        assert_eq!(big.walk(b"k", big.len()).count(), 200);
    }
}

//! Which of the cluster's Redis instances holds a conversation: jump
//! consistent hashing (Lamping and Veach) of a stable hash of its key, so
//! every node agrees, and adding an instance moves only the share of
//! conversations the new one takes.

/// The instance, of `instances`, that holds the conversation `key`.
pub(crate) fn instance_of(key: &str, instances: usize) -> usize {
    if instances <= 1 {
        return 0;
    }
    jump(fnv1a(key.as_bytes()), instances as i64) as usize
}

/// FNV-1a, 64 bits: the same on every node and every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`.
fn jump(mut key: u64, buckets: i64) -> i64 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_holds_everything() {
        assert_eq!(instance_of("c:room", 1), 0);
    }

    #[test]
    fn conversations_spread_evenly_and_stay_put() {
        let keys: Vec<String> = (0..30_000).map(|i| format!("c:room.{i}")).collect();
        let mut counts = [0usize; 3];
        for k in &keys {
            counts[instance_of(k, 3)] += 1;
        }
        for n in counts {
            assert!((9_000..11_000).contains(&n), "uneven: {counts:?}");
        }
        // A fourth instance takes about a quarter, from every other one,
        // and moves nothing between the first three.
        let moved = keys
            .iter()
            .filter(|k| instance_of(k, 3) != instance_of(k, 4))
            .count();
        assert!((6_500..8_500).contains(&moved), "moved {moved}");
        assert!(keys.iter().all(|k| {
            let (before, after) = (instance_of(k, 3), instance_of(k, 4));
            before == after || after == 3
        }));
    }

    #[test]
    fn known_values_hold() {
        // What the paper's C++ function answers for the same inputs.
        assert_eq!(jump(0, 1), 0);
        assert_eq!(jump(1, 1000), 549);
        assert_eq!(jump(0xdead_beef, 1000), 285);
        assert_eq!(jump(123_456_789, 3), 0);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

//! Drives the fuzz harness over a deterministic corpus of mutated frames,
//! so every run of the normal suite fuzzes a little.

use apm_core::fuzzing::decode_harness;
use apm_core::samples;

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            4 if v.len() >= 4 => {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => (v.len() as u32).saturating_sub(4 + rng.below(3) as u32),
                    _ => rng.next() as u32 % 8192,
                };
                v[..4].copy_from_slice(&len.to_be_bytes());
            }
            5 if v.len() > 12 => {
                let i = 12 + rng.below(v.len() - 12);
                v.remove(i);
            }
            _ => {
                let extra = v.clone();
                v.extend_from_slice(&extra[..rng.below(extra.len() + 1)]);
            }
        }
    }
    v
}

#[test]
fn mutated_samples() {
    let seeds: Vec<Vec<u8>> = samples::all()
        .iter()
        .map(|f| f.to_bytes().unwrap().to_vec())
        .collect();
    // The unmutated seeds (names here are within the harness's limits).
    let mut decoded = 0;
    for s in &seeds {
        decoded += decode_harness(s);
    }
    assert_eq!(decoded, seeds.len());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..20_000 {
        let seed = &seeds[round % seeds.len()];
        let input = mutate(&mut rng, seed);
        accepted += decode_harness(&input);
    }
    // Some mutations (payload bytes, ids) still decode: the harness checked
    // their round trip.
    assert!(accepted > 100, "only {accepted} mutated frames decoded");
}

#[test]
fn random_bytes() {
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let len = rng.below(64);
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        decode_harness(&input);
    }
}

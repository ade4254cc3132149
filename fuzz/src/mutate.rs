//! Inputs from seeds: a few random mutations of one seed (sometimes spliced with another).

/// xorshift64*: small, fast, seedable (runs are reproducible from their seed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Integers that break length arithmetic, written big-endian (the wire's order).
const INTERESTING_I32: [i32; 10] = [0, 1, -1, 2, 4, 127, 255, 65_535, i32::MAX, i32::MIN];
/// Inputs never grow past this (frames larger are refused by length before any decoding).
const INPUT_BYTES_MAX: usize = 64 * 1024;

/// Replaces `out` with a mutated seed.
pub fn next_input(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    let mutations = 1 + rng.below(6);
    for _ in 0..mutations {
        mutate(rng, seeds, out);
    }
    out.truncate(INPUT_BYTES_MAX);
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    let len = out.len();
    match rng.below(9) {
        0 if len > 0 => {
            let at = rng.below(len);
            out[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            out[at] = rng.next_u64() as u8;
        }
        2 if len >= 4 => {
            let at = rng.below(len - 3);
            let value = INTERESTING_I32[rng.below(INTERESTING_I32.len())];
            out[at..at + 4].copy_from_slice(&value.to_be_bytes());
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            out.drain(at..at + n);
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let copy = out[at..at + n].to_vec();
            let to = rng.below(len + 1);
            out.splice(to..to, copy);
        }
        6 => {
            // Splice: the head of this input, the tail of another seed.
            let other = &seeds[rng.below(seeds.len())];
            let keep = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            out.truncate(keep);
            out.extend_from_slice(&other[from..]);
        }
        7 if len > 0 => out.truncate(rng.below(len)),
        _ => {
            // Text-level: a JSON/conf token that parsers find interesting.
            const TOKENS: [&[u8]; 10] = [
                b"\"", b"{", b"}", b"[", b"]", b":", b",", b"\\u0000", b"=", b"\n",
            ];
            let token = TOKENS[rng.below(TOKENS.len())];
            let at = rng.below(len + 1);
            out.splice(at..at, token.iter().copied());
        }
    }
}

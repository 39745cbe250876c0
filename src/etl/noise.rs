//! The noise: where every sample's Gaussian draw comes from.
//!
//! Reproducibility is a contract (`--seed N` gives the same bytes whatever `-j`, the order of work,
//! a retry, or how a large file was split), so each file's samples are cut into fixed blocks of
//! [`BLOCK_SAMPLES`], and each block draws from its own generator seeded from (file seed, block
//! index). The file seed is a fixed hash (XXH3) of the run seed and the file's path relative to the
//! folder it was found in. The generator is named (Xoshiro256++) and rand, rand_distr and
//! rand_xoshiro are pinned to exact versions, so the streams do not change under us.

use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Samples (not frames) per noise block: the unit of seeding and of splitting a file.
pub const BLOCK_SAMPLES: usize = 1 << 16;

/// The seed of one file's noise, from the run's seed and the file's relative path.
pub fn file_seed(run_seed: u64, relative_path: &[u8]) -> u64 {
    xxh3_64_with_seed(relative_path, run_seed)
}

/// The generator for block `block` of a file.
pub fn block_rng(file_seed: u64, block: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(xxh3_64_with_seed(&block.to_le_bytes(), file_seed))
}

/// Fills `out` with independent draws of N(0, sigma).
pub fn fill_gaussian(rng: &mut Xoshiro256PlusPlus, sigma: f64, out: &mut [f64]) {
    for x in out.iter_mut() {
        let z: f64 = rng.sample(StandardNormal);
        *x = z * sigma;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_seed_path_and_block_only() {
        let draw = |seed, path: &[u8], block| {
            let mut out = [0.0; 4];
            fill_gaussian(&mut block_rng(file_seed(seed, path), block), 1.0, &mut out);
            out
        };
        assert_eq!(draw(7, b"a.wav", 3), draw(7, b"a.wav", 3));
        assert_ne!(draw(7, b"a.wav", 3), draw(8, b"a.wav", 3));
        assert_ne!(draw(7, b"a.wav", 3), draw(7, b"b.wav", 3));
        assert_ne!(draw(7, b"a.wav", 3), draw(7, b"a.wav", 4));
    }
}

//! Micro-benchmarks of the per-sample work, in time per sample (divan reports items/s too):
//! drawing the noise, and decode-add-clip-encode for each sample format, on one noise block.
//!
//! `cargo bench --bench kernel`. The end-to-end benchmark is `bench/run.sh`. Divide a median by
//! the format's bytes per sample (u8, A-law, mu-law 1; i16 2; i24 3; i32, f32 4; f64 8) for its
//! cost per byte (BENCHMARKS.md compares each with f32's).

use audio_etl::etl::kernel;
use audio_etl::etl::noise::{BLOCK_SAMPLES, BlockNoise};
use audio_etl::etl::wav::Encoding;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const FORMATS: [Encoding; 8] = [
    Encoding::U8,
    Encoding::I16,
    Encoding::I24,
    Encoding::I32,
    Encoding::F32,
    Encoding::F64,
    Encoding::ALaw,
    Encoding::MuLaw,
];

/// One block of a 440 Hz tone at half scale, in `encoding`.
fn tone(encoding: Encoding) -> Vec<u8> {
    let values: Vec<f64> = (0..BLOCK_SAMPLES)
        .map(|i| 0.5 * (i as f64 * std::f64::consts::TAU * 440.0 / 44100.0).sin())
        .collect();
    let mut bytes = vec![0u8; BLOCK_SAMPLES * encoding.bytes()];
    kernel::encode(encoding, &values, &mut bytes);
    bytes
}

mod noise {
    use super::*;

    /// The stream the transform uses: the ziggurat on 8 Xoshiro256++ lanes (`ETL_SIMD=avx2` or
    /// `ETL_SIMD=none` to measure the narrower paths).
    #[divan::bench]
    fn ziggurat_8_lanes(bencher: Bencher) {
        let mut out = vec![0.0; BLOCK_SAMPLES];
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| BlockNoise::new(black_box(1), black_box(2)).fill(0.1, &mut out));
    }

    /// What the first version used: rand_distr's Ziggurat `StandardNormal` on one Xoshiro256++.
    #[divan::bench]
    fn rand_distr_ziggurat(bencher: Bencher) {
        use rand::{RngExt, SeedableRng};
        let mut out = vec![0.0; BLOCK_SAMPLES];
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(black_box(1));
                for x in out.iter_mut() {
                    let z: f64 = rng.sample(rand_distr::StandardNormal);
                    *x = z * 0.1;
                }
            });
    }
}

mod kernel_only {
    use super::*;

    /// Decode, add given noise, clip, encode: the arithmetic without drawing the noise.
    #[divan::bench(args = FORMATS)]
    fn add_noise(bencher: Bencher, encoding: Encoding) {
        let input = tone(encoding);
        let mut z = vec![0.0; BLOCK_SAMPLES];
        BlockNoise::new(1, 2).fill(0.1, &mut z);
        let mut buf = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                buf.copy_from_slice(&input);
                kernel::add_noise(encoding, &z, &mut buf)
            });
    }
}

mod block {
    use super::*;

    /// What a worker does to each block between reading and writing it: draw and add.
    #[divan::bench(args = FORMATS)]
    fn add_block_noise(bencher: Bencher, encoding: Encoding) {
        let input = tone(encoding);
        let mut buf = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                buf.copy_from_slice(&input);
                let mut noise = BlockNoise::new(black_box(1), black_box(2));
                kernel::add_block_noise(encoding, 0.1, &mut noise, &mut buf)
            });
    }

    /// The floor: copying the block's bytes (included in the two benchmarks above).
    #[divan::bench(args = FORMATS)]
    fn copy_only(bencher: Bencher, encoding: Encoding) {
        let input = tone(encoding);
        let mut buf = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| buf.copy_from_slice(black_box(&input)));
    }
}

mod rare {
    use super::*;

    /// Integers with fewer valid bits than their container (the portable path): 12 in 16,
    /// 20 in 24, 24 in 32.
    #[divan::bench(args = [(Encoding::I16, 12), (Encoding::I24, 20), (Encoding::I32, 24)])]
    fn add_block_noise_on_grid(bencher: Bencher, (encoding, valid_bits): (Encoding, u16)) {
        let input = tone(encoding);
        let mut buf = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                buf.copy_from_slice(&input);
                let mut noise = BlockNoise::new(black_box(1), black_box(2));
                kernel::add_block_noise_on_grid(encoding, valid_bits, 0.1, &mut noise, &mut buf)
            });
    }

    /// `--output-format`: decode, add, encode into another format.
    #[divan::bench(args = [(Encoding::I16, Encoding::F32), (Encoding::ALaw, Encoding::F32)])]
    fn add_block_noise_into(bencher: Bencher, (from, to): (Encoding, Encoding)) {
        let input = tone(from);
        let mut out = vec![0u8; BLOCK_SAMPLES * to.bytes()];
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                let mut noise = BlockNoise::new(black_box(1), black_box(2));
                kernel::add_block_noise_into(from, to, 0.1, &mut noise, &input, &mut out)
            });
    }
}

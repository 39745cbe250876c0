//! Micro-benchmarks of the per-sample work, in time per sample (divan reports items/s too):
//! drawing the noise, and decode-add-clip-encode for each sample format, on one noise block.
//!
//! `cargo bench --bench kernel`. The end-to-end benchmark is `bench/run.sh`.

use audio_etl::etl::kernel;
use audio_etl::etl::noise::{self, BLOCK_SAMPLES};
use audio_etl::etl::wav::Encoding;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const FORMATS: [Encoding; 5] = [
    Encoding::U8,
    Encoding::I16,
    Encoding::I24,
    Encoding::I32,
    Encoding::F32,
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

mod noise_only {
    use super::*;

    /// One block of N(0, sigma) draws.
    #[divan::bench]
    fn fill_gaussian(bencher: Bencher) {
        let mut out = vec![0.0; BLOCK_SAMPLES];
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                let mut rng = noise::block_rng(black_box(1), black_box(2));
                noise::fill_gaussian(&mut rng, 0.1, &mut out)
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
        noise::fill_gaussian(&mut noise::block_rng(1, 2), 0.1, &mut z);
        let mut out = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| kernel::add_noise(encoding, black_box(&input), &z, &mut out));
    }
}

mod block {
    use super::*;

    /// What a worker does to each block between reading and writing it: draw and add.
    #[divan::bench(args = FORMATS)]
    fn draw_and_add(bencher: Bencher, encoding: Encoding) {
        let input = tone(encoding);
        let mut z = vec![0.0; BLOCK_SAMPLES];
        let mut out = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| {
                let mut rng = noise::block_rng(black_box(1), black_box(2));
                noise::fill_gaussian(&mut rng, 0.1, &mut z);
                kernel::add_noise(encoding, black_box(&input), &z, &mut out)
            });
    }

    /// The floor: copying the block's bytes.
    #[divan::bench(args = FORMATS)]
    fn copy_only(bencher: Bencher, encoding: Encoding) {
        let input = tone(encoding);
        let mut out = input.clone();
        bencher
            .counter(ItemsCount::new(BLOCK_SAMPLES))
            .bench_local(|| out.copy_from_slice(black_box(&input)));
    }
}

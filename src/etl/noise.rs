//! The noise: where every sample's Gaussian draw comes from.
//!
//! Reproducibility is a contract (`--seed N` gives the same bytes whatever `-j`, the order of work,
//! a retry, or how a large file was split), so each file's samples are cut into fixed blocks of
//! [`BLOCK_SAMPLES`], and each block draws from its own generators seeded from (file seed, block
//! index). The file seed is a fixed hash (XXH3-64, xxhash-rust) of the run seed and the file's path
//! relative to the folder it was found in.
//!
//! With `--variants N`, each of a file's N outputs draws its own stream: variant `k` uses the
//! *variant seed* of [`variant_seed`] in place of the file seed, which depends on the file seed
//! and `k` only (never on N, `-j`, the shard or a retry). Variant 0 is the file seed itself, so
//! one variant gives exactly the bytes a run without variants gives; variant `k > 0` is
//! `XXH3-64(b"variant" ++ k as u64 LE, seed = file seed)` (15 bytes, so never one of the 16-byte
//! keys that seed a block's generators below).
//!
//! # The algorithm, exactly
//!
//! Speed matters here (the draw is most of the per-sample work), so the stream is built to be
//! computed [`LANES`] values at a time with SIMD instructions, and to give the same bits whichever
//! instruction set computes it.
//!
//! - **Generators**: per block, [`LANES`] = 8 Xoshiro256++ generators (Blackman and Vigna, 2019),
//!   the *lanes*, and one more, the *slow-path* generator. Generator `l` (0 to 7 for the lanes, 8
//!   for the slow path) of block `b` is seeded with SplitMix64 exactly as
//!   `rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(s)` does (a unit test checks this), with
//!   `s = XXH3-64(b as u64 LE ++ l as u64 LE, seed = file seed)`.
//! - **Normals**: the ziggurat method (Marsaglia and Tsang, 2000) with 256 layers, the tables and
//!   the steps of rand_distr 0.6's `StandardNormal`; exact, tails included. Normal number `8k + l`
//!   of the block starts from draw `k` of lane `l`, `bits`: layer `i = bits & 0xff`,
//!   `u = (bits >> 12) * 2^-51 - 1` in [-1, 1), `x = u * X[i]`. If `|x| < X[i + 1]` (98.5% of the
//!   time), the normal is `x`. Otherwise the ziggurat goes on with uniforms from the slow-path
//!   generator, taken in the order of the normals they complete: for `i = 0` the tail beyond
//!   `R = X[1]` (Marsaglia's method, with the sign of `u`); else the wedge test, `x` if
//!   `F[i + 1] + (F[i] - F[i + 1]) * U < exp(-x^2 / 2)`, and otherwise a whole new ziggurat draw
//!   from the slow-path generator alone. Uniforms there are `U = (w >> 11) * 2^-53` in [0, 1) and,
//!   for logarithms, `(w >> 12) * 2^-52 + 2^-53` in (0, 1). `exp` and `ln` are the `libm` crate's
//!   (pure Rust, pinned), not the platform's, so they give the same bits everywhere.
//! - Every normal is scaled as `sigma * z`. A block of `n` samples uses the first `n` normals;
//!   nothing is drawn from the slow-path generator for normals past `n`.
//!
//! The fast path is a table lookup, a multiplication and a comparison, so eight lanes go through
//! it together: plain Rust, AVX2 (four lanes per instruction, table lookups by 16-byte loads) or
//! AVX-512 (eight, lookups by gather), chosen at run time; the rare slow path runs one normal at a
//! time, in order. Tests check that every path gives the same bits. `ETL_SIMD=avx2` or
//! `ETL_SIMD=none` caps the choice, to measure or check a path.
//!
//! The hash, the generators, the ziggurat and its tables are named, published algorithms and data;
//! xxhash-rust and libm are the only crates involved in the stream (both pinned), so rand,
//! rand_distr and rand_xoshiro versions do not change the bytes.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Samples (not frames) per noise block: the unit of seeding and of splitting a file.
pub const BLOCK_SAMPLES: usize = 1 << 16;

/// Independent generators per block, advanced together.
pub const LANES: usize = 8;

/// Normals made from one draw of every lane: the unit in which a block's noise may be drawn in
/// several calls.
pub const GROUP: usize = LANES;

/// The seed of one file's noise, from the run's seed and the file's relative path.
pub fn file_seed(run_seed: u64, relative_path: &[u8]) -> u64 {
    xxh3_64_with_seed(relative_path, run_seed)
}

/// The seed of variant `variant`'s noise of a file (see the module documentation): the file
/// seed itself for variant 0, so that a single variant is exactly today's stream.
pub fn variant_seed(file_seed: u64, variant: u32) -> u64 {
    if variant == 0 {
        return file_seed;
    }
    let mut key = [0u8; 15];
    key[..7].copy_from_slice(b"variant");
    key[7..].copy_from_slice(&(variant as u64).to_le_bytes());
    xxh3_64_with_seed(&key, file_seed)
}

/// The noise of one block: [`LANES`] Xoshiro256++ states, stored lane-wise so that one step of
/// all of them is a handful of vector instructions, and the slow-path generator.
#[derive(Clone, Debug)]
pub struct BlockNoise {
    s: [[u64; LANES]; 4],
    slow: [u64; 4],
}

/// SplitMix64 (Steele, Lea and Flood, 2014), as rand_xoshiro seeds its generators.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The four state words of generator `index` of block `block`.
fn seed_generator(file_seed: u64, block: u64, index: u64) -> [u64; 4] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&block.to_le_bytes());
    key[8..].copy_from_slice(&index.to_le_bytes());
    let mut state = xxh3_64_with_seed(&key, file_seed);
    // SplitMix64 is a bijection of a counter: four consecutive outputs are never all zero, the
    // one state Xoshiro must not start from.
    std::array::from_fn(|_| splitmix64(&mut state))
}

/// One Xoshiro256++ step of one generator.
#[inline(always)]
fn xoshiro(s: &mut [u64; 4]) -> u64 {
    let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    out
}

/// `bits`' layer and `u` in [-1, 1) (the ziggurat's first steps, shared by every path).
#[inline(always)]
fn layer_and_u(bits: u64) -> (usize, f64) {
    (
        (bits & 0xff) as usize,
        f64::from_bits(TWO_BITS | (bits >> 12)) - 3.0,
    )
}

impl BlockNoise {
    /// The generators of block `block` of a file.
    pub fn new(file_seed: u64, block: u64) -> Self {
        let mut s = [[0u64; LANES]; 4];
        for lane in 0..LANES {
            let words = seed_generator(file_seed, block, lane as u64);
            for (word, value) in s.iter_mut().zip(words) {
                word[lane] = value;
            }
        }
        BlockNoise {
            s,
            slow: seed_generator(file_seed, block, LANES as u64),
        }
    }

    /// One Xoshiro256++ step of every lane.
    #[inline(always)]
    fn next(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        std::array::from_fn(|l| {
            let mut s = [s0[l], s1[l], s2[l], s3[l]];
            let out = xoshiro(&mut s);
            [s0[l], s1[l], s2[l], s3[l]] = s;
            out
        })
    }

    /// Fills `out` with the next `out.len()` draws of N(0, sigma). Unless `out.len()` is a multiple
    /// of [`GROUP`], the rest of the last group is dropped, so only the last call on a block may
    /// have such a length.
    pub fn fill(&mut self, sigma: f64, out: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        match Simd::detect() {
            // SAFETY: the CPU has the instructions, checked by `detect`.
            Simd::Avx512 => return unsafe { self.fill_avx512(sigma, out) },
            Simd::Avx2 => return unsafe { self.fill_avx2(sigma, out) },
            Simd::None => {}
        }
        self.fill_portable(sigma, out)
    }

    /// [`BlockNoise::fill`] in plain Rust, one value at a time: the definition of the stream, and
    /// what runs on CPUs without AVX2.
    pub fn fill_portable(&mut self, sigma: f64, out: &mut [f64]) {
        for group in out.chunks_mut(GROUP) {
            let bits = self.next();
            for (z, bits) in group.iter_mut().zip(bits) {
                let (i, u) = layer_and_u(bits);
                let x = u * zig::X[i];
                *z = sigma
                    * if x.abs() < zig::X[i + 1] {
                        x
                    } else {
                        self.slow_path(i, u, x)
                    };
            }
        }
    }

    /// [`BlockNoise::fill`] with AVX2 instructions, four lanes per instruction.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub(crate) fn fill_avx2(&mut self, sigma: f64, out: &mut [f64]) {
        avx2::fill(self, sigma, out)
    }

    /// [`BlockNoise::fill`] with AVX-512 instructions, all eight lanes in one instruction.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn fill_avx512(&mut self, sigma: f64, out: &mut [f64]) {
        avx512::fill(self, sigma, out)
    }

    /// The rest of the ziggurat for a draw `(i, u, x)` that missed the fast path.
    #[cold]
    #[inline(never)]
    fn slow_path(&mut self, i: usize, u: f64, x: f64) -> f64 {
        if i == 0 {
            return self.tail(u);
        }
        if self.wedge(i, x) {
            return x;
        }
        loop {
            let (i, u) = layer_and_u(xoshiro(&mut self.slow));
            let x = u * zig::X[i];
            if x.abs() < zig::X[i + 1] {
                return x;
            }
            if i == 0 {
                return self.tail(u);
            }
            if self.wedge(i, x) {
                return x;
            }
        }
    }

    /// Whether `x` in layer `i` falls under the density (the wedge test).
    fn wedge(&mut self, i: usize, x: f64) -> bool {
        let uniform = (xoshiro(&mut self.slow) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let y = zig::F[i + 1] + (zig::F[i] - zig::F[i + 1]) * uniform;
        wedge_by_lines(i, x.abs(), y).unwrap_or_else(|| y < libm::exp(-x * x / 2.0))
    }

    /// A normal beyond `R`, on the side of `u`'s sign (Marsaglia, 1964).
    fn tail(&mut self, u: f64) -> f64 {
        let (mut x, mut y) = (1.0f64, 0.0f64);
        while -2.0 * y < x * x {
            x = libm::log(self.open01()) / zig::R;
            y = libm::log(self.open01());
        }
        if u < 0.0 { x - zig::R } else { zig::R - x }
    }

    /// A uniform in (0, 1), never 0, from the slow-path generator.
    fn open01(&mut self) -> f64 {
        f64::from_bits(ONE_BITS | (xoshiro(&mut self.slow) >> 12)) - (1.0 - HALF_ULP_OF_ONE)
    }
}

/// The wedge test `y < exp(-x^2 / 2)` of layer `i` decided without `exp` when `y` is clearly
/// on one side: within the layer's wedge (`ax` from `X[i + 1]` to `X[i]`) the density lies
/// between its chord and its tangent at `X[i + 1]` (below the chord and above the tangent where it
/// is convex, `x > 1`; the other way round where it is concave, `x < 1`). `None` when `y` is within
/// a relative 1e-9 of those lines, far more than the rounding of any of them or of `exp`, so the
/// answer is always the one `exp` would give, and `exp` runs for about one wedge test in 100.
#[inline]
fn wedge_by_lines(i: usize, ax: f64, y: f64) -> Option<bool> {
    let (x0, x1, f0, f1) = (zig::X[i + 1], zig::X[i], zig::F[i + 1], zig::F[i]);
    let chord = f0 + (f1 - f0) * ((ax - x0) / (x1 - x0));
    let tangent = f0 * (1.0 - x0 * (ax - x0));
    let margin = 1e-9 * f0;
    let (below, above) = if x0 >= 1.0 {
        (tangent, chord)
    } else if x1 <= 1.0 {
        (chord, tangent)
    } else {
        return None;
    };
    if y < below - margin {
        Some(true)
    } else if y > above + margin {
        Some(false)
    } else {
        None
    }
}

/// The widest vector instructions this CPU has that the noise and the kernel use.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Simd {
    Avx512,
    Avx2,
    None,
}

#[cfg(target_arch = "x86_64")]
impl Simd {
    /// What this CPU has, capped by `ETL_SIMD` (`avx512`, `avx2` or `none`) when it is set: a way
    /// to measure or check each path on one machine. The bytes are the same on every path.
    #[inline]
    pub(crate) fn detect() -> Simd {
        static DETECTED: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let cap = match std::env::var("ETL_SIMD").as_deref() {
                Ok("none") => Simd::None,
                Ok("avx2") => Simd::Avx2,
                _ => Simd::Avx512,
            };
            let has = if std::arch::is_x86_feature_detected!("avx512f") {
                Simd::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2") {
                Simd::Avx2
            } else {
                Simd::None
            };
            // Declared widest first: the larger of the two is the narrower path.
            has.max(cap)
        })
    }
}

const ONE_BITS: u64 = 0x3ff0_0000_0000_0000;
/// The bits of 2.0: or-ing 52 random bits into them gives a uniform in [2, 4).
const TWO_BITS: u64 = 0x4000_0000_0000_0000;
/// 2^-53.
const HALF_ULP_OF_ONE: f64 = 1.0 / (1u64 << 53) as f64;

/// The fast path of [`BlockNoise::fill_portable`] on a vector of lanes at a time, with the slow
/// path for the lanes that miss it. Expanded in a module that defines the vector types `I` (u64
/// lanes) and `F` (f64 lanes), `HALVES` (how many vectors make the 8 lanes), and the small
/// operations used below, for one instruction set.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_noise {
    ($feature:literal) => {
        use super::{BlockNoise, GROUP, LANES, TWO_BITS, zig};

        const WIDTH: usize = LANES / HALVES;

        #[inline]
        #[target_feature(enable = $feature)]
        pub(super) fn fill(noise: &mut BlockNoise, sigma: f64, out: &mut [f64]) {
            let mut state: [[I; 4]; HALVES] = std::array::from_fn(|h| load(noise, h));
            let (groups, rest) = out.as_chunks_mut::<GROUP>();
            for z in groups {
                group(noise, &mut state, sigma, z, GROUP);
            }
            if !rest.is_empty() {
                let mut z = [0.0; GROUP];
                group(noise, &mut state, sigma, &mut z, rest.len());
                rest.copy_from_slice(&z[..rest.len()]);
            }
            for (h, s) in state.into_iter().enumerate() {
                store(noise, h, s);
            }
        }

        /// The next [`GROUP`] normals into `z`, of which the first `used` are kept.
        #[inline]
        #[target_feature(enable = $feature)]
        fn group(
            noise: &mut BlockNoise,
            state: &mut [[I; 4]; HALVES],
            sigma: f64,
            z: &mut [f64; GROUP],
            used: usize,
        ) {
            let mut draws = [0u64; LANES];
            let mut slow = 0u32;
            for (h, s) in state.iter_mut().enumerate() {
                let bits = next(s);
                let layer = and(bits, int(0xff));
                let u = sub(as_real(or(srl::<12>(bits), int(TWO_BITS))), real(3.0));
                let (width, next_width) = lookup(layer);
                let x = mul(u, width);
                let fast = abs_less(x, next_width);
                store_real(&mut z[WIDTH * h..], mul(real(sigma), x));
                let missed = !mask_bits(fast) & ((1 << WIDTH) - 1);
                if missed != 0 {
                    store_int(&mut draws[WIDTH * h..], bits);
                    slow |= missed << (WIDTH * h);
                }
            }
            // In order, and only for the normals kept: the slow-path generator's draws depend
            // on it.
            slow &= (1 << used) - 1;
            while slow != 0 {
                let l = slow.trailing_zeros() as usize;
                slow &= slow - 1;
                let (i, u) = super::layer_and_u(draws[l]);
                z[l] = sigma * noise.slow_path(i, u, u * zig::X[i]);
            }
        }

        /// One Xoshiro256++ step of the lanes in `s`.
        #[inline]
        #[target_feature(enable = $feature)]
        fn next(s: &mut [I; 4]) -> I {
            let [s0, s1, s2, s3] = *s;
            let out = add_int(rotl::<23>(add_int(s0, s3)), s0);
            let t = sll::<17>(s1);
            let s2 = xor(s2, s0);
            let s3 = xor(s3, s1);
            let s1 = xor(s1, s2);
            let s0 = xor(s0, s3);
            let s2 = xor(s2, t);
            let s3 = rotl::<45>(s3);
            *s = [s0, s1, s2, s3];
            out
        }
    };
}

/// Defines, for one instruction set, a one-line wrapper per vector operation the noise uses.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_ops {
    ($feature:literal, $I:ty, $F:ty, $M:ty, {
        $($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block)*
    }) => {
        type I = $I;
        type F = $F;
        /// The result of a comparison.
        type M = $M;
        $(
            #[inline]
            #[target_feature(enable = $feature)]
            fn $name($($arg: $ty),*) -> $ret $body
        )*
    };
}

/// AVX2: 4 lanes per vector, two vectors for the 8 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    const HALVES: usize = 2;
    simd_ops!("avx2", __m256i, __m256d, __m256d, {
        int(x: u64) -> I { _mm256_set1_epi64x(x as i64) }
        real(x: f64) -> F { _mm256_set1_pd(x) }
        as_real(x: I) -> F { _mm256_castsi256_pd(x) }
        add_int(a: I, b: I) -> I { _mm256_add_epi64(a, b) }
        and(a: I, b: I) -> I { _mm256_and_si256(a, b) }
        or(a: I, b: I) -> I { _mm256_or_si256(a, b) }
        xor(a: I, b: I) -> I { _mm256_xor_si256(a, b) }
        sub(a: F, b: F) -> F { _mm256_sub_pd(a, b) }
        mul(a: F, b: F) -> F { _mm256_mul_pd(a, b) }
        abs_less(x: F, limit: F) -> M {
            let abs = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x);
            _mm256_cmp_pd::<_CMP_LT_OQ>(abs, limit)
        }
        mask_bits(m: M) -> u32 { _mm256_movemask_pd(m) as u32 }
    });

    #[inline]
    #[target_feature(enable = "avx2")]
    fn srl<const N: i32>(x: I) -> I {
        _mm256_srli_epi64::<N>(x)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn sll<const N: i32>(x: I) -> I {
        _mm256_slli_epi64::<N>(x)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotl<const N: i32>(x: I) -> I {
        // Shift counts of 64 or more give 0, so 64 - N is right for every N in 1..64.
        _mm256_or_si256(
            _mm256_slli_epi64::<N>(x),
            _mm256_srl_epi64(x, _mm_cvtsi32_si128(64 - N)),
        )
    }

    /// `(X[i], X[i + 1])` for the layer `i` of each lane, every one below 256: one 16-byte load
    /// per lane, put in order by two unpacks. The noise is about 7% faster this way than with
    /// two gathers on an AMD Zen 3 core (`cargo bench --bench kernel -- noise`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lookup(layer: I) -> (F, F) {
        let mut i = [0u64; WIDTH];
        store_int(&mut i, layer);
        let pair = |l: usize| {
            let p: &[f64; 2] = &zig::PAIRS[i[l] as usize];
            // SAFETY: two f64s.
            unsafe { _mm_loadu_pd(p.as_ptr()) }
        };
        // [X[i0], X[i0 + 1], X[i2], X[i2 + 1]] and the same for lanes 1 and 3.
        let even = _mm256_insertf128_pd::<1>(_mm256_castpd128_pd256(pair(0)), pair(2));
        let odd = _mm256_insertf128_pd::<1>(_mm256_castpd128_pd256(pair(1)), pair(3));
        (_mm256_unpacklo_pd(even, odd), _mm256_unpackhi_pd(even, odd))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(noise: &BlockNoise, h: usize) -> [I; 4] {
        // SAFETY: each state word holds 8 lanes; these are lanes 4h .. 4h + 4.
        noise
            .s
            .map(|w| unsafe { _mm256_loadu_si256(w[WIDTH * h..WIDTH * (h + 1)].as_ptr().cast()) })
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(noise: &mut BlockNoise, h: usize, s: [I; 4]) {
        for (w, v) in noise.s.iter_mut().zip(s) {
            store_int(&mut w[WIDTH * h..], v);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_int(out: &mut [u64], x: I) {
        // SAFETY: checked to hold at least 4 values.
        unsafe { _mm256_storeu_si256(out[..WIDTH].as_mut_ptr().cast(), x) }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_real(out: &mut [f64], x: F) {
        // SAFETY: checked to hold at least 4 values.
        unsafe { _mm256_storeu_pd(out[..WIDTH].as_mut_ptr(), x) }
    }

    simd_noise!("avx2");
}

/// AVX-512 (F): all 8 lanes in one vector.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    const HALVES: usize = 1;
    simd_ops!("avx512f", __m512i, __m512d, __mmask8, {
        int(x: u64) -> I { _mm512_set1_epi64(x as i64) }
        real(x: f64) -> F { _mm512_set1_pd(x) }
        as_real(x: I) -> F { _mm512_castsi512_pd(x) }
        add_int(a: I, b: I) -> I { _mm512_add_epi64(a, b) }
        and(a: I, b: I) -> I { _mm512_and_si512(a, b) }
        or(a: I, b: I) -> I { _mm512_or_si512(a, b) }
        xor(a: I, b: I) -> I { _mm512_xor_si512(a, b) }
        sub(a: F, b: F) -> F { _mm512_sub_pd(a, b) }
        mul(a: F, b: F) -> F { _mm512_mul_pd(a, b) }
        abs_less(x: F, limit: F) -> M {
            _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(x), limit)
        }
        mask_bits(m: M) -> u32 { m as u32 }
    });

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn srl<const N: u32>(x: I) -> I {
        _mm512_srli_epi64::<N>(x)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sll<const N: u32>(x: I) -> I {
        _mm512_slli_epi64::<N>(x)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rotl<const N: i32>(x: I) -> I {
        _mm512_rol_epi64::<N>(x)
    }

    /// `(X[i], X[i + 1])` for the layer `i` of each lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lookup(layer: I) -> (F, F) {
        (gather(&zig::X, layer), gather(&zig::X[1..], layer))
    }

    /// `table[index]` for each lane; every index is below 256.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gather(table: &[f64], index: I) -> F {
        assert!(table.len() >= 256);
        // SAFETY: the indices are `bits & 0xff`, within the 256 values checked above.
        unsafe { _mm512_i64gather_pd::<8>(index, table.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(noise: &BlockNoise, _h: usize) -> [I; 4] {
        // SAFETY: each state word holds the 8 lanes.
        noise
            .s
            .map(|w| unsafe { _mm512_loadu_si512(w.as_ptr().cast()) })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(noise: &mut BlockNoise, _h: usize, s: [I; 4]) {
        for (w, v) in noise.s.iter_mut().zip(s) {
            store_int(w, v);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store_int(out: &mut [u64], x: I) {
        // SAFETY: checked to hold at least 8 values.
        unsafe { _mm512_storeu_si512(out[..WIDTH].as_mut_ptr().cast(), x) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store_real(out: &mut [f64], x: F) {
        // SAFETY: checked to hold at least 8 values.
        unsafe { _mm512_storeu_pd(out[..WIDTH].as_mut_ptr(), x) }
    }

    simd_noise!("avx512f");
}

/// The tables of the 256-layer ziggurat for the standard normal density, as rand_distr 0.6
/// publishes them (`ziggurat_tables.rs`, made by its `ziggurat_tables.py`; MIT or Apache-2.0):
/// `X[i]` is the right edge of layer `i` (`X[0]` the width of the base strip, `X[1] = R`,
/// `X[256] = 0`), `F[i] = exp(-X[i]^2 / 2)`.
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
mod zig {
    pub const R: f64 = 3.654152885361008796;

    /// `[X[i], X[i + 1]]` for each layer `i`, to load both with one instruction (AVX2).
    #[cfg(target_arch = "x86_64")]
    pub static PAIRS: [[f64; 2]; 256] = {
        let mut pairs = [[0.0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [X[i], X[i + 1]];
            i += 1;
        }
        pairs
    };

    #[rustfmt::skip]
    pub static X: [f64; 257] = [
        3.910757959537090045, 3.654152885361008796, 3.449278298560964462, 3.320244733839166074,
        3.224575052047029100, 3.147889289517149969, 3.083526132001233044, 3.027837791768635434,
        2.978603279880844834, 2.934366867207854224, 2.894121053612348060, 2.857138730872132548,
        2.822877396825325125, 2.790921174000785765, 2.760944005278822555, 2.732685359042827056,
        2.705933656121858100, 2.680514643284522158, 2.656283037575502437, 2.633116393630324570,
        2.610910518487548515, 2.589575986706995181, 2.569035452680536569, 2.549221550323460761,
        2.530075232158516929, 2.511544441625342294, 2.493583041269680667, 2.476149939669143318,
        2.459208374333311298, 2.442725318198956774, 2.426670984935725972, 2.411018413899685520,
        2.395743119780480601, 2.380822795170626005, 2.366237056715818632, 2.351967227377659952,
        2.337996148795031370, 2.324308018869623016, 2.310888250599850036, 2.297723348901329565,
        2.284800802722946056, 2.272108990226823888, 2.259637095172217780, 2.247375032945807760,
        2.235313384928327984, 2.223443340090905718, 2.211756642882544366, 2.200245546609647995,
        2.188902771624720689, 2.177721467738641614, 2.166695180352645966, 2.155817819875063268,
        2.145083634046203613, 2.134487182844320152, 2.124023315687815661, 2.113687150684933957,
        2.103474055713146829, 2.093379631137050279, 2.083399693996551783, 2.073530263516978778,
        2.063767547809956415, 2.054107931648864849, 2.044547965215732788, 2.035084353727808715,
        2.025713947862032960, 2.016433734904371722, 2.007240830558684852, 1.998132471356564244,
        1.989106007615571325, 1.980158896898598364, 1.971288697931769640, 1.962493064942461896,
        1.953769742382734043, 1.945116560006753925, 1.936531428273758904, 1.928012334050718257,
        1.919557336591228847, 1.911164563769282232, 1.902832208548446369, 1.894558525668710081,
        1.886341828534776388, 1.878180486290977669, 1.870072921069236838, 1.862017605397632281,
        1.854013059758148119, 1.846057850283119750, 1.838150586580728607, 1.830289919680666566,
        1.822474540091783224, 1.814703175964167636, 1.806974591348693426, 1.799287584547580199,
        1.791640986550010028, 1.784033659547276329, 1.776464495522344977, 1.768932414909077933,
        1.761436365316706665, 1.753975320315455111, 1.746548278279492994, 1.739154261283669012,
        1.731792314050707216, 1.724461502945775715, 1.717160915015540690, 1.709889657069006086,
        1.702646854797613907, 1.695431651932238548, 1.688243209434858727, 1.681080704722823338,
        1.673943330923760353, 1.666830296159286684, 1.659740822855789499, 1.652674147080648526,
        1.645629517902360339, 1.638606196773111146, 1.631603456932422036, 1.624620582830568427,
        1.617656869570534228, 1.610711622367333673, 1.603784156023583041, 1.596873794420261339,
        1.589979870021648534, 1.583101723393471438, 1.576238702733332886, 1.569390163412534456,
        1.562555467528439657, 1.555733983466554893, 1.548925085471535512, 1.542128153226347553,
        1.535342571438843118, 1.528567729435024614, 1.521803020758293101, 1.515047842773992404,
        1.508301596278571965, 1.501563685112706548, 1.494833515777718391, 1.488110497054654369,
        1.481394039625375747, 1.474683555695025516, 1.467978458615230908, 1.461278162507407830,
        1.454582081885523293, 1.447889631277669675, 1.441200224845798017, 1.434513276002946425,
        1.427828197027290358, 1.421144398672323117, 1.414461289772464658, 1.407778276843371534,
        1.401094763676202559, 1.394410150925071257, 1.387723835686884621, 1.381035211072741964,
        1.374343665770030531, 1.367648583594317957, 1.360949343030101844, 1.354245316759430606,
        1.347535871177359290, 1.340820365893152122, 1.334098153216083604, 1.327368577624624679,
        1.320630975217730096, 1.313884673146868964, 1.307128989027353860, 1.300363230327433728,
        1.293586693733517645, 1.286798664489786415, 1.279998415710333237, 1.273185207661843732,
        1.266358287014688333, 1.259516886060144225, 1.252660221891297887, 1.245787495544997903,
        1.238897891102027415, 1.231990574742445110, 1.225064693752808020, 1.218119375481726552,
        1.211153726239911244, 1.204166830140560140, 1.197157747875585931, 1.190125515422801650,
        1.183069142678760732, 1.175987612011489825, 1.168879876726833800, 1.161744859441574240,
        1.154581450355851802, 1.147388505416733873, 1.140164844363995789, 1.132909248648336975,
        1.125620459211294389, 1.118297174115062909, 1.110938046009249502, 1.103541679420268151,
        1.096106627847603487, 1.088631390649514197, 1.081114409698889389, 1.073554065787871714,
        1.065948674757506653, 1.058296483326006454, 1.050595664586207123, 1.042844313139370538,
        1.035040439828605274, 1.027181966030751292, 1.019266717460529215, 1.011292417434978441,
        1.003256679539591412, 0.995156999629943084, 0.986990747093846266, 0.978755155288937750,
        0.970447311058864615, 0.962064143217605250, 0.953602409875572654, 0.945058684462571130,
        0.936429340280896860, 0.927710533396234771, 0.918898183643734989, 0.909987953490768997,
        0.900975224455174528, 0.891855070726792376, 0.882622229578910122, 0.873271068082494550,
        0.863795545546826915, 0.854189171001560554, 0.844444954902423661, 0.834555354079518752,
        0.824512208745288633, 0.814306670128064347, 0.803929116982664893, 0.793369058833152785,
        0.782615023299588763, 0.771654424216739354, 0.760473406422083165, 0.749056662009581653,
        0.737387211425838629, 0.725446140901303549, 0.713212285182022732, 0.700661841097584448,
        0.687767892786257717, 0.674499822827436479, 0.660822574234205984, 0.646695714884388928,
        0.632072236375024632, 0.616896989996235545, 0.601104617743940417, 0.584616766093722262,
        0.567338257040473026, 0.549151702313026790, 0.529909720646495108, 0.509423329585933393,
        0.487443966121754335, 0.463634336771763245, 0.437518402186662658, 0.408389134588000746,
        0.375121332850465727, 0.335737519180459465, 0.286174591747260509, 0.215241895913273806,
        0.000000000000000000,
    ];

    #[rustfmt::skip]
    pub static F: [f64; 257] = [
        0.000477467764586655, 0.001260285930498598, 0.002609072746106363, 0.004037972593371872,
        0.005522403299264754, 0.007050875471392110, 0.008616582769422917, 0.010214971439731100,
        0.011842757857943104, 0.013497450601780807, 0.015177088307982072, 0.016880083152595839,
        0.018605121275783350, 0.020351096230109354, 0.022117062707379922, 0.023902203305873237,
        0.025705804008632656, 0.027527235669693315, 0.029365939758230111, 0.031221417192023690,
        0.033093219458688698, 0.034980941461833073, 0.036884215688691151, 0.038802707404656918,
        0.040736110656078753, 0.042684144916619378, 0.044646552251446536, 0.046623094902089664,
        0.048613553216035145, 0.050617723861121788, 0.052635418276973649, 0.054666461325077916,
        0.056710690106399467, 0.058767952921137984, 0.060838108349751806, 0.062921024437977854,
        0.065016577971470438, 0.067124653828023989, 0.069245144397250269, 0.071377949059141965,
        0.073522973714240991, 0.075680130359194964, 0.077849336702372207, 0.080030515814947509,
        0.082223595813495684, 0.084428509570654661, 0.086645194450867782, 0.088873592068594229,
        0.091113648066700734, 0.093365311913026619, 0.095628536713353335, 0.097903279039215627,
        0.100189498769172020, 0.102487158942306270, 0.104796225622867056, 0.107116667775072880,
        0.109448457147210021, 0.111791568164245583, 0.114145977828255210, 0.116511665626037014,
        0.118888613443345698, 0.121276805485235437, 0.123676228202051403, 0.126086870220650349,
        0.128508722280473636, 0.130941777174128166, 0.133386029692162844, 0.135841476571757352,
        0.138308116449064322, 0.140785949814968309, 0.143274978974047118, 0.145775208006537926,
        0.148286642733128721, 0.150809290682410169, 0.153343161060837674, 0.155888264725064563,
        0.158444614156520225, 0.161012223438117663, 0.163591108232982951, 0.166181285765110071,
        0.168782774801850333, 0.171395595638155623, 0.174019770082499359, 0.176655321444406654,
        0.179302274523530397, 0.181960655600216487, 0.184630492427504539, 0.187311814224516926,
        0.190004651671193070, 0.192709036904328807, 0.195425003514885592, 0.198152586546538112,
        0.200891822495431333, 0.203642749311121501, 0.206405406398679298, 0.209179834621935651,
        0.211966076307852941, 0.214764175252008499, 0.217574176725178370, 0.220396127481011589,
        0.223230075764789593, 0.226076071323264877, 0.228934165415577484, 0.231804410825248525,
        0.234686861873252689, 0.237581574432173676, 0.240488605941449107, 0.243408015423711988,
        0.246339863502238771, 0.249284212419516704, 0.252241126056943765, 0.255210669955677150,
        0.258192911338648023, 0.261187919133763713, 0.264195763998317568, 0.267216518344631837,
        0.270250256366959984, 0.273297054069675804, 0.276356989296781264, 0.279430141762765316,
        0.282516593084849388, 0.285616426816658109, 0.288729728483353931, 0.291856585618280984,
        0.294997087801162572, 0.298151326697901342, 0.301319396102034120, 0.304501391977896274,
        0.307697412505553769, 0.310907558127563710, 0.314131931597630143, 0.317370638031222396,
        0.320623784958230129, 0.323891482377732021, 0.327173842814958593, 0.330470981380537099,
        0.333783015832108509, 0.337110066638412809, 0.340452257045945450, 0.343809713148291340,
        0.347182563958251478, 0.350570941482881204, 0.353974980801569250, 0.357394820147290515,
        0.360830600991175754, 0.364282468130549597, 0.367750569780596226, 0.371235057669821344,
        0.374736087139491414, 0.378253817247238111, 0.381788410875031348, 0.385340034841733958,
        0.388908860020464597, 0.392495061461010764, 0.396098818517547080, 0.399720314981931668,
        0.403359739222868885, 0.407017284331247953, 0.410693148271983222, 0.414387534042706784,
        0.418100649839684591, 0.421832709231353298, 0.425583931339900579, 0.429354541031341519,
        0.433144769114574058, 0.436954852549929273, 0.440785034667769915, 0.444635565397727750,
        0.448506701509214067, 0.452398706863882505, 0.456311852680773566, 0.460246417814923481,
        0.464202689050278838, 0.468180961407822172, 0.472181538469883255, 0.476204732721683788,
        0.480250865911249714, 0.484320269428911598, 0.488413284707712059, 0.492530263646148658,
        0.496671569054796314, 0.500837575128482149, 0.505028667945828791, 0.509245245998136142,
        0.513487720749743026, 0.517756517232200619, 0.522052074674794864, 0.526374847174186700,
        0.530725304406193921, 0.535103932383019565, 0.539511234259544614, 0.543947731192649941,
        0.548413963257921133, 0.552910490428519918, 0.557437893621486324, 0.561996775817277916,
        0.566587763258951771, 0.571211506738074970, 0.575868682975210544, 0.580559996103683473,
        0.585286179266300333, 0.590047996335791969, 0.594846243770991268, 0.599681752622167719,
        0.604555390700549533, 0.609468064928895381, 0.614420723892076803, 0.619414360609039205,
        0.624450015550274240, 0.629528779928128279, 0.634651799290960050, 0.639820277456438991,
        0.645035480824251883, 0.650298743114294586, 0.655611470583224665, 0.660975147780241357,
        0.666391343912380640, 0.671861719900766374, 0.677388036222513090, 0.682972161648791376,
        0.688616083008527058, 0.694321916130032579, 0.700091918140490099, 0.705928501336797409,
        0.711834248882358467, 0.717811932634901395, 0.723864533472881599, 0.729995264565802437,
        0.736207598131266683, 0.742505296344636245, 0.748892447223726720, 0.755373506511754500,
        0.761953346841546475, 0.768637315803334831, 0.775431304986138326, 0.782341832659861902,
        0.789376143571198563, 0.796542330428254619, 0.803849483176389490, 0.811307874318219935,
        0.818929191609414797, 0.826726833952094231, 0.834716292992930375, 0.842915653118441077,
        0.851346258465123684, 0.860033621203008636, 0.869008688043793165, 0.878309655816146839,
        0.887984660763399880, 0.898095921906304051, 0.908726440060562912, 0.919991505048360247,
        0.932060075968990209, 0.945198953453078028, 0.959879091812415930, 0.977101701282731328,
        1.000000000000000000,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(file_seed: u64, block: u64, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        BlockNoise::new(file_seed, block).fill(1.0, &mut out);
        out
    }

    #[test]
    fn streams_depend_on_seed_path_and_block_only() {
        let d = |seed, path: &[u8], block| draw(file_seed(seed, path), block, 4);
        assert_eq!(d(7, b"a.wav", 3), d(7, b"a.wav", 3));
        assert_ne!(d(7, b"a.wav", 3), d(8, b"a.wav", 3));
        assert_ne!(d(7, b"a.wav", 3), d(7, b"b.wav", 3));
        assert_ne!(d(7, b"a.wav", 3), d(7, b"a.wav", 4));
    }

    #[test]
    fn variant_seeds_are_the_file_seed_for_variant_0_and_distinct_otherwise() {
        let file = file_seed(42, b"sounds/example0.wav");
        assert_eq!(variant_seed(file, 0), file);
        let seeds: std::collections::HashSet<u64> =
            (0..1000).map(|k| variant_seed(file, k)).collect();
        assert_eq!(seeds.len(), 1000);
        // Pinned: a change here changes every variant's bytes under `--seed`.
        assert_eq!(variant_seed(file, 1), PINNED_VARIANT_1);
        assert_ne!(
            variant_seed(file_seed(43, b"sounds/example0.wav"), 1),
            PINNED_VARIANT_1
        );
    }

    /// The stream is pinned: a change to any step of the algorithm changes these values, which
    /// would change every output made with `--seed`. The hash covers a whole block, whose slow
    /// path runs some 700 times (the tail some 20).
    #[test]
    fn the_stream_is_pinned() {
        let z = draw(file_seed(42, b"sounds/example0.wav"), 5, BLOCK_SAMPLES);
        let bits: Vec<u64> = z.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits[..18], PINNED, "{:?}", &z[..18]);
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(xxh3_64_with_seed(&bytes, 0), PINNED_BLOCK_XXH3);
    }

    const PINNED: [u64; 18] = [
        0xbfe541836b5864c1,
        0xbfef04d9ba045d00,
        0x3fef4940bd4f8cf1,
        0x3ff39eb52f00ee7d,
        0x3ff14621c508e9be,
        0xbfd98d535df99af7,
        0xbfe1b3d2d043fd96,
        0xbfe0ea7ef2181e29,
        0xbfc48ed48de3ab04,
        0x3ff3bb99597dee6d,
        0x3fdb69befb19df8c,
        0x3fe4842ee6c9c78f,
        0xbfe1afa0adb170a4,
        0x3ffe34429d435f9b,
        0xbfc6642f8095d35a,
        0xbf92787fd5738367,
        0xbfe3db2b6aa88026,
        0xbfc4b9eee3919cc4,
    ];
    const PINNED_VARIANT_1: u64 = 0x8635_4c26_4a97_263c;
    const PINNED_BLOCK_XXH3: u64 = 0x004f_e3b8_7e64_97ce;

    #[test]
    fn generators_are_xoshiro256plusplus_seeded_like_rand_xoshiro() {
        use rand::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro256PlusPlus;
        let (seed, block) = (0x1234_5678_9abc_def0, 77);
        let mut ours = BlockNoise::new(seed, block);
        let mut reference: Vec<Xoshiro256PlusPlus> = (0..=LANES as u64)
            .map(|index| {
                let mut key = block.to_le_bytes().to_vec();
                key.extend_from_slice(&index.to_le_bytes());
                Xoshiro256PlusPlus::seed_from_u64(xxh3_64_with_seed(&key, seed))
            })
            .collect();
        for _ in 0..100 {
            let step = ours.next();
            for (l, r) in reference[..LANES].iter_mut().enumerate() {
                assert_eq!(step[l], r.next_u64(), "lane {l}");
            }
            assert_eq!(
                xoshiro(&mut ours.slow),
                reference[LANES].next_u64(),
                "slow path"
            );
        }
    }

    #[test]
    fn the_fast_path_is_rand_distrs_ziggurat() {
        // With draws that all take the fast path, a lane gives what rand_distr's StandardNormal
        // gives from a generator with the same state (both take the layer from the low 8 bits
        // and u from the high 52).
        use rand::{RngExt, SeedableRng};
        use rand_xoshiro::Xoshiro256PlusPlus;
        let seed = 99;
        let mut noise = BlockNoise::new(seed, 0);
        let mut reference = Xoshiro256PlusPlus::seed_from_u64({
            let mut key = 0u64.to_le_bytes().to_vec();
            key.extend_from_slice(&0u64.to_le_bytes());
            xxh3_64_with_seed(&key, seed)
        });
        let mut z = vec![0.0; GROUP];
        let mut compared = 0;
        for _ in 0..2000 {
            let lane0 = noise.s.map(|w| w[0]);
            noise.fill_portable(1.0, &mut z);
            let (i, u) = layer_and_u(xoshiro(&mut lane0.clone()));
            if (u * zig::X[i]).abs() < zig::X[i + 1] {
                let r: f64 = reference.sample(rand_distr::StandardNormal);
                assert_eq!(z[0].to_bits(), r.to_bits());
                compared += 1;
            } else {
                // The two part ways here; start the reference again from the lane's state.
                let _: f64 = reference.sample(rand_distr::StandardNormal);
                reference = Xoshiro256PlusPlus::from_seed(state_bytes(noise.s.map(|w| w[0])));
            }
        }
        assert!(compared > 1900, "{compared}");
    }

    fn state_bytes(words: [u64; 4]) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn filling_in_whole_groups_continues_the_same_stream() {
        let whole = draw(9, 1, 4096);
        let mut noise = BlockNoise::new(9, 1);
        let mut parts = vec![0.0; 4096];
        for chunk in parts.chunks_mut(GROUP * 5) {
            noise.fill(1.0, chunk);
        }
        assert_eq!(whole, parts);
        // A short last piece is the start of the full one.
        assert_eq!(draw(9, 1, 100)[..], whole[..100]);
        // Sigma scales every draw exactly.
        let mut scaled = vec![0.0; 4096];
        BlockNoise::new(9, 1).fill(0.25, &mut scaled);
        assert!(whole.iter().zip(&scaled).all(|(a, b)| a * 0.25 == *b));
    }

    #[test]
    fn the_wedge_test_by_lines_is_the_wedge_test_by_exp() {
        let mut state = 5u64;
        let mut uniform = || (splitmix64(&mut state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let (mut decided, mut total) = (0, 0);
        for _ in 0..2_000_000 {
            let i = 1 + (uniform() * 255.0) as usize;
            let ax = zig::X[i + 1] + (zig::X[i] - zig::X[i + 1]) * uniform();
            let exact = libm::exp(-ax * ax / 2.0);
            // Uniform over the layer's height, and right at the density too.
            let y = zig::F[i + 1] + (zig::F[i] - zig::F[i + 1]) * uniform();
            let near = f64::from_bits(
                exact
                    .to_bits()
                    .wrapping_add_signed((uniform() * 9.0) as i64 - 4),
            );
            for y in [y, near] {
                if let Some(answer) = wedge_by_lines(i, ax, y) {
                    assert_eq!(answer, y < exact, "layer {i}, x {ax}, y {y}");
                    decided += 1;
                }
                total += 1;
            }
        }
        // Half of the points are within a few ulp of the density: those go to exp.
        assert!(decided > total * 4 / 10, "{decided} of {total}");
    }

    #[test]
    fn the_simd_and_the_plain_code_give_the_same_bits() {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // A whole block takes the slow path some 700 times, the tail some 20.
        for n in [BLOCK_SAMPLES, GROUP * 7 + 5, 3] {
            let mut portable = vec![0.0; n];
            BlockNoise::new(3, 4).fill_portable(0.1, &mut portable);
            let mut dispatched = vec![0.0; n];
            BlockNoise::new(3, 4).fill(0.1, &mut dispatched);
            assert_eq!(bits(&portable), bits(&dispatched), "{n}");
            #[cfg(target_arch = "x86_64")]
            {
                let mut simd = vec![0.0; n];
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: checked just above.
                    unsafe { BlockNoise::new(3, 4).fill_avx2(0.1, &mut simd) };
                    assert_eq!(bits(&portable), bits(&simd), "AVX2, {n}");
                } else {
                    eprintln!("no AVX2 here: its code is not checked");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked just above.
                    unsafe { BlockNoise::new(3, 4).fill_avx512(0.1, &mut simd) };
                    assert_eq!(bits(&portable), bits(&simd), "AVX-512, {n}");
                } else {
                    eprintln!("no AVX-512 here: its code is not checked");
                }
            }
        }
        // The state, the slow path's too, carries over from one call to the next the same way.
        let mut a = BlockNoise::new(5, 6);
        let mut b = a.clone();
        let (mut x, mut y) = (vec![0.0; 1024], vec![0.0; 1024]);
        for _ in 0..8 {
            a.fill_portable(1.0, &mut x);
            b.fill(1.0, &mut y);
            assert_eq!(bits(&x), bits(&y));
        }
        assert_eq!(a.slow, b.slow);
        assert_eq!(a.s, b.s);
    }

    /// The standard normal CDF, from libm's erfc.
    fn phi(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    /// Normals from many blocks, as a file would use them.
    fn normals(blocks: u64) -> Vec<f64> {
        (0..blocks)
            .flat_map(|b| draw(file_seed(11, b"moments.wav"), b, BLOCK_SAMPLES))
            .collect()
    }

    #[test]
    fn moments_are_those_of_a_standard_normal() {
        let z = normals(32); // 2M draws
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let skew = z.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n / var.powf(1.5);
        let kurt = z.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n / (var * var);
        // Standard errors at n = 2^21: mean 0.0007, variance 0.001, skewness 0.0017, kurtosis 0.0034.
        assert!(mean.abs() < 0.004, "mean {mean}");
        assert!((var - 1.0).abs() < 0.005, "variance {var}");
        assert!(skew.abs() < 0.01, "skewness {skew}");
        assert!((kurt - 3.0).abs() < 0.02, "kurtosis {kurt}");
        // The two halves of a group (cosine and sine) and neighbouring lanes are uncorrelated.
        let pairs = |lag: usize| {
            let m = z.len() - lag;
            z[..m]
                .iter()
                .zip(&z[lag..])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / m as f64
        };
        for lag in [1, LANES, GROUP] {
            assert!(pairs(lag).abs() < 0.004, "lag {lag}: {}", pairs(lag));
        }
    }

    #[test]
    fn kolmogorov_smirnov_against_the_standard_normal() {
        let mut z = normals(16); // 1M draws
        z.sort_by(f64::total_cmp);
        let n = z.len() as f64;
        let d = z
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = phi(x);
                (f - i as f64 / n).max((i + 1) as f64 / n - f)
            })
            .fold(0.0, f64::max);
        // The critical value at the 0.1% level is 1.95 / sqrt(n).
        let critical = 1.95 / n.sqrt();
        assert!(d < critical, "D = {d}, critical {critical}");
        // A sample that is not standard normal fails it: a 2% error in the scale is caught.
        let d_scaled = z
            .iter()
            .enumerate()
            .map(|(i, &x)| (phi(x * 1.02) - i as f64 / n).abs())
            .fold(0.0, f64::max);
        assert!(d_scaled > critical, "D = {d_scaled}");
    }

    #[test]
    fn tails_to_five_sigma() {
        // 2^25 draws: the expected count beyond k sigma (both sides) is n * 2 * (1 - phi(k)).
        let n = 1u64 << 25;
        let thresholds = [3.0, 4.0, 4.5, 5.0];
        let mut counts = [0u64; 4];
        let mut out = vec![0.0; BLOCK_SAMPLES];
        let seed = file_seed(5, b"tails.wav");
        for block in 0..n / BLOCK_SAMPLES as u64 {
            BlockNoise::new(seed, block).fill(1.0, &mut out);
            for x in &out {
                for (t, c) in thresholds.iter().zip(counts.iter_mut()) {
                    *c += u64::from(x.abs() > *t);
                }
            }
        }
        for (t, c) in thresholds.iter().zip(counts) {
            let expected = n as f64 * 2.0 * (1.0 - phi(*t));
            // Poisson counts: within 4.5 standard deviations (plus 3 for the smallest).
            let tolerance = 4.5 * expected.sqrt() + 3.0;
            assert!(
                (c as f64 - expected).abs() <= tolerance,
                "beyond {t} sigma: {c}, expected {expected:.1}"
            );
        }
        // At 5 sigma, 19 are expected; at least some must be there.
        assert!(counts[3] >= 5, "beyond 5 sigma: {}", counts[3]);
    }
}

//! The noise: where every sample's Gaussian draw comes from.
//!
//! Reproducibility is a contract (`--seed N` gives the same bytes whatever `-j`, the order of work,
//! a retry, or how a large file was split), so each file's samples are cut into fixed blocks of
//! [`BLOCK_SAMPLES`], and each block draws from its own generator seeded from (file seed, block
//! index). The file seed is a fixed hash (XXH3-64, xxhash-rust) of the run seed and the file's path
//! relative to the folder it was found in.
//!
//! # The algorithm, exactly
//!
//! Speed matters here (the draw is most of the per-sample work), so the stream is built to be
//! computed [`LANES`] values at a time with SIMD instructions, from portable integer and IEEE 754
//! arithmetic only (`+ - * /` and `sqrt`, all correctly rounded, no fused multiply-add, no libm):
//! the same bytes on every machine, whichever instruction set runs it.
//!
//! - **Uniforms**: [`LANES`] = 8 independent Xoshiro256++ generators (Blackman and Vigna, 2019)
//!   per block. Lane `l` of block `b` is seeded with SplitMix64 exactly as
//!   `rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(s)` does (a unit test checks this), with
//!   `s = XXH3-64(b as u64 LE ++ l as u64 LE, seed = file seed)`.
//! - **Normals**: the Box-Muller transform (Box and Muller, 1958), which is exact: two independent
//!   uniforms give two independent N(0, 1) values. One *group* of [`GROUP`] = 16 normals takes one
//!   draw `a[l]` from every lane, then one draw `b[l]` from every lane, and for each lane `l`:
//!   - `u = (a[l] >> 12) * 2^-52 + 2^-53`, in (0, 1), never 0, so `r = sqrt(-2 ln u)` is finite;
//!     the largest possible |z| is sqrt(106 ln 2) = 8.57 (a tail of probability 1e-17 is cut);
//!   - the angle `2 pi v` with `v = (b[l] >> 12) * 2^-52` is reduced exactly to a whole number of
//!     quarter turns `q` plus `t` in [-1/2, 1/2) quarter turn, so that the sine and cosine are
//!     only ever evaluated on [-pi/4, pi/4];
//!   - `group[l] = r cos(2 pi v)` and `group[8 + l] = r sin(2 pi v)`.
//!
//!   `ln`, `sin` and `cos` are the fdlibm algorithms (`e_log.c`, `k_sin.c`, `k_cos.c`, the ones
//!   the `libm` crate ports) written without branches: bit-identical to `libm::log`, and to
//!   `libm::sin`/`libm::cos` on [-pi/4, pi/4] (tests).
//! - The normals of a block are its groups in order, each scaled as `sigma * z`. A block of `n`
//!   samples uses the first `n` normals of its first `ceil(n / 16)` groups.
//!
//! The hash, the generator and the transform are named algorithms; xxhash-rust is the only crate
//! involved in the stream, so rand, rand_distr and rand_xoshiro versions do not change the bytes.
//!
//! On x86-64 the same arithmetic also runs on AVX2 (4 lanes per instruction) or AVX-512 (8),
//! chosen at run time; tests check that every path gives the same bits as the plain one.
//! `ETL_SIMD=avx2` or `ETL_SIMD=none` caps the choice, to measure or check a path.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Samples (not frames) per noise block: the unit of seeding and of splitting a file.
pub const BLOCK_SAMPLES: usize = 1 << 16;

/// Independent generators per block, advanced together.
pub const LANES: usize = 8;

/// Normals made from one draw of every lane twice.
pub const GROUP: usize = 2 * LANES;

/// The seed of one file's noise, from the run's seed and the file's relative path.
pub fn file_seed(run_seed: u64, relative_path: &[u8]) -> u64 {
    xxh3_64_with_seed(relative_path, run_seed)
}

/// The noise of one block: [`LANES`] Xoshiro256++ states, stored lane-wise so that one step of
/// all of them is a handful of vector instructions.
#[derive(Clone, Debug)]
pub struct BlockNoise {
    s: [[u64; LANES]; 4],
}

/// SplitMix64 (Steele, Lea and Flood, 2014), as rand_xoshiro seeds its generators.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl BlockNoise {
    /// The generators of block `block` of a file.
    pub fn new(file_seed: u64, block: u64) -> Self {
        let mut s = [[0u64; LANES]; 4];
        for lane in 0..LANES {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&block.to_le_bytes());
            key[8..].copy_from_slice(&(lane as u64).to_le_bytes());
            let mut state = xxh3_64_with_seed(&key, file_seed);
            // SplitMix64 is a bijection of a counter: four consecutive outputs are never all zero,
            // the one state Xoshiro must not start from.
            for word in s.iter_mut() {
                word[lane] = splitmix64(&mut state);
            }
        }
        BlockNoise { s }
    }

    /// One Xoshiro256++ step of every lane.
    #[inline(always)]
    fn next(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u64; LANES];
        for l in 0..LANES {
            out[l] = s0[l]
                .wrapping_add(s3[l])
                .rotate_left(23)
                .wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
        out
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
        let mut chunks = out.chunks_exact_mut(GROUP);
        for chunk in &mut chunks {
            self.group(sigma, chunk.try_into().unwrap());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut last = [0.0; GROUP];
            self.group(sigma, &mut last);
            rest.copy_from_slice(&last[..rest.len()]);
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

    /// The next [`GROUP`] normals, times `sigma`.
    #[inline(always)]
    fn group(&mut self, sigma: f64, out: &mut [f64; GROUP]) {
        let a = self.next();
        let b = self.next();
        let (cos_half, sin_half) = out.split_at_mut(LANES);
        for l in 0..LANES {
            let u = f64::from_bits(ONE_BITS | (a[l] >> 12)) - (1.0 - HALF_ULP_OF_ONE);
            let r = (-2.0 * ln(u)).sqrt();
            let (c, s) = cos_sin_turns(b[l] >> 12);
            cos_half[l] = sigma * (r * c);
            sin_half[l] = sigma * (r * s);
        }
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
/// 2^-53.
const HALF_ULP_OF_ONE: f64 = 1.0 / (1u64 << 53) as f64;
/// The bits of 2^52: or-ing an integer below 2^52 into them gives 2^52 + that integer, exactly.
const TWO_52_BITS: u64 = 0x4330_0000_0000_0000;
const TWO_52: f64 = (1u64 << 52) as f64;

/// fdlibm's `e_log.c`: ln 2 in two parts, and the coefficients of its polynomial (as bits, exactly).
mod ln_consts {
    pub const LN2_HI: f64 = f64::from_bits(0x3fe62e42_fee00000);
    pub const LN2_LO: f64 = f64::from_bits(0x3dea39ef_35793c76);
    pub const LG1: f64 = f64::from_bits(0x3fe55555_55555593);
    pub const LG2: f64 = f64::from_bits(0x3fd99999_9997fa04);
    pub const LG3: f64 = f64::from_bits(0x3fd24924_94229359);
    pub const LG4: f64 = f64::from_bits(0x3fcc71c5_1d8e78af);
    pub const LG5: f64 = f64::from_bits(0x3fc74664_96cb03de);
    pub const LG6: f64 = f64::from_bits(0x3fc39a09_d078c69f);
    pub const LG7: f64 = f64::from_bits(0x3fc2f112_df3e5244);
}

/// fdlibm's `k_sin.c` coefficients.
mod sin_consts {
    pub const S1: f64 = f64::from_bits(0xbfc55555_55555549);
    pub const S2: f64 = f64::from_bits(0x3f811111_1110f8a6);
    pub const S3: f64 = f64::from_bits(0xbf2a01a0_19c161d5);
    pub const S4: f64 = f64::from_bits(0x3ec71de3_57b1fe7d);
    pub const S5: f64 = f64::from_bits(0xbe5ae5e6_8a2b9ceb);
    pub const S6: f64 = f64::from_bits(0x3de5d93a_5acfd57c);
}

/// fdlibm's `k_cos.c` coefficients.
mod cos_consts {
    pub const C1: f64 = f64::from_bits(0x3fa55555_5555554c);
    pub const C2: f64 = f64::from_bits(0xbf56c16c_16c15177);
    pub const C3: f64 = f64::from_bits(0x3efa01a0_19cb1590);
    pub const C4: f64 = f64::from_bits(0xbe927e4f_809c52ad);
    pub const C5: f64 = f64::from_bits(0x3e21ee9e_bdb4b1c4);
    pub const C6: f64 = f64::from_bits(0xbda8fae9_be8838d4);
}

/// The natural logarithm of a normal, positive, finite `x`: fdlibm's `e_log.c` without its
/// special cases, with the exponent taken apart in integer arithmetic.
#[inline(always)]
fn ln(x: f64) -> f64 {
    use ln_consts::*;

    let bits = x.to_bits();
    // x = 2^k (1 + f) with sqrt(2)/2 < 1 + f < sqrt(2).
    let hx = (bits >> 32) + (0x3ff0_0000 - 0x3fe6_a09e);
    let biased_k = hx >> 20; // k + 1023, in [1, 2046]
    let hx = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    let m = f64::from_bits((hx << 32) | (bits & 0xffff_ffff));
    let dk = f64::from_bits(TWO_52_BITS | biased_k) - (TWO_52 + 1023.0);

    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

/// (cos, sin) of `v` turns, for `v = k * 2^-52` with `k < 2^52`.
#[inline(always)]
fn cos_sin_turns(k: u64) -> (f64, f64) {
    // v = q/4 + t/4 with q a whole number of quarter turns and t in [-1/2, 1/2).
    let shifted = k + (1 << 49);
    let q = shifted >> 50; // 0..=4
    let rem = shifted & ((1 << 50) - 1); // (t + 1/2) * 2^50, exactly
    let t = (f64::from_bits(TWO_52_BITS | rem) - (TWO_52 + (1u64 << 49) as f64))
        * (1.0 / (1u64 << 50) as f64);
    let x = t * std::f64::consts::FRAC_PI_2; // |x| <= pi/4
    let (c, s) = (k_cos(x), k_sin(x));
    // Turn (c, s) by q quarter turns: q = 1 gives (-s, c), 2 gives (-c, -s), 3 gives (s, -c).
    let swap = q & 1 == 1;
    let (c, s) = if swap { (s, c) } else { (c, s) };
    let cos_sign = ((q + 1) & 2) << 62;
    let sin_sign = (q & 2) << 62;
    (
        f64::from_bits(c.to_bits() ^ cos_sign),
        f64::from_bits(s.to_bits() ^ sin_sign),
    )
}

/// fdlibm's `k_sin.c` on [-pi/4, pi/4] (no tail).
#[inline(always)]
fn k_sin(x: f64) -> f64 {
    use sin_consts::*;
    let z = x * x;
    let w = z * z;
    let r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    let v = z * x;
    x + v * (S1 + z * r)
}

/// fdlibm's `k_cos.c` on [-pi/4, pi/4] (no tail).
#[inline(always)]
fn k_cos(x: f64) -> f64 {
    use cos_consts::*;
    let z = x * x;
    let w = z * z;
    let r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    w + (((1.0 - w) - hz) + z * r)
}

/// The arithmetic of [`BlockNoise::group`], [`ln`], [`cos_sin_turns`], [`k_sin`] and [`k_cos`],
/// operation for operation (so the bits are the same), on a vector of lanes at a time. Expanded
/// in a module that defines the vector types `I` (u64 lanes) and `F` (f64 lanes), `HALVES` (how
/// many vectors make the 8 lanes), and the small operations used below, for one instruction set.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_noise {
    ($feature:literal) => {
        use super::{BlockNoise, GROUP, HALF_ULP_OF_ONE, LANES, ONE_BITS, TWO_52, TWO_52_BITS};

        const WIDTH: usize = LANES / HALVES;

        /// [`BlockNoise::fill`], with the state in registers for the whole of `out`.
        #[inline]
        #[target_feature(enable = $feature)]
        pub(super) fn fill(noise: &mut BlockNoise, sigma: f64, out: &mut [f64]) {
            let mut state: [[I; 4]; HALVES] = std::array::from_fn(|h| load(noise, h));
            let sigma = real(sigma);
            let full = out.len() / GROUP;
            let mut last = [0.0; GROUP];
            for g in 0..out.len().div_ceil(GROUP) {
                let dst: &mut [f64; GROUP] = if g < full {
                    (&mut out[g * GROUP..(g + 1) * GROUP]).try_into().unwrap()
                } else {
                    &mut last
                };
                for (h, s) in state.iter_mut().enumerate() {
                    let a = next(s);
                    let b = next(s);
                    let u = sub(
                        as_real(or(int(ONE_BITS), srl::<12>(a))),
                        real(1.0 - HALF_ULP_OF_ONE),
                    );
                    let r = sqrt(mul(real(-2.0), ln(u)));
                    let (c, sn) = cos_sin_turns(srl::<12>(b));
                    store_real(&mut dst[WIDTH * h..], mul(sigma, mul(r, c)));
                    store_real(&mut dst[LANES + WIDTH * h..], mul(sigma, mul(r, sn)));
                }
            }
            let rest = out.len() - full * GROUP;
            out[full * GROUP..].copy_from_slice(&last[..rest]);
            for (h, s) in state.into_iter().enumerate() {
                store(noise, h, s);
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

        #[inline]
        #[target_feature(enable = $feature)]
        fn ln(x: F) -> F {
            use super::ln_consts::*;
            let bits = as_int(x);
            let hx = add_int(srl::<32>(bits), int(0x3ff0_0000 - 0x3fe6_a09e));
            let biased_k = srl::<20>(hx);
            let hx = add_int(and(hx, int(0x000f_ffff)), int(0x3fe6_a09e));
            let m = as_real(or(sll::<32>(hx), and(bits, int(0xffff_ffff))));
            let dk = sub(
                as_real(or(int(TWO_52_BITS), biased_k)),
                real(TWO_52 + 1023.0),
            );

            let f = sub(m, real(1.0));
            let hfsq = mul(mul(real(0.5), f), f);
            let s = div(f, add(real(2.0), f));
            let z = mul(s, s);
            let w = mul(z, z);
            let t1 = mul(w, add(real(LG2), mul(w, add(real(LG4), mul(w, real(LG6))))));
            let t2 = mul(
                z,
                add(
                    real(LG1),
                    mul(w, add(real(LG3), mul(w, add(real(LG5), mul(w, real(LG7)))))),
                ),
            );
            let r = add(t2, t1);
            let sum = add(mul(s, add(hfsq, r)), mul(dk, real(LN2_LO)));
            add(add(sub(sum, hfsq), f), mul(dk, real(LN2_HI)))
        }

        #[inline]
        #[target_feature(enable = $feature)]
        fn cos_sin_turns(k: I) -> (F, F) {
            let shifted = add_int(k, int(1 << 49));
            let q = srl::<50>(shifted);
            let rem = and(shifted, int((1 << 50) - 1));
            let t = mul(
                sub(
                    as_real(or(int(TWO_52_BITS), rem)),
                    real(TWO_52 + (1u64 << 49) as f64),
                ),
                real(1.0 / (1u64 << 50) as f64),
            );
            let x = mul(t, real(std::f64::consts::FRAC_PI_2));
            let (c, s) = (k_cos(x), k_sin(x));
            let swap = and(q, int(1));
            let (c, s) = (select(swap, s, c), select(swap, c, s));
            let cos_sign = sll::<62>(and(add_int(q, int(1)), int(2)));
            let sin_sign = sll::<62>(and(q, int(2)));
            (
                as_real(xor(as_int(c), cos_sign)),
                as_real(xor(as_int(s), sin_sign)),
            )
        }

        #[inline]
        #[target_feature(enable = $feature)]
        fn k_sin(x: F) -> F {
            use super::sin_consts::*;
            let z = mul(x, x);
            let w = mul(z, z);
            let r = add(
                add(real(S2), mul(z, add(real(S3), mul(z, real(S4))))),
                mul(mul(z, w), add(real(S5), mul(z, real(S6)))),
            );
            let v = mul(z, x);
            add(x, mul(v, add(real(S1), mul(z, r))))
        }

        #[inline]
        #[target_feature(enable = $feature)]
        fn k_cos(x: F) -> F {
            use super::cos_consts::*;
            let z = mul(x, x);
            let w = mul(z, z);
            let r = add(
                mul(z, add(real(C1), mul(z, add(real(C2), mul(z, real(C3)))))),
                mul(
                    mul(w, w),
                    add(real(C4), mul(z, add(real(C5), mul(z, real(C6))))),
                ),
            );
            let hz = mul(real(0.5), z);
            let w = sub(real(1.0), hz);
            add(w, add(sub(sub(real(1.0), w), hz), mul(z, r)))
        }
    };
}

/// Defines, for one instruction set, a one-line wrapper per vector operation the noise uses.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_ops {
    ($feature:literal, $I:ty, $F:ty, {
        $($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block)*
    }) => {
        type I = $I;
        type F = $F;
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
    simd_ops!("avx2", __m256i, __m256d, {
        int(x: u64) -> I { _mm256_set1_epi64x(x as i64) }
        real(x: f64) -> F { _mm256_set1_pd(x) }
        as_int(x: F) -> I { _mm256_castpd_si256(x) }
        as_real(x: I) -> F { _mm256_castsi256_pd(x) }
        add_int(a: I, b: I) -> I { _mm256_add_epi64(a, b) }
        and(a: I, b: I) -> I { _mm256_and_si256(a, b) }
        or(a: I, b: I) -> I { _mm256_or_si256(a, b) }
        xor(a: I, b: I) -> I { _mm256_xor_si256(a, b) }
        add(a: F, b: F) -> F { _mm256_add_pd(a, b) }
        sub(a: F, b: F) -> F { _mm256_sub_pd(a, b) }
        mul(a: F, b: F) -> F { _mm256_mul_pd(a, b) }
        div(a: F, b: F) -> F { _mm256_div_pd(a, b) }
        sqrt(a: F) -> F { _mm256_sqrt_pd(a) }
        select(bit: I, if_one: F, if_zero: F) -> F {
            let mask = _mm256_castsi256_pd(_mm256_cmpeq_epi64(bit, int(1)));
            _mm256_blendv_pd(if_zero, if_one, mask)
        }
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
            // SAFETY: as in `load`.
            unsafe { _mm256_storeu_si256(w[WIDTH * h..WIDTH * (h + 1)].as_mut_ptr().cast(), v) };
        }
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
    simd_ops!("avx512f", __m512i, __m512d, {
        int(x: u64) -> I { _mm512_set1_epi64(x as i64) }
        real(x: f64) -> F { _mm512_set1_pd(x) }
        as_int(x: F) -> I { _mm512_castpd_si512(x) }
        as_real(x: I) -> F { _mm512_castsi512_pd(x) }
        add_int(a: I, b: I) -> I { _mm512_add_epi64(a, b) }
        and(a: I, b: I) -> I { _mm512_and_si512(a, b) }
        or(a: I, b: I) -> I { _mm512_or_si512(a, b) }
        xor(a: I, b: I) -> I { _mm512_xor_si512(a, b) }
        add(a: F, b: F) -> F { _mm512_add_pd(a, b) }
        sub(a: F, b: F) -> F { _mm512_sub_pd(a, b) }
        mul(a: F, b: F) -> F { _mm512_mul_pd(a, b) }
        div(a: F, b: F) -> F { _mm512_div_pd(a, b) }
        sqrt(a: F) -> F { _mm512_sqrt_pd(a) }
        select(bit: I, if_one: F, if_zero: F) -> F {
            _mm512_mask_blend_pd(_mm512_test_epi64_mask(bit, bit), if_zero, if_one)
        }
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
            // SAFETY: as in `load`.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), v) };
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store_real(out: &mut [f64], x: F) {
        // SAFETY: checked to hold at least 8 values.
        unsafe { _mm512_storeu_pd(out[..WIDTH].as_mut_ptr(), x) }
    }

    simd_noise!("avx512f");
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

    /// The stream is pinned: a change to any step of the algorithm changes these values, which
    /// would change every output made with `--seed`.
    #[test]
    fn the_stream_is_pinned() {
        let z = draw(file_seed(42, b"sounds/example0.wav"), 5, 18);
        let bits: Vec<u64> = z.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, PINNED.to_vec(), "{z:?}");
    }

    const PINNED: [u64; 18] = [
        0xbff8dfff8927c822,
        0x3ffbb3bf3d651384,
        0xbfcc9a0afb367ac6,
        0x3fe1c257f5d26ed7,
        0xbfd8aaa05e5b0009,
        0x3febc582f89a5b39,
        0xbff3103ebd6fdcd9,
        0xbff681373d25ee7c,
        0x3fd719deaad4769c,
        0xbff0f889f6674fa0,
        0xbfe9c3bf9724d05c,
        0xbfb641ebd02a62f1,
        0x3fe4e14ef0160f71,
        0xbff11e5a93c7a5af,
        0x3febc258f0f5ea13,
        0x3fb432a7997413cc,
        0x3fd21fb8f8f7b861,
        0xbff1f3c251e58005,
    ];

    #[test]
    fn lanes_are_xoshiro256plusplus_seeded_like_rand_xoshiro() {
        use rand::{Rng, SeedableRng};
        use rand_xoshiro::Xoshiro256PlusPlus;
        let (seed, block) = (0x1234_5678_9abc_def0, 77);
        let mut ours = BlockNoise::new(seed, block);
        let mut reference: Vec<Xoshiro256PlusPlus> = (0..LANES as u64)
            .map(|lane| {
                let mut key = block.to_le_bytes().to_vec();
                key.extend_from_slice(&lane.to_le_bytes());
                Xoshiro256PlusPlus::seed_from_u64(xxh3_64_with_seed(&key, seed))
            })
            .collect();
        for _ in 0..100 {
            let step = ours.next();
            for (l, r) in reference.iter_mut().enumerate() {
                assert_eq!(step[l], r.next_u64(), "lane {l}");
            }
        }
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
    fn the_simd_and_the_plain_code_give_the_same_bits() {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for n in [8192, 16 * 7 + 5, 3] {
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
        // The state carries over from one call to the next the same way.
        let mut a = BlockNoise::new(5, 6);
        let mut b = a.clone();
        let (mut x, mut y) = (vec![0.0; 64], vec![0.0; 64]);
        for _ in 0..3 {
            a.fill_portable(1.0, &mut x);
            b.fill(1.0, &mut y);
        }
        assert_eq!(bits(&x), bits(&y));
    }

    #[test]
    fn ln_is_fdlibm_log_bit_for_bit() {
        let mut state = 1u64;
        let check = |u: f64| assert_eq!(ln(u).to_bits(), libm::log(u).to_bits(), "ln({u:e})");
        for _ in 0..1_000_000 {
            let a = splitmix64(&mut state);
            check(f64::from_bits(ONE_BITS | (a >> 12)) - (1.0 - HALF_ULP_OF_ONE));
            // Small u too, down to 2^-53, where the tail of the normal comes from.
            check(f64::from_bits(ONE_BITS | (a >> 12)) * 2f64.powi(-((a % 53) as i32) - 1));
        }
        for u in [HALF_ULP_OF_ONE, 0.5, 1.0 - HALF_ULP_OF_ONE, 0.75, 1.0 / 3.0] {
            check(u);
        }
    }

    #[test]
    fn sin_and_cos_are_fdlibm_kernels_bit_for_bit() {
        let mut state = 2u64;
        for _ in 0..1_000_000 {
            let a = splitmix64(&mut state);
            // Uniform on [-pi/4, pi/4], and small arguments too.
            let x =
                ((a >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * std::f64::consts::FRAC_PI_4;
            for x in [x, x * 2f64.powi(-((a % 40) as i32))] {
                assert_eq!(k_sin(x).to_bits(), libm::sin(x).to_bits(), "sin({x:e})");
                assert_eq!(k_cos(x).to_bits(), libm::cos(x).to_bits(), "cos({x:e})");
            }
        }
    }

    #[test]
    fn cos_and_sin_of_turns_are_those_of_the_angle() {
        let mut state = 3u64;
        let check = |k: u64| {
            let (c, s) = cos_sin_turns(k);
            // The reference angle itself is rounded (by up to 4.4e-16 near 2 pi), hence the
            // absolute tolerance.
            let angle = std::f64::consts::TAU * (k as f64 / TWO_52);
            assert!((c - libm::cos(angle)).abs() < 1.5e-15, "cos, k = {k}");
            assert!((s - libm::sin(angle)).abs() < 1.5e-15, "sin, k = {k}");
            assert!((c * c + s * s - 1.0).abs() < 5e-16, "k = {k}");
        };
        for _ in 0..1_000_000 {
            check(splitmix64(&mut state) >> 12);
        }
        for k in [
            0,
            1,
            (1 << 49) - 1,
            1 << 49,
            (1 << 50) - 1,
            1 << 50,
            3 << 49,
            (1 << 52) - 1,
        ] {
            check(k);
        }
        // Exact at the quarter turns.
        assert_eq!(cos_sin_turns(0), (1.0, 0.0));
        assert_eq!(cos_sin_turns(1 << 50), (-0.0, 1.0));
        assert_eq!(cos_sin_turns(1 << 51), (-1.0, -0.0));
        assert_eq!(cos_sin_turns(3 << 50), (0.0, -1.0));
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

//! The per-sample arithmetic: decode to [-1, 1], add noise, clip, encode back to the same format.
//!
//! Integers map to [-1, 1) by x / 2^(bits-1) (8-bit is unsigned, offset by 128), and back by
//! rounding half away from zero (exactly, with no `x + 0.5` double rounding) and saturating to the
//! type's range. Floats are added in f64 and clipped to [-1, 1]. Everything is computed in f64, so
//! 24- and 32-bit integers round correctly. A sigma of 0 leaves the bytes untouched: the identity
//! in every format, including -0.0, NaN payloads and floats outside [-1, 1].
//!
//! The work is done in place on a block of bytes, a piece of [`CHUNK`] samples at a time: first the
//! piece's noise into a small buffer that stays in the level-1 cache (vector code, see
//! [`super::noise`]), then one convert-add-clip loop over it, written so that the compiler
//! vectorises it (samples as byte arrays, no saturating casts, no branches). On x86-64 that loop is
//! also compiled for AVX2 and for AVX-512 and chosen at run time; the bytes are the same either
//! way (the same IEEE 754 operations, only more of them at once).

#[cfg(target_arch = "x86_64")]
use super::noise::Simd;
use super::noise::{BlockNoise, GROUP};
use super::wav::Encoding;

/// Samples per piece: noise for it is drawn, then added. A multiple of [`GROUP`].
pub const CHUNK: usize = 64 * GROUP;

/// Adds N(0, sigma) noise from `noise` to the samples in `buf`, in place, and returns how many
/// were clipped. `buf` holds whole samples; the noise is drawn in pieces of [`CHUNK`], so a block
/// may be handed over in several calls as long as every call but the last covers a multiple of
/// [`CHUNK`] samples.
pub fn add_block_noise(
    encoding: Encoding,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    if sigma == 0.0 {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    match Simd::detect() {
        // SAFETY: the CPU has the instructions, checked by `detect`.
        Simd::Avx512 => return unsafe { add_block_noise_avx512(encoding, sigma, noise, buf) },
        Simd::Avx2 => return unsafe { add_block_noise_avx2(encoding, sigma, noise, buf) },
        Simd::None => {}
    }
    add_block_noise_portable(encoding, sigma, noise, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_block_noise_avx2(
    encoding: Encoding,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    let fill = |noise: &mut BlockNoise, sigma, z: &mut [f64]| noise.fill_avx2(sigma, z);
    match encoding {
        Encoding::U8 => block::<U8>(sigma, noise, buf, fill),
        Encoding::I16 => block::<I16>(sigma, noise, buf, fill),
        Encoding::I24 => block::<I24>(sigma, noise, buf, fill),
        Encoding::I32 => block::<I32>(sigma, noise, buf, fill),
        Encoding::F32 => block::<F32>(sigma, noise, buf, fill),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn add_block_noise_avx512(
    encoding: Encoding,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    let fill = |noise: &mut BlockNoise, sigma, z: &mut [f64]| noise.fill_avx512(sigma, z);
    match encoding {
        Encoding::U8 => block::<U8>(sigma, noise, buf, fill),
        Encoding::I16 => block::<I16>(sigma, noise, buf, fill),
        Encoding::I24 => block::<I24>(sigma, noise, buf, fill),
        Encoding::I32 => block::<I32>(sigma, noise, buf, fill),
        Encoding::F32 => block::<F32>(sigma, noise, buf, fill),
    }
}

fn add_block_noise_portable(
    encoding: Encoding,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    let fill = BlockNoise::fill_portable;
    match encoding {
        Encoding::U8 => block::<U8>(sigma, noise, buf, fill),
        Encoding::I16 => block::<I16>(sigma, noise, buf, fill),
        Encoding::I24 => block::<I24>(sigma, noise, buf, fill),
        Encoding::I32 => block::<I32>(sigma, noise, buf, fill),
        Encoding::F32 => block::<F32>(sigma, noise, buf, fill),
    }
}

#[inline(always)]
fn block<S: Sample>(
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
    fill: impl Fn(&mut BlockNoise, f64, &mut [f64]),
) -> u64 {
    let mut z = [0f64; CHUNK];
    let mut clipped = 0;
    for piece in buf.chunks_mut(CHUNK * S::BYTES) {
        let z = &mut z[..piece.len() / S::BYTES];
        fill(noise, sigma, z);
        clipped += apply::<S>(z, piece);
    }
    clipped
}

/// Adds `noise` to the samples in `buf` (one value per sample), in place. Returns how many
/// samples were clipped.
pub fn add_noise(encoding: Encoding, noise: &[f64], buf: &mut [u8]) -> u64 {
    assert_eq!(buf.len(), noise.len() * encoding.bytes());
    #[cfg(target_arch = "x86_64")]
    match Simd::detect() {
        // SAFETY: the CPU has the instructions, checked by `detect`.
        Simd::Avx512 => return unsafe { add_noise_avx512(encoding, noise, buf) },
        Simd::Avx2 => return unsafe { add_noise_avx2(encoding, noise, buf) },
        Simd::None => {}
    }
    add_noise_portable(encoding, noise, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_noise_avx2(encoding: Encoding, noise: &[f64], buf: &mut [u8]) -> u64 {
    add_noise_portable(encoding, noise, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn add_noise_avx512(encoding: Encoding, noise: &[f64], buf: &mut [u8]) -> u64 {
    add_noise_portable(encoding, noise, buf)
}

#[inline(always)]
fn add_noise_portable(encoding: Encoding, noise: &[f64], buf: &mut [u8]) -> u64 {
    match encoding {
        Encoding::U8 => apply::<U8>(noise, buf),
        Encoding::I16 => apply::<I16>(noise, buf),
        Encoding::I24 => apply::<I24>(noise, buf),
        Encoding::I32 => apply::<I32>(noise, buf),
        Encoding::F32 => apply::<F32>(noise, buf),
    }
}

#[inline(always)]
fn apply<S: Sample>(noise: &[f64], buf: &mut [u8]) -> u64 {
    S::apply(noise, buf)
}

/// Clips to [-1, 1]; NaN stays NaN.
#[inline(always)]
fn clip(y: f64) -> f64 {
    y.clamp(-1.0, 1.0)
}

/// The sum of squares of the samples in `input`, each in [-1, 1] (for `--snr-db`).
pub fn sum_of_squares(encoding: Encoding, input: &[u8]) -> f64 {
    fn sum<S: Sample>(input: &[u8]) -> f64 {
        input
            .chunks_exact(S::BYTES)
            .map(|b| {
                let x = S::decode(b.try_into().unwrap());
                x * x
            })
            .sum()
    }
    match encoding {
        Encoding::U8 => sum::<U8>(input),
        Encoding::I16 => sum::<I16>(input),
        Encoding::I24 => sum::<I24>(input),
        Encoding::I32 => sum::<I32>(input),
        Encoding::F32 => sum::<F32>(input),
    }
}

/// Encodes values in [-1, 1] (clipping those outside) into `output`.
pub fn encode(encoding: Encoding, values: &[f64], output: &mut [u8]) {
    fn enc<S: Sample>(values: &[f64], output: &mut [u8]) {
        for (v, out) in values.iter().zip(S::samples(output)) {
            *out = S::encode(*v);
        }
    }
    match encoding {
        Encoding::U8 => enc::<U8>(values, output),
        Encoding::I16 => enc::<I16>(values, output),
        Encoding::I24 => enc::<I24>(values, output),
        Encoding::I32 => enc::<I32>(values, output),
        Encoding::F32 => enc::<F32>(values, output),
    }
}

trait Sample {
    const BYTES: usize;
    /// One sample's bytes: `[u8; BYTES]`.
    type Raw: Copy + for<'a> TryFrom<&'a [u8], Error: std::fmt::Debug>;
    fn decode(raw: Self::Raw) -> f64;
    /// Clips `y` to [-1, 1] and encodes it.
    fn encode(y: f64) -> Self::Raw;

    /// Adds `noise` to the samples in `buf` and returns how many were clipped.
    #[inline(always)]
    fn apply(noise: &[f64], buf: &mut [u8]) -> u64 {
        let mut clipped = 0u64;
        for (n, raw) in noise.iter().zip(Self::samples(buf)) {
            let y = Self::decode(*raw) + n;
            clipped += u64::from(y > 1.0) + u64::from(y < -1.0);
            *raw = Self::encode(y);
        }
        clipped
    }

    /// `buf`'s whole samples, as arrays (which the compiler vectorises better than slices).
    #[inline(always)]
    fn samples(buf: &mut [u8]) -> &mut [Self::Raw] {
        assert_eq!(size_of::<Self::Raw>(), Self::BYTES);
        assert_eq!(align_of::<Self::Raw>(), 1);
        // SAFETY: `Raw` is a byte array of `BYTES` bytes (alignment 1, no invalid values, checked
        // just above), so the whole samples of `buf` are a valid slice of it, borrowed as `buf`.
        unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast(), buf.len() / Self::BYTES) }
    }
}

/// `y` clipped to [-1, 1], times `scale` = 2^(bits-1) (at most 2^31), rounded half away from zero
/// and saturated to [-scale, scale - 1]. NaN becomes -scale (it only arises from an infinite
/// sigma), and nothing is undefined.
///
/// Exact: truncation and the fraction it drops are both exact in f64 for |v| <= 2^31, so no value
/// is rounded twice (as `(v + 0.5) as i64` would for v just below a half). Clipping to
/// [-1, (scale - 1) / scale] (exact in f64) instead of [-1, 1] saturates in the same step.
#[inline(always)]
fn to_int(y: f64, scale: f64) -> i32 {
    let hi = (scale - 1.0) / scale;
    // Written as the compare-and-select that vector max and min instructions do.
    let y = if y > -1.0 { y } else { -1.0 };
    let y = if y < hi { y } else { hi };
    let v = y * scale;
    // SAFETY: v is finite and within [-2^31, 2^31 - 1].
    let t: i32 = unsafe { v.to_int_unchecked() };
    let frac = v - t as f64;
    t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)
}

struct U8;
impl Sample for U8 {
    const BYTES: usize = 1;
    type Raw = [u8; 1];
    #[inline(always)]
    fn decode(b: [u8; 1]) -> f64 {
        (b[0] as f64 - 128.0) * (1.0 / 128.0)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 1] {
        [(to_int(y, 128.0) + 128) as u8]
    }
}

struct I16;
impl Sample for I16 {
    const BYTES: usize = 2;
    type Raw = [u8; 2];
    #[inline(always)]
    fn decode(b: [u8; 2]) -> f64 {
        i16::from_le_bytes(b) as f64 * (1.0 / 32768.0)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 2] {
        (to_int(y, 32768.0) as i16).to_le_bytes()
    }
}

struct I24;
impl Sample for I24 {
    const BYTES: usize = 3;
    type Raw = [u8; 3];
    #[inline(always)]
    fn decode(b: [u8; 3]) -> f64 {
        // Put the 24 bits at the top of an i32 and shift back down to extend the sign.
        (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f64 * (1.0 / 8_388_608.0)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 3] {
        let [a, b, c, _] = to_int(y, 8_388_608.0).to_le_bytes();
        [a, b, c]
    }

    /// Four samples (12 bytes, three 32-bit words) at a time: byte-by-byte access to 3-byte
    /// samples does not vectorise.
    #[inline(always)]
    fn apply(noise: &[f64], buf: &mut [u8]) -> u64 {
        let n = noise.len().min(buf.len() / 3);
        let (quads, _) = buf[..n * 3].as_chunks_mut::<12>();
        let (noise_quads, noise_rest) = noise[..n].as_chunks::<4>();
        let mut clipped = 0u64;
        for (q, z) in quads.iter_mut().zip(noise_quads) {
            let w =
                |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
            let (w0, w1, w2) = (w(0), w(1), w(2));
            // Sign-extend each 24-bit sample from the top of an i32.
            let x = [
                (w0 << 8) as i32 >> 8,
                ((w0 >> 24 | w1 << 8) << 8) as i32 >> 8,
                ((w1 >> 16 | w2 << 16) << 8) as i32 >> 8,
                w2 as i32 >> 8,
            ];
            let mut v = [0u32; 4];
            for i in 0..4 {
                let y = x[i] as f64 * (1.0 / 8_388_608.0) + z[i];
                clipped += u64::from(y > 1.0) + u64::from(y < -1.0);
                v[i] = to_int(y, 8_388_608.0) as u32 & 0x00ff_ffff;
            }
            let words = [
                v[0] | v[1] << 24,
                v[1] >> 8 | v[2] << 16,
                v[2] >> 16 | v[3] << 8,
            ];
            for (i, word) in words.iter().enumerate() {
                q[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
        let done = quads.len() * 4;
        for (z, raw) in noise_rest
            .iter()
            .zip(Self::samples(&mut buf[done * 3..n * 3]))
        {
            let y = Self::decode(*raw) + z;
            clipped += u64::from(y > 1.0) + u64::from(y < -1.0);
            *raw = Self::encode(y);
        }
        clipped
    }
}

struct I32;
impl Sample for I32 {
    const BYTES: usize = 4;
    type Raw = [u8; 4];
    #[inline(always)]
    fn decode(b: [u8; 4]) -> f64 {
        i32::from_le_bytes(b) as f64 * (1.0 / 2_147_483_648.0)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 4] {
        to_int(y, 2_147_483_648.0).to_le_bytes()
    }
}

struct F32;
impl Sample for F32 {
    const BYTES: usize = 4;
    type Raw = [u8; 4];
    #[inline(always)]
    fn decode(b: [u8; 4]) -> f64 {
        f32::from_le_bytes(b) as f64
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 4] {
        (clip(y) as f32).to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Encoding; 5] = [
        Encoding::U8,
        Encoding::I16,
        Encoding::I24,
        Encoding::I32,
        Encoding::F32,
    ];

    /// Every extreme and a spread of ordinary samples of each format, as bytes.
    fn samples(enc: Encoding) -> Vec<u8> {
        match enc {
            Encoding::F32 => [
                -1.0f32,
                -0.5,
                -0.0,
                0.0,
                1e-9,
                0.999,
                1.0,
                1.5,
                -7.0,
                f32::NAN,
            ]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain(f32::from_bits(0x7fa0_0001).to_le_bytes()) // a signalling NaN
            .collect(),
            _ => {
                let mut extremes = vec![0u8; 3 * enc.bytes()];
                encode(enc, &[-1.0, 1.0, 0.0], &mut extremes);
                (0..enc.bytes() * 64)
                    .map(|i| (i * 37 % 251) as u8)
                    .chain([0x00; 24])
                    .chain([0xFF; 24])
                    .chain(extremes)
                    .collect()
            }
        }
    }

    #[test]
    fn zero_sigma_gives_back_every_byte() {
        for enc in ALL {
            let bytes = samples(enc);
            let mut buf = bytes.clone();
            let mut noise = BlockNoise::new(1, 2);
            assert_eq!(add_block_noise(enc, 0.0, &mut noise, &mut buf), 0, "{enc}");
            assert_eq!(buf, bytes, "{enc}");
        }
    }

    #[test]
    fn zero_noise_gives_back_every_integer_sample() {
        for enc in ALL.into_iter().filter(|e| !e.is_float()) {
            let bytes = samples(enc);
            let mut buf = bytes.clone();
            assert_eq!(
                add_noise(enc, &vec![0.0; bytes.len() / enc.bytes()], &mut buf),
                0
            );
            assert_eq!(buf, bytes, "{enc}");
        }
    }

    #[test]
    fn large_noise_saturates_and_is_counted() {
        for enc in ALL {
            let mut buf = vec![0u8; enc.bytes() * 2];
            encode(enc, &[0.0, 0.0], &mut buf);
            assert_eq!(add_noise(enc, &[5.0, -5.0], &mut buf), 2);
            let mut extremes = vec![0u8; buf.len()];
            encode(enc, &[1.0, -1.0], &mut extremes);
            assert_eq!(buf, extremes, "{enc}");
        }
    }

    #[test]
    fn integers_round_half_away_from_zero_exactly() {
        let lsb = 1.0 / 32768.0;
        let cases: [(f64, i16); 9] = [
            (0.5 * lsb, 1),
            (-0.5 * lsb, -1),
            (0.499_999_999 * lsb, 0),
            (-0.499_999_999 * lsb, 0),
            (1.5 * lsb, 2),
            (-1.5 * lsb, -2),
            (1.0 - 0.5 * lsb, i16::MAX), // 32767.5 rounds to 32768: saturates
            (1.0, i16::MAX),
            (-1.0, i16::MIN),
        ];
        for (y, want) in cases {
            let mut out = [0u8; 2];
            encode(Encoding::I16, &[y], &mut out);
            assert_eq!(i16::from_le_bytes(out), want, "{y}");
        }
        // The largest double below one half rounds down (v + 0.5 would round it up).
        let below_half = f64::from_bits(0.5f64.to_bits() - 1);
        assert_eq!(to_int(below_half / 2_147_483_648.0, 2_147_483_648.0), 0);
        assert_eq!(to_int(-below_half / 2_147_483_648.0, 2_147_483_648.0), 0);
        assert_eq!(to_int(f64::NAN, 32768.0), -32768);
        assert_eq!(to_int(f64::INFINITY, 32768.0), 32767);
        // 32-bit integers keep all their bits through f64.
        for x in [i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX] {
            let mut buf = x.to_le_bytes();
            add_noise(Encoding::I32, &[0.0], &mut buf);
            assert_eq!(i32::from_le_bytes(buf), x);
        }
    }

    #[test]
    fn i24_in_fours_is_i24_one_at_a_time() {
        let n = 4 * 50 + 3;
        let mut state = 7u32;
        let mut bytes: Vec<u8> = (0..n * 3)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let noise: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) * 1e-3)
            .collect();
        let mut expected = bytes.clone();
        for (z, raw) in noise.iter().zip(expected.chunks_exact_mut(3)) {
            let y = I24::decode(raw.try_into().unwrap()) + z;
            raw.copy_from_slice(&I24::encode(y));
        }
        bytes[..3].copy_from_slice(&[0xff, 0xff, 0x7f]); // the largest sample, clipped below
        expected[..3].copy_from_slice(&[0xff, 0xff, 0x7f]);
        let mut big = noise.clone();
        big[0] = 1.0;
        add_noise(Encoding::I24, &big, &mut bytes);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn the_noise_added_is_the_noise_drawn() {
        // Float: y = x + n exactly as f64 then f32; integers: the noise is visible in LSBs.
        let sigma = 0.01;
        let n = 3 * CHUNK + 5;
        for enc in ALL {
            let mut values = vec![0.0; n];
            for (i, v) in values.iter_mut().enumerate() {
                *v = ((i * 7919) % 1000) as f64 / 1000.0 - 0.5;
            }
            let mut buf = vec![0u8; n * enc.bytes()];
            encode(enc, &values, &mut buf);
            let mut expected = buf.clone();
            let mut z = vec![0.0; n];
            BlockNoise::new(8, 9).fill(sigma, &mut z);
            add_noise(enc, &z, &mut expected);
            add_block_noise(enc, sigma, &mut BlockNoise::new(8, 9), &mut buf);
            assert_eq!(buf, expected, "{enc}");
        }
    }
}

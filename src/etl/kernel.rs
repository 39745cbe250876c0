//! The per-sample arithmetic: decode to [-1, 1], add noise, clip, encode back to the same format.
//!
//! Every encoding is one [`Sample`] type (decode one sample, encode one back, its size), listed
//! once in the table `with_sample!` that every function here dispatches through.
//! Integers map to [-1, 1) by x / 2^(bits-1) (8-bit is unsigned, offset by 128), and back by
//! rounding half away from zero (exactly, with no `x + 0.5` double rounding) and saturating to the
//! type's range; integers with fewer valid bits than their container are rounded on their own
//! grid. G.711 codes go through 16-bit linear with the standard tables. Floats are added in f64
//! and clipped to [-1, 1]. Everything is computed in f64, so 24- and 32-bit integers round
//! correctly. A sigma of 0 leaves the bytes untouched: the identity
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

/// The one table of encodings: which [`Sample`] type decodes and encodes each. Every function
/// that works on samples goes through it, so adding an encoding is a row here and its type below.
macro_rules! with_sample {
    ($encoding:expr, $S:ident => $body:expr) => {
        match $encoding {
            Encoding::U8 => {
                type $S = U8;
                $body
            }
            Encoding::I16 => {
                type $S = I16;
                $body
            }
            Encoding::I24 => {
                type $S = I24;
                $body
            }
            Encoding::I32 => {
                type $S = I32;
                $body
            }
            Encoding::F32 => {
                type $S = F32;
                $body
            }
            Encoding::F64 => {
                type $S = F64;
                $body
            }
            Encoding::ALaw => {
                type $S = ALaw;
                $body
            }
            Encoding::MuLaw => {
                type $S = MuLaw;
                $body
            }
        }
    };
}

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
    add_block_noise_on_grid(encoding, encoding.bits(), sigma, noise, buf)
}

/// [`add_block_noise`] for integer samples of which only the top `valid_bits` of the container
/// carry the signal (20 bits in 3 bytes, 24 in 4...): the results are rounded to that grid and
/// the unused low bits are zero. A `valid_bits` of the container's size (or 0) is the full grid;
/// floats and G.711 have no other.
pub fn add_block_noise_on_grid(
    encoding: Encoding,
    valid_bits: u16,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    if sigma == 0.0 {
        return 0;
    }
    let valid_bits = match valid_bits {
        0 => encoding.bits(),
        v => v.min(encoding.bits()),
    };
    #[cfg(target_arch = "x86_64")]
    match Simd::detect() {
        // SAFETY: the CPU has the instructions, checked by `detect`.
        Simd::Avx512 => {
            return unsafe { add_block_noise_avx512(encoding, valid_bits, sigma, noise, buf) };
        }
        Simd::Avx2 => {
            return unsafe { add_block_noise_avx2(encoding, valid_bits, sigma, noise, buf) };
        }
        Simd::None => {}
    }
    add_block_noise_portable(encoding, valid_bits, sigma, noise, buf)
}

/// Adds `noise` and rounds to a grid of `valid_bits` bits at the top of the container.
fn apply_on_grid<S: IntSample>(noise: &[f64], buf: &mut [u8], valid_bits: u16) -> u64 {
    let scale = (1u64 << (valid_bits - 1)) as f64;
    let shift = S::BYTES as u32 * 8 - valid_bits as u32;
    let mut clipped = 0u64;
    for (n, raw) in noise.iter().zip(S::samples(buf)) {
        let y = S::decode(*raw) + n;
        clipped += u64::from(y > 1.0) + u64::from(y < -1.0);
        *raw = S::from_int(to_int(y, scale) << shift);
    }
    clipped
}

/// [`add_block_noise`] from `input` in one encoding into `output` in another (`--output-format`):
/// the noise is added in the input's scale, then the result is clipped and encoded. The same noise
/// as in place, on the portable path.
pub fn add_block_noise_into(
    from: Encoding,
    to: Encoding,
    sigma: f64,
    noise: &mut BlockNoise,
    input: &[u8],
    output: &mut [u8],
) -> u64 {
    fn convert<I: Sample, O: Sample>(
        sigma: f64,
        noise: &mut BlockNoise,
        input: &[u8],
        output: &mut [u8],
    ) -> u64 {
        let mut z = [0f64; CHUNK];
        let mut clipped = 0;
        let pieces = input.chunks(CHUNK * I::BYTES);
        for (piece, out) in pieces.zip(output.chunks_mut(CHUNK * O::BYTES)) {
            let z = &mut z[..piece.len() / I::BYTES];
            if sigma != 0.0 {
                noise.fill(sigma, z);
            }
            for ((n, raw), out) in z
                .iter()
                .zip(piece.chunks_exact(I::BYTES))
                .zip(O::samples(out))
            {
                let y = I::decode(raw.try_into().unwrap()) + n;
                clipped += u64::from(y > 1.0) + u64::from(y < -1.0);
                *out = O::encode(y);
            }
        }
        clipped
    }
    with_sample!(from, I => with_sample!(to, O => convert::<I, O>(sigma, noise, input, output)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_block_noise_avx2(
    encoding: Encoding,
    valid_bits: u16,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    let fill = |noise: &mut BlockNoise, sigma, z: &mut [f64]| noise.fill_avx2(sigma, z);
    with_sample!(encoding, S => block::<S>(valid_bits, sigma, noise, buf, fill))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn add_block_noise_avx512(
    encoding: Encoding,
    valid_bits: u16,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    let fill = |noise: &mut BlockNoise, sigma, z: &mut [f64]| noise.fill_avx512(sigma, z);
    with_sample!(encoding, S => block::<S>(valid_bits, sigma, noise, buf, fill))
}

fn add_block_noise_portable(
    encoding: Encoding,
    valid_bits: u16,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
) -> u64 {
    let fill = BlockNoise::fill_portable;
    with_sample!(encoding, S => block::<S>(valid_bits, sigma, noise, buf, fill))
}

#[inline(always)]
fn block<S: Sample>(
    valid_bits: u16,
    sigma: f64,
    noise: &mut BlockNoise,
    buf: &mut [u8],
    fill: impl Fn(&mut BlockNoise, f64, &mut [f64]),
) -> u64 {
    let mut z = [0f64; CHUNK];
    let mut clipped = 0;
    let full_grid = valid_bits as usize == S::BYTES * 8;
    for piece in buf.chunks_mut(CHUNK * S::BYTES) {
        let z = &mut z[..piece.len() / S::BYTES];
        fill(noise, sigma, z);
        clipped += if full_grid {
            apply::<S>(z, piece)
        } else {
            S::apply_on_grid(z, piece, valid_bits)
        };
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
    with_sample!(encoding, S => apply::<S>(noise, buf))
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
    with_sample!(encoding, S => sum::<S>(input))
}

/// Reverses the bytes of every sample in `buf`: big-endian (RIFX) samples to little-endian and
/// back.
pub fn swap_bytes(encoding: Encoding, buf: &mut [u8]) {
    let n = encoding.bytes();
    if n > 1 {
        for sample in buf.chunks_exact_mut(n) {
            sample.reverse();
        }
    }
}

/// Encodes values in [-1, 1] (clipping those outside) into `output`.
pub fn encode(encoding: Encoding, values: &[f64], output: &mut [u8]) {
    fn enc<S: Sample>(values: &[f64], output: &mut [u8]) {
        for (v, out) in values.iter().zip(S::samples(output)) {
            *out = S::encode(*v);
        }
    }
    with_sample!(encoding, S => enc::<S>(values, output))
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

    /// [`Sample::apply`] on a grid of `valid_bits` at the top of the container; only integers
    /// have one smaller than the container.
    #[inline(always)]
    fn apply_on_grid(noise: &[f64], buf: &mut [u8], _valid_bits: u16) -> u64 {
        Self::apply(noise, buf)
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
    #[inline(always)]
    fn apply_on_grid(noise: &[f64], buf: &mut [u8], valid_bits: u16) -> u64 {
        apply_on_grid::<Self>(noise, buf, valid_bits)
    }
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
    #[inline(always)]
    fn apply_on_grid(noise: &[f64], buf: &mut [u8], valid_bits: u16) -> u64 {
        apply_on_grid::<Self>(noise, buf, valid_bits)
    }
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
    /// In fours as well, rounded on the grid of `valid_bits` (20 in 24...).
    #[inline(always)]
    fn apply_on_grid(noise: &[f64], buf: &mut [u8], valid_bits: u16) -> u64 {
        let shift = 24 - valid_bits as u32;
        i24_in_fours(noise, buf, (1u32 << (valid_bits - 1)) as f64, shift)
    }
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
        i24_in_fours(noise, buf, 8_388_608.0, 0)
    }
}

/// [`I24`]'s `apply`, rounding to `scale` = 2^(valid bits - 1) and shifting the result up by
/// `shift` = 24 - valid bits (0 and 2^23 for full 24-bit samples).
#[inline(always)]
fn i24_in_fours(noise: &[f64], buf: &mut [u8], scale: f64, shift: u32) -> u64 {
    let n = noise.len().min(buf.len() / 3);
    let (quads, _) = buf[..n * 3].as_chunks_mut::<12>();
    let (noise_quads, noise_rest) = noise[..n].as_chunks::<4>();
    let mut clipped = 0u64;
    for (q, z) in quads.iter_mut().zip(noise_quads) {
        let w = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
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
            v[i] = (to_int(y, scale) << shift) as u32 & 0x00ff_ffff;
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
        .zip(I24::samples(&mut buf[done * 3..n * 3]))
    {
        let y = I24::decode(*raw) + z;
        clipped += u64::from(y > 1.0) + u64::from(y < -1.0);
        *raw = I24::from_int(to_int(y, scale) << shift);
    }
    clipped
}

struct I32;
impl Sample for I32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn apply_on_grid(noise: &[f64], buf: &mut [u8], valid_bits: u16) -> u64 {
        apply_on_grid::<Self>(noise, buf, valid_bits)
    }
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

/// Integer samples, which can also be written from a value already scaled to the container.
trait IntSample: Sample {
    /// Encodes a value in [-2^(bits-1), 2^(bits-1) - 1].
    fn from_int(v: i32) -> Self::Raw;
}

impl IntSample for U8 {
    #[inline(always)]
    fn from_int(v: i32) -> [u8; 1] {
        [(v + 128) as u8]
    }
}

impl IntSample for I16 {
    #[inline(always)]
    fn from_int(v: i32) -> [u8; 2] {
        (v as i16).to_le_bytes()
    }
}

impl IntSample for I24 {
    #[inline(always)]
    fn from_int(v: i32) -> [u8; 3] {
        let [a, b, c, _] = v.to_le_bytes();
        [a, b, c]
    }
}

impl IntSample for I32 {
    #[inline(always)]
    fn from_int(v: i32) -> [u8; 4] {
        v.to_le_bytes()
    }
}

struct F64;
impl Sample for F64 {
    const BYTES: usize = 8;
    type Raw = [u8; 8];
    #[inline(always)]
    fn decode(b: [u8; 8]) -> f64 {
        f64::from_le_bytes(b)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 8] {
        clip(y).to_le_bytes()
    }
}

/// G.711 A-law: decoded through the standard table to 16-bit linear, encoded back by the
/// standard segment search (CCITT G.711, as in the reference `g711.c` libsndfile and sox use).
/// Every code decodes to the middle of its interval, so decoding then encoding gives the code back.
struct ALaw;
impl Sample for ALaw {
    const BYTES: usize = 1;
    type Raw = [u8; 1];
    #[inline(always)]
    fn decode(b: [u8; 1]) -> f64 {
        ALAW_TO_LINEAR[b[0] as usize] as f64 * (1.0 / 32768.0)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 1] {
        [linear_to_alaw(to_int(y, 32768.0))]
    }
}

/// G.711 µ-law, like [`ALaw`]. Its two zero codes (0xFF and 0x7F) both decode to 0; only a
/// sigma of 0 (which leaves the bytes alone) keeps a 0x7F.
struct MuLaw;
impl Sample for MuLaw {
    const BYTES: usize = 1;
    type Raw = [u8; 1];
    #[inline(always)]
    fn decode(b: [u8; 1]) -> f64 {
        ULAW_TO_LINEAR[b[0] as usize] as f64 * (1.0 / 32768.0)
    }
    #[inline(always)]
    fn encode(y: f64) -> [u8; 1] {
        [linear_to_ulaw(to_int(y, 32768.0))]
    }
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn ulaw_to_linear(code: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

const ALAW_TO_LINEAR: [i16; 256] = g711_table(true);
const ULAW_TO_LINEAR: [i16; 256] = g711_table(false);

const fn g711_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

/// A-law's segment of a magnitude `v` (13-bit linear, shifted right by 3) is its bit length
/// beyond 5, µ-law's (14-bit, biased) beyond 6: the same as searching the standard table of
/// segment ends, without the search.
const fn segment(v: i32, beyond: i32) -> i32 {
    let seg = 32 - v.leading_zeros() as i32 - beyond;
    if seg > 0 { seg } else { 0 }
}

/// A 16-bit linear value to A-law, computed.
const fn alaw_code(pcm: i32) -> u8 {
    let v = pcm >> 3;
    let (mask, v) = if v >= 0 { (0xD5, v) } else { (0x55, -v - 1) };
    let seg = segment(v, 5);
    let code = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((v >> if seg > 1 { seg } else { 1 }) & 0x0F)
    };
    (code ^ mask) as u8
}

/// A 16-bit linear value to µ-law, computed.
const fn ulaw_code(pcm: i32) -> u8 {
    const CLIP: i32 = 8159;
    let v = pcm >> 2;
    let (mask, v) = if v < 0 { (0x7F, -v) } else { (0xFF, v) };
    let v = if v < CLIP { v } else { CLIP } + (0x84 >> 2);
    let seg = segment(v, 6);
    let code = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((v >> (seg + 1)) & 0x0F)
    };
    (code ^ mask) as u8
}

/// The code of every 16-bit linear value (offset by 32768): one load per sample, where the
/// computation does not vectorise.
static LINEAR_TO_ALAW: [u8; 65536] = g711_encode_table(true);
static LINEAR_TO_ULAW: [u8; 65536] = g711_encode_table(false);

const fn g711_encode_table(alaw: bool) -> [u8; 65536] {
    let mut t = [0u8; 65536];
    let mut i = 0;
    while i < 65536 {
        let pcm = i as i32 - 32768;
        t[i] = if alaw { alaw_code(pcm) } else { ulaw_code(pcm) };
        i += 1;
    }
    t
}

/// A 16-bit linear value (as [`to_int`] gives it) to A-law.
#[inline(always)]
fn linear_to_alaw(pcm: i32) -> u8 {
    LINEAR_TO_ALAW[(pcm + 32768) as usize & 0xFFFF]
}

/// A 16-bit linear value to µ-law.
#[inline(always)]
fn linear_to_ulaw(pcm: i32) -> u8 {
    LINEAR_TO_ULAW[(pcm + 32768) as usize & 0xFFFF]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Encoding; 8] = [
        Encoding::U8,
        Encoding::I16,
        Encoding::I24,
        Encoding::I32,
        Encoding::F32,
        Encoding::F64,
        Encoding::ALaw,
        Encoding::MuLaw,
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
        // µ-law's second zero (0x7F) comes back as 0xFF: see the G.711 test below.
        for enc in ALL
            .into_iter()
            .filter(|e| !e.is_float() && *e != Encoding::MuLaw)
        {
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

    #[test]
    fn g711_codes_decode_to_the_standard_values_and_encode_back() {
        let decode = |enc, code: u8| {
            let mut z = [0.0];
            let mut buf = [code];
            add_noise(enc, &[0.0], &mut buf);
            z[0] = match enc {
                Encoding::ALaw => ALAW_TO_LINEAR[code as usize] as f64,
                _ => ULAW_TO_LINEAR[code as usize] as f64,
            };
            (buf[0], z[0])
        };
        // The reference values of G.711's tables (as libsndfile and sox decode them).
        assert_eq!(decode(Encoding::ALaw, 0xD5), (0xD5, 8.0));
        assert_eq!(decode(Encoding::ALaw, 0x55), (0x55, -8.0));
        assert_eq!(decode(Encoding::ALaw, 0xAA), (0xAA, 32256.0));
        assert_eq!(decode(Encoding::ALaw, 0x2A), (0x2A, -32256.0));
        assert_eq!(decode(Encoding::MuLaw, 0xFF), (0xFF, 0.0));
        assert_eq!(decode(Encoding::MuLaw, 0x7F), (0xFF, 0.0));
        assert_eq!(decode(Encoding::MuLaw, 0x80), (0x80, 32124.0));
        assert_eq!(decode(Encoding::MuLaw, 0x00), (0x00, -32124.0));
        for code in 0..=255u8 {
            assert_eq!(decode(Encoding::ALaw, code).0, code);
            if code != 0x7F {
                assert_eq!(decode(Encoding::MuLaw, code).0, code);
            }
        }
        // Every code survives sigma 0, µ-law's second zero included.
        for enc in [Encoding::ALaw, Encoding::MuLaw] {
            let all: Vec<u8> = (0..=255).collect();
            let mut buf = all.clone();
            add_block_noise(enc, 0.0, &mut BlockNoise::new(1, 1), &mut buf);
            assert_eq!(buf, all);
        }
    }

    #[test]
    fn valid_bits_below_the_container_stay_on_their_grid() {
        // 20 bits in 3 bytes: the low 4 bits stay zero and the noise has the asked size.
        let n = 4 * CHUNK;
        let values: Vec<f64> = (0..n).map(|i| ((i % 200) as f64 - 100.0) / 400.0).collect();
        let mut buf = vec![0u8; n * 3];
        for (v, raw) in values.iter().zip(buf.chunks_exact_mut(3)) {
            let q = to_int(*v, (1 << 19) as f64) << 4;
            raw.copy_from_slice(&I24::from_int(q));
        }
        let before = buf.clone();
        let clipped = add_block_noise_on_grid(
            Encoding::I24,
            20,
            0.01,
            &mut BlockNoise::new(3, 4),
            &mut buf,
        );
        assert_eq!(clipped, 0);
        let mut diffs = Vec::new();
        for (a, b) in before.chunks_exact(3).zip(buf.chunks_exact(3)) {
            assert_eq!(b[0] & 0x0F, 0, "low bits");
            diffs.push(I24::decode(b.try_into().unwrap()) - I24::decode(a.try_into().unwrap()));
        }
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / n as f64).sqrt();
        assert!((sd / 0.01 - 1.0).abs() < 0.05, "{sd}");
        // Saturation at the top of the grid, not of the container.
        let mut top = I16::from_int(0);
        add_block_noise_on_grid(
            Encoding::I16,
            12,
            50.0,
            &mut BlockNoise::new(1, 1),
            &mut top,
        );
        let v = i16::from_le_bytes(top);
        assert!(v == 2047 << 4 || v == -2048 << 4, "{v:#x}");
    }

    #[test]
    fn g711_encoders_are_the_reference_segment_search() {
        fn search(v: i32, ends: &[i32; 8]) -> i32 {
            ends.iter().take_while(|&&end| v > end).count() as i32
        }
        // Sun's g711.c, as written there.
        fn alaw(pcm: i32) -> u8 {
            let ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
            let v = pcm >> 3;
            let (mask, v) = if v >= 0 { (0xD5, v) } else { (0x55, -v - 1) };
            let seg = search(v, &ends);
            let code = match seg {
                8.. => 0x7F,
                0 | 1 => (seg << 4) | ((v >> 1) & 0x0F),
                _ => (seg << 4) | ((v >> seg) & 0x0F),
            };
            (code ^ mask) as u8
        }
        fn ulaw(pcm: i32) -> u8 {
            let ends = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
            let v = pcm >> 2;
            let (mask, v) = if v < 0 { (0x7F, -v) } else { (0xFF, v) };
            let v = v.min(8159) + 0x21;
            let seg = search(v, &ends);
            let code = if seg >= 8 {
                0x7F
            } else {
                (seg << 4) | ((v >> (seg + 1)) & 0x0F)
            };
            (code ^ mask) as u8
        }
        for pcm in -32768..32768 {
            assert_eq!(linear_to_alaw(pcm), alaw(pcm), "A-law of {pcm}");
            assert_eq!(linear_to_ulaw(pcm), ulaw(pcm), "µ-law of {pcm}");
        }
    }
}

//! The per-sample arithmetic: decode to [-1, 1], add noise, clip, encode back to the same format.
//!
//! Integers map to [-1, 1) by x / 2^(bits-1) (8-bit is unsigned, offset by 128), and back by
//! rounding half away from zero and saturating to the type's range, so that zero noise gives back
//! every input sample exactly. Floats are added and clipped to [-1, 1].

use super::wav::Encoding;

/// Adds `noise` to the samples in `input` and writes them to `output` (same encoding and length).
/// Returns how many samples were clipped.
pub fn add_noise(encoding: Encoding, input: &[u8], noise: &[f64], output: &mut [u8]) -> u64 {
    match encoding {
        Encoding::U8 => apply::<U8>(input, noise, output),
        Encoding::I16 => apply::<I16>(input, noise, output),
        Encoding::I24 => apply::<I24>(input, noise, output),
        Encoding::I32 => apply::<I32>(input, noise, output),
        Encoding::F32 => apply::<F32>(input, noise, output),
    }
}

/// The sum of squares of the samples in `input`, each in [-1, 1] (for `--snr-db`).
pub fn sum_of_squares(encoding: Encoding, input: &[u8]) -> f64 {
    fn sum<S: Sample>(input: &[u8]) -> f64 {
        input
            .chunks_exact(S::BYTES)
            .map(|b| {
                let x = S::decode(b);
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
        for (v, out) in values.iter().zip(output.chunks_exact_mut(S::BYTES)) {
            S::encode(v.clamp(-1.0, 1.0), out);
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

fn apply<S: Sample>(input: &[u8], noise: &[f64], output: &mut [u8]) -> u64 {
    debug_assert_eq!(input.len(), noise.len() * S::BYTES);
    let mut clipped = 0u64;
    for ((inp, n), out) in input
        .chunks_exact(S::BYTES)
        .zip(noise)
        .zip(output.chunks_exact_mut(S::BYTES))
    {
        let y = S::decode(inp) + n;
        clipped += u64::from(!(-1.0..=1.0).contains(&y) && !y.is_nan());
        S::encode(y.clamp(-1.0, 1.0), out);
    }
    clipped
}

trait Sample {
    const BYTES: usize;
    fn decode(bytes: &[u8]) -> f64;
    /// `y` is already within [-1, 1] (or NaN).
    fn encode(y: f64, out: &mut [u8]);
}

/// Rounds half away from zero and saturates to [min, max]; NaN becomes 0.
#[inline(always)]
fn to_int(y: f64, scale: f64, min: i32, max: i32) -> i32 {
    let v = y * scale;
    ((v + 0.5f64.copysign(v)) as i64).clamp(min as i64, max as i64) as i32
}

struct U8;
impl Sample for U8 {
    const BYTES: usize = 1;
    #[inline(always)]
    fn decode(b: &[u8]) -> f64 {
        (b[0] as f64 - 128.0) / 128.0
    }
    #[inline(always)]
    fn encode(y: f64, out: &mut [u8]) {
        out[0] = (to_int(y, 128.0, -128, 127) + 128) as u8;
    }
}

struct I16;
impl Sample for I16 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn decode(b: &[u8]) -> f64 {
        i16::from_le_bytes([b[0], b[1]]) as f64 / 32768.0
    }
    #[inline(always)]
    fn encode(y: f64, out: &mut [u8]) {
        let v = to_int(y, 32768.0, i16::MIN as i32, i16::MAX as i32) as i16;
        out.copy_from_slice(&v.to_le_bytes());
    }
}

struct I24;
impl Sample for I24 {
    const BYTES: usize = 3;
    #[inline(always)]
    fn decode(b: &[u8]) -> f64 {
        // Put the 24 bits at the top of an i32 and shift back down to extend the sign.
        (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f64 / 8_388_608.0
    }
    #[inline(always)]
    fn encode(y: f64, out: &mut [u8]) {
        let v = to_int(y, 8_388_608.0, -8_388_608, 8_388_607);
        out.copy_from_slice(&v.to_le_bytes()[..3]);
    }
}

struct I32;
impl Sample for I32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn decode(b: &[u8]) -> f64 {
        i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2_147_483_648.0
    }
    #[inline(always)]
    fn encode(y: f64, out: &mut [u8]) {
        let v = to_int(y, 2_147_483_648.0, i32::MIN, i32::MAX);
        out.copy_from_slice(&v.to_le_bytes());
    }
}

struct F32;
impl Sample for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    fn decode(b: &[u8]) -> f64 {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
    }
    #[inline(always)]
    fn encode(y: f64, out: &mut [u8]) {
        out.copy_from_slice(&(y as f32).to_le_bytes());
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

    #[test]
    fn zero_noise_gives_back_every_extreme_and_ordinary_sample() {
        for enc in ALL {
            let bytes: Vec<u8> = match enc {
                Encoding::F32 => [-1.0f32, -0.5, 0.0, 1e-9, 0.999, 1.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => (0..enc.bytes() * 64)
                    .map(|i| (i * 37 % 251) as u8)
                    .chain([0x00; 8].iter().copied())
                    .chain([0xFF; 8].iter().copied())
                    .take(enc.bytes() * 24)
                    .collect(),
            };
            let noise = vec![0.0; bytes.len() / enc.bytes()];
            let mut out = vec![0u8; bytes.len()];
            assert_eq!(add_noise(enc, &bytes, &noise, &mut out), 0, "{enc}");
            assert_eq!(out, bytes, "{enc}");
        }
    }

    #[test]
    fn large_noise_saturates_and_is_counted() {
        for enc in ALL {
            let input = vec![0u8; enc.bytes() * 2];
            let mut zero = vec![0u8; input.len()];
            encode(enc, &[0.0, 0.0], &mut zero);
            let mut out = vec![0u8; input.len()];
            assert_eq!(add_noise(enc, &zero, &[5.0, -5.0], &mut out), 2);
            let mut extremes = vec![0u8; input.len()];
            encode(enc, &[1.0, -1.0], &mut extremes);
            assert_eq!(out, extremes, "{enc}");
        }
    }
}

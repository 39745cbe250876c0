//! Test tones: a sine at a given frequency and amplitude, the same on every channel. Past 4 GiB
//! of samples the file is RF64.
//!
//! `gen-fake-data --frequency LOW..HIGH --duration LOW..HIGH` makes a folder of varied clips:
//! file `n`'s frequency and length are drawn uniformly from the ranges by [`tone_for`], from
//! `--seed` and `n` only (see [`super::levels::unit_draw`]), so the same seed gives the same
//! folder whatever `-j` or which files already existed.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::kernel;
use super::levels::{Span, unit_draw};
use super::wav::{self, Layout};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tone {
    pub layout: Layout,
    pub seconds: f64,
    pub frequency: f64,
    pub amplitude: f64,
}

impl Tone {
    pub fn frames(&self) -> u64 {
        (self.seconds * self.layout.sample_rate as f64).round() as u64
    }
}

/// What `gen-fake-data` was asked for: the tone of every file, or the ranges to draw each one's
/// frequency and length from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToneSpec {
    pub layout: Layout,
    pub seconds: Span,
    pub frequency: Span,
    pub amplitude: f64,
}

/// The tone of file `index` (`example{index}.wav`): its frequency drawn at
/// `unit_draw(seed, b"frequency", index)` and its length at `unit_draw(seed, b"duration", index)`.
/// With single values it is that tone, whatever the seed.
pub fn tone_for(index: u32, seed: u64, spec: &ToneSpec) -> Tone {
    Tone {
        layout: spec.layout,
        seconds: spec.seconds.at(unit_draw(seed, b"duration", index as u64)),
        frequency: spec
            .frequency
            .at(unit_draw(seed, b"frequency", index as u64)),
        amplitude: spec.amplitude,
    }
}

/// Writes the tone into `path` (a new file), block by block.
pub fn write(path: &Path, tone: &Tone) -> io::Result<()> {
    let layout = tone.layout;
    let frames = tone.frames();
    let channels = layout.channels as usize;
    let data_len = frames * layout.frame_bytes();
    let header = wav::header(wav::Container::Riff, &wav::fmt_chunk_for(layout), data_len)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = BufWriter::with_capacity(1 << 20, super::output::create_new(path)?);
    out.write_all(&header.bytes)?;

    const BLOCK_FRAMES: u64 = 16384;
    let step = std::f64::consts::TAU * tone.frequency / layout.sample_rate as f64;
    let mut values = Vec::with_capacity(BLOCK_FRAMES as usize * channels);
    let mut bytes = Vec::new();
    let mut frame = 0u64;
    while frame < frames {
        let n = (frames - frame).min(BLOCK_FRAMES);
        values.clear();
        for i in frame..frame + n {
            // The phase from the frame index, not an accumulated sum, so it does not drift.
            let v = tone.amplitude * (step * i as f64).sin();
            values.extend(std::iter::repeat_n(v, channels));
        }
        bytes.resize(values.len() * layout.encoding.bytes(), 0);
        kernel::encode(layout.encoding, &values, &mut bytes);
        out.write_all(&bytes)?;
        frame += n;
    }
    // The pad byte after an odd-sized data chunk, which the RIFF size counts.
    let pad = header.file_len - header.bytes.len() as u64 - data_len;
    out.write_all(&vec![0; pad as usize])?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::wav::Encoding;

    fn spec(seconds: Span, frequency: Span) -> ToneSpec {
        ToneSpec {
            layout: Layout {
                encoding: Encoding::I16,
                channels: 1,
                sample_rate: 16000,
            },
            seconds,
            frequency,
            amplitude: 0.5,
        }
    }

    #[test]
    fn single_values_give_the_same_tone_for_every_file() {
        let s = spec(Span::single(2.5), Span::single(440.0));
        for index in 0..20 {
            let tone = tone_for(index, index as u64 * 31, &s);
            assert_eq!((tone.seconds, tone.frequency), (2.5, 440.0));
        }
    }

    #[test]
    fn ranges_draw_per_file_from_the_seed() {
        let s = spec(
            Span {
                low: 0.5,
                high: 3.0,
            },
            Span {
                low: 200.0,
                high: 2000.0,
            },
        );
        let tones: Vec<Tone> = (0..200).map(|i| tone_for(i, 9, &s)).collect();
        assert_eq!(
            tones,
            (0..200).map(|i| tone_for(i, 9, &s)).collect::<Vec<_>>()
        );
        assert_ne!(tones[0], tone_for(0, 10, &s));
        for t in &tones {
            assert!((0.5..=3.0).contains(&t.seconds), "{t:?}");
            assert!((200.0..=2000.0).contains(&t.frequency), "{t:?}");
        }
        // Spread over the ranges, and frequency and length not drawn alike.
        let low_half = tones.iter().filter(|t| t.frequency < 1100.0).count();
        assert!(
            (60..140).contains(&low_half),
            "{low_half} of 200 below the middle"
        );
        assert!(
            tones
                .iter()
                .any(|t| (t.frequency < 1100.0) != (t.seconds < 1.75))
        );
    }
}

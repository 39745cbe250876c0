//! Test tones: a sine at a given frequency and amplitude, the same on every channel. Past 4 GiB
//! of samples the file is RF64.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::kernel;
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

//! WAV container: finding the samples in a file and writing a header for the output.
//!
//! The chunk walk is ours because the transform needs three things hound's reader does not give:
//! the raw `fmt ` chunk (copied verbatim into the output so that WAVE_FORMAT_EXTENSIBLE, the channel
//! mask and the valid bits survive), the byte offset of the samples (so that workers can read and
//! write disjoint block ranges in place), and the data size as declared (so that the placeholders
//! streaming writers leave, 0 and 0xFFFFFFFF, can be told apart from a truncated file). What the
//! `fmt ` chunk *means* is decided by hound.
//!
//! A data size of 0, 0xFFFFFFFF or (when larger than the file) sox's 0x7FFFF000 is a placeholder
//! only where the data chunk runs to the end of the file. 0xFFFFFFFF and sox's size reach past
//! the file's end, so the samples are taken to run to it. A size of 0 is also what a genuinely
//! empty recording declares; it is taken as a placeholder unless the bytes after the data
//! chunk's header read as a chain of well-formed chunks (four printable ASCII characters and a
//! size that fits in the file, each one) that ends exactly at the end of the file, as a LIST or
//! `afsp` chunk after an empty data chunk does. Then the recording is empty: 0 frames, as
//! libsndfile and scipy read it. Samples that happen to look like one chunk header almost never
//! chain to the file's last byte.
//!
//! The walk reads headers through a window of [`WINDOW`] bytes that moves forward over the
//! file, so a header made of a million tiny chunks costs a few hundred reads, not a million,
//! and a large chunk is skipped without reading it.

use std::fmt;
use std::fs::File;
use std::io::{self, Cursor};
use std::os::unix::fs::FileExt;

/// How one sample is stored. Only containers whose size equals the bit depth are supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
}

impl Encoding {
    pub fn bytes(self) -> usize {
        match self {
            Encoding::U8 => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 => 4,
        }
    }

    pub fn bits(self) -> u16 {
        self.bytes() as u16 * 8
    }

    pub fn is_float(self) -> bool {
        self == Encoding::F32
    }

    /// The name used on the command line (`--format`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::U8 => "u8",
            Encoding::I16 => "i16",
            Encoding::I24 => "i24",
            Encoding::I32 => "i32",
            Encoding::F32 => "f32",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_float() { "float" } else { "int" };
        write!(f, "{}-bit {kind}", self.bits())
    }
}

/// The audio layout of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub encoding: Encoding,
    pub channels: u16,
    pub sample_rate: u32,
}

impl Layout {
    pub fn frame_bytes(&self) -> u64 {
        self.encoding.bytes() as u64 * self.channels as u64
    }
}

/// Where the samples of a WAV file are, and how they are stored.
#[derive(Clone, Debug)]
pub struct WavInfo {
    pub layout: Layout,
    /// The `fmt ` chunk's body, as found in the file.
    pub fmt_chunk: Vec<u8>,
    /// Byte offset of the first sample.
    pub data_offset: u64,
    /// Bytes of whole frames of samples (the declared size, or the recovered one).
    pub data_len: u64,
    /// True when the data size was a streaming placeholder (0 or 0xFFFFFFFF) and was recovered
    /// from the file's length.
    pub size_recovered: bool,
}

impl WavInfo {
    pub fn frames(&self) -> u64 {
        self.data_len / self.layout.frame_bytes()
    }

    pub fn samples(&self) -> u64 {
        self.data_len / self.layout.encoding.bytes() as u64
    }
}

/// Why a file cannot be read as a WAV file. The messages name the cause only; callers add the path.
#[derive(Debug)]
pub enum WavError {
    Empty,
    NotWav(String),
    Unsupported(String),
    Malformed(String),
    Truncated { promised: u64, holds: u64 },
    Io(io::Error),
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::Empty => write!(f, "empty file"),
            WavError::NotWav(why) => write!(f, "not a WAV file: {why}"),
            WavError::Unsupported(what) => write!(f, "unsupported encoding: {what}"),
            WavError::Malformed(why) => write!(f, "malformed WAV: {why}"),
            WavError::Truncated { promised, holds } => write!(
                f,
                "truncated: header promises {promised} bytes of samples, file holds {holds}"
            ),
            WavError::Io(e) => write!(f, "{}", crate::etl::describe_io(e)),
        }
    }
}

impl std::error::Error for WavError {}

impl From<io::Error> for WavError {
    fn from(e: io::Error) -> Self {
        WavError::Io(e)
    }
}

/// The data size sox leaves on a pipe (only a placeholder when the file is shorter, since a real
/// file can hold that much). The others, 0 and 0xFFFFFFFF, are matched where they are used.
const SOX_PIPE_SIZE: u32 = 0x7FFF_F000;
/// A `fmt ` chunk larger than this is not a real one.
const MAX_FMT_LEN: u32 = 1024;

/// Bytes of the file read at a time while walking the chunks.
const WINDOW: usize = 64 << 10;

/// Reads the header of `file` and finds its samples.
pub fn probe(file: &File) -> Result<WavInfo, WavError> {
    let file_len = file.metadata()?.len();
    if file_len == 0 {
        return Err(WavError::Empty);
    }
    let mut reader = Window::new(file, file_len);
    let riff = reader.bytes(0, 12)?.to_vec();
    let got = riff.len();
    match &riff[..4.min(got)] {
        b"RIFF" if got == 12 && &riff[8..12] == b"WAVE" => {}
        b"RF64" | b"BW64" => {
            return Err(WavError::Unsupported(
                "RF64/BW64 (64-bit RIFF) files are not supported".into(),
            ));
        }
        b"RIFX" => {
            return Err(WavError::Unsupported(
                "big-endian RIFX files are not supported".into(),
            ));
        }
        _ => return Err(WavError::NotWav("no RIFF/WAVE header".into())),
    }

    let mut pos = 12u64;
    let mut fmt_chunk: Option<Vec<u8>> = None;
    loop {
        let head = reader.bytes(pos, 8)?;
        if head.len() < 8 {
            return Err(match fmt_chunk {
                None => WavError::NotWav("no fmt chunk".into()),
                Some(_) => WavError::Malformed("no data chunk".into()),
            });
        }
        let id: [u8; 4] = head[..4].try_into().unwrap();
        let size = u32::from_le_bytes(head[4..8].try_into().unwrap());
        let body = pos + 8;
        match &id {
            b"fmt " => {
                if size > MAX_FMT_LEN {
                    return Err(WavError::Malformed(format!("fmt chunk of {size} bytes")));
                }
                let bytes = reader.bytes(body, size as usize)?;
                if bytes.len() < size as usize {
                    return Err(WavError::Malformed("fmt chunk cut short".into()));
                }
                fmt_chunk = Some(bytes.to_vec());
            }
            b"data" => {
                let Some(fmt_chunk) = fmt_chunk else {
                    return Err(WavError::Malformed("data chunk before fmt chunk".into()));
                };
                let layout = interpret_fmt(&fmt_chunk)?;
                let holds = file_len.saturating_sub(body);
                let recovered = match size {
                    0 => holds > 0 && !chunks_follow(&mut reader, body)?,
                    u32::MAX => true,
                    SOX_PIPE_SIZE => size as u64 > holds,
                    _ => false,
                };
                let declared = if recovered { holds } else { size as u64 };
                if declared > holds {
                    return Err(WavError::Truncated {
                        promised: declared,
                        holds,
                    });
                }
                let frame = layout.frame_bytes();
                return Ok(WavInfo {
                    layout,
                    fmt_chunk,
                    data_offset: body,
                    data_len: declared / frame * frame,
                    size_recovered: recovered && size as u64 != holds,
                });
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        pos = body + size as u64 + (size as u64 & 1);
    }
}

/// True when the bytes from `pos` to the end of the file are a chain of well-formed chunks:
/// each a header of four printable ASCII characters and a size that fits in the file, the last
/// ending at the file's end (its pad byte may be missing). Then a data chunk of size 0 before
/// `pos` is really empty, not a placeholder for samples that run to the end.
fn chunks_follow(reader: &mut Window, mut pos: u64) -> Result<bool, WavError> {
    let file_len = reader.file_len;
    while pos < file_len {
        let head = reader.bytes(pos, 8)?;
        if head.len() < 8 || !head[..4].iter().all(|b| (0x20..=0x7E).contains(b)) {
            return Ok(false);
        }
        let size = u32::from_le_bytes(head[4..8].try_into().unwrap()) as u64;
        let end = pos + 8 + size;
        if end > file_len {
            return Ok(false);
        }
        pos = end + (size & 1);
    }
    Ok(true)
}

/// A window of the file that moves forward as the chunk walk asks for bytes: small reads are
/// served from memory, a skip past the window costs one read at the new place.
struct Window<'a> {
    file: &'a File,
    file_len: u64,
    /// The file's bytes from `start`.
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Window<'a> {
    fn new(file: &'a File, file_len: u64) -> Self {
        Window {
            file,
            file_len,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Up to `len` bytes from `pos`: fewer only where the file ends.
    fn bytes(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        if pos >= self.file_len {
            return Ok(&[]);
        }
        let end = (pos + len as u64).min(self.file_len);
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = (end.saturating_sub(pos) as usize).max(WINDOW);
            let want = want.min(self.file_len.saturating_sub(pos) as usize);
            self.buf.resize(want, 0);
            let got = read_up_to(self.file, &mut self.buf, pos)?;
            self.buf.truncate(got);
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = ((end - self.start) as usize).min(self.buf.len());
        Ok(&self.buf[from.min(to)..to])
    }
}

/// Asks hound what a `fmt ` chunk means, by showing it a minimal file made of that chunk alone.
fn interpret_fmt(fmt_chunk: &[u8]) -> Result<Layout, WavError> {
    // The encoding first: hound checks the fields' consistency before it looks at the format tag,
    // which would call a real ADPCM or A-law file malformed rather than unsupported.
    if fmt_chunk.len() >= 2 {
        let tag = u16::from_le_bytes([fmt_chunk[0], fmt_chunk[1]]);
        let tag = match tag {
            0xFFFE if fmt_chunk.len() >= 26 => u16::from_le_bytes([fmt_chunk[24], fmt_chunk[25]]),
            other => other,
        };
        if tag != 1 && tag != 3 && tag != 0xFFFE {
            return Err(WavError::Unsupported(format!(
                "{} (format tag {tag:#06x}); only PCM integer and IEEE float are supported",
                format_tag_name(tag)
            )));
        }
    }
    let mut synthetic = Vec::with_capacity(fmt_chunk.len() + 28);
    synthetic.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
    synthetic.extend_from_slice(&(fmt_chunk.len() as u32).to_le_bytes());
    synthetic.extend_from_slice(fmt_chunk);
    if fmt_chunk.len() % 2 == 1 {
        synthetic.push(0);
    }
    synthetic.extend_from_slice(b"data\0\0\0\0");
    let spec = hound::WavReader::new(Cursor::new(synthetic))
        .map_err(hound_error)?
        .spec();
    // The container size is block_align / channels (hound keeps it to itself).
    let block_align = u16::from_le_bytes([fmt_chunk[12], fmt_chunk[13]]);
    let (bits, bytes) = (spec.bits_per_sample, block_align / spec.channels.max(1));
    let encoding = match (spec.sample_format, bits, bytes) {
        (hound::SampleFormat::Int, 8, 1) => Encoding::U8,
        (hound::SampleFormat::Int, 16, 2) => Encoding::I16,
        (hound::SampleFormat::Int, 24, 3) => Encoding::I24,
        (hound::SampleFormat::Int, 32, 4) => Encoding::I32,
        (hound::SampleFormat::Float, 32, 4) => Encoding::F32,
        (hound::SampleFormat::Float, _, _) => {
            return Err(WavError::Unsupported(format!(
                "{bits}-bit float samples (only 32-bit float is supported)"
            )));
        }
        (hound::SampleFormat::Int, _, _) => {
            return Err(WavError::Unsupported(format!(
                "{bits}-bit integer samples in {bytes}-byte containers"
            )));
        }
    };
    Ok(Layout {
        encoding,
        channels: spec.channels,
        sample_rate: spec.sample_rate,
    })
}

fn format_tag_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0050 | 0x0055 => "MPEG audio",
        0x0160..=0x0163 => "Windows Media Audio",
        _ => "a compressed or unknown encoding",
    }
}

fn hound_error(e: hound::Error) -> WavError {
    let format_tag = "unsupported format tag: only PCM integer and IEEE float are supported";
    match e {
        hound::Error::Unsupported => WavError::Unsupported(format_tag.into()),
        hound::Error::FormatError("bits per sample is not 32") => {
            WavError::Unsupported("float samples that are not 32-bit".into())
        }
        hound::Error::FormatError(why) => WavError::Malformed(why.into()),
        hound::Error::IoError(e) => WavError::Malformed(format!("fmt chunk: {e}")),
        other => WavError::Malformed(other.to_string()),
    }
}

/// Reads as much of `buf` as the file holds from `offset`, returning how much it read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The header of an output file: RIFF, the given `fmt ` chunk body, and a data chunk of
/// `data_len` bytes. Samples follow it directly.
pub fn header(fmt_chunk: &[u8], data_len: u64) -> Result<Vec<u8>, WavError> {
    let pad = fmt_chunk.len() % 2;
    let header_len = 12 + 8 + fmt_chunk.len() + pad + 8;
    let riff_len = (header_len as u64 - 8) + data_len + (data_len & 1);
    let riff_len = u32::try_from(riff_len).map_err(|_| {
        WavError::Unsupported(format!(
            "{data_len} bytes of samples do not fit a WAV file (4 GiB at most)"
        ))
    })?;
    let mut out = Vec::with_capacity(header_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&(fmt_chunk.len() as u32).to_le_bytes());
    out.extend_from_slice(fmt_chunk);
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    Ok(out)
}

/// A `fmt ` chunk body for a layout, written the way sox and ffmpeg do: plain PCM or IEEE float
/// for mono and stereo up to 16 bits (and 32-bit float), WAVE_FORMAT_EXTENSIBLE otherwise.
pub fn fmt_chunk_for(layout: Layout) -> Vec<u8> {
    const PCM: u16 = 1;
    const IEEE_FLOAT: u16 = 3;
    const EXTENSIBLE: u16 = 0xFFFE;
    // KSDATAFORMAT_SUBTYPE_{PCM,IEEE_FLOAT}: the format tag followed by a fixed GUID tail.
    const GUID_TAIL: [u8; 14] = [
        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
    ];
    let enc = layout.encoding;
    let base_tag = if enc.is_float() { IEEE_FLOAT } else { PCM };
    let extensible = layout.channels > 2 || (!enc.is_float() && enc.bits() > 16);
    let block_align = layout.frame_bytes() as u16;
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&(if extensible { EXTENSIBLE } else { base_tag }).to_le_bytes());
    out.extend_from_slice(&layout.channels.to_le_bytes());
    out.extend_from_slice(&layout.sample_rate.to_le_bytes());
    out.extend_from_slice(&(layout.sample_rate * block_align as u32).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&enc.bits().to_le_bytes());
    if extensible {
        out.extend_from_slice(&22u16.to_le_bytes());
        out.extend_from_slice(&enc.bits().to_le_bytes());
        out.extend_from_slice(&channel_mask(layout.channels).to_le_bytes());
        out.extend_from_slice(&base_tag.to_le_bytes());
        out.extend_from_slice(&GUID_TAIL);
    }
    out
}

/// The usual speaker positions for a channel count (as ffmpeg assigns them), 0 when there is none.
fn channel_mask(channels: u16) -> u32 {
    match channels {
        1 => 0x4,
        2 => 0x3,
        3 => 0x7,
        4 => 0x33,
        5 => 0x37,
        6 => 0x3F,
        7 => 0x13F,
        8 => 0x63F,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn every_layout_we_write_reads_back_the_same() {
        for encoding in [
            Encoding::U8,
            Encoding::I16,
            Encoding::I24,
            Encoding::I32,
            Encoding::F32,
        ] {
            for channels in [1, 2, 6] {
                let layout = Layout {
                    encoding,
                    channels,
                    sample_rate: 48000,
                };
                let fmt = fmt_chunk_for(layout);
                let data = vec![0u8; layout.frame_bytes() as usize * 3];
                let mut bytes = header(&fmt, data.len() as u64).unwrap();
                bytes.extend_from_slice(&data);
                let info = probe(&file_with(&bytes)).unwrap();
                assert_eq!(info.layout, layout);
                assert_eq!(info.frames(), 3);
                let spec = hound::WavReader::new(Cursor::new(&bytes)).unwrap().spec();
                assert_eq!(spec.channels, channels);
                assert_eq!(spec.bits_per_sample, encoding.bits());
            }
        }
    }

    #[test]
    fn placeholder_sizes_are_recovered_and_short_files_are_truncated() {
        let layout = Layout {
            encoding: Encoding::I16,
            channels: 2,
            sample_rate: 8000,
        };
        let fmt = fmt_chunk_for(layout);
        let mut bytes = header(&fmt, 0).unwrap();
        bytes.extend_from_slice(&[1u8; 40]);
        let info = probe(&file_with(&bytes)).unwrap();
        assert_eq!((info.frames(), info.size_recovered), (10, true));

        let mut bytes = header(&fmt, 400).unwrap();
        bytes.extend_from_slice(&[1u8; 40]);
        let err = probe(&file_with(&bytes)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated: header promises 400 bytes of samples, file holds 40"
        );
    }

    #[test]
    fn non_wav_inputs_name_their_cause() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "empty file"),
            (b"hello, this is text\n", "not a WAV file"),
            (
                b"RF64\xff\xff\xff\xffWAVEds64",
                "unsupported encoding: RF64",
            ),
            (b"RIFF\x04\0\0\0WAVE", "not a WAV file: no fmt chunk"),
        ];
        for (bytes, want) in cases {
            let err = probe(&file_with(bytes)).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }
}

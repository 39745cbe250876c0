//! WAV containers: finding the samples in a file, what they are, and writing a header for the
//! output.
//!
//! The chunk walk and the `fmt ` parser are ours because the transform needs what general
//! readers do not give: the raw `fmt ` chunk (copied verbatim into the output so that
//! WAVE_FORMAT_EXTENSIBLE, the channel mask and the valid bits survive), the byte offset of the
//! samples (so that workers can read and write disjoint block ranges in place), the data size as
//! declared (so that streaming writers' placeholders can be told apart from a truncated file),
//! and every member of the family libsndfile reads: RIFF/WAVE, RF64 and BW64, big-endian RIFX and
//! Sony Wave64, in PCM of any valid bits, IEEE float and G.711. The header checks are
//! libsndfile's where they matter (no sample rate of 0, no more than 1024 channels, a block align
//! that matches), so that no output is written that other tools cannot open. The encodings
//! themselves (decoding, encoding) are [`super::kernel`]'s table.
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
use std::io;
use std::os::unix::fs::FileExt;

/// How one sample is stored: its container and what its bits mean. Integer samples may carry
/// fewer valid bits than their container ([`WavInfo::valid_bits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
    /// G.711 A-law, one byte per sample.
    ALaw,
    /// G.711 µ-law, one byte per sample.
    MuLaw,
}

impl Encoding {
    pub fn bytes(self) -> usize {
        match self {
            Encoding::U8 | Encoding::ALaw | Encoding::MuLaw => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 => 4,
            Encoding::F64 => 8,
        }
    }

    pub fn bits(self) -> u16 {
        self.bytes() as u16 * 8
    }

    pub fn is_float(self) -> bool {
        matches!(self, Encoding::F32 | Encoding::F64)
    }

    /// G.711: a logarithmic code, not a linear value.
    pub fn is_companded(self) -> bool {
        matches!(self, Encoding::ALaw | Encoding::MuLaw)
    }

    /// The WAVE format tag of its `fmt ` chunk (plain, not EXTENSIBLE).
    pub fn format_tag(self) -> u16 {
        match self {
            Encoding::F32 | Encoding::F64 => 3,
            Encoding::ALaw => 6,
            Encoding::MuLaw => 7,
            _ => 1,
        }
    }

    /// The name used on the command line (`--format`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::U8 => "u8",
            Encoding::I16 => "i16",
            Encoding::I24 => "i24",
            Encoding::I32 => "i32",
            Encoding::F32 => "f32",
            Encoding::F64 => "f64",
            Encoding::ALaw => "alaw",
            Encoding::MuLaw => "ulaw",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::ALaw => write!(f, "A-law"),
            Encoding::MuLaw => write!(f, "mu-law"),
            _ => {
                let kind = if self.is_float() { "float" } else { "int" };
                write!(f, "{}-bit {kind}", self.bits())
            }
        }
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

/// The file format around the samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Container {
    /// RIFF/WAVE: 32-bit little-endian sizes, 4 GiB at most.
    Riff,
    /// RF64 (EBU Tech 3306) or BW64 (ITU-R BS.2088), by its magic: RIFF with 64-bit sizes in a
    /// `ds64` chunk and 0xFFFFFFFF in the 32-bit fields.
    Rf64 { bw64: bool },
    /// RIFX: RIFF with big-endian sizes, `fmt ` fields and samples.
    Rifx,
    /// Sony Wave64: GUID chunk ids, 64-bit sizes that count their 24-byte header, 8-byte alignment.
    Wave64,
}

impl Container {
    pub fn name(self) -> &'static str {
        match self {
            Container::Riff => "RIFF/WAVE",
            Container::Rf64 { bw64: false } => "RF64",
            Container::Rf64 { bw64: true } => "BW64",
            Container::Rifx => "RIFX",
            Container::Wave64 => "Wave64",
        }
    }

    /// Samples and sizes are big-endian.
    pub fn big_endian(self) -> bool {
        self == Container::Rifx
    }
}

/// Where the samples of a WAV file are, and how they are stored.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WavInfo {
    pub layout: Layout,
    pub container: Container,
    /// Bits of each integer sample that carry the signal, at the top of its container (the
    /// container's size for all but the "20 bits in 3 bytes" kind of files).
    pub valid_bits: u16,
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
    UnsupportedContainer(String),
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
            WavError::UnsupportedContainer(what) => write!(f, "unsupported container: {what}"),
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

/// Wave64's GUIDs: `riff`, then the tail shared by `wave` and every chunk id (whose first four
/// bytes are the RIFF id in lower case: `fmt `, `data`).
const W64_RIFF: [u8; 16] = [
    0x72, 0x69, 0x66, 0x66, 0x2E, 0x91, 0xCF, 0x11, 0xA5, 0xD6, 0x28, 0xDB, 0x04, 0xC1, 0x00, 0x00,
];
const W64_TAIL: [u8; 12] = [
    0xF3, 0xAC, 0xD3, 0x11, 0x8C, 0xD1, 0x00, 0xC0, 0x4F, 0x8E, 0xDB, 0x8A,
];

/// One chunk's header, whatever the container.
struct ChunkHead {
    /// The RIFF id; for a Wave64 GUID of the usual kind, its first four bytes.
    id: [u8; 4],
    /// Bytes of its body.
    size: u64,
    /// The 32-bit size field as written (RIFF family only), to recognise placeholders.
    size32: Option<u32>,
    body: u64,
}

impl ChunkHead {
    fn next(&self, container: Container) -> u64 {
        match container {
            Container::Wave64 => (self.body + self.size).next_multiple_of(8),
            _ => self.body + self.size + (self.size & 1),
        }
    }
}

fn read_head(
    reader: &mut Window,
    pos: u64,
    container: Container,
    ds64_sizes: &[([u8; 4], u64)],
) -> io::Result<Option<ChunkHead>> {
    if container == Container::Wave64 {
        let head = reader.bytes(pos, 24)?;
        if head.len() < 24 {
            return Ok(None);
        }
        let id = if head[4..16] == W64_TAIL {
            head[..4].try_into().unwrap()
        } else {
            *b"\0\0\0\0"
        };
        let total = u64::from_le_bytes(head[16..24].try_into().unwrap());
        return Ok(Some(ChunkHead {
            id,
            size: total.saturating_sub(24),
            size32: None,
            body: pos + 24,
        }));
    }
    let head = reader.bytes(pos, 8)?;
    if head.len() < 8 {
        return Ok(None);
    }
    let id: [u8; 4] = head[..4].try_into().unwrap();
    let raw: [u8; 4] = head[4..8].try_into().unwrap();
    let size32 = if container.big_endian() {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    };
    // RF64: a size of 0xFFFFFFFF stands for the 64-bit one in `ds64`.
    let size = match ds64_sizes.iter().find(|(i, _)| *i == id) {
        Some((_, size)) if size32 == u32::MAX => *size,
        _ => size32 as u64,
    };
    Ok(Some(ChunkHead {
        id,
        size,
        size32: Some(size32),
        body: pos + 8,
    }))
}

/// Reads the header of `file` and finds its samples.
pub fn probe(file: &File) -> Result<WavInfo, WavError> {
    probe_with_len(file, file.metadata()?.len())
}

/// [`probe`] for a caller that has just looked at the open file: `file_len` is its length then
/// (no second look).
pub fn probe_with_len(file: &File, file_len: u64) -> Result<WavInfo, WavError> {
    probe_keeping(file, file_len).map(|(info, _)| info)
}

/// Bytes of a file read while probing it: `bytes` from offset `at` (the whole of a small file).
#[derive(Debug, Default)]
pub struct Held {
    pub at: u64,
    pub bytes: Vec<u8>,
}

impl Held {
    /// Fills `buf` with the file's bytes from `offset` if they are all held.
    pub fn copy_to(&self, buf: &mut [u8], offset: u64) -> bool {
        let Some(from) = offset.checked_sub(self.at) else {
            return false;
        };
        let held = usize::try_from(from)
            .ok()
            .and_then(|from| self.bytes.get(from..from.checked_add(buf.len())?));
        match held {
            Some(held) => {
                buf.copy_from_slice(held);
                true
            }
            None => false,
        }
    }
}

/// [`probe_with_len`], also giving the bytes it read last, so that a small file is read once.
pub fn probe_keeping(file: &File, file_len: u64) -> Result<(WavInfo, Held), WavError> {
    if file_len == 0 {
        return Err(WavError::Empty);
    }
    let mut reader = Window::new(file, file_len);
    let info = probe_from(&mut reader, file_len)?;
    let held = Held {
        at: reader.start,
        bytes: reader.buf,
    };
    Ok((info, held))
}

fn probe_from(reader: &mut Window, file_len: u64) -> Result<WavInfo, WavError> {
    let magic = reader.bytes(0, 40)?.to_vec();
    let wave = magic.get(8..12) == Some(b"WAVE");
    let (container, mut pos) = match magic.get(..4) {
        Some(b"RIFF") if wave => (Container::Riff, 12),
        Some(b"RF64") if wave => (Container::Rf64 { bw64: false }, 12),
        Some(b"BW64") if wave => (Container::Rf64 { bw64: true }, 12),
        Some(b"RIFX") if wave => (Container::Rifx, 12),
        _ if magic.len() >= 40 && magic[..16] == W64_RIFF && magic[28..40] == W64_TAIL => {
            (Container::Wave64, 40)
        }
        _ => return Err(WavError::NotWav("no RIFF/WAVE header".into())),
    };

    let mut ds64_sizes: Vec<([u8; 4], u64)> = Vec::new();
    let mut fmt: Option<(Vec<u8>, Layout, u16)> = None;
    loop {
        let Some(head) = read_head(reader, pos, container, &ds64_sizes)? else {
            return Err(match fmt {
                None => WavError::NotWav("no fmt chunk".into()),
                Some(_) => WavError::Malformed("no data chunk".into()),
            });
        };
        match &head.id {
            b"ds64" if matches!(container, Container::Rf64 { .. }) => {
                let body = reader.bytes(head.body, head.size.min(MAX_FMT_LEN as u64) as usize)?;
                if body.len() < 28 {
                    return Err(WavError::Malformed("ds64 chunk cut short".into()));
                }
                let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap());
                ds64_sizes.push((*b"RF64", u64_at(0)));
                ds64_sizes.push((*b"data", u64_at(8)));
                let table = u32::from_le_bytes(body[24..28].try_into().unwrap()) as usize;
                for entry in body[28..].chunks_exact(12).take(table) {
                    let size = u64::from_le_bytes(entry[4..12].try_into().unwrap());
                    ds64_sizes.push((entry[..4].try_into().unwrap(), size));
                }
            }
            b"fmt " => {
                if head.size > MAX_FMT_LEN as u64 {
                    return Err(WavError::Malformed(format!(
                        "fmt chunk of {} bytes",
                        head.size
                    )));
                }
                let bytes = reader.bytes(head.body, head.size as usize)?;
                if (bytes.len() as u64) < head.size {
                    return Err(WavError::Malformed("fmt chunk cut short".into()));
                }
                let bytes = bytes.to_vec();
                let (layout, valid_bits) =
                    interpret_fmt(&bytes, container).map_err(|e| in_container(e, container))?;
                fmt = Some((bytes, layout, valid_bits));
            }
            b"data" => {
                let Some((fmt_chunk, layout, valid_bits)) = fmt else {
                    return Err(WavError::Malformed("data chunk before fmt chunk".into()));
                };
                let body = head.body;
                let holds = file_len.saturating_sub(body);
                let placeholder_zero = head.size == 0 && container != Container::Wave64;
                let recovered = if placeholder_zero {
                    holds > 0 && !chunks_follow(reader, body, container.big_endian())?
                } else {
                    match (container, head.size32) {
                        (Container::Riff | Container::Rifx, Some(u32::MAX)) => true,
                        (Container::Riff | Container::Rifx, Some(SOX_PIPE_SIZE)) => {
                            head.size > holds
                        }
                        // RF64 written to a pipe leaves 0xFFFFFFFF and no ds64 size for data.
                        (Container::Rf64 { .. }, Some(u32::MAX)) => {
                            !ds64_sizes.iter().any(|(id, _)| id == b"data")
                        }
                        _ => false,
                    }
                };
                let declared = if recovered { holds } else { head.size };
                if declared > holds {
                    return Err(WavError::Truncated {
                        promised: declared,
                        holds,
                    });
                }
                let frame = layout.frame_bytes();
                return Ok(WavInfo {
                    layout,
                    container,
                    valid_bits,
                    fmt_chunk,
                    data_offset: body,
                    data_len: declared / frame * frame,
                    size_recovered: recovered && head.size != holds,
                });
            }
            _ => {}
        }
        pos = head.next(container);
    }
}

/// True when the bytes from `pos` to the end of the file are a chain of well-formed chunks:
/// each a header of four printable ASCII characters and a size that fits in the file, the last
/// ending at the file's end (its pad byte may be missing). Then a data chunk of size 0 before
/// `pos` is really empty, not a placeholder for samples that run to the end.
fn chunks_follow(reader: &mut Window, mut pos: u64, big_endian: bool) -> Result<bool, WavError> {
    let file_len = reader.file_len;
    while pos < file_len {
        let head = reader.bytes(pos, 8)?;
        if head.len() < 8 || !head[..4].iter().all(|b| (0x20..=0x7E).contains(b)) {
            return Ok(false);
        }
        let raw = head[4..8].try_into().unwrap();
        let size = if big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        } as u64;
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

/// Names the container of a refused file when it is not plain RIFF/WAVE.
fn in_container(e: WavError, container: Container) -> WavError {
    if container == Container::Riff {
        return e;
    }
    let name = container.name();
    match e {
        WavError::Unsupported(what) => WavError::Unsupported(format!("{what} (container: {name})")),
        WavError::Malformed(why) => WavError::Malformed(format!("{why} (container: {name})")),
        other => other,
    }
}

/// The most channels libsndfile accepts (its `SF_MAX_CHANNELS`).
pub const MAX_CHANNELS: u16 = 1024;

/// What a `fmt ` chunk means: the layout and the valid bits of each sample. Refuses, naming
/// the encoding and its tag, what is not transformed, and, as libsndfile does, headers whose
/// fields contradict each other.
fn interpret_fmt(fmt: &[u8], container: Container) -> Result<(Layout, u16), WavError> {
    if fmt.len() < 16 {
        return Err(WavError::Malformed(format!(
            "fmt chunk of {} bytes (16 at least)",
            fmt.len()
        )));
    }
    let big = container.big_endian();
    let u16_at = |i: usize| {
        let b = [fmt[i], fmt[i + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |i: usize| {
        let b = fmt[i..i + 4].try_into().unwrap();
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let (tag, channels, sample_rate) = (u16_at(0), u16_at(2), u32_at(4));
    let (block_align, bits) = (u16_at(12), u16_at(14));
    let (tag, valid_field) = if tag == 0xFFFE {
        if fmt.len() < 40 {
            return Err(WavError::Malformed(format!(
                "WAVE_FORMAT_EXTENSIBLE fmt chunk of {} bytes (40 at least)",
                fmt.len()
            )));
        }
        // The sub-format GUID starts with the plain format tag.
        (u16_at(24), u16_at(18))
    } else {
        (tag, 0)
    };
    let encoding = match tag {
        1 => match bits {
            1..=8 => Encoding::U8,
            9..=16 => Encoding::I16,
            17..=24 => Encoding::I24,
            25..=32 => Encoding::I32,
            0 => return Err(WavError::Malformed("0 bits per sample".into())),
            _ => {
                return Err(WavError::Unsupported(format!(
                    "{bits}-bit integer PCM (format tag 0x0001): not read by libsndfile either"
                )));
            }
        },
        3 => match bits {
            32 => Encoding::F32,
            64 => Encoding::F64,
            _ => {
                return Err(WavError::Malformed(format!(
                    "{bits}-bit IEEE float (format tag 0x0003): float samples are 32 or 64 bits"
                )));
            }
        },
        6 | 7 if bits == 8 => [Encoding::ALaw, Encoding::MuLaw][tag as usize - 6],
        6 | 7 => {
            return Err(WavError::Malformed(format!(
                "{bits}-bit {} (format tag {tag:#06x}): G.711 samples are 8 bits",
                format_tag_name(tag)
            )));
        }
        _ => {
            let why = match format_tag_name(tag) {
                "an unknown encoding" => "only PCM, IEEE float, A-law and mu-law are transformed",
                _ => "compressed encodings are not transformed",
            };
            return Err(WavError::Unsupported(format!(
                "{} (format tag {tag:#06x}): {why}",
                format_tag_name(tag)
            )));
        }
    };
    if channels == 0 {
        return Err(WavError::Malformed("0 channels".into()));
    }
    if channels > MAX_CHANNELS {
        return Err(WavError::Malformed(format!(
            "{channels} channels ({MAX_CHANNELS} at most)"
        )));
    }
    if sample_rate == 0 {
        return Err(WavError::Malformed("sample rate of 0".into()));
    }
    let container_bytes = encoding.bytes() as u64;
    if block_align as u64 != channels as u64 * container_bytes {
        return Err(WavError::Malformed(format!(
            "block align of {block_align} bytes for {channels} channels of {container_bytes} bytes"
        )));
    }
    let valid_bits = match valid_field {
        0 => bits,
        v if v <= bits => v,
        v => {
            return Err(WavError::Malformed(format!(
                "{v} valid bits in {bits}-bit samples"
            )));
        }
    };
    let valid_bits = if encoding.is_float() || encoding.is_companded() {
        encoding.bits()
    } else {
        valid_bits.min(encoding.bits())
    };
    Ok((
        Layout {
            encoding,
            channels,
            sample_rate,
        },
        valid_bits,
    ))
}

/// The usual name of a WAVE format tag (Microsoft's mmreg.h).
fn format_tag_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0010 => "OKI ADPCM",
        0x0011 => "IMA ADPCM",
        0x0014 => "G.723 ADPCM",
        0x0022 => "DSP Group TrueSpeech",
        0x0031 => "GSM 6.10",
        0x0038 => "NMS VBX ADPCM",
        0x0040 => "G.721 ADPCM",
        0x0042 => "G.723.1",
        0x0050 => "MPEG audio",
        0x0055 => "MPEG Layer 3 (MP3)",
        0x0064 => "G.726 ADPCM",
        0x0092 | 0x2000 => "Dolby AC-3",
        0x0160..=0x0163 => "Windows Media Audio",
        0x00FF | 0x1610 => "AAC",
        0xF1AC => "FLAC",
        0x674F..=0x6771 => "Ogg Vorbis",
        _ => "an unknown encoding",
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

/// An output file's header, and the file's whole length with the samples and padding.
#[derive(Clone, Debug)]
pub struct Header {
    pub bytes: Vec<u8>,
    pub container: Container,
    /// Header, samples and the padding that follows them.
    pub file_len: u64,
}

/// The header of an output file in `container`: the given `fmt ` chunk body and a data chunk of
/// `data_len` bytes; the samples follow it directly. An output that does not fit 32-bit sizes is
/// written as RF64 whatever the input was (as `ffmpeg -rf64 auto` does), except from Wave64,
/// whose sizes are 64-bit already, and RIFX, which has no 64-bit form.
pub fn header(container: Container, fmt_chunk: &[u8], data_len: u64) -> Result<Header, WavError> {
    let fmt_pad = fmt_chunk.len() % 2;
    let riff_header_len = 12 + 8 + fmt_chunk.len() + fmt_pad + 8;
    let riff_len = (riff_header_len as u64 - 8) + data_len + (data_len & 1);
    // 0xFFFFFFFF is the placeholder for "unknown": a real size must stay below it.
    let fits = riff_len < u32::MAX as u64;
    let container = match container {
        Container::Riff if !fits => Container::Rf64 { bw64: false },
        Container::Rifx if !fits => {
            return Err(WavError::UnsupportedContainer(format!(
                "RIFX: {data_len} bytes of samples do not fit its 32-bit sizes, and RF64 has no big-endian form"
            )));
        }
        other => other,
    };
    let mut out = Vec::with_capacity(riff_header_len + 36);
    let u32_field = |v: u64| {
        if container.big_endian() {
            (v as u32).to_be_bytes()
        } else {
            (v as u32).to_le_bytes()
        }
    };
    let file_len = match container {
        Container::Riff | Container::Rifx => {
            out.extend_from_slice(if container == Container::Rifx {
                b"RIFX"
            } else {
                b"RIFF"
            });
            out.extend_from_slice(&u32_field(riff_len));
            out.extend_from_slice(b"WAVEfmt ");
            out.extend_from_slice(&u32_field(fmt_chunk.len() as u64));
            out.extend_from_slice(fmt_chunk);
            out.resize(out.len() + fmt_pad, 0);
            out.extend_from_slice(b"data");
            out.extend_from_slice(&u32_field(data_len));
            riff_len + 8
        }
        Container::Rf64 { bw64 } => {
            // The ds64 chunk (28 bytes and its header) comes first and holds the real sizes.
            let riff_len = riff_len + 36;
            let block_align = u16::from_le_bytes([fmt_chunk[12], fmt_chunk[13]]).max(1);
            out.extend_from_slice(if bw64 { b"BW64" } else { b"RF64" });
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            out.extend_from_slice(b"WAVEds64");
            out.extend_from_slice(&28u32.to_le_bytes());
            out.extend_from_slice(&riff_len.to_le_bytes());
            out.extend_from_slice(&data_len.to_le_bytes());
            out.extend_from_slice(&(data_len / block_align as u64).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(b"fmt ");
            out.extend_from_slice(&(fmt_chunk.len() as u32).to_le_bytes());
            out.extend_from_slice(fmt_chunk);
            out.resize(out.len() + fmt_pad, 0);
            out.extend_from_slice(b"data");
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            riff_len + 8
        }
        Container::Wave64 => {
            let guid = |id: &[u8; 4]| {
                let mut g = id.to_vec();
                g.extend_from_slice(&W64_TAIL);
                g
            };
            let fmt_total = 24 + fmt_chunk.len() as u64;
            let header_len = 40 + fmt_total.next_multiple_of(8) + 24;
            let file_len = (header_len + data_len).next_multiple_of(8);
            out.extend_from_slice(&W64_RIFF);
            out.extend_from_slice(&file_len.to_le_bytes());
            out.extend_from_slice(&guid(b"wave"));
            out.extend_from_slice(&guid(b"fmt "));
            out.extend_from_slice(&fmt_total.to_le_bytes());
            out.extend_from_slice(fmt_chunk);
            out.resize(out.len().next_multiple_of(8), 0);
            out.extend_from_slice(&guid(b"data"));
            out.extend_from_slice(&(24 + data_len).to_le_bytes());
            file_len
        }
    };
    Ok(Header {
        bytes: out,
        container,
        file_len,
    })
}

/// A `fmt ` chunk body for a layout, written the way sox and ffmpeg do: plain PCM, IEEE float or
/// G.711 for mono and stereo up to 16 bits (and float), WAVE_FORMAT_EXTENSIBLE otherwise.
pub fn fmt_chunk_for(layout: Layout) -> Vec<u8> {
    const EXTENSIBLE: u16 = 0xFFFE;
    // KSDATAFORMAT_SUBTYPE_{PCM,IEEE_FLOAT}: the format tag followed by a fixed GUID tail.
    const GUID_TAIL: [u8; 14] = [
        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
    ];
    let enc = layout.encoding;
    let base_tag = enc.format_tag();
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
    use std::io::{Cursor, Write};

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
                let mut bytes = header(Container::Riff, &fmt, data.len() as u64)
                    .unwrap()
                    .bytes;
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
        let mut bytes = header(Container::Riff, &fmt, 0).unwrap().bytes;
        bytes.extend_from_slice(&[1u8; 40]);
        let info = probe(&file_with(&bytes)).unwrap();
        assert_eq!((info.frames(), info.size_recovered), (10, true));

        let mut bytes = header(Container::Riff, &fmt, 400).unwrap().bytes;
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
                "not a WAV file: no fmt chunk",
            ),
            (b"RIFF\x04\0\0\0WAVE", "not a WAV file: no fmt chunk"),
        ];
        for (bytes, want) in cases {
            let err = probe(&file_with(bytes)).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn every_container_we_write_probes_back_to_the_same_samples() {
        let layout = Layout {
            encoding: Encoding::F64,
            channels: 3,
            sample_rate: 96000,
        };
        let fmt = fmt_chunk_for(layout);
        let data: Vec<u8> = (0..layout.frame_bytes() as u8 * 5).collect();
        for container in [
            Container::Riff,
            Container::Rf64 { bw64: false },
            Container::Rf64 { bw64: true },
            Container::Wave64,
        ] {
            let header = header(container, &fmt, data.len() as u64).unwrap();
            assert_eq!(header.container, container);
            let mut bytes = header.bytes.clone();
            bytes.extend_from_slice(&data);
            bytes.resize(header.file_len as usize, 0);
            let info = probe(&file_with(&bytes)).unwrap();
            assert_eq!(info.container, container);
            assert_eq!(info.layout, layout);
            assert_eq!(info.data_offset, header.bytes.len() as u64);
            assert_eq!(info.data_len, data.len() as u64);
            assert!(!info.size_recovered);
        }
        // Past 4 GiB a RIFF output becomes RF64 and a RIFX one is refused.
        let big = 5 << 30;
        assert_eq!(
            header(Container::Riff, &fmt, big).unwrap().container,
            Container::Rf64 { bw64: false }
        );
        assert!(header(Container::Rifx, &fmt, big).is_err());
        assert_eq!(
            header(Container::Wave64, &fmt, big).unwrap().container,
            Container::Wave64
        );
    }
}

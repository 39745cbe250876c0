//! Transforming one file, or one block range of it: read, add noise, clip, write in place.
//!
//! The output is a temporary file that the caller names and later renames. A whole file's is
//! written unnamed and given that name only when complete ([`super::output`]). The parts of a
//! split file all open the same temporary, give it the same length and header, and write their
//! own disjoint byte ranges, so the parts may run in any order, in any process.
//! Memory is one block-sized buffer per worker, reused from file to file, whatever the file's size.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::identity::InputIdentity;
use super::output::{self, NewFile};
use super::wav::{self, WavError, WavInfo};
use super::{describe_io, kernel, noise};

/// How loud the noise is.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NoiseLevel {
    /// Standard deviation relative to full scale (1.0).
    Sigma(f64),
    /// Signal-to-noise ratio in dB against the file's RMS over all channels.
    SnrDb(f64),
}

/// What to do: which input, which output, which part of it.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub input: &'a Path,
    /// The temporary output, in the final output's folder.
    pub temp_output: &'a Path,
    pub part: u32,
    pub parts: u32,
    pub level: NoiseLevel,
    pub file_seed: u64,
    /// The output is to be made durable (by the supervisor, one flush for a batch of files):
    /// start writing it back while it is made, so that the flush waits for little.
    pub fsync: bool,
    /// The input as it was planned: the file must still be exactly that one, before the first
    /// read and after the last, or the transform fails with [`TransformError::Changed`].
    pub expect: Option<InputIdentity>,
    /// Where the samples are, as found when planning. A part of a split file reads these, never
    /// beyond, even if the file has grown since; without them the header is read again.
    pub wav: Option<&'a WavInfo>,
    /// Write the samples in this encoding instead of the input's (`--output-format`).
    pub output_format: Option<wav::Encoding>,
    /// A whole output that needs no flush is named here, by the worker: see [`Publish`].
    pub publish: Option<Publish<'a>>,
    /// The supervisor did not look at the input: refuse it, with
    /// [`TransformError::StillBeingWritten`], if it was modified less than this long ago.
    pub settle: Option<std::time::Duration>,
}

/// Where a whole output gets its final name when nothing is to be flushed first. The output is
/// made in the open folder `dir` (reached as the supervisor reaches it: from `--out-dir` without
/// following a link) and named `output` there once the input is seen unchanged a last time,
/// after the last read: its path still naming the file opened, with the size and time it had.
#[derive(Clone, Copy)]
pub struct Publish<'a> {
    pub dir: &'a output::OpenFolder,
    pub output: &'a Path,
    /// Called right before the output gets its final name (the worker holds off being stopped
    /// from then until it has said so).
    pub naming: &'a dyn Fn(),
}

impl fmt::Debug for Publish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("dir", &self.dir.fd)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// What was done.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub layout: wav::Layout,
    pub frames: u64,
    /// Samples clipped in the blocks this part processed.
    pub clipped: u64,
    /// The noise's standard deviation, relative to full scale.
    pub sigma: f64,
    pub size_recovered: bool,
    /// What the output was written as.
    pub output_encoding: wav::Encoding,
    pub output_container: wav::Container,
}

/// How the output is written: in the input's format, or converted to another encoding.
struct OutputPlan {
    header: wav::Header,
    encoding: wav::Encoding,
    /// Samples are decoded, noised and encoded into another encoding.
    converting: bool,
}

impl OutputPlan {
    fn new(info: &WavInfo, output_format: Option<wav::Encoding>) -> Result<Self, WavError> {
        let input = info.layout.encoding;
        let converting = match output_format {
            Some(e) => e != input || info.valid_bits < e.bits(),
            None => false,
        };
        if !converting {
            let header = wav::header(info.container, &info.fmt_chunk, info.data_len)?;
            return Ok(OutputPlan {
                header,
                encoding: input,
                converting,
            });
        }
        let encoding = output_format.unwrap_or(input);
        let layout = wav::Layout {
            encoding,
            ..info.layout
        };
        // The `fmt ` chunk is rebuilt, little-endian: a converted RIFX input becomes RIFF.
        let container = match info.container {
            wav::Container::Rifx => wav::Container::Riff,
            other => other,
        };
        let data_len = info.frames() * layout.frame_bytes();
        let header = wav::header(container, &wav::fmt_chunk_for(layout), data_len)?;
        Ok(OutputPlan {
            header,
            encoding,
            converting,
        })
    }
}

#[derive(Debug)]
pub enum TransformError {
    Input(WavError),
    NotRegular(&'static str),
    /// The input changed size while it was being read.
    Shrunk,
    /// The input is no longer the file that was planned (replaced, grown, rewritten).
    Changed,
    Output(io::Error),
    /// The complete output could not be given its final name.
    Publish(io::Error),
    /// Modified within the settle time: nothing was read.
    StillBeingWritten,
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformError::Input(e) => write!(f, "{e}"),
            TransformError::NotRegular(kind) => write!(f, "not a regular file: {kind}"),
            TransformError::Shrunk => write!(f, "truncated: the file shrank while it was read"),
            TransformError::Changed => write!(f, "input changed while it was being read"),
            TransformError::StillBeingWritten => write!(f, "still being written"),
            TransformError::Output(e) => write!(f, "writing the output: {}", describe_io(e)),
            TransformError::Publish(e) => {
                write!(f, "cannot rename the output into place: {}", describe_io(e))
            }
        }
    }
}

impl std::error::Error for TransformError {}

impl From<WavError> for TransformError {
    fn from(e: WavError) -> Self {
        TransformError::Input(e)
    }
}

/// Opens an input read-only, refusing anything that is not a regular file without blocking on it
/// (opening a FIFO for reading would otherwise wait for a writer forever). Gives the metadata it
/// looked at: one `statx` serves both the check that it is a regular file and the caller's
/// identity check.
pub fn open_input_with_metadata(path: &Path) -> Result<(File, Metadata), TransformError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| TransformError::Input(WavError::Io(e)))?;
    let meta = file
        .metadata()
        .map_err(|e| TransformError::Input(WavError::Io(e)))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(TransformError::NotRegular(file_kind(&kind)));
    }
    Ok((file, meta))
}

/// A word for a kind of file that is not a regular one.
pub fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The blocks part `part` of `parts` covers, out of `total`.
pub fn part_blocks(total: u64, part: u32, parts: u32) -> std::ops::Range<u64> {
    let parts = parts.max(1) as u64;
    let part = part as u64;
    (total * part / parts)..(total * (part + 1) / parts)
}

pub fn transform(req: &Request) -> Result<Stats, TransformError> {
    let (input, opened) = open_input_with_metadata(req.input)?;
    // The file must stay the one planned, or, when none was, the one opened.
    let expect = req.expect.unwrap_or_else(|| InputIdentity::of(&opened));
    let unchanged = |input: &File| match expect.matches_file(input) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransformError::Changed),
        Err(e) => Err(TransformError::Input(WavError::Io(e))),
    };
    // Before the first read: the metadata taken when opening is of the open file, so it is the
    // check (no second look needed).
    if req
        .expect
        .is_some_and(|expect| InputIdentity::of(&opened) != expect)
    {
        return Err(TransformError::Changed);
    }
    if req
        .settle
        .is_some_and(|settle| expect.still_being_written(std::time::SystemTime::now(), settle))
    {
        return Err(TransformError::StillBeingWritten);
    }
    // A read that fails because the file changed is a change, not a broken file.
    let changed_or = |e: TransformError| match unchanged(&input) {
        Err(changed @ TransformError::Changed) => changed,
        _ => e,
    };
    let probed;
    let (info, held) = match req.wav {
        Some(info) => (info, wav::Held::default()),
        None => {
            // The length from the look taken when opening (checked against the plan, if any).
            let (info, held) =
                wav::probe_keeping(&input, opened.len()).map_err(|e| changed_or(e.into()))?;
            probed = info;
            (&probed, held)
        }
    };
    // What the header's read took in (all of a small file) is not read again.
    let input = Input { file: &input, held };
    let sigma = match req.level {
        NoiseLevel::Sigma(s) => s,
        NoiseLevel::SnrDb(db) => rms(&input, info).map_err(changed_or)? / 10f64.powf(db / 20.0),
    };

    let plan = OutputPlan::new(info, req.output_format)?;
    if req.parts > 1 {
        let output = output::open_shared_temp(req.temp_output).map_err(TransformError::Output)?;
        let stats = write(req, &input, info, sigma, &plan, &output, false).map_err(changed_or)?;
        unchanged(input.file)?;
        return Ok(stats);
    }
    // Unnamed, it can have its final mode from the start: nobody can open it before it is linked.
    let mode = output::unnamed_mode(opened.mode());
    let new = match req.publish {
        Some(to) => NewFile::create_in(&to.dir.fd, req.temp_output, mode),
        None => NewFile::create_with_mode(req.temp_output, mode),
    }
    .map_err(TransformError::Output)?;
    let written = write(req, &input, info, sigma, &plan, new.file(), true)
        .map_err(changed_or)
        .and_then(|stats| match req.publish {
            // The last look before the final name: the path still names the file read, and
            // unchanged since it was opened (the same inode: its size and time are the open
            // file's, so the path's look is the descriptor's too).
            Some(_) if !expect.matches_path(req.input) => Err(TransformError::Changed),
            Some(_) => Ok(stats),
            None => unchanged(input.file).map(|()| stats),
        });
    match (written, req.publish) {
        (Ok(stats), None) => {
            new.finish().map_err(TransformError::Output)?;
            Ok(stats)
        }
        (Ok(stats), Some(to)) => {
            let mode = output::mode_from_metadata(Some(&opened));
            (to.naming)();
            new.publish_in(to.dir, to.output, mode)
                .map_err(TransformError::Publish)?;
            Ok(stats)
        }
        (Err(e), _) => {
            new.discard();
            Err(e)
        }
    }
}

/// Writes the header and this request's blocks into `output`, starting their write-back early when
/// the output is to be made durable (the supervisor flushes it, with others, before naming it).
/// A `fresh` output is new and empty, and this request writes all of it.
fn write(
    req: &Request,
    input: &Input,
    info: &WavInfo,
    sigma: f64,
    plan: &OutputPlan,
    output: &File,
    fresh: bool,
) -> Result<Stats, TransformError> {
    let header = &plan.header;
    // An odd-sized data chunk is followed by a pad byte, which the RIFF size counts (Wave64 pads
    // to 8 bytes); `set_len` leaves them zero. A fresh output written whole gets its length from
    // the writes themselves, so it needs `set_len` only for that padding (and no look at its
    // length: it is empty).
    let total_len = header.file_len;
    let big_endian = info.container.big_endian();
    let written_len = header.bytes.len() as u64 + info.samples() * plan.encoding.bytes() as u64;
    let sized = if fresh {
        written_len == total_len
    } else {
        output.metadata().map_err(TransformError::Output)?.len() == total_len
    };
    if !sized {
        output.set_len(total_len).map_err(TransformError::Output)?;
    }

    let bytes_per_sample = info.layout.encoding.bytes();
    let out_bytes_per_sample = plan.encoding.bytes();
    let mut converted = if plan.converting {
        vec![0u8; noise::BLOCK_SAMPLES * out_bytes_per_sample]
    } else {
        Vec::new()
    };
    let samples = info.samples();
    let total_blocks = samples.div_ceil(noise::BLOCK_SAMPLES as u64);
    let mut clipped = 0;
    let mut writeback = Writeback::new(output, req.fsync);
    let mut header_written = false;
    with_buffer(noise::BLOCK_SAMPLES * bytes_per_sample, |buf| {
        for block in part_blocks(total_blocks, req.part, req.parts) {
            let first = block * noise::BLOCK_SAMPLES as u64;
            let n = (samples - first).min(noise::BLOCK_SAMPLES as u64) as usize;
            let buf = &mut buf[..n * bytes_per_sample];
            let at = first * bytes_per_sample as u64;
            input.read_exact_at(buf, info.data_offset + at)?;
            let mut rng = noise::BlockNoise::new(req.file_seed, block);
            let encoding = info.layout.encoding;
            if big_endian {
                kernel::swap_bytes(encoding, buf);
            }
            let out: &[u8] = if plan.converting {
                let out = &mut converted[..n * out_bytes_per_sample];
                clipped += kernel::add_block_noise_into(
                    encoding,
                    plan.encoding,
                    sigma,
                    &mut rng,
                    buf,
                    out,
                );
                out
            } else {
                clipped += kernel::add_block_noise_on_grid(
                    encoding,
                    info.valid_bits,
                    sigma,
                    &mut rng,
                    buf,
                );
                if big_endian {
                    kernel::swap_bytes(encoding, buf);
                }
                buf
            };
            let offset = header.bytes.len() as u64 + first * out_bytes_per_sample as u64;
            if first == 0 {
                // The first block follows the header: one system call writes both.
                write_all_at_pair(output, &header.bytes, out).map_err(TransformError::Output)?;
                header_written = true;
            } else {
                output
                    .write_all_at(out, offset)
                    .map_err(TransformError::Output)?;
            }
            writeback.written(offset, out.len() as u64);
        }
        Ok::<(), TransformError>(())
    })?;
    if !header_written {
        output
            .write_all_at(&header.bytes, 0)
            .map_err(TransformError::Output)?;
    }
    Ok(Stats {
        layout: info.layout,
        frames: info.frames(),
        clipped,
        sigma,
        size_recovered: info.size_recovered,
        output_encoding: plan.encoding,
        output_container: header.container,
    })
}

/// The input being read, and the bytes of it already read.
struct Input<'a> {
    file: &'a File,
    held: wav::Held,
}

impl Input<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), TransformError> {
        if self.held.copy_to(buf, offset) {
            return Ok(());
        }
        read_exact_at(self.file, buf, offset)
    }
}

/// The RMS of all samples of all channels, in [0, 1].
fn rms(input: &Input, info: &WavInfo) -> Result<f64, TransformError> {
    let mut sum = 0f64;
    with_buffer(noise::BLOCK_SAMPLES * info.layout.encoding.bytes(), |buf| {
        let mut at = 0u64;
        while at < info.data_len {
            let len = (info.data_len - at).min(buf.len() as u64) as usize;
            input.read_exact_at(&mut buf[..len], info.data_offset + at)?;
            if info.container.big_endian() {
                kernel::swap_bytes(info.layout.encoding, &mut buf[..len]);
            }
            sum += kernel::sum_of_squares(info.layout.encoding, &buf[..len]);
            at += len as u64;
        }
        Ok::<(), TransformError>(())
    })?;
    Ok((sum / info.samples().max(1) as f64).sqrt())
}

/// Runs `f` on this thread's sample buffer, at least `len` bytes long. A worker transforms one
/// file after another: reusing one buffer spares each of them allocating (and the kernel
/// zeroing) fresh pages, which is most of the work for a short file.
fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|b| {
        let mut buf = b.take();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let result = f(&mut buf[..len]);
        b.replace(buf);
        result
    })
}

/// Starts writing the output to the disk while it is being made, when it is to be flushed at the
/// end: the final flush then waits for the last few megabytes instead of the whole file, and the
/// page cache holds little dirty data at any time.
struct Writeback<'a> {
    file: &'a File,
    enabled: bool,
    /// Written but not yet handed to the disk: [start, end).
    pending: std::ops::Range<u64>,
}

impl<'a> Writeback<'a> {
    /// Bytes handed to the disk at a time.
    const STEP: u64 = 8 << 20;

    fn new(file: &'a File, enabled: bool) -> Self {
        Writeback {
            file,
            enabled: enabled && cfg!(target_os = "linux"),
            pending: 0..0,
        }
    }

    fn written(&mut self, offset: u64, len: u64) {
        if !self.enabled {
            return;
        }
        if self.pending.end != offset {
            self.pending = offset..offset;
        }
        self.pending.end = offset + len;
        if self.pending.end - self.pending.start >= Self::STEP {
            self.start(self.pending.clone());
            self.pending = self.pending.end..self.pending.end;
        }
    }

    #[cfg(target_os = "linux")]
    fn start(&self, range: std::ops::Range<u64>) {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on an open descriptor. It only starts write-back; an error
        // here is not a failure (the flush before the rename decides), so it is ignored.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                range.start as libc::off64_t,
                (range.end - range.start) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start(&self, _range: std::ops::Range<u64>) {}
}

/// Writes `first` at offset 0 of `file` and `second` right after it, with one `pwritev` when
/// the kernel takes it all (it does for regular files, short of a full disk).
fn write_all_at_pair(file: &File, first: &[u8], second: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let iov = [
        libc::iovec {
            iov_base: first.as_ptr() as *mut libc::c_void,
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_ptr() as *mut libc::c_void,
            iov_len: second.len(),
        },
    ];
    // SAFETY: both iovecs point into live slices that outlive the call; the kernel only reads.
    let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // A short write: the rest, one slice at a time.
    let n = n as usize;
    if n < first.len() {
        file.write_all_at(&first[n..], n as u64)?;
    }
    let done_of_second = n.saturating_sub(first.len());
    file.write_all_at(
        &second[done_of_second..],
        (first.len() + done_of_second) as u64,
    )
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), TransformError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => TransformError::Shrunk,
        _ => TransformError::Input(WavError::Io(e)),
    })
}

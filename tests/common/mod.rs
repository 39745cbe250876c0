//! Shared helpers for the integration tests: running the real `etl` binary, writing and reading
//! WAV files (with hound, plus a small RIFF walk for the raw sample bytes), statistics, the
//! fixture manifest, file times and folder snapshots.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// A command for the `etl` binary, with a predictable environment: no colours, no RUST_LOG from
/// the caller's shell.
pub fn etl() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("etl").expect("the etl binary is built");
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

/// The `etl` binary as a plain command (to spawn and signal), with the same environment as [`etl`].
pub fn etl_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etl"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

/// What a finished `etl` process left.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics, showing both streams, unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// The last line of stdout, parsed as `N ok, N skipped, N failed[, N not run]`.
    pub fn counts(&self) -> Counts {
        let line = self
            .stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no stdout; stderr:\n{}", self.stderr));
        parse_counts(line).unwrap_or_else(|| {
            panic!(
                "last stdout line {line:?} is not `N ok, N skipped, N failed`\n--- stdout\n{}",
                self.stdout
            )
        })
    }

    /// The files named by `<path> completed in X.XXs` lines, in the order printed.
    pub fn completed(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(parse_completed_line)
            .map(str::to_string)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub skipped: u64,
    pub failed: u64,
    pub not_run: u64,
}

impl Counts {
    pub fn new(ok: u64, skipped: u64, failed: u64) -> Counts {
        Counts {
            ok,
            skipped,
            failed,
            not_run: 0,
        }
    }
}

/// `3 ok, 1 skipped, 0 failed` (optionally `, 2 not run`).
pub fn parse_counts(line: &str) -> Option<Counts> {
    let parts: Vec<&str> = line.trim().split(", ").collect();
    let num = |part: &str, word: &str| -> Option<u64> {
        let (n, w) = part.split_once(' ')?;
        (w == word).then_some(())?;
        n.parse().ok()
    };
    let (ok, skipped, failed) = match parts.as_slice() {
        [a, b, c] | [a, b, c, _] => (num(a, "ok")?, num(b, "skipped")?, num(c, "failed")?),
        _ => return None,
    };
    let not_run = match parts.get(3) {
        Some(p) => num(p, "not run")?,
        None => 0,
    };
    Some(Counts {
        ok,
        skipped,
        failed,
        not_run,
    })
}

/// The path of a `<path> completed in 0.05s` line (two decimals, then `s`), or None.
pub fn parse_completed_line(line: &str) -> Option<&str> {
    let (path, time) = line.rsplit_once(" completed in ")?;
    let secs = time.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(whole) && frac.len() == 2 && digits(frac) && !path.is_empty()).then_some(path)
}

/// True for `<verb> took 0.81s total`.
pub fn is_total_line(line: &str, verb: &str) -> bool {
    let Some(rest) = line.strip_prefix(&format!("{verb} took ")) else {
        return false;
    };
    let Some(secs) = rest.strip_suffix("s total") else {
        return false;
    };
    match secs.split_once('.') {
        Some((w, f)) => {
            !w.is_empty()
                && w.bytes().all(|b| b.is_ascii_digit())
                && f.len() == 2
                && f.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Runs `etl ARGS` in `cwd` and returns what it did (whatever the exit code).
pub fn etl_in(cwd: &Path, args: &[&str]) -> Run {
    Run::from_output(
        etl()
            .current_dir(cwd)
            .args(args)
            .output()
            .expect("etl runs"),
    )
}

/// Runs `etl run ARGS --no-progress` in `cwd`.
pub fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let mut all = vec!["run", "--no-progress"];
    all.extend_from_slice(args);
    etl_in(cwd, &all)
}

/// `etl gen-fake-data --out-dir DIR ARGS` (in DIR's parent folder), expecting success.
pub fn gen_fake_data(dir: &Path, args: &[&str]) -> Run {
    let dir_s = dir.to_str().expect("a UTF-8 path");
    let mut all = vec!["gen-fake-data", "--out-dir", dir_s];
    all.extend_from_slice(args);
    let run = etl_in(dir.parent().unwrap_or(Path::new(".")), &all);
    run.expect_code(0);
    settle(dir);
    run
}

/// The output `etl` writes beside `input`: `<stem>-transformed.wav`.
/// Works on bytes, so that names which are not UTF-8 keep them.
pub fn output_of(input: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let stem = input.file_stem().unwrap().as_bytes();
    let mut name = stem.to_vec();
    name.extend_from_slice(b"-transformed.wav");
    input.with_file_name(std::ffi::OsStr::from_bytes(&name))
}

// ---------------------------------------------------------------------------------------------
// WAV files
// ---------------------------------------------------------------------------------------------

/// A WAV file read with hound: its spec, frame count and samples in [-1, 1], interleaved.
#[derive(Debug, Clone)]
pub struct Wav {
    pub spec: hound::WavSpec,
    pub frames: usize,
    pub samples: Vec<f64>,
}

impl Wav {
    pub fn channels(&self) -> usize {
        self.spec.channels as usize
    }

    /// The samples of channel `c`.
    pub fn channel(&self, c: usize) -> Vec<f64> {
        self.samples
            .iter()
            .skip(c)
            .step_by(self.channels())
            .copied()
            .collect()
    }
}

/// The divisor that maps an integer sample of `bits` to [-1, 1).
pub fn full_scale(bits: u16) -> f64 {
    (1u64 << (bits - 1)) as f64
}

/// Reads a WAV file with hound. Integers map to [-1, 1) by x / 2^(bits-1) (hound already
/// offsets 8-bit samples by 128).
pub fn read_wav(path: &Path) -> Wav {
    let mut reader = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("hound cannot open {}: {e}", path.display()));
    let spec = reader.spec();
    let samples: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(f64::from))
            .collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = full_scale(spec.bits_per_sample);
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f64 / scale))
                .collect::<Result<_, _>>()
        }
    }
    .unwrap_or_else(|e| panic!("hound cannot read the samples of {}: {e}", path.display()));
    assert_eq!(
        samples.len() % spec.channels as usize,
        0,
        "{}: a partial frame",
        path.display()
    );
    Wav {
        spec,
        frames: samples.len() / spec.channels as usize,
        samples,
    }
}

/// Reads the integer samples of a WAV file as hound gives them (for exact comparisons).
pub fn read_ints(path: &Path) -> Vec<i32> {
    hound::WavReader::open(path)
        .unwrap()
        .samples::<i32>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `samples` (interleaved, in [-1, 1]) with hound. Integers are rounded and saturated.
pub fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[f64]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for &s in samples {
                w.write_sample(s as f32).unwrap();
            }
        }
        hound::SampleFormat::Int => {
            let scale = full_scale(spec.bits_per_sample);
            let (lo, hi) = (-scale, scale - 1.0);
            for &s in samples {
                w.write_sample((s * scale).round().clamp(lo, hi) as i32)
                    .unwrap();
            }
        }
    }
    w.finalize().unwrap();
    settle(path);
}

pub fn spec(channels: u16, sample_rate: u32, bits: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

/// Writes a sine of `freq` Hz and peak `amp`, the same on every channel, with hound.
pub fn write_tone(path: &Path, spec: hound::WavSpec, frames: usize, freq: f64, amp: f64) {
    let step = std::f64::consts::TAU * freq / spec.sample_rate as f64;
    let samples: Vec<f64> = (0..frames)
        .flat_map(|i| std::iter::repeat_n(amp * (step * i as f64).sin(), spec.channels as usize))
        .collect();
    write_wav(path, spec, &samples);
}

/// The data chunk of a WAV file found by walking its RIFF chunks: where the samples start and
/// their bytes. The placeholder sizes streaming writers leave (0 and 0xFFFFFFFF) stand for
/// "to the end of the file". The length is cut to whole frames of `block_align` bytes.
pub fn data_bytes(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    assert!(
        bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{}: no RIFF/WAVE header",
        path.display()
    );
    let mut pos = 12usize;
    let mut block_align = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        let body = pos + 8;
        if id == b"fmt " {
            block_align = Some(u16::from_le_bytes([bytes[body + 12], bytes[body + 13]]) as usize);
        } else if id == b"data" {
            let align = block_align.expect("fmt before data");
            let rest = bytes.len() - body;
            let len = if size == 0 || size == u32::MAX {
                rest
            } else {
                size as usize
            };
            assert!(len <= rest, "{}: data chunk truncated", path.display());
            let len = len / align * align;
            return bytes[body..body + len].to_vec();
        }
        pos = body + size as usize + (size as usize & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// Decodes raw little-endian sample bytes to [-1, 1] the way `read_wav` maps them (8-bit is
/// unsigned, offset by 128).
pub fn decode(bytes: &[u8], float: bool, bits: u16) -> Vec<f64> {
    let width = bits as usize / 8;
    let scale = full_scale(bits);
    bytes
        .chunks_exact(width)
        .map(|b| match (float, bits) {
            (true, 32) => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            (false, 8) => (b[0] as f64 - 128.0) / scale,
            (false, 16) => i16::from_le_bytes(b.try_into().unwrap()) as f64 / scale,
            (false, 24) => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f64 / scale,
            (false, 32) => i32::from_le_bytes(b.try_into().unwrap()) as f64 / scale,
            other => panic!("no decoder for {other:?}"),
        })
        .collect()
}

/// The RIFF size field plus 8, and the file's length: equal in a well-formed file.
pub fn riff_and_file_len(path: &Path) -> (u64, u64) {
    let bytes = fs::read(path).unwrap();
    let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as u64 + 8;
    (riff, bytes.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The population standard deviation.
pub fn std(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Pearson's kurtosis (3 for a normal distribution).
pub fn kurtosis(x: &[f64]) -> f64 {
    let m = mean(x);
    let n = x.len() as f64;
    let m2 = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
    let m4 = x.iter().map(|v| (v - m).powi(4)).sum::<f64>() / n;
    m4 / (m2 * m2)
}

/// Pearson's correlation coefficient of two equally long series.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (ma, mb) = (mean(a), mean(b));
    let mut sab = 0.0;
    let mut saa = 0.0;
    let mut sbb = 0.0;
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    sab / (saa * sbb).sqrt()
}

/// The complementary error function (Numerical Recipes' erfcc; relative error below 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The standard normal distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The Kolmogorov-Smirnov statistic of `z` against N(0, 1).
pub fn ks_statistic(z: &[f64]) -> f64 {
    let mut z = z.to_vec();
    z.sort_by(f64::total_cmp);
    let n = z.len() as f64;
    z.iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = normal_cdf(v);
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

/// The Kolmogorov-Smirnov statistic of `u` against the uniform distribution on [0, 1).
pub fn ks_uniform_statistic(u: &[f64]) -> f64 {
    let mut u = u.to_vec();
    u.sort_by(f64::total_cmp);
    let n = u.len() as f64;
    u.iter()
        .enumerate()
        .map(|(i, &f)| (f - i as f64 / n).max((i + 1) as f64 / n - f))
        .fold(0.0, f64::max)
}

/// The 1% critical value of the one-sample KS statistic for large n.
pub fn ks_critical_1pct(n: usize) -> f64 {
    1.628 / (n as f64).sqrt()
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One row of fixtures/manifest.tsv.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub file: String,
    pub tool: String,
    /// `ok`, or `error:<lowercase substring of the message>`.
    pub expect: String,
    /// For `ok` rows: `int` or `float`, bits, channels, rate, frames.
    pub format: Option<FixtureFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixtureFormat {
    pub float: bool,
    pub bits: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub frames: usize,
}

impl Fixture {
    pub fn path(&self) -> PathBuf {
        fixtures_dir().join(&self.file)
    }

    pub fn is_ok(&self) -> bool {
        self.expect == "ok"
    }

    /// The substring the error message must contain, for `error:` rows.
    pub fn expected_error(&self) -> Option<&str> {
        self.expect.strip_prefix("error:")
    }
}

pub fn manifest() -> Vec<Fixture> {
    let text = fs::read_to_string(fixtures_dir().join("manifest.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(
        header,
        [
            "file",
            "tool",
            "expect",
            "sample_format",
            "bits",
            "channels",
            "sample_rate",
            "frames",
            "note"
        ]
    );
    let rows: Vec<Fixture> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let c: Vec<&str> = line.split('\t').collect();
            assert!(c.len() >= 8, "manifest row {line:?}");
            let format = (c[2] == "ok").then(|| FixtureFormat {
                float: match c[3] {
                    "float" => true,
                    "int" => false,
                    other => panic!("sample_format {other:?}"),
                },
                bits: c[4].parse().unwrap(),
                channels: c[5].parse().unwrap(),
                sample_rate: c[6].parse().unwrap(),
                frames: c[7].parse().unwrap(),
            });
            Fixture {
                file: c[0].into(),
                tool: c[1].into(),
                expect: c[2].into(),
                format,
            }
        })
        .collect();
    assert!(rows.len() > 10, "the manifest lists the fixtures");
    rows
}

// ---------------------------------------------------------------------------------------------
// Files on disk
// ---------------------------------------------------------------------------------------------

pub fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// Sets a file's modification time to `secs` seconds from now (negative: in the past).
pub fn set_mtime(path: &Path, secs: i64) {
    let now = SystemTime::now();
    let t = if secs >= 0 {
        now + Duration::from_secs(secs as u64)
    } else {
        now - Duration::from_secs(secs.unsigned_abs())
    };
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// How long ago [`settle`] dates files: well beyond `etl run`'s default `--settle` of 1s.
pub const SETTLED_SECS: i64 = 5;

/// Dates the inputs at `path` (a file, or every input below a folder) [`SETTLED_SECS`] back, as
/// files written a while before the run: `etl run` skips files modified in the last second as
/// still being written. Outputs (`*-transformed.wav`) keep their time.
pub fn settle(path: &Path) {
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap().flatten() {
            settle(&entry.path());
        }
    } else if path.is_file()
        && !is_output_name(path)
        // Only files just written: one dated already keeps its time.
        && mtime(path) > SystemTime::now() - Duration::from_secs(2)
    {
        set_mtime(path, -SETTLED_SECS);
    }
}

/// Whether `path` is named as an output: `NAME-transformed.wav`, or a variant's
/// `NAME-transformed-K.wav`.
pub fn is_output_name(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Some(stem) = name.strip_suffix(".wav") else {
        return false;
    };
    stem.ends_with("-transformed")
        || stem
            .rsplit_once("-transformed-")
            .is_some_and(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// The output of variant `k` of `input` with `--variants` above 1: `<stem>-transformed-K.wav`.
pub fn variant_output_of(input: &Path, k: u32) -> PathBuf {
    let stem = input.file_stem().unwrap().to_string_lossy();
    input.with_file_name(format!("{stem}-transformed-{k}.wav"))
}

/// The temporary outputs (`*.etl-tmp`) in `dir`, by name.
pub fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".etl-tmp"))
        .collect()
}

/// Every file below `dir` (hidden ones too), by path relative to `dir`, with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The names of the entries of `dir` (hidden ones too), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// True when `program` can be started (`program ARG` exits, whatever its status).
pub fn have(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// True when python3 can import scipy.io.wavfile.
pub fn have_scipy() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import scipy.io.wavfile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// Users and umasks
// ---------------------------------------------------------------------------------------------

/// The `etl` binary as a plain command whose process starts with `umask` (set between fork and
/// exec, as a shell's `umask 077; exec etl` would).
pub fn etl_with_umask(umask: u32) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("etl"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    // SAFETY: umask is async-signal-safe and touches nothing but the child's own mask.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    cmd
}

/// The uid and gid of `nobody`, which tests that need an unprivileged user run as.
pub const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------------
// Processes of a run in progress
// ---------------------------------------------------------------------------------------------

/// The children of `pid` (all its threads'), from /proc.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Whether an open file of a worker (a path from [`open_paths`]) is an output being written: a
/// named temporary, or an unnamed file (`O_TMPFILE`, shown as `/dir/#123 (deleted)`). Not the
/// worker's shared memory, which shows as deleted too (`/memfd:... (deleted)`).
pub fn is_output_being_written(path: &Path) -> bool {
    let p = path.to_string_lossy();
    p.ends_with(".etl-tmp") || (p.ends_with(" (deleted)") && !p.starts_with("/memfd:"))
}

/// The files `pid` holds open, by path.
pub fn open_paths(pid: u32) -> Vec<PathBuf> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a pid that is gone gives ESRCH, which is fine here.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Polls `done` until it holds; panics after a minute, which would be a hang.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "waited a minute for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The lines of a JSON Lines report.
pub fn report_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// A WAV header as a streaming writer leaves it: PCM, with 0xFFFFFFFF for the RIFF and data
/// sizes (it cannot seek back to fill them in).
pub fn streaming_header(channels: u16, sample_rate: u32, bits: u16) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * block_align as u32).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h
}

/// A command that runs `program` as the unprivileged user nobody (65534), with the same clean
/// environment as [`etl`], or None when this machine cannot (not root, or no setpriv): the caller
/// prints why it skips.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Option<std::process::Command> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let works = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success());
    works.then(|| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        cmd
    })
}

/// The frame count, channels and rate libsndfile reads in a WAV file (through python3's
/// soundfile), or None, with a line saying so, when soundfile is not installed.
pub fn libsndfile_info(path: &Path) -> Option<(u64, u16, u32)> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import soundfile, sys; i = soundfile.info(sys.argv[1]); \
             print(i.frames, i.channels, i.samplerate)",
        ])
        .arg(path)
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        _ => {
            println!("libsndfile check skipped: python3 with soundfile is not installed");
            return None;
        }
    };
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Some((v[0], v[1] as u16, v[2] as u32))
}

/// True when python3 can import `soundfile` (libsndfile, bundled in its wheel).
pub fn have_soundfile() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import soundfile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a python3 script with `soundfile` and `numpy` imported as `sf` and `np` and the given
/// arguments in `sys.argv[1:]`; panics with its stderr when it fails. Returns its stdout.
pub fn soundfile_py(script: &str, args: &[&str]) -> String {
    let full = format!("import sys, soundfile as sf, numpy as np\n{script}");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(full)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 soundfile script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What libsndfile says a file is: `frames channels rate format subtype`.
pub fn soundfile_info(path: &Path) -> String {
    soundfile_py(
        "i = sf.info(sys.argv[1]); print(i.frames, i.channels, i.samplerate, i.format, i.subtype)",
        &[path.to_str().unwrap()],
    )
    .trim()
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// System calls, as strace saw them
// ---------------------------------------------------------------------------------------------

/// The system calls that decide what is on stable storage and under which name: every call on
/// a path (`%file`), and the flushes.
pub const STRACE_DURABILITY_CALLS: &str = "trace=%file,fsync,fdatasync,syncfs,sync_file_range";

/// One system call from an `strace -f -y` log.
#[derive(Debug, Clone)]
pub struct Syscall {
    /// The thread that made it (the process id for a single-threaded process).
    pub pid: u32,
    pub name: String,
    /// The arguments as strace printed them, split at the top-level commas.
    pub args: Vec<String>,
    /// The return value (-1 for an error, with the error in `errno`).
    pub ret: i64,
    pub errno: Option<String>,
    /// Line numbers in the log where the call started and where it returned: a call that
    /// returned before another started has `end < other.start`.
    pub start: usize,
    pub end: usize,
}

impl Syscall {
    /// Argument `i` as a file descriptor: its number and, with `-y`, the path strace showed
    /// for it (`6</dir/name>`; `AT_FDCWD` is -100 with no path).
    pub fn fd(&self, i: usize) -> Option<(i32, Option<String>)> {
        let arg = self.args.get(i)?.trim();
        if arg == "AT_FDCWD" {
            return Some((-100, None));
        }
        let (num, rest) = match arg.find('<') {
            Some(at) => (&arg[..at], Some(&arg[at + 1..])),
            None => (arg, None),
        };
        let fd = num.parse().ok()?;
        let path = rest.map(|r| r.strip_suffix('>').unwrap_or(r).to_string());
        Some((fd, path))
    }

    /// The quoted path arguments, each made absolute with the folder descriptor before it when
    /// it is relative to one (`renameat(6</dir>, "a", 6</dir>, "b")` gives `/dir/a`, `/dir/b`).
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, arg) in self.args.iter().enumerate() {
            let Some(path) = unquote(arg.trim()) else {
                continue;
            };
            let dir = i
                .checked_sub(1)
                .and_then(|j| self.fd(j))
                .and_then(|(_, dir)| dir);
            match dir {
                Some(dir) if !path.starts_with('/') && !path.is_empty() => {
                    out.push(format!("{dir}/{path}"))
                }
                _ => out.push(path),
            }
        }
        out
    }
}

/// A C string as strace prints it (`"a\"b"`), without its quotes; None if `arg` is not one.
fn unquote(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?;
    let inner = inner.strip_suffix("\"...").or(inner.strip_suffix('"'))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Splits `a, {b, c}, "d, e"` at its top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted, mut escaped) =
        (vec![], String::new(), 0, false, false);
    for c in s.chars() {
        if quoted {
            cur.push(c);
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '{' | '[' | '(' | '<' => depth += 1,
            '}' | ']' | ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Parses an `strace -f` log (each line prefixed by the thread id), joining the halves of a call
/// that another thread interrupted (`<unfinished ...>`, then `<... NAME resumed>`). Signals and
/// exits are left out.
pub fn parse_strace(log: &str) -> Vec<Syscall> {
    // A thread's unfinished call: its line number and the text so far.
    let mut unfinished: std::collections::HashMap<u32, (usize, String)> = Default::default();
    let mut calls = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let (start, text) = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid, (n, head.to_string()));
            continue;
        } else if let Some(tail) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = tail.split_once(" resumed>") else {
                continue;
            };
            match unfinished.remove(&pid) {
                Some((start, head)) => (start, format!("{head}{tail}")),
                None => continue,
            }
        } else {
            (n, rest.to_string())
        };
        let Some(open) = text.find('(') else {
            continue;
        };
        let name = text[..open].to_string();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // "--- SIGCHLD ...", "+++ exited ..."
        }
        // `NAME(ARGS) = RET`, with spaces before the `=` that align the results.
        let Some(eq) = text.rfind(" = ") else {
            continue; // no return (exit_group, a process killed mid-call)
        };
        let Some(args) = text[..eq].trim_end().strip_suffix(')') else {
            continue;
        };
        let args = split_args(args.get(open + 1..).unwrap_or(""));
        let mut result = text[eq + 3..].split_whitespace();
        let ret = result
            .next()
            .map(|r| r.split('<').next().unwrap_or(r)) // `6</path>` with -y
            .and_then(|r| {
                r.parse::<i64>()
                    .ok()
                    .or_else(|| i64::from_str_radix(r.trim_start_matches("0x"), 16).ok())
            })
            .unwrap_or(0);
        let errno = result
            .next()
            .filter(|e| e.starts_with('E'))
            .map(str::to_string);
        calls.push(Syscall {
            pid,
            name,
            args,
            ret,
            errno,
            start,
            end: n,
        });
    }
    calls
}

/// True when strace runs here and may trace (it may not in a container without ptrace).
pub fn have_strace() -> bool {
    std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the `etl` binary with `args` in `cwd` under `strace -f -y -e TRACE` and returns what it
/// did and the system calls it made (all processes and threads), or None, after printing why,
/// when strace is missing or may not trace here.
pub fn etl_traced(cwd: &Path, trace: &str, args: &[&str]) -> Option<(Run, Vec<Syscall>)> {
    if !have_strace() {
        eprintln!(
            "skipped: strace is not installed or may not trace here (apt-get install strace)"
        );
        return None;
    }
    let bin = assert_cmd::cargo::cargo_bin("etl");
    let log = tempfile::NamedTempFile::new().expect("a temporary file for the trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", trace, "-o"])
        .arg(log.path())
        .arg(&bin)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("strace runs");
    let text = fs::read_to_string(log.path()).expect("strace wrote its log");
    Some((Run::from_output(out), parse_strace(&text)))
}

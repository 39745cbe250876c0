//! WAV formats and containers end to end: what real tools write, read back by real tools.
//! libsndfile (python `soundfile`) is the independent judge where it is installed; each check
//! that needs it says so on one line and is skipped when it is missing.

mod common;

use std::fs;
use std::path::Path;

use audio_etl::etl::wav::{self, Container};
use common::*;

/// The first `n` bytes of a file.
fn first_bytes(path: &Path, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0; n];
    fs::File::open(path).unwrap().read_exact(&mut buf).unwrap();
    buf
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("etl-formats-")
        .tempdir()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A chunk: id, little-endian size, body, pad byte when odd.
fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A plain PCM `fmt ` body.
fn pcm_fmt(channels: u16, rate: u32, bits: u16) -> Vec<u8> {
    let align = channels * bits.div_ceil(8);
    let mut f = Vec::new();
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&channels.to_le_bytes());
    f.extend_from_slice(&rate.to_le_bytes());
    f.extend_from_slice(&(rate * align as u32).to_le_bytes());
    f.extend_from_slice(&align.to_le_bytes());
    f.extend_from_slice(&bits.to_le_bytes());
    f
}

/// RIFF/WAVE around `chunks`.
fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(&body);
    out
}

/// A 16-bit tone's bytes.
fn tone_i16(frames: usize) -> Vec<u8> {
    (0..frames)
        .flat_map(|i| (((i as f64 * 0.05).sin() * 12000.0) as i16).to_le_bytes())
        .collect()
}

/// `etl run FILE --seed 7 ARGS` beside the file; returns the run.
/// `etl run ARGS` in `dir`, once the files just written there are dated back past `--settle`
/// (they are complete: the tools that wrote them have exited).
fn run_settled(dir: &Path, args: &[&str]) -> Run {
    settle(dir);
    run_in(dir, args)
}

fn run_one(input: &Path, args: &[&str]) -> Run {
    let mut all = vec![s(input), "--seed", "7"];
    all.extend_from_slice(args);
    run_settled(input.parent().unwrap(), &all)
}

#[test]
fn a_zero_size_data_chunk_followed_by_a_list_chunk_is_an_empty_recording() {
    let dir = tempdir();
    let input = dir.path().join("empty-then-list.wav");
    let info = chunk(b"INAM", b"etl fixture\0");
    let mut list = b"INFO".to_vec();
    list.extend_from_slice(&info);
    fs::write(
        &input,
        riff(&[
            chunk(b"fmt ", &pcm_fmt(1, 8000, 16)),
            chunk(b"data", &[]),
            chunk(b"LIST", &list),
        ]),
    )
    .unwrap();
    let run = run_one(&input, &["--sigma", "0.1"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 0, 0));
    let output = output_of(&input);
    let wav = read_wav(&output);
    assert_eq!(wav.frames, 0, "hound reads the output as empty");
    assert!(data_bytes(&output).is_empty());
    if have_soundfile() {
        assert_eq!(soundfile_info(&input), "0 1 8000 WAV PCM_16");
        assert_eq!(soundfile_info(&output), "0 1 8000 WAV PCM_16");
    } else {
        println!("skipped: libsndfile check (python3 -m pip install soundfile)");
    }
}

#[test]
fn a_zero_size_data_chunk_running_to_the_end_is_still_recovered() {
    // The same header with samples after it, as a streaming writer leaves it.
    let dir = tempdir();
    let input = dir.path().join("streamed.wav");
    let samples = tone_i16(1000);
    let mut bytes = riff(&[chunk(b"fmt ", &pcm_fmt(1, 8000, 16)), chunk(b"data", &[])]);
    bytes.extend_from_slice(&samples);
    fs::write(&input, bytes).unwrap();
    run_one(&input, &["--sigma", "0"]).expect_code(0);
    assert_eq!(data_bytes(&output_of(&input)), samples);
}

/// 100 MiB of 8-byte chunks before the data (12.5 million of them): a walk that read each chunk
/// header with its own system call took about 8 s, and each part of a split file walked it again.
#[test]
fn a_hundred_mebibytes_of_tiny_chunks_before_the_data_are_walked_once_and_quickly() {
    let dir = tempdir();
    let input = dir.path().join("many-chunks.wav");
    let samples = tone_i16(20_000);
    let mut chunks = vec![chunk(b"fmt ", &pcm_fmt(1, 16000, 16))];
    chunks.push(b"junk\0\0\0\0".repeat(100 << 17));
    chunks.push(chunk(b"data", &samples));
    fs::write(&input, riff(&chunks)).unwrap();

    run_one(&input, &["--sigma", "0", "--timeout", "5s"]).expect_code(0);
    let output = output_of(&input);
    assert_eq!(data_bytes(&output), samples);

    let run = run_one(&input, &["--sigma", "0.01", "--timeout", "5s", "--force"]);
    run.expect_code(0);
    let got = read_wav(&output);
    assert_eq!(got.frames, 20_000);
    let noise: Vec<f64> = decode(&data_bytes(&output), false, 16)
        .iter()
        .zip(decode(&samples, false, 16))
        .map(|(y, x)| y - x)
        .collect();
    let sd = std(&noise);
    assert!((sd / 0.01 - 1.0).abs() < 0.05, "noise std {sd}");

    // Split in four parts (the file is 100 MiB): the parts read where planning found the data
    // and walk nothing again. The bytes are those of the whole run.
    let whole = fs::read(&output).unwrap();
    let mut cmd = etl_command();
    cmd.current_dir(dir.path())
        .env("ETL_SPLIT_BYTES", (32u64 << 20).to_string())
        .args([
            "run",
            "--no-progress",
            "-j",
            "2",
            "--seed",
            "7",
            "--sigma",
            "0.01",
        ])
        .args(["--timeout", "5s", "--force", "--report", "r.jsonl"])
        .arg(&input);
    let run = Run::from_output(cmd.output().unwrap());
    run.expect_code(0);
    assert_eq!(fs::read(&output).unwrap(), whole);
    let report = fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
    assert!(report.contains("\"status\":\"ok\""), "{report}");
}

// ---------------------------------------------------------------------------------------------
// Every subtype libsndfile writes, read back by libsndfile
// ---------------------------------------------------------------------------------------------

/// Writes, with libsndfile, one file per container, transformable subtype and channel count
/// (1, 2, 6) into `dir`: `<CONTAINER>-<SUBTYPE>-<channels>.wav`, `frames` frames of a tone per
/// channel at amplitude 0.5. Prints the names written.
const WRITE_ALL_SUBTYPES: &str = r#"
dir, frames = sys.argv[1], int(sys.argv[2])
t = np.arange(frames) / 8000
for fmt in ["WAV", "WAVEX", "RF64", "W64"]:
    for st in ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ALAW", "ULAW"]:
        for ch in [1, 2, 6]:
            x = np.stack([0.5 * np.sin(2 * np.pi * (440 + 110 * c) * t) for c in range(ch)], axis=1)
            name = f"{fmt}-{st}-{ch}.wav"
            sf.write(f"{dir}/{name}", x, 8000, subtype=st, format=fmt)
            print(name)
"#;

/// For each input named in argv[2:] (in folder argv[1]) and its `-transformed` output: libsndfile's
/// view of both (`format subtype channels rate frames`), whether the samples are identical, and
/// the standard deviation of output minus input in the decoded domain. One line each:
/// `name|input view|output view|identical|std`.
const COMPARE: &str = r#"
dir = sys.argv[1]
for name in sys.argv[2:]:
    a, b = f"{dir}/{name}", f"{dir}/{name[:-4]}-transformed.wav"
    view = lambda p: (lambda i: f"{i.format} {i.subtype} {i.channels} {i.samplerate} {i.frames}")(sf.info(p))
    x, _ = sf.read(a, dtype="float64", always_2d=True)
    y, _ = sf.read(b, dtype="float64", always_2d=True)
    same = x.shape == y.shape and np.array_equal(x, y)
    sd = float((y - x).std()) if x.shape == y.shape else -1.0
    print(f"{name}|{view(a)}|{view(b)}|{same}|{sd}")
"#;

struct Compared {
    name: String,
    input: String,
    output: String,
    identical: bool,
    std: f64,
}

fn compare(dir: &Path, names: &[String]) -> Vec<Compared> {
    let mut args = vec![s(dir)];
    args.extend(names.iter().map(String::as_str));
    soundfile_py(COMPARE, &args)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            Compared {
                name: f[0].into(),
                input: f[1].into(),
                output: f[2].into(),
                identical: f[3] == "True",
                std: f[4].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn every_subtype_libsndfile_writes_comes_back_in_its_own_format() {
    if !have_soundfile() {
        println!("skipped: python soundfile (libsndfile) is not installed");
        return;
    }
    let dir = tempdir();
    let names: Vec<String> = soundfile_py(WRITE_ALL_SUBTYPES, &[s(dir.path()), "4000"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 4 * 8 * 3);

    let run = run_settled(dir.path(), &[".", "--sigma", "0", "--seed", "1"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(96, 0, 0));
    for c in compare(dir.path(), &names) {
        assert_eq!(
            c.output, c.input,
            "{}: format read back by libsndfile",
            c.name
        );
        assert!(c.identical, "{}: samples at sigma 0", c.name);
    }
    // Wave64 stays Wave64, RF64 stays RF64 (checked on the magic as well as by libsndfile).
    let magic = |name: &str| fs::read(dir.path().join(name)).unwrap()[..4].to_vec();
    assert_eq!(magic("RF64-DOUBLE-2-transformed.wav"), b"RF64");
    assert_eq!(magic("W64-ALAW-6-transformed.wav"), b"riff");
    assert_eq!(magic("WAVEX-PCM_24-6-transformed.wav"), b"RIFF");

    // Noise of the asked size in the decoded domain, for every one of them.
    let run = run_settled(
        dir.path(),
        &[".", "--sigma", "0.1", "--seed", "1", "--force"],
    );
    run.expect_code(0);
    for c in compare(dir.path(), &names) {
        assert_eq!(
            c.output, c.input,
            "{}: format read back by libsndfile",
            c.name
        );
        // 4000 frames: the standard error of the std is 1.1% for mono.
        assert!(
            (c.std / 0.1 - 1.0).abs() < 0.05,
            "{}: noise std {} for sigma 0.1",
            c.name,
            c.std
        );
    }
}

#[test]
fn compressed_encodings_are_refused_naming_the_encoding_and_its_tag() {
    if !have_soundfile() {
        println!("skipped: python soundfile (libsndfile) is not installed");
        return;
    }
    let dir = tempdir();
    soundfile_py(
        r#"
x = 0.3 * np.sin(np.arange(4000) / 10)
for fmt, st in [("WAV", "IMA_ADPCM"), ("WAV", "MS_ADPCM"), ("WAV", "GSM610"), ("WAV", "G721_32"),
                ("W64", "IMA_ADPCM")]:
    sf.write(f"{sys.argv[1]}/{fmt}-{st}.wav", x, 8000, subtype=st, format=fmt)
"#,
        &[s(dir.path())],
    );
    let cases = [
        (
            "WAV-IMA_ADPCM.wav",
            "unsupported encoding: IMA ADPCM (format tag 0x0011): compressed encodings are not transformed",
        ),
        (
            "WAV-MS_ADPCM.wav",
            "unsupported encoding: Microsoft ADPCM (format tag 0x0002): compressed encodings are not transformed",
        ),
        (
            "WAV-GSM610.wav",
            "unsupported encoding: GSM 6.10 (format tag 0x0031): compressed encodings are not transformed",
        ),
        (
            "WAV-G721_32.wav",
            "unsupported encoding: G.721 ADPCM (format tag 0x0040): compressed encodings are not transformed",
        ),
        (
            "W64-IMA_ADPCM.wav",
            "unsupported encoding: IMA ADPCM (format tag 0x0011): compressed encodings are not transformed (container: Wave64)",
        ),
    ];
    for (name, message) in cases {
        let run = run_one(&dir.path().join(name), &[]);
        run.expect_code(1);
        let line = format!("{}: {message}", dir.path().join(name).display());
        assert!(
            run.stderr.lines().any(|l| l.ends_with(&line)),
            "{name}: wanted a line ending {line:?}\n{}",
            run.stderr
        );
        assert!(!output_of(&dir.path().join(name)).exists());
    }
}

// ---------------------------------------------------------------------------------------------
// Valid bits below the container
// ---------------------------------------------------------------------------------------------

/// A WAVE_FORMAT_EXTENSIBLE `fmt ` body: `bits` per container, `valid` of them used, PCM (1) or
/// IEEE float (3).
fn extensible_fmt(channels: u16, rate: u32, bits: u16, valid: u16, subformat: u16) -> Vec<u8> {
    let mut f = pcm_fmt(channels, rate, bits);
    f[..2].copy_from_slice(&0xFFFEu16.to_le_bytes());
    f.extend_from_slice(&22u16.to_le_bytes());
    f.extend_from_slice(&valid.to_le_bytes());
    f.extend_from_slice(&(if channels == 2 { 3u32 } else { 4 }).to_le_bytes());
    f.extend_from_slice(&subformat.to_le_bytes());
    f.extend_from_slice(&[
        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
    ]);
    f
}

/// `frames` frames of a half-scale tone with `valid` bits in `bytes`-byte little-endian
/// containers (low bits zero), per channel.
fn tone_on_grid(frames: usize, channels: usize, bytes: usize, valid: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..frames * channels {
        let v = 0.5 * (i as f64 * 0.031).sin();
        let q = (v * (1u64 << (valid - 1)) as f64).round() as i64;
        let word = (q << (bytes as u32 * 8 - valid)) as i32;
        out.extend_from_slice(&word.to_le_bytes()[..bytes]);
    }
    out
}

/// Integer samples of `bytes` bytes, scaled to [-1, 1).
fn ints(data: &[u8], bytes: usize) -> Vec<i64> {
    data.chunks_exact(bytes)
        .map(|b| {
            let mut w = [0u8; 8];
            w[8 - bytes..].copy_from_slice(b);
            i64::from_le_bytes(w) >> (64 - 8 * bytes)
        })
        .collect()
}

#[test]
fn valid_bits_below_the_container_keep_their_grid_and_get_the_asked_noise() {
    let dir = tempdir();
    // (name, fmt, container bytes, valid bits, libsndfile's format and subtype)
    let cases = [
        (
            "20-in-24.wav",
            extensible_fmt(2, 48000, 24, 20, 1),
            3,
            20,
            "WAVEX PCM_24",
        ),
        (
            "24-in-32.wav",
            extensible_fmt(2, 48000, 32, 24, 1),
            4,
            24,
            "WAVEX PCM_32",
        ),
        ("12-in-16.wav", pcm_fmt(1, 8000, 12), 2, 12, "WAV PCM_16"),
    ];
    let frames = 40_000;
    for (name, fmt, bytes, valid, subtype) in &cases {
        let channels = if fmt.len() > 16 { 2 } else { 1 };
        let input = dir.path().join(name);
        let samples = tone_on_grid(frames, channels, *bytes, *valid);
        fs::write(
            &input,
            riff(&[chunk(b"fmt ", fmt), chunk(b"data", &samples)]),
        )
        .unwrap();

        run_one(&input, &["--sigma", "0"]).expect_code(0);
        let output = output_of(&input);
        assert_eq!(data_bytes(&output), samples, "{name}: sigma 0");
        // The fmt chunk is kept, valid bits included.
        assert_eq!(
            fs::read(&output).unwrap()[20..20 + fmt.len()],
            fmt[..],
            "{name}"
        );

        run_one(&input, &["--sigma", "0.1", "--force"]).expect_code(0);
        let out = data_bytes(&output);
        let shift = *bytes as u32 * 8 - valid;
        let (x, y) = (ints(&samples, *bytes), ints(&out, *bytes));
        assert!(
            y.iter().all(|v| v & ((1 << shift) - 1) == 0),
            "{name}: low bits must stay zero"
        );
        let full = (1u64 << (*bytes * 8 - 1)) as f64;
        let noise: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (b - a) as f64 / full)
            .collect();
        let sd = std(&noise);
        assert!((sd / 0.1 - 1.0).abs() < 0.05, "{name}: noise std {sd}");
        if have_soundfile() {
            let view = soundfile_info(&output);
            assert_eq!(
                view,
                format!(
                    "{frames} {channels} {} {subtype}",
                    if channels == 2 { 48000 } else { 8000 }
                ),
                "{name}"
            );
        }
    }
    if !have_soundfile() {
        println!("skipped: libsndfile check (python3 -m pip install soundfile)");
    }
}

// ---------------------------------------------------------------------------------------------
// Headers that contradict themselves
// ---------------------------------------------------------------------------------------------

#[test]
fn inconsistent_headers_are_refused_one_line_each() {
    let dir = tempdir();
    let mut float16 = pcm_fmt(1, 8000, 16);
    float16[0] = 3;
    let mut bad_align = pcm_fmt(2, 8000, 16);
    bad_align[12] = 3;
    let mut many = pcm_fmt(1, 8000, 16);
    many[2..4].copy_from_slice(&1025u16.to_le_bytes());
    many[12..14].copy_from_slice(&2050u16.to_le_bytes());
    let mut int64 = pcm_fmt(1, 8000, 64);
    int64[12] = 8;
    let cases: [(&str, Vec<u8>, &str); 8] = [
        (
            "rate0.wav",
            pcm_fmt(1, 0, 16),
            "malformed WAV: sample rate of 0",
        ),
        ("ch0.wav", pcm_fmt(0, 8000, 16), "malformed WAV: 0 channels"),
        (
            "ch1025.wav",
            many,
            "malformed WAV: 1025 channels (1024 at most)",
        ),
        (
            "align.wav",
            bad_align,
            "malformed WAV: block align of 3 bytes for 2 channels of 2 bytes",
        ),
        (
            "float16.wav",
            float16,
            "malformed WAV: 16-bit IEEE float (format tag 0x0003): float samples are 32 or 64 bits",
        ),
        (
            "float8x.wav",
            extensible_fmt(1, 8000, 8, 8, 3),
            "malformed WAV: 8-bit IEEE float (format tag 0x0003): float samples are 32 or 64 bits",
        ),
        (
            "int64.wav",
            int64,
            "unsupported encoding: 64-bit integer PCM (format tag 0x0001): not read by libsndfile either",
        ),
        (
            "valid.wav",
            extensible_fmt(1, 8000, 16, 20, 1),
            "malformed WAV: 20 valid bits in 16-bit samples",
        ),
    ];
    for (name, fmt, message) in cases {
        let input = dir.path().join(name);
        fs::write(
            &input,
            riff(&[chunk(b"fmt ", &fmt), chunk(b"data", &[0; 64])]),
        )
        .unwrap();
        let run = run_one(&input, &[]);
        run.expect_code(1);
        let line = format!("{}: {message}", input.display());
        assert!(
            run.stderr.lines().any(|l| l.ends_with(&line)),
            "{name}: wanted a line ending {line:?}\n{}",
            run.stderr
        );
        assert!(!output_of(&input).exists(), "{name}");
    }
}

#[test]
fn refusals_name_rf64_bw64_rifx_and_wave64_containers() {
    let dir = tempdir();
    let mut float16 = pcm_fmt(1, 8000, 16);
    float16[0] = 3;
    let mut rifx_float16 = float16.clone();
    for field in [0..2, 2..4, 12..14, 14..16] {
        rifx_float16[field].reverse();
    }
    for field in [4..8, 8..12] {
        rifx_float16[field].reverse();
    }
    let why =
        "malformed WAV: 16-bit IEEE float (format tag 0x0003): float samples are 32 or 64 bits";
    for (name, container, fmt, named) in [
        (
            "rf64.wav",
            Container::Rf64 { bw64: false },
            &float16,
            "RF64",
        ),
        ("bw64.wav", Container::Rf64 { bw64: true }, &float16, "BW64"),
        ("rifx.wav", Container::Rifx, &rifx_float16, "RIFX"),
        ("w64.wav", Container::Wave64, &float16, "Wave64"),
    ] {
        let input = dir.path().join(name);
        let mut bytes = wav::header(container, fmt, 64).unwrap().bytes;
        bytes.resize(bytes.len() + 64, 0);
        fs::write(&input, bytes).unwrap();
        let run = run_one(&input, &[]);
        run.expect_code(1);
        let line = format!("{}: {why} (container: {named})", input.display());
        assert!(
            run.stderr.lines().any(|l| l.ends_with(&line)),
            "{name}: wanted a line ending {line:?}\n{}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files written by ffmpeg, sox and scipy
// ---------------------------------------------------------------------------------------------

/// Runs `program args`; false when the program is missing, panics when it fails.
fn make_with(program: &str, args: &[&str]) -> bool {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(_) => false,
    }
}

/// A file's samples as ffmpeg decodes them, as 64-bit floats; None without ffmpeg.
fn ffmpeg_samples(path: &Path) -> Option<Vec<u8>> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", s(path), "-f", "f64le", "-"])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "ffmpeg cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// A file's samples as sox decodes them; None without sox.
fn sox_samples(path: &Path) -> Option<Vec<u8>> {
    let out = std::process::Command::new("sox")
        .args(["-V1", s(path), "-t", "f64", "-"])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "sox cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[test]
fn files_from_ffmpeg_sox_and_scipy_come_back_the_same_and_open_in_every_tool() {
    let dir = tempdir();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let sine = [
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1",
        "-ac",
        "2",
    ];
    let ffmpeg = |codec: &str, extra: &[&str], name: &str| {
        let mut args: Vec<&str> = sine.to_vec();
        let out = d(name);
        args.extend(["-c:a", codec]);
        args.extend(extra);
        args.extend(["-bitexact", out.as_str()]);
        make_with("ffmpeg", &args).then(|| name.to_string())
    };
    let sox = |args: &[&str], name: &str| {
        let out = d(name);
        let mut all = vec!["-R", "-D", "-V1", "-n", "-r", "8000", "-c", "2"];
        all.extend(args);
        all.extend([
            out.as_str(),
            "synth",
            "2",
            "sine",
            "440",
            "sine",
            "660",
            "vol",
            "0.5",
        ]);
        make_with("sox", &all).then(|| name.to_string())
    };
    // (file, sox reads it, ffmpeg reads it): sox has no RF64, ffmpeg no float RIFX.
    let mut files: Vec<(String, bool, bool)> = Vec::new();
    let mut missing = Vec::new();
    for (made, tool, sox_reads, ffmpeg_reads) in [
        (
            ffmpeg("pcm_f64le", &[], "ffmpeg-f64.wav"),
            "ffmpeg",
            true,
            true,
        ),
        (
            ffmpeg("pcm_alaw", &[], "ffmpeg-alaw.wav"),
            "ffmpeg",
            true,
            true,
        ),
        (
            ffmpeg("pcm_mulaw", &[], "ffmpeg-mulaw.wav"),
            "ffmpeg",
            true,
            true,
        ),
        (
            ffmpeg("pcm_s24le", &["-rf64", "always"], "ffmpeg-rf64-always.wav"),
            "ffmpeg",
            false,
            true,
        ),
        (
            ffmpeg("pcm_s16le", &["-rf64", "auto"], "ffmpeg-rf64-auto.wav"),
            "ffmpeg",
            true,
            true,
        ),
        (
            sox(&["-e", "a-law", "-b", "8"], "sox-alaw.wav"),
            "sox",
            true,
            true,
        ),
        (
            sox(&["-e", "u-law", "-b", "8"], "sox-ulaw.wav"),
            "sox",
            true,
            true,
        ),
        (
            sox(&["-e", "floating-point", "-b", "64"], "sox-f64.wav"),
            "sox",
            true,
            true,
        ),
        (
            sox(&["-e", "signed", "-b", "16", "-B"], "sox-rifx-16.wav"),
            "sox",
            true,
            true,
        ),
        (
            sox(
                &["-e", "floating-point", "-b", "32", "-B"],
                "sox-rifx-f32.wav",
            ),
            "sox",
            true,
            false,
        ),
    ] {
        match made {
            Some(name) => files.push((name, sox_reads, ffmpeg_reads)),
            None => missing.push(tool),
        }
    }
    if have_scipy() {
        soundfile_py(
            "from scipy.io import wavfile\nwavfile.write(sys.argv[1], 16000, 0.4 * np.sin(np.arange(32000) / 7.0))",
            &[&d("scipy-f64.wav")],
        );
        files.push(("scipy-f64.wav".into(), true, true));
    } else {
        missing.push("scipy");
    }
    missing.dedup();
    for tool in &missing {
        println!("skipped: files written by {tool} (not installed)");
    }
    if files.is_empty() {
        return;
    }
    let names: Vec<String> = files.iter().map(|(n, _, _)| n.clone()).collect();

    let run = run_settled(dir.path(), &[".", "--sigma", "0", "--seed", "3"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(names.len() as u64, 0, 0));
    for (name, sox_reads, ffmpeg_reads) in &files {
        let input = dir.path().join(name);
        let output = output_of(&input);
        if *ffmpeg_reads && let Some(x) = ffmpeg_samples(&input) {
            assert_eq!(
                ffmpeg_samples(&output).unwrap(),
                x,
                "{name}: ffmpeg's samples"
            );
        }
        if *sox_reads && let Some(x) = sox_samples(&input) {
            assert_eq!(sox_samples(&output).unwrap(), x, "{name}: sox's samples");
        }
    }
    let rifx = fs::read(output_of(&dir.path().join("sox-rifx-f32.wav")));
    if let Ok(bytes) = rifx {
        assert_eq!(&bytes[..4], b"RIFX");
    }
    let always = fs::read(output_of(&dir.path().join("ffmpeg-rf64-always.wav")));
    if let Ok(bytes) = always {
        assert_eq!(&bytes[..4], b"RF64");
    }
    if !have_soundfile() {
        println!("skipped: libsndfile checks (python3 -m pip install soundfile)");
        return;
    }
    for c in compare(dir.path(), &names) {
        assert_eq!(
            c.output, c.input,
            "{}: format read back by libsndfile",
            c.name
        );
        assert!(c.identical, "{}: samples at sigma 0 (libsndfile)", c.name);
    }
    let run = run_settled(
        dir.path(),
        &[".", "--sigma", "0.1", "--seed", "3", "--force"],
    );
    run.expect_code(0);
    for c in compare(dir.path(), &names) {
        assert_eq!(
            c.output, c.input,
            "{}: format read back by libsndfile",
            c.name
        );
        assert!(
            (c.std / 0.1 - 1.0).abs() < 0.05,
            "{}: noise std {} for sigma 0.1",
            c.name,
            c.std
        );
    }
    for (name, sox_reads, ffmpeg_reads) in &files {
        let output = output_of(&dir.path().join(name));
        if *ffmpeg_reads {
            ffmpeg_samples(&output);
        }
        if *sox_reads {
            sox_samples(&output);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Large files: split across workers, and past 4 GiB
// ---------------------------------------------------------------------------------------------

/// A file of `data_len` bytes of silence (sparse where the filesystem allows) in `container`
/// with the `fmt ` body `fmt`, written with etl's own header writer.
fn sparse_input(path: &Path, container: Container, fmt: &[u8], data_len: u64) {
    let header = wav::header(container, fmt, data_len).unwrap();
    let file = fs::File::create(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &header.bytes, 0).unwrap();
    file.set_len(header.file_len).unwrap();
}

#[test]
fn files_split_across_workers_give_the_same_bytes_in_every_container() {
    // Larger than the 64 MiB from which a file is split, so that -j 2 takes it in parts.
    let data_len = 66 << 20;
    let mut rifx_fmt = pcm_fmt(2, 48000, 16);
    for field in [0..2, 2..4, 12..14, 14..16] {
        rifx_fmt[field].reverse();
    }
    for field in [4..8, 8..12] {
        rifx_fmt[field].reverse();
    }
    let cases = [
        (
            "rf64-24.wav",
            Container::Rf64 { bw64: false },
            pcm_fmt(2, 48000, 24),
        ),
        ("w64-f64.wav", Container::Wave64, {
            let mut f = pcm_fmt(1, 48000, 64);
            f[0] = 3;
            f
        }),
        ("rifx-16.wav", Container::Rifx, rifx_fmt),
        (
            "20-in-24.wav",
            Container::Riff,
            extensible_fmt(2, 48000, 24, 20, 1),
        ),
    ];
    let dir = tempdir();
    for (name, container, fmt) in &cases {
        let frame = 2 * 24 / 8 * 2; // a multiple of every frame size above (6, 8, 4)
        sparse_input(
            &dir.path().join(name),
            *container,
            fmt,
            data_len / frame * frame,
        );
    }
    let args = ["--sigma", "0.1", "--seed", "11", "--no-fsync"];
    let mut one = vec![".", "-j", "1"];
    one.extend(args);
    run_settled(dir.path(), &one).expect_code(0);
    let whole: Vec<Vec<u8>> = cases
        .iter()
        .map(|(name, ..)| fs::read(output_of(&dir.path().join(name))).unwrap())
        .collect();
    let mut two = vec![".", "-j", "2", "--force"];
    two.extend(args);
    run_settled(dir.path(), &two).expect_code(0);
    for ((name, container, _), whole) in cases.iter().zip(whole) {
        let split = fs::read(output_of(&dir.path().join(name))).unwrap();
        assert!(split == whole, "{name}: -j 2 differs from -j 1");
        let magic: &[u8] = match container {
            Container::Rf64 { .. } => b"RF64",
            Container::Wave64 => b"riff",
            Container::Rifx => b"RIFX",
            Container::Riff => b"RIFF",
        };
        assert_eq!(&split[..4], magic, "{name}");
    }
    if have_soundfile() {
        for (name, ..) in &cases {
            let out = output_of(&dir.path().join(name));
            let frames: u64 = soundfile_info(&out)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(frames > 0, "{name}");
        }
    }
}

/// Writes over 8 GiB: run it with `cargo test --release --test formats -- --ignored`.
#[test]
#[ignore = "writes two files over 4 GiB; .ci/run runs it"]
fn outputs_past_4_gib_are_rf64_and_read_in_full_by_libsndfile_and_ffmpeg() {
    let dir = tempdir();
    // What ffmpeg leaves on a pipe: RIFF, data size 0xFFFFFFFF, samples to the end; here
    // 4 GiB + 2 MiB of 16-bit mono silence, sparse.
    let input = dir.path().join("piped.wav");
    let fmt = pcm_fmt(1, 48000, 16);
    let mut head = riff(&[chunk(b"fmt ", &fmt)]);
    head[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    head.extend_from_slice(b"data");
    head.extend_from_slice(&u32::MAX.to_le_bytes());
    let data_len: u64 = (4 << 30) + (2 << 20);
    let file = fs::File::create(&input).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &head, 0).unwrap();
    file.set_len(head.len() as u64 + data_len).unwrap();
    drop(file);

    let run = run_settled(
        dir.path(),
        &["piped.wav", "--sigma", "0", "--no-fsync", "-j", "2"],
    );
    run.expect_code(0);
    let output = output_of(&input);
    check_rf64(&output, data_len / 2);
    fs::remove_file(&output).unwrap();
    fs::remove_file(&input).unwrap();

    // gen-fake-data past 4 GiB: 64-bit float, 8000 Hz, 67109 s = 4295 MB of samples.
    let gen_dir = dir.path().join("gen");
    gen_fake_data(
        &gen_dir,
        &[
            "--count",
            "1",
            "--format",
            "f64",
            "--sample-rate",
            "8000",
            "--duration",
            "67109",
        ],
    );
    check_rf64(&gen_dir.join("example0.wav"), 8000 * 67109);
}

/// `path` is RF64 and libsndfile and ffprobe see all its `frames`.
fn check_rf64(path: &Path, frames: u64) {
    let head = first_bytes(path, 4);
    assert_eq!(head, b"RF64", "{}", path.display());
    if have_soundfile() {
        let got: u64 = soundfile_info(path)
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(got, frames, "libsndfile's frames");
    } else {
        println!("skipped: libsndfile check (python3 -m pip install soundfile)");
    }
    match std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=duration_ts",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.trim().parse::<u64>().ok(),
                Some(frames),
                "ffprobe: {text}"
            );
        }
        Err(_) => println!("skipped: ffprobe check (ffmpeg not installed)"),
    }
}

// ---------------------------------------------------------------------------------------------
// --output-format
// ---------------------------------------------------------------------------------------------

#[test]
fn output_format_converts_on_write_and_the_report_records_it() {
    if !have_soundfile() {
        println!("skipped: python soundfile (libsndfile) is not installed");
        return;
    }
    let dir = tempdir();
    soundfile_py(
        r#"
t = np.arange(20000) / 8000
x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1)
for fmt, st in [("WAV", "PCM_U8"), ("WAV", "ALAW"), ("RF64", "ULAW"), ("W64", "PCM_24")]:
    sf.write(f"{sys.argv[1]}/{fmt}-{st}.wav", x, 8000, subtype=st, format=fmt)
"#,
        &[s(dir.path())],
    );
    let names: Vec<String> = ["WAV-PCM_U8", "WAV-ALAW", "RF64-ULAW", "W64-PCM_24"]
        .iter()
        .map(|n| format!("{n}.wav"))
        .collect();
    let report = dir.path().join("report.jsonl");
    let args = [".", "--sigma", "0", "--output-format", "f32", "--report"];
    let mut all = args.to_vec();
    all.push(s(&report));
    run_settled(dir.path(), &all).expect_code(0);
    for c in compare(dir.path(), &names) {
        // Every input's samples are exact in f32.
        assert!(c.identical, "{}: samples converted at sigma 0", c.name);
        let want = c.input.replace("PCM_U8", "FLOAT").replace("ALAW", "FLOAT");
        let want = want.replace("ULAW", "FLOAT").replace("PCM_24", "FLOAT");
        assert_eq!(c.output, want, "{}", c.name);
    }
    let text = fs::read_to_string(&report).unwrap();
    for (name, container) in [
        ("WAV-ALAW.wav", "RIFF/WAVE"),
        ("RF64-ULAW.wav", "RF64"),
        ("W64-PCM_24.wav", "Wave64"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no record for {name}:\n{text}"));
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["output_format"], "f32", "{line}");
        assert_eq!(r["output_container"], container, "{line}");
    }

    // The noise keeps its precision in f32: its std is sigma, with no G.711 step added.
    let mut all = vec![".", "--sigma", "0.01", "--force", "--output-format", "f32"];
    all.extend(["--seed", "9"]);
    run_settled(dir.path(), &all).expect_code(0);
    for c in compare(dir.path(), &names) {
        assert!(
            (c.std / 0.01 - 1.0).abs() < 0.05,
            "{}: std {}",
            c.name,
            c.std
        );
    }

    // And to G.711: libsndfile reads the output as A-law, in the input's container.
    let run = run_settled(
        dir.path(),
        &[
            "W64-PCM_24.wav",
            "--sigma",
            "0",
            "--force",
            "--output-format",
            "alaw",
        ],
    );
    run.expect_code(0);
    let out = output_of(&dir.path().join("W64-PCM_24.wav"));
    assert_eq!(soundfile_info(&out), "20000 2 8000 W64 ALAW");
}

#[test]
fn gen_fake_data_writes_64_bit_float_and_g711() {
    let dir = tempdir();
    for (format, subtype) in [("f64", "DOUBLE"), ("alaw", "ALAW"), ("ulaw", "ULAW")] {
        let out = dir.path().join(format);
        gen_fake_data(
            &out,
            &[
                "--count",
                "1",
                "--format",
                format,
                "--duration",
                "0.5",
                "--channels",
                "2",
            ],
        );
        let file = out.join("example0.wav");
        if have_soundfile() {
            assert_eq!(
                soundfile_info(&file),
                format!("22050 2 44100 WAV {subtype}"),
                "{format}"
            );
            // A 440 Hz tone at half scale, as libsndfile decodes it.
            let peak: f64 = soundfile_py(
                "x, _ = sf.read(sys.argv[1]); print(abs(x).max())",
                &[s(&file)],
            )
            .trim()
            .parse()
            .unwrap();
            assert!((peak - 0.5).abs() < 0.02, "{format}: peak {peak}");
        }
        // And etl transforms it back into the same format.
        run_one(&file, &["--sigma", "0"]).expect_code(0);
        let (a, b) = (
            fs::read(&file).unwrap(),
            fs::read(output_of(&file)).unwrap(),
        );
        assert_eq!(a, b, "{format}: sigma 0 gives back the very file etl wrote");
    }
    if !have_soundfile() {
        println!("skipped: libsndfile check (python3 -m pip install soundfile)");
    }
}

#[test]
fn long_fmt_chunks_and_bw64_are_read_and_kept() {
    let dir = tempdir();
    let samples = tone_i16(3000);
    // A plain PCM fmt of 38 bytes (cbSize 20 and 20 bytes of extra) and an EXTENSIBLE one of 48.
    let mut long_pcm = pcm_fmt(1, 8000, 16);
    long_pcm.extend_from_slice(&20u16.to_le_bytes());
    long_pcm.extend_from_slice(&[7; 20]);
    let mut long_ext = extensible_fmt(1, 8000, 16, 16, 1);
    long_ext[16..18].copy_from_slice(&30u16.to_le_bytes());
    long_ext.extend_from_slice(&[9; 8]);
    for (name, fmt) in [("long-pcm.wav", long_pcm), ("long-ext.wav", long_ext)] {
        let input = dir.path().join(name);
        fs::write(
            &input,
            riff(&[chunk(b"fmt ", &fmt), chunk(b"data", &samples)]),
        )
        .unwrap();
        run_one(&input, &["--sigma", "0"]).expect_code(0);
        let out = fs::read(output_of(&input)).unwrap();
        assert_eq!(out[20..20 + fmt.len()], fmt[..], "{name}: fmt kept");
        assert_eq!(data_bytes(&output_of(&input)), samples, "{name}");
        if have_soundfile() {
            let view = soundfile_info(&output_of(&input));
            assert!(view.starts_with("3000 1 8000 "), "{name}: {view}");
        }
    }

    // BW64 is RF64 under another magic: the output keeps it.
    let input = dir.path().join("bw64.wav");
    let mut bytes = wav::header(Container::Rf64 { bw64: true }, &pcm_fmt(1, 8000, 16), 6000)
        .unwrap()
        .bytes;
    bytes.extend_from_slice(&samples);
    fs::write(&input, &bytes).unwrap();
    run_one(&input, &["--sigma", "0"]).expect_code(0);
    assert_eq!(fs::read(output_of(&input)).unwrap(), bytes);
}

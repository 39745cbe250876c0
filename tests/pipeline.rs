//! The pipeline end to end (issue 2): `etl gen-fake-data`, `etl run` and `etl demo` as a user runs
//! them, checked on what ends up on disk and on the streams: noise statistics, clipping, the
//! identity at sigma 0, every fixture, determinism across -j, re-runs, --out-dir with -r,
//! --snr-db, generated tones, the stdout lines and the usage errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("etl-pipeline-")
        .tempdir()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `gen-fake-data` of one file into a fresh folder `dir/name`, returning the file's path.
fn gen_one(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut all = vec!["--count", "1"];
    all.extend_from_slice(args);
    gen_fake_data(&out, &all);
    out.join("example0.wav")
}

/// Transforms the one file `input` (given as a file PATH) and returns its output read back.
fn transform(input: &Path, args: &[&str]) -> Wav {
    let mut all = vec![s(input)];
    all.extend_from_slice(args);
    let run = run_in(input.parent().unwrap(), &all);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 0, 0), "{}", run.stdout);
    read_wav(&output_of(input))
}

/// Names that are neither inputs nor outputs: the run's lock files.
fn is_lock(name: &str) -> bool {
    name.starts_with(".etl") && name.ends_with(".lock")
}

// ---------------------------------------------------------------------------------------------
// Noise statistics
// ---------------------------------------------------------------------------------------------

/// Checks that `output - input` is independent N(0, sigma) noise: per channel its std within 5%
/// of sigma and its mean within 5 standard errors of 0; over all samples kurtosis near 3, a KS
/// statistic against N(0, 1) under the 1% critical value and 0.27% of samples beyond 3 sigma;
/// no correlation between channels nor between neighbouring samples.
fn check_noise(label: &str, input: &Wav, output: &Wav, sigma: f64) {
    assert_eq!(output.spec, input.spec, "{label}: layout");
    assert_eq!(output.frames, input.frames, "{label}: frames");
    let noise: Vec<f64> = output
        .samples
        .iter()
        .zip(&input.samples)
        .map(|(o, i)| o - i)
        .collect();
    let channels = input.channels();
    let per_channel: Vec<Vec<f64>> = (0..channels)
        .map(|c| noise.iter().skip(c).step_by(channels).copied().collect())
        .collect();
    for (c, x) in per_channel.iter().enumerate() {
        let n = x.len() as f64;
        let sd = std(x);
        assert!(
            (sd / sigma - 1.0).abs() < 0.05,
            "{label}: channel {c}: noise std {sd} is not within 5% of sigma {sigma}"
        );
        let m = mean(x);
        assert!(
            m.abs() < 5.0 * sigma / n.sqrt(),
            "{label}: channel {c}: noise mean {m} is more than 5 standard errors from 0"
        );
        let lag1 = correlation(&x[1..], &x[..x.len() - 1]);
        assert!(
            lag1.abs() < 5.0 / n.sqrt(),
            "{label}: channel {c}: neighbouring noise samples correlate ({lag1})"
        );
    }
    for a in 0..channels {
        for b in a + 1..channels {
            let r = correlation(&per_channel[a], &per_channel[b]);
            let frames = per_channel[a].len() as f64;
            assert!(
                r.abs() < 5.0 / frames.sqrt(),
                "{label}: noise of channels {a} and {b} correlates: r = {r}"
            );
        }
    }
    let z: Vec<f64> = noise.iter().map(|v| v / sigma).collect();
    let n = z.len();
    let k = kurtosis(&z);
    assert!(
        (k - 3.0).abs() < 7.0 * (24.0 / n as f64).sqrt(),
        "{label}: kurtosis {k} is not near 3 (a normal distribution's)"
    );
    let d = ks_statistic(&z);
    let critical = ks_critical_1pct(n);
    assert!(
        d < critical,
        "{label}: KS statistic {d} against N(0, 1) exceeds the 1% critical value {critical}"
    );
    let p = 2.0 * (1.0 - normal_cdf(3.0)); // 0.0027
    let tails = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n as f64;
    let se = (p * (1.0 - p) / n as f64).sqrt();
    assert!(
        (tails - p).abs() < 5.0 * se,
        "{label}: {tails} of the noise is beyond 3 sigma, not about {p}"
    );
}

#[test]
fn noise_is_independent_gaussian_with_the_asked_sigma() {
    let dir = tempdir();
    // f32 (float, no quantisation) and i24 (steps of 1.2e-7, far below sigma); 3 s of stereo
    // is 264600 samples per case. Amplitudes keep clear of clipping (5 sigma and more).
    let cases: [(&str, &str, &str, &str, &str); 4] = [
        ("silence f32 sigma 0.1", "f32", "0", "0.1", "101"),
        ("tone f32 sigma 0.01", "f32", "0.5", "0.01", "102"),
        ("tone i24 sigma 0.1", "i24", "0.3", "0.1", "103"),
        ("tone i24 sigma 0.01", "i24", "0.9", "0.01", "104"),
    ];
    for (i, (label, format, amplitude, sigma, seed)) in cases.into_iter().enumerate() {
        let input = gen_one(
            dir.path(),
            &format!("case{i}"),
            &[
                "--duration",
                "3",
                "--channels",
                "2",
                "--format",
                format,
                "--amplitude",
                amplitude,
                "--frequency",
                "441",
            ],
        );
        let output = transform(&input, &["--sigma", sigma, "--seed", seed, "-j", "2"]);
        let input = read_wav(&input);
        assert_eq!(input.frames, 3 * 44100, "{label}");
        if amplitude == "0" {
            assert!(input.samples.iter().all(|&v| v == 0.0), "{label}: silence");
        }
        check_noise(label, &input, &output, sigma.parse().unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Clipping
// ---------------------------------------------------------------------------------------------

/// The integer range of a format (u8 read by hound as -128..=127), or None for float.
fn int_range(spec: &hound::WavSpec) -> Option<(i32, i32)> {
    match spec.sample_format {
        hound::SampleFormat::Float => None,
        hound::SampleFormat::Int => {
            let half = 1i64 << (spec.bits_per_sample - 1);
            Some((-half as i32, (half - 1) as i32))
        }
    }
}

#[test]
fn clipping_keeps_samples_in_range_and_saturates_at_full_scale() {
    let dir = tempdir();
    let sigma = 0.5;
    for format in ["u8", "i16", "i24", "i32", "f32"] {
        let input = gen_one(
            dir.path(),
            format,
            &["--duration", "1", "--amplitude", "1", "--format", format],
        );
        let out = transform(&input, &["--sigma", "0.5", "--seed", "7"]);
        let inp = read_wav(&input);
        assert_eq!(out.frames, inp.frames, "{format}");
        assert!(
            out.samples.iter().all(|v| (-1.0..=1.0).contains(v)),
            "{format}: a sample outside [-1, 1]"
        );
        // What rounds to the top code: y >= hi; to the bottom one: y <= lo (rounding half away
        // from zero). Counted apart, so that a wrap from one end to the other shows.
        let (top, bottom, hi, lo) = match int_range(&out.spec) {
            Some((min, max)) => {
                let ints = read_ints(&output_of(&input));
                assert!(
                    ints.iter().all(|v| (min..=max).contains(v)),
                    "{format}: a sample outside {min}..={max}"
                );
                let scale = full_scale(out.spec.bits_per_sample);
                (
                    ints.iter().filter(|&&v| v == max).count(),
                    ints.iter().filter(|&&v| v == min).count(),
                    (max as f64 - 0.5) / scale,
                    (min as f64 + 0.5) / scale,
                )
            }
            None => (
                out.samples.iter().filter(|&&v| v == 1.0).count(),
                out.samples.iter().filter(|&&v| v == -1.0).count(),
                1.0,
                -1.0,
            ),
        };
        // The expected numbers at full scale, given each input sample, and their variances.
        let (mut e_top, mut v_top, mut e_bottom, mut v_bottom) = (0.0, 0.0, 0.0, 0.0);
        for &x in &inp.samples {
            let p = 1.0 - normal_cdf((hi - x) / sigma);
            let q = normal_cdf((lo - x) / sigma);
            (e_top, v_top) = (e_top + p, v_top + p * (1.0 - p));
            (e_bottom, v_bottom) = (e_bottom + q, v_bottom + q * (1.0 - q));
        }
        let n = out.samples.len();
        assert!(
            (top + bottom) as f64 > 0.15 * n as f64,
            "{format}: only {} of {n} samples at full scale",
            top + bottom
        );
        for (end, count, expected, var) in [
            ("+1", top, e_top, v_top),
            ("-1", bottom, e_bottom, v_bottom),
        ] {
            assert!(
                (count as f64 - expected).abs() < 6.0 * var.sqrt() + 1.0,
                "{format}: {count} samples at {end}, expected about {expected:.0}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sigma 0 is the identity
// ---------------------------------------------------------------------------------------------

#[test]
fn sigma_zero_gives_back_every_sample_of_every_fixture_and_format() {
    let dir = tempdir();
    let root = dir.path().join("in");
    fs::create_dir(&root).unwrap();
    // (input, its layout, frames)
    let mut inputs: Vec<(PathBuf, hound::WavSpec, usize)> = Vec::new();
    for row in manifest().into_iter().filter(Fixture::is_ok) {
        let to = root.join(&row.file);
        fs::copy(row.path(), &to).unwrap();
        settle(&to);
        let f = row.format.unwrap();
        let layout = spec(f.channels, f.sample_rate, f.bits, f.float);
        inputs.push((to, layout, f.frames));
    }
    // Full-scale tones (amplitude 1: the extreme codes) with an odd frame count.
    for (format, channels) in [
        ("u8", "1"),
        ("i16", "2"),
        ("i24", "1"),
        ("i32", "2"),
        ("f32", "3"),
    ] {
        let sub = root.join(format!("gen-{format}"));
        gen_fake_data(
            &sub,
            &[
                "--count",
                "1",
                "--duration",
                "1",
                "--sample-rate",
                "8001",
                "--amplitude",
                "1",
                "--channels",
                channels,
                "--format",
                format,
            ],
        );
        let input = sub.join("example0.wav");
        let layout = hound::WavReader::open(&input).unwrap().spec();
        inputs.push((input, layout, 8001));
    }
    let run = run_in(dir.path(), &["in", "-r", "--sigma", "0", "--seed", "1"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(inputs.len() as u64, 0, 0));
    for (input, in_spec, frames) in &inputs {
        let output = output_of(input);
        let name = input.strip_prefix(&root).unwrap().display();
        let out = read_wav(&output);
        assert_eq!(out.spec, *in_spec, "{name}: format, channels, rate, bits");
        assert_eq!(out.frames, *frames, "{name}: frames");
        let (a, b) = (data_bytes(input), data_bytes(&output));
        assert_eq!(
            a.len(),
            frames * in_spec.channels as usize * (in_spec.bits_per_sample as usize / 8),
            "{name}: input data length"
        );
        assert_eq!(a.len(), b.len(), "{name}: data length");
        assert!(a == b, "{name}: sample bytes differ at sigma 0");
        // And through hound, where hound can read the input (not the placeholder-size ones).
        let hound_len = hound::WavReader::open(input).map_or(0, |r| r.len() as usize);
        if hound_len == frames * in_spec.channels as usize {
            assert!(
                read_wav(input).samples == out.samples,
                "{name}: samples differ"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every fixture
// ---------------------------------------------------------------------------------------------

/// (channels, rate, frames) of each file as `sox --i` sees it.
fn sox_view(path: &Path) -> Option<(u16, u32, usize)> {
    let out = std::process::Command::new("sox")
        .arg("--i")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let channels = field("Channels")?.parse().ok()?;
    let rate = field("Sample Rate")?.parse().ok()?;
    // `sox --i` prints no Duration line for a file without samples; `-s` always answers.
    let samples = std::process::Command::new("sox")
        .args(["--i", "-s"])
        .arg(path)
        .output()
        .ok()?;
    let samples = String::from_utf8_lossy(&samples.stdout)
        .trim()
        .parse()
        .ok()?;
    Some((channels, rate, samples))
}

/// (channels, rate, frames) as ffprobe sees it; frames from `duration_ts` ("N/A" for no samples).
fn ffprobe_view(path: &Path) -> Option<(u16, u32, usize)> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args([
            "stream=channels,sample_rate,duration_ts",
            "-of",
            "default=nw=1",
        ])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let frames = match field("duration_ts")?.as_str() {
        "N/A" => 0,
        n => n.parse().ok()?,
    };
    Some((
        field("channels")?.parse().ok()?,
        field("sample_rate")?.parse().ok()?,
        frames,
    ))
}

/// (channels, rate, frames) of each file as scipy.io.wavfile.read sees it, by file name.
fn scipy_view(paths: &[PathBuf]) -> BTreeMap<String, (u16, u32, usize)> {
    let script = "import sys, scipy.io.wavfile as w\n\
                  for p in sys.argv[1:]:\n    \
                      r, d = w.read(p)\n    \
                      print(p, d.shape[1] if d.ndim == 2 else 1, r, d.shape[0])\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scipy could not read the outputs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.rsplitn(4, ' ').collect();
            let name = Path::new(f[3]).file_name().unwrap().to_string_lossy();
            (
                name.into_owned(),
                (
                    f[2].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[0].parse().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn every_ok_fixture_transforms_to_its_own_layout_and_other_tools_agree() {
    let dir = tempdir();
    let root = dir.path().join("fixtures");
    fs::create_dir(&root).unwrap();
    let rows: Vec<Fixture> = manifest().into_iter().filter(Fixture::is_ok).collect();
    for row in &rows {
        fs::copy(row.path(), root.join(&row.file)).unwrap();
    }
    settle(&root);
    let run = run_in(dir.path(), &["fixtures", "--sigma", "0.1", "--seed", "11"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(rows.len() as u64, 0, 0));
    let completed: BTreeSet<String> = run.completed().into_iter().collect();
    let wanted: BTreeSet<String> = rows
        .iter()
        .map(|r| format!("fixtures/{}", r.file))
        .collect();
    assert_eq!(completed, wanted, "one `completed` line per fixture");

    let outputs: Vec<PathBuf> = rows
        .iter()
        .map(|r| output_of(&root.join(&r.file)))
        .collect();
    for (row, output) in rows.iter().zip(&outputs) {
        let want = row.format.unwrap();
        let name = &row.file;
        let out = read_wav(output);
        assert_eq!(
            out.spec.sample_format,
            if want.float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
            "{name}: sample format"
        );
        assert_eq!(out.spec.bits_per_sample, want.bits, "{name}: bits");
        assert_eq!(out.spec.channels, want.channels, "{name}: channels");
        assert_eq!(out.spec.sample_rate, want.sample_rate, "{name}: rate");
        assert_eq!(out.frames, want.frames, "{name}: frames");
        if want.frames == 0 {
            continue;
        }
        // Noise of about sigma was added to every channel (the fixtures are small: 15%).
        let input = decode(&data_bytes(&root.join(name)), want.float, want.bits);
        assert_eq!(input.len(), out.samples.len(), "{name}");
        let channels = want.channels as usize;
        for c in 0..channels {
            let noise: Vec<f64> = (c..input.len())
                .step_by(channels)
                .map(|i| out.samples[i] - input[i])
                .collect();
            let sd = std(&noise);
            assert!(
                (sd / 0.1 - 1.0).abs() < 0.15,
                "{name}: channel {c}: noise std {sd}, sigma was 0.1"
            );
        }
    }

    let expected = |row: &Fixture| {
        let f = row.format.unwrap();
        (f.channels, f.sample_rate, f.frames)
    };
    if have("sox", "--version") {
        for (row, output) in rows.iter().zip(&outputs) {
            assert_eq!(sox_view(output), Some(expected(row)), "sox on {}", row.file);
        }
    } else {
        eprintln!("note: sox is not installed; skipped its reading of the outputs");
    }
    if have("ffprobe", "-version") {
        for (row, output) in rows.iter().zip(&outputs) {
            assert_eq!(
                ffprobe_view(output),
                Some(expected(row)),
                "ffprobe on {}",
                row.file
            );
        }
    } else {
        eprintln!("note: ffprobe is not installed; skipped its reading of the outputs");
    }
    if have_scipy() {
        let seen = scipy_view(&outputs);
        for (row, output) in rows.iter().zip(&outputs) {
            let name = output.file_name().unwrap().to_string_lossy();
            assert_eq!(
                seen.get(name.as_ref()),
                Some(&expected(row)),
                "scipy on {}",
                row.file
            );
        }
    } else {
        eprintln!("note: python3 with scipy is not installed; skipped its reading of the outputs");
    }
}

// ---------------------------------------------------------------------------------------------
// Broken fixtures
// ---------------------------------------------------------------------------------------------

/// Runs on a folder of one good file and the fixture `row`, which must fail alone and cleanly.
fn check_error_fixture(row: &Fixture) {
    let want = row.expected_error().unwrap();
    let dir = tempdir();
    let root = dir.path().join("mixed");
    fs::create_dir(&root).unwrap();
    fs::copy(row.path(), root.join(&row.file)).unwrap();
    fs::copy(
        fixtures_dir().join("sox-s16-mono-44k.wav"),
        root.join("good.wav"),
    )
    .unwrap();
    settle(&root);
    let run = run_in(dir.path(), &["mixed", "--seed", "3"]);
    let name = &row.file;
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(1, 0, 1), "{name}");
    assert_eq!(run.completed(), ["mixed/good.wav"], "{name}");
    let naming: Vec<&str> = run.stderr.lines().filter(|l| l.contains(name)).collect();
    assert_eq!(
        naming.len(),
        1,
        "{name}: stderr should have one line naming the file:\n{}",
        run.stderr
    );
    assert!(
        naming[0].contains("ERROR") && naming[0].contains(&format!("mixed/{name}")),
        "{name}: {:?}",
        naming[0]
    );
    assert!(
        naming[0].to_lowercase().contains(want),
        "{name}: the error {:?} does not say {want:?}",
        naming[0]
    );
    assert_eq!(
        run.stderr.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "{name}: one error in all:\n{}",
        run.stderr
    );
    let good = read_wav(&root.join("good-transformed.wav"));
    assert_eq!(good.frames, 4410, "{name}: the good file is transformed");
    let left: Vec<String> = names(&root).into_iter().filter(|n| !is_lock(n)).collect();
    let mut expected = vec![
        name.to_string(),
        "good-transformed.wav".into(),
        "good.wav".into(),
    ];
    expected.sort();
    assert_eq!(
        left, expected,
        "{name}: no output and no temporary file for the bad file"
    );
    assert!(
        fs::read(root.join(name)).unwrap() == fs::read(row.path()).unwrap(),
        "{name}: the input was changed"
    );
}

#[test]
fn every_error_fixture_fails_alone_naming_its_cause_and_leaves_nothing() {
    let rows: Vec<Fixture> = manifest()
        .into_iter()
        .filter(|r| r.expected_error().is_some())
        .collect();
    assert!(rows.len() >= 8);
    for row in &rows {
        check_error_fixture(row);
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

fn outputs_in(dir: &Path, inputs: &[&str]) -> Vec<Vec<u8>> {
    inputs
        .iter()
        .map(|n| fs::read(output_of(&dir.join(n))).unwrap())
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_bytes_whatever_the_number_of_workers() {
    let dir = tempdir();
    let root = dir.path().join("in");
    fs::create_dir(&root).unwrap();
    // Files of different sizes and formats; the 70.6 MB one is above the 64 MiB at which the
    // supervisor splits a file into parts when -j is 2 or more.
    let made: [(&str, &[&str]); 5] = [
        ("big.wav", &["--duration", "400", "--format", "f32"]),
        (
            "stereo16.wav",
            &["--duration", "5", "--channels", "2", "--format", "i16"],
        ),
        (
            "three24.wav",
            &["--duration", "2", "--channels", "3", "--format", "i24"],
        ),
        ("small8.wav", &["--duration", "0.5", "--format", "u8"]),
        (
            "odd32.wav",
            &[
                "--duration",
                "1.5",
                "--sample-rate",
                "22051",
                "--format",
                "i32",
            ],
        ),
    ];
    let names: Vec<&str> = made.iter().map(|(n, _)| *n).collect();
    for (name, args) in made {
        let generated = gen_one(dir.path(), &format!("gen-{name}"), args);
        fs::rename(generated, root.join(name)).unwrap();
    }
    assert!(fs::metadata(root.join("big.wav")).unwrap().len() > 64 << 20);

    let run = |jobs: &str, seed: &str| {
        let r = run_in(
            dir.path(),
            &["in", "--force", "--no-fsync", "-j", jobs, "--seed", seed],
        );
        r.expect_code(0);
        assert_eq!(r.counts(), Counts::new(names.len() as u64, 0, 0));
        outputs_in(&root, &names)
    };
    let one = run("1", "42");
    for jobs in ["2", "3"] {
        let many = run(jobs, "42");
        for (i, name) in names.iter().enumerate() {
            assert!(
                one[i] == many[i],
                "{name}: -j 1 and -j {jobs} give different bytes under the same seed"
            );
        }
    }
    // Where a filesystem has no unnamed files (O_TMPFILE), outputs go through a temporary
    // name instead: the same bytes, and no temporary left behind.
    for fresh in [true, false] {
        if fresh {
            for name in &names {
                fs::remove_file(output_of(&root.join(name))).unwrap();
            }
        }
        let r = Run::from_output(
            etl()
                .current_dir(dir.path())
                .env("ETL_NO_TMPFILE", "1")
                .args([
                    "run",
                    "--no-progress",
                    "in",
                    "--force",
                    "-j",
                    "2",
                    "--seed",
                    "42",
                ])
                .output()
                .unwrap(),
        );
        r.expect_code(0);
        assert_eq!(r.counts(), Counts::new(names.len() as u64, 0, 0));
        assert!(
            outputs_in(&root, &names) == one,
            "with temporary names (fresh outputs: {fresh}) the bytes differ"
        );
        let left = temp_files(&root);
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
    let other = run("2", "43");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(one[i].len(), other[i].len());
        assert!(
            one[i] != other[i],
            "{name}: seeds 42 and 43 give the same bytes"
        );
    }
    // Both halves of the split file differ between seeds (each part drew its own noise).
    let big = names.iter().position(|n| *n == "big.wav").unwrap();
    let (a, b) = (&one[big], &other[big]);
    let half = a.len() / 2;
    assert!(a[100..half] != b[100..half] && a[half..] != b[half..]);
}

#[test]
fn noise_depends_on_the_relative_path_not_on_the_folder() {
    let dir = tempdir();
    let tone = gen_one(
        dir.path(),
        "gen",
        &["--duration", "1", "--format", "f32", "--amplitude", "0.25"],
    );
    for p in ["one/a.wav", "one/b.wav", "two/a.wav", "three/sub/a.wav"] {
        let to = dir.path().join(p);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&tone, &to).unwrap();
        settle(&to);
    }
    for args in [
        &["one", "--seed", "5"][..],
        &["two", "--seed", "5"],
        &["three", "-r", "--seed", "5"],
    ] {
        run_in(dir.path(), args).expect_code(0);
    }
    let out = |p: &str| fs::read(output_of(&dir.path().join(p))).unwrap();
    // Same relative path `a.wav` under two folders: the same noise.
    assert!(out("one/a.wav") == out("two/a.wav"));
    // Another relative path, same seed, same input: other noise, uncorrelated.
    let input = read_wav(&tone);
    let noise = |p: &str| -> Vec<f64> {
        let o = read_wav(&output_of(&dir.path().join(p)));
        o.samples
            .iter()
            .zip(&input.samples)
            .map(|(o, i)| o - i)
            .collect()
    };
    for other in ["one/b.wav", "three/sub/a.wav"] {
        assert!(out("one/a.wav") != out(other), "{other}");
        let r = correlation(&noise("one/a.wav"), &noise(other));
        assert!(
            r.abs() < 0.03,
            "{other}: noise correlates with a.wav's: {r}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Re-runs
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rerun_skips_force_redoes_and_a_touched_input_is_redone() {
    let dir = tempdir();
    let sounds = dir.path().join("sounds");
    gen_fake_data(&sounds, &["--count", "3", "--duration", "0.5"]);
    let inputs: Vec<PathBuf> = (0..3)
        .map(|i| sounds.join(format!("example{i}.wav")))
        .collect();
    for i in &inputs {
        set_mtime(i, -100);
    }
    let first = run_in(dir.path(), &["sounds", "--seed", "1"]);
    first.expect_code(0);
    assert_eq!(first.counts(), Counts::new(3, 0, 0));
    for i in &inputs {
        set_mtime(&output_of(i), -50);
    }
    let state = || -> Vec<(Vec<u8>, std::time::SystemTime)> {
        inputs
            .iter()
            .map(|i| (fs::read(output_of(i)).unwrap(), mtime(&output_of(i))))
            .collect()
    };
    let before = state();

    // Another seed, so that a rewrite could not go unseen.
    let again = run_in(dir.path(), &["sounds", "--seed", "2"]);
    again.expect_code(0);
    assert_eq!(again.counts(), Counts::new(0, 3, 0));
    assert_eq!(
        again.stdout.lines().last(),
        Some("0 ok, 3 skipped, 0 failed")
    );
    assert!(again.completed().is_empty(), "{}", again.stdout);
    assert!(state() == before, "a skipped output was rewritten");

    // Touched after its output was made, and settled since (not still being written).
    set_mtime(&inputs[1], -SETTLED_SECS);
    let touched = run_in(dir.path(), &["sounds", "--seed", "2"]);
    touched.expect_code(0);
    assert_eq!(touched.counts(), Counts::new(1, 2, 0));
    assert_eq!(touched.completed(), ["sounds/example1.wav"]);
    let after = state();
    assert!(after[0] == before[0] && after[2] == before[2]);
    assert!(after[1].0 != before[1].0 && after[1].1 > before[1].1);

    let forced = run_in(dir.path(), &["sounds", "--seed", "2", "--force"]);
    forced.expect_code(0);
    assert_eq!(forced.counts(), Counts::new(3, 0, 0));
    let redone = state();
    for i in [0, 2] {
        assert!(
            redone[i].0 != before[i].0,
            "example{i}: --force did not redo it"
        );
        assert!(redone[i].1 > before[i].1);
    }
    assert!(
        redone[1].0 == after[1].0,
        "the same seed gives the same bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// --out-dir and -r
// ---------------------------------------------------------------------------------------------

#[test]
fn out_dir_with_recursion_mirrors_the_tree_and_leaves_inputs_alone() {
    let dir = tempdir();
    let root = dir.path().join("in");
    let mono = spec(1, 8000, 16, false);
    let files = [
        ("a.wav", 800),
        ("sub/b.WAV", 801),
        ("sub/deeper/c.wav", 802),
        (".hidden.wav", 803),
        ("sub/.also-hidden.wav", 804),
        (".hidden-dir/d.wav", 805),
        ("old-transformed.wav", 806),
        ("sub/e-TRANSFORMED.WAV", 807),
    ];
    for (name, frames) in files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_tone(&p, mono, frames, 300.0, 0.5);
    }
    fs::write(root.join("notes.txt"), "not audio\n").unwrap();
    let before = snapshot(&root);

    let run = run_in(
        dir.path(),
        &["in", "-r", "--out-dir", "out", "--seed", "4", "-j", "2"],
    );
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(3, 0, 0));
    let completed: BTreeSet<String> = run.completed().into_iter().collect();
    let want: BTreeSet<String> = ["in/a.wav", "in/sub/b.WAV", "in/sub/deeper/c.wav"]
        .map(String::from)
        .into();
    assert_eq!(completed, want);
    assert!(snapshot(&root) == before, "the input folder changed");

    let outputs: BTreeMap<PathBuf, Vec<u8>> = snapshot(&dir.path().join("out"))
        .into_iter()
        .filter(|(p, _)| !is_lock(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    let got: Vec<&Path> = outputs.keys().map(PathBuf::as_path).collect();
    assert_eq!(
        got,
        [
            Path::new("a-transformed.wav"),
            Path::new("sub/b-transformed.wav"),
            Path::new("sub/deeper/c-transformed.wav")
        ]
    );
    for (out, frames) in [
        ("a-transformed.wav", 800),
        ("sub/b-transformed.wav", 801),
        ("sub/deeper/c-transformed.wav", 802),
    ] {
        let w = read_wav(&dir.path().join("out").join(out));
        assert_eq!((w.spec, w.frames), (mono, frames), "{out}");
    }

    // Without -r only the top folder's inputs are taken.
    let flat = run_in(dir.path(), &["in", "--out-dir", "flat", "--seed", "4"]);
    flat.expect_code(0);
    assert_eq!(flat.counts(), Counts::new(1, 0, 0));
    let flat_files: Vec<PathBuf> = snapshot(&dir.path().join("flat"))
        .into_keys()
        .filter(|p| !is_lock(&p.to_string_lossy()))
        .collect();
    assert_eq!(flat_files, [PathBuf::from("a-transformed.wav")]);
    assert!(snapshot(&root) == before, "the input folder changed");
}

// ---------------------------------------------------------------------------------------------
// --snr-db
// ---------------------------------------------------------------------------------------------

#[test]
fn snr_db_sets_the_noise_from_the_files_rms() {
    let dir = tempdir();
    for (format, channels, amplitude, db) in [("f32", "1", 0.5, 20.0), ("i16", "2", 0.8, 30.0)] {
        let input = gen_one(
            dir.path(),
            format,
            &[
                "--duration",
                "2",
                "--format",
                format,
                "--channels",
                channels,
                "--amplitude",
                &amplitude.to_string(),
            ],
        );
        let out = transform(
            &input,
            &["--snr-db", &db.to_string(), "--seed", "8", "-j", "2"],
        );
        let inp = read_wav(&input);
        let rms =
            (inp.samples.iter().map(|v| v * v).sum::<f64>() / inp.samples.len() as f64).sqrt();
        let tone_rms = amplitude / 2f64.sqrt();
        assert!(
            (rms / tone_rms - 1.0).abs() < 0.01,
            "{format}: tone RMS {rms}"
        );
        let sigma = rms / 10f64.powf(db / 20.0);
        let noise: Vec<f64> = out
            .samples
            .iter()
            .zip(&inp.samples)
            .map(|(o, i)| o - i)
            .collect();
        let sd = std(&noise);
        assert!(
            (sd / sigma - 1.0).abs() < 0.05,
            "{format}: --snr-db {db}: noise std {sd}, expected RMS/10^(dB/20) = {sigma}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Generated tones
// ---------------------------------------------------------------------------------------------

/// The frequency of a sine from its rising zero crossings (interpolated between samples).
fn zero_crossing_frequency(x: &[f64], rate: u32) -> f64 {
    let crossings: Vec<f64> = (1..x.len())
        .filter(|&i| x[i - 1] < 0.0 && x[i] >= 0.0)
        .map(|i| (i - 1) as f64 + -x[i - 1] / (x[i] - x[i - 1]))
        .collect();
    assert!(crossings.len() >= 3, "not a tone");
    let span = crossings[crossings.len() - 1] - crossings[0];
    (crossings.len() - 1) as f64 / span * rate as f64
}

/// The power of `x` at `freq` (Goertzel).
fn power_at(x: &[f64], freq: f64, rate: u32) -> f64 {
    let w = std::f64::consts::TAU * freq / rate as f64;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
}

fn check_tone(
    path: &Path,
    format: &str,
    channels: u16,
    rate: u32,
    frames: usize,
    freq: f64,
    amp: f64,
) {
    let label = format!("{} ({format})", path.display());
    let w = read_wav(path);
    let (float, bits) = match format {
        "u8" => (false, 8),
        "i16" => (false, 16),
        "i24" => (false, 24),
        "i32" => (false, 32),
        "f32" => (true, 32),
        _ => unreachable!(),
    };
    assert_eq!(w.spec, spec(channels, rate, bits, float), "{label}: format");
    assert_eq!(w.frames, frames, "{label}: frames = duration * rate");
    let first = w.channel(0);
    for c in 1..channels as usize {
        assert!(
            w.channel(c) == first,
            "{label}: channel {c} differs from channel 0"
        );
    }
    let step = 1.0 / full_scale(bits);
    let peak = first.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        (peak - amp).abs() <= amp * 0.002 + step,
        "{label}: peak {peak}, asked {amp}"
    );
    let rms = (first.iter().map(|v| v * v).sum::<f64>() / first.len() as f64).sqrt();
    assert!(
        (rms / (amp / 2f64.sqrt()) - 1.0).abs() < 0.01,
        "{label}: RMS {rms} is not that of a sine of peak {amp}"
    );
    let f = zero_crossing_frequency(&first, rate);
    assert!(
        (f / freq - 1.0).abs() < 0.002,
        "{label}: {f} Hz, asked {freq}"
    );
    // The spectrum peaks at the asked frequency, on a grid of 1% steps around it.
    let grid: Vec<f64> = (50..=150).map(|k| freq * k as f64 / 100.0).collect();
    let best = grid
        .iter()
        .copied()
        .max_by(|a, b| power_at(&first, *a, rate).total_cmp(&power_at(&first, *b, rate)))
        .unwrap();
    assert_eq!(best, freq, "{label}: the spectrum's peak");
}

#[test]
fn generated_tones_have_the_asked_frequency_length_amplitude_channels_and_format() {
    let dir = tempdir();
    // (format, channels, rate, duration, frequency, amplitude)
    let cases = [
        ("f32", 1u16, 44100u32, "0.25", 440.0, 0.5),
        ("i16", 2, 48000, "0.5", 1000.0, 0.9),
        ("i24", 3, 22050, "0.3", 250.0, 0.3),
        ("i32", 2, 16000, "0.75", 3000.0, 1.0),
        ("u8", 1, 8000, "1.5", 123.0, 0.6),
    ];
    for (format, channels, rate, duration, freq, amp) in cases {
        let out = dir.path().join(format);
        let run = gen_fake_data(
            &out,
            &[
                "--count",
                "2",
                "--format",
                format,
                "--channels",
                &channels.to_string(),
                "--sample-rate",
                &rate.to_string(),
                "--duration",
                duration,
                "--frequency",
                &freq.to_string(),
                "--amplitude",
                &amp.to_string(),
            ],
        );
        assert_eq!(run.counts(), Counts::new(2, 0, 0), "{format}");
        let files: Vec<String> = names(&out).into_iter().filter(|n| !is_lock(n)).collect();
        assert_eq!(files, ["example0.wav", "example1.wav"], "{format}");
        let frames = (duration.parse::<f64>().unwrap() * rate as f64).round() as usize;
        for f in &files {
            check_tone(&out.join(f), format, channels, rate, frames, freq, amp);
        }
    }
}

#[test]
fn gen_fake_data_keeps_existing_files_unless_forced() {
    let dir = tempdir();
    let out = dir.path().join("tones");
    let args = |freq: &'static str| ["--count", "2", "--duration", "0.5", "--frequency", freq];
    gen_fake_data(&out, &args("1000"));
    let files = [out.join("example0.wav"), out.join("example1.wav")];
    for f in &files {
        set_mtime(f, -100);
    }
    let before: Vec<_> = files
        .iter()
        .map(|f| (fs::read(f).unwrap(), mtime(f)))
        .collect();

    let kept = gen_fake_data(&out, &args("2000"));
    assert_eq!(kept.counts(), Counts::new(0, 2, 0));
    let after: Vec<_> = files
        .iter()
        .map(|f| (fs::read(f).unwrap(), mtime(f)))
        .collect();
    assert!(
        after == before,
        "existing files were rewritten without --force"
    );

    let mut forced_args = args("2000").to_vec();
    forced_args.push("--force");
    let forced = gen_fake_data(&out, &forced_args);
    assert_eq!(forced.counts(), Counts::new(2, 0, 0));
    for (f, (bytes, time)) in files.iter().zip(&before) {
        assert!(mtime(f) > *time, "{}: not replaced", f.display());
        assert!(fs::read(f).unwrap() != *bytes);
        check_tone(f, "f32", 1, 44100, 22050, 2000.0, 0.5);
    }
}

// ---------------------------------------------------------------------------------------------
// The stdout contract
// ---------------------------------------------------------------------------------------------

/// stdout is exactly: one `completed` line per file of `files` (any order), the total line of
/// `verb`, the counts.
fn check_stdout(stdout: &str, verb: &str, files: &[&str], counts: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "stdout:\n{stdout}");
    let (body, end) = lines.split_at(lines.len() - 2);
    assert!(
        is_total_line(end[0], verb),
        "{:?} is not `{verb} took X.XXs total`",
        end[0]
    );
    assert_eq!(end[1], counts);
    let completed: BTreeSet<&str> = body
        .iter()
        .map(|l| {
            parse_completed_line(l)
                .unwrap_or_else(|| panic!("{l:?} is not `<path> completed in X.XXs`"))
        })
        .collect();
    assert_eq!(body.len(), files.len(), "stdout:\n{stdout}");
    assert_eq!(completed, files.iter().copied().collect());
}

#[test]
fn stdout_has_one_line_per_file_the_total_and_the_counts() {
    let dir = tempdir();
    gen_fake_data(
        &dir.path().join("sounds"),
        &["--count", "3", "--duration", "0.5"],
    );
    let run = run_in(dir.path(), &["sounds", "-j", "2", "--seed", "1"]);
    run.expect_code(0);
    check_stdout(
        &run.stdout,
        "etl",
        &[
            "sounds/example0.wav",
            "sounds/example1.wav",
            "sounds/example2.wav",
        ],
        "3 ok, 0 skipped, 0 failed",
    );
    // A file PATH is named as given.
    let one = run_in(
        dir.path(),
        &["sounds/example1.wav", "--force", "--seed", "1"],
    );
    one.expect_code(0);
    check_stdout(
        &one.stdout,
        "etl",
        &["sounds/example1.wav"],
        "1 ok, 0 skipped, 0 failed",
    );
}

#[test]
fn demo_works_from_an_empty_folder() {
    let dir = tempdir();
    let run = etl_in(
        dir.path(),
        &[
            "demo",
            "--dir",
            "demo",
            "--count",
            "3",
            "--duration",
            "1",
            "--seed",
            "2",
        ],
    );
    run.expect_code(0);
    let files = [
        "demo/example0.wav",
        "demo/example1.wav",
        "demo/example2.wav",
    ];
    // The run's part of stdout: after the generation's total and counts.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let gen_end = lines
        .iter()
        .position(|l| is_total_line(l, "gen-fake-data"))
        .unwrap_or_else(|| panic!("no gen-fake-data total:\n{}", run.stdout));
    assert_eq!(lines[gen_end + 1], "3 ok, 0 skipped, 0 failed");
    // The demo may announce the run with a line of its own (`starting etl`, as the seed did).
    let rest: Vec<&str> = lines[gen_end + 2..]
        .iter()
        .copied()
        .filter(|l| *l != "starting etl")
        .collect();
    check_stdout(
        &(rest.join("\n") + "\n"),
        "etl",
        &files,
        "3 ok, 0 skipped, 0 failed",
    );
    for f in files {
        let input = read_wav(&dir.path().join(f));
        let output = read_wav(&output_of(&dir.path().join(f)));
        assert_eq!((input.frames, output.frames), (44100, 44100), "{f}");
        let noise: Vec<f64> = output
            .samples
            .iter()
            .zip(&input.samples)
            .map(|(o, i)| o - i)
            .collect();
        let sd = std(&noise);
        assert!(
            (sd / 0.1 - 1.0).abs() < 0.05,
            "{f}: the default sigma is 0.1, got {sd}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Usage errors
// ---------------------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2_naming_the_problem_and_write_nothing() {
    let dir = tempdir();
    let sounds = dir.path().join("sounds");
    gen_fake_data(&sounds, &["--count", "1", "--duration", "0.1"]);
    let before = snapshot(&sounds);
    let cases: [(&[&str], &[&str]); 11] = [
        (&["does-not-exist"], &["does-not-exist", "no such file"]),
        (
            &["sounds", "does-not-exist"],
            &["does-not-exist", "no such file"],
        ),
        (&["sounds", "--sigma", "-1"], &["--sigma", "-1"]),
        (&["sounds", "--sigma", "nan"], &["--sigma", "nan"]),
        (&["sounds", "--snr-db", "inf"], &["--snr-db", "inf"]),
        // Finite, but its sigma would not be (10^(7000/20) overflows).
        (
            &["sounds", "--snr-db", "-7000"],
            &["--snr-db", "-7000", "out of range"],
        ),
        (
            &["sounds", "--snr-db", "301"],
            &["--snr-db", "301", "out of range"],
        ),
        (
            &["sounds", "--sigma", "1e300"],
            &["--sigma", "1e300", "too large"],
        ),
        (&["sounds", "-j", "0"], &["--jobs", "0"]),
        (&["sounds", "--timeout", "0"], &["--timeout", "0"]),
        (&["sounds", "--shard", "3/3"], &["--shard", "3/3"]),
    ];
    for (args, words) in cases {
        let run = run_in(dir.path(), args);
        assert_eq!(run.code, 2, "etl run {args:?}: exit code\n{}", run.stderr);
        let err = run.stderr.to_lowercase();
        for w in words {
            assert!(
                err.contains(w),
                "etl run {args:?}: stderr does not say {w:?}:\n{}",
                run.stderr
            );
        }
        assert!(
            run.stdout.is_empty(),
            "etl run {args:?}: stdout {:?}",
            run.stdout
        );
        assert!(
            snapshot(&sounds) == before,
            "etl run {args:?} wrote something"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RIFF structure
// ---------------------------------------------------------------------------------------------

#[test]
fn odd_sized_outputs_end_with_the_pad_byte_their_riff_size_counts() {
    let dir = tempdir();
    let root = dir.path().join("in");
    fs::create_dir(&root).unwrap();
    fs::copy(
        fixtures_dir().join("sox-u8-mono-8k-odd.wav"),
        root.join("odd.wav"),
    )
    .unwrap();
    settle(&root);
    let generated = gen_one(
        dir.path(),
        "gen",
        &["--duration", "1", "--sample-rate", "8001", "--format", "u8"],
    );
    run_in(dir.path(), &["in", "--seed", "1"]).expect_code(0);
    for f in [generated, output_of(&root.join("odd.wav"))] {
        let (riff, len) = riff_and_file_len(&f);
        assert_eq!(
            riff,
            len,
            "{}: RIFF size + 8 vs the file's length",
            f.display()
        );
        assert_eq!(len % 2, 0, "{}: odd length", f.display());
    }
}

/// `etl run DIR 2>&1 | head -1`: once the reader has gone, every line etl writes, to stdout or
/// to the log, meets a closed pipe. The run goes on and does every file, exits as it would have
/// (1 here, for the broken inputs among them), and leaves no temporary behind.
#[test]
fn a_run_whose_reader_went_away_still_does_every_file_and_cleans_up() {
    let dir = tempdir();
    let data = dir.path().join("in");
    gen_fake_data(&data, &["--count", "300", "--duration", "0.05"]);
    for i in 0..20 {
        // Each one a log line, after the pipe has closed.
        fs::write(data.join(format!("broken{i}.wav")), b"not a wav").unwrap();
    }
    settle(&data);
    let mut child = etl_command()
        .args(["run", data.to_str().unwrap(), "-j", "2", "--no-progress"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader leaves before the first line.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let outputs = names(&data)
        .iter()
        .filter(|n| is_output_name(Path::new(n)))
        .count();
    assert_eq!(outputs, 300);
    assert_eq!(temp_files(&data), Vec::<String>::new());
}

/// `gen-fake-data` plans its tones a window at a time: stopped by SIGTERM well past the first
/// window, it leaves only whole tones (each the bytes an undisturbed run writes), counts the rest
/// as not run, and a second run writes exactly those, keeping the others.
#[test]
fn gen_fake_data_stopped_by_sigterm_leaves_whole_tones_and_a_second_run_adds_the_rest() {
    let dir = tempdir();
    let (whole, stopped) = (dir.path().join("whole"), dir.path().join("stopped"));
    let count = 12_000;
    let args = |out: &Path| {
        let mut cmd = etl_command();
        cmd.args(["gen-fake-data", "--duration", "0.005"])
            .args(["--seed", "7", "--count", &count.to_string(), "--out-dir"])
            .arg(out);
        cmd
    };
    let reference = args(&whole).output().unwrap();
    assert!(reference.status.success(), "{reference:?}");
    let tones = |d: &Path| {
        fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(b"example")
            })
            .count()
    };

    // Its lines go to files: a pipe nobody reads would stop it once full.
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = args(&stopped)
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Past the first window (1024 files planned at once), not at the end.
    wait_for("2000 tones written", || {
        stopped.is_dir() && tones(&stopped) >= 2000
    });
    send_signal(child.id(), libc::SIGTERM);
    let run = Run::from_output(std::process::Output {
        status: child.wait().unwrap(),
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    });
    run.expect_code(143);
    let written = tones(&stopped);
    assert!(written >= 2000 && written < count, "{written} tones");
    let counts = run.counts();
    assert_eq!(counts.ok as usize, written, "{}", run.stdout);
    assert_eq!((counts.skipped, counts.failed), (0, 0));
    assert_eq!(counts.not_run as usize, count - written, "{}", run.stdout);
    assert!(
        temp_files(&stopped).is_empty(),
        "{:?}",
        temp_files(&stopped)
    );
    let tones_in = |d: &Path| {
        let mut all = snapshot(d);
        all.retain(|name, _| name.as_os_str().as_encoded_bytes().starts_with(b"example"));
        all
    };
    assert_eq!(tones_in(&stopped).len(), written);
    for name in tones_in(&stopped).keys() {
        assert!(
            fs::read(stopped.join(name)).unwrap() == fs::read(whole.join(name)).unwrap(),
            "{name:?} is not the tone an undisturbed run writes"
        );
    }

    let again = args(&stopped).output().unwrap();
    let again = Run::from_output(again);
    again.expect_code(0);
    assert_eq!(
        again.counts(),
        Counts::new((count - written) as u64, written as u64, 0)
    );
    assert!(
        tones_in(&stopped) == tones_in(&whole),
        "the second run's tones differ"
    );
}

//! Fuzzing the WAV reader and the whole transform on stable Rust: the real fixtures in `fixtures/`,
//! mutated (bits flipped, cut short, chunk sizes rewritten, chunks inserted, bytes overwritten),
//! each planned and transformed as a worker would (a library call, no processes), at sigma 0.
//!
//! Properties, for every case: no panic; memory bounded (no allocation sized by what a header
//! claims); and a file that is accepted gives an output that hound reads, holding exactly the
//! input's frames as hound reads them, wherever hound reads the input.
//!
//! `cargo test --test fuzz_wav` runs a quick pass. A long campaign:
//! `ETL_FUZZ_CASES=1000000 ETL_FUZZ_SEED=$RANDOM cargo test --release --test fuzz_wav -- --nocapture`.
//! A failure prints the seed and case that reproduce it (`ETL_FUZZ_SEED=S ETL_FUZZ_FIRST=N`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use audio_etl::etl::identity;
use audio_etl::etl::transform::{self, NoiseLevel, Request};

/// Counts the bytes allocated now and their peak, to bound what one case may take.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most one case may allocate beyond what was allocated before it: the worker's sample
/// buffer and a few small vectors, whatever sizes the header claims.
const MEMORY_BOUND: usize = 16 << 20;

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Where the chunk headers of a RIFF file are, walked leniently (as far as they make sense).
fn chunk_headers(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() && out.len() < 64 {
        out.push(pos);
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos = match pos.checked_add(8 + size + (size & 1)) {
            Some(p) => p,
            None => break,
        };
    }
    out
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            return;
        }
        match rng.below(7) {
            0 => {
                // Bit flips, mostly in the header.
                let span = if rng.below(2) == 0 {
                    bytes.len().min(80)
                } else {
                    bytes.len()
                };
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(span);
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let len = rng.below(bytes.len());
                bytes.truncate(len);
            }
            2 | 3 => {
                // A chunk's size, or the RIFF size, set to a value that matters.
                let mut at: Vec<usize> = chunk_headers(bytes);
                at.push(0);
                let pos = at[rng.below(at.len())];
                if pos + 8 > bytes.len() {
                    continue;
                }
                let old = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
                let new = match rng.below(10) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 0x7FFF_F000,
                    3 => old.wrapping_add(1),
                    4 => old.wrapping_sub(1),
                    5 => 1 + 2 * rng.below(40) as u32,
                    6 => 0x8000_0000,
                    7 => bytes.len() as u32,
                    8 => old.wrapping_mul(2),
                    _ => rng.next() as u32,
                };
                bytes[pos + 4..pos + 8].copy_from_slice(&new.to_le_bytes());
            }
            4 => {
                // A chunk inserted before another one, or at the end (as LIST after data).
                let mut at = chunk_headers(bytes);
                at.push(bytes.len());
                let pos = at[rng.below(at.len())].min(bytes.len());
                let ids: [&[u8; 4]; 5] = [b"LIST", b"JUNK", b"fmt ", b"data", b"fact"];
                let body_len = rng.below(48);
                let mut chunk = ids[rng.below(ids.len())].to_vec();
                chunk.extend_from_slice(&(body_len as u32).to_le_bytes());
                chunk.extend((0..body_len + (body_len & 1)).map(|_| rng.next() as u8));
                bytes.splice(pos..pos, chunk);
            }
            5 => {
                let at = rng.below(bytes.len());
                let len = (1 + rng.below(16)).min(bytes.len() - at);
                for b in &mut bytes[at..at + len] {
                    *b = rng.next() as u8;
                }
            }
            _ => {
                // A fmt field (channels, rate, block align, bits) set to an edge value.
                if let Some(&pos) = chunk_headers(bytes)
                    .iter()
                    .find(|&&p| &bytes[p..p + 4] == b"fmt ")
                {
                    let field = pos + 8 + [2, 4, 12, 14, 0][rng.below(5)];
                    let value: u16 =
                        [0, 1, 2, 3, 7, 8, 24, 32, 64, 0xFFFE, u16::MAX][rng.below(11)];
                    if field + 2 <= bytes.len() {
                        bytes[field..field + 2].copy_from_slice(&value.to_le_bytes());
                    }
                }
            }
        }
    }
}

/// The samples hound reads, cut to whole frames, as bits (floats by their bits, NaN as one), or
/// hound's error when it cannot read the file.
fn hound_frames(path: &Path) -> Result<(hound::WavSpec, Vec<u64>), hound::Error> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let samples: Vec<u64> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| {
                s.map(|v| {
                    if v.is_nan() {
                        u64::MAX
                    } else {
                        v.to_bits() as u64
                    }
                })
            })
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| s.map(|v| v as u32 as u64))
            .collect::<Result<_, _>>()?,
    };
    let whole = samples.len() / spec.channels.max(1) as usize * spec.channels as usize;
    Ok((spec, samples[..whole].to_vec()))
}

#[test]
fn mutated_fixtures_never_panic_stay_bounded_and_keep_their_frames() {
    let cases = env_u64("ETL_FUZZ_CASES", 3000);
    let seed = env_u64("ETL_FUZZ_SEED", 0x5EED);
    let first = env_u64("ETL_FUZZ_FIRST", 0);
    let fixtures_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut corpus: Vec<(String, Vec<u8>)> = fs::read_dir(&fixtures_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wav"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).unwrap())
        })
        .collect();
    corpus.sort();
    assert!(corpus.len() > 20, "the fixtures are there");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("case.wav");
    let temp_output = dir.path().join(".case-transformed.wav.fuzz.etl-tmp");
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-case.wav");
    let (mut accepted, mut compared) = (0u64, 0u64);
    for case in first..first + cases {
        let mut rng = Rng(seed ^ case.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let (name, base) = &corpus[rng.below(corpus.len())];
        let mut bytes = base.clone();
        mutate(&mut rng, &mut bytes);
        fs::write(&input, &bytes).unwrap();
        let _ = fs::remove_file(&temp_output);
        // Kept where a failure can be looked at: the last case is the one that failed.
        fs::write(&kept, &bytes).unwrap();
        let repro = format!(
            "case {case} of seed {seed} (from {name}; input kept as {}): \
             ETL_FUZZ_SEED={seed} ETL_FUZZ_FIRST={case} ETL_FUZZ_CASES=1",
            kept.display()
        );

        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let result = std::panic::catch_unwind(|| {
            // As the supervisor plans it, then as a worker transforms it.
            let planned = identity::plan(&input).ok();
            let result = transform::transform(&Request {
                input: &input,
                temp_output: &temp_output,
                part: 0,
                parts: 1,
                level: NoiseLevel::Sigma(0.0),
                file_seed: case,
                fsync: false,
                expect: planned.as_ref().map(|p| p.identity),
                wav: planned.as_ref().and_then(|p| p.wav.as_ref()),
                output_format: None,
                publish: None,
                settle: None,
            });
            (planned, result)
        });
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let (planned, result) = result.unwrap_or_else(|_| panic!("panicked: {repro}"));
        assert!(peak < MEMORY_BOUND, "{peak} bytes allocated: {repro}");

        let Ok(stats) = result else {
            assert!(
                !temp_output.exists(),
                "an output for a refused input: {repro}"
            );
            continue;
        };
        accepted += 1;
        // hound knows no placeholder sizes: where one was recovered, it reads another length.
        if stats.size_recovered {
            continue;
        }
        // hound reads a WAVE_FORMAT_EXTENSIBLE fmt chunk longer than 40 bytes as if it ended
        // there, and takes what follows for chunks: it misreads such files.
        // Nor does it skip the pad byte after a chunk of odd size, as RIFF has it.
        let Some(wav) = planned.and_then(|p| p.wav) else {
            continue;
        };
        let fmt = &wav.fmt_chunk;
        let odd_chunk_before_data = chunk_headers(&bytes)
            .iter()
            .take_while(|&&at| (at as u64) + 8 < wav.data_offset)
            .any(|&at| bytes[at + 4] & 1 == 1);
        if (fmt.len() > 40 && fmt[..2] == [0xFE, 0xFF]) || odd_chunk_before_data {
            continue;
        }
        // Where hound reads the input, it reads the output too, and the same frames.
        let Ok((in_spec, in_samples)) = hound_frames(&input) else {
            continue;
        };
        compared += 1;
        let (out_spec, out_samples) = hound_frames(&temp_output)
            .unwrap_or_else(|e| panic!("hound reads the input, not the output ({e}): {repro}"));
        assert_eq!(
            out_samples.len() as u64,
            stats.frames * stats.layout.channels as u64,
            "{repro}"
        );
        assert_eq!(in_spec, out_spec, "{repro}");
        assert!(
            in_samples == out_samples,
            "the output's frames are not the input's: {repro}"
        );
    }
    println!("{cases} cases: {accepted} accepted, {compared} compared with hound");
    assert!(
        accepted > cases / 20,
        "too few accepted cases to say anything"
    );
}

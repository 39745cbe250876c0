//! Values given as one number or as a range to draw from (`--sigma 0.01..0.1`,
//! `--snr-db 10..20`, `gen-fake-data --frequency 200..2000`), and the draws themselves.
//!
//! Offline augmentation gives each output its own noise level, drawn uniformly in the unit the
//! user gave it in (σ linear, SNR in dB, as audiomentations' `AddGaussianNoise` and
//! `AddGaussianSNR` do). A draw must be a pure function of what names the output, so that a
//! re-run, `-j`, a shard or a retry gives the same level, and so that the level of an output
//! skipped as up to date can be told again without reading it:
//!
//! - the level of variant `k` of a file is drawn from
//!   `u = (XXH3-64(b"level" ++ k as u64 LE, seed = file seed) >> 11) * 2^-53`, in [0, 1);
//! - a draw maps `u` to `low + u * (high - low)`: a single value (`low == high`) is exactly that
//!   value, whatever `u`, so a single level keeps its meaning bit for bit.
//!
//! The file seed is [`super::noise::file_seed`]'s; the level hash is separate from the variant's
//! noise seed ([`super::noise::variant_seed`]), so a level never correlates with its noise.

use std::fmt;
use std::str::FromStr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::transform::NoiseLevel;

/// One value, or a closed range `LOW..HIGH` to draw from uniformly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub low: f64,
    pub high: f64,
}

impl Span {
    pub fn single(value: f64) -> Span {
        Span {
            low: value,
            high: value,
        }
    }

    pub fn is_single(&self) -> bool {
        self.low == self.high
    }

    /// The value at `u` in [0, 1): `low` exactly when the span is a single value.
    pub fn at(&self, u: f64) -> f64 {
        if self.is_single() {
            self.low
        } else {
            // Never past HIGH, whatever the rounding.
            (self.low + u * (self.high - self.low)).min(self.high)
        }
    }

    /// Parses `X` or `LOW..HIGH`, each number checked by `check` (which says why it is not
    /// allowed), with LOW <= HIGH.
    pub fn parse(s: &str, check: impl Fn(&str) -> Result<f64, String>) -> Result<Span, String> {
        match s.split_once("..") {
            None => check(s).map(Span::single),
            Some((low, high)) => {
                let (low_text, high_text) = (low.trim(), high.trim());
                if low_text.is_empty() || high_text.is_empty() {
                    return Err(format!(
                        "{s:?} is not a range LOW..HIGH (for example 10..20)"
                    ));
                }
                let low = check(low_text)?;
                let high = check(high_text)?;
                if low > high {
                    return Err(format!(
                        "{s:?} is an empty range: {low_text} is more than {high_text}"
                    ));
                }
                Ok(Span { low, high })
            }
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}..{}", self.low, self.high)
        }
    }
}

impl FromStr for Span {
    type Err = String;
    /// Any finite numbers; callers with bounds use [`Span::parse`].
    fn from_str(s: &str) -> Result<Span, String> {
        Span::parse(s, |v| match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(format!("{v:?} is not a finite number")),
        })
    }
}

/// How loud the noise of each output is: a σ or an SNR, each one value or a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LevelSpec {
    Sigma(Span),
    SnrDb(Span),
}

impl LevelSpec {
    /// True when every output gets the same level (no range was given).
    pub fn is_single(&self) -> bool {
        match self {
            LevelSpec::Sigma(s) | LevelSpec::SnrDb(s) => s.is_single(),
        }
    }

    /// The level of variant `variant` of the file whose seed is `file_seed`: a pure function of
    /// the two (see the module documentation). A single value gives exactly that value.
    pub fn level_for(&self, file_seed: u64, variant: u32) -> NoiseLevel {
        let u = unit_draw(file_seed, b"level", variant as u64);
        match self {
            LevelSpec::Sigma(span) => NoiseLevel::Sigma(span.at(u)),
            LevelSpec::SnrDb(span) => NoiseLevel::SnrDb(span.at(u)),
        }
    }
}

/// A uniform number in [0, 1) from `seed`, a tag naming what is drawn, and an index:
/// `(XXH3-64(tag ++ index as u64 LE, seed) >> 11) * 2^-53`, the 53 high bits as a double.
pub fn unit_draw(seed: u64, tag: &[u8], index: u64) -> f64 {
    let mut key = Vec::with_capacity(tag.len() + 8);
    key.extend_from_slice(tag);
    key.extend_from_slice(&index.to_le_bytes());
    (xxh3_64_with_seed(&key, seed) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::noise::file_seed;

    fn sigma_of(level: NoiseLevel) -> f64 {
        match level {
            NoiseLevel::Sigma(s) | NoiseLevel::SnrDb(s) => s,
        }
    }

    #[test]
    fn spans_parse_one_value_or_a_range() {
        assert_eq!("0.1".parse(), Ok(Span::single(0.1)));
        assert_eq!(
            "10..20".parse(),
            Ok(Span {
                low: 10.0,
                high: 20.0
            })
        );
        assert_eq!(
            "-5..-1".parse(),
            Ok(Span {
                low: -5.0,
                high: -1.0
            })
        );
        assert_eq!("3..3".parse(), Ok(Span::single(3.0)));
        assert!(
            "20..10"
                .parse::<Span>()
                .unwrap_err()
                .contains("empty range")
        );
        assert!("..10".parse::<Span>().is_err());
        assert!("1..".parse::<Span>().is_err());
        assert!("1..x".parse::<Span>().is_err());
        assert!("1..inf".parse::<Span>().is_err());
    }

    #[test]
    fn a_single_value_is_exactly_that_value() {
        for v in [0.0, 0.1, 1e-300, 1000.0, -300.0, 17.3] {
            for k in 0..50 {
                let f = file_seed(k as u64, b"a.wav");
                assert_eq!(
                    LevelSpec::Sigma(Span::single(v)).level_for(f, k),
                    NoiseLevel::Sigma(v)
                );
                assert_eq!(
                    LevelSpec::SnrDb(Span::single(v)).level_for(f, k),
                    NoiseLevel::SnrDb(v)
                );
            }
        }
    }

    #[test]
    fn draws_are_deterministic_within_bounds_and_differ() {
        let spec = LevelSpec::SnrDb(Span {
            low: 10.0,
            high: 20.0,
        });
        let f = file_seed(7, b"d/a.wav");
        let a: Vec<NoiseLevel> = (0..100).map(|k| spec.level_for(f, k)).collect();
        let b: Vec<NoiseLevel> = (0..100).map(|k| spec.level_for(f, k)).collect();
        assert_eq!(a, b);
        assert!(
            a.iter()
                .all(|l| matches!(l, NoiseLevel::SnrDb(v) if (10.0..=20.0).contains(v)))
        );
        assert_ne!(a[0], a[1]);
        assert_ne!(spec.level_for(file_seed(7, b"d/b.wav"), 0), a[0]);
        assert_ne!(spec.level_for(file_seed(8, b"d/a.wav"), 0), a[0]);
        // Pinned: a change here changes the level of every output drawn from a range.
        assert_eq!(a[0], NoiseLevel::SnrDb(PINNED_LEVEL));
        // The extremes of u stay inside.
        let span = Span {
            low: 0.0,
            high: 1000.0,
        };
        assert_eq!(span.at(0.0), 0.0);
        assert!(span.at(1.0 - f64::EPSILON / 2.0) <= 1000.0);
    }

    const PINNED_LEVEL: f64 = 16.4245582220246;

    /// Levels over many (file, variant) pairs are uniform over the range: the Kolmogorov-Smirnov
    /// statistic stays under the 1% critical value (1.63 / sqrt(n)).
    #[test]
    fn levels_are_uniform_over_the_range() {
        let spec = LevelSpec::Sigma(Span {
            low: 0.01,
            high: 0.5,
        });
        let mut levels: Vec<f64> = (0..2000)
            .flat_map(|file| {
                let seed = file_seed(1234, format!("clips/{file}.wav").as_bytes());
                (0..5).map(move |k| sigma_of(spec.level_for(seed, k)))
            })
            .collect();
        levels.sort_by(f64::total_cmp);
        let n = levels.len() as f64;
        let d = levels
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let cdf = (v - 0.01) / 0.49;
                (cdf - i as f64 / n)
                    .abs()
                    .max(((i + 1) as f64 / n - cdf).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.63 / n.sqrt(), "KS statistic {d} over {n} levels");
        assert!(levels[0] >= 0.01 && levels[levels.len() - 1] <= 0.5);
    }
}

//! Drivers: each turns its command's options into files for the [`super::engine`], and the way the
//! executor ended into a [`super::RunEnd`] for the exit code.
//!
//! - [`run`]: every input found at the start, then done;
//! - [`watch`]: the same catch-up, then files as they become complete, until a signal;
//! - [`generate`]: test tones to write.

pub mod generate;
pub mod run;
pub mod watch;

use super::RunEnd;
use super::executor::PoolEnd;
use super::report::Counts;

/// The run's end, from how the executor ended and the counts.
pub(crate) fn run_end(end: PoolEnd, counts: Counts) -> RunEnd {
    match end {
        PoolEnd::Finished => RunEnd::Completed(counts),
        PoolEnd::Interrupted(sig) => RunEnd::Interrupted(sig, counts),
        PoolEnd::GaveUp(why) => RunEnd::GaveUp(why, counts),
    }
}

/// The word for how the executor ended, for the report's summary.
pub(crate) fn end_word(end: &PoolEnd) -> String {
    match end {
        PoolEnd::Finished => "finished".into(),
        PoolEnd::Interrupted(sig) => {
            format!("interrupted by {}", super::executor::signal_name(*sig))
        }
        PoolEnd::GaveUp(why) => why.clone(),
    }
}

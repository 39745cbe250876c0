//! audio-etl: add Gaussian noise to batches of WAV files in parallel, supervised worker processes.
//!
//! - [`etl`]: the transform itself (WAV, noise, tones), with no processes in it.
//! - [`worker`]: the child process that runs jobs from [`etl`].
//! - [`supervisor`]: the parent that finds inputs, runs workers, and reports.
//! - [`protocol`]: the messages between the two.
//! - [`cli`]: the command line.

pub mod cli;
pub mod etl;
pub mod protocol;
pub mod supervisor;
pub mod worker;

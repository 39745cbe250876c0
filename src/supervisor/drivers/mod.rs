//! Drivers: each turns its command's options into files for the [`super::engine`], and the way the
//! executor ended into a [`super::RunEnd`] for the exit code.
//!
//! - [`run`]: every input found at the start, then done;
//! - [`watch`]: the same catch-up, then files as they become complete, until a signal;
//! - [`generate`]: test tones to write.

pub mod generate;
pub mod run;
pub mod watch;

use std::cmp::Reverse;
use std::collections::HashSet;
use std::path::PathBuf;

use super::RunEnd;
use super::discover::{Catalog, Discovery, Input};
use super::engine::{Decision, Engine};
use super::executor::PoolEnd;
use super::report::Counts;
use super::sweep;

/// Files the engine holds at once while a [`Feed`] hands it a catalogue: enough to keep every
/// worker and a whole commit batch busy, few enough that memory does not grow with the corpus.
const WINDOW: usize = 1024;

/// Hands what discovery found to the engine a window at a time: first the outputs decided
/// without a worker (skips and failures), in the order found, then the work, largest input
/// first, so that a large file never starts last.
pub(crate) struct Feed {
    catalog: Catalog,
    /// The outputs to make, by their index in the catalogue, largest input first.
    order: Vec<u32>,
    next: usize,
}

impl Feed {
    /// Makes the output folders (or refuses them: a link planted as one) and sweeps what a
    /// killed run left in them, in that order and before any file is sent, so that nothing is
    /// swept through a planted link; then reports the outputs decided without a worker.
    pub fn start(found: Discovery, engine: &mut Engine, tag: &str) -> Feed {
        for dir in found.inputs.output_folders(true) {
            let _ = engine.make_folder(&dir);
        }
        let out_dirs: HashSet<PathBuf> = run::output_dirs(&found)
            .into_iter()
            .filter(|d| !engine.refused_dirs().contains(d))
            .collect();
        sweep(&out_dirs, tag, &found.inputs.leftovers());
        let catalog = found.inputs;
        for i in (0..catalog.len()).filter(|&i| !catalog.to_transform(i)) {
            let _ = engine.decide(catalog.input(i));
        }
        let mut order: Vec<u32> = (0..catalog.len())
            .filter(|&i| catalog.to_transform(i))
            .map(|i| i as u32)
            .collect();
        order.sort_by_key(|&i| Reverse(catalog.size(i as usize)));
        Feed {
            catalog,
            order,
            next: 0,
        }
    }

    /// Outputs to make, handed over or not.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Outputs to make not handed over yet: at the end of a stopped run, not run.
    pub fn remaining(&self) -> usize {
        self.order.len() - self.next
    }

    /// Hands files to the engine until it holds [`WINDOW`]; a file still being written goes to
    /// `still` (and so does one a worker found still being written since the last call). True
    /// once everything was handed over.
    pub fn top_up(
        &mut self,
        engine: &mut Engine,
        mut still: impl FnMut(&mut Engine, Input),
    ) -> bool {
        for input in engine.take_unsettled() {
            still(engine, input);
        }
        if engine.executor().stopping() {
            return false;
        }
        let mut planned = Vec::new();
        while self.next < self.order.len() && engine.in_progress() < WINDOW {
            let input = self.catalog.input(self.order[self.next] as usize);
            self.next += 1;
            match engine.decide(input) {
                Decision::Planned(id) => planned.push(id),
                Decision::StillBeingWritten(input) => still(engine, input),
                Decision::Reported => {}
            }
        }
        engine.dispatch(&planned);
        self.next == self.order.len()
    }
}

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

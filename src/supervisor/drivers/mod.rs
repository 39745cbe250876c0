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
use std::collections::{BinaryHeap, HashSet};
use std::path::PathBuf;

use super::RunEnd;
use super::discover::{Catalog, Discovery, Input, Plan};
use super::engine::{Decision, Engine};
use super::executor::PoolEnd;
use super::report::Counts;
use super::sweep;
use crate::etl::describe_io;

/// Files the engine holds at once while a [`Feed`] hands it a catalogue: enough to keep every
/// worker and a whole commit batch busy, few enough that memory does not grow with the corpus.
const WINDOW: usize = 1024;

/// How many files looked at later (in folders of [`discover::LOOK_LATER_FROM`] names or more)
/// are looked at ahead of the one handed over: largest first among them.
const LOOK_AHEAD: usize = 4096;

/// Hands what discovery found to the engine a window at a time: first the outputs decided
/// without a worker (skips and failures), in the order found, then the work, largest input
/// first, so that a large file never starts last. Files of large folders, which discovery did
/// not look at, come after the others, in the order listed, each looked at just before it is
/// handed over; largest first within a look-ahead of [`LOOK_AHEAD`] files.
pub(crate) struct Feed {
    catalog: Catalog,
    /// The outputs to make whose size is known, by their index in the catalogue, largest input
    /// first.
    order: Vec<u32>,
    next: usize,
    /// The outputs to make whose input is looked at later, in the order found.
    later: Vec<u32>,
    next_later: usize,
    /// Of those, the ones looked at and not handed over yet: (size, order found, index).
    ahead: BinaryHeap<(u64, Reverse<usize>, u32)>,
    /// The folder of the last file looked at, kept open for the next.
    folder: Option<(u32, std::fs::File)>,
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
        let (later, mut order): (Vec<u32>, Vec<u32>) = (0..catalog.len())
            .filter(|&i| catalog.to_transform(i))
            .map(|i| i as u32)
            .partition(|&i| catalog.looked_later(i as usize));
        order.sort_by_key(|&i| Reverse(catalog.size(i as usize)));
        Feed {
            catalog,
            order,
            next: 0,
            later,
            next_later: 0,
            ahead: BinaryHeap::new(),
            folder: None,
        }
    }

    /// Outputs to make, handed over or not.
    pub fn len(&self) -> usize {
        self.order.len() + self.later.len()
    }

    /// Outputs to make not handed over yet: at the end of a stopped run, not run.
    pub fn remaining(&self) -> usize {
        self.order.len() - self.next + self.later.len() - self.next_later + self.ahead.len()
    }

    /// The next output to hand over, largest input first; an input that can no longer be
    /// looked at is reported failed on the way.
    fn next_input(&mut self, engine: &mut Engine) -> Option<Input> {
        if self.next < self.order.len() {
            self.next += 1;
            return Some(self.catalog.input(self.order[self.next - 1] as usize));
        }
        while self.ahead.len() < LOOK_AHEAD && self.next_later < self.later.len() {
            let i = self.later[self.next_later];
            self.next_later += 1;
            match self.catalog.look(i as usize, &mut self.folder) {
                Ok(_) => {
                    let size = self.catalog.size(i as usize);
                    self.ahead.push((size, Reverse(self.next_later), i));
                }
                Err(e) => {
                    // Gone since it was listed: as discovery would have said.
                    let mut input = self.catalog.input(i as usize);
                    input.status = Plan::Fail(describe_io(&e));
                    let _ = engine.decide(input);
                }
            }
        }
        let (_, _, i) = self.ahead.pop()?;
        Some(self.catalog.input(i as usize))
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
        while engine.in_progress() < WINDOW {
            let Some(input) = self.next_input(engine) else {
                break;
            };
            match engine.decide(input) {
                Decision::Planned(id) => planned.push(id),
                Decision::StillBeingWritten(input) => still(engine, input),
                Decision::Reported => {}
            }
        }
        engine.dispatch(&planned);
        self.remaining() == 0
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

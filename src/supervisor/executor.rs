//! The executor: worker processes and nothing else. It spawns them, sends them jobs, times the
//! jobs out, stops workers with SIGTERM then SIGKILL after a grace period, and reaps them. It knows
//! jobs by their id only, and matches each result to its job by the id the worker sends back; what
//! a job is about (files, formats, outputs) is the engine's business.
//!
//! One thread per worker blocks on that worker's IPC receiver (first in `accept()`, which has no
//! timeout) and forwards what it gets (results come a few per message) into one event channel; a
//! signal thread does the same for SIGINT and SIGTERM, and a [`Waker`] lets a driver wake the loop
//! when new work comes. Each call to [`Executor::next`] waits on that channel with a deadline (the
//! nearest job deadline, kill deadline or handshake deadline, the caller's own, else a heartbeat),
//! so it never blocks forever. A worker's death shows as its receiver closing; its exit status
//! says why, and its [`Progress`] which of the jobs it held it was running. Events carry the
//! worker's generation, so those of a worker already replaced are ignored. As in nextest, each
//! worker runs in its own process group, is asked to stop with SIGTERM and is SIGKILLed after a
//! grace period.
//!
//! A scheduler that stops a job signals every process of it, the workers too, which may die before
//! the supervisor has handled its own signal: a death that comes with a signal to us is part of the
//! stop, never a retry.
//!
//! Every death we did not ask for, before or after the handshake, counts against the restart
//! budget. Once the executor is stopping (a signal, or the budget spent), the jobs still in flight
//! are abandoned, not failed: the engine reports them as not run.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcSender};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::protocol::{FromWorker, JobResult, Progress, ToWorker};

/// A map keyed by the ids this process hands out (jobs, files): numbers counted up from 0, never
/// chosen by anyone outside, so they need no protection against collisions made on purpose, and
/// hashing them with SipHash, as `HashMap` does by default, is wasted on every file.
pub type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Hashes a `u64` id with one multiplication (Fibonacci hashing): spreads consecutive ids over
/// the high bits, which hashbrown uses for its tags, and keeps the low bits distinct.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// How long a worker has between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long a new worker has to connect.
const HANDSHAKE: Duration = Duration::from_secs(20);
/// The restart budget counts deaths, and finished jobs, within this window.
const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// The running executable itself, whatever became of the file it was started from.
const SELF_EXE: &str = "/proc/self/exe";
/// The longest the event loop waits when no deadline is near: it never blocks without one.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often workers that have not connected yet are checked for an early death.
const STARTING_POLL: Duration = Duration::from_millis(50);
/// How long a worker's death by a SIGTERM or SIGINT we did not send waits for our own: a
/// scheduler that stops a job signals each of its processes, and the workers may die first.
const OWN_SIGNAL_WAIT: Duration = Duration::from_millis(500);

pub struct ExecutorConfig {
    pub workers: usize,
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// Extra arguments for `etl worker` (such as the log level).
    pub worker_args: Vec<String>,
}

/// A unit of work: the message sent for each attempt, under the id its result comes back with.
pub struct Task {
    pub id: u64,
    pub message: ToWorker,
    /// About how much work it is (the input bytes it reads): small tasks are sent to a worker
    /// several at a time, in one message.
    pub size: u64,
}

/// Why a job ended without a result: its worker was lost.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerLost {
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("{}", describe_exit(*.0))]
    Died(Option<ExitStatus>),
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open an IPC channel: {0}")]
    Ipc(std::io::Error),
    #[error("cannot find my own executable: {0}")]
    OwnExecutable(std::io::Error),
    #[error("cannot start a worker: {0}")]
    Start(std::io::Error),
}

/// How one task ended.
#[derive(Debug)]
pub struct Completion {
    pub id: u64,
    pub result: Result<JobResult, WorkerLost>,
    pub attempts: u32,
    pub worker_pid: u32,
}

/// How the executor ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEnd {
    /// Every task completed (successfully or not), and no more were to come.
    Finished,
    /// A signal asked us to stop; tasks not completed were abandoned.
    Interrupted(i32),
    /// Workers kept dying; tasks not completed were abandoned.
    GaveUp(String),
}

/// What one call to [`Executor::next`] saw.
#[derive(Debug)]
pub enum Step {
    /// A task ended.
    Completed(Completion),
    /// The caller's deadline passed, or a [`Waker`] woke us: time for the caller to look around.
    Idle,
    /// Every worker is gone and nothing more will run.
    Ended(PoolEnd),
}

/// Wakes the executor's loop from another thread (new work came).
#[derive(Clone)]
pub struct Waker(mpsc::Sender<Event>);

impl Waker {
    pub fn wake(&self) {
        let _ = self.0.send(Event::Wake);
    }
}

enum Event {
    Hello {
        slot: usize,
        generation: u64,
        pid: u32,
        jobs: IpcSender<ToWorker>,
        progress: Progress,
    },
    Done {
        slot: usize,
        generation: u64,
        results: Vec<JobResult>,
    },
    Gone {
        slot: usize,
        generation: u64,
    },
    Signal(i32),
    Wake,
}

enum State {
    Starting {
        since: Instant,
        server: String,
    },
    Idle,
    /// `tasks` are the jobs sent and not reported, in the order the worker runs them: `tasks[0]`
    /// is running (or ended, its result on the way) and `deadline` is its own; any after it were
    /// sent ahead so that the worker does not wait on the supervisor between two short files.
    Busy {
        tasks: VecDeque<u64>,
        deadline: Option<Instant>,
    },
}

/// Jobs a worker may always hold at once: the one it runs and one sent ahead.
const DEPTH: usize = 2;
/// Beyond [`DEPTH`], small jobs are sent ahead too, several in one message, so that neither side
/// pays a message per tiny file: a worker holds at most this many jobs...
const BATCH_TASKS: usize = 128;
/// ...of at most this many input bytes together (a job sent within [`DEPTH`] may exceed it).
const BATCH_BYTES: u64 = 4 << 20;
/// A worker is sent more once it holds no more than this many jobs: several jobs per message, and
/// still enough ahead that it does not wait for the supervisor between two messages.
const REFILL_AT: usize = BATCH_TASKS / 2;

/// How many events (jobs finished, workers dead) came within the last [`CRASH_WINDOW`], counted
/// in slices of [`SLICE`]: memory that grows neither with the run's length nor with its pace
/// (tiny files finish by tens of thousands a second; one `Instant` each took megabytes).
#[derive(Default)]
struct RecentCount {
    /// When each slice began, and what finished in it, oldest first.
    slices: VecDeque<(Instant, usize)>,
    total: usize,
}

/// The resolution of [`RecentCount`]'s window.
const SLICE: Duration = Duration::from_millis(10);

impl RecentCount {
    fn add(&mut self, now: Instant) {
        self.trim(now);
        match self.slices.back_mut() {
            Some((since, n)) if now.duration_since(*since) < SLICE => *n += 1,
            _ => self.slices.push_back((now, 1)),
        }
        self.total += 1;
    }

    /// Forgets the slices that began more than [`CRASH_WINDOW`] ago.
    fn trim(&mut self, now: Instant) {
        while let Some(&(since, n)) = self.slices.front()
            && now.duration_since(since) > CRASH_WINDOW
        {
            self.slices.pop_front();
            self.total -= n;
        }
    }
}

/// Why a worker is being stopped.
#[derive(Clone, Copy, PartialEq)]
enum StopReason {
    Timeout,
    Shutdown,
}

struct Worker {
    child: Child,
    generation: u64,
    pid: u32,
    jobs: Option<IpcSender<ToWorker>>,
    /// Which job it started last (from the handshake on).
    progress: Option<Progress>,
    state: State,
    /// Set once SIGTERM was sent: when to SIGKILL, and why it was stopped.
    stopping: Option<(Instant, StopReason)>,
}

struct Pending {
    message: ToWorker,
    size: u64,
    attempts: u32,
}

pub struct Executor {
    config: ExecutorConfig,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    slots: Vec<Option<Worker>>,
    generation: u64,
    /// How many workers died unexpectedly, and how many jobs finished, within the last
    /// [`CRASH_WINDOW`].
    crashes: RecentCount,
    finishes: RecentCount,
    /// The last SIGINT or SIGTERM received and not yet acted on, set by the signal handler
    /// itself: ahead of the event the signal thread sends, which may come after the deaths of
    /// workers signalled at the same moment.
    signal_received: Arc<AtomicUsize>,
    /// A signal was acted on from `signal_received`: its event, when it comes, is not a second one.
    acted_on_early: bool,
    /// Jobs waiting for a worker, in order.
    queue: VecDeque<u64>,
    /// Completions received and not yet returned by [`Executor::next`] (results come in groups).
    ready: VecDeque<Completion>,
    /// Every job not yet completed, by id.
    pending: IdMap<Pending>,
    /// No more jobs will be submitted: the executor finishes once `pending` is empty.
    closed: bool,
    end: Option<PoolEnd>,
    /// Workers that died without being asked to, since the start.
    deaths: u64,
}

/// What was left of a worker once it was reaped.
struct Reaped {
    /// The task it was running: the task, why the worker died, and its pid.
    lost: Option<(u64, WorkerLost, u32)>,
    /// Tasks sent to it that it never started, or that ended but whose results died with it.
    sent_ahead: Vec<u64>,
    /// The signal that killed it, when we had not asked it to stop.
    killed_by: Option<i32>,
}

impl Executor {
    pub fn new(config: ExecutorConfig) -> Executor {
        let (events_tx, events) = mpsc::channel();
        let signal_tx = events_tx.clone();
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(mut signals) => {
                thread::spawn(move || {
                    for sig in signals.forever() {
                        if signal_tx.send(Event::Signal(sig)).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot watch for signals: {e}"),
        }
        let signal_received = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            if let Err(e) =
                signal_hook::flag::register_usize(sig, Arc::clone(&signal_received), sig as usize)
            {
                tracing::warn!("cannot watch for signals: {e}");
            }
        }
        let slots = (0..config.workers.max(1)).map(|_| None).collect();
        Executor {
            config,
            events_tx,
            events,
            slots,
            generation: 0,
            crashes: RecentCount::default(),
            finishes: RecentCount::default(),
            signal_received,
            acted_on_early: false,
            queue: VecDeque::new(),
            ready: VecDeque::new(),
            pending: IdMap::default(),
            closed: false,
            end: None,
            deaths: 0,
        }
    }

    /// Wakes [`Executor::next`] from another thread.
    pub fn waker(&self) -> Waker {
        Waker(self.events_tx.clone())
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Workers that died without being asked to, since the start.
    pub fn deaths(&self) -> u64 {
        self.deaths
    }

    /// Whether the executor is stopping (a signal, or the restart budget spent).
    pub fn stopping(&self) -> bool {
        self.end.is_some()
    }

    /// Queues a job, starting workers for it if slots are free. Once the executor is stopping,
    /// the job is never sent: the engine finds it abandoned.
    pub fn submit(&mut self, task: Task) {
        self.pending.insert(
            task.id,
            Pending {
                message: task.message,
                size: task.size,
                attempts: 0,
            },
        );
        if self.end.is_some() {
            return;
        }
        self.queue.push_back(task.id);
        // Workers that will soon be free to take a job: those starting, and those idle.
        let coming = self
            .slots
            .iter()
            .flatten()
            .filter(|w| {
                w.stopping.is_none() && matches!(w.state, State::Starting { .. } | State::Idle)
            })
            .count();
        if self.queue.len() > coming
            && let Some(slot) = self.slots.iter().position(Option::is_none)
            && let Err(e) = self.spawn(slot)
        {
            self.end = Some(PoolEnd::GaveUp(e.to_string()));
        }
    }

    /// No more jobs will come: the executor ends once those submitted are done.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// The SIGINT or SIGTERM received and not acted on yet, if any. A worker killed by one of
    /// them that we did not send waits a moment for ours.
    fn own_signal(&self, worker_killed_by: Option<i32>) -> Option<i32> {
        let external = matches!(worker_killed_by, Some(SIGINT) | Some(SIGTERM));
        let until = Instant::now() + OWN_SIGNAL_WAIT;
        loop {
            let sig = self.signal_received.swap(0, Ordering::SeqCst);
            if sig != 0 {
                return Some(sig as i32);
            }
            if !external || Instant::now() >= until {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs the executor until a task ends, `until` passes, a [`Waker`] wakes it, or it has ended.
    pub fn next(&mut self, until: Option<Instant>) -> Step {
        loop {
            if self.end.is_none() {
                self.dispatch();
            }
            if let Some(completion) = self.ready.pop_front() {
                return Step::Completed(completion);
            }
            if self.pending.is_empty() && self.closed && self.end.is_none() {
                self.end = Some(PoolEnd::Finished);
            }
            if let Some(end) = &self.end
                && self.slots.iter().all(Option::is_none)
            {
                let end = end.clone();
                if end == PoolEnd::Finished {
                    // All done: the executor may be given more work (`etl demo` runs twice).
                    self.end = None;
                    self.closed = false;
                }
                return Step::Ended(end);
            }
            if let Some(ending) = &self.end {
                // Ask idle and starting workers to go; busy ones were signalled already.
                let kill_now = matches!(ending, PoolEnd::GaveUp(_));
                self.stop_all(StopReason::Shutdown, kill_now);
            }
            let now = Instant::now();
            // While stopping, the caller has nothing to do until the workers are gone.
            let until = until.filter(|_| self.end.is_none());
            if until.is_some_and(|u| now >= u) {
                return Step::Idle;
            }
            let wake = self
                .next_wakeup()
                .unwrap_or(now + HEARTBEAT)
                .min(until.unwrap_or(now + HEARTBEAT));
            let event = match self
                .events
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            };
            let completed = match event {
                Some(Event::Hello {
                    slot,
                    generation,
                    pid,
                    jobs,
                    progress,
                }) => {
                    if let Some(w) = self.worker_mut(slot, generation) {
                        tracing::debug!(pid, "worker {slot} connected");
                        w.jobs = Some(jobs);
                        w.progress = Some(progress);
                        w.state = State::Idle;
                    }
                    None
                }
                Some(Event::Done {
                    slot,
                    generation,
                    results,
                }) => {
                    for result in results {
                        let completion = self.on_done(slot, generation, result);
                        self.ready.extend(completion);
                    }
                    self.ready.pop_front()
                }
                Some(Event::Gone { slot, generation }) => self.on_gone(slot, generation),
                Some(Event::Signal(_)) if self.acted_on_early => {
                    // The signal already acted on, as a worker died of it.
                    self.acted_on_early = false;
                    None
                }
                Some(Event::Signal(sig)) => {
                    self.on_signal(sig);
                    None
                }
                Some(Event::Wake) if self.end.is_none() => return Step::Idle,
                Some(Event::Wake) => None,
                None => {
                    self.on_tick();
                    None
                }
            };
            if let Some(completion) = completed {
                return Step::Completed(completion);
            }
        }
    }

    /// A worker's result: matched to its job by the id it carries.
    fn on_done(&mut self, slot: usize, generation: u64, result: JobResult) -> Option<Completion> {
        let timeout = self.config.timeout;
        let now = Instant::now();
        let w = self.worker_mut(slot, generation)?;
        let State::Busy { tasks, deadline } = &mut w.state else {
            tracing::debug!(pid = w.pid, "a result from a worker with no job: ignored");
            return None;
        };
        let Some(at) = tasks.iter().position(|&id| id == result.id) else {
            tracing::debug!(
                pid = w.pid,
                id = result.id,
                "a result for a job not sent: ignored"
            );
            return None;
        };
        tasks.remove(at);
        if tasks.is_empty() {
            w.state = State::Idle;
        } else if at == 0 {
            // The job sent ahead starts now.
            *deadline = timeout.map(|t| now + t);
        }
        let pid = w.pid;
        self.finishes.add(now);
        let pending = self.pending.remove(&result.id)?;
        Some(Completion {
            id: result.id,
            result: Ok(result),
            attempts: pending.attempts,
            worker_pid: pid,
        })
    }

    /// A worker's channel closed: reap it, retry or give up its job, replace it.
    fn on_gone(&mut self, slot: usize, generation: u64) -> Option<Completion> {
        let Reaped {
            lost,
            sent_ahead,
            killed_by,
        } = self.reap(slot, generation)?;
        let mut completed = None;
        // A death that comes with a signal to us is part of the stop, never a retry.
        if self.end.is_none()
            && let Some(sig) = self.own_signal(killed_by)
        {
            tracing::warn!(
                "{}: stopping workers, finishing nothing new",
                signal_name(sig)
            );
            self.end = Some(PoolEnd::Interrupted(sig));
            self.acted_on_early = true;
            self.stop_all(StopReason::Shutdown, false);
        }
        for id in sent_ahead.into_iter().rev() {
            // Never started: back to the front of the queue, the attempt not spent.
            if let Some(p) = self.pending.get_mut(&id) {
                p.attempts -= 1;
                self.queue.push_front(id);
            }
        }
        if let Some((id, cause, pid)) = lost
            && let Some(p) = self.pending.get(&id)
        {
            if self.end.is_some() {
                // Stopping: the task was abandoned, not failed; the engine reports it as not run.
            } else if p.attempts <= self.config.retries {
                tracing::warn!(
                    "{}: {cause}; retrying (attempt {} of {})",
                    task_name(&p.message),
                    p.attempts + 1,
                    self.config.retries + 1
                );
                self.queue.push_front(id);
            } else {
                let p = self.pending.remove(&id).expect("a pending task");
                completed = Some(Completion {
                    id,
                    result: Err(cause),
                    attempts: p.attempts,
                    worker_pid: pid,
                });
            }
        }
        if self.end.is_none() {
            if let Some(reason) = self.over_budget() {
                self.end = Some(PoolEnd::GaveUp(reason));
                self.stop_all(StopReason::Shutdown, true);
            } else if !self.pending.is_empty()
                && !self.queue.is_empty()
                && let Err(e) = self.spawn(slot)
            {
                self.end = Some(PoolEnd::GaveUp(e.to_string()));
            }
        }
        completed
    }

    fn on_signal(&mut self, sig: i32) {
        self.signal_received.store(0, Ordering::SeqCst);
        let again = self.end.is_some();
        match &self.end {
            None => {
                tracing::warn!(
                    "{}: stopping workers, finishing nothing new",
                    signal_name(sig)
                );
                self.end = Some(PoolEnd::Interrupted(sig));
            }
            Some(PoolEnd::Interrupted(_)) => {
                tracing::warn!("{} again: killing the workers now", signal_name(sig))
            }
            Some(_) => {}
        }
        // A second signal does not wait for the grace period.
        self.stop_all(StopReason::Shutdown, again);
    }

    /// Gives every idle worker a job, then, while more jobs wait than there are workers (so that
    /// sending jobs ahead cannot leave another worker idle at the end), more to each in turn: one
    /// ahead of the running one, and small jobs up to [`BATCH_TASKS`] and [`BATCH_BYTES`]. What a
    /// worker is given here goes in one message.
    fn dispatch(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let timeout = self.config.timeout;
        let workers = self.slots.len();
        let (queue, pending) = (&mut self.queue, &mut self.pending);
        let size = |id: &u64| pending.get(id).map_or(0, |p| p.size);
        // For each worker that may take more: its slot, the jobs and bytes it holds, and those
        // given to it now.
        let mut takers: Vec<(usize, usize, u64, Vec<u64>)> = Vec::new();
        for (slot, w) in self.slots.iter().enumerate() {
            let Some(w) = w else { continue };
            if w.stopping.is_some() {
                continue;
            }
            match &w.state {
                State::Idle => takers.push((slot, 0, 0, Vec::new())),
                State::Busy { tasks, .. } if tasks.len() <= REFILL_AT => {
                    let bytes = tasks.iter().map(size).sum();
                    takers.push((slot, tasks.len(), bytes, Vec::new()));
                }
                _ => {}
            }
        }
        if takers.is_empty() {
            return;
        }
        // In turns, one job per worker per turn, so that the jobs are shared evenly.
        'turns: loop {
            let mut took = false;
            for (_, held, bytes, given) in takers.iter_mut() {
                let Some(id) = queue.front() else {
                    break 'turns;
                };
                let (n, next) = (*held + given.len(), size(id));
                // A job of no known size (a FIFO, say) may take any time: it goes only to an
                // idle worker, so that no result waits behind it (see `worker::Results`).
                let may = n == 0
                    || (queue.len() > workers
                        && next > 0
                        && n < BATCH_TASKS
                        && (n < DEPTH || *bytes + next <= BATCH_BYTES));
                if may {
                    given.push(queue.pop_front().unwrap());
                    *bytes += next;
                    took = true;
                }
            }
            if !took {
                break;
            }
        }
        for (slot, _, _, given) in takers {
            let Some(w) = self.slots[slot].as_mut() else {
                continue;
            };
            // Small jobs go together; a large one (sent ahead within DEPTH) in a message of its
            // own, so that the worker sends what it holds before starting it (see
            // `worker::Results`): no tiny file's line waits for a large file.
            let mut messages: Vec<ToWorker> = Vec::new();
            let mut small: Vec<ToWorker> = Vec::new();
            let mut ids = Vec::with_capacity(given.len());
            for id in given {
                let Some(p) = pending.get_mut(&id) else {
                    continue;
                };
                p.attempts += 1;
                ids.push(id);
                if p.size > BATCH_BYTES {
                    messages.extend(batch_of(std::mem::take(&mut small)));
                    messages.push(p.message.clone());
                } else {
                    small.push(p.message.clone());
                }
            }
            messages.extend(batch_of(small));
            if messages.is_empty() {
                continue;
            }
            let sent = w.jobs.as_ref().is_some_and(|jobs| {
                messages
                    .into_iter()
                    .all(|message| jobs.send(message).is_ok())
            });
            // A failed send means the worker is dying: its Gone event will requeue the tasks.
            if !sent {
                tracing::debug!("worker {} did not take its jobs", w.pid);
            }
            match &mut w.state {
                State::Busy { tasks, .. } => tasks.extend(ids),
                state => {
                    *state = State::Busy {
                        tasks: ids.into(),
                        deadline: timeout.map(|t| Instant::now() + t),
                    }
                }
            }
        }
    }

    fn spawn(&mut self, slot: usize) -> Result<(), SpawnError> {
        let (server, name) = IpcOneShotServer::<FromWorker>::new().map_err(SpawnError::Ipc)?;
        let exe = std::env::current_exe().map_err(SpawnError::OwnExecutable)?;
        let supervisor_pid = std::process::id();
        // Workers run exactly the supervisor's own binary, even if the file was replaced (an
        // upgrade) or removed during the run: a newer build might not speak the same protocol.
        let mut cmd = if Path::new(SELF_EXE).exists() {
            Command::new(SELF_EXE)
        } else {
            Command::new(&exe)
        };
        cmd.arg0(&exe)
            .arg("worker")
            .arg("--server")
            .arg(&name)
            .arg("--parent")
            .arg(supervisor_pid.to_string())
            .args(&self.config.worker_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(SpawnError::Start)?;
        self.generation += 1;
        let generation = self.generation;
        let tx = self.events_tx.clone();
        thread::spawn(move || forward(server, slot, generation, tx));
        self.slots[slot] = Some(Worker {
            pid: child.id(),
            child,
            generation,
            jobs: None,
            progress: None,
            state: State::Starting {
                since: Instant::now(),
                server: name,
            },
            stopping: None,
        });
        Ok(())
    }

    fn worker_mut(&mut self, slot: usize, generation: u64) -> Option<&mut Worker> {
        self.slots[slot]
            .as_mut()
            .filter(|w| w.generation == generation)
    }

    /// Waits for a worker whose channel closed, and says what it was doing and why it died.
    /// `None` when the event is stale; `Some(None)` when it was not working on anything.
    /// Also returns the jobs that were sent ahead to it and never started.
    fn reap(&mut self, slot: usize, generation: u64) -> Option<Reaped> {
        self.worker_mut(slot, generation)?;
        let mut w = self.slots[slot].take().unwrap();
        let status = wait_briefly(&mut w.child);
        let cause = match (w.stopping, self.config.timeout) {
            (Some((_, StopReason::Timeout)), Some(t)) => WorkerLost::TimedOut(t),
            _ => WorkerLost::Died(status),
        };
        let mut tasks = match w.state {
            State::Busy { tasks, .. } => tasks,
            _ => VecDeque::new(),
        };
        // The job it was running is the one it started last, unless that one had ended; those
        // before it ended (their results died with the worker) and those after it never started:
        // all of them go back without spending an attempt. A worker that started none of the
        // jobs it holds, or whose last job had ended, was running nothing.
        let started = w.progress.as_ref().and_then(Progress::current);
        let busy = match started.and_then(|id| tasks.iter().position(|&t| t == id)) {
            Some(at) => tasks.remove(at),
            None => None,
        };
        // Any death we did not ask for counts against the restart budget, busy or not: a worker
        // that dies before its handshake, again and again, must not make the pool spin.
        let expected = w.stopping.is_some_and(|(_, r)| r == StopReason::Shutdown);
        if !expected {
            self.crashes.add(Instant::now());
            self.deaths += 1;
        }
        tracing::debug!(pid = w.pid, "worker exited: {cause}");
        Some(Reaped {
            lost: busy.map(|task| (task, cause, w.pid)),
            sent_ahead: tasks.into(),
            killed_by: if w.stopping.is_none() {
                status.and_then(|s| s.signal())
            } else {
                None
            },
        })
    }

    /// The restart budget: the run stops when, within [`CRASH_WINDOW`], more workers died than
    /// the budget allows and than jobs finished. A few bad files among many good ones do not stop
    /// it; workers that die faster than files finish do.
    fn over_budget(&mut self) -> Option<String> {
        let now = Instant::now();
        self.crashes.trim(now);
        self.finishes.trim(now);
        let budget = 5.max(self.slots.len());
        let (crashes, finished) = (self.crashes.total, self.finishes.total);
        (crashes > budget && crashes > finished).then(|| {
            format!(
                "workers keep dying: {crashes} died within {}s while {finished} files finished; stopping the run",
                CRASH_WINDOW.as_secs(),
            )
        })
    }

    /// Signals every live worker to stop. With `kill_now`, SIGKILL at once.
    fn stop_all(&mut self, reason: StopReason, kill_now: bool) {
        for slot in 0..self.slots.len() {
            let Some(w) = self.slots[slot].as_mut() else {
                continue;
            };
            // Closing the job channel lets an idle worker leave on its own.
            w.jobs = None;
            if kill_now {
                kill_group(w.pid, libc::SIGKILL);
                w.stopping = Some((Instant::now(), reason));
            } else if w.stopping.is_none() {
                kill_group(w.pid, libc::SIGTERM);
                w.stopping = Some((Instant::now() + GRACE, reason));
            }
            if let State::Starting { server, .. } = &w.state {
                unblock_accept(server);
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for w in self.slots.iter().flatten() {
            if let Some((at, _)) = w.stopping {
                consider(at.max(Instant::now() + STARTING_POLL));
            }
            match &w.state {
                State::Starting { .. } => consider(Instant::now() + STARTING_POLL),
                State::Busy {
                    deadline: Some(d), ..
                } if w.stopping.is_none() => consider(*d),
                _ => {}
            }
        }
        next
    }

    /// Deadlines: kill workers past their grace, stop workers past their job's deadline, and
    /// notice workers that died before they connected.
    fn on_tick(&mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let Some(w) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Some((at, _)) = w.stopping
                && now >= at
            {
                kill_group(w.pid, libc::SIGKILL);
            }
            match &w.state {
                State::Busy {
                    deadline: Some(d), ..
                } if w.stopping.is_none() && now >= *d => {
                    tracing::debug!(pid = w.pid, "job deadline passed: SIGTERM");
                    kill_group(w.pid, libc::SIGTERM);
                    w.stopping =
                        Some((now + GRACE.min(Duration::from_secs(2)), StopReason::Timeout));
                }
                State::Starting { since, server } => {
                    let dead = matches!(w.child.try_wait(), Ok(Some(_)));
                    if dead || now.duration_since(*since) > HANDSHAKE {
                        if !dead {
                            tracing::warn!(pid = w.pid, "worker did not connect in time");
                            kill_group(w.pid, libc::SIGKILL);
                        }
                        // The forwarding thread is blocked in accept(): connect so it returns.
                        unblock_accept(server);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        for w in self.slots.iter_mut().flatten() {
            kill_group(w.pid, libc::SIGKILL);
            let _ = w.child.wait();
        }
    }
}

/// The worker's forwarding thread: handshake, then results, then the closing of the channel.
fn forward(
    server: IpcOneShotServer<FromWorker>,
    slot: usize,
    generation: u64,
    tx: mpsc::Sender<Event>,
) {
    let gone = |tx: &mpsc::Sender<Event>| {
        let _ = tx.send(Event::Gone { slot, generation });
    };
    let (results, first) = match server.accept() {
        Ok(pair) => pair,
        Err(_) => return gone(&tx),
    };
    let FromWorker::Hello {
        pid,
        jobs,
        progress,
    } = first
    else {
        return gone(&tx);
    };
    if tx
        .send(Event::Hello {
            slot,
            generation,
            pid,
            jobs,
            progress,
        })
        .is_err()
    {
        return;
    }
    while let Ok(FromWorker::Done(group)) = results.recv() {
        if tx
            .send(Event::Done {
                slot,
                generation,
                results: group,
            })
            .is_err()
        {
            return;
        }
    }
    gone(&tx)
}

/// One message for `jobs`: the job itself if it is alone, else a batch; none for no job.
fn batch_of(mut jobs: Vec<ToWorker>) -> Option<ToWorker> {
    match jobs.len() {
        0 => None,
        1 => jobs.pop(),
        _ => Some(ToWorker::Batch(jobs)),
    }
}

/// The file a task is about, for the log.
fn task_name(message: &ToWorker) -> String {
    match message {
        ToWorker::Transform(job) => job.input.to_path().display().to_string(),
        ToWorker::Generate(job) => job.temp_output.to_path().display().to_string(),
        ToWorker::Batch(jobs) => jobs.first().map(task_name).unwrap_or_default(),
    }
}

/// Connects to a one-shot server and hangs up, so that a thread blocked in its `accept()` returns.
/// The socket is non-blocking: if the server's backlog is full (its thread already accepted a
/// worker that never speaks), connecting fails at once instead of blocking the event loop.
fn unblock_accept(server: &str) {
    let Ok(path) = std::ffi::CString::new(server) else {
        return;
    };
    let bytes = path.as_bytes_with_nul();
    // SAFETY: plain socket calls on a zeroed sockaddr_un whose path fits (checked); the fd is
    // closed before returning.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        if bytes.len() > addr.sun_path.len() {
            return;
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return;
        }
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        libc::close(fd);
    }
}

fn kill_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group the worker leads.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

/// Waits for a child whose channel has closed. It is normally already dead; if it lingers, it
/// is killed rather than waited on forever.
fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                kill_group(child.id(), libc::SIGKILL);
                return child.wait().ok();
            }
            Err(_) => return None,
        }
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    let Some(status) = status else {
        return "worker vanished".into();
    };
    if let Some(sig) = status.signal() {
        let extra = match sig {
            libc::SIGXFSZ => " (file-size limit exceeded)",
            libc::SIGSEGV => " (segmentation fault)",
            libc::SIGABRT => " (aborted)",
            libc::SIGKILL => "",
            _ => "",
        };
        format!("worker killed by {}{extra}", signal_name(sig))
    } else {
        match status.code() {
            Some(101) => "worker panicked (exit status 101)".into(),
            Some(code) => format!("worker exited with status {code}"),
            None => "worker exited".into(),
        }
    }
}

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGXFSZ => "SIGXFSZ".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGILL => "SIGILL".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_count_keeps_a_slice_per_10ms_and_forgets_past_the_window() {
        let start = Instant::now();
        let mut count = RecentCount::default();
        for i in 0..100_000u64 {
            // 100,000 finishes over 2 s: 50,000 a second.
            count.add(start + Duration::from_micros(i * 20));
        }
        assert_eq!(count.total, 100_000);
        assert!(count.slices.len() <= 201, "{} slices", count.slices.len());
        // 10 s after the first: all still within the window.
        count.trim(start + Duration::from_secs(10));
        assert_eq!(count.total, 100_000);
        // 1 s later the first second's slices are gone, the second's not yet.
        count.trim(start + Duration::from_secs(11));
        let left = count.total;
        assert!((49_000..=51_000).contains(&left), "{left} left");
        count.trim(start + Duration::from_millis(12_100));
        assert_eq!((count.total, count.slices.len()), (0, 0));
    }
}

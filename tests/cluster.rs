//! The cluster deploy files, checked by the real tools: deploy/k8s-indexed-job.yaml against the
//! Kubernetes API schemas (kubernetes-validate), and deploy/slurm-array.sh on a real Slurm
//! cluster: one node on 127.0.0.1 (munged, slurmctld and slurmd from Debian's packages, every file
//! of theirs in a temp dir), with the shipped script submitted as its README tells a user to
//! (SOUNDS, sbatch options). It checks what a user of a cluster relies on: N tasks write the bytes
//! of one run, a cancelled task leaves nothing half-written and a resubmit of that task alone
//! completes the folder, a task whose shard is locked exits 75 without disturbing the others, and
//! a task outside the shard count is refused.
//!
//! The Slurm test needs root and the packages slurmctld, slurmd, slurm-client and munge, the
//! schema check the PyPI package kubernetes-validate (`.ci/run` installs them). Without them a
//! test says so on one line and passes, except under CI=true, where it fails: CI must run them.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{gen_fake_data, run_in, settle, snapshot};
use serde_json::Value;

/// How long a cluster may take to come up, or a job to end, before the test gives up with what
/// the daemons logged (a bound against hanging, not a measurement).
const PATIENCE: Duration = Duration::from_secs(120);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm-array.sh")
}

/// Whether this machine can run the cluster, or why not.
fn missing_prerequisite() -> Option<String> {
    for program in [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "sinfo",
        "scontrol",
        "scancel",
    ] {
        let found = std::env::var_os("PATH")
            .into_iter()
            .chain([
                "/usr/sbin".into(),
                "/usr/bin".into(),
                "/sbin".into(),
                "/bin".into(),
            ])
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .any(|dir| dir.join(program).is_file());
        if !found {
            return Some(format!(
                "{program} is not installed (apt-get install slurmctld slurmd slurm-client munge)"
            ));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the Slurm daemons of this test run as root".into());
    }
    None
}

/// Skips the test with one line, or fails it under CI=true.
fn cluster_or_skip() -> Option<Cluster> {
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the Slurm test, but {why}"
        );
        say(&format!("note: slurm test skipped: {why}"));
        return None;
    }
    Some(Cluster::start())
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The short host name, which slurmctld and slurmd compare with the configured names.
fn hostname() -> String {
    let full = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = full
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(!name.is_empty(), "the host has no name");
    name
}

/// One line on stderr that shows even when the test passes: libtest captures only the print
/// macros, and CI's log must show that the cluster really ran (or why it did not).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn sbin(program: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The three daemons, started by this test in the foreground and stopped by their pids when it
/// ends, however it ends.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// munged, slurmctld, slurmd, in the order they start.
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["munge", "state", "spool", "log", "run"] {
            fs::create_dir(d.join(sub)).unwrap();
        }
        let key = d.join("munge/munge.key");
        let mut bytes = vec![0u8; 128];
        File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .unwrap();
        fs::write(&key, &bytes).unwrap();
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let socket = d.join("munge/munge.socket");
        let host = hostname();
        let conf = d.join("slurm.conf");
        let p = |s: &str| d.join(s).display().to_string();
        // One node that may declare more CPUs than it has (config_overrides), so that the four
        // tasks of the array run side by side; no accounting daemon.
        let slurm_conf = format!(
            "ClusterName=etltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={ctld_pid}
SlurmdPidFile={slurmd_pid}
SlurmctldLogFile={ctld_log}
SlurmdLogFile={slurmd_log}
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=8192 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
",
            ctld_port = free_port(),
            slurmd_port = free_port(),
            socket = socket.display(),
            state = p("state"),
            spool = p("spool"),
            ctld_pid = p("run/slurmctld.pid"),
            slurmd_pid = p("run/slurmd.pid"),
            ctld_log = p("log/slurmctld.log"),
            slurmd_log = p("log/slurmd.log"),
        );
        fs::write(&conf, slurm_conf).unwrap();

        let mut cluster = Cluster {
            dir,
            conf,
            daemons: Vec::new(),
        };
        let d = cluster.dir.path().to_path_buf();
        cluster.spawn(
            "munged",
            Command::new(sbin("munged")).args([
                "--foreground",
                "--force",
                &format!("--socket={}", socket.display()),
                &format!("--key-file={}", key.display()),
                &format!("--pid-file={}", d.join("run/munged.pid").display()),
                &format!("--log-file={}", d.join("log/munged.log").display()),
                &format!("--seed-file={}", d.join("munge/seed").display()),
            ]),
        );
        cluster.wait_for("munged's socket", |_| socket.exists());
        let conf = cluster.conf.clone();
        cluster.spawn(
            "slurmctld",
            Command::new(sbin("slurmctld"))
                .arg("-D")
                .arg("-f")
                .arg(&conf),
        );
        cluster.spawn(
            "slurmd",
            Command::new(sbin("slurmd")).arg("-D").arg("-f").arg(&conf),
        );
        cluster.wait_for("the node to be idle in sinfo", |cluster| {
            let out = cluster.slurm("sinfo").args(["-h", "-o", "%T"]).output();
            out.is_ok_and(|o| text(&o.stdout).trim() == "idle")
        });
        cluster
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) {
        let log = File::create(self.dir.path().join(format!("log/{name}.out"))).unwrap();
        let child = cmd
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.daemons.push((name, child));
    }

    /// A Slurm client command talking to this cluster.
    fn slurm(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// What the daemons said, for a failure message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for name in [
            "munged.out",
            "slurmctld.out",
            "slurmd.out",
            "slurmctld.log",
            "slurmd.log",
        ] {
            let body =
                fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(15).collect();
            all += &format!("--- {name} (last lines)\n");
            for l in tail.into_iter().rev() {
                all += l;
                all.push('\n');
            }
        }
        all
    }

    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
        let start = Instant::now();
        while !done(self) {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "gave up waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `sbatch --parsable OPTIONS deploy/slurm-array.sh` in `workdir`, as a user would submit it:
    /// SOUNDS names the folder, `etl` is on PATH (sbatch passes the environment on).
    fn submit(&self, workdir: &Path, sounds: &Path, options: &[&str]) -> String {
        fs::create_dir_all(workdir).unwrap();
        let path = format!(
            "{}:{}",
            Path::new(env!("CARGO_BIN_EXE_etl"))
                .parent()
                .unwrap()
                .display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        let out = run(self
            .slurm("sbatch")
            .arg("--parsable")
            .args(options)
            .arg(script())
            .current_dir(workdir)
            .env("PATH", path)
            .env("SOUNDS", sounds)
            .env_remove("RUST_LOG"));
        assert!(
            out.status.success(),
            "sbatch {options:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// The array's tasks as `scontrol show job` reports them: task id -> (JobState, ExitCode).
    fn tasks(&self, job: &str) -> BTreeMap<String, (String, String)> {
        let out = run(self.slurm("scontrol").args(["show", "job", "-o", job]));
        assert!(out.status.success(), "scontrol: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let fields: BTreeMap<&str, &str> = line
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .collect();
                let task = fields.get("ArrayTaskId").copied().unwrap_or("-");
                (
                    task.to_string(),
                    (
                        fields["JobState"].to_string(),
                        fields["ExitCode"].to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Waits until every task of `job` has ended, and returns their states.
    fn wait_job(&mut self, job: &str) -> BTreeMap<String, (String, String)> {
        let ended = |t: &BTreeMap<String, (String, String)>| {
            t.values().all(|(state, _)| {
                !matches!(
                    state.as_str(),
                    "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED"
                )
            })
        };
        let start = Instant::now();
        loop {
            let last = self.tasks(job);
            if !last.is_empty() && ended(&last) {
                return last;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "job {job} has not ended: {last:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemons by their pids, the last started first, and reaps them.
    fn stop(&mut self) -> Vec<(&'static str, u32, ExitStatus)> {
        // Jobs still running (after a failed assertion) end with the cluster.
        if !self.daemons.is_empty() {
            let _ = self
                .slurm("scancel")
                .args(["--user", "root"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let mut stopped = Vec::new();
        while let Some((name, mut child)) = self.daemons.pop() {
            // SAFETY: kill with a pid this test spawned and has not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    break child.wait().unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            stopped.push((name, child.id(), status));
        }
        stopped
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `task id -> "STATE ExitCode"`, one line for the test's output.
fn describe(tasks: &BTreeMap<String, (String, String)>) -> String {
    tasks
        .iter()
        .map(|(id, (state, code))| format!("{id}:{state} {code}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn expect_tasks(
    tasks: &BTreeMap<String, (String, String)>,
    want: &[(&str, &str, &str)],
    workdir: &Path,
    job: &str,
) {
    let got: Vec<(&str, &str, &str)> = tasks
        .iter()
        .map(|(id, (s, c))| (id.as_str(), s.as_str(), c.as_str()))
        .collect();
    if got != want {
        let mut logs = String::new();
        for id in tasks.keys() {
            let out = workdir.join(format!("etl-{job}_{id}.out"));
            logs += &format!(
                "--- {}\n{}",
                out.display(),
                fs::read_to_string(&out).unwrap_or_default()
            );
        }
        panic!("job {job}: tasks {got:?}, wanted {want:?}\n{logs}");
    }
}

/// The number of shards the script splits a folder into, read from it.
fn script_shards() -> u32 {
    let body = fs::read_to_string(script()).unwrap();
    let shards: u32 = body
        .lines()
        .find_map(|l| l.strip_prefix("SHARDS="))
        .expect("SHARDS= in slurm-array.sh")
        .trim()
        .parse()
        .unwrap();
    let array = format!("#SBATCH --array=0-{}", shards - 1);
    assert!(body.contains(&array), "the script's --array matches SHARDS");
    assert!(body.contains("--seed 42"), "the script fixes --seed 42");
    shards
}

/// A folder of test tones and a copy of it transformed by one unsharded run with the script's
/// seed: what every sharded result must equal.
fn folder_and_reference(root: &Path, name: &str, count: &str, seconds: &str) -> (PathBuf, PathBuf) {
    let sounds = root.join(name);
    gen_fake_data(
        &sounds,
        &[
            "--count",
            count,
            "--duration",
            seconds,
            "--format",
            "i16",
            "-q",
        ],
    );
    gen_fake_data(
        &sounds.join("more"),
        &["--count", "3", "--duration", "0.2", "-q"],
    );
    // Written a while before the run, as a real corpus is: etl skips files still being written.
    settle(&sounds);
    let reference = root.join(format!("{name}-reference"));
    copy_dir(&sounds, &reference);
    settle(&reference);
    run_in(
        root,
        &[reference.to_str().unwrap(), "-r", "--seed", "42", "-q"],
    )
    .expect_code(0);
    (sounds, reference)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Every file below `dir` but etl's lock files.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = snapshot(dir);
    all.retain(|p, _| !p.file_name().unwrap().to_string_lossy().starts_with(".etl"));
    all
}

/// Compares a folder with the unsharded reference: the same files (so every input has exactly
/// one output and nothing else is left, no temporary file either) with the same bytes. Returns
/// the number of outputs.
fn compare_with_reference(sounds: &Path, reference: &Path) -> usize {
    let got = files(sounds);
    let want = files(reference);
    let missing: Vec<_> = want.keys().filter(|p| !got.contains_key(*p)).collect();
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(p, bytes)| got.get(*p).is_some_and(|g| g != *bytes))
        .map(|(p, _)| p)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{} against one unsharded run: missing {missing:?}, extra {extra:?}, different bytes {differ:?}",
        sounds.display()
    );
    want.keys()
        .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
        .count()
}

/// The `summary` object that ends a shard's report.
fn summary(report: &Path) -> Value {
    let body = fs::read_to_string(report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    let last = body.lines().last().expect("a report line");
    serde_json::from_str::<Value>(last).unwrap()["summary"].clone()
}

/// The outputs below `dir`, and the temporary files.
fn outputs_and_temps(dir: &Path) -> (usize, Vec<PathBuf>) {
    let all = snapshot(dir);
    let outputs = all
        .keys()
        .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
        .count();
    let temps = all
        .keys()
        .filter(|p| p.to_string_lossy().ends_with(".etl-tmp"))
        .cloned()
        .collect();
    (outputs, temps)
}

#[test]
fn slurm_array_on_a_one_node_cluster() {
    let started = Instant::now();
    let shards = script_shards();
    let Some(mut cluster) = cluster_or_skip() else {
        return;
    };
    let up = started.elapsed();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();

    // 1. The whole array, one CPU per task: every task COMPLETED 0:0, the bytes of one run.
    let (sounds, reference) = folder_and_reference(root, "sounds", "16", "0.5");
    let jobdir = root.join("job-a");
    let job = cluster.submit(&jobdir, &sounds, &["--cpus-per-task=1"]);
    let tasks = cluster.wait_job(&job);
    let all_ok: Vec<(String, &str, &str)> = (0..shards)
        .map(|i| (i.to_string(), "COMPLETED", "0:0"))
        .collect();
    let all_ok: Vec<(&str, &str, &str)> = all_ok
        .iter()
        .map(|(i, s, c)| (i.as_str(), *s, *c))
        .collect();
    expect_tasks(&tasks, &all_ok, &jobdir, &job);
    for i in 0..shards {
        let s = summary(&jobdir.join(format!("reports/shard-{i}.jsonl")));
        assert_eq!(s["jobs"], 1, "-j follows --cpus-per-task: {s}");
        assert_eq!(s["shard"], format!("{i}/{shards}"), "{s}");
    }
    let outputs = compare_with_reference(&sounds, &reference);
    say(&format!(
        "slurm: job {job}: {} array tasks: {}; cmp with one unsharded run: {outputs} of {outputs} outputs identical",
        tasks.len(),
        describe(&tasks)
    ));

    // 2. Tasks outside the shard count are refused before any work, the whole array with them.
    // Enough work that task 1, cancelled once its first file is reported, is still running when
    // Slurm's SIGTERM arrives (a few hundred milliseconds later): 3000 files of 44 KB a shard.
    let (sounds, reference) = folder_and_reference(root, "big", "12000", "0.5");
    let jobdir = root.join("job-b");
    let bad = format!("--array={}-{}", shards - 1, shards);
    let job = cluster.submit(&jobdir, &sounds, &[&bad, "--cpus-per-task=2"]);
    let tasks = cluster.wait_job(&job);
    let (last, past) = ((shards - 1).to_string(), shards.to_string());
    expect_tasks(
        &tasks,
        &[(&last, "FAILED", "2:0"), (&past, "FAILED", "2:0")],
        &jobdir,
        &job,
    );
    let log = fs::read_to_string(jobdir.join(format!("etl-{job}_{last}.out"))).unwrap();
    assert!(
        log.contains(&format!("not a shard of SHARDS={shards}")),
        "{log}"
    );
    assert_eq!(
        outputs_and_temps(&sounds).0,
        0,
        "a refused task does nothing"
    );
    assert!(!jobdir.join("reports").exists());
    say(&format!("slurm: job {job} ({bad}): {}", describe(&tasks)));

    // 3. Shard 2's lock is held (another run of it) and task 1 is cancelled mid-run.
    let (locked, cancelled) = (2, 1);
    let lock_path = sounds.join(format!(".etl-shard-{locked}of{shards}.lock"));
    let mut lock = File::create(&lock_path).unwrap();
    lock.try_lock().expect("the test takes shard 2's lock");
    writeln!(lock, "{}", std::process::id()).unwrap();
    let job = cluster.submit(&jobdir, &sounds, &["--cpus-per-task=2"]);
    let report = jobdir.join(format!("reports/shard-{cancelled}.jsonl"));
    cluster.wait_for("task 1's first report line", |_| {
        fs::metadata(&report).is_ok_and(|m| m.len() > 0)
    });
    let out = run(cluster.slurm("scancel").arg(format!("{job}_{cancelled}")));
    assert!(out.status.success(), "scancel: {}", text(&out.stderr));
    let tasks = cluster.wait_job(&job);
    say(&format!(
        "slurm: job {job}, shard {locked} locked, task {cancelled} cancelled: {}",
        describe(&tasks)
    ));
    let want: Vec<(String, &str, &str)> = (0..shards)
        .map(|i| match i {
            i if i == locked => (i.to_string(), "FAILED", "75:0"),
            i if i == cancelled => (i.to_string(), "CANCELLED", "143:0"),
            i => (i.to_string(), "COMPLETED", "0:0"),
        })
        .collect();
    let want: Vec<(&str, &str, &str)> = want.iter().map(|(i, s, c)| (i.as_str(), *s, *c)).collect();
    expect_tasks(&tasks, &want, &jobdir, &job);
    let s = summary(&report);
    assert_eq!(s["end"], "interrupted by SIGTERM", "{s}");
    assert!(
        s["not_run"].as_u64().unwrap() > 0,
        "task {cancelled} was cancelled mid-run, with files left: {s}"
    );
    assert_eq!(s["jobs"], 2, "-j follows --cpus-per-task: {s}");
    say(&format!(
        "slurm: task {cancelled} was cancelled after {} files, {} not run, no temporary file left",
        s["ok"], s["not_run"]
    ));
    let log = fs::read_to_string(jobdir.join(format!("etl-{job}_{locked}.out"))).unwrap();
    assert!(log.contains("is held by"), "{log}");
    assert!(
        !jobdir
            .join(format!("reports/shard-{locked}.jsonl"))
            .exists(),
        "the locked task wrote no report"
    );
    // What is on disk: exactly the files the other tasks finished, no temporary file, and each
    // output already has the bytes of one run.
    let done: u64 = (0..shards)
        .filter(|&i| i != locked)
        .map(|i| {
            summary(&jobdir.join(format!("reports/shard-{i}.jsonl")))["ok"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let (outputs, temps) = outputs_and_temps(&sounds);
    assert!(temps.is_empty(), "half-written files: {temps:?}");
    assert_eq!(
        outputs as u64, done,
        "outputs on disk are the reported ones"
    );
    let want = files(&reference);
    for (path, bytes) in files(&sounds) {
        assert_eq!(
            want.get(&path),
            Some(&bytes),
            "{} differs from one unsharded run",
            path.display()
        );
    }

    // 4. Resubmitting only the cancelled task finishes its shard; once the lock is released,
    // resubmitting only the locked one completes the folder.
    let job = cluster.submit(
        &jobdir,
        &sounds,
        &[&format!("--array={cancelled}"), "--cpus-per-task=2"],
    );
    let tasks = cluster.wait_job(&job);
    let id = cancelled.to_string();
    expect_tasks(&tasks, &[(&id, "COMPLETED", "0:0")], &jobdir, &job);
    let s = summary(&report);
    assert_eq!(s["shard"], format!("{cancelled}/{shards}"), "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert!(
        s["skipped"].as_u64().unwrap() > 0,
        "finished outputs are skipped: {s}"
    );
    say(&format!(
        "slurm: job {job} (--array={cancelled}): {}",
        describe(&tasks)
    ));
    drop(lock);
    let job = cluster.submit(
        &jobdir,
        &sounds,
        &[&format!("--array={locked}"), "--cpus-per-task=2"],
    );
    let tasks = cluster.wait_job(&job);
    let id = locked.to_string();
    expect_tasks(&tasks, &[(&id, "COMPLETED", "0:0")], &jobdir, &job);
    let outputs = compare_with_reference(&sounds, &reference);
    say(&format!(
        "slurm: job {job} (--array={locked}): {}; cmp with one unsharded run: {outputs} of {outputs} outputs identical",
        describe(&tasks)
    ));

    // 5. The daemons stop on SIGTERM, by their pids, and are reaped.
    let stopped = cluster.stop();
    let names: Vec<&str> = stopped.iter().map(|(name, ..)| *name).collect();
    assert_eq!(names, ["slurmd", "slurmctld", "munged"]);
    let stopped: Vec<String> = stopped
        .iter()
        .map(|(name, pid, status)| format!("{name} (pid {pid}, {status})"))
        .collect();
    say(&format!(
        "slurm: stopped {}; cluster up in {:.1}s, whole test {:.1}s",
        stopped.join(", "),
        up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

/// The script as one array task of a submission, without Slurm: `task` and `last` are what
/// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_MAX would be, `cpus` SLURM_CPUS_PER_TASK.
fn script_task(
    workdir: &Path,
    sounds: &Path,
    task: Option<u32>,
    last: u32,
    cpus: Option<u32>,
) -> Output {
    let path = format!(
        "{}:{}",
        Path::new(env!("CARGO_BIN_EXE_etl"))
            .parent()
            .unwrap()
            .display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .current_dir(workdir)
        .env("PATH", path)
        .env("SOUNDS", sounds)
        .env("SLURM_ARRAY_TASK_MAX", last.to_string())
        .env("SLURM_ARRAY_TASK_COUNT", "1")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_CPUS_PER_TASK")
        .env_remove("RUST_LOG");
    if let Some(task) = task {
        cmd.env("SLURM_ARRAY_TASK_ID", task.to_string());
    }
    if let Some(cpus) = cpus {
        cmd.env("SLURM_CPUS_PER_TASK", cpus.to_string());
    }
    run(&mut cmd)
}

#[test]
fn slurm_script_resubmits_one_task_on_its_own_shard_and_refuses_other_counts() {
    let shards = script_shards();
    let tmp = tempfile::tempdir().unwrap();
    let sounds = tmp.path().join("sounds");
    gen_fake_data(&sounds, &["--count", "8", "--duration", "0.2", "-q"]);
    let workdir = tmp.path().join("job");
    fs::create_dir(&workdir).unwrap();

    // Outside the shard count, or not an array task at all: refused with one line, nothing done.
    for (task, last, says) in [
        (
            Some(shards),
            shards,
            format!("array task {shards} is not a shard of SHARDS={shards}"),
        ),
        (
            Some(0),
            shards,
            format!("array task {shards} is not a shard of SHARDS={shards}"),
        ),
        (None, 0, "not an array task".to_string()),
    ] {
        let out = script_task(&workdir, &sounds, task, last, Some(1));
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "task {task:?} of 0-{last}: {err}"
        );
        assert!(err.contains(&says) && err.lines().count() == 1, "{err}");
        assert!(!workdir.join("reports").exists(), "refused before any work");
        assert_eq!(outputs_and_temps(&sounds).0, 0);
    }

    // `sbatch --array=1` alone: a one-task array, still shard 1 of SHARDS, -j from nproc when
    // Slurm sets no CPU count.
    let out = script_task(&workdir, &sounds, Some(1), 1, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = summary(&workdir.join("reports/shard-1.jsonl"));
    assert_eq!(s["shard"], format!("1/{shards}"), "{s}");
    let nproc: u64 = text(&run(&mut Command::new("nproc")).stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(s["jobs"], nproc, "{s}");
    let done = s["ok"].as_u64().unwrap();
    assert!(done < 8, "one shard, not the folder: {s}");
    assert_eq!(outputs_and_temps(&sounds).0 as u64, done);
}

// ---------------------------------------------------------------------------------------------
// deploy/k8s-indexed-job.yaml against the Kubernetes API schemas
// ---------------------------------------------------------------------------------------------

/// `kubernetes-validate --strict` (from PyPI, schemas included, offline) against the oldest
/// version the Job says it needs and against the newest the package ships (its default).
#[test]
fn k8s_indexed_job_validates_against_the_1_29_and_newest_schemas() {
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s-indexed-job.yaml");
    if Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the Kubernetes schema check, but kubernetes-validate is not installed"
        );
        say(
            "note: kubernetes schema check skipped: kubernetes-validate is not installed (pip install kubernetes-validate)",
        );
        return;
    }
    for version in [Some("1.29"), None] {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let out = run(cmd.arg(&yaml));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "kubernetes-validate {version:?}: {said}"
        );
        assert!(said.contains("passed"), "{said}");
        say(&format!("k8s: {}", said.trim()));
    }
}

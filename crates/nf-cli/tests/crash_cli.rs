//! Crash consistency through the real binary (issue 13, item 5).
//!
//! **Kill -9.** `ingest --force`, `export --force` (a GGUF file and an HF folder) and `models
//! pull --force` each replace an artifact that an earlier complete run made with one made
//! from other input, and are killed with SIGKILL at seeded delays spread over the command's
//! measured duration and, where strace works, on entry to each rename and fsync the command
//! makes (strace's syscall injection: the delays alone almost never land between two
//! renames, which is where a replacement is most fragile). After every kill the artifact must
//! be byte-identical to the one before or equal to what a complete run makes (JSON
//! timestamps aside), the CLI must list nothing but it (staging folders are not artifacts),
//! and the command must succeed when run again. An audit append (`generate`) is killed the
//! same way, also while it recovers a torn tail: the log keeps every earlier byte, gains only
//! whole entries, and verifies.
//!
//! **Full disk.** A small tmpfs in a user and mount namespace (`unshare -rm`) holds the
//! previous artifact while `ingest`, `export` and a training checkpoint run out of space on
//! it: one `error:` line naming the path and the cause, the previous artifact unchanged,
//! nothing left behind, and the same command succeeding once the file system is made larger.
//!
//! Where namespaces or strace are unavailable those parts skip with a message, unless
//! `NF_REQUIRE_USERNS=1` or `NF_REQUIRE_STRACE=1` say they work (`.ci/run` sets them after
//! checking), so there they must run.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nf_testkit::cli::{p, stderr, stories_model};
use nf_testkit::hub::{FakeHub, stories_files};
use nf_testkit::{require_assets, temp_dir};

const NF: &str = env!("CARGO_BIN_EXE_neuralforge");

/// Kills at delays per command: enough to land in each phase (start, reading, writing,
/// renaming) of these sub-second commands while keeping each test short.
const DELAY_KILLS: usize = 8;

/// The syscalls a replacement is killed on: every rename publishes something and every
/// fsync ends a write, so together they bound each step of writing and swapping in.
const REPLACE_SYSCALLS: &[&str] = &["rename", "renameat", "renameat2", "fsync", "fdatasync"];

fn bin(home: &Path) -> Command {
    let mut c = Command::new(NF);
    c.env("NEURALFORGE_HOME", home)
        .env_remove("HF_ENDPOINT")
        .env_remove("NEURALFORGE_OFFLINE")
        .args(["--threads", "1"]);
    c
}

/// Runs `c` to completion, which must succeed; returns how long it took.
fn run_ok(c: &mut Command) -> Duration {
    let t0 = Instant::now();
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{c:?} failed: {}", stderr(&o));
    t0.elapsed()
}

/// `dir` holding one document: `chars` characters of TinyStories from `offset` on.
fn stories_docs(assets: &Path, dir: &Path, offset: usize, chars: usize) -> PathBuf {
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let all: Vec<char> = text.chars().collect();
    let part: String = all[offset..offset + chars].iter().collect();
    std::fs::write(dir.join("stories.txt"), part).unwrap();
    dir.to_path_buf()
}

// ---------------------------------------------------------------------------------------
// What an artifact holds

/// Each file under a path (relative name; "" for a file path itself; folders as `name/`)
/// with the sha256 of its bytes (`raw`) and of its bytes with the timestamps a command
/// writes into JSON taken out (`norm`), so two complete runs of one command compare equal.
/// A missing path has no entries.
#[derive(Clone, Debug, Default, PartialEq)]
struct Snapshot {
    raw: BTreeMap<String, String>,
    norm: BTreeMap<String, String>,
}

fn snapshot(path: &Path) -> Snapshot {
    let mut s = Snapshot::default();
    add_to_snapshot(path, "", &mut s);
    s
}

fn add_to_snapshot(path: &Path, rel: &str, s: &mut Snapshot) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        // An empty folder differs from a missing one.
        s.raw.insert(format!("{rel}/"), "folder".into());
        s.norm.insert(format!("{rel}/"), "folder".into());
        for e in std::fs::read_dir(path).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            add_to_snapshot(&e.path(), &child, s);
        }
        return;
    }
    let bytes = std::fs::read(path).unwrap();
    s.raw.insert(rel.into(), nf_audit::sha256_hex(&bytes));
    s.norm.insert(
        rel.into(),
        nf_audit::sha256_hex(&without_timestamps(path, bytes)),
    );
}

/// A JSON object's bytes without its `created` (datasets) and `added` (stored models) keys,
/// the only parts of these artifacts that differ between two runs on the same input.
fn without_timestamps(path: &Path, bytes: Vec<u8>) -> Vec<u8> {
    if path.extension().is_none_or(|e| e != "json") {
        return bytes;
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.remove("created");
            m.remove("added");
            serde_json::to_vec(&m).unwrap()
        }
        _ => bytes,
    }
}

/// The files of `now` that differ from `want`, for failure messages.
fn differences(now: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = now.keys().chain(want.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| now.get(*k) != want.get(*k))
        .map(|k| match (now.contains_key(k), want.contains_key(k)) {
            (true, false) => format!("{k:?} is extra"),
            (false, true) => format!("{k:?} is missing"),
            _ => format!("{k:?} differs"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Killing a command

/// `n` delays spread over `[0, span * 1.2)`, one in each of `n` equal slices at a seeded
/// place within it, so every phase of the command gets a kill and a rerun gets the same ones.
fn delays(seed: u64, n: usize, span: Duration) -> Vec<Duration> {
    let mut state = seed;
    (0..n)
        .map(|i| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64;
            span.mul_f64(1.2 * (i as f64 + u) / n as f64)
        })
        .collect()
}

/// Starts `c`, sends it SIGKILL after `delay` (if it is still running), and waits for it.
fn kill_after(mut c: Command, delay: Duration) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // Child::kill sends SIGKILL; it fails only when the child has already been reaped.
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn killed(status: &ExitStatus) -> bool {
    status.signal() == Some(libc::SIGKILL)
}

/// Whether strace can trace a child here (it is missing on some machines, and ptrace is
/// refused in some containers). Panics when `NF_REQUIRE_STRACE=1` says it can.
fn strace_works() -> bool {
    let ok = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("NF_REQUIRE_STRACE").is_ok_and(|v| v == "1") {
            panic!("NF_REQUIRE_STRACE=1 but `strace -f -o /dev/null true` failed");
        }
        eprintln!(
            "skipping the syscall kill points: strace cannot trace here (only the delay kills run)"
        );
    }
    ok
}

/// `c` run under strace with `args` (what to trace and inject).
fn under_strace(c: &Command, args: &[String]) -> Command {
    let mut s = Command::new("strace");
    // Not --seccomp-bpf: strace 6.1 then skips the injections.
    s.args(["-f", "-qq"])
        .args(args)
        .arg("--")
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    s
}

/// `-P PATH` for each path: strace then counts and injects only calls on those files.
fn path_filter(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .flat_map(|p| ["-P".to_string(), p.display().to_string()])
        .collect()
}

/// Runs `c` to the end under strace, counting the calls of each of `syscalls` (on `paths`,
/// when given) it makes: the points to kill it at. Returns its output and the points.
fn traced_run(
    c: &Command,
    syscalls: &[&str],
    paths: &[PathBuf],
    trace: &Path,
) -> (Output, Vec<(String, usize)>) {
    let mut args = vec![
        "-o".to_string(),
        trace.display().to_string(),
        "-e".into(),
        format!("trace={}", syscalls.join(",")),
    ];
    args.extend(path_filter(paths));
    let o = under_strace(c, &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let text = std::fs::read_to_string(trace).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines() {
        // `PID name(args) = result`; a call another thread interrupted starts the same way.
        let call = line.split_whitespace().nth(1).unwrap_or("");
        if let Some(name) = syscalls.iter().find(|s| call.starts_with(&format!("{s}("))) {
            *counts.entry(name).or_default() += 1;
        }
    }
    let points = counts
        .into_iter()
        .flat_map(|(name, n)| (1..=n).map(move |k| (name.to_string(), k)))
        .collect();
    (o, points)
}

/// `c` killed on entry to the `k`-th call of `syscall` (on `paths`, when given), before the
/// call takes effect; it runs to the end when it makes fewer calls this time.
fn kill_at_syscall(c: &Command, syscall: &str, k: usize, paths: &[PathBuf]) -> Output {
    let mut args = vec![
        "-o".to_string(),
        "/dev/null".into(),
        "-e".into(),
        format!("trace={syscall}"),
        "-e".into(),
        format!("inject={syscall}:signal=KILL:when={k}"),
    ];
    args.extend(path_filter(paths));
    under_strace(c, &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Replacing an artifact

/// A command that replaces one artifact, in two variants made from different input.
struct Replacement<'a> {
    /// The file or folder the command writes.
    artifact: PathBuf,
    /// The command making variant 0 or 1.
    command: &'a dyn Fn(usize) -> Command,
    /// What the CLI (or a plain listing) shows beside the artifact: must be its name only.
    listed: &'a dyn Fn() -> Vec<String>,
}

/// Where a crash test stands: the artifact's variant and bytes now, and what a complete run
/// of each variant makes.
struct Tracker {
    variant: usize,
    now: Snapshot,
    complete: [Snapshot; 2],
    /// How long a complete run of variant 1 took (the span of the delay kills).
    duration: Duration,
    kills: usize,
    finished: usize,
}

impl Tracker {
    /// Makes variant 1 then variant 0 completely: variant 0 is the previous artifact every
    /// kill starts from, and each variant's snapshot is what a complete run leaves.
    fn start(r: &Replacement) -> Tracker {
        let duration = run_ok(&mut (r.command)(1));
        let one = snapshot(&r.artifact);
        run_ok(&mut (r.command)(0));
        let zero = snapshot(&r.artifact);
        assert!(
            !zero.raw.is_empty(),
            "{} was not made",
            r.artifact.display()
        );
        assert_ne!(zero.norm, one.norm, "the two inputs make the same artifact");
        Tracker {
            variant: 0,
            now: zero.clone(),
            complete: [zero, one],
            duration,
            kills: 0,
            finished: 0,
        }
    }

    /// Checks the artifact after a run that ended with `o` (killed at `how`): byte-identical
    /// to the one before, or equal to a complete run of the other variant; listed alone.
    fn check(&mut self, r: &Replacement, o: &Output, how: &str) {
        let was_killed = killed(&o.status);
        assert!(
            was_killed || o.status.success(),
            "{how}: the command failed: {}",
            stderr(o)
        );
        let other = 1 - self.variant;
        let snap = snapshot(&r.artifact);
        if was_killed && snap.raw == self.now.raw {
            self.kills += 1;
        } else if snap.norm == self.complete[other].norm {
            self.kills += usize::from(was_killed);
            self.finished += usize::from(!was_killed);
            self.variant = other;
            self.now = snap;
        } else {
            panic!(
                "{how}: {} is neither the previous artifact ({}) nor a complete new one ({})",
                r.artifact.display(),
                differences(&snap.raw, &self.now.raw).join(", "),
                differences(&snap.norm, &self.complete[other].norm).join(", ")
            );
        }
        let name = r.artifact.file_name().unwrap().to_string_lossy();
        assert_eq!((r.listed)(), [name.as_ref()], "{how}: listed beside it");
    }
}

/// Kills `r`'s command at seeded delays and at every rename and fsync (where strace
/// works), checking the artifact after each; then runs it to completion once more.
fn crash_replacements(r: &Replacement, seed: u64, scratch: &Path) {
    let t0 = Instant::now();
    let mut t = Tracker::start(r);
    for (i, delay) in delays(seed, DELAY_KILLS, t.duration)
        .into_iter()
        .enumerate()
    {
        let o = kill_after((r.command)(1 - t.variant), delay);
        t.check(r, &o, &format!("kill {i} after {delay:?}"));
    }
    let mut points = 0;
    if strace_works() {
        let trace = scratch.join("trace.txt");
        let c = (r.command)(1 - t.variant);
        let (o, all) = traced_run(&c, REPLACE_SYSCALLS, &[], &trace);
        t.check(r, &o, "the traced run");
        points = all.len();
        for (syscall, k) in all {
            let o = kill_at_syscall(&(r.command)(1 - t.variant), &syscall, k, &[]);
            t.check(r, &o, &format!("kill at {syscall} #{k}"));
        }
    }
    let before = t.variant;
    let o = (r.command)(1 - t.variant).output().unwrap();
    t.check(r, &o, "the run after the kills");
    assert_ne!(
        t.variant, before,
        "the last run did not replace the artifact"
    );
    assert!(t.kills > 0, "no run was killed");
    eprintln!(
        "{}: {} delay kills over {:?} and {points} syscall points: {} killed, {} finished; {:.1} s",
        r.artifact.display(),
        DELAY_KILLS,
        t.duration,
        t.kills,
        t.finished,
        t0.elapsed().as_secs_f64()
    );
}

/// The names of the non-hidden entries of `dir`, sorted.
fn visible_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// The folder names of the `--json` events of `args` with a `path` (datasets, models).
fn listed_paths(home: &Path, args: &[&str]) -> Vec<String> {
    let o = bin(home).arg("--json").args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .map(|path| {
            Path::new(&path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn killed_ingest_force_leaves_the_old_dataset_or_the_new_one() {
    let assets = require_assets!();
    let home = temp_dir("crash-ingest");
    let docs = [
        stories_docs(&assets, &temp_dir("crash-ingest-a"), 0, 12_000),
        stories_docs(&assets, &temp_dir("crash-ingest-b"), 12_000, 16_000),
    ];
    let command = |v: usize| {
        let mut c = bin(&home);
        c.args(["ingest", p(&docs[v]), "--name", "notes", "--force"])
            .args(["--seq-len", "64"])
            .args(stories_model(&assets));
        c
    };
    let listed = || listed_paths(&home, &["datasets", "list"]);
    let r = Replacement {
        artifact: home.join("datasets/notes"),
        command: &command,
        listed: &listed,
    };
    crash_replacements(&r, 1, &temp_dir("crash-ingest-scratch"));
    let o = bin(&home)
        .args(["datasets", "show", "notes"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn killed_export_force_leaves_the_old_export_or_the_new_one() {
    let assets = require_assets!();
    let dir = temp_dir("crash-export");
    let out = dir.join("out");
    let model = assets.join("llama2c/stories260K.bin");
    let tok = assets.join("llama2c/tok512.bin");
    // A second source for the HF folder: the model rounded to f16, so its weights differ.
    let f16 = dir.join("f16.gguf");
    run_ok(
        bin(&dir)
            .args(["export", p(&model), "--tokenizer", p(&tok)])
            .args(["--format", "gguf", "--quant", "f16", "--out", p(&f16)]),
    );
    let listed = || visible_entries(&out);

    // A file: the same model as f16 or f32.
    let gguf = out.join("m.gguf");
    let command = |v: usize| {
        let mut c = bin(&dir);
        c.args([
            "export",
            p(&model),
            "--tokenizer",
            p(&tok),
            "--format",
            "gguf",
        ])
        .args(["--quant", ["f16", "f32"][v], "--out", p(&gguf), "--force"]);
        c
    };
    let r = Replacement {
        artifact: gguf.clone(),
        command: &command,
        listed: &listed,
    };
    crash_replacements(&r, 2, &temp_dir("crash-export-scratch"));
    // The export reads back as a model.
    let o = bin(&dir)
        .args([
            "generate",
            "--model",
            p(&gguf),
            "-n",
            "4",
            "--prompt",
            "Once",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(&gguf).unwrap();

    // A folder: the HF layout of either source.
    let hf = out.join("hf");
    let command = |v: usize| {
        let mut c = bin(&dir);
        match v {
            0 => c.args(["export", p(&model), "--tokenizer", p(&tok)]),
            _ => c.args(["export", p(&f16)]),
        };
        c.args(["--format", "hf", "--out", p(&hf), "--force"]);
        c
    };
    let r = Replacement {
        artifact: hf.clone(),
        command: &command,
        listed: &listed,
    };
    crash_replacements(&r, 3, &temp_dir("crash-export-hf-scratch"));
    let o = bin(&dir)
        .args(["generate", "--model", p(&hf), "-n", "4", "--prompt", "Once"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn killed_models_pull_leaves_the_old_model_or_the_new_one() {
    let assets = require_assets!();
    let home = temp_dir("crash-pull");
    // Two hubs serving `org/tiny` with different READMEs: two versions of the repository.
    let hubs: Vec<FakeHub> = (0..2)
        .map(|v| {
            let mut files = stories_files(&assets);
            files.retain(|(name, _)| name != "README.md");
            files.push(("README.md".into(), format!("# tiny, version {v}\n").into()));
            FakeHub::start(files)
        })
        .collect();
    let command = |v: usize| {
        let mut c = bin(&home);
        c.args(["models", "pull", "org/tiny", "--endpoint", &hubs[v].url])
            .args(["--include", "*", "--name", "tiny", "--force"]);
        c
    };
    let listed = || listed_paths(&home, &["models", "list"]);
    let r = Replacement {
        artifact: home.join("models/tiny"),
        command: &command,
        listed: &listed,
    };
    crash_replacements(&r, 4, &temp_dir("crash-pull-scratch"));
    let o = bin(&home)
        .args(["generate", "--model", "tiny", "-n", "4", "--prompt", "Once"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// Appending to the audit log

/// The length of `bytes` up to and including its last newline.
fn complete_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

/// Whether some `audit/torn-*.bin` holds exactly `torn`.
fn torn_bytes_kept(home: &Path, torn: &[u8]) -> bool {
    std::fs::read_dir(home.join("audit")).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name().to_string_lossy().starts_with("torn-")
            && std::fs::read(e.path()).unwrap() == torn
    })
}

/// Checks the log after a killed (or finished) append, given its bytes before: every
/// complete entry before is still there byte for byte, only whole entries were added, a
/// torn tail there before is either still there or kept in `audit/torn-*.bin`, and `audit
/// verify` passes (or, with the torn tail still there, reports exactly that).
fn check_log(home: &Path, before: &[u8], o: &Output, how: &str) -> Vec<u8> {
    assert!(
        killed(&o.status) || o.status.success(),
        "{how}: the command failed: {}",
        stderr(o)
    );
    let now = std::fs::read(home.join("audit/audit.ndjson")).unwrap();
    let whole = complete_len(before);
    let (kept, torn) = before.split_at(whole);
    assert!(now.starts_with(kept), "{how}: earlier entries changed");
    let added = &now[whole..];
    let torn_still_there = !torn.is_empty() && added == torn;
    assert!(
        killed(&o.status) || !torn_still_there,
        "{how}: a finished run left the torn tail"
    );
    if !torn_still_there {
        assert_eq!(complete_len(added), added.len(), "{how}: half an entry");
        assert!(
            torn.is_empty() || torn_bytes_kept(home, torn),
            "{how}: the torn tail was dropped without being kept"
        );
    }
    let v = bin(home).args(["audit", "verify"]).output().unwrap();
    if torn_still_there {
        assert!(stderr(&v).contains("torn tail"), "{how}: {}", stderr(&v));
    } else {
        assert!(v.status.success(), "{how}: {}", stderr(&v));
    }
    now
}

#[test]
fn killed_audit_appends_keep_the_chain_whole() {
    let assets = require_assets!();
    let home = temp_dir("crash-audit");
    let scratch = temp_dir("crash-audit-scratch");
    let log = home.join("audit/audit.ndjson");
    // A signed log: appends then also sign, as on a machine with a device key.
    run_ok(bin(&home).args(["audit", "keygen"]));
    let command = || {
        let mut c = bin(&home);
        c.args(["generate", "-n", "48", "--prompt", "Once upon a time"])
            .args(stories_model(&assets));
        c
    };
    let t0 = Instant::now();
    let duration = run_ok(&mut command());
    let mut before = std::fs::read(&log).unwrap();
    let (mut kills, mut points) = (0, 0);
    for (i, delay) in delays(5, DELAY_KILLS, duration).into_iter().enumerate() {
        let o = kill_after(command(), delay);
        kills += usize::from(killed(&o.status));
        before = check_log(&home, &before, &o, &format!("kill {i} after {delay:?}"));
    }
    if strace_works() {
        // Kill points: each write, truncation, fsync and rename on the log and its head,
        // first with a whole log, then with a torn tail to recover (an earlier crash's).
        let files = [
            log.clone(),
            home.join("audit/audit.head"),
            home.join("audit/.audit.head.tmp"),
        ];
        let syscalls = [
            "write",
            "ftruncate",
            "fsync",
            "fdatasync",
            "rename",
            "renameat2",
        ];
        let add_torn_tail = |tag: &str| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            std::io::Write::write_all(&mut f, format!("{{\"seq\":{tag}").as_bytes()).unwrap();
        };
        for torn in [false, true] {
            if torn {
                add_torn_tail("0");
            }
            let before_trace = std::fs::read(&log).unwrap();
            let (o, at) = traced_run(&command(), &syscalls, &files, &scratch.join("trace"));
            points += at.len();
            check_log(&home, &before_trace, &o, "the traced run");
            for (syscall, k) in at {
                if torn && std::fs::read(&log).unwrap().ends_with(b"\n") {
                    add_torn_tail(&format!("{syscall}{k}"));
                }
                let before_kill = std::fs::read(&log).unwrap();
                let o = kill_at_syscall(&command(), &syscall, k, &files);
                kills += usize::from(killed(&o.status));
                check_log(&home, &before_kill, &o, &format!("kill at {syscall} #{k}"));
            }
        }
        before = std::fs::read(&log).unwrap();
    }
    // The next run appends and the whole chain verifies.
    let o = command().output().unwrap();
    check_log(&home, &before, &o, "the run after the kills");
    let v = bin(&home).args(["audit", "verify"]).output().unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(kills > 0, "no run was killed");
    eprintln!(
        "audit: {DELAY_KILLS} delay kills over {duration:?} and {points} syscall points: {kills} killed; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// A full disk

/// Whether a tmpfs can be mounted in a new user and mount namespace here (it cannot in
/// many containers and where unprivileged user namespaces are off). Panics when
/// `NF_REQUIRE_USERNS=1` says it can.
fn small_tmpfs_works(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let script = "mount -t tmpfs -o size=64k tmpfs \"$1\"";
    let ok = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh", p(&probe)])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("NF_REQUIRE_USERNS").is_ok_and(|v| v == "1") {
            panic!("NF_REQUIRE_USERNS=1 but a tmpfs cannot be mounted under `unshare -rm`");
        }
        eprintln!(
            "skipping: cannot mount a tmpfs in a user and mount namespace here (`unshare -rm`)"
        );
    }
    ok
}

/// Runs `script` with `sh` in a new user and mount namespace after mounting a tmpfs of
/// `size_k` KiB on `$MNT`; `$NF` is the binary, `$RES` a folder outside the tmpfs for the
/// results (the mount disappears with the namespace), and `env` adds more variables.
/// Returns the files the script left in `$RES`, by name.
fn on_small_tmpfs(
    size_k: u32,
    dir: &Path,
    env: &[(&str, &Path)],
    script: &str,
) -> BTreeMap<String, String> {
    let (mnt, res) = (dir.join("mnt"), dir.join("res"));
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&res).unwrap();
    let full =
        format!("set -u\nmount -t tmpfs -o size={size_k}k tmpfs \"$MNT\" || exit 97\n{script}\n");
    let mut c = Command::new("unshare");
    c.args(["-rm", "sh", "-c", &full])
        .env("MNT", &mnt)
        .env("RES", &res)
        .env("NF", NF)
        .env("NEURALFORGE_HOME", dir.join("home"));
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "the namespace script failed: {}",
        stderr(&o)
    );
    std::fs::read_dir(&res)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), text))
        })
        .collect()
}

/// A command that ran out of space: it failed with one `error:` line naming `path` and the
/// cause, a hint, and no panic.
fn assert_clear_disk_error(res: &BTreeMap<String, String>, path: &Path) {
    let (rc, err) = (res["rc"].trim(), &res["stderr"]);
    assert_ne!(rc, "0", "the command succeeded on a full disk: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("No space left on device") && errors[0].contains(p(path)),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("hint: ") && l.contains("disk space")),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn ingest_on_a_full_disk_fails_clearly_and_keeps_the_old_dataset() {
    let assets = require_assets!();
    let dir = temp_dir("full-ingest");
    if !small_tmpfs_works(&dir) {
        return;
    }
    // The previous dataset, made on a normal disk and copied onto the tmpfs; the new input
    // tokenizes to several times more than the tmpfs has left.
    let small = stories_docs(&assets, &temp_dir("full-ingest-small"), 0, 12_000);
    let big = temp_dir("full-ingest-big");
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    std::fs::write(big.join("big.txt"), text.repeat(8)).unwrap();
    let prep = dir.join("prep");
    let ingest = |home: &Path, docs: &Path| {
        let mut c = bin(home);
        c.args(["ingest", p(docs), "--name", "notes", "--force"])
            .args(stories_model(&assets));
        c
    };
    run_ok(&mut ingest(&prep, &small));
    let reference = dir.join("reference");
    run_ok(&mut ingest(&reference, &big));
    let script = r#"
export NEURALFORGE_HOME="$MNT/home"
mkdir "$MNT/home" && cp -a "$PREP/." "$MNT/home/"
ingest() { "$NF" ingest "$BIG" --name notes --force --model "$M" --tokenizer "$T"; }
ingest >/dev/null 2>"$RES/stderr"; echo $? >"$RES/rc"
cp -a "$MNT/home/datasets" "$RES/after"
ls -A "$MNT/home/datasets" >"$RES/ls"
mount -o remount,size=64m "$MNT"
ingest >/dev/null 2>"$RES/stderr2"; echo $? >"$RES/rc2"
"$NF" audit verify >"$RES/verify" 2>&1; echo $? >"$RES/rc3"
cp -a "$MNT/home/datasets/notes" "$RES/new"
"#;
    let res = on_small_tmpfs(
        300,
        &dir,
        &[
            ("PREP", &prep),
            ("BIG", &big),
            ("M", &assets.join("llama2c/stories260K.bin")),
            ("T", &assets.join("llama2c/tok512.bin")),
        ],
        script,
    );
    assert_clear_disk_error(&res, &dir.join("mnt/home/datasets"));
    let previous = snapshot(&prep.join("datasets/notes"));
    assert_eq!(snapshot(&dir.join("res/after/notes")).raw, previous.raw);
    assert_eq!(res["ls"].trim(), "notes", "left behind on the full disk");
    // With space again, the same command succeeds, and the audit log recorded both.
    assert_eq!(res["rc2"].trim(), "0", "{}", res["stderr2"]);
    assert_eq!(res["rc3"].trim(), "0", "{}", res["verify"]);
    assert_eq!(
        snapshot(&dir.join("res/new")).norm,
        snapshot(&reference.join("datasets/notes")).norm
    );
}

#[test]
fn export_on_a_full_disk_fails_clearly_and_keeps_the_old_export() {
    let assets = require_assets!();
    let dir = temp_dir("full-export");
    if !small_tmpfs_works(&dir) {
        return;
    }
    let (model, tok) = (
        assets.join("llama2c/stories260K.bin"),
        assets.join("llama2c/tok512.bin"),
    );
    // The previous export is f16 (half a MiB); the new one is f32 (1 MiB), which does not
    // fit beside it.
    let export = |quant: &str, out: &Path| {
        let mut c = bin(&dir);
        c.args([
            "export",
            p(&model),
            "--tokenizer",
            p(&tok),
            "--format",
            "gguf",
        ])
        .args(["--quant", quant, "--out", p(out), "--force"]);
        c
    };
    let prep = dir.join("prep.gguf");
    run_ok(&mut export("f16", &prep));
    let reference = dir.join("reference.gguf");
    run_ok(&mut export("f32", &reference));
    let script = r#"
mkdir "$MNT/out" && cp "$PREP" "$MNT/out/m.gguf"
export_f32() { "$NF" --threads 1 export "$M" --tokenizer "$T" --format gguf --quant f32 --out "$MNT/out/m.gguf" --force; }
export_f32 >/dev/null 2>"$RES/stderr"; echo $? >"$RES/rc"
cp "$MNT/out/m.gguf" "$RES/m.gguf"
ls -A "$MNT/out" >"$RES/ls"
mount -o remount,size=64m "$MNT"
export_f32 >/dev/null 2>"$RES/stderr2"; echo $? >"$RES/rc2"
cp "$MNT/out/m.gguf" "$RES/new.gguf"
"#;
    let res = on_small_tmpfs(
        1024,
        &dir,
        &[("PREP", &prep), ("M", &model), ("T", &tok)],
        script,
    );
    assert_clear_disk_error(&res, &dir.join("mnt/out"));
    // Only the previous export, unchanged: no staging file left to fill the disk.
    assert_eq!(res["ls"].trim(), "m.gguf", "left behind on the full disk");
    assert_eq!(
        nf_audit::sha256_file(&dir.join("res/m.gguf")).unwrap(),
        nf_audit::sha256_file(&prep).unwrap()
    );
    assert_eq!(res["rc2"].trim(), "0", "{}", res["stderr2"]);
    assert_eq!(
        nf_audit::sha256_file(&dir.join("res/new.gguf")).unwrap(),
        nf_audit::sha256_file(&reference).unwrap()
    );
}

#[test]
fn a_checkpoint_on_a_full_disk_fails_clearly_and_the_run_resumes() {
    let assets = require_assets!();
    let dir = temp_dir("full-ckpt");
    if !small_tmpfs_works(&dir) {
        return;
    }
    // Full fine-tuning of stories260K: a checkpoint is 3 MiB (weights and AdamW moments),
    // so on a 4.5 MiB tmpfs step 2's fits and step 4's does not.
    let data = dir.join("stories.txt");
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    std::fs::write(&data, &text[..8_000]).unwrap();
    let train = |out: &Path| {
        let mut c = bin(&dir);
        c.args(["train", "--data", p(&data), "--full", "--lr", "1e-3"])
            .args(["--steps", "4", "--save-every", "2", "--eval-every", "0"])
            .args(["--batch-size", "2", "--seq-len", "32", "--warmup", "1"])
            .args(["--out", p(out)])
            .args(stories_model(&assets));
        c
    };
    // The same run on a normal disk: what step 2's checkpoint and the final model must be.
    let reference = dir.join("reference");
    run_ok(&mut train(&reference));
    let run = dir.join("mnt/run");
    let args: Vec<String> = train(&run)
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let script = format!(
        r#"
"$NF" {} >/dev/null 2>"$RES/stderr"; echo $? >"$RES/rc"
cp -a "$MNT/run/checkpoints" "$RES/after"
mount -o remount,size=64m "$MNT"
"$NF" --threads 1 train --resume "$MNT/run" >/dev/null 2>"$RES/stderr2"; echo $? >"$RES/rc2"
cp -a "$MNT/run/model" "$RES/model"
"#,
        args.join(" ")
    );
    let res = on_small_tmpfs(4600, &dir, &[], &script);
    assert_clear_disk_error(&res, &run.join("checkpoints"));
    // Step 2's checkpoint is whole and the failed step 4 left nothing.
    assert_eq!(
        snapshot(&dir.join("res/after")).raw,
        snapshot(&reference.join("checkpoints"))
            .raw
            .into_iter()
            .filter(|(k, _)| !k.starts_with("step-4"))
            .collect::<BTreeMap<_, _>>()
    );
    // With space again the run resumes from it and ends with the reference's weights.
    assert_eq!(res["rc2"].trim(), "0", "{}", res["stderr2"]);
    let weights = "model/model.safetensors";
    assert_eq!(
        safetensors_without_run_dir(&dir.join("res").join(weights)),
        safetensors_without_run_dir(&reference.join(weights))
    );
}

/// A safetensors file's header and tensor bytes, without the `run_dir` its metadata names
/// (the only thing that differs between two runs in different folders).
fn safetensors_without_run_dir(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let run_dir = header["__metadata__"]
        .as_object_mut()
        .and_then(|m| m.remove("run_dir"));
    assert!(
        run_dir.is_some(),
        "{}: no run_dir in {header}",
        path.display()
    );
    (header, bytes[8 + n..].to_vec())
}

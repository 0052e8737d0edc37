//! The log's guarantees: a chain of entries verifies; each kind of tampering is reported at
//! the right entry; torn tails are reported and recovered; concurrent appends (threads and
//! processes) keep one chain; signatures are checked.

use std::path::{Path, PathBuf};

use nf_audit::{
    Artifact, AuditLog, DeviceKey, Entry, Outcome, Problem, Record, read_entries, verify,
};

fn log_path(home: &Path) -> PathBuf {
    home.join("audit/audit.ndjson")
}

fn lines(home: &Path) -> Vec<String> {
    std::fs::read_to_string(log_path(home))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(home: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(log_path(home), s).unwrap();
}

/// A home with `n` entries, like a small session: a document ingested, training started
/// and finished.
fn home_with(n: u64, tag: &str) -> PathBuf {
    let home = nf_testkit::temp_dir(tag);
    let doc = home.join("doc.txt");
    std::fs::write(&doc, "the quick brown fox").unwrap();
    let log = AuditLog::open(&home).unwrap();
    for i in 0..n {
        let r = Record::new(
            if i % 2 == 0 { "ingest" } else { "train" },
            vec!["--name".into(), format!("d{i}")],
        )
        .input(Artifact::file("document", &doc).unwrap())
        .outcome(if i == 2 {
            Outcome::Error("boom".into())
        } else {
            Outcome::Ok
        });
        let e = log.append(r).unwrap();
        assert_eq!(e.seq, i + 1);
    }
    home
}

fn problem(home: &Path) -> Problem {
    let r = verify(home).unwrap();
    r.problem
        .unwrap_or_else(|| panic!("expected a problem, log verified: {} entries", r.entries))
}

#[test]
fn a_chain_verifies_and_entries_are_complete() {
    let home = home_with(6, "intact");
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.entries, 6);
    assert_eq!(r.signed, 0);
    let (entries, torn) = read_entries(&log_path(&home)).unwrap();
    assert_eq!(torn, 0);
    assert_eq!(entries[0].prev, nf_audit::GENESIS);
    // prev is the sha256 of the previous line's exact bytes.
    let ls = lines(&home);
    for i in 1..ls.len() {
        assert_eq!(entries[i].prev, nf_audit::sha256_hex(ls[i - 1].as_bytes()));
    }
    let e = &entries[2];
    assert_eq!(e.result, "error");
    assert_eq!(e.error.as_deref(), Some("boom"));
    assert_eq!(e.command, "ingest");
    assert_eq!(e.args, ["--name", "d2"]);
    assert!(!e.user.is_empty() && !e.host.is_empty());
    assert!(e.time.ends_with('Z') && e.time.len() == 24, "{}", e.time);
    // sha256 of "the quick brown fox"
    assert_eq!(
        e.inputs[0].sha256.as_deref(),
        Some("9ecb36561341d18eb65484e833efea61edc74b84cf5e6ae1b81c63533e25fc8f")
    );
    assert!(e.inputs[0].path.as_deref().unwrap().ends_with("doc.txt"));
    // Times never go backwards.
    assert!(entries.windows(2).all(|w| w[0].time <= w[1].time));
}

#[test]
fn editing_one_byte_is_reported_at_that_entry() {
    let home = home_with(6, "edit");
    let mut ls = lines(&home);
    ls[2] = ls[2].replacen("d2", "d9", 1);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("edited", Some(3)), "{p}");
    assert!(p.to_string().contains("entry 3"), "{p}");
}

#[test]
fn editing_the_newest_entry_is_caught_by_the_head() {
    let home = home_with(4, "edit-last");
    let mut ls = lines(&home);
    ls[3] = ls[3].replacen("\"ok\"", "\"OK\"", 1);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("edited", Some(4)), "{p}");
}

#[test]
fn editing_a_prev_field_blames_the_entry_holding_it() {
    let home = home_with(5, "edit-prev");
    let mut ls = lines(&home);
    let (entries, _) = read_entries(&log_path(&home)).unwrap();
    ls[3] = ls[3].replacen(&entries[3].prev, &"f".repeat(64), 1);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("edited", Some(4)), "{p}");
}

#[test]
fn a_line_made_invalid_is_reported() {
    let home = home_with(4, "garbage");
    let mut ls = lines(&home);
    ls[1].insert(5, '#');
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("edited", Some(2)), "{p}");
}

#[test]
fn deleting_a_line_is_reported() {
    let home = home_with(6, "delete");
    let mut ls = lines(&home);
    ls.remove(3);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("deleted", Some(4)), "{p}");
    // The first line too.
    let home = home_with(3, "delete-first");
    let mut ls = lines(&home);
    ls.remove(0);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("deleted", Some(1)), "{p}");
}

#[test]
fn swapping_two_lines_is_reported() {
    let home = home_with(6, "swap");
    let mut ls = lines(&home);
    ls.swap(2, 3);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!(p.kind(), "reordered", "{p}");
    assert_eq!(
        p,
        Problem::Reordered {
            seq: 4,
            expected: 3,
            line: 3
        }
    );
}

#[test]
fn truncating_whole_entries_is_reported() {
    let home = home_with(6, "truncate");
    let ls = lines(&home);
    write_lines(&home, &ls[..4]);
    let p = problem(&home);
    assert_eq!(
        p,
        Problem::Truncated {
            last_seq: 4,
            head_seq: 6
        }
    );
    assert_eq!(p.seq(), Some(5));
    // Emptying the file is truncation too.
    std::fs::write(log_path(&home), "").unwrap();
    assert_eq!(problem(&home).kind(), "truncated");
}

#[test]
fn a_torn_tail_is_reported_then_recovered_on_the_record() {
    let home = home_with(3, "torn");
    // A crash mid-write: half a line after the last newline.
    let mut bytes = std::fs::read(log_path(&home)).unwrap();
    bytes.extend_from_slice(b"{\"seq\":4,\"time\":\"2026-");
    std::fs::write(log_path(&home), &bytes).unwrap();
    let p = problem(&home);
    assert_eq!(
        p,
        Problem::TornTail {
            after_seq: 3,
            bytes: 22
        }
    );
    // show/export still read the complete entries.
    let (entries, torn) = read_entries(&log_path(&home)).unwrap();
    assert_eq!((entries.len(), torn), (3, 22));
    // The next append repairs it and says so in the chain.
    let log = AuditLog::open(&home).unwrap();
    let e = log
        .append(Record::new("train", vec!["--steps".into(), "2".into()]))
        .unwrap();
    assert_eq!(e.seq, 5);
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.entries, 5);
    let (entries, _) = read_entries(&log_path(&home)).unwrap();
    let rec = &entries[3];
    assert_eq!(rec.command, "audit.recover");
    let d = rec.details.as_ref().unwrap();
    assert_eq!(d["torn_bytes"], 22);
    let moved = PathBuf::from(d["moved_to"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        b"{\"seq\":4,\"time\":\"2026-"
    );
    assert_eq!(
        d["torn_sha256"],
        nf_audit::sha256_hex(b"{\"seq\":4,\"time\":\"2026-")
    );
}

#[test]
fn a_crash_between_entry_and_head_is_only_a_note() {
    let home = home_with(3, "head-lag");
    let head = std::fs::read_to_string(home.join("audit/audit.head")).unwrap();
    AuditLog::open(&home)
        .unwrap()
        .append(Record::new("train", vec![]))
        .unwrap();
    std::fs::write(home.join("audit/audit.head"), head).unwrap();
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert!(
        r.notes.iter().any(|n| n.contains("one entry behind")),
        "{:?}",
        r.notes
    );
}

#[test]
fn threads_appending_at_once_keep_one_chain() {
    let home = nf_testkit::temp_dir("threads");
    std::thread::scope(|s| {
        for t in 0..4 {
            let home = &home;
            s.spawn(move || {
                for i in 0..25 {
                    // Each append opens the log anew, as separate commands do.
                    AuditLog::open(home)
                        .unwrap()
                        .append(Record::new("t", vec![format!("{t}-{i}")]))
                        .unwrap();
                }
            });
        }
    });
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.entries, 100);
}

/// Verifying while appends run never sees one half done (an entry without its head, or a
/// line being written): verify reads under the log's shared lock.
#[test]
fn verifying_during_appends_sees_whole_states() {
    let home = nf_testkit::temp_dir("verify-during");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..200 {
                let log = AuditLog::open(&home).unwrap();
                log.append(Record::new("t", vec![format!("{i}"); 20]))
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut checks = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) || checks == 0 {
            let r = verify(&home).unwrap();
            assert!(r.is_intact(), "{:?}", r.problem);
            assert!(
                r.notes.iter().all(|n| !n.contains("behind")),
                "{:?}",
                r.notes
            );
            checks += 1;
        }
    });
}

/// The child side of [`processes_appending_at_once_keep_one_chain`].
#[test]
fn child_appender() {
    let Some(home) = std::env::var_os("NF_AUDIT_CHILD_HOME") else {
        return;
    };
    let tag = std::env::var("NF_AUDIT_CHILD_TAG").unwrap();
    for i in 0..40 {
        AuditLog::open(Path::new(&home))
            .unwrap()
            .append(Record::new("child", vec![format!("{tag}-{i}")]))
            .unwrap();
    }
}

#[test]
fn processes_appending_at_once_keep_one_chain() {
    let home = nf_testkit::temp_dir("procs");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|t| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_appender", "--test-threads", "1"])
                .env("NF_AUDIT_CHILD_HOME", &home)
                .env("NF_AUDIT_CHILD_TAG", t.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.entries, 120);
    let (entries, _) = read_entries(&log_path(&home)).unwrap();
    for t in 0..3 {
        let mine: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.args[0].starts_with(&format!("{t}-")))
            .collect();
        assert_eq!(mine.len(), 40);
    }
}

/// Rewrites the log from `entries` with a freshly computed chain and head, signing each
/// entry with `signer` (None: keep the entry's own key/sig fields as they are).
fn rewrite_chain(home: &Path, entries: &mut [Entry], signer: Option<&DeviceKey>) {
    let mut prev = nf_audit::GENESIS.to_string();
    let mut out = Vec::new();
    for e in entries.iter_mut() {
        e.prev = prev.clone();
        let line = match signer {
            Some(k) => {
                e.key = Some(k.public_hex());
                e.sig = None;
                let mut l = serde_json::to_string(&e).unwrap();
                let sig = k.sign(l.as_bytes());
                l.pop();
                l.push_str(&format!(",\"sig\":\"{sig}\"}}"));
                l
            }
            None => serde_json::to_string(&e).unwrap(),
        };
        prev = nf_audit::sha256_hex(line.as_bytes());
        out.push(line);
    }
    write_lines(home, &out);
    let head = format!(
        "{{\"seq\":{},\"sha256\":\"{prev}\"}}\n",
        entries.last().unwrap().seq
    );
    std::fs::write(home.join("audit/audit.head"), head).unwrap();
}

#[test]
fn signed_entries_verify_and_forgeries_do_not() {
    let home = home_with(2, "sign");
    let key = DeviceKey::generate(&home).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("audit/device.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(matches!(
        DeviceKey::generate(&home),
        Err(nf_audit::AuditError::KeyExists { .. })
    ));
    let log = AuditLog::open(&home).unwrap();
    assert!(log.is_signing());
    log.append(Record::new("audit keygen", vec![]).output(Artifact {
        kind: "key".into(),
        path: None,
        sha256: Some(key.public_hex()),
    }))
    .unwrap();
    for i in 0..3 {
        log.append(Record::new("train", vec![i.to_string()]))
            .unwrap();
    }
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!((r.entries, r.signed), (6, 4));
    let original = std::fs::read(log_path(&home)).unwrap();
    let original_head = std::fs::read(home.join("audit/audit.head")).unwrap();
    let restore = || {
        std::fs::write(log_path(&home), &original).unwrap();
        std::fs::write(home.join("audit/audit.head"), &original_head).unwrap();
    };
    let (entries, _) = read_entries(&log_path(&home)).unwrap();

    // 1. Edit entry 5 and recompute the whole chain, signing with another key.
    let other = DeviceKey::generate(&nf_testkit::temp_dir("other-key")).unwrap();
    let mut forged = entries.clone();
    forged[4].args = vec!["999".into()];
    // Re-sign only entries from 5 on with the other key (as a forger would have to).
    let mut lines_now = Vec::new();
    let mut prev = nf_audit::GENESIS.to_string();
    for (i, e) in forged.iter_mut().enumerate() {
        e.prev = prev.clone();
        let line = if i >= 4 {
            e.key = Some(other.public_hex());
            e.sig = None;
            let mut l = serde_json::to_string(&e).unwrap();
            let sig = other.sign(l.as_bytes());
            l.pop();
            l.push_str(&format!(",\"sig\":\"{sig}\"}}"));
            l
        } else {
            String::from_utf8(original.split(|b| *b == b'\n').nth(i).unwrap().to_vec()).unwrap()
        };
        prev = nf_audit::sha256_hex(line.as_bytes());
        lines_now.push(line);
    }
    write_lines(&home, &lines_now);
    std::fs::write(
        home.join("audit/audit.head"),
        format!("{{\"seq\":6,\"sha256\":\"{prev}\"}}\n"),
    )
    .unwrap();
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("bad_signature", Some(5)), "{p}");
    assert!(p.to_string().contains("not this home's device key"), "{p}");

    // 2. The right key's public half, but a signature that is not its own.
    restore();
    let mut ls = lines(&home);
    let sig = entries[3].sig.clone().unwrap();
    let mut bad = sig.clone();
    bad.replace_range(0..2, if &sig[0..2] == "00" { "11" } else { "00" });
    ls[3] = ls[3].replace(&sig, &bad);
    let mut es: Vec<Entry> = ls
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rewrite_chain(&home, &mut es, None);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("bad_signature", Some(4)), "{p}");
    assert!(p.to_string().contains("does not verify"), "{p}");

    // 3. Signatures stripped after signing began (chain recomputed).
    restore();
    let mut es = entries.clone();
    for e in es.iter_mut().skip(4) {
        e.key = None;
        e.sig = None;
    }
    rewrite_chain(&home, &mut es, None);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("bad_signature", Some(5)), "{p}");

    // 4. Without a chain recomputation an edit of a signed entry is an edit.
    restore();
    let mut ls = lines(&home);
    ls[4] = ls[4].replacen("\"1\"", "\"7\"", 1);
    write_lines(&home, &ls);
    let p = problem(&home);
    assert_eq!((p.kind(), p.seq()), ("edited", Some(5)), "{p}");
    assert!(p.to_string().contains("signature fails too"), "{p}");
}

#[test]
fn export_writes_json_and_csv() {
    let home = home_with(3, "export");
    let mut json = Vec::new();
    let n = nf_audit::export(&home, nf_audit::ExportFormat::Json, None, None, &mut json).unwrap();
    assert_eq!(n, 3);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["verify"]["intact"], true);
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["entries"][2]["error"], "boom");
    let mut csv = Vec::new();
    nf_audit::export(&home, nf_audit::ExportFormat::Csv, None, None, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4);
    assert!(rows[0].starts_with("seq,time,user,host,command"));
    assert!(rows[3].starts_with("3,"));
    assert!(rows[3].contains(",error,boom,"), "{}", rows[3]);
    // A time window.
    let (entries, _) = read_entries(&log_path(&home)).unwrap();
    let later = entries[1].time.clone();
    let mut out = Vec::new();
    let n = nf_audit::export(
        &home,
        nf_audit::ExportFormat::Json,
        Some(&later),
        None,
        &mut out,
    )
    .unwrap();
    // Entries written within one clock tick share a time, so count what the window holds.
    let expected = entries.iter().filter(|e| e.time >= later).count();
    assert!((2..=3).contains(&expected));
    assert_eq!(n, expected);
    let far = nf_audit::parse_time("2100-01-01").unwrap();
    let n = nf_audit::export(
        &home,
        nf_audit::ExportFormat::Csv,
        Some(&far),
        None,
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn tree_hashes_are_stable_and_see_changes() {
    let d = nf_testkit::temp_dir("tree");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("a.txt"), "a").unwrap();
    std::fs::write(d.join("sub/b.txt"), "b").unwrap();
    std::fs::write(d.join(".staging"), "ignored").unwrap();
    let h1 = Artifact::tree("model", &d).unwrap().sha256.unwrap();
    // sha256sum format lines over sorted relative paths.
    let expect = format!(
        "{}  a.txt\n{}  sub/b.txt\n",
        nf_audit::sha256_hex(b"a"),
        nf_audit::sha256_hex(b"b")
    );
    assert_eq!(h1, nf_audit::sha256_hex(expect.as_bytes()));
    std::fs::write(d.join("sub/b.txt"), "c").unwrap();
    assert_ne!(Artifact::tree("model", &d).unwrap().sha256.unwrap(), h1);
}

/// Links: one to a file counts as the file (as in a Hugging Face cache snapshot); one to a
/// folder is not followed, so a link to `..` ends (it used to recurse until the stack
/// overflowed); one to a device is not read.
#[cfg(unix)]
#[test]
fn tree_hashes_follow_file_links_only() {
    use std::os::unix::fs::symlink;
    let d = nf_testkit::temp_dir("tree-links");
    std::fs::create_dir_all(d.join("blobs")).unwrap();
    std::fs::create_dir_all(d.join("snap")).unwrap();
    std::fs::write(d.join("blobs/x"), "weights").unwrap();
    symlink("../blobs/x", d.join("snap/model.bin")).unwrap();
    symlink("..", d.join("snap/up")).unwrap();
    symlink("/dev/zero", d.join("snap/zero")).unwrap();
    let h = Artifact::tree("model", d.join("snap"))
        .unwrap()
        .sha256
        .unwrap();
    let expect = format!("{}  model.bin\n", nf_audit::sha256_hex(b"weights"));
    assert_eq!(h, nf_audit::sha256_hex(expect.as_bytes()));
}

/// Cutting entries off the end and deleting the head used to pass as intact: a missing head
/// while more than one entry exists now fails (one entry and no head is what a crash during
/// the very first append leaves, and stays a note).
#[test]
fn cutting_the_end_and_deleting_the_head_is_caught() {
    let home = home_with(5, "cut-and-unhead");
    let ls = lines(&home);
    write_lines(&home, &ls[..3]);
    std::fs::remove_file(home.join("audit/audit.head")).unwrap();
    let p = problem(&home);
    assert_eq!(p.kind(), "head", "{p}");
    assert!(p.to_string().contains("missing"), "{p}");

    let home = home_with(1, "first-append-crash");
    std::fs::remove_file(home.join("audit/audit.head")).unwrap();
    let r = verify(&home).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
}

/// An anchor kept elsewhere (entry seq and its sha256) holds while entries are appended,
/// and fails once the anchored entry is rewritten or cut off, even when the rest of the log
/// (head included) was rebuilt to be self-consistent.
#[test]
fn an_anchor_catches_a_rewritten_log() {
    let home = home_with(4, "anchor");
    let r = verify(&home).unwrap();
    let (seq, hash) = (r.entries, r.last_hash.clone().unwrap());
    let mut later = verify(&home).unwrap();
    later.check_anchor(seq, &hash);
    assert!(later.is_intact());
    // A consistent log that is not the anchored one: a fresh home with other entries.
    let other = home_with(6, "anchor-other");
    let mut r = verify(&other).unwrap();
    assert!(r.is_intact());
    r.check_anchor(seq, &hash);
    assert_eq!(r.problem.as_ref().map(Problem::kind), Some("anchor"));
    // Fewer entries than the anchor names.
    let mut r = verify(&home_with(2, "anchor-short")).unwrap();
    r.check_anchor(seq, &hash);
    assert!(
        r.problem
            .unwrap()
            .to_string()
            .contains("fewer than the anchored")
    );
    // A key held elsewhere: no key here, one expected.
    let mut r = verify(&home).unwrap();
    r.check_key("ab".repeat(32).as_str());
    assert_eq!(r.problem.as_ref().map(Problem::kind), Some("anchor"));
}

//! The embedded store: the conformance suite, reopening, crash recovery and verify.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ingest::store::conformance::{self, event};
use ingest::store::fault::CrashingFs;
use ingest::store::{AppendRequest, EmbeddedStore, EventStore, ExpectedRevision, StoreOptions, verify_dir};

fn small_segments() -> StoreOptions {
    StoreOptions { segment_bytes_max: 4096, ..StoreOptions::default() }
}

/// The shared suite, with default segments and with tiny ones so that rollover is exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    for options in [StoreOptions::default(), small_segments()] {
        let root = tempfile::tempdir().expect("tempdir");
        let n = AtomicUsize::new(0);
        conformance::run_all(|| {
            let dir = root.path().join(n.fetch_add(1, Ordering::SeqCst).to_string());
            EmbeddedStore::open_with(dir, options.clone()).expect("open")
        })
        .await;
    }
}

async fn fill(store: &EmbeddedStore, from: u64, to: u64) {
    for i in from..to {
        store
            .append(&format!("s{}", i % 5), ExpectedRevision::Any, vec![event(&format!("k{i}"), i)])
            .await
            .expect("append");
    }
}

/// Everything appended is there after reopening, with the same head hash, across segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_every_event_and_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (before, hash) = {
        let store = EmbeddedStore::open_with(dir.path(), small_segments()).expect("open");
        fill(&store, 0, 200).await;
        (store.read_all(0, usize::MAX).await.expect("read"), store.head_hash())
    };
    assert!(fs::read_dir(dir.path()).expect("dir").count() > 3, "small segments roll over");
    let store = EmbeddedStore::open_with(dir.path(), small_segments()).expect("reopen");
    assert_eq!(store.open_report().truncated_bytes, 0);
    assert_eq!(store.read_all(0, usize::MAX).await.expect("read"), before);
    assert_eq!(store.head_hash(), hash);
    // Streams and ids were rebuilt: revisions continue and retries are recognised.
    assert_eq!(store.stream_revision("s0").await.expect("revision"), Some(39));
    let retry = store.append("s1", ExpectedRevision::Any, vec![event("k1", 1)]).await.expect("retry");
    assert!(retry.duplicate);
    fill(&store, 200, 210).await;
    drop(store);
    let report = verify_dir(dir.path()).expect("verify");
    assert_eq!(report.events, 210);
}

/// A second process cannot open the same store for writing.
#[test]
fn a_store_is_opened_by_one_writer_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = EmbeddedStore::open(dir.path()).expect("open");
    assert!(matches!(EmbeddedStore::open(dir.path()), Err(ingest::store::OpenError::Locked(_))));
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Crash at every write, torn at several points: every acknowledged event survives, nothing
/// torn is returned, the chain verifies, and the store takes appends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_any_write_loses_nothing_acknowledged() {
    for crash_at in 0..24u64 {
        for torn in [0usize, 1, 63, 64, 100, 10_000] {
            let dir = tempfile::tempdir().expect("tempdir");
            let fs_layer = CrashingFs::new(crash_at, torn);
            let options =
                StoreOptions { segment_bytes_max: 2048, fs: Arc::new(fs_layer.clone()), ..StoreOptions::default() };
            let mut acked = Vec::new();
            match EmbeddedStore::open_with(dir.path(), options) {
                Err(_) => assert!(fs_layer.crashed(), "open fails only from the injected crash"),
                Ok(store) => {
                    for i in 0..40u64 {
                        // Two requests a commit, so frames hold more than one record.
                        let reqs = (0..2)
                            .map(|j| AppendRequest {
                                stream: format!("s{}", (i + j) % 3),
                                expected: ExpectedRevision::Any,
                                events: vec![event(&format!("k{i}-{j}"), i)],
                            })
                            .collect();
                        for a in store.append_many(reqs).await.into_iter().flatten() {
                            acked.push(a.first_position);
                        }
                    }
                }
            }
            let store =
                EmbeddedStore::open(dir.path()).unwrap_or_else(|e| panic!("recover crash@{crash_at} torn {torn}: {e}"));
            let log = store.read_all(0, usize::MAX).await.expect("read");
            for p in &acked {
                assert!((*p as usize) < log.len(), "acknowledged position {p} lost (crash@{crash_at} torn {torn})");
            }
            assert!(log.iter().enumerate().all(|(i, e)| e.position == i as u64));
            // The store takes new appends after recovery, and the result verifies.
            store.append("after", ExpectedRevision::Any, vec![event("after", 0)]).await.expect("append after crash");
            drop(store);
            let report = verify_dir(dir.path()).unwrap_or_else(|e| panic!("verify crash@{crash_at} torn {torn}: {e}"));
            assert_eq!(report.events, log.len() as u64 + 1);
        }
    }
}

/// Flipping any byte of any segment is found by verify, and open refuses damage before the
/// last frame while it cuts a damaged last frame (never acknowledged data in practice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_is_detected_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open_with(dir.path(), small_segments()).expect("open");
        fill(&store, 0, 40).await;
    }
    verify_dir(dir.path()).expect("clean log verifies");
    for path in segment_files(dir.path()) {
        let original = fs::read(&path).expect("read");
        for i in 0..original.len() {
            let mut bad = original.clone();
            bad[i] ^= 0x20;
            fs::write(&path, &bad).expect("write");
            assert!(verify_dir(dir.path()).is_err(), "flip at {}:{i} not detected", path.display());
        }
        fs::write(&path, &original).expect("restore");
    }
    verify_dir(dir.path()).expect("restored log verifies");
}

/// Damage in the middle is refused with the segment and offset named; a torn tail is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_refuses_a_corrupt_middle_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        fill(&store, 0, 10).await;
    }
    let path = segment_files(dir.path()).remove(0);
    let original = fs::read(&path).expect("read");
    // Opening trusts the index snapshot for the log it covers (verify checks everything);
    // without one, as after a crash, open scans and checks the whole log.
    fs::remove_file(dir.path().join("index.snap")).expect("a clean close leaves a snapshot");

    let mut middle = original.clone();
    middle[32 + 64 + 20] ^= 1; // inside the first record of the first frame
    fs::write(&path, &middle).expect("write");
    let err = EmbeddedStore::open(dir.path()).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("segment 0") && msg.contains("offset 32"), "{msg}");

    // The last commit's final bytes never reached the disk: zeros where they should be.
    let mut torn = original.clone();
    let end = original.iter().rposition(|&b| b != 0).expect("data") + 1;
    torn[end - 5..end].fill(0);
    fs::write(&path, &torn).expect("write");
    let store = EmbeddedStore::open(dir.path()).expect("torn tail is recovered");
    assert_eq!(store.head(), 9, "only the torn last frame is gone");
    assert!(store.open_report().truncated_bytes > 0);
}

/// A clean close leaves an index snapshot that the next open starts from; a snapshot that
/// does not match the log (another store's, or one older than a rewritten tail) is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_uses_a_matching_index_snapshot_only() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    for dir in [&a, &b] {
        let store = EmbeddedStore::open_with(dir.path(), small_segments()).expect("open");
        fill(&store, 0, 50).await;
    }
    {
        let store = EmbeddedStore::open_with(a.path(), small_segments()).expect("reopen");
        assert_eq!(store.open_report().from_snapshot, Some(50));
    }
    {
        // A read-only open leaves the current snapshot alone (it is not rewritten on close)
        // and the next open still starts from it and scans nothing.
        let snapshot = a.path().join("index.snap");
        let before = std::fs::metadata(&snapshot).and_then(|m| m.modified()).expect("snapshot");
        let store = EmbeddedStore::open_with(a.path(), small_segments()).expect("reopen");
        assert_eq!(store.open_report().from_snapshot, Some(50));
        drop(store);
        assert_eq!(std::fs::metadata(&snapshot).and_then(|m| m.modified()).expect("snapshot"), before);
        let store = EmbeddedStore::open_with(a.path(), small_segments()).expect("reopen");
        assert_eq!((store.open_report().from_snapshot, store.head()), (Some(50), 50));
        // Appends after the snapshot are found by scanning on from it.
        fill(&store, 50, 60).await;
        assert_eq!(store.read_all(0, usize::MAX).await.expect("read").len(), 60);
    }
    // B's log differs from A's (other keys): A's snapshot must not be used for it.
    {
        let store = EmbeddedStore::open_with(b.path(), small_segments()).expect("open b");
        store.append("x", ExpectedRevision::Any, vec![event("only-in-b", 1)]).await.expect("append");
    }
    fs::copy(a.path().join("index.snap"), b.path().join("index.snap")).expect("copy");
    let store = EmbeddedStore::open_with(b.path(), small_segments()).expect("open b with a's snapshot");
    assert_eq!(store.open_report().from_snapshot, None);
    assert_eq!(store.head(), 51);
    assert!(store.event_by_id(event("only-in-b", 1).event_id).await.expect("by id").is_some());
    // A snapshot that is not there after a crash is simply not used.
    drop(store);
    fs::remove_file(b.path().join("index.snap")).expect("remove");
    let store = EmbeddedStore::open_with(b.path(), small_segments()).expect("open b without snapshot");
    assert_eq!((store.open_report().from_snapshot, store.head()), (None, 51));
}

/// While the store runs it writes snapshots every so many events, so a crash (no clean
/// close) leaves only the log after the last one to scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_running_shorten_recovery_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions { snapshot_every_events: 25, segment_bytes_max: 4096, ..StoreOptions::default() };
    {
        let store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("open");
        fill(&store, 0, 60).await;
        // A crash: the process dies without closing; simulate by keeping only what is on disk.
        let copy = tempfile::tempdir().expect("tempdir");
        for entry in fs::read_dir(dir.path()).expect("dir") {
            let entry = entry.expect("entry");
            if entry.file_name() != "LOCK" {
                fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
            }
        }
        drop(store);
        let crashed = EmbeddedStore::open_with(copy.path(), options.clone()).expect("recover");
        let from = crashed.open_report().from_snapshot.expect("a running snapshot was used");
        assert!((25..60).contains(&from), "snapshot at {from}");
        assert_eq!(crashed.head(), 60);
        assert_eq!(crashed.stream_revision("s0").await.expect("revision"), Some(11));
        drop(crashed);
        verify_dir(copy.path()).expect("verify");
    }
}

/// Damage to an old record that the index snapshot covers is met while indexing a newer,
/// intact last commit (its stream's previous record must be read). That commit checked out
/// whole, so it is damage, not an unfinished write: open refuses and changes no byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_while_indexing_a_whole_commit_is_refused_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions { snapshot_every_events: 2, ..StoreOptions::default() };
    let store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("open");
    store.append("x", ExpectedRevision::NoStream, vec![event("e0", 0)]).await.expect("e0");
    store.append("y", ExpectedRevision::NoStream, vec![event("e1", 1)]).await.expect("e1");
    // The running snapshot (after 2 events) is written by a thread of its own.
    for _ in 0..500 {
        if dir.path().join("index.snap").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(dir.path().join("index.snap").exists(), "running snapshot written");
    store.append("x", ExpectedRevision::Exact(0), vec![event("e2", 2)]).await.expect("e2");
    // A crash: copy what is on disk without closing (no closing snapshot).
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(dir.path()).expect("dir") {
        let entry = entry.expect("entry");
        if entry.file_name() != "LOCK" && entry.file_name() != "index.tmp" {
            fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
        }
    }
    drop(store);
    // Rot one byte of e0's payload: the first record of the first frame, at 32 + 64.
    let seg = copy.path().join("seg-000000.log");
    let mut bytes = fs::read(&seg).expect("read");
    let len = u32::from_le_bytes(bytes[96..100].try_into().expect("4 bytes")) as usize;
    bytes[96 + 8 + len - 1] ^= 0x01;
    fs::write(&seg, &bytes).expect("write");
    let err = EmbeddedStore::open_with(copy.path(), options).err().expect("refused");
    assert!(matches!(err, ingest::store::OpenError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&seg).expect("read"), bytes, "a refused open changes nothing");
}

/// Copies a data directory as a crash would leave it (no `LOCK`, no snapshot in progress).
/// A snapshot thread of the live store may still put a newer snapshot in place and remove the
/// runs the older one named while the copy runs; a copy that saw either is taken again, so
/// the copy is one instant's state, as a crash leaves it.
fn copy_as_crashed(from: &Path, to: &Path) {
    for _ in 0..100 {
        let snapshot = fs::read(from.join("index.snap")).ok();
        let _ = fs::remove_dir_all(to);
        fs::create_dir_all(to).expect("mkdir");
        let complete = copy_tree(from, to);
        if complete && fs::read(from.join("index.snap")).ok() == snapshot {
            return;
        }
    }
    panic!("the store kept changing while it was copied");
}

/// Copies `from` into `to`; false when a file went away between listing and copying.
fn copy_tree(from: &Path, to: &Path) -> bool {
    let mut complete = true;
    for entry in fs::read_dir(from).expect("dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "LOCK" || name == "index.tmp" {
            continue;
        }
        if entry.file_type().expect("type").is_dir() {
            fs::create_dir_all(to.join(&name)).expect("mkdir");
            complete &= copy_tree(&entry.path(), &to.join(&name));
        } else {
            match fs::copy(entry.path(), to.join(&name)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => complete = false,
                Err(e) => panic!("copy {}: {e}", entry.path().display()),
            }
        }
    }
    complete
}

/// Run files of the spilled indexes.
fn run_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir.join("keys")) {
        Ok(entries) => entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Checks that every stream and id written by [`fill_spilling`] is found through the index.
async fn check_spilled(store: &EmbeddedStore, streams: u64) {
    for i in 0..streams {
        let stream = format!("p{i}");
        assert_eq!(store.stream_revision(&stream).await.expect("revision"), Some(i % 3), "{stream}");
        let id = event(&format!("p{i}-0"), 0).event_id;
        let found = store.event_by_id(id).await.expect("by id").expect("indexed id");
        assert_eq!(found.stream, stream);
        // A retry is recognised, and a new stream of that name is refused.
        let retry = store.append(&stream, ExpectedRevision::Any, vec![event(&format!("p{i}-0"), 0)]).await;
        assert!(retry.expect("retry").duplicate, "{stream}");
        let again = store.append(&stream, ExpectedRevision::NoStream, vec![event(&format!("new-{i}"), 0)]).await;
        assert!(again.is_err(), "{stream} exists");
    }
    assert_eq!(store.stream_revision("p-none").await.expect("revision"), None);
    let absent = event("never-appended", 0).event_id;
    assert!(store.event_by_id(absent).await.expect("by id").is_none());
}

/// `streams` streams `p{i}` with 1 to 3 events each, appended one stream at a time.
async fn fill_spilling(store: &EmbeddedStore, streams: u64) {
    for i in 0..streams {
        let stream = format!("p{i}");
        for r in 0..=(i % 3) {
            let expected = if r == 0 { ExpectedRevision::NoStream } else { ExpectedRevision::Exact(r - 1) };
            store.append(&stream, expected, vec![event(&format!("p{i}-{r}"), r)]).await.expect("append");
        }
    }
}

/// With a tiny in-memory budget the stream and id indexes live mostly in runs on disk; they
/// answer exactly as before after a crash (running snapshot plus scan), a clean reopen, and a
/// reopen without any snapshot, and superseded runs are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_spilled_to_disk_answer_the_same_after_crash_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        index_recent_entries_max: 16,
        index_filter_bytes: 1024,
        snapshot_every_events: 150,
        segment_bytes_max: 16 << 10,
        ..StoreOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("open");
    fill_spilling(&store, 300).await;
    check_spilled(&store, 300).await;
    let runs = run_files(dir.path());
    assert!(runs.iter().any(|r| r.starts_with("streams-")) && runs.iter().any(|r| r.starts_with("ids-")), "{runs:?}");
    // Wait for the running snapshot, then crash.
    for _ in 0..500 {
        if dir.path().join("index.snap").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let copy = tempfile::tempdir().expect("tempdir");
    copy_as_crashed(dir.path(), copy.path());
    drop(store);
    let crashed = EmbeddedStore::open_with(copy.path(), options.clone()).expect("recover");
    assert!(crashed.open_report().from_snapshot.is_some(), "the running snapshot and its runs were used");
    check_spilled(&crashed, 300).await;
    drop(crashed);
    verify_dir(copy.path()).expect("verify");

    // A clean reopen starts from the closing snapshot; merged-away runs are gone.
    let store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("reopen");
    assert_eq!(store.open_report().from_snapshot, Some(store.head()));
    check_spilled(&store, 300).await;
    let in_use = run_files(dir.path());
    assert!(in_use.len() <= 16, "a few runs per map, not one per spill: {in_use:?}");
    drop(store);

    // Without a snapshot the index is built again from the log, and old runs are replaced.
    fs::remove_file(dir.path().join("index.snap")).expect("remove snapshot");
    let store = EmbeddedStore::open_with(dir.path(), options).expect("reopen without snapshot");
    assert_eq!(store.open_report().from_snapshot, None);
    check_spilled(&store, 300).await;
}

/// Every answer of `position_since` on `store` holding `times` (occurred-at by position): no
/// event before the answer occurred at or after the time asked.
async fn check_position_since(store: &EmbeddedStore, times: &[i64], asked: &[i64]) -> Vec<u64> {
    let stored: Vec<i64> =
        store.read_all(0, usize::MAX).await.expect("read").iter().map(|e| e.data.occurred_at_us).collect();
    assert_eq!(stored, times);
    asked
        .iter()
        .map(|&t| {
            let p = store.position_since(t);
            assert!(p <= store.head());
            if let Some(i) = times[..p as usize].iter().position(|&at| at >= t) {
                panic!("position_since({t}) = {p}, but the event at {i} occurred at {}", times[i]);
            }
            p
        })
        .collect()
}

/// The zone map over occurred-at skips the spans that ended before a time, never an event at
/// or after it: not one with a clock ahead in an early span, not one that arrived late; and it
/// answers the same after a reopen from the snapshot and from a scan of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_since_skips_only_what_happened_before() {
    const SECOND: i64 = 1_000_000;
    let t0 = 1_700_000_000 * SECOND;
    let n = 2_000u64;
    let mut times: Vec<i64> = (0..n as i64).map(|i| t0 + i * SECOND).collect();
    times[500] = t0 + 1_800 * SECOND; // a terminal whose clock runs ahead
    times.push(t0); // a late upload of something early
    let dir = tempfile::tempdir().expect("tempdir");
    let asked: Vec<i64> = [0, 1, 499, 500, 1_000, 1_500, 1_799, 1_800, 1_801, 1_900, 1_999, 2_000, 5_000]
        .iter()
        .map(|s| t0 + s * SECOND)
        .chain([i64::MIN, i64::MAX])
        .collect();
    let answers = {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        for (i, &at) in times.iter().enumerate() {
            let mut e = event(&format!("z{i}"), i as u64);
            e.occurred_at_us = at;
            // About 1 KiB a record: a 64 KiB span holds some 60 of them.
            e.payload = format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(1_000)).into_bytes();
            store.append(&format!("z{}", i % 7), ExpectedRevision::Any, vec![e]).await.expect("append");
        }
        let answers = check_position_since(&store, &times, &asked).await;
        store.close();
        answers
    };
    let at = |s: i64| answers[asked.iter().position(|&t| t == t0 + s * SECOND).expect("asked")];
    // The early span with a clock ahead holds back times up to its 1,800 s; the late upload's
    // own time is checked with every answer above.
    assert_eq!(answers[asked.len() - 2], 0, "every event occurred after i64::MIN");
    assert!(at(1_000) > 0 && at(1_000) <= 500, "{answers:?}");
    assert!(at(1_801) > 1_700 && at(1_801) <= 1_801, "{answers:?}");
    assert!(at(1_999) > 1_900, "{answers:?}");
    assert_eq!(at(2_000), n + 1, "nothing occurred at 2,000 s or after, the late upload neither");
    assert_eq!(answers[asked.len() - 1], n + 1, "nothing occurred at i64::MAX");
    // From the snapshot, then from a scan of the log alone.
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(check_position_since(&store, &times, &asked).await, answers);
    store.close();
    fs::remove_file(dir.path().join("index.snap")).expect("snapshot written at close");
    let store = EmbeddedStore::open(dir.path()).expect("reopen without the snapshot");
    assert_eq!(check_position_since(&store, &times, &asked).await, answers);
}

/// A file layer whose syncs wait for a permit from the test, so a frame stays in flight.
#[derive(Clone, Default)]
struct GatedFs {
    permits: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
}

impl GatedFs {
    fn allow(&self, n: u64) {
        let (permits, cv) = &*self.permits;
        *permits.lock().expect("gate") += n;
        cv.notify_all();
    }
}

/// Opens the gate for good when dropped, so a failing test stops instead of waiting forever.
struct OpenOnDrop(GatedFs);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.allow(u64::MAX / 2);
    }
}

struct GatedFile {
    inner: Box<dyn ingest::store::fault::LogFile>,
    fs: GatedFs,
}

impl ingest::store::fault::LogFile for GatedFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        let (permits, cv) = &*self.fs.permits;
        let mut left = permits.lock().expect("gate");
        while *left == 0 {
            left = cv.wait(left).expect("gate");
        }
        *left -= 1;
        drop(left);
        self.inner.sync_data()
    }
    fn zero_fill(&mut self, from: u64, to: u64) -> std::io::Result<()> {
        self.inner.zero_fill(from, to)
    }
}

impl ingest::store::fault::LogFs for GatedFs {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Box<dyn ingest::store::fault::LogFile>> {
        let inner = ingest::store::fault::RealFs.open(path, create)?;
        Ok(Box::new(GatedFile { inner, fs: self.clone() }))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        ingest::store::fault::RealFs.sync_dir(dir)
    }
}

/// Polls a future once without waiting: queues an append with the writer.
fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// While one frame is being made durable the writer stages the next against it: a retry of an
/// event in flight is its duplicate, a revision follows the one in flight, and no answer is
/// given before the frames it was decided on are durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_frame_is_staged_against_the_one_in_flight() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("s");
    let gate = GatedFs::default();
    // Creating the first segment syncs once.
    gate.allow(1);
    let options = StoreOptions { batch_events_max: 1, fs: Arc::new(gate.clone()), ..StoreOptions::default() };
    let store = EmbeddedStore::open_with(&dir, options).expect("open");
    // Dropped before the store, also when an assertion fails.
    let _open = OpenOnDrop(gate.clone());
    let first = event("first", 0);
    let (x, y, z) = (event("x", 1), event("y", 2), event("z", 3));
    let req = |stream: &str, expected, e: &ingest::store::EventData| AppendRequest {
        stream: stream.into(),
        expected,
        events: vec![e.clone()],
    };
    let mut p = Box::pin(store.append_many(vec![req("p", ExpectedRevision::NoStream, &first)]));
    let mut a = Box::pin(store.append_many(vec![req("s", ExpectedRevision::NoStream, &x)]));
    let mut b = Box::pin(store.append_many(vec![req("s", ExpectedRevision::NoStream, &x)]));
    let mut c = Box::pin(store.append_many(vec![req("s", ExpectedRevision::Exact(0), &y)]));
    let mut d = Box::pin(store.append_many(vec![req("s", ExpectedRevision::Exact(0), &z)]));
    for f in [&mut p, &mut a, &mut b, &mut c, &mut d] {
        assert!(poll_once(f).is_none(), "nothing is answered before its frame is durable");
    }
    let wait = std::time::Duration::from_secs(20);
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(100));

    gate.allow(1);
    let p = tokio::time::timeout(wait, p).await.expect("p answered").remove(0).expect("p appended");
    assert_eq!((p.first_position, p.duplicate), (0, false));
    settle().await;
    assert!(poll_once(&mut a).is_none(), "a's frame is not durable yet");
    assert!(poll_once(&mut b).is_none(), "b was decided against a's frame, which is not durable yet");

    gate.allow(1);
    let a = tokio::time::timeout(wait, a).await.expect("a answered").remove(0).expect("a appended");
    assert_eq!((a.first_position, a.last_revision, a.duplicate), (1, 0, false));
    let b = tokio::time::timeout(wait, b).await.expect("b answered").remove(0).expect("b is a retry");
    assert_eq!((b.first_position, b.last_revision, b.duplicate), (1, 0, true), "the retry names the original");
    let read = store.read_stream("s", 0, 10).await.expect("read after b");
    assert_eq!(read.len(), 1, "what b was answered with is readable once it is answered");
    settle().await;
    assert!(poll_once(&mut c).is_none(), "c's frame is not durable yet");
    assert!(poll_once(&mut d).is_none(), "d was refused against c's frame, which is not durable yet");

    gate.allow(1);
    let c = tokio::time::timeout(wait, c).await.expect("c answered").remove(0).expect("c appended");
    assert_eq!((c.first_position, c.last_revision), (2, 1));
    let d = tokio::time::timeout(wait, d).await.expect("d answered").remove(0);
    assert!(
        matches!(d, Err(ingest::store::AppendError::WrongExpectedRevision { actual: Some(1), .. })),
        "d expected revision 0 after c made 1: {d:?}"
    );
    assert_eq!(store.read_stream("s", 0, 10).await.expect("read after d").len(), 2, "d's refusal follows c");
    // b and d at least were staged while the frame before them (a's, c's) waited for its sync;
    // a may have been too, behind p's.
    assert!(store.batches_staged_during_sync() >= 2, "staged during a sync: {}", store.batches_staged_during_sync());
    drop(_open);
    drop(store);

    let store = EmbeddedStore::open(&dir).expect("reopen");
    let events = store.read_stream("s", 0, 10).await.expect("read");
    let ids: Vec<_> = events.iter().map(|e| (e.revision, e.position, e.data.event_id)).collect();
    assert_eq!(ids, vec![(0, 1, x.event_id), (1, 2, y.event_id)]);
    drop(store);
    assert_eq!(verify_dir(&dir).expect("verify").events, 3);
}

//! Exports the tests build from the fixtures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ingest::pipeline::{Ingestor, InputKind};
use ingest::store::EmbeddedStore;

pub fn manifest(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub async fn ingest(store: &Arc<EmbeddedStore>, files: &[(PathBuf, InputKind)]) {
    let mut ingestor = Ingestor::open(store.clone(), None).await.expect("ingestor");
    for (path, kind) in files {
        let file = std::io::BufReader::new(std::fs::File::open(path).expect("fixture"));
        let s = ingestor.ingest_reader(file, *kind, |_, _| {}).await.expect("ingest");
        assert_eq!(s.rejected, 0, "{}", path.display());
    }
}

/// The small fixture, exported to `dir/export`.
pub async fn small_export(dir: &Path) -> PathBuf {
    let store = Arc::new(EmbeddedStore::open(dir.join("events")).expect("open"));
    let small = manifest("tests/fixtures/small");
    ingest(&store, &[(small.join("admin.ndjson"), InputKind::Admin), (small.join("feed.ndjson"), InputKind::Feed)])
        .await;
    let out = dir.join("export");
    analytics::export::export(&*store, &out).await.expect("export");
    out
}

/// The small fixture and the Hong Kong dollar records of `tests/fixtures/currencies`,
/// exported to `dir/export`.
pub async fn currencies_export(dir: &Path) -> PathBuf {
    let store = Arc::new(EmbeddedStore::open(dir.join("events")).expect("open"));
    let small = manifest("tests/fixtures/small");
    let files = [
        (small.join("admin.ndjson"), InputKind::Admin),
        (small.join("feed.ndjson"), InputKind::Feed),
        (manifest("tests/fixtures/currencies/feed.ndjson"), InputKind::Feed),
    ];
    ingest(&store, &files).await;
    let out = dir.join("export");
    analytics::export::export(&*store, &out).await.expect("export");
    out
}

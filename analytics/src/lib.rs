//! `analytics` owns what posledger gives analysts: the incremental Parquet export of the log
//! ([`export`], partitioned by business date), SQL over that export on DataFusion ([`sql`]:
//! the named queries of the `queries` crate and an analyst's own read-only SQL, within named
//! limits), results as tables ([`table`]). It never writes events.

pub mod chart;
pub mod export;
pub mod habits;
pub mod sql;
pub mod table;

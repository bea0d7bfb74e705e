//! `analytics` owns what posledger gives analysts: the incremental Parquet export of the log
//! ([`export`], partitioned by business date). Later: the DataFusion session over the export
//! and the polars spending-habit analytics (RFM, trends, basket sizes, cohorts). It never
//! writes events.

pub mod export;

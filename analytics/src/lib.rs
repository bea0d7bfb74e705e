//! `analytics` will own the incremental Parquet export (partitioned by business date), the
//! DataFusion session over the export and the polars spending-habit analytics (RFM, trends,
//! basket sizes, cohorts). It never writes events. Nothing is implemented yet.

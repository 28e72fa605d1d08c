//! The `eddy_catalog` schema: EddyDB's own system relations, built from
//! the live catalog each time a query plans them.
//!
//! - `source_partitions`: per source reader and partition, where it stands.
//! - `source_errors`: the bad records readers set apart.
//! - `late_events`: the events readers found too late to read.
//! - `checkpoints`: recent checkpoints of the views over streams.
//! - `views`: each materialized view's status and the memory its state
//!   takes, against `--memory-limit`.
//! - `operators`: each view's dataflow operators and the state each holds.
//! - `function_errors`: rows user functions failed on.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::catalog::Catalog;

pub const SCHEMA: &str = "eddy_catalog";

const RELATIONS: [&str; 7] = [
    "source_partitions",
    "source_errors",
    "late_events",
    "checkpoints",
    "views",
    "operators",
    "function_errors",
];

#[derive(Debug)]
pub struct EddyCatalog(pub Arc<Catalog>);

#[async_trait]
impl SchemaProvider for EddyCatalog {
    fn table_names(&self) -> Vec<String> {
        RELATIONS.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "source_partitions" => source_partitions(&self.0),
            "source_errors" => source_errors(&self.0),
            "late_events" => late_events(&self.0),
            "checkpoints" => checkpoints(&self.0),
            // Both ask the workers, which answer between steps.
            "views" => blocking(|| views(&self.0)),
            "operators" => blocking(|| operators(&self.0)),
            "function_errors" => function_errors(&self.0),
            _ => return Ok(None),
        }?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        RELATIONS.contains(&name)
    }
}

fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(crate::types::UTC.into()))
}

fn source_partitions(catalog: &Catalog) -> DfResult<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("feeds", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("high_watermark", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
        Field::new("rows", DataType::Int64, false),
        Field::new("events_per_second", DataType::Float64, false),
        Field::new("bad_records", DataType::Int64, false),
        Field::new("watermark", timestamptz(), true),
        Field::new("source_watermark", timestamptz(), true),
        Field::new("idle", DataType::Boolean, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
    ]));
    let mut rows = Vec::new();
    for status in catalog.reader_statuses() {
        let source_watermark = status.watermark_us();
        rows.extend(status.rows().into_iter().map(|r| (r, source_watermark)));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| &r.source),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| &r.feeds),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|(r, _)| r.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(r, _)| r.offset),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|(r, _)| r.high_watermark),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|(r, _)| r.lag))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(r, _)| r.rows as i64),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|(r, _)| r.events_per_second),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(r, _)| r.bad_records as i64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|(r, _)| r.watermark_us))
                .with_timezone(crate::types::UTC),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|(_, w)| *w))
                .with_timezone(crate::types::UTC),
        ),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(r, _)| Some(r.idle)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(r, _)| r.last_error.clone()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(r, _)| &r.status),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn source_errors(catalog: &Catalog) -> DfResult<RecordBatch> {
    set_apart(catalog.source_errors(), false)
}

/// The most recent rows user functions failed on, oldest first.
fn function_errors(catalog: &Catalog) -> DfResult<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("function", DataType::Utf8, false),
        Field::new("arguments", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("traceback", DataType::Utf8, false),
        Field::new("at", timestamptz(), false),
    ]));
    let rows = catalog.function_errors().entries();
    let text = |f: fn(&crate::function::FunctionError) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, e)| f(e)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|e| &e.function),
        text(|e| &e.arguments),
        text(|e| &e.message),
        text(|e| &e.traceback),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|(at, _)| *at))
                .with_timezone(crate::types::UTC),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn late_events(catalog: &Catalog) -> DfResult<RecordBatch> {
    set_apart(catalog.late_events(), true)
}

/// What readers set apart: bad records (`source_errors`), or events too
/// late to read (`late_events`), which also have their event time and
/// watermark and call their payload `row`.
fn set_apart(log: &crate::source::status::ErrorLog, late: bool) -> DfResult<RecordBatch> {
    let mut fields = vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("feeds", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ];
    if late {
        fields.push(Field::new("event_time", timestamptz(), true));
        fields.push(Field::new("watermark", timestamptz(), true));
    }
    fields.extend([
        Field::new("reason", DataType::Utf8, false),
        Field::new(if late { "row" } else { "payload" }, DataType::Utf8, true),
        Field::new("at", timestamptz(), false),
    ]);
    let rows = log
        .rows()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let instants = |values: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone(crate::types::UTC))
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.source),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.feeds))),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.partition),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset))),
    ];
    if late {
        columns.push(instants(rows.iter().map(|r| r.event_time_us).collect()));
        columns.push(instants(rows.iter().map(|r| r.watermark_us).collect()));
    }
    columns.extend([
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.reason),
        )) as ArrayRef,
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.payload.clone()),
        )),
        instants(rows.iter().map(|r| Some(r.at_us)).collect()),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn checkpoints(catalog: &Catalog) -> DfResult<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("checkpoint_id", DataType::Int64, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("taken_at", timestamptz(), false),
        Field::new("snapshot_ms", DataType::Float64, false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("bytes_written", DataType::Int64, false),
        Field::new("state_bytes", DataType::Int64, false),
        Field::new("views", DataType::Int32, false),
        Field::new("views_written", DataType::Int32, false),
        Field::new("views_changes_only", DataType::Int32, false),
        Field::new("views_compacted", DataType::Int32, false),
    ]));
    let rows = catalog.engine().checkpoint_history();
    let int64 = |f: fn(&crate::engine::CheckpointInfo) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    let int32 = |f: fn(&crate::engine::CheckpointInfo) -> usize| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| f(r) as i32),
        ))
    };
    let float64 = |f: fn(&crate::engine::CheckpointInfo) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        int64(|r| r.id as i64),
        int64(|r| r.epoch as i64),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.taken_at_ms.saturating_mul(1000)),
            )
            .with_timezone(crate::types::UTC),
        ),
        float64(|r| r.snapshot_ms),
        float64(|r| r.duration_ms),
        int64(|r| r.bytes_written as i64),
        int64(|r| r.state_bytes as i64),
        int32(|r| r.views),
        int32(|r| r.views_written),
        int32(|r| r.views_changes_only),
        int32(|r| r.views_compacted),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Runs `f`, which may wait for a dataflow step (a backfill can take
/// seconds), without holding up the other tasks of the runtime's worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn views(catalog: &Catalog) -> DfResult<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, false),
        Field::new("operator_bytes", DataType::Int64, false),
        Field::new("output_bytes", DataType::Int64, false),
        Field::new("state_bytes", DataType::Int64, false),
        Field::new("memory_limit", DataType::Int64, true),
        Field::new("scans", DataType::Int64, false),
        Field::new("key_lookups", DataType::Int64, false),
    ]));
    let engine = catalog.engine();
    let views = catalog.materialized_views();
    let reads: Vec<(u64, u64)> = views.iter().map(|v| v.reads()).collect();
    let mut operator_bytes = Vec::with_capacity(views.len());
    for view in &views {
        let bytes = engine.operator_state_bytes(view.def.id).map_err(external)?;
        operator_bytes.push(bytes.iter().sum::<usize>() as i64);
    }
    let output_bytes: Vec<i64> = views.iter().map(|v| v.output_bytes() as i64).collect();
    let failures: Vec<Option<String>> = views.iter().map(|v| v.failure()).collect();
    let limit = engine.memory_limit().map(|l| l as i64);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            views.iter().map(|v| v.def.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(failures.iter().map(
            |f| match f {
                Some(_) => "failed",
                None => "running",
            },
        ))),
        Arc::new(StringArray::from(failures.clone())),
        Arc::new(Int64Array::from_iter_values(
            views.iter().map(|v| v.row_count() as i64),
        )),
        Arc::new(Int64Array::from(operator_bytes.clone())),
        Arc::new(Int64Array::from(output_bytes.clone())),
        Arc::new(Int64Array::from_iter_values(
            operator_bytes.iter().zip(&output_bytes).map(|(o, a)| o + a),
        )),
        Arc::new(Int64Array::from(vec![limit; views.len()])),
        Arc::new(Int64Array::from_iter_values(
            reads.iter().map(|(scans, _)| *scans as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            reads.iter().map(|(_, lookups)| *lookups as i64),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn operators(catalog: &Catalog) -> DfResult<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("node", DataType::Int32, false),
        Field::new("operator", DataType::Utf8, false),
        Field::new("inputs", DataType::Utf8, false),
        Field::new("state_bytes", DataType::Int64, false),
    ]));
    let engine = catalog.engine();
    let (mut view, mut node, mut operator, mut inputs, mut bytes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in catalog.materialized_views() {
        let held = engine.operator_state_bytes(v.def.id).map_err(external)?;
        for (i, n) in v.graph.nodes.iter().enumerate() {
            view.push(v.def.name.clone());
            node.push(i as i32);
            operator.push(crate::dataflow::graph::describe(&n.kind));
            let from: Vec<String> = n.inputs.iter().map(|i| i.to_string()).collect();
            inputs.push(from.join(","));
            bytes.push(held.get(i).copied().unwrap_or(0) as i64);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(view)),
        Arc::new(Int32Array::from(node)),
        Arc::new(StringArray::from(operator)),
        Arc::new(StringArray::from(inputs)),
        Arc::new(Int64Array::from(bytes)),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn external(e: crate::error::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

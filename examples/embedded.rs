//! EddyDB embedded in a program of your own, with functions written in
//! Rust: a scalar function (`haversine_km`) and an aggregate (`rms`), known
//! to every session, usable in materialized views and ad-hoc queries.
//!
//! ```sh
//! cargo run --release --example embedded      # listens on 127.0.0.1:6690
//! psql -h 127.0.0.1 -p 6690 -U eddy eddy
//! ```
//!
//! ```sql
//! SELECT haversine_km(59.91, 10.75, 48.86, 2.35);          -- Oslo to Paris
//! CREATE TABLE readings (sensor text, v double precision);
//! CREATE MATERIALIZED VIEW levels AS SELECT sensor, rms(v) AS level FROM readings GROUP BY sensor;
//! INSERT INTO readings VALUES ('a', 3), ('a', 4), ('b', 1);
//! SELECT * FROM levels;                                     -- a: 3.5355…, b: 1
//! ```
//!
//! `EDDYDB_LISTEN` and `EDDYDB_DATA_DIR` say where it listens and keeps its
//! data (default `eddydb-embedded-data`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use eddydb::function::aggregate::{AggregateOutput, GroupUpdate, UserAggregate};
use eddydb::function::Extensions;

/// The functions this program adds to EddyDB.
pub fn extensions() -> Extensions {
    let haversine = create_udf(
        "haversine_km",
        vec![DataType::Float64; 4],
        DataType::Float64,
        // Same arguments, same result: usable in materialized views.
        Volatility::Immutable,
        Arc::new(haversine_km),
    );
    Extensions::new()
        .scalar(haversine)
        .aggregate(Arc::new(Rms::default()))
}

/// The great-circle distance between two points given in degrees.
fn haversine_km(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let rows = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(array) => Some(array.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let columns: Vec<&Float64Array> = arrays
        .iter()
        .map(|a| a.as_primitive::<Float64Type>())
        .collect();
    let distances: Float64Array = (0..rows)
        .map(|i| {
            if columns.iter().any(|c| c.is_null(i)) {
                return None;
            }
            let [lat1, lon1, lat2, lon2] = [0, 1, 2, 3].map(|c| columns[c].value(i).to_radians());
            let a = ((lat2 - lat1) / 2.0).sin().powi(2)
                + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
            Some(6371.0 * 2.0 * a.sqrt().asin())
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(distances)))
}

/// The root mean square of a group's values. Its state is 16 bytes: the
/// count and the sum of squares, which rows can be added to and taken
/// from, so it works over tables that change too.
#[derive(Debug)]
struct Rms {
    args: Vec<DataType>,
    returns: DataType,
}

impl Default for Rms {
    fn default() -> Rms {
        Rms {
            args: vec![DataType::Float64],
            returns: DataType::Float64,
        }
    }
}

impl UserAggregate for Rms {
    fn name(&self) -> &str {
        "rms"
    }

    fn args(&self) -> &[DataType] {
        &self.args
    }

    fn returns(&self) -> &DataType {
        &self.returns
    }

    fn retracts(&self) -> bool {
        true
    }

    fn update(
        &self,
        columns: &[ArrayRef],
        groups: &[GroupUpdate],
    ) -> eddydb::Result<AggregateOutput> {
        let values = columns[0].as_primitive::<Float64Type>();
        let mut states = Vec::with_capacity(groups.len());
        let mut results = Vec::with_capacity(groups.len());
        for group in groups {
            let (mut n, mut squares) = group.state.as_deref().and_then(decode).unwrap_or((0, 0.0));
            for &(row, weight) in &group.rows {
                if values.is_valid(row) {
                    let v = values.value(row);
                    n += weight;
                    squares += weight as f64 * v * v;
                }
            }
            let mut state = n.to_le_bytes().to_vec();
            state.extend_from_slice(&squares.to_le_bytes());
            states.push(Some(state));
            results.push((n > 0).then(|| (squares.max(0.0) / n as f64).sqrt()));
        }
        Ok(AggregateOutput {
            states,
            values: Arc::new(Float64Array::from(results)),
            errors: Vec::new(),
        })
    }
}

/// A state written by `update`: the count, then the sum of squares.
fn decode(state: &[u8]) -> Option<(i64, f64)> {
    let n = i64::from_le_bytes(state.get(..8)?.try_into().ok()?);
    let squares = f64::from_le_bytes(state.get(8..16)?.try_into().ok()?);
    Some((n, squares))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir =
        std::env::var("EDDYDB_DATA_DIR").unwrap_or_else(|_| "eddydb-embedded-data".to_string());
    let mut config = eddydb::config::Config::for_data_dir(data_dir);
    config.listen = std::env::var("EDDYDB_LISTEN").unwrap_or_else(|_| "127.0.0.1:6690".into());
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    println!("eddydb (embedded) listening on {}", listener.local_addr()?);
    let shutdown = eddydb::server::shutdown_signal();
    eddydb::server::run_with(listener, config, extensions(), shutdown).await?;
    Ok(())
}

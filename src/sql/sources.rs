//! The source statements: `CREATE SOURCE`, connector-fed `CREATE TABLE`,
//! `DROP SOURCE` and `SHOW SOURCES` (parsed by [`crate::source::def`]).

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::{CommandTag, Output};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::source::def::{Encode, Format, SourceKind, SourceStatement};

/// The rows a source statement returns, if any.
pub fn result_schema(statement: &SourceStatement) -> Option<SchemaRef> {
    matches!(statement, SourceStatement::Show).then(show_schema)
}

pub async fn execute(catalog: &Arc<Catalog>, statement: SourceStatement) -> Result<Output> {
    match statement {
        SourceStatement::Create(create) => {
            let def = create.validate()?;
            let tag = match def.kind {
                SourceKind::Source => "CREATE SOURCE",
                SourceKind::Table => "CREATE TABLE",
            };
            let if_not_exists = create.if_not_exists;
            let catalog = Arc::clone(catalog);
            // Resolving start offsets talks to the broker: off the runtime.
            tokio::task::spawn_blocking(move || catalog.create_source(def, if_not_exists))
                .await
                .map_err(|e| Error::Internal(format!("source creation task failed: {e}")))??;
            Ok(Output::Command(CommandTag::new(tag)))
        }
        SourceStatement::Drop {
            names,
            if_exists,
            cascade,
        } => {
            let catalog = Arc::clone(catalog);
            tokio::task::spawn_blocking(move || {
                for name in &names {
                    catalog.drop_source(name, if_exists, cascade)?;
                }
                Ok::<_, Error>(())
            })
            .await
            .map_err(|e| Error::Internal(format!("DROP SOURCE task failed: {e}")))??;
            Ok(Output::Command(CommandTag::new("DROP SOURCE")))
        }
        SourceStatement::Show => Ok(show(catalog)),
    }
}

fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("Name", DataType::Utf8, false),
        Field::new("Kind", DataType::Utf8, false),
        Field::new("Connector", DataType::Utf8, false),
        Field::new("Format", DataType::Utf8, true),
    ]))
}

/// `SHOW SOURCES`: every source and connector-fed table.
fn show(catalog: &Catalog) -> Output {
    let sources = catalog.sources();
    let names: StringArray = sources.iter().map(|s| Some(s.def.name.clone())).collect();
    let kinds: StringArray = sources.iter().map(|s| Some(s.def.kind.name())).collect();
    let connectors: StringArray = sources.iter().map(|s| Some(s.connector_name())).collect();
    let formats: StringArray = sources
        .iter()
        .map(|s| {
            s.def.format.as_ref().map(|f| {
                let format = match f.format {
                    Format::Plain => "PLAIN",
                    Format::Upsert => "UPSERT",
                };
                let encode = match f.encode {
                    Encode::Json => "JSON",
                    Encode::Csv { .. } => "CSV",
                };
                format!("{format} {encode}")
            })
        })
        .collect();
    let schema = show_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(names),
            Arc::new(kinds),
            Arc::new(connectors),
            Arc::new(formats),
        ],
    )
    .expect("four utf8 columns");
    Output::Batches {
        schema,
        batches: vec![batch],
    }
}

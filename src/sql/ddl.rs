//! CREATE TABLE and DROP TABLE.

use datafusion::sql::sqlparser::ast::{
    self, ColumnOption, CreateTable, ObjectName, ObjectType, TableConstraint,
};

use super::{names, CommandTag, Output};
use crate::catalog::{Catalog, ColumnDef};
use crate::error::{Error, Result};
use crate::query::QueryContext;
use crate::types::SqlType;

pub async fn create_table(
    catalog: &Catalog,
    query: &QueryContext,
    create: CreateTable,
) -> Result<Output> {
    if create.query.is_some() {
        return Err(Error::unsupported(
            "CREATE TABLE ... AS",
            "Create the table, then INSERT INTO it ... SELECT.",
        ));
    }
    if create.temporary {
        return Err(Error::unsupported(
            "temporary tables",
            "Create an ordinary table and drop it when done.",
        ));
    }
    let name = names::relation_name(&create.name)?;
    let (columns, primary_key) = column_defs(&create.columns, &create.constraints)?;
    for column in &columns {
        if let Some(default) = &column.default {
            check_default(query, column, default).await?;
        }
    }
    let created = catalog.create_table(&name, columns, primary_key, create.if_not_exists)?;
    if created.is_none() {
        tracing::info!(table = %name, "CREATE TABLE IF NOT EXISTS: already exists, skipping");
    }
    Ok(Output::Command(CommandTag::new("CREATE TABLE")))
}

/// The columns and primary key (indexes into the columns) of a column list:
/// names folded, types mapped, duplicates refused, key columns made NOT
/// NULL. DEFAULT expressions are kept as text and not checked here. Shared
/// by CREATE TABLE and the connector DDL in `crate::source::def`.
pub(crate) fn column_defs(
    ast_columns: &[ast::ColumnDef],
    constraints: &[TableConstraint],
) -> Result<(Vec<ColumnDef>, Vec<usize>)> {
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(ast_columns.len());
    let mut primary_key = Vec::new();
    for column in ast_columns {
        let col_name = names::normalize(&column.name);
        if columns.iter().any(|c| c.name == col_name) {
            return Err(Error::DuplicateColumn(format!(
                "column \"{col_name}\" specified more than once"
            )));
        }
        let mut def = ColumnDef {
            name: col_name,
            sql_type: SqlType::from_ast(&column.data_type)?,
            not_null: false,
            default: None,
        };
        for option in &column.options {
            if apply_column_option(&mut def, &option.option)? {
                set_primary_key(&mut primary_key, vec![columns.len()])?;
            }
        }
        columns.push(def);
    }
    for constraint in constraints {
        let key = table_constraint(&columns, constraint)?;
        set_primary_key(&mut primary_key, key)?;
    }
    for i in &primary_key {
        columns[*i].not_null = true;
    }
    Ok((columns, primary_key))
}

/// Applies one column option; `true` if it makes the column the primary key.
fn apply_column_option(def: &mut ColumnDef, option: &ColumnOption) -> Result<bool> {
    match option {
        ColumnOption::NotNull => def.not_null = true,
        ColumnOption::Null => def.not_null = false,
        ColumnOption::Default(expr) => def.default = Some(expr.to_string()),
        ColumnOption::PrimaryKey(_) => return Ok(true),
        other => {
            return Err(Error::unsupported(
                format!("column constraint {other}"),
                "Supported column options: PRIMARY KEY, NOT NULL, NULL, DEFAULT.",
            ))
        }
    }
    Ok(false)
}

fn table_constraint(columns: &[ColumnDef], constraint: &TableConstraint) -> Result<Vec<usize>> {
    let TableConstraint::PrimaryKey(pk) = constraint else {
        return Err(Error::unsupported(
            format!("table constraint {constraint}"),
            "Only PRIMARY KEY (columns) is supported as a table constraint.",
        ));
    };
    pk.columns
        .iter()
        .map(|c| {
            let name = match &c.column.expr {
                ast::Expr::Identifier(ident) => names::normalize(ident),
                other => other.to_string(),
            };
            columns
                .iter()
                .position(|col| col.name == name)
                .ok_or_else(|| {
                    Error::UndefinedColumn(format!("column \"{name}\" named in key does not exist"))
                })
        })
        .collect()
}

fn set_primary_key(current: &mut Vec<usize>, key: Vec<usize>) -> Result<()> {
    if !current.is_empty() {
        return Err(Error::InvalidDefinition(
            "multiple primary keys for table are not allowed".into(),
        ));
    }
    *current = key;
    Ok(())
}

/// A default must evaluate, and to something the column accepts.
async fn check_default(query: &QueryContext, column: &ColumnDef, default: &str) -> Result<()> {
    let stmt = super::parse(&format!("SELECT {default}"))?
        .pop()
        .ok_or_else(|| Error::Internal("default expression vanished".into()))?;
    let plan = query.plan(stmt).await.map_err(|e| {
        Error::InvalidDefinition(format!(
            "invalid DEFAULT for column \"{}\": {e}",
            column.name
        ))
    })?;
    let field = plan.schema().field(0);
    if !column.sql_type.accepts(field.data_type()) {
        return Err(Error::DatatypeMismatch(format!(
            "column \"{}\" is of type {} but default expression is of type {}",
            column.name,
            column.sql_type.sql_name(),
            field.data_type()
        )));
    }
    Ok(())
}

pub fn drop(
    catalog: &Catalog,
    object_type: ObjectType,
    if_exists: bool,
    names_list: &[ObjectName],
    cascade: bool,
) -> Result<Output> {
    let tag = match object_type {
        ObjectType::Table => "DROP TABLE",
        ObjectType::View => "DROP VIEW",
        ObjectType::MaterializedView => "DROP MATERIALIZED VIEW",
        other => {
            return Err(Error::unsupported(
                format!("DROP {other}"),
                "DROP TABLE, DROP VIEW and DROP MATERIALIZED VIEW are supported.",
            ))
        }
    };
    for name in names_list {
        let relation = names::relation_name(name)?;
        match object_type {
            ObjectType::Table => {
                if let Some(view) = catalog.view(&relation) {
                    return Err(Error::WrongObjectType(format!(
                        "\"{relation}\" is not a table; use DROP {} {relation}",
                        view.def().kind_name().to_uppercase()
                    )));
                }
                catalog.drop_table(&relation, if_exists, cascade)?;
            }
            ObjectType::View => {
                catalog.drop_view(&relation, false, if_exists, cascade)?;
            }
            _ => {
                catalog.drop_view(&relation, true, if_exists, cascade)?;
            }
        }
    }
    Ok(Output::Command(CommandTag::new(tag)))
}

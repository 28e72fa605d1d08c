//! Rewrites of FROM-clause items: unqualified catalog tables resolve to
//! `pg_catalog` (Postgres searches it first, unless a user table or CTE of
//! that name exists), and table functions get Postgres' shapes:
//! `generate_series(..) s` names its column `s`, takes any integer arguments,
//! and may take arguments from an outer query (planned as an `unnest`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, Ident,
    ObjectNamePart, TableAlias, TableAliasColumnDef, TableFactor, TableFunctionArgs, Value,
};

use super::super::defs;
use super::ast::{cast, folded, last_name, name_parts, parse_query, strip_catalog_qualifier};

pub(super) fn rewrite_table_factor(factor: &mut TableFactor, is_shadowed: &dyn Fn(&str) -> bool) {
    let TableFactor::Table {
        name, args, alias, ..
    } = factor
    else {
        return;
    };
    let Some(args) = args else {
        let parts = name_parts(name);
        if let [table] = parts.as_slice() {
            if !is_shadowed(table) && defs::find(defs::PG_CATALOG, table).is_some() {
                name.0
                    .insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
            }
        }
        return;
    };
    strip_catalog_qualifier(name);
    let Some(exprs) = plain_args(args) else {
        return;
    };
    match last_name(name).as_str() {
        "unnest" => {
            let mut alias = alias.take();
            name_single_column(&mut alias);
            *factor = TableFactor::UNNEST {
                alias,
                array_exprs: exprs,
                with_offset: false,
                with_offset_alias: None,
                with_ordinality: false,
            };
        }
        "generate_series" => {
            if let Some(derived) = correlated_series(&exprs, alias.as_ref()) {
                *factor = derived;
                return;
            }
            name_single_column(alias);
            for (arg, expr) in args.args.iter_mut().zip(exprs) {
                if !matches!(&expr, Expr::Value(v) if matches!(v.value, Value::Number(..))) {
                    // DataFusion's generate_series wants BIGINT constants.
                    *arg = FunctionArg::Unnamed(FunctionArgExpr::Expr(cast(
                        expr,
                        DataType::BigInt(None),
                        CastKind::Cast,
                    )));
                }
            }
        }
        _ => {}
    }
}

fn plain_args(args: &TableFunctionArgs) -> Option<Vec<Expr>> {
    args.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A function returning one column names it after the table alias.
fn name_single_column(alias: &mut Option<TableAlias>) {
    if let Some(alias) = alias {
        if alias.columns.is_empty() {
            alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
        }
    }
}

fn references_columns(exprs: &[Expr]) -> bool {
    let found = visit_expressions(&exprs.to_vec(), |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    found.is_break()
}

/// `generate_series(a, b) s` whose bounds come from columns (of an outer
/// query) cannot be a table function; the same rows come from unnesting the
/// array form: `(SELECT unnest(generate_series(a, b)) AS s) s`.
fn correlated_series(exprs: &[Expr], alias: Option<&TableAlias>) -> Option<TableFactor> {
    if !references_columns(exprs) {
        return None;
    }
    let table = alias.map_or_else(|| "generate_series".to_string(), |a| folded(&a.name));
    let column = alias
        .and_then(|a| a.columns.first())
        .map_or_else(|| table.clone(), |c| folded(&c.name));
    let args = exprs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let column_ident = Ident::with_quote('"', column);
    let query = parse_query(&format!(
        "SELECT unnest(generate_series({args})) AS {column_ident}"
    ))
    .ok()?;
    Some(TableFactor::Derived {
        lateral: false,
        subquery: Box::new(query),
        alias: Some(TableAlias {
            explicit: true,
            name: Ident::with_quote('"', table),
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    })
}

//! `CREATE [OR REPLACE] FUNCTION` and `DROP FUNCTION`.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{self, DropBehavior};

use super::{names, CommandTag, Output};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::function::{inline, FunctionDef, Language};
use crate::query::QueryContext;

pub async fn create(
    catalog: &Arc<Catalog>,
    ctx: &QueryContext,
    create: ast::CreateFunction,
) -> Result<Output> {
    if create.temporary || create.or_alter {
        return Err(Error::unsupported(
            "CREATE TEMPORARY or OR ALTER FUNCTION",
            "Use CREATE [OR REPLACE] FUNCTION.",
        ));
    }
    let def = FunctionDef::from_create(&create, catalog.next_relation_id()?)?;
    if catalog.function(&def.name).is_none() && ctx.is_builtin_function(&def.name) {
        return Err(Error::DuplicateFunction(format!(
            "function {} already exists as a built-in function; choose another name",
            def.name
        )));
    }
    if def.language == Language::Sql {
        check_sql_body(ctx, &def).await?;
    }
    let (or_replace, if_not_exists) = (create.or_replace, create.if_not_exists);
    let tag = match def.aggregate {
        true => "CREATE AGGREGATE",
        false => "CREATE FUNCTION",
    };
    let catalog = Arc::clone(catalog);
    // A Python function's first worker starts here, off the async runtime.
    tokio::task::spawn_blocking(move || catalog.create_function(def, or_replace, if_not_exists))
        .await
        .map_err(|e| Error::Internal(format!("create function task failed: {e}")))??;
    Ok(Output::Command(CommandTag::new(tag)))
}

/// A SQL function's body must plan over arguments of the declared types
/// (NULLs stand in for them) and reach the declared result type.
async fn check_sql_body(ctx: &QueryContext, def: &FunctionDef) -> Result<()> {
    let catalog = ctx.catalog();
    if inline::calls_itself(def, &|name| catalog.function(name))? {
        return Err(Error::InvalidFunction(format!(
            "function {} would call itself (directly or through other functions); SQL \
             functions are inlined, so they cannot recurse",
            def.name
        )));
    }
    let mut stmt = inline::trial_call(def)?;
    let in_body = |e: Error| match e {
        Error::UndefinedColumn(m) => Error::UndefinedColumn(format!(
            "{m} (in the body of function {}: it reads only its arguments, {})",
            def.name,
            argument_names(def)
        )),
        other => other,
    };
    ctx.rewrite(&mut stmt).map_err(in_body)?;
    ctx.plan(stmt).await.map_err(in_body)?;
    Ok(())
}

fn argument_names(def: &FunctionDef) -> String {
    if def.args.is_empty() {
        return "which it has none of".into();
    }
    def.args
        .iter()
        .enumerate()
        .map(|(i, a)| match &a.name {
            Some(n) => format!("{n} (${})", i + 1),
            None => format!("${}", i + 1),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn drop(catalog: &Catalog, drop: ast::DropFunction) -> Result<Output> {
    let cascade = matches!(drop.drop_behavior, Some(DropBehavior::Cascade));
    for desc in &drop.func_desc {
        let name = names::relation_name(&desc.name)?;
        catalog.drop_function(&name, drop.if_exists, cascade)?;
    }
    Ok(Output::Command(CommandTag::new("DROP FUNCTION")))
}

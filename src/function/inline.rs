//! SQL functions are inlined: before a statement is planned, each call of
//! one becomes its body with the call's arguments in place of the
//! parameters, cast to the declared result type — `f(a + 1, 'x')` with `f(n
//! bigint, s text) … AS $$ n * 2 $$` reads `CAST(((CAST((a + 1) AS bigint)) *
//! 2) AS bigint)`. The planner, the dataflow and EXPLAIN see ordinary
//! expressions.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    self, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
    Statement, Value,
};

use super::{Body, FunctionDef, FunctionEntry};
use crate::error::{Error, Result};
use crate::sql::names;

/// How deeply SQL functions may call each other: beyond, a function is
/// taken to call itself.
const MAX_DEPTH: usize = 16;

/// The body of a SQL function as one expression: `AS $$ expr $$`, `AS $$
/// SELECT expr $$` or `RETURN expr`.
pub fn parse_body(def: &FunctionDef) -> Result<Expr> {
    let text = def.body.trim().trim_end_matches(';').trim();
    let is_select = text
        .split_whitespace()
        .next()
        .is_some_and(|word| word.eq_ignore_ascii_case("select"));
    let query = if is_select {
        text.to_string()
    } else {
        format!("SELECT {text}")
    };
    let not_one_expression = || {
        Error::InvalidFunction(format!(
            "the body of SQL function {} must be one expression over its arguments \
         (such as $$ a * 2 $$ or $$ SELECT a * 2 $$), not {text:?}",
            def.name
        ))
    };
    let mut statements = crate::sql::parse(&query)?;
    let Some(Statement::Query(query)) = statements.pop().filter(|_| statements.is_empty()) else {
        return Err(not_one_expression());
    };
    let SetExpr::Select(select) = *query.body else {
        return Err(not_one_expression());
    };
    let plain = select.from.is_empty()
        && select.selection.is_none()
        && select.group_by == ast::GroupByExpr::Expressions(vec![], vec![])
        && select.having.is_none()
        && query.order_by.is_none()
        && query.limit_clause.is_none();
    let body = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] if plain => {
            e.clone()
        }
        _ => return Err(not_one_expression()),
    };
    // A `$k` beyond the arguments would become a parameter of the calling
    // statement.
    let mut stray = None;
    let _ = ast::visit_expressions(&body, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                let n = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                if !n.is_some_and(|n| (1..=def.args.len()).contains(&n)) {
                    stray = Some(p.clone());
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(p) = stray {
        return Err(Error::InvalidFunction(format!(
            "there is no parameter {p} in function {}: it has {} argument(s)",
            def.name,
            def.args.len()
        )));
    }
    Ok(body)
}

/// `type` as a sqlparser data type, for the casts around arguments and
/// results.
fn data_type(sql_type: &crate::types::SqlType) -> Result<ast::DataType> {
    let mut statements =
        crate::sql::parse(&format!("SELECT CAST(NULL AS {})", sql_type.sql_name()))?;
    if let Some(Statement::Query(q)) = statements.pop() {
        if let SetExpr::Select(s) = *q.body {
            if let Some(SelectItem::UnnamedExpr(Expr::Cast { data_type, .. })) =
                s.projection.into_iter().next()
            {
                return Ok(data_type);
            }
        }
    }
    Err(Error::Internal(format!(
        "type {} does not parse back",
        sql_type.sql_name()
    )))
}

fn cast(expr: Expr, sql_type: &crate::types::SqlType) -> Result<Expr> {
    Ok(Expr::Nested(Box::new(Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(Expr::Nested(Box::new(expr))),
        data_type: data_type(sql_type)?,
        array: false,
        format: None,
    })))
}

/// The user function a call names, if any.
fn called<'a>(
    f: &ast::Function,
    lookup: &'a dyn Fn(&str) -> Option<Arc<FunctionEntry>>,
) -> Option<Arc<FunctionEntry>> {
    let name = names::relation_name(&f.name).ok()?;
    lookup(&name)
}

/// The call `f` with `entry`'s body in its place.
fn expand(f: &ast::Function, entry: &FunctionEntry, body: &Expr) -> Result<Expr> {
    let def = &entry.def;
    let misuse = |what: &str| {
        Error::unsupported(
            format!("{what} in a call of SQL function {}", def.name),
            format!("Call it as {}.", def.signature()),
        )
    };
    if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
        return Err(misuse("OVER, FILTER or WITHIN GROUP"));
    }
    let args: Vec<Expr> = match &f.args {
        FunctionArguments::None => Vec::new(),
        FunctionArguments::List(list) => {
            if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                return Err(misuse("DISTINCT or ORDER BY"));
            }
            list.args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
                    _ => Err(misuse("a named or wildcard argument")),
                })
                .collect::<Result<_>>()?
        }
        FunctionArguments::Subquery(_) => return Err(misuse("a subquery argument")),
    };
    if args.len() != def.args.len() {
        return Err(Error::UndefinedFunction(format!(
            "function {}() with {} argument(s) does not exist; it is {}",
            def.name,
            args.len(),
            def.signature()
        )));
    }
    substitute(def, body, args)
}

/// `body` with `args` (one per parameter) in place of the parameters, and
/// the casts to the declared types.
fn substitute(def: &FunctionDef, body: &Expr, args: Vec<Expr>) -> Result<Expr> {
    let args = args
        .into_iter()
        .zip(&def.args)
        .map(|(e, a)| cast(e, &a.sql_type))
        .collect::<Result<Vec<_>>>()?;
    let mut expanded = body.clone();
    let _ = ast::visit_expressions_mut(&mut expanded, |e| {
        let position = match e {
            Expr::Identifier(id) => {
                let name = names::normalize(id);
                def.args
                    .iter()
                    .position(|a| a.name.as_deref() == Some(&name))
            }
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => p
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=def.args.len()).contains(n))
                    .map(|n| n - 1),
                _ => None,
            },
            _ => None,
        };
        if let Some(i) = position {
            // Replaced nodes are not visited again, so an argument's own
            // `$1` (a statement parameter) stays as it is.
            *e = args[i].clone();
        }
        ControlFlow::<()>::Continue(())
    });
    cast(expanded, &def.returns)
}

/// `SELECT f(NULL::t1, …)` with `f` inlined: planning it checks the body.
pub fn trial_call(def: &FunctionDef) -> Result<Statement> {
    let body = parse_body(def)?;
    let nulls = def.args.iter().map(|_| Expr::value(Value::Null)).collect();
    let expr = substitute(def, &body, nulls)?;
    crate::sql::parse(&format!("SELECT {expr}"))?
        .pop()
        .ok_or_else(|| Error::Internal("trial call vanished".into()))
}

/// Replaces every call of a SQL function in `stmt` by its body; `lookup`
/// finds user functions by name.
pub fn inline_calls(
    stmt: &mut Statement,
    lookup: &dyn Fn(&str) -> Option<Arc<FunctionEntry>>,
) -> Result<()> {
    for _ in 0..MAX_DEPTH {
        let mut error = None;
        let mut expanded = false;
        let _ = ast::visit_expressions_mut(stmt, |e| {
            if let Expr::Function(f) = e {
                if let Some(entry) = called(f, lookup) {
                    if let Body::Sql(body) = &entry.body {
                        match expand(f, &entry, body) {
                            Ok(replacement) => {
                                *e = replacement;
                                expanded = true;
                            }
                            Err(err) => {
                                error = Some(err);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(error) = error {
            return Err(error);
        }
        if !expanded {
            return Ok(());
        }
    }
    Err(Error::InvalidFunction(format!(
        "SQL functions call each other more than {MAX_DEPTH} levels deep; a function may not \
         call itself"
    )))
}

/// Whether `def`'s body calls `def` itself, directly or through other SQL
/// functions (as they are now; `def`'s own stored body, if it is being
/// replaced, is not followed).
pub fn calls_itself(
    def: &FunctionDef,
    lookup: &dyn Fn(&str) -> Option<Arc<FunctionEntry>>,
) -> Result<bool> {
    let body = parse_body(def)?;
    let others = |name: &str| match name == def.name {
        true => None,
        false => lookup(name),
    };
    Ok(reachable(direct_calls(&body), &others).contains(&def.name))
}

/// The user functions `stmt` calls, and those their bodies call, by name.
pub fn functions_used(
    stmt: &Statement,
    lookup: &dyn Fn(&str) -> Option<Arc<FunctionEntry>>,
) -> Vec<String> {
    let mut used: Vec<String> = reachable(direct_calls(stmt), lookup)
        .into_iter()
        .filter(|name| lookup(name).is_some())
        .collect();
    used.sort();
    used
}

/// The names of the functions called anywhere in `node`.
fn direct_calls<V: ast::Visit>(node: &V) -> Vec<String> {
    let mut names = Vec::new();
    let _ = ast::visit_expressions(node, |e| {
        if let Expr::Function(f) = e {
            if let Ok(name) = names::relation_name(&f.name) {
                names.push(name);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    names
}

/// `names`, and every name the bodies of the SQL functions among them call,
/// transitively; `lookup` finds a name's function (one it does not find is
/// kept but not followed).
fn reachable(
    mut pending: Vec<String>,
    lookup: &dyn Fn(&str) -> Option<Arc<FunctionEntry>>,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        if let Some(Body::Sql(body)) = lookup(&name).as_deref().map(|e| &e.body) {
            pending.extend(direct_calls(body.as_ref()));
        }
        seen.push(name);
    }
    seen
}

//! Subquery and composite-value rewrites.
//!
//! DataFusion only executes a correlated scalar subquery it can turn into a
//! join: the subquery must aggregate, and its correlation must be equalities
//! between inner and outer columns. Postgres clients write
//! `(SELECT d.adbin FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef)`;
//! we rewrite that to the equivalent
//! `CASE WHEN a.atthasdef THEN (SELECT max(d.adbin) ... WHERE d.adrelid = a.attrelid) END`:
//! conditions on outer columns only move out as a guard, other outer columns
//! are replaced by the inner columns they are equated with, and, over catalog
//! tables, the single value is wrapped in `max` (at most one row matches
//! there, so it is that row).
//!
//! Also: `ARRAY(subquery)` -> `(SELECT array_agg(..))` or `array_transform`,
//! `_pg_expandarray(a)` -> `unnest(..)`, and `(composite).field` -> `get_field`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, AccessExpr, BinaryOperator, CaseWhen, Expr,
    FunctionArguments, GroupByExpr, Ident, LambdaFunction, LambdaFunctionParameter, LambdaSyntax,
    OneOrManyWithParens, OrderByKind, Query, Select, SelectItem, SetExpr, TableFactor,
    TableWithJoins, Value,
};

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::super::defs;
use super::super::functions::EXPAND_ARRAY_LIST;
use super::ast::{
    call_args, folded, func, func_with_clauses, last_name, name_parts, order_by_clause,
    string_literal,
};
use super::get_field;

/// Rewrite calls that need more than a name change (after the qualifier strip).
pub(super) fn rewrite_function(expr: &mut Expr) {
    let Expr::Function(f) = expr else {
        return;
    };
    match last_name(&f.name).as_str() {
        "array" => {
            let FunctionArguments::Subquery(query) = &f.args else {
                return;
            };
            *expr = array_subquery(query.as_ref().clone());
            if matches!(expr, Expr::Subquery(_)) {
                prepare_scalar_subquery(expr);
            }
        }
        // A set-returning function of (element, position) pairs; DataFusion
        // expresses set-returning calls in a select list with `unnest`.
        "_pg_expandarray" => {
            if let Some(args) = call_args(f) {
                *expr = func("unnest", vec![func(EXPAND_ARRAY_LIST, args)]);
            }
        }
        _ => {}
    }
}

/// `(expr).field` -> `get_field(expr, 'field')`; subscripts stay as they are.
/// `t.col[1]` also parses as a field access on `t`; leading dots on a plain
/// identifier are column qualification and stay a compound identifier.
pub(super) fn rewrite_field_access(expr: &mut Expr) {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return;
    };
    let mut chain = std::mem::take(access_chain).into_iter().peekable();
    let mut current = std::mem::replace(root.as_mut(), Expr::value(Value::Null));
    if let Expr::Identifier(first) = &current {
        let mut parts = vec![first.clone()];
        while let Some(AccessExpr::Dot(Expr::Identifier(id))) = chain.peek() {
            parts.push(id.clone());
            chain.next();
        }
        if parts.len() > 1 {
            current = Expr::CompoundIdentifier(parts);
        }
    }
    let mut pending = Vec::new();
    for access in chain {
        match access {
            AccessExpr::Dot(Expr::Identifier(field)) => {
                current = get_field(with_accesses(current, &mut pending), &folded(&field));
            }
            other => pending.push(other),
        }
    }
    *expr = with_accesses(current, &mut pending);
}

fn with_accesses(root: Expr, pending: &mut Vec<AccessExpr>) -> Expr {
    if pending.is_empty() {
        return root;
    }
    Expr::CompoundFieldAccess {
        root: Box::new(root),
        access_chain: std::mem::take(pending),
    }
}

/// Name the single projected expression of a simple `SELECT`, if that is its shape.
fn single_projection(select: &Select) -> Option<&Expr> {
    match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => Some(e),
        _ => None,
    }
}

fn has_group_by(select: &Select) -> bool {
    !matches!(&select.group_by, GroupByExpr::Expressions(exprs, _) if exprs.is_empty())
}

/// `ARRAY(SELECT e FROM ...)`: an `array_transform` over a single unnested
/// array when that is all it does, else `(SELECT array_agg(e ORDER BY ..) FROM ...)`.
fn array_subquery(mut query: Query) -> Expr {
    if let Some(transform) = array_transform(&query) {
        return transform;
    }
    let order = match query.order_by.take().map(|o| o.kind) {
        Some(OrderByKind::Expressions(exprs)) => exprs,
        _ => Vec::new(),
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        if let Some(item) = single_projection(select).cloned() {
            let order = order
                .into_iter()
                .map(|mut o| {
                    // `ORDER BY 1` names the projected expression.
                    if matches!(&o.expr, Expr::Value(v) if v.value == Value::Number("1".into(), false)) {
                        o.expr = item.clone();
                    }
                    o
                })
                .collect();
            let agg = func_with_clauses("array_agg", vec![item], order_by_clause(order));
            select.projection = vec![SelectItem::UnnamedExpr(agg)];
        }
    }
    Expr::Subquery(Box::new(query))
}

const ELEMENT: &str = "pg_elem";

/// `ARRAY(SELECT f(x) FROM unnest(arr) x)` -> `array_transform(arr, pg_elem -> f(pg_elem))`,
/// and likewise over `pg_options_to_table(options)`, whose `option_name` /
/// `option_value` split each `name=value` element. These read a column of
/// the outer row, which DataFusion cannot do from a subquery's FROM.
fn array_transform(query: &Query) -> Option<Expr> {
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if select.selection.is_some() || has_group_by(select) || select.distinct.is_some() {
        return None;
    }
    let [TableWithJoins { relation, joins }] = select.from.as_slice() else {
        return None;
    };
    if !joins.is_empty() {
        return None;
    }
    let (function, array, names) = element_source(relation)?;
    let mut body = single_projection(select)?.clone();
    let param = Expr::Identifier(Ident::new(ELEMENT));
    let _ = visit_expressions_mut(&mut body, |e| {
        let replacement = match e {
            Expr::Identifier(id) => element_reference(&function, &folded(id), &names, &param),
            Expr::CompoundIdentifier(parts) => parts
                .last()
                .and_then(|id| element_reference(&function, &folded(id), &names, &param)),
            _ => None,
        };
        if let Some(r) = replacement {
            *e = r;
        }
        ControlFlow::<()>::Continue(())
    });
    let lambda = Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: Ident::new(ELEMENT),
            data_type: None,
        }),
        body: Box::new(body),
        syntax: LambdaSyntax::Arrow,
    });
    Some(func("array_transform", vec![array, lambda]))
}

/// The set-returning FROM item of an `ARRAY(...)`: function name, its array
/// argument, and the names its element goes by.
fn element_source(relation: &TableFactor) -> Option<(String, Expr, Vec<String>)> {
    let (function, arg, alias) = match relation {
        TableFactor::UNNEST {
            array_exprs, alias, ..
        } => match array_exprs.as_slice() {
            [arr] => ("unnest".to_string(), arr.clone(), alias),
            _ => return None,
        },
        TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } => {
            let exprs = args
                .args
                .iter()
                .map(|a| match a {
                    datafusion::sql::sqlparser::ast::FunctionArg::Unnamed(
                        datafusion::sql::sqlparser::ast::FunctionArgExpr::Expr(e),
                    ) => Some(e.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            match exprs.as_slice() {
                [arr] => (last_name(name), arr.clone(), alias),
                _ => return None,
            }
        }
        _ => return None,
    };
    let mut names = Vec::new();
    if let Some(alias) = alias {
        names.push(folded(&alias.name));
        names.extend(alias.columns.iter().map(|c| folded(&c.name)));
    }
    match function.as_str() {
        "unnest" => {
            names.push("unnest".to_string());
            Some((function, arg, names))
        }
        "pg_options_to_table" => Some((function, arg, names)),
        _ => None,
    }
}

fn element_reference(function: &str, name: &str, names: &[String], param: &Expr) -> Option<Expr> {
    match function {
        "pg_options_to_table" => match name {
            "option_name" => Some(func(
                "split_part",
                vec![
                    param.clone(),
                    string_literal("="),
                    Expr::value(Value::Number("1".into(), false)),
                ],
            )),
            "option_value" => Some(func(
                "substr",
                vec![
                    param.clone(),
                    Expr::BinaryOp {
                        left: Box::new(func("strpos", vec![param.clone(), string_literal("=")])),
                        op: BinaryOperator::Plus,
                        right: Box::new(Expr::value(Value::Number("1".into(), false))),
                    },
                ],
            )),
            _ => None,
        },
        _ => names.iter().any(|n| n == name).then(|| param.clone()),
    }
}

/// Aliases of the relations a subquery's FROM introduces.
fn from_aliases(from: &[TableWithJoins]) -> HashSet<String> {
    let mut aliases = HashSet::new();
    for twj in from {
        collect_alias(&twj.relation, &mut aliases);
        for join in &twj.joins {
            collect_alias(&join.relation, &mut aliases);
        }
    }
    aliases
}

fn collect_alias(factor: &TableFactor, out: &mut HashSet<String>) {
    match factor {
        TableFactor::Table { name, alias, .. } => {
            out.insert(
                alias
                    .as_ref()
                    .map_or_else(|| last_name(name), |a| folded(&a.name)),
            );
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
        } => {
            if let Some(a) = alias {
                out.insert(folded(&a.name));
            }
            out.extend(from_aliases(std::slice::from_ref(table_with_joins)));
        }
        TableFactor::Derived { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::Function { alias, .. } => {
            if let Some(a) = alias {
                out.insert(folded(&a.name));
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Inner,
    Outer,
    NotColumn,
}

/// Unqualified columns are taken as inner: only a qualifier tells us a
/// column belongs to the outer query.
fn column_side(expr: &Expr, inner: &HashSet<String>) -> Side {
    match expr {
        Expr::Nested(e) => column_side(e, inner),
        Expr::Identifier(_) => Side::Inner,
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            if inner.contains(&folded(&parts[parts.len() - 2])) {
                Side::Inner
            } else {
                Side::Outer
            }
        }
        _ => Side::NotColumn,
    }
}

#[derive(Debug, Default)]
struct Refs {
    inner: bool,
    outer: bool,
    /// Contains a subquery, whose own aliases we do not track.
    nested: bool,
}

fn references(expr: &Expr, inner: &HashSet<String>) -> Refs {
    let mut refs = Refs::default();
    let _ = visit_expressions(expr, |e| {
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => refs.nested = true,
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match column_side(e, inner) {
                Side::Inner => refs.inner = true,
                Side::Outer => refs.outer = true,
                Side::NotColumn => {}
            },
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    refs
}

fn split_and(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner, out)
        }
        other => out.push(other),
    }
}

fn and_all(mut exprs: Vec<Expr>) -> Option<Expr> {
    let first = if exprs.is_empty() {
        return None;
    } else {
        exprs.remove(0)
    };
    Some(exprs.into_iter().fold(first, |acc, e| Expr::BinaryOp {
        left: Box::new(acc),
        op: BinaryOperator::And,
        right: Box::new(e),
    }))
}

/// `inner = outer` conjuncts, as (outer column text, inner column).
fn equivalences(conjuncts: &[Expr], inner: &HashSet<String>) -> Vec<(String, Expr)> {
    conjuncts
        .iter()
        .filter_map(|c| {
            let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = c
            else {
                return None;
            };
            match (column_side(left, inner), column_side(right, inner)) {
                (Side::Inner, Side::Outer) => Some((right.to_string(), *left.clone())),
                (Side::Outer, Side::Inner) => Some((left.to_string(), *right.clone())),
                _ => None,
            }
        })
        .collect()
}

fn substitute(expr: &mut Expr, equivalences: &[(String, Expr)]) {
    let _ = visit_expressions_mut(expr, |e| {
        if matches!(e, Expr::CompoundIdentifier(_)) {
            let text = e.to_string();
            if let Some((_, inner)) = equivalences.iter().find(|(outer, _)| *outer == text) {
                *e = inner.clone();
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
];

fn is_aggregated(expr: &Expr) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::Function(f)
            if f.over.is_some() || AGGREGATES.contains(&last_name(&f.name).as_str()) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Make a correlated scalar subquery one DataFusion can decorrelate (see the
/// module comment). Uncorrelated ones are left alone.
pub(super) fn prepare_scalar_subquery(expr: &mut Expr) {
    let Expr::Subquery(query) = expr else {
        return;
    };
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let inner = from_aliases(&select.from);
    let mut conjuncts = Vec::new();
    if let Some(selection) = select.selection.take() {
        split_and(selection, &mut conjuncts);
    }
    let pairs = equivalences(&conjuncts, &inner);
    let mut kept = Vec::new();
    let mut guards = Vec::new();
    let mut correlated = false;
    for mut conjunct in conjuncts {
        let defines_equivalence = equivalences(std::slice::from_ref(&conjunct), &inner).len() == 1;
        if !defines_equivalence {
            substitute(&mut conjunct, &pairs);
        }
        let refs = references(&conjunct, &inner);
        correlated |= refs.outer;
        if refs.outer && !refs.inner && !refs.nested && !defines_equivalence {
            guards.push(conjunct);
        } else {
            kept.push(conjunct);
        }
    }
    select.selection = and_all(kept);
    if correlated {
        wrap_single_value(select, &inner);
    }
    if let Some(condition) = and_all(guards) {
        let subquery = std::mem::replace(expr, Expr::value(Value::Null));
        *expr = Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition,
                result: subquery,
            }],
            else_result: None,
        };
    }
}

/// Whether every table a FROM list reads is a catalog relation. Only there
/// do we know a correlated subquery yields at most one row (keys are unique);
/// over user tables Postgres would raise an error for several rows, which
/// `max` would hide.
fn reads_only_catalogs(from: &[TableWithJoins]) -> bool {
    let is_catalog = |factor: &TableFactor| match factor {
        TableFactor::Table {
            name, args: None, ..
        } => {
            let parts = name_parts(name);
            match parts.as_slice() {
                [schema, _] => matches!(schema.as_str(), "pg_catalog" | "information_schema"),
                [table] => defs::find(defs::PG_CATALOG, table).is_some(),
                _ => false,
            }
        }
        _ => false,
    };
    from.iter()
        .all(|twj| is_catalog(&twj.relation) && twj.joins.iter().all(|j| is_catalog(&j.relation)))
}

/// `SELECT e` -> `SELECT max(e)` for a correlated subquery over catalogs
/// that does not aggregate.
fn wrap_single_value(select: &mut Select, inner: &HashSet<String>) {
    if has_group_by(select)
        || select.having.is_some()
        || select.distinct.is_some()
        || !reads_only_catalogs(&select.from)
    {
        return;
    }
    let (expr, alias) = match select.projection.as_mut_slice() {
        [SelectItem::UnnamedExpr(e)] => (e, None),
        [SelectItem::ExprWithAlias { expr, alias }] => (expr, Some(alias.clone())),
        _ => return,
    };
    let refs = references(expr, inner);
    if is_aggregated(expr) || refs.outer || refs.nested {
        return;
    }
    let value = std::mem::replace(expr, Expr::value(Value::Null));
    let wrapped = func("max", vec![value]);
    select.projection = vec![match alias {
        Some(alias) => SelectItem::ExprWithAlias {
            expr: wrapped,
            alias,
        },
        None => SelectItem::UnnamedExpr(wrapped),
    }];
}

/// DataFusion plans `EXISTS` only as a filter; in a select list it becomes
/// `(SELECT count(*) ...) > 0`, a correlated aggregate it can decorrelate.
pub(super) fn exists_in_projection(select: &mut Select) {
    for item in &mut select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let _ = visit_expressions_mut(expr, |e| {
            if let Expr::Exists { subquery, negated } = e {
                if let Some(count) = count_rows(subquery) {
                    *e = Expr::BinaryOp {
                        left: Box::new(Expr::Subquery(count)),
                        op: if *negated {
                            BinaryOperator::Eq
                        } else {
                            BinaryOperator::Gt
                        },
                        right: Box::new(Expr::value(Value::Number("0".into(), false))),
                    };
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

fn count_rows(query: &Query) -> Option<Box<Query>> {
    let mut query = query.clone();
    query.limit_clause = None;
    query.order_by = None;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if has_group_by(select) || select.having.is_some() || select.distinct.is_some() {
        return None;
    }
    let count_star = Parser::new(&PostgreSqlDialect {})
        .try_with_sql("count(*)")
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    select.projection = vec![SelectItem::UnnamedExpr(count_star)];
    Some(Box::new(query))
}

//! Rewrites a parsed statement so DataFusion can plan the catalog queries of
//! Postgres clients. Each rewrite turns Postgres-only syntax into an
//! equivalent DataFusion understands:
//!
//! - `OPERATOR(pg_catalog.~)` -> `~`; `COLLATE pg_catalog.default` dropped;
//!   `pg_catalog.` / `information_schema.` dropped from function names;
//! - casts to `regclass` / `regtype` / `regproc` / `oid` / `name` / ... (`casts`);
//! - unqualified catalog tables get `pg_catalog.`; table functions such as
//!   `generate_series(..) s` get Postgres' column naming (`relations`);
//! - `ARRAY(subquery)`, correlated scalar subqueries, `_pg_expandarray`,
//!   `(composite).field` (`subquery`);
//! - output columns named as Postgres names them (`count`, `?column?`), and
//!   duplicate unnamed expressions made unique, which DataFusion requires.
//!
//! It never consults the catalog contents: only syntax and, to keep user
//! tables shadowing catalog names, the `is_user_relation` callback.

mod ast;
mod casts;
mod relations;
mod subquery;

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType, Expr, FunctionArguments, Query, Select,
    SelectItem, SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
};

use self::ast::{func, last_name, string_literal};

pub(super) fn rewrite_statement(stmt: &mut Statement, is_user_relation: &dyn Fn(&str) -> bool) {
    if let Statement::Query(query) = stmt {
        name_output_columns(query);
    }
    let mut rewriter = Rewriter {
        is_user_relation,
        ctes: HashSet::new(),
    };
    // The visitor never breaks, so the result carries nothing.
    let _ = stmt.visit(&mut rewriter);
}

struct Rewriter<'a> {
    is_user_relation: &'a dyn Fn(&str) -> bool,
    /// CTE names seen so far; they shadow catalog tables like user tables do.
    ctes: HashSet<String>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if let SetExpr::Select(select) = query.body.as_mut() {
            null_columns_as_text(select);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        make_unnamed_columns_unique(select);
        subquery::exists_in_projection(select);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let is_shadowed = |name: &str| self.ctes.contains(name) || (self.is_user_relation)(name);
        relations::rewrite_table_factor(factor, &is_shadowed);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        rewrite_expr(expr);
        ControlFlow::Continue(())
    }

    /// Done after the children, so the node built is not visited again.
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        bigint_window_functions(expr);
        ControlFlow::Continue(())
    }
}

/// `row_number()`, `rank()`, ... are `bigint` in Postgres but unsigned in
/// DataFusion, which has no Postgres type.
fn bigint_window_functions(expr: &mut Expr) {
    let Expr::Function(f) = expr else {
        return;
    };
    let unsigned = matches!(
        last_name(&f.name).as_str(),
        "row_number" | "rank" | "dense_rank" | "ntile"
    );
    if unsigned && f.over.is_some() {
        let call = std::mem::replace(expr, Expr::value(Value::Null));
        *expr = ast::cast(call, DataType::BigInt(None), CastKind::Cast);
    }
}

/// A bare `NULL` output column of a query (not of one branch of a UNION,
/// whose type comes from the other branches) is `text` in Postgres;
/// DataFusion would give it the Null type, which has no wire representation.
fn null_columns_as_text(select: &mut Select) {
    for item in &mut select.projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        if matches!(expr, Expr::Value(v) if v.value == Value::Null) {
            *expr = ast::cast(expr.clone(), DataType::Text, CastKind::DoubleColon);
        }
    }
}

/// Rewrite one expression node; the visitor then descends into the result.
fn rewrite_expr(expr: &mut Expr) {
    while let Expr::Collate { expr: inner, .. } = expr {
        *expr = std::mem::replace(inner.as_mut(), Expr::value(Value::Null));
    }
    match expr {
        Expr::BinaryOp { left, op, right } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                if let Some(mapped) = parts.last().and_then(|o| standard_operator(o)) {
                    *op = mapped;
                }
            }
            if is_comparison(op) {
                casts::to_oid_context(left);
                casts::to_oid_context(right);
                casts::array_literal_comparison(left, right);
            }
        }
        Expr::InList {
            expr: needle, list, ..
        } => {
            casts::to_oid_context(needle);
            list.iter_mut().for_each(casts::to_oid_context);
        }
        Expr::Cast { .. } => casts::rewrite_cast(expr),
        Expr::Function(f) => {
            ast::strip_catalog_qualifier(&mut f.name);
            subquery::rewrite_function(expr);
        }
        Expr::CompoundFieldAccess { .. } => subquery::rewrite_field_access(expr),
        Expr::Subquery(_) => subquery::prepare_scalar_subquery(expr),
        _ => {}
    }
}

fn standard_operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "~~*" => BinaryOperator::PGILikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "!~~*" => BinaryOperator::PGNotILikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" | "!=" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        "||" => BinaryOperator::StringConcat,
        "+" => BinaryOperator::Plus,
        "-" => BinaryOperator::Minus,
        "*" => BinaryOperator::Multiply,
        "/" => BinaryOperator::Divide,
        _ => return None,
    })
}

fn is_comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    )
}

/// Name the outermost query's unnamed output columns as Postgres does
/// (`format_type`, `case`, `?column?`), computed before any rewrite so the
/// names reflect what the client wrote.
fn name_output_columns(query: &mut Query) {
    let Some(select) = leftmost_select(&mut query.body) else {
        return;
    };
    let mut taken: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
            SelectItem::UnnamedExpr(e) => column_reference_name(e),
            _ => None,
        })
        .collect();
    for item in &mut select.projection {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if column_reference_name(expr).is_some() {
            continue;
        }
        let name = figure_column_name(expr);
        if taken.insert(name.to_lowercase()) {
            let expr = std::mem::replace(expr, Expr::value(Value::Null));
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: ast::quoted_ident(&name),
            };
        }
    }
}

fn leftmost_select(body: &mut SetExpr) -> Option<&mut Select> {
    match body {
        SetExpr::Select(select) => Some(select),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        SetExpr::Query(query) => leftmost_select(&mut query.body),
        _ => None,
    }
}

/// The name DataFusion already gives a plain column reference.
fn column_reference_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(id) => Some(id.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|id| id.value.to_lowercase()),
        _ => None,
    }
}

/// Postgres' `FigureColname`.
pub(super) fn figure_column_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            column_reference_name(expr).unwrap_or_default()
        }
        Expr::Function(f) if matches!(f.args, FunctionArguments::Subquery(_)) => {
            "array".to_string()
        }
        Expr::Function(f) => last_name(&f.name),
        Expr::Nested(inner) => figure_column_name(inner),
        Expr::Cast {
            expr, data_type, ..
        } => match figure_column_name(expr).as_str() {
            "?column?" => casts::type_display_name(data_type),
            name => name.to_string(),
        },
        Expr::Case { .. } => "case".to_string(),
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(field))) => ast::folded(field),
            _ => "?column?".to_string(),
        },
        Expr::Exists { .. } => "exists".to_string(),
        Expr::Array(_) => "array".to_string(),
        _ => "?column?".to_string(),
    }
}

/// DataFusion rejects two output columns with the same name, which unnamed
/// expressions such as `NULL, NULL` produce; give the repeats an alias.
fn make_unnamed_columns_unique(select: &mut Select) {
    let mut seen = HashSet::new();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if column_reference_name(expr).is_some() || seen.insert(expr.to_string()) {
            continue;
        }
        let expr = std::mem::replace(expr, Expr::value(Value::Null));
        let alias = format!("{}_{}", figure_column_name(&expr), i + 1);
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: ast::quoted_ident(&alias),
        };
    }
}

/// Shared by the submodules: `get_field(expr, 'name')`.
fn get_field(expr: Expr, field: &str) -> Expr {
    func("get_field", vec![expr, string_literal(field)])
}

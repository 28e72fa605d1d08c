//! Small constructors and inspectors for sqlparser AST nodes used by the
//! rewrites (function calls, literals, casts, qualified names).

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArgumentList, FunctionArguments, Ident, ObjectName, ObjectNamePart, OrderByExpr, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

pub(super) fn ident(name: &str) -> Ident {
    Ident::new(name)
}

/// A quoted identifier, so it keeps its exact spelling (`"?column?"`).
pub(super) fn quoted_ident(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// Unquoted identifiers are case-insensitive in Postgres; compare folded.
pub(super) fn folded(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

pub(super) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => folded(id),
            other => other.to_string(),
        })
        .collect()
}

pub(super) fn last_name(name: &ObjectName) -> String {
    name_parts(name).pop().unwrap_or_default()
}

/// Drop a leading `pg_catalog.` / `information_schema.`: Postgres finds
/// those functions implicitly, and DataFusion registers them unqualified.
pub(super) fn strip_catalog_qualifier(name: &mut ObjectName) {
    let parts = name_parts(name);
    if parts.len() == 2 && matches!(parts[0].as_str(), "pg_catalog" | "information_schema") {
        name.0.remove(0);
    }
}

pub(super) fn func(name: &str, args: Vec<Expr>) -> Expr {
    func_with_clauses(name, args, Vec::new())
}

pub(super) fn func_with_clauses(
    name: &str,
    args: Vec<Expr>,
    clauses: Vec<FunctionArgumentClause>,
) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![ident(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// The positional expression arguments of a call, if it has a plain list.
pub(super) fn call_args(f: &Function) -> Option<Vec<Expr>> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    list.args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn string_literal(text: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(text.to_string()))
}

/// The text of a string literal, looking through parentheses.
pub(super) fn as_string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Nested(inner) => as_string_literal(inner),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn cast(expr: Expr, data_type: DataType, kind: CastKind) -> Expr {
    Expr::Cast {
        kind,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

pub(super) fn order_by_clause(exprs: Vec<OrderByExpr>) -> Vec<FunctionArgumentClause> {
    if exprs.is_empty() {
        Vec::new()
    } else {
        vec![FunctionArgumentClause::OrderBy(exprs)]
    }
}

/// Parse a SQL fragment built from already-parsed pieces (their `Display`
/// round-trips); used where building the AST by hand would be long.
pub(super) fn parse_query(
    sql: &str,
) -> Result<datafusion::sql::sqlparser::ast::Query, ParserError> {
    let mut parser = Parser::new(&PostgreSqlDialect {}).try_with_sql(sql)?;
    parser.parse_query().map(|q| *q)
}

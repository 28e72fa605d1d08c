//! Window table functions in a FROM clause:
//!
//! - `TUMBLE(rel, col, size [, offset])`
//! - `HOP(rel, col, slide, size [, offset])`
//! - `SESSION(rel, col, gap [, key …])`
//!
//! (RisingWave's form; Flink's `TABLE(TUMBLE(TABLE rel, DESCRIPTOR(col),
//! size))` is read too). Before planning, each call becomes a derived table:
//! the relation's rows with `window_start` and `window_end` appended. A
//! tumbling window is one projection (`date_bin`); a hopping window of size
//! `k * slide` is the union of `k` projections, the `i`-th starting `i`
//! slides before the slide the row falls in. Nothing after the rewrite knows
//! about windows: aggregates, joins and top-N see ordinary columns, so ad-hoc
//! queries, materialized views and EXPLAIN treat them alike, and a late row
//! simply updates the groups of its windows.
//!
//! A session window is not a function of one row: it becomes a pair of
//! window functions over the key's rows ([`crate::sql::sessions`]), which a
//! query evaluates in batch and a materialized view maintains with the
//! session operator.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Query, SetExpr,
    Statement, TableAlias, TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::dataflow::expr::MICROS_PER_DAY;
use crate::error::{Error, Result};

/// A hopping window covers at most this many slides: each is one branch of
/// a union, so every row is copied this many times.
const MAX_HOPS: i64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tumble,
    Hop,
    Session,
}

impl Kind {
    fn of(name: &ObjectName) -> Option<Kind> {
        let [part] = name.0.as_slice() else {
            return None;
        };
        let ident = part.as_ident()?;
        match ident.value.to_ascii_lowercase().as_str() {
            "tumble" => Some(Kind::Tumble),
            "hop" => Some(Kind::Hop),
            "session" => Some(Kind::Session),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Tumble => "TUMBLE",
            Kind::Hop => "HOP",
            Kind::Session => "SESSION",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::Tumble => "TUMBLE(relation, time_column, size [, offset]), e.g. TUMBLE(events, ts, INTERVAL '1 minute')",
            Kind::Hop => "HOP(relation, time_column, slide, size [, offset]), e.g. HOP(bids, ts, INTERVAL '2 seconds', INTERVAL '10 seconds')",
            Kind::Session => "SESSION(relation, time_column, gap [, key_column …]), e.g. SESSION(clicks, ts, INTERVAL '30 minutes', user_id)",
        }
    }
}

/// Rewrites every window table function in `stmt` into a derived table.
pub fn rewrite(stmt: &mut Statement) -> Result<()> {
    match stmt.visit(&mut Windows) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Windows;

impl VisitorMut for Windows {
    type Break = Error;

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Error> {
        let call = match factor {
            TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } => Kind::of(name).map(|kind| (kind, args.args.clone(), alias.take())),
            TableFactor::TableFunction {
                expr: Expr::Function(f),
                alias,
            } => match (&f.args, Kind::of(&f.name)) {
                (FunctionArguments::List(list), Some(kind)) => {
                    Some((kind, list.args.clone(), alias.take()))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((kind, args, alias)) = call else {
            return ControlFlow::Continue(());
        };
        match derived(kind, &args, alias) {
            Ok(table) => {
                *factor = table;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// The derived table standing for one window call.
fn derived(kind: Kind, args: &[FunctionArg], alias: Option<TableAlias>) -> Result<TableFactor> {
    let bad = |message: String| Error::InvalidArgument {
        message,
        hint: format!("Write {}.", kind.usage()),
    };
    let args = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(bad(format!(
                "{} does not take the argument {other}",
                kind.name()
            ))),
        })
        .collect::<Result<Vec<&Expr>>>()?;
    let (fixed, rest) = match kind {
        Kind::Tumble => (3, &args[args.len().min(3)..]),
        Kind::Hop => (4, &args[args.len().min(4)..]),
        Kind::Session => (3, &args[args.len().min(3)..]),
    };
    if kind == Kind::Session && args.len() < fixed {
        return Err(bad(format!(
            "SESSION takes a relation, a time column, a gap and any key columns, not {} arguments",
            args.len()
        )));
    }
    if kind != Kind::Session && (args.len() < fixed || rest.len() > 1) {
        return Err(bad(format!(
            "{} takes {} or {} arguments, not {}",
            kind.name(),
            fixed,
            fixed + 1,
            args.len()
        )));
    }
    let relation = match args[0] {
        Expr::Identifier(id) => ObjectName::from(vec![id.clone()]),
        Expr::CompoundIdentifier(ids) => ObjectName::from(ids.clone()),
        other => {
            return Err(bad(format!(
                "the first argument of {} must name a table, view or source, not {other}",
                kind.name()
            )))
        }
    };
    let column = descriptor(args[1]);
    // A session window's further arguments are its keys.
    let offset = match rest.first() {
        Some(e) if kind != Kind::Session => Some(interval_micros(e, "offset", kind)?),
        _ => None,
    };
    let bin = |stride: i64| match offset {
        Some(off) if off != 0 => format!(
            "(date_bin({}, {column} - {}) + {})",
            interval(stride),
            duration(off),
            duration(off)
        ),
        _ => format!("date_bin({}, {column})", interval(stride)),
    };
    let select = |start: &str, size: i64| {
        format!(
            "SELECT *, {start} AS window_start, {start} + {} AS window_end FROM {relation}",
            duration(size)
        )
    };
    let sql = match kind {
        Kind::Tumble => {
            let size = interval_micros(args[2], "size", kind)?;
            select(&bin(size), size)
        }
        Kind::Session => {
            let gap = interval_micros(args[2], "gap", kind)?;
            let over = match rest {
                [] => String::new(),
                keys => {
                    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                    format!("PARTITION BY {}", keys.join(", "))
                }
            };
            format!(
                "SELECT *, {start}({column}, {gap}) OVER ({over}) AS window_start, \
                 {end}({column}, {gap}) OVER ({over}) AS window_end FROM {relation}",
                start = crate::sql::sessions::SESSION_START,
                end = crate::sql::sessions::SESSION_END,
            )
        }
        Kind::Hop => {
            let slide = interval_micros(args[2], "slide", kind)?;
            let size = interval_micros(args[3], "size", kind)?;
            if size % slide != 0 {
                return Err(bad(format!(
                    "the size of a HOP window ({}) must be a whole number of slides ({})",
                    human_interval(size),
                    human_interval(slide)
                )));
            }
            let hops = size / slide;
            if hops > MAX_HOPS {
                return Err(bad(format!(
                    "a HOP window of {hops} slides is more than the {MAX_HOPS} EddyDB supports"
                )));
            }
            let first = bin(slide);
            (0..hops)
                .map(|i| match i {
                    0 => select(&first, size),
                    i => select(&format!("({first} - {})", duration(i * slide)), size),
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        }
    };
    Ok(derived_table(parse_query(&sql)?, alias, &relation, kind))
}

/// `subquery` under the call's alias, or under the relation's name.
fn derived_table(
    subquery: Box<Query>,
    alias: Option<TableAlias>,
    relation: &ObjectName,
    kind: Kind,
) -> TableFactor {
    let alias = alias.unwrap_or_else(|| TableAlias {
        explicit: true,
        name: relation
            .0
            .last()
            .and_then(|p| p.as_ident())
            .cloned()
            .unwrap_or_else(|| Ident::new(kind.name().to_ascii_lowercase())),
        columns: Vec::new(),
        at: None,
    });
    TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(alias),
        sample: None,
    }
}

/// `DESCRIPTOR(col)` (Flink) names the column `col`.
fn descriptor(expr: &Expr) -> &Expr {
    if let Expr::Function(f) = expr {
        if f.name.to_string().eq_ignore_ascii_case("descriptor") {
            if let FunctionArguments::List(list) = &f.args {
                if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(inner))] = list.args.as_slice() {
                    return inner;
                }
            }
        }
    }
    expr
}

/// A length to add to or subtract from a time: a duration, which Arrow
/// adds as an integer, where an interval would go through a calendar
/// for every row.
fn duration(micros: i64) -> String {
    format!("arrow_cast({micros}, 'Duration(Microsecond)')")
}

fn interval(micros: i64) -> String {
    format!("INTERVAL '{micros} microseconds'")
}

/// A window length given as an interval literal, in microseconds.
fn interval_micros(expr: &Expr, what: &str, kind: Kind) -> Result<i64> {
    let bad = |why: &str| Error::InvalidArgument {
        message: format!(
            "the {what} of a {} window must be {why}, not {expr}",
            kind.name()
        ),
        hint: format!("Write {}.", kind.usage()),
    };
    let string = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            _ => None,
        },
        _ => None,
    };
    let text = match expr {
        Expr::Interval(i) => string(&i.value).map(|s| match &i.leading_field {
            Some(field) => format!("{s} {field}"),
            None => s,
        }),
        Expr::Cast {
            expr: inner,
            data_type: datafusion::sql::sqlparser::ast::DataType::Interval { .. },
            ..
        } => string(inner),
        _ => None,
    }
    .ok_or_else(|| bad("an interval literal"))?;
    let micros = match interval_parts(&text) {
        None => return Err(bad("an interval literal")),
        Some((months, _)) if months != 0 => {
            return Err(bad("a fixed length (days or less; months and years vary)"))
        }
        Some((_, None)) => return Err(bad("a whole number of microseconds")),
        Some((_, Some(micros))) => micros,
    };
    let positive = what != "offset";
    if (positive && micros <= 0) || micros < 0 {
        return Err(bad(if positive { "positive" } else { "zero or more" }));
    }
    Ok(micros)
}

/// An interval's months, and the rest in whole microseconds (`None` when
/// it is not whole or too long); `None` when `text` is no interval.
fn interval_parts(text: &str) -> Option<(i32, Option<i64>)> {
    let data_type = DataType::Interval(IntervalUnit::MonthDayNano);
    let field = Field::new("interval", data_type.clone(), true);
    let value = crate::sql::copy_format::parse_text_value(text, &data_type, &field).ok()?;
    let ScalarValue::IntervalMonthDayNano(Some(v)) = value else {
        return None;
    };
    let micros = i64::from(v.days)
        .checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(v.nanoseconds / 1000))
        .filter(|_| v.nanoseconds % 1000 == 0);
    Some((v.months, micros))
}

/// An interval of fixed length (no months) given as text, in microseconds.
pub(crate) fn fixed_interval_micros(text: &str) -> Option<i64> {
    match interval_parts(text)? {
        (0, micros) => micros,
        _ => None,
    }
}

/// A duration for a message: `90s` → `1 min 30 s`.
pub(crate) fn human_interval(us: i64) -> String {
    let (s, rest) = (us / 1_000_000, us % 1_000_000);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 || rest > 0 || parts.is_empty() {
        parts.push(match rest {
            0 => format!("{s} s"),
            r => format!("{:.3} s", s as f64 + r as f64 / 1e6),
        });
    }
    parts.join(" ")
}

fn parse_query(sql: &str) -> Result<Box<Query>> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)?;
    match statements.pop() {
        Some(Statement::Query(q))
            if matches!(*q.body, SetExpr::Select(_) | SetExpr::SetOperation { .. }) =>
        {
            Ok(q)
        }
        _ => Err(Error::Internal(format!("window rewrite produced {sql}"))),
    }
}

/// Flink writes `TUMBLE(TABLE rel, DESCRIPTOR(col), …)`; the `TABLE`
/// keyword before the relation is dropped so the call parses like
/// RisingWave's form. Returns the text unchanged when there is no such call.
pub fn strip_table_arguments(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.to_ascii_lowercase().contains("descriptor") {
        return sql.into();
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return sql.into();
    };
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    // Byte ranges of the `TABLE` keywords to cut out of the original text
    // (rebuilding it from tokens would lose how strings were quoted).
    let mut cuts = Vec::new();
    for w in significant.windows(3) {
        let [name, paren, table] = w else {
            continue;
        };
        let is_window = matches!(&name.token, Token::Word(n) if n.quote_style.is_none()
            && matches!(n.value.to_ascii_lowercase().as_str(), "tumble" | "hop"));
        let is_table = matches!(&table.token, Token::Word(t) if t.quote_style.is_none()
            && t.keyword == Keyword::TABLE);
        if is_window && paren.token == Token::LParen && is_table {
            let start = byte_offset(sql, table.span.start);
            cuts.push(start..byte_offset(sql, table.span.end));
        }
    }
    if cuts.is_empty() {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for cut in cuts {
        out.push_str(&sql[at..cut.start]);
        at = cut.end;
    }
    out.push_str(&sql[at..]);
    out.into()
}

/// The byte offset in `sql` of a tokenizer location (1-based line and
/// character column).
pub(super) fn byte_offset(sql: &str, at: Location) -> usize {
    let line_start: usize = sql
        .split_inclusive('\n')
        .take(at.line.saturating_sub(1) as usize)
        .map(str::len)
        .sum();
    let column = sql[line_start..]
        .char_indices()
        .nth(at.column.saturating_sub(1) as usize)
        .map_or(sql.len() - line_start, |(i, _)| i);
    line_start + column
}

/// `… EMIT ON WINDOW CLOSE` ending one statement: the text before the
/// clause, or `None` without one.
pub fn strip_emit_clause(sql: &str) -> Option<&str> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let words: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon))
        .collect();
    let [.., emit, on, window, close] = words.as_slice() else {
        return None;
    };
    let is = |t: &Token, word: &str| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    if !(is(&emit.token, "emit")
        && is(&on.token, "on")
        && is(&window.token, "window")
        && is(&close.token, "close"))
    {
        return None;
    }
    Some(&sql[..byte_offset(sql, emit.span.start)])
}

/// Marks a parsed `CREATE MATERIALIZED VIEW` (or its EXPLAIN) as `EMIT ON
/// WINDOW CLOSE`, as the view option `emit = 'on_window_close'`.
pub fn set_emit_on_close(stmt: &mut Statement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{CreateTableOptions, SqlOption};
    match stmt {
        Statement::Explain { statement, .. } => set_emit_on_close(statement),
        Statement::CreateView(create) if create.materialized => {
            let option = SqlOption::KeyValue {
                key: Ident::new(crate::sql::views::EMIT_OPTION),
                value: Expr::value(Value::SingleQuotedString("on_window_close".into())),
            };
            match &mut create.options {
                CreateTableOptions::With(options) => options.push(option),
                options => *options = CreateTableOptions::With(vec![option]),
            }
            Ok(())
        }
        _ => Err(Error::Syntax {
            message: "EMIT ON WINDOW CLOSE ends a CREATE MATERIALIZED VIEW statement only".into(),
            line_col: None,
            position: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> Result<String> {
        let sql = strip_table_arguments(sql);
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, &sql)?.remove(0);
        rewrite(&mut stmt)?;
        Ok(stmt.to_string())
    }

    #[test]
    fn tumble_becomes_a_projection() {
        let out = rewritten(
            "SELECT window_start, count(*) FROM TUMBLE(e, ts, INTERVAL '1 minute') GROUP BY 1",
        )
        .unwrap();
        assert_eq!(
            out,
            "SELECT window_start, count(*) FROM (SELECT *, date_bin(INTERVAL '60000000 microseconds', ts) AS window_start, \
             date_bin(INTERVAL '60000000 microseconds', ts) + arrow_cast(60000000, 'Duration(Microsecond)') AS window_end \
             FROM e) AS e GROUP BY 1"
        );
    }

    #[test]
    fn flink_form_reads_like_risingwave_form() {
        let flink = rewritten(
            "SELECT * FROM TABLE(TUMBLE(TABLE e, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) AS w",
        )
        .unwrap();
        let rw = rewritten("SELECT * FROM TUMBLE(e, ts, INTERVAL '1 minute') AS w").unwrap();
        assert_eq!(flink, rw);
        // Text without a window call is left as it was, quotes and all.
        let plain = "SELECT 'descriptor', 'it''s' FROM t";
        assert_eq!(strip_table_arguments(plain), plain);
        // With one, only the TABLE keyword goes: quoting stays as written.
        let quoted =
            "SELECT \"Page\", 'O''Brien', E'a\\'b' FROM TABLE(TUMBLE(\n  TABLE \"Clicks\", \
                      DESCRIPTOR(ts), INTERVAL '1' MINUTE)) WHERE x = 'é''s'";
        assert_eq!(
            strip_table_arguments(quoted),
            "SELECT \"Page\", 'O''Brien', E'a\\'b' FROM TABLE(TUMBLE(\n   \"Clicks\", \
             DESCRIPTOR(ts), INTERVAL '1' MINUTE)) WHERE x = 'é''s'"
        );
    }

    #[test]
    fn hop_is_a_union_of_slides_with_an_offset() {
        let out = rewritten(
            "SELECT * FROM HOP(s.bids, ts, INTERVAL '2 seconds', INTERVAL '6 seconds', INTERVAL '1 second') b",
        )
        .unwrap();
        assert_eq!(out.matches("UNION ALL").count(), 2, "{out}");
        assert!(out.contains("date_bin(INTERVAL '2000000 microseconds', ts - arrow_cast(1000000, 'Duration(Microsecond)')) + arrow_cast(1000000, 'Duration(Microsecond)')"), "{out}");
        assert!(
            out.contains(" - arrow_cast(4000000, 'Duration(Microsecond)')"),
            "{out}"
        );
        assert!(out.ends_with(") b"), "{out}");
    }

    #[test]
    fn session_becomes_window_functions_over_its_keys() {
        let out = rewritten(
            "SELECT * FROM SESSION(clicks, ts, INTERVAL '30 minutes', user_id, lower(page)) s",
        )
        .unwrap();
        assert_eq!(
            out,
            "SELECT * FROM (SELECT *, eddy_session_start(ts, 1800000000) OVER (PARTITION BY user_id, \
             lower(page)) AS window_start, eddy_session_end(ts, 1800000000) OVER (PARTITION BY \
             user_id, lower(page)) AS window_end FROM clicks) s"
        );
        let out = rewritten("SELECT * FROM SESSION(clicks, ts, INTERVAL '1' SECOND)").unwrap();
        assert!(
            out.contains("eddy_session_end(ts, 1000000) OVER ()"),
            "{out}"
        );
        assert!(rewritten("SELECT * FROM SESSION(clicks, ts)").is_err());
    }

    #[test]
    fn emit_on_window_close_is_cut_off_the_end() {
        let sql = "CREATE MATERIALIZED VIEW v AS SELECT 'emit on window close' AS x\n  emit On WINDOW close ;";
        assert_eq!(
            strip_emit_clause(sql),
            Some("CREATE MATERIALIZED VIEW v AS SELECT 'emit on window close' AS x\n  ")
        );
        assert_eq!(strip_emit_clause("SELECT 'emit on window close'"), None);
        assert_eq!(
            strip_emit_clause("SELECT emit, on, window, close FROM t"),
            None
        );
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1")
            .unwrap()
            .remove(0);
        assert_eq!(
            set_emit_on_close(&mut stmt).unwrap_err().sqlstate(),
            "42601"
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_the_usage() {
        for (sql, says) in [
            ("SELECT * FROM TUMBLE(e, ts)", "takes 3 or 4 arguments"),
            (
                "SELECT * FROM TUMBLE(e, ts, 5)",
                "must be an interval literal",
            ),
            (
                "SELECT * FROM TUMBLE(e, ts, INTERVAL '1 month')",
                "fixed length",
            ),
            (
                "SELECT * FROM TUMBLE(e, ts, INTERVAL '-1 minute')",
                "positive",
            ),
            (
                "SELECT * FROM TUMBLE((SELECT 1), ts, INTERVAL '1 minute')",
                "must name a table",
            ),
            (
                "SELECT * FROM HOP(e, ts, INTERVAL '3 seconds', INTERVAL '10 seconds')",
                "whole number of slides",
            ),
            (
                "SELECT * FROM HOP(e, ts, INTERVAL '1 second', INTERVAL '1 hour')",
                "more than the 64",
            ),
        ] {
            let e = rewritten(sql).unwrap_err();
            assert_eq!(e.sqlstate(), "22023", "{sql}: {e}");
            assert!(e.to_string().contains(says), "{sql}: {e}");
            assert!(e.hint().unwrap().starts_with("Write "), "{sql}");
        }
    }
}

//! Temporal (lookup) joins: `JOIN t FOR SYSTEM_TIME AS OF PROCTIME()`.
//!
//! Before parsing, the clause is cut off its relation, and the relation is
//! named in the schema `eddy_lookup` instead, which holds the same tables
//! as `public` (`t FOR SYSTEM_TIME AS OF PROCTIME() AS c` becomes
//! `eddy_lookup.t AS c`; without an alias the table's own name is kept as
//! one, so `t.col` still resolves). An ad-hoc query joins the table as it
//! is, which is what the clause means for a query run once; the view
//! planner recognises the schema on the right input of a join and lowers
//! the join to a lookup join (see `JoinSpec::lookup`).

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::{Keyword, RESERVED_FOR_TABLE_ALIAS};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::windows::byte_offset;
use crate::error::{Error, Result};

/// The schema a looked-up relation is named in after the rewrite.
pub const SCHEMA: &str = "eddy_lookup";

/// Rewrites every `name FOR SYSTEM_TIME AS OF PROCTIME()` of `sql`; the
/// text comes back unchanged without one. Another `AS OF` expression is
/// refused: EddyDB keeps no history of a table to look back into.
pub fn rewrite(sql: &str) -> Result<Cow<'_, str>> {
    if !sql.to_ascii_lowercase().contains("system_time") {
        return Ok(sql.into());
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return Ok(sql.into());
    };
    let t: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let word = |i: usize, text: &str| {
        matches!(t.get(i).map(|t| &t.token), Some(Token::Word(w))
            if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(text))
    };
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !(word(i, "for") && word(i + 1, "system_time") && word(i + 2, "as") && word(i + 3, "of"))
        {
            i += 1;
            continue;
        }
        let proctime = word(i + 4, "proctime")
            && t.get(i + 5).is_some_and(|t| t.token == Token::LParen)
            && t.get(i + 6).is_some_and(|t| t.token == Token::RParen);
        if !proctime {
            return Err(Error::unsupported(
                "FOR SYSTEM_TIME AS OF an expression other than PROCTIME()",
                "EddyDB keeps no history of a table: a lookup join reads the table as it is \
                 when each event arrives, written FOR SYSTEM_TIME AS OF PROCTIME().",
            ));
        }
        // The relation's name: words joined by periods, ending before FOR.
        let mut first = i;
        while first >= 1 && matches!(t[first - 1].token, Token::Word(_)) {
            first -= 1;
            if first >= 2 && t[first - 1].token == Token::Period {
                first -= 1;
            } else {
                break;
            }
        }
        if first == i {
            return Err(Error::unsupported(
                "FOR SYSTEM_TIME AS OF PROCTIME() after something other than a table name",
                "Write it right after the looked-up table: JOIN t FOR SYSTEM_TIME AS OF \
                 PROCTIME() AS c ON ….",
            ));
        }
        let name = &t[i - 1];
        let name_text = &sql[byte_offset(sql, name.span.start)..byte_offset(sql, name.span.end)];
        // Keep a user's alias (any word the parser takes for a table
        // alias); otherwise the table's name is the alias.
        let aliased = match t.get(i + 7).map(|t| &t.token) {
            Some(Token::Word(w)) => {
                w.keyword == Keyword::AS
                    || w.quote_style.is_some()
                    || !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword)
            }
            _ => false,
        };
        let mut replacement = format!("{SCHEMA}.{name_text}");
        if !aliased {
            replacement.push_str(" AS ");
            replacement.push_str(name_text);
        }
        let start = byte_offset(sql, t[first].span.start);
        let end = byte_offset(sql, t[i + 6].span.end);
        edits.push((start..end, replacement));
        i += 7;
    }
    if edits.is_empty() {
        return Ok(sql.into());
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for (range, text) in edits {
        out.push_str(&sql[at..range.start]);
        out.push_str(&text);
        at = range.end;
    }
    out.push_str(&sql[at..]);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clause_becomes_the_lookup_schema() {
        let cases = [
            (
                "SELECT * FROM s JOIN t FOR SYSTEM_TIME AS OF PROCTIME() ON s.k = t.k",
                "SELECT * FROM s JOIN eddy_lookup.t AS t ON s.k = t.k",
            ),
            (
                "select * from s left join public.\"T\" for system_time as of proctime() as c on true",
                "select * from s left join eddy_lookup.\"T\" as c on true",
            ),
            (
                "SELECT * FROM s JOIN t FOR SYSTEM_TIME AS OF PROCTIME() c ON s.k = c.k",
                "SELECT * FROM s JOIN eddy_lookup.t c ON s.k = c.k",
            ),
            (
                "SELECT * FROM s JOIN regions FOR SYSTEM_TIME AS OF PROCTIME() location ON true",
                "SELECT * FROM s JOIN eddy_lookup.regions location ON true",
            ),
            (
                "SELECT * FROM s LEFT JOIN t FOR SYSTEM_TIME AS OF PROCTIME() WHERE true",
                "SELECT * FROM s LEFT JOIN eddy_lookup.t AS t WHERE true",
            ),
            (
                "SELECT 'for system_time as of proctime()' FROM t",
                "SELECT 'for system_time as of proctime()' FROM t",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rewrite(sql).unwrap(), want, "{sql}");
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let err =
            rewrite("SELECT * FROM s JOIN t FOR SYSTEM_TIME AS OF now() ON true").unwrap_err();
        assert!(err.to_string().contains("PROCTIME()"), "{err}");
    }
}

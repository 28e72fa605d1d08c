//! Session settings: `SET`, `RESET`, `SHOW`, and the values drivers read.
//! Only UTF8 is spoken; the rest are stored and reported back, so pools and
//! drivers that set them at connect time work.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{self, Expr, Ident, Reset, ResetStatement, Set, Value};

use super::{CommandTag, Output};
use crate::error::{Error, Result};

/// (name as PostgreSQL spells it, default, settable by clients)
const KNOWN: &[(&str, &str, bool)] = &[
    ("application_name", "", true),
    ("bytea_output", "hex", true),
    ("client_encoding", "UTF8", true),
    ("client_min_messages", "notice", true),
    ("DateStyle", "ISO, MDY", true),
    ("default_transaction_isolation", "read committed", true),
    ("default_transaction_read_only", "off", true),
    ("extra_float_digits", "1", true),
    ("idle_in_transaction_session_timeout", "0", true),
    ("integer_datetimes", "on", false),
    ("IntervalStyle", "postgres", true),
    ("is_superuser", "on", false),
    ("lock_timeout", "0", true),
    ("max_identifier_length", "63", false),
    ("search_path", "\"$user\", public", true),
    ("server_encoding", "UTF8", false),
    ("server_version", crate::protocol::SERVER_VERSION, false),
    (
        "server_version_num",
        crate::protocol::SERVER_VERSION_NUM,
        false,
    ),
    ("standard_conforming_strings", "on", true),
    ("statement_timeout", "0", true),
    ("synchronous_commit", "on", true),
    ("TimeZone", "UTC", true),
    ("transaction_isolation", "read committed", true),
    ("transaction_read_only", "off", true),
    ("work_mem", "4MB", true),
];

#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
    /// Reported settings changed since the last [`Settings::take_reports`].
    reports: Vec<String>,
}

/// Settings whose changes PostgreSQL reports with ParameterStatus.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "is_superuser",
    "search_path",
];

impl Default for Settings {
    fn default() -> Settings {
        let values = KNOWN
            .iter()
            .map(|(name, value, _)| (name.to_lowercase(), value.to_string()))
            .collect();
        Settings {
            values,
            reports: Vec::new(),
        }
    }
}

fn known(name: &str) -> Option<&'static (&'static str, &'static str, bool)> {
    KNOWN.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name))
}

impl Settings {
    /// (name, value) of reported settings changed since the last call.
    pub fn take_reports(&mut self) -> Vec<(String, String)> {
        let names = std::mem::take(&mut self.reports);
        names
            .into_iter()
            .filter_map(|n| self.get(&n).map(|v| (n.clone(), v.to_string())))
            .collect()
    }

    fn note_change(&mut self, name: &str) {
        if let Some(canonical) = REPORTED.iter().find(|r| r.eq_ignore_ascii_case(name)) {
            if !self.reports.iter().any(|r| r == canonical) {
                self.reports.push(canonical.to_string());
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&name.to_lowercase()).map(String::as_str)
    }

    /// Sets a value as a client's startup packet or `SET` does.
    pub fn assign(&mut self, name: &str, value: &str) -> Result<()> {
        let lower = name.to_lowercase();
        // Dotted names are custom settings, as in PostgreSQL.
        let Some((canonical, _, settable)) = known(&lower).copied().or(if lower.contains('.') {
            Some(("", "", true))
        } else {
            None
        }) else {
            return Err(Error::UnknownSetting(name.to_string()));
        };
        if !settable {
            return Err(Error::InvalidParameter(format!(
                "parameter \"{canonical}\" cannot be changed"
            )));
        }
        if lower == "client_encoding" && !is_utf8(value) {
            return Err(Error::unsupported(
                format!("client_encoding {value}"),
                "EddyDB speaks UTF8 only.",
            ));
        }
        if lower == "timezone" && crate::protocol::timezone::parse_zone(value).is_none() {
            return Err(Error::InvalidParameter(format!(
                "invalid value for parameter \"TimeZone\": \"{value}\""
            )));
        }
        let value = match lower.as_str() {
            "client_encoding" => "UTF8".to_string(),
            "datestyle" => date_style(value, self.get("DateStyle").unwrap_or("ISO, MDY")),
            _ => value.to_string(),
        };
        self.values.insert(lower.clone(), value);
        self.note_change(&lower);
        Ok(())
    }

    pub fn set(&mut self, set: Set) -> Result<Output> {
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string();
                match values.as_slice() {
                    [Expr::Identifier(Ident { value, .. })]
                        if value.eq_ignore_ascii_case("default") =>
                    {
                        self.reset_one(&name)?
                    }
                    _ => {
                        let text: Vec<String> = values.iter().map(expr_text).collect();
                        self.assign(&name, &text.join(", "))?
                    }
                }
            }
            Set::SetTimeZone { value, .. } => self.assign("TimeZone", &expr_text(&value))?,
            Set::SetNames { charset_name, .. } => {
                self.assign("client_encoding", &charset_name.value)?
            }
            Set::SetNamesDefault {} => self.reset_one("client_encoding")?,
            // Every statement is its own transaction; isolation requests are
            // accepted because drivers send them routinely.
            Set::SetTransaction { .. } => {}
            other => {
                return Err(Error::unsupported(
                    format!("SET form \"{other}\""),
                    "Use SET name = value.",
                ))
            }
        }
        Ok(Output::Command(CommandTag::new("SET")))
    }

    pub fn reset(&mut self, reset: ResetStatement) -> Result<Output> {
        match reset.reset {
            Reset::ALL => *self = Settings::default(),
            Reset::ConfigurationParameter(name) => self.reset_one(&name.to_string())?,
        }
        Ok(Output::Command(CommandTag::new("RESET")))
    }

    fn reset_one(&mut self, name: &str) -> Result<()> {
        match known(name) {
            Some((_, default, _)) => {
                self.values.insert(name.to_lowercase(), default.to_string());
                self.note_change(name);
                Ok(())
            }
            None if name.contains('.') => {
                self.values.remove(&name.to_lowercase());
                Ok(())
            }
            None => Err(Error::UnknownSetting(name.to_string())),
        }
    }

    pub fn show_schema(&self, variable: &[Ident]) -> SchemaRef {
        let name = show_name(variable);
        if name.eq_ignore_ascii_case("all") {
            return Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("setting", DataType::Utf8, false),
            ]));
        }
        let canonical = known(&name).map_or(name.clone(), |(n, _, _)| n.to_string());
        Arc::new(Schema::new(vec![Field::new(
            canonical,
            DataType::Utf8,
            false,
        )]))
    }

    pub fn show(&self, variable: &[Ident]) -> Result<Output> {
        let name = show_name(variable);
        let schema = self.show_schema(variable);
        let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> =
            if name.eq_ignore_ascii_case("all") {
                let names: Vec<String> = KNOWN.iter().map(|(n, _, _)| n.to_string()).collect();
                let values: Vec<String> = KNOWN
                    .iter()
                    .map(|(n, _, _)| self.get(n).unwrap_or_default().to_string())
                    .collect();
                vec![
                    Arc::new(StringArray::from(names)),
                    Arc::new(StringArray::from(values)),
                ]
            } else {
                let value = self
                    .get(&name)
                    .ok_or_else(|| Error::UnknownSetting(name.clone()))?;
                vec![Arc::new(StringArray::from(vec![value.to_string()]))]
            };
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Output::Batches {
            schema,
            batches: vec![batch],
        })
    }
}

fn show_name(variable: &[Ident]) -> String {
    let parts: Vec<&str> = variable.iter().map(|i| i.value.as_str()).collect();
    match parts.as_slice() {
        ["time", "zone"] | ["TIME", "ZONE"] => "TimeZone".to_string(),
        ["transaction", "isolation", "level"] => "transaction_isolation".to_string(),
        _ => parts.join(" "),
    }
}

/// DateStyle has two parts, output format and field order; setting one
/// keeps the other, as in PostgreSQL (`SET datestyle TO ISO` → `ISO, MDY`).
fn date_style(value: &str, current: &str) -> String {
    let (mut format, mut order) = current
        .split_once(',')
        .map(|(f, o)| (f.trim().to_string(), o.trim().to_string()))
        .unwrap_or(("ISO".into(), "MDY".into()));
    for part in value.split(',').map(|p| p.trim().to_uppercase()) {
        match part.as_str() {
            "ISO" | "SQL" | "POSTGRES" | "GERMAN" => {
                format = if part == "POSTGRES" {
                    "Postgres".into()
                } else {
                    part
                }
            }
            "MDY" | "DMY" | "YMD" => order = part,
            "US" | "NONEURO" | "NONEUROPEAN" => order = "MDY".into(),
            "EURO" | "EUROPEAN" => order = "DMY".into(),
            _ => {}
        }
    }
    format!("{format}, {order}")
}

fn is_utf8(value: &str) -> bool {
    let v = value
        .trim_matches('\'')
        .to_ascii_lowercase()
        .replace(['-', '_'], "");
    v == "utf8" || v == "unicode"
}

/// A SET value as text: `'UTC'` → `UTC`, `on` → `on`, `3` → `3`.
fn expr_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => format!("-{}", expr_text(expr)),
        other => other.to_string(),
    }
}

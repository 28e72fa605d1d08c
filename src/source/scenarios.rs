//! Named generators for the stories of `shared/SCENARIOS.md`:
//! `connector = 'datagen', generator = 'logins' | 'ad_events' | 'ads' |
//! 'page_clicks'`.
//!
//! Each is a fixed schema and a pure function of (seed, row index), built on
//! [`super::datagen`]'s mixing and event clock and its `datagen.*` options
//! (`seed`, `rows.per.second`, `start.time`, `rows`):
//!
//! - `logins(user_id, city, ip, device, ts)` (#1): `generator.users` users
//!   (default 1000), each with a home city, home IP (in 10.0.0.0/8) and usual
//!   device. A share `generator.anomaly.fraction` (default 0.01) of logins
//!   are anomalies: another city, an IP in 203.0.113.0/24 (TEST-NET-3), any
//!   device. Otherwise the user's home city and IP, and their usual device
//!   nine times in ten.
//! - `ad_events(ad_id, user_id, event_type, ts)` (#2, #4): `event_type` is
//!   'click' for a share `generator.click.fraction` (default 0.1), else
//!   'view'; `ad_id` is one of `generator.ads` (default 1000) ads, users from
//!   `generator.users` (default 100000).
//! - `ads(ad_id, campaign_id)` (#2, #4): the context table, exactly
//!   `generator.ads` rows (give both sources the same value), ad `i` in
//!   campaign `i % generator.campaigns` (default 100).
//! - `page_clicks(user_id, page, ts)` (#3): pages from `generator.pages`
//!   (default 100, the first ones most popular), users from `generator.users`
//!   (default 1000); a share `late.fraction` (default 0) of rows arrive late:
//!   their `ts` is the event clock minus exactly `late.by` (default
//!   '30 minutes').
//!
//! Timestamps are the event clock of [`super::datagen::EventClock`]. Ids are
//! text: `u17`, `ad17`, `c3`, `/page/5`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, StringBuilder, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::datagen::{
    below, check_known, clamp, invalid, lane, parse_duration_us, parse_fraction, parse_u64,
    row_hash, stream_key, unit, Common, EventClock,
};
use crate::error::{Error, Result};
use crate::types::SqlType;

const CITIES: [&str; 20] = [
    "Amsterdam",
    "Berlin",
    "Bogota",
    "Cairo",
    "Chicago",
    "Jakarta",
    "Lagos",
    "Lima",
    "Lisbon",
    "London",
    "Madrid",
    "Mumbai",
    "Nairobi",
    "Osaka",
    "Paris",
    "Seoul",
    "Sydney",
    "Toronto",
    "Warsaw",
    "Zurich",
];
const DEVICES: [&str; 5] = ["android", "ios", "linux", "macos", "windows"];

/// One of the named generators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Logins,
    AdEvents,
    Ads,
    PageClicks,
}

/// The scenario called `name` (`generator = '<name>'`), if any.
pub fn scenario(name: &str) -> Option<Scenario> {
    Scenario::ALL
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Logins,
        Scenario::AdEvents,
        Scenario::Ads,
        Scenario::PageClicks,
    ];

    /// Like [`scenario`], with an error (22023) listing the names.
    pub fn named(name: &str) -> Result<Scenario> {
        scenario(name).ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            invalid("generator", name, &format!("one of {}", names.join(", ")))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Logins => "logins",
            Scenario::AdEvents => "ad_events",
            Scenario::Ads => "ads",
            Scenario::PageClicks => "page_clicks",
        }
    }

    /// The columns, by name and type.
    pub fn columns(self) -> &'static [(&'static str, SqlType)] {
        const V: SqlType = SqlType::Varchar(None);
        const TS: SqlType = SqlType::Timestamptz;
        match self {
            Scenario::Logins => &[
                ("user_id", V),
                ("city", V),
                ("ip", V),
                ("device", V),
                ("ts", TS),
            ],
            Scenario::AdEvents => &[("ad_id", V), ("user_id", V), ("event_type", V), ("ts", TS)],
            Scenario::Ads => &[("ad_id", V), ("campaign_id", V)],
            Scenario::PageClicks => &[("user_id", V), ("page", V), ("ts", TS)],
        }
    }

    /// The columns it produces (all nullable, as declared source columns are).
    pub fn schema(self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns()
                .iter()
                .map(|(name, ty)| ty.field(name, true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Checks a declared column list against the scenario's: the same names,
    /// in the same order, of the same types (42P16 naming the difference).
    pub fn check_columns(self, declared: &Schema) -> Result<()> {
        let expected = self.columns();
        let listing = expected
            .iter()
            .map(|(n, t)| format!("{n} {}", t.sql_name()))
            .collect::<Vec<_>>()
            .join(", ");
        let mismatch = |what: String| {
            Error::InvalidDefinition(format!(
                "{what}; generator \"{}\" produces ({listing})",
                self.name()
            ))
        };
        if declared.fields().len() != expected.len() {
            return Err(mismatch(format!(
                "{} columns are declared, not {}",
                declared.fields().len(),
                expected.len()
            )));
        }
        for (i, (field, (name, ty))) in declared.fields().iter().zip(expected).enumerate() {
            if field.name() != name {
                return Err(mismatch(format!(
                    "column {} is declared as \"{}\", not \"{name}\"",
                    i + 1,
                    field.name()
                )));
            }
            let declared_type = SqlType::of_field(field);
            if declared_type.as_ref() != Some(&normalized(ty)) {
                let shown =
                    declared_type.map_or_else(|| field.data_type().to_string(), |t| t.sql_name());
                return Err(mismatch(format!(
                    "column \"{name}\" is declared as {shown}, not {}",
                    ty.sql_name()
                )));
            }
        }
        Ok(())
    }

    /// A generator of this scenario, its options checked (22023 naming the
    /// option); `now` is the default `datagen.start.time`.
    pub fn generator(
        self,
        options: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<ScenarioGenerator> {
        let known: &[&str] = match self {
            Scenario::Logins => &["generator", "generator.users", "generator.anomaly.fraction"],
            Scenario::AdEvents => &[
                "generator",
                "generator.ads",
                "generator.users",
                "generator.click.fraction",
            ],
            Scenario::Ads => &["generator", "generator.ads", "generator.campaigns"],
            Scenario::PageClicks => &[
                "generator",
                "generator.users",
                "generator.pages",
                "late.fraction",
                "late.by",
            ],
        };
        check_known(options, known, &format!("generator {}", self.name()))?;
        let common = Common::parse(options, now)?;
        let params = Params::parse(self, options)?;
        let bounded = match self {
            Scenario::Ads => Some(params.ads),
            _ => None,
        };
        let end = [bounded, common.rows].into_iter().flatten().min();
        Ok(ScenarioGenerator {
            scenario: self,
            schema: self.schema(),
            seed: common.seed,
            clock: common.clock,
            end,
            params,
        })
    }
}

/// The type a declared column reads back as (varchar without a length is
/// stored exactly like text).
fn normalized(ty: &SqlType) -> SqlType {
    match ty {
        SqlType::Varchar(None) => SqlType::Text,
        other => other.clone(),
    }
}

/// The scenario-specific options, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Params {
    users: u64,
    ads: u64,
    campaigns: u64,
    pages: u64,
    anomaly_fraction: f64,
    click_fraction: f64,
    late_fraction: f64,
    late_by_us: i64,
}

impl Params {
    fn parse(scenario: Scenario, options: &BTreeMap<String, String>) -> Result<Params> {
        let count = |key: &str, default: u64| -> Result<u64> {
            let value = options
                .get(key)
                .map_or(Ok(default), |v| parse_u64(key, v))?;
            if value == 0 {
                return Err(invalid(key, "0", "a positive integer"));
            }
            Ok(value)
        };
        let fraction = |key: &str, default: f64| {
            options
                .get(key)
                .map_or(Ok(default), |v| parse_fraction(key, v))
        };
        let default_users = match scenario {
            Scenario::AdEvents => 100_000,
            _ => 1000,
        };
        Ok(Params {
            users: count("generator.users", default_users)?,
            ads: count("generator.ads", 1000)?,
            campaigns: count("generator.campaigns", 100)?,
            pages: count("generator.pages", 100)?,
            anomaly_fraction: fraction("generator.anomaly.fraction", 0.01)?,
            click_fraction: fraction("generator.click.fraction", 0.1)?,
            late_fraction: fraction("late.fraction", 0.0)?,
            late_by_us: options
                .get("late.by")
                .map_or(Ok(30 * 60 * 1_000_000), |v| parse_duration_us("late.by", v))?,
        })
    }
}

/// Rows of one scenario; cheap to clone, every method pure.
#[derive(Debug, Clone)]
pub struct ScenarioGenerator {
    scenario: Scenario,
    schema: SchemaRef,
    seed: u64,
    clock: EventClock,
    end: Option<u64>,
    params: Params,
}

impl ScenarioGenerator {
    pub fn scenario(&self) -> Scenario {
        self.scenario
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn rows_per_second(&self) -> u64 {
        self.clock.rows_per_second
    }

    /// The number of rows when bounded (`ads`, or `datagen.rows`).
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// The event clock: row `i`'s time before any lateness.
    pub fn clock(&self) -> EventClock {
        self.clock
    }

    /// Rows `rows` by global index, cut at [`ScenarioGenerator::end`].
    pub fn batch(&self, rows: Range<u64>) -> Result<RecordBatch> {
        let rows = clamp(rows, self.end);
        let count = (rows.end - rows.start) as usize;
        let columns = match self.scenario {
            Scenario::Logins => self.logins(rows),
            Scenario::AdEvents => self.ad_events(rows),
            Scenario::Ads => self.ads(rows),
            Scenario::PageClicks => self.page_clicks(rows),
        };
        let options = RecordBatchOptions::new().with_row_count(Some(count));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    fn key(&self, purpose: &str) -> u64 {
        stream_key(self.seed, &format!("{}.{purpose}", self.scenario.name()))
    }

    fn times(&self, rows: Range<u64>, lag_us: impl Fn(u64) -> i64) -> ArrayRef {
        let values = rows
            .map(|r| self.clock.time_us(r).saturating_sub(lag_us(r)))
            .collect();
        let data_type = SqlType::Timestamptz.arrow_type();
        Arc::new(TimestampMicrosecondArray::new(values, None).with_data_type(data_type))
    }

    fn logins(&self, rows: Range<u64>) -> Vec<ArrayRef> {
        let (user_key, anomaly_key) = (self.key("user"), self.key("anomaly"));
        let (home_key, device_key) = (self.key("home"), self.key("device"));
        let mut columns = Texts::new(4, rows.clone());
        for r in rows.clone() {
            let user = below(row_hash(user_key, r), self.params.users);
            let home = row_hash(home_key, user);
            let home_city = below(home, CITIES.len() as u64) as usize;
            let usual_device = below(row_hash(device_key, user), DEVICES.len() as u64) as usize;
            let event = row_hash(anomaly_key, r);
            columns.push(0, format_args!("u{user}"));
            if unit(event) < self.params.anomaly_fraction {
                let shift = 1 + below(lane(event, 0), CITIES.len() as u64 - 1) as usize;
                columns.push(
                    1,
                    format_args!("{}", CITIES[(home_city + shift) % CITIES.len()]),
                );
                columns.push(
                    2,
                    format_args!("203.0.113.{}", 1 + below(lane(event, 1), 254)),
                );
                let device = below(lane(event, 2), DEVICES.len() as u64) as usize;
                columns.push(3, format_args!("{}", DEVICES[device]));
            } else {
                let [a, b, c, ..] = lane(home, 0).to_le_bytes();
                columns.push(1, format_args!("{}", CITIES[home_city]));
                columns.push(2, format_args!("10.{a}.{b}.{}", c.max(1)));
                let device = if unit(lane(event, 3)) < 0.9 {
                    usual_device
                } else {
                    below(lane(event, 4), DEVICES.len() as u64) as usize
                };
                columns.push(3, format_args!("{}", DEVICES[device]));
            }
        }
        let mut arrays = columns.finish();
        arrays.push(self.times(rows, |_| 0));
        arrays
    }

    fn ad_events(&self, rows: Range<u64>) -> Vec<ArrayRef> {
        let (ad_key, user_key, type_key) = (self.key("ad"), self.key("user"), self.key("type"));
        let mut columns = Texts::new(3, rows.clone());
        for r in rows.clone() {
            columns.push(
                0,
                format_args!("ad{}", below(row_hash(ad_key, r), self.params.ads)),
            );
            let user = below(row_hash(user_key, r), self.params.users);
            columns.push(1, format_args!("u{user}"));
            let click = unit(row_hash(type_key, r)) < self.params.click_fraction;
            columns.push(2, format_args!("{}", if click { "click" } else { "view" }));
        }
        let mut arrays = columns.finish();
        arrays.push(self.times(rows, |_| 0));
        arrays
    }

    fn ads(&self, rows: Range<u64>) -> Vec<ArrayRef> {
        let mut columns = Texts::new(2, rows.clone());
        for r in rows {
            columns.push(0, format_args!("ad{r}"));
            columns.push(1, format_args!("c{}", r % self.params.campaigns));
        }
        columns.finish()
    }

    fn page_clicks(&self, rows: Range<u64>) -> Vec<ArrayRef> {
        let (user_key, page_key) = (self.key("user"), self.key("page"));
        let late_key = self.key("late");
        let mut columns = Texts::new(2, rows.clone());
        for r in rows.clone() {
            let user = below(row_hash(user_key, r), self.params.users);
            columns.push(0, format_args!("u{user}"));
            // Squaring a uniform number skews towards the first pages.
            let skewed = unit(row_hash(page_key, r)).powi(2);
            let page = ((skewed * self.params.pages as f64) as u64).min(self.params.pages - 1);
            columns.push(1, format_args!("/page/{page}"));
        }
        let mut arrays = columns.finish();
        let (fraction, late_by) = (self.params.late_fraction, self.params.late_by_us);
        arrays.push(self.times(rows, |r| {
            if unit(row_hash(late_key, r)) < fraction {
                late_by
            } else {
                0
            }
        }));
        arrays
    }
}

/// Text columns filled row by row through one reused format buffer.
struct Texts {
    builders: Vec<StringBuilder>,
    buffer: String,
}

impl Texts {
    fn new(columns: usize, rows: Range<u64>) -> Texts {
        let count = (rows.end - rows.start) as usize;
        Texts {
            builders: (0..columns)
                .map(|_| StringBuilder::with_capacity(count, count.saturating_mul(8)))
                .collect(),
            buffer: String::new(),
        }
    }

    fn push(&mut self, column: usize, value: std::fmt::Arguments) {
        self.buffer.clear();
        // Writing to a String cannot fail.
        let _ = self.buffer.write_fmt(value);
        self.builders[column].append_value(&self.buffer);
    }

    fn finish(self) -> Vec<ArrayRef> {
        self.builders
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::TimestampMicrosecondType;
    use std::collections::{HashMap, HashSet};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn open(scenario: Scenario, pairs: &[(&str, &str)]) -> ScenarioGenerator {
        scenario
            .generator(&options(pairs), now())
            .expect("generator")
    }

    fn texts(batch: &RecordBatch, column: usize) -> Vec<String> {
        batch
            .column(column)
            .as_string::<i32>()
            .iter()
            .map(|s| s.expect("not null").to_string())
            .collect()
    }

    fn times(batch: &RecordBatch, column: usize) -> Vec<i64> {
        batch
            .column(column)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec()
    }

    #[test]
    fn names() {
        for s in Scenario::ALL {
            assert_eq!(scenario(s.name()), Some(s));
        }
        assert_eq!(scenario("Logins"), Some(Scenario::Logins));
        assert_eq!(scenario("nope"), None);
        let err = Scenario::named("nope").expect_err("unknown");
        assert_eq!(err.sqlstate(), "22023");
        assert!(
            err.to_string()
                .contains("logins, ad_events, ads, page_clicks"),
            "{err}"
        );
    }

    #[test]
    fn deterministic_and_splittable() {
        for s in Scenario::ALL {
            let g = open(s, &[("datagen.seed", "3")]);
            let whole = g.batch(0..100).expect("whole");
            assert_eq!(whole.num_rows(), 100, "{s:?}");
            assert_eq!(whole.schema(), s.schema());
            let parts = [g.batch(0..50).expect("a"), g.batch(50..100).expect("b")];
            assert_eq!(
                concat_batches(&g.schema(), &parts).expect("concat"),
                whole,
                "{s:?}"
            );
            assert_eq!(
                open(s, &[("datagen.seed", "3")])
                    .batch(0..100)
                    .expect("again"),
                whole
            );
            if s != Scenario::Ads {
                let other = open(s, &[("datagen.seed", "4")])
                    .batch(0..100)
                    .expect("other");
                assert_ne!(other, whole, "{s:?}");
            }
        }
    }

    #[test]
    fn logins_have_home_cities_and_flagged_anomalies() {
        let g = open(
            Scenario::Logins,
            &[
                ("generator.users", "50"),
                ("generator.anomaly.fraction", "0.05"),
            ],
        );
        let batch = g.batch(0..20_000).expect("batch");
        let (users, cities, ips) = (texts(&batch, 0), texts(&batch, 1), texts(&batch, 2));
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (u, c) in users.iter().zip(&cities) {
            *counts.entry((u, c)).or_default() += 1;
        }
        let mut home: HashMap<&str, (&str, usize)> = HashMap::new();
        for ((u, c), n) in counts {
            let entry = home.entry(u).or_insert((c, 0));
            if n > entry.1 {
                *entry = (c, n);
            }
        }
        assert_eq!(home.len(), 50);
        let mut anomalies = 0;
        for ((u, c), ip) in users.iter().zip(&cities).zip(&ips) {
            let away = home[u.as_str()].0 != c;
            assert_eq!(away, ip.starts_with("203.0.113."), "{u} {c} {ip}");
            assert!(away || ip.starts_with("10."), "{ip}");
            anomalies += usize::from(away);
        }
        assert!((800..1200).contains(&anomalies), "{anomalies}");
        let ts = times(&batch, 4);
        assert!(ts.windows(2).all(|w| w[1] - w[0] == 1000));
        let devices: HashSet<String> = texts(&batch, 3).into_iter().collect();
        assert!(devices.iter().all(|d| DEVICES.contains(&d.as_str())));
    }

    #[test]
    fn ad_events_join_ads() {
        let events = open(
            Scenario::AdEvents,
            &[
                ("generator.ads", "40"),
                ("generator.click.fraction", "0.25"),
            ],
        );
        let ads = open(
            Scenario::Ads,
            &[("generator.ads", "40"), ("generator.campaigns", "4")],
        );
        assert_eq!(ads.end(), Some(40));
        let table = ads.batch(0..1000).expect("ads");
        assert_eq!(table.num_rows(), 40);
        let ad_ids: HashSet<String> = texts(&table, 0).into_iter().collect();
        assert_eq!(ad_ids.len(), 40);
        let campaigns: HashSet<String> = texts(&table, 1).into_iter().collect();
        assert_eq!(campaigns.len(), 4);
        let batch = events.batch(0..8000).expect("events");
        let seen: HashSet<String> = texts(&batch, 0).into_iter().collect();
        assert!(seen.is_subset(&ad_ids));
        assert_eq!(seen.len(), 40);
        let kinds = texts(&batch, 2);
        let clicks = kinds.iter().filter(|k| *k == "click").count();
        assert!(kinds.iter().all(|k| k == "click" || k == "view"));
        assert!((1700..2300).contains(&clicks), "{clicks}");
    }

    #[test]
    fn late_page_clicks_lag_by_late_by() {
        let g = open(
            Scenario::PageClicks,
            &[
                ("late.fraction", "0.2"),
                ("late.by", "30 minutes"),
                ("generator.pages", "10"),
                ("datagen.rows.per.second", "100"),
            ],
        );
        let batch = g.batch(1000..6000).expect("batch");
        let ts = times(&batch, 2);
        let mut late = 0;
        for (i, t) in ts.iter().enumerate() {
            let lag = g.clock().time_us(1000 + i as u64) - t;
            assert!(lag == 0 || lag == 30 * 60 * 1_000_000, "{lag}");
            late += usize::from(lag > 0);
        }
        assert!((800..1200).contains(&late), "{late}");
        let pages = texts(&batch, 1);
        let first = pages.iter().filter(|p| *p == "/page/0").count();
        let last = pages.iter().filter(|p| *p == "/page/9").count();
        assert!(first > 2 * last, "{first} vs {last}");
        let on_time = open(Scenario::PageClicks, &[])
            .batch(0..1000)
            .expect("on time");
        let ts = times(&on_time, 2);
        assert!(ts.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn option_errors() {
        type Case<'a> = (Scenario, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 6] = [
            (
                Scenario::Logins,
                &[("late.fraction", "0.1")],
                "late.fraction",
            ),
            (
                Scenario::Logins,
                &[("fields.user_id.kind", "random")],
                "fields.user_id.kind",
            ),
            (Scenario::Ads, &[("generator.ads", "0")], "generator.ads"),
            (
                Scenario::PageClicks,
                &[("late.fraction", "1.5")],
                "late.fraction",
            ),
            (Scenario::PageClicks, &[("late.by", "1 month")], "late.by"),
            (
                Scenario::AdEvents,
                &[("generator.click.fraction", "x")],
                "generator.click.fraction",
            ),
        ];
        for (s, pairs, needle) in cases {
            let err = s.generator(&options(pairs), now()).expect_err(needle);
            assert_eq!(err.sqlstate(), "22023");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn declared_columns_must_match() {
        let logins = Scenario::Logins;
        assert!(logins.check_columns(&logins.schema()).is_ok());
        let declared = |cols: &[(&str, SqlType)]| {
            Schema::new(
                cols.iter()
                    .map(|(n, t)| t.field(n, true))
                    .collect::<Vec<_>>(),
            )
        };
        let text_ok = declared(&[
            ("user_id", SqlType::Text),
            ("city", SqlType::Varchar(None)),
            ("ip", SqlType::Text),
            ("device", SqlType::Text),
            ("ts", SqlType::Timestamptz),
        ]);
        assert!(logins.check_columns(&text_ok).is_ok());
        let cases = [
            (
                declared(&[("user_id", SqlType::Text)]),
                "1 columns are declared, not 5",
            ),
            (
                declared(&[
                    ("user_id", SqlType::Text),
                    ("city", SqlType::Text),
                    ("ipaddr", SqlType::Text),
                    ("device", SqlType::Text),
                    ("ts", SqlType::Timestamptz),
                ]),
                "column 3 is declared as \"ipaddr\", not \"ip\"",
            ),
            (
                declared(&[
                    ("user_id", SqlType::Text),
                    ("city", SqlType::Text),
                    ("ip", SqlType::Text),
                    ("device", SqlType::Text),
                    ("ts", SqlType::Timestamp),
                ]),
                "column \"ts\" is declared as timestamp without time zone, not timestamp with time zone",
            ),
        ];
        for (schema, needle) in cases {
            let err = logins.check_columns(&schema).expect_err(needle);
            assert_eq!(err.sqlstate(), "42P16");
            let message = err.to_string();
            assert!(message.contains(needle), "{message}");
            assert!(
                message.contains("generator \"logins\" produces (user_id character varying"),
                "{message}"
            );
        }
    }
}

//! Oracle property test for materialized views. Random INSERT / UPDATE /
//! DELETE sequences run over three small tables; after every statement,
//! every view's rows must equal, as a multiset, what the view's defining
//! query returns when run ad hoc over the base tables: DataFusion computing
//! it from scratch is the oracle for the incremental dataflow. One test
//! runs against a server with 1 dataflow worker, one against a server with
//! 4, so the hash exchange and per-worker state are covered too.
//!
//! An oracle query is run again only after a statement that changed a
//! table the view reads; otherwise its last result is the expected one.
//!
//! Columns take values from small domains with NULLs, so join keys collide,
//! groups fill and empty, extremes are deleted, padded outer-join rows come
//! and go, and deleted ids are inserted again. Some statements run before
//! the views exist, so backfill is checked as well. A failure names the
//! view, the statements so far, and the expected and actual rows; proptest
//! shrinks it (for a bounded time) and keeps its seed in
//! `tests/oracle.proptest-regressions`, replayed first on every run.
//! `PROPTEST_CASES=N` changes the number of cases per worker count.

#[path = "support/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use server::{ServerOptions, TestServer};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Cases per worker count unless `PROPTEST_CASES` says otherwise. In a
/// debug build a case takes about 10 s of one core (the oracle queries are
/// nine tenths of it): both worker counts together stay near two minutes
/// on two cores.
const DEFAULT_CASES: u32 = 8;
/// Statements per case, before and after the views are created.
const MIN_OPS: usize = 20;
const MAX_OPS: usize = 40;
/// Statements that may run before the views are created (backfill).
const MAX_OPS_BEFORE_VIEWS: usize = 8;
const REGRESSIONS: &str = "tests/oracle.proptest-regressions";

/// A view under test. `{a}`, `{b}` and `{c}` stand for the case's tables,
/// `{name}` (always given an alias) for the case's view `name`: in the
/// oracle query such a view is replaced by its own (expanded) defining
/// query, so the oracle reads base tables only.
struct ViewSpec {
    name: &'static str,
    query: &'static str,
}

const VIEWS: &[ViewSpec] = &[
    ViewSpec {
        name: "filtered",
        query: "SELECT id, v + 1 AS v1, coalesce(s, '-') AS s FROM {a} WHERE v > 1 OR s = 'x'",
    },
    ViewSpec {
        name: "per_k",
        query: "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS sv, min(v) AS lo, \
                max(v) AS hi, count(DISTINCT v) AS dv, sum(DISTINCT v) AS sdv, min(s) AS ms, \
                max(s) AS xs, count(*) FILTER (WHERE s = 'x') AS nx FROM {a} GROUP BY k",
    },
    ViewSpec {
        name: "whole",
        query: "SELECT count(*) AS n, count(s) AS ns, sum(v) AS sv, avg(v) AS av, max(s) AS xs, \
                bool_or(v > 2) AS big FROM {a}",
    },
    ViewSpec {
        name: "lists",
        query: "SELECT k, string_agg(s, ',' ORDER BY s) AS ss, array_agg(v ORDER BY v) AS vs, \
                bool_and(v > 0) AS pos FROM {b} GROUP BY k",
    },
    ViewSpec {
        name: "distinct",
        query: "SELECT DISTINCT k, s FROM {a}",
    },
    ViewSpec {
        name: "having",
        query: "SELECT s, count(*) AS n, sum(v) AS sv FROM {a} GROUP BY s HAVING count(*) >= 2",
    },
    ViewSpec {
        name: "inner",
        query: "SELECT a.id AS aid, b.id AS bid, a.v AS av, b.v AS bv \
                FROM {a} a JOIN {b} b ON a.k = b.k",
    },
    ViewSpec {
        name: "left",
        query: "SELECT a.id AS aid, b.id AS bid, b.s AS bs FROM {a} a LEFT JOIN {b} b ON a.k = b.k",
    },
    ViewSpec {
        name: "full",
        query: "SELECT a.id AS aid, b.id AS bid, a.k AS ak, b.k AS bk \
                FROM {a} a FULL JOIN {b} b ON a.k = b.k",
    },
    ViewSpec {
        name: "full_cond",
        query:
            "SELECT a.id AS aid, b.id AS bid FROM {a} a FULL JOIN {b} b ON a.k = b.k AND a.v < b.v",
    },
    ViewSpec {
        name: "join_agg",
        query: "SELECT b.k, count(*) AS n, count(a.id) AS na, sum(a.v) AS sv \
                FROM {b} b LEFT JOIN {a} a ON a.k = b.k GROUP BY b.k",
    },
    ViewSpec {
        name: "three_way",
        query: "SELECT a.id AS aid, b.id AS bid, c.id AS cid \
                FROM {a} a JOIN {b} b ON a.k = b.k LEFT JOIN {c} c ON c.k = b.v",
    },
    ViewSpec {
        name: "self_join",
        query: "SELECT x.id AS xid, y.id AS yid FROM {a} x LEFT JOIN {a} y ON x.k = y.v",
    },
    ViewSpec {
        name: "over_agg",
        query: "SELECT k, n, hi FROM {per_k} p WHERE n >= 2",
    },
    ViewSpec {
        name: "over_left",
        query: "SELECT bs, count(*) AS n FROM {left} l GROUP BY bs",
    },
    ViewSpec {
        name: "with_group",
        query: "SELECT a.id, g.n, g.hi FROM {a} a JOIN {per_k} g ON a.k = g.k",
    },
    ViewSpec {
        name: "top2",
        query: "SELECT k, id, v, rn FROM (SELECT k, id, v, \
                ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, id) AS rn FROM {a}) r WHERE rn <= 2",
    },
    ViewSpec {
        name: "limited",
        query: "SELECT id, v FROM {a} ORDER BY v DESC, id LIMIT 3",
    },
    ViewSpec {
        name: "paged",
        query: "SELECT id, s FROM {b} ORDER BY s, id DESC LIMIT 2 OFFSET 1",
    },
    ViewSpec {
        name: "union_all",
        query: "SELECT k, v FROM {a} UNION ALL SELECT k, v FROM {b} WHERE v IS NOT NULL",
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    A,
    B,
    C,
}

impl Table {
    const ALL: [Table; 3] = [Table::A, Table::B, Table::C];

    fn letter(self) -> &'static str {
        match self {
            Table::A => "a",
            Table::B => "b",
            Table::C => "c",
        }
    }
}

/// A row's non-key columns: `k` (join and group key), `v`, `s`.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    k: Option<i32>,
    v: Option<i32>,
    s: Option<&'static str>,
}

/// Which rows an UPDATE or DELETE touches.
#[derive(Clone, Debug)]
enum Target {
    /// The n-th live id (modulo the number of live rows).
    Nth(usize),
    /// `id BETWEEN lo AND lo + len`, which may touch no row.
    Range(i32, i32),
    /// `k = x`, or `k IS NULL`.
    Key(Option<i32>),
}

#[derive(Clone, Debug)]
enum Assign {
    K(Option<i32>),
    V(Option<i32>),
    S(Option<&'static str>),
    /// `v = v + 1`
    BumpV,
}

#[derive(Clone, Debug)]
enum Op {
    /// Rows get the smallest ids not in use, so deleted ids come back.
    Insert(Table, Vec<Row>),
    Update(Table, Target, Assign),
    Delete(Table, Target),
}

impl Op {
    fn table(&self) -> Table {
        match self {
            Op::Insert(t, _) | Op::Update(t, _, _) | Op::Delete(t, _) => *t,
        }
    }
}

#[derive(Clone)]
struct Case {
    /// `None` is a statement shrunk away: the vector keeps at least
    /// `MIN_OPS` entries, so this is how a failing case gets shorter.
    ops: Vec<Option<Op>>,
    /// How many of `ops` run before the views are created.
    before_views: usize,
}

/// One statement a line: proptest prints the minimal failing case.
impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Case (views created before op {}):", self.before_views)?;
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(op) = op {
                writeln!(f, "  {i:>2}: {op:?}")?;
            }
        }
        Ok(())
    }
}

fn key() -> impl Strategy<Value = Option<i32>> {
    prop_oneof![4 => (0..3).prop_map(Some), 1 => Just(None)]
}

fn value() -> impl Strategy<Value = Option<i32>> {
    prop_oneof![4 => (0..5).prop_map(Some), 1 => Just(None)]
}

fn text() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        4 => prop::sample::select(vec!["x", "y", "z"]).prop_map(Some),
        1 => Just(None)
    ]
}

fn table() -> impl Strategy<Value = Table> {
    prop_oneof![3 => Just(Table::A), 2 => Just(Table::B), 1 => Just(Table::C)]
}

fn row() -> impl Strategy<Value = Row> {
    (key(), value(), text()).prop_map(|(k, v, s)| Row { k, v, s })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        5 => any::<usize>().prop_map(Target::Nth),
        2 => (0..12i32, 0..4i32).prop_map(|(lo, len)| Target::Range(lo, len)),
        1 => key().prop_map(Target::Key),
    ]
}

fn assign() -> impl Strategy<Value = Assign> {
    prop_oneof![
        3 => key().prop_map(Assign::K),
        3 => value().prop_map(Assign::V),
        2 => text().prop_map(Assign::S),
        1 => Just(Assign::BumpV),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (table(), prop::collection::vec(row(), 1..=4)).prop_map(|(t, rows)| Op::Insert(t, rows)),
        4 => (table(), target(), assign()).prop_map(|(t, w, a)| Op::Update(t, w, a)),
        2 => (table(), target()).prop_map(|(t, w)| Op::Delete(t, w)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::option::weighted(0.98, op()), MIN_OPS..=MAX_OPS),
        0..=MAX_OPS_BEFORE_VIEWS,
    )
        .prop_map(|(ops, before_views)| Case { ops, before_views })
}

fn sql_int(v: Option<i32>) -> String {
    v.map_or_else(|| "NULL".to_string(), |v| v.to_string())
}

fn sql_text(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_string(), |s| format!("'{s}'"))
}

/// One case's tables and views, and a model of the tables' rows (to
/// resolve targets to ids and to check each statement's row count).
struct Fixture {
    suffix: u64,
    tables: BTreeMap<Table, BTreeMap<i32, Row>>,
    history: Vec<String>,
    /// Each view's last oracle result, in `VIEWS` order.
    expected: Vec<Option<Rows>>,
}

impl Fixture {
    fn new(suffix: u64) -> Fixture {
        Fixture {
            suffix,
            tables: Table::ALL.iter().map(|t| (*t, BTreeMap::new())).collect(),
            history: Vec::new(),
            expected: vec![None; VIEWS.len()],
        }
    }

    fn table_name(&self, table: Table) -> String {
        format!("{}_{}", table.letter(), self.suffix)
    }

    fn view_name(&self, view: &str) -> String {
        format!("{view}_{}", self.suffix)
    }

    /// `query` with placeholders filled: views by name, or (for the
    /// oracle) by their own defining query.
    fn expand(&self, query: &str, oracle: bool) -> String {
        let mut out = query.to_string();
        for table in Table::ALL {
            out = out.replace(&format!("{{{}}}", table.letter()), &self.table_name(table));
        }
        for spec in VIEWS {
            let placeholder = format!("{{{}}}", spec.name);
            if out.contains(&placeholder) {
                let replacement = if oracle {
                    format!("({})", self.expand(spec.query, true))
                } else {
                    self.view_name(spec.name)
                };
                out = out.replace(&placeholder, &replacement);
            }
        }
        out
    }

    fn matches(&self, table: Table, target: &Target, id: i32, row: &Row) -> bool {
        match target {
            Target::Nth(n) => {
                let ids = &self.tables[&table];
                ids.keys().nth(n % ids.len().max(1)) == Some(&id)
            }
            Target::Range(lo, len) => (*lo..=lo + len).contains(&id),
            Target::Key(k) => row.k == *k,
        }
    }

    fn where_clause(&self, table: Table, target: &Target) -> String {
        match target {
            Target::Nth(n) => {
                let ids = &self.tables[&table];
                let id = ids.keys().nth(n % ids.len().max(1)).copied().unwrap_or(0);
                format!("id = {id}")
            }
            Target::Range(lo, len) => format!("id BETWEEN {lo} AND {}", lo + len),
            Target::Key(Some(k)) => format!("k = {k}"),
            Target::Key(None) => "k IS NULL".to_string(),
        }
    }

    /// The statement for `op`, with the model updated as it will change
    /// the table, and the number of rows it must report.
    fn apply(&mut self, op: &Op) -> (String, u64) {
        match op {
            Op::Insert(table, rows) => {
                let name = self.table_name(*table);
                let live = self.tables.get_mut(table).expect("every table is modelled");
                let mut values = Vec::new();
                let mut next = 1;
                for row in rows {
                    while live.contains_key(&next) {
                        next += 1;
                    }
                    values.push(format!(
                        "({next}, {}, {}, {})",
                        sql_int(row.k),
                        sql_int(row.v),
                        sql_text(row.s)
                    ));
                    live.insert(next, row.clone());
                }
                let sql = format!("INSERT INTO {name} VALUES {}", values.join(", "));
                (sql, rows.len() as u64)
            }
            Op::Update(table, target, assign) => {
                let set = match assign {
                    Assign::K(k) => format!("k = {}", sql_int(*k)),
                    Assign::V(v) => format!("v = {}", sql_int(*v)),
                    Assign::S(s) => format!("s = {}", sql_text(*s)),
                    Assign::BumpV => "v = v + 1".to_string(),
                };
                let sql = format!(
                    "UPDATE {} SET {set} WHERE {}",
                    self.table_name(*table),
                    self.where_clause(*table, target)
                );
                let hit = self.hits(*table, target);
                let live = self.tables.get_mut(table).expect("every table is modelled");
                for id in &hit {
                    let row = live.get_mut(id).expect("hit rows are live");
                    match assign {
                        Assign::K(k) => row.k = *k,
                        Assign::V(v) => row.v = *v,
                        Assign::S(s) => row.s = *s,
                        Assign::BumpV => row.v = row.v.map(|v| v + 1),
                    }
                }
                (sql, hit.len() as u64)
            }
            Op::Delete(table, target) => {
                let sql = format!(
                    "DELETE FROM {} WHERE {}",
                    self.table_name(*table),
                    self.where_clause(*table, target)
                );
                let hit = self.hits(*table, target);
                let live = self.tables.get_mut(table).expect("every table is modelled");
                for id in &hit {
                    live.remove(id);
                }
                (sql, hit.len() as u64)
            }
        }
    }

    fn hits(&self, table: Table, target: &Target) -> Vec<i32> {
        self.tables[&table]
            .iter()
            .filter(|(id, row)| self.matches(table, target, **id, row))
            .map(|(id, _)| *id)
            .collect()
    }
}

type Rows = Vec<Vec<Option<String>>>;

/// Runs `sql` (one or more statements) and returns each statement's rows,
/// sorted, and its row count.
async fn run(client: &Client, sql: &str) -> Result<Vec<(Rows, u64)>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}\n  failed: {}", describe_error(&e)))?;
    let mut results = Vec::new();
    let mut rows: Rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(n) => {
                let mut done = std::mem::take(&mut rows);
                done.sort();
                results.push((done, n));
            }
            _ => {}
        }
    }
    Ok(results)
}

fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn render(rows: &Rows) -> String {
    let mut out = String::new();
    for row in rows {
        let cells: Vec<&str> = row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
        let _ = writeln!(out, "    {}", cells.join(" | "));
    }
    if rows.is_empty() {
        out.push_str("    (none)\n");
    }
    out
}

/// Rows of `a` not matched one-for-one in `b` (both sorted).
fn minus(a: &Rows, b: &Rows) -> Rows {
    let mut left = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() {
        if j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && b[j] < a[i] {
            j += 1;
        } else {
            left.push(a[i].clone());
            i += 1;
        }
    }
    left
}

/// Whether `spec` reads `table`, directly or through the views it reads.
fn reads(spec: &ViewSpec, table: Table) -> bool {
    spec.query.contains(&format!("{{{}}}", table.letter()))
        || VIEWS
            .iter()
            .any(|inner| spec.query.contains(&format!("{{{}}}", inner.name)) && reads(inner, table))
}

/// Compares every view with its oracle query, in one round trip. The
/// oracle query runs again only for views reading a table in `changed`:
/// for the others its result cannot have moved, so the last one is reused
/// (the oracle is the costly half of a check in a debug build).
async fn check_views(
    client: &Client,
    fixture: &mut Fixture,
    changed: &[Table],
    workers: usize,
    after: &str,
) -> Result<(), TestCaseError> {
    let mut batch = String::new();
    let mut rerun = Vec::with_capacity(VIEWS.len());
    for (i, spec) in VIEWS.iter().enumerate() {
        let stale = fixture.expected[i].is_none() || changed.iter().any(|t| reads(spec, *t));
        let _ = write!(batch, "SELECT * FROM {};", fixture.view_name(spec.name));
        if stale {
            let _ = write!(batch, " {};", fixture.expand(spec.query, true));
        }
        rerun.push(stale);
    }
    let mut results = run(client, &batch)
        .await
        .map_err(|e| failure(fixture, workers, &format!("reading the views {after}: {e}")))?
        .into_iter();
    for (i, spec) in VIEWS.iter().enumerate() {
        let actual = results.next().map(|(rows, _)| rows);
        if rerun[i] {
            fixture.expected[i] = results.next().map(|(rows, _)| rows);
        }
        let (Some(actual), Some(expected)) = (actual, fixture.expected[i].as_ref()) else {
            return Err(failure(fixture, workers, "fewer results than statements"));
        };
        if &actual != expected {
            let report = mismatch(fixture, spec, after, expected, &actual);
            return Err(failure(fixture, workers, &report));
        }
    }
    Ok(())
}

fn mismatch(
    fixture: &Fixture,
    spec: &ViewSpec,
    after: &str,
    expected: &Rows,
    actual: &Rows,
) -> String {
    format!(
        "view {name} differs from its query {after}\n\
         view:   CREATE MATERIALIZED VIEW {name} AS {query}\n\
         oracle: {oracle}\n\
         expected (the query, {ne} rows):\n{exp}\
         actual (the view, {na} rows):\n{act}\
         missing from the view:\n{missing}\
         extra in the view:\n{extra}",
        name = fixture.view_name(spec.name),
        query = fixture.expand(spec.query, false),
        oracle = fixture.expand(spec.query, true),
        ne = expected.len(),
        na = actual.len(),
        exp = render(expected),
        act = render(actual),
        missing = render(&minus(expected, actual)),
        extra = render(&minus(actual, expected)),
    )
}

fn failure(fixture: &Fixture, workers: usize, what: &str) -> TestCaseError {
    let mut message = format!("[{workers} worker(s)] {what}\nstatements so far:\n");
    for (i, sql) in fixture.history.iter().enumerate() {
        let _ = writeln!(message, "  {:>2}. {sql};", i + 1);
    }
    TestCaseError::fail(message)
}

async fn execute(
    client: &Client,
    fixture: &mut Fixture,
    sql: String,
    workers: usize,
) -> Result<u64, TestCaseError> {
    fixture.history.push(sql.clone());
    match run(client, &sql).await {
        Ok(results) => Ok(results.last().map_or(0, |(_, n)| *n)),
        Err(e) => Err(failure(fixture, workers, &e)),
    }
}

async fn run_case(
    client: &Client,
    suffix: u64,
    case: &Case,
    workers: usize,
) -> Result<(), TestCaseError> {
    let mut fixture = Fixture::new(suffix);
    let outcome = run_ops(client, &mut fixture, case, workers).await;
    // Views first, newest first: a DROP TABLE without CASCADE then also
    // checks that no view is left depending on the table.
    let mut cleanup = String::new();
    for spec in VIEWS.iter().rev() {
        let _ = write!(
            cleanup,
            "DROP MATERIALIZED VIEW IF EXISTS {}; ",
            fixture.view_name(spec.name)
        );
    }
    for table in Table::ALL {
        let _ = write!(
            cleanup,
            "DROP TABLE IF EXISTS {}; ",
            fixture.table_name(table)
        );
    }
    let dropped = run(client, &cleanup).await;
    outcome?;
    dropped.map_err(|e| failure(&fixture, workers, &format!("cleanup: {e}")))?;
    Ok(())
}

async fn run_ops(
    client: &Client,
    fixture: &mut Fixture,
    case: &Case,
    workers: usize,
) -> Result<(), TestCaseError> {
    for table in Table::ALL {
        let sql = format!(
            "CREATE TABLE {} (id int PRIMARY KEY, k int, v int, s text)",
            fixture.table_name(table)
        );
        execute(client, fixture, sql, workers).await?;
    }
    let before = case.before_views.min(case.ops.len());
    for (i, op) in case.ops.iter().enumerate() {
        if i == before {
            for spec in VIEWS {
                let sql = format!(
                    "CREATE MATERIALIZED VIEW {} AS {}",
                    fixture.view_name(spec.name),
                    fixture.expand(spec.query, false)
                );
                execute(client, fixture, sql, workers).await?;
            }
            let after = "after the views were created (backfill)";
            check_views(client, fixture, &Table::ALL, workers, after).await?;
        }
        let Some(op) = op else { continue };
        let (sql, expected_count) = fixture.apply(op);
        let count = execute(client, fixture, sql, workers).await?;
        if count != expected_count {
            return Err(failure(
                fixture,
                workers,
                &format!(
                    "the last statement reported {count} rows, the model says {expected_count}"
                ),
            ));
        }
        if i >= before {
            let after = format!("after statement {}", fixture.history.len());
            // A statement that changed no row changed no view's query.
            let changed = if count == 0 { vec![] } else { vec![op.table()] };
            check_views(client, fixture, &changed, workers, &after).await?;
        }
    }
    Ok(())
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        // Each shrinking step replays a whole case against the server.
        max_shrink_iters: 256,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

fn views_match_their_queries(workers: usize) {
    let server = TestServer::start_with(ServerOptions {
        workers: Some(workers),
        ..ServerOptions::default()
    })
    .expect("server starts");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = runtime.block_on(server.connect()).expect("connects");
    let suffix = AtomicU64::new(0);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&case(), |case| {
        let n = suffix.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(run_case(&client, n, &case, workers))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn views_match_their_queries_with_1_worker() {
    views_match_their_queries(1);
}

#[test]
fn views_match_their_queries_with_4_workers() {
    views_match_their_queries(4);
}

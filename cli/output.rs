//! Everything the commands show — documents in globus-cli's formats (`-F text|json|unix`,
//! `--jmespath`), tables, progress bars — in one place, so every command looks and
//! behaves alike.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

/// Prints `value` as one pretty JSON document on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), serde_json::Error> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// How a reporting command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and sentences, for people.
    Text,
    /// One JSON document on stdout.
    Json,
    /// Tab-separated lines for shell tools, as globus-cli's `-F unix`.
    Unix,
}

/// `-F/--format`, `--jmespath` and `--json`: the output options of every reporting
/// command, as globus-cli spells them.
#[derive(Args, Clone, Debug)]
pub struct Output {
    /// Output format: text for people; json (one document) and unix (tab-separated
    /// lines) for programs.
    #[arg(short = 'F', long = "format", value_enum, ignore_case = true, default_value_t = Format::Text)]
    format: Format,
    /// Print only what this JMESPath expression selects from the JSON document (implies
    /// `-F json` unless `-F unix` is given), e.g. `--jmespath 'DATA[].task_id'`.
    #[arg(long, visible_alias = "jq", value_name = "EXPR", value_parser = jmespath_expression)]
    jmespath: Option<String>,
    /// Same as `-F json`.
    #[arg(long)]
    json: bool,
}

/// A JMESPath expression as typed: compiled once here, so a bad one is a usage error
/// (exit 2) before anything is sent.
fn jmespath_expression(text: &str) -> Result<String, String> {
    jmespath::compile(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not a JMESPath expression: {e}"))
}

impl Output {
    /// Whether a program reads the output (a document on stdout, nothing else there).
    pub fn machine(&self) -> bool {
        self.format != Format::Text || self.json || self.jmespath.is_some()
    }

    /// What `--jmespath` selects from `doc` (all of it without one).
    fn select(&self, doc: &impl Serialize) -> Result<Value, Box<dyn std::error::Error>> {
        let doc = serde_json::to_value(doc)?;
        let Some(expression) = &self.jmespath else {
            return Ok(doc);
        };
        let compiled = jmespath::compile(expression)?;
        let found = compiled.search(jmespath::Variable::from_serializable(&doc)?)?;
        Ok(serde_json::to_value(&*found)?)
    }

    /// Whether `--jmespath` selects nothing (null) from `doc`: globus-cli prints `None`
    /// (`null` in JSON) then, which a script would take for a value.
    pub fn selects_nothing(&self, doc: &impl Serialize) -> bool {
        self.jmespath.is_some() && self.select(doc).is_ok_and(|v| v.is_null())
    }

    /// Prints `doc` as `-F json` or `-F unix` say, filtered by `--jmespath`.
    pub fn emit(&self, doc: &impl Serialize) -> Result<(), Box<dyn std::error::Error>> {
        let doc = self.select(doc)?;
        if self.format == Format::Unix {
            let mut lines = Vec::new();
            unix_lines(&doc, &mut lines).map_err(|why| {
                // globus-cli's words, and its usage exit.
                crate::Exit(
                    2,
                    format!(
                        "UNIX formatting of output failed: {why}. Select the exact fields \
                         you want with --jmespath"
                    ),
                )
            })?;
            for line in lines {
                println!("{line}");
            }
            Ok(())
        } else {
            Ok(print_json(&doc)?)
        }
    }
}

/// A document as line-oriented, tab-separated text, laid out as globus-cli's `-F unix`
/// (the AWS CLI's text format) lays it out:
///
/// - an object: its scalar values on one line, by key; then each nested value under its
///   key in upper case;
/// - under an identifier, an object's scalar line comes after a line holding only the
///   identifier (`DATA`), and a list of scalars is one `ID<TAB>value` line per element;
/// - a list of objects: each object, their scalar keys being the union of all of theirs
///   (`None` where one lacks it); a bare list of scalars: one line.
///
/// A list that mixes objects and other values cannot be laid out: an error, as there.
fn unix_lines(value: &Value, lines: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::Array(items) => unix_list(items, None, lines),
        Value::Object(map) => unix_object(map, None, None, lines),
        other => {
            lines.push(scalar(other));
            Ok(())
        }
    }
}

fn unix_list(
    items: &[Value],
    identifier: Option<&str>,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    if items.iter().all(Value::is_object) {
        let objects: Vec<&serde_json::Map<String, Value>> =
            items.iter().filter_map(Value::as_object).collect();
        let keys = scalar_keys(&objects);
        for object in objects {
            unix_object(object, identifier, Some(&keys), lines)?;
        }
    } else if items.iter().any(Value::is_object) {
        return Err("a list mixes JSON objects with other values".into());
    } else if items.iter().any(Value::is_array) {
        let scalars: Vec<Value> = items.iter().filter(|v| !v.is_array()).cloned().collect();
        if !scalars.is_empty() {
            unix_list(&scalars, None, lines)?;
        }
        for nested in items.iter().filter_map(Value::as_array) {
            unix_list(nested, identifier, lines)?;
        }
    } else if let Some(id) = identifier {
        lines.extend(items.iter().map(|v| format!("{id}\t{}", scalar(v))));
    } else if !items.is_empty() {
        lines.push(items.iter().map(scalar).collect::<Vec<_>>().join("\t"));
    }
    Ok(())
}

fn unix_object(
    map: &serde_json::Map<String, Value>,
    identifier: Option<&str>,
    keys: Option<&[String]>,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    let own;
    let keys = match keys {
        Some(keys) => keys,
        None => {
            own = scalar_keys(&[map]);
            &own
        }
    };
    let mut scalars = Vec::with_capacity(keys.len());
    for key in keys {
        match map.get(key) {
            Some(v) if is_nested(v) => {
                return Err(format!(
                    "{key:?} is a value in one object and a list or object in another"
                ));
            }
            v => scalars.push(scalar(v.unwrap_or(&Value::Null))),
        }
    }
    if !scalars.is_empty() {
        lines.extend(identifier.map(str::to_owned));
        lines.push(scalars.join("\t"));
    }
    let mut nested: Vec<(&String, &Value)> =
        map.iter().filter(|(k, _)| !keys.contains(k)).collect();
    nested.sort_by_key(|(k, _)| *k);
    for (key, value) in nested {
        let id = key.to_uppercase();
        match value {
            Value::Array(items) => unix_list(items, Some(&id), lines)?,
            Value::Object(inner) => unix_object(inner, Some(&id), None, lines)?,
            _ => {
                return Err(format!(
                    "{key:?} is a list or object in one object and a value in another"
                ));
            }
        }
    }
    Ok(())
}

/// The keys whose values are scalars in any of `objects`, sorted.
fn scalar_keys(objects: &[&serde_json::Map<String, Value>]) -> Vec<String> {
    let mut keys: Vec<String> = objects
        .iter()
        .flat_map(|o| o.iter())
        .filter(|(_, v)| !is_nested(v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn is_nested(value: &Value) -> bool {
    matches!(value, Value::Object(_) | Value::Array(_))
}

/// A scalar as globus-cli prints it (Python's spelling of null and booleans).
fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A failure's code and reason, the code once (Globus's reasons often start with it:
/// `FILE_NOT_FOUND on /x`).
pub fn code_and_reason(code: &str, reason: &str) -> String {
    if reason.starts_with(code) {
        reason.to_owned()
    } else {
        format!("{code} {reason}").trim_end().to_owned()
    }
}

/// Prints a table as globus-cli does: a header row, a rule, then one row per line,
/// columns separated by ` | ` and padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let line = padded.join(" | ");
        let line = line.trim_end();
        // An empty last cell leaves no dangling separator.
        line.strip_suffix(" |").unwrap_or(line).to_owned()
    };
    println!(
        "{}",
        render(headers.iter().map(|h| h.to_string()).collect())
    );
    println!(
        "{}",
        render(widths.iter().map(|w| "-".repeat(*w)).collect())
    );
    for row in rows {
        println!("{}", render(row.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unix_lines_follow_globus_clis_layout() {
        let lines = |doc: serde_json::Value| {
            let mut lines = Vec::new();
            unix_lines(&doc, &mut lines).map(|_| lines)
        };
        let doc = json!({
            "DATA": [
                {"task_id": "t1", "status": "ACTIVE", "label": null},
                {"task_id": "t2", "status": "SUCCEEDED", "label": "x", "files": 3}
            ],
            "limit": 10,
            "has_next_page": false
        });
        assert_eq!(
            lines(doc).unwrap(),
            [
                "False\t10",
                "DATA",
                "None\tNone\tACTIVE\tt1",
                "DATA",
                "3\tx\tSUCCEEDED\tt2",
            ]
        );
        assert_eq!(lines(json!(["a", "b"])).unwrap(), ["a\tb"]);
        assert_eq!(
            lines(json!({"ids": ["a", "b"]})).unwrap(),
            ["IDS\ta", "IDS\tb"]
        );
        assert_eq!(
            lines(json!([["a", 1], ["b", 2]])).unwrap(),
            ["a\t1", "b\t2"]
        );
        assert_eq!(lines(json!(null)).unwrap(), ["None"]);
        assert!(lines(json!([{"a": 1}, 2])).is_err());
    }
}

/// A bar with `template` (indicatif syntax) and our `=> ` characters.
fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// What a byte bar shows, by where it is drawn.
#[derive(Clone, Copy)]
pub enum BarKind {
    /// The aggregate of `status --watch`, and the bar of a waiting `transfer`: rate
    /// and ETA, then a message.
    Total,
    /// One task under the aggregate: its id, its status, and a shorter bar.
    Task,
}

impl BarKind {
    /// The indicatif templates with a known total, and without one (no bar: bytes and
    /// rate only, so never a full bar at 0/0).
    fn templates(self) -> (&'static str, &'static str) {
        match self {
            BarKind::Total => (
                "{prefix} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta_known} {msg}",
                "{prefix} {spinner} {bytes} {binary_bytes_per_sec} {msg}",
            ),
            BarKind::Task => (
                "{prefix} {msg} [{wide_bar}] {bytes}/{total_bytes} {eta_known}",
                "{prefix} {msg} {spinner} {bytes}",
            ),
        }
    }
}

/// A byte bar named `prefix`, first without a total (see [`set_bytes`]).
fn byte_bar(prefix: String, kind: BarKind) -> ProgressBar {
    let bar = ProgressBar::no_length();
    set_bytes(&bar, 0, None, kind);
    bar.set_prefix(prefix);
    bar
}

/// The progress of one command's transfer, on stderr; hidden for machine-readable
/// output or when stderr is not a terminal.
pub fn transfer_bar(hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = byte_bar("transfer".into(), BarKind::Total);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The aggregate bar of `status --watch`: bytes of every task in flight.
pub fn aggregate_bar(bars: &MultiProgress) -> ProgressBar {
    bars.add(byte_bar("all tasks".into(), BarKind::Total))
}

/// One task's bar under the aggregate bar of `status --watch`, named by its task id.
pub fn task_bar(bars: &MultiProgress, id: String) -> ProgressBar {
    bars.add(byte_bar(id, BarKind::Task))
}

/// Moves a byte bar to `bytes`, toward `total` where it is known (a bar that takes
/// the terminal's width, with ETA); with no known total, or a total of 0, there is no
/// bar at all, only the bytes (and rate).
pub fn set_bytes(bar: &ProgressBar, bytes: i64, total: Option<i64>, kind: BarKind) {
    let total = total.filter(|t| *t > 0);
    let (with_total, without) = kind.templates();
    let template = if total.is_some() { with_total } else { without };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> ").with_key("eta_known", eta_known));
    }
    if let Some(total) = total {
        bar.set_length(total.max(bytes) as u64);
    }
    bar.set_position(bytes.max(0) as u64);
}

/// The ETA once bytes move; `?` before (a rate of nothing says "0s", which is a lie).
fn eta_known(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    if state.pos() == 0 {
        let _ = w.write_str("?");
    } else {
        let _ = write!(w, "{:#}", indicatif::HumanDuration(state.eta()));
    }
}

/// A bar of the demo: `prefix` counted up to `len`.
pub fn demo_bar(bars: &MultiProgress, prefix: &'static str, len: u64) -> ProgressBar {
    let bar = styled(
        bars.add(ProgressBar::new(len)),
        "{prefix:>22} [{bar:40}] {pos}/{len} {msg}",
    );
    bar.set_prefix(prefix);
    bar
}

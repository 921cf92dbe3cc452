//! The config file: one TOML file shared by every subcommand.
//!
//! Why the file feeds the command-line parser instead of being a second settings path:
//! every setting already has one typed definition, its clap argument (type, parser, range,
//! `FEEDER_*` variable, help text). The file supplies that argument's *default*, so
//!
//! - precedence is the same everywhere: flag > `FEEDER_*` environment > file > built-in;
//! - a file value is checked at load by the very parser its flag uses, and a bad value
//!   or an unknown key is reported with the file's line number;
//! - nothing can be settable in the file but not on the command line, or the reverse.
//!
//! Layout: `[log]` (`filter`, `json`), `[metrics]` (`listen`), `[kafka]` (`brokers`,
//! `topic_prefix`, `partitions`, `replication` and a `[kafka.properties]` table of
//! librdkafka properties), and one section per subcommand (`[edge]`, `[stream]`,
//! `[writer]`, `[loadgen]`, `[verify]`, `[compact]`, `[demo]`) whose keys are that
//! subcommand's long flags with `_` for `-`. Two values have no flag because they are
//! structured: `[kafka.properties]` (merged under `--kafka-property`/
//! `FEEDER_KAFKA_PROPERTIES`, which win key by key, so a Secret can add a password to a
//! ConfigMap's properties) and `[stream.rules]` (the rule thresholds of
//! `docs/checks.md`, checked by serde with `deny_unknown_fields`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use feeder_stream::rules::RulesConfig;

use crate::cli::{Cli, Command};

/// Sections whose keys may belong to several subcommands.
const SHARED_SECTIONS: [&str; 2] = ["kafka", "metrics"];
/// Sections that are a structured value, not flags: `(section, key)`.
const STRUCTURED: [(&str, &str); 2] = [("kafka", "properties"), ("stream", "rules")];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path} line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A loaded, validated config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// `(section, arg id)` → (values as the flag would take them, line).
    values: BTreeMap<(String, String), (Vec<String>, usize)>,
    kafka_properties: Vec<(String, String)>,
    rules: Option<RulesConfig>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text` against the command line's arguments.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let doc = toml_edit::Document::parse(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: syntax_message(text, e.span(), e.message()),
        })?;
        let invalid =
            |span: Option<std::ops::Range<usize>>, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, span),
                message,
            };
        let cmd = Cli::command();
        let mut values = BTreeMap::new();
        let mut kafka_properties = Vec::new();
        for (section, item) in doc.as_table().iter() {
            let Some(table) = item.as_table_like() else {
                return Err(invalid(
                    item.span(),
                    format!("`{section}` must be a [section]; settings live in sections"),
                ));
            };
            let targets = targets_of(&cmd, section).ok_or_else(|| {
                invalid(
                    item.span(),
                    format!(
                        "unknown section [{section}] (sections: log, metrics, kafka, {})",
                        stage_names(&cmd).join(", ")
                    ),
                )
            })?;
            for (key, value) in table.iter() {
                let span = value.span().or_else(|| item.span());
                if STRUCTURED.contains(&(section, key)) {
                    if section == "kafka" {
                        kafka_properties = properties_of(value)
                            .map_err(|m| invalid(span.clone(), format!("kafka.properties: {m}")))?;
                    }
                    continue;
                }
                let id = arg_id(section, key);
                let owners: Vec<&clap::Command> = targets
                    .iter()
                    .copied()
                    .filter(|c| c.get_arguments().any(|a| a.get_id() == id.as_str()))
                    .collect();
                if owners.is_empty() || id == "config" {
                    return Err(invalid(
                        span,
                        format!(
                            "unknown key `{key}` in [{section}] (known: {})",
                            known_keys(&targets, section).join(", ")
                        ),
                    ));
                }
                let strings = scalar_strings(value)
                    .map_err(|m| invalid(span.clone(), format!("{section}.{key}: {m}")))?;
                for owner in &owners {
                    let arg = owner
                        .get_arguments()
                        .find(|a| a.get_id() == id.as_str())
                        .expect("owner has the argument");
                    for s in &strings {
                        check_value(arg, s).map_err(|e| {
                            invalid(
                                span.clone(),
                                format!("{section}.{key}: {}", clap_reason(&e, s)),
                            )
                        })?;
                    }
                }
                values.insert((section.to_string(), id), (strings, line_of(text, span)));
            }
        }
        let rules = rules_of(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: format!(
                "[stream.rules]: {}",
                syntax_message(text, e.span(), e.message())
            ),
        })?;
        if let Some(r) = &rules {
            r.validate().map_err(|m| {
                let span = doc
                    .get("stream")
                    .and_then(|s| s.get("rules"))
                    .and_then(|r| r.span());
                invalid(span, format!("stream.rules: {m}"))
            })?;
        }
        Ok(Self {
            values,
            kafka_properties,
            rules,
        })
    }

    /// Makes the file's values the defaults of `cmd`'s arguments.
    fn apply(&self, mut cmd: clap::Command) -> clap::Command {
        for ((section, id), (strings, _)) in &self.values {
            let set = |a: clap::Arg| {
                let a = a.required(false);
                if strings.len() == 1 {
                    a.default_value(strings[0].clone())
                } else {
                    a.default_values(strings.clone())
                }
            };
            if section == "log" {
                cmd = cmd.mut_arg(id, set);
                continue;
            }
            let stages: Vec<String> = cmd
                .get_subcommands()
                .filter(|c| {
                    (SHARED_SECTIONS.contains(&section.as_str()) || c.get_name() == section)
                        && c.get_arguments().any(|a| a.get_id() == id.as_str())
                })
                .map(|c| c.get_name().to_string())
                .collect();
            for stage in stages {
                cmd = cmd.mut_subcommand(stage, |sc| sc.mut_arg(id, set));
            }
        }
        cmd
    }

    /// The structured values the parser cannot carry.
    fn fill(&self, cli: &mut Cli) {
        let kafka = match &mut cli.command {
            Command::Edge(a) => Some(&mut a.kafka),
            Command::Stream(a) => {
                a.rules = self.rules.clone();
                Some(&mut a.kafka)
            }
            Command::Writer(a) => Some(&mut a.kafka),
            Command::Compact(a) => Some(&mut a.kafka),
            _ => None,
        };
        if let Some(k) = kafka {
            k.file_properties = self.kafka_properties.clone();
        }
    }
}

/// The config file named by `--config FILE` (or `--config=FILE`) in `args`, else by
/// `FEEDER_CONFIG`. Scanned before parsing because it changes what parsing accepts.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("FEEDER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Parses the command line with the config file (if any) underneath it.
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, ParseFailure> {
    let file = match config_path(&args) {
        Some(p) => Some(ConfigFile::load(&p).map_err(ParseFailure::Config)?),
        None => None,
    };
    let cmd = Cli::command();
    let cmd = match &file {
        Some(f) => f.apply(cmd),
        None => cmd,
    };
    let matches = cmd.try_get_matches_from(args).map_err(ParseFailure::Clap)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(ParseFailure::Clap)?;
    if let Some(f) = &file {
        f.fill(&mut cli);
    }
    Ok(cli)
}

#[derive(Debug)]
pub enum ParseFailure {
    Config(ConfigError),
    Clap(clap::Error),
}

impl ParseFailure {
    /// Prints the error (or help/version) and exits as clap would.
    pub fn exit(self) -> ! {
        match self {
            ParseFailure::Clap(e) => e.exit(),
            ParseFailure::Config(e) => {
                eprintln!("feeder: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// Runs `value` through `arg`'s own parser (type, range, format), alone: a one-argument
/// command without the argument's environment variable or its ties to other arguments.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), clap::Error> {
    let long = arg.get_long().unwrap_or(arg.get_id().as_str()).to_string();
    let probe = clap::Arg::new(arg.get_id().clone())
        .long(long.clone())
        .value_parser(arg.get_value_parser().clone())
        .action(clap::ArgAction::Set);
    clap::Command::new("feeder")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--{long}={value}")])
        .map(|_| ())
}

/// The subcommands a section configures, or `None` for an unknown section.
fn targets_of<'c>(cmd: &'c clap::Command, section: &str) -> Option<Vec<&'c clap::Command>> {
    if section == "log" {
        return Some(vec![cmd]);
    }
    let stages: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|c| SHARED_SECTIONS.contains(&section) || c.get_name() == section)
        .collect();
    let reserved = matches!(section, "devices" | "config" | "help");
    (!stages.is_empty() && !reserved).then_some(stages)
}

fn stage_names(cmd: &clap::Command) -> Vec<&str> {
    cmd.get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| !matches!(*n, "devices" | "config" | "help"))
        .collect()
}

/// The clap argument id a file key sets.
fn arg_id(section: &str, key: &str) -> String {
    match (section, key) {
        ("log", "filter") => "filter".into(),
        ("log", "json") => "log_json".into(),
        ("metrics", k) => format!("metrics_{k}"),
        (_, k) => k.to_string(),
    }
}

fn key_of(section: &str, id: &str) -> Option<String> {
    match (section, id) {
        ("log", "filter") => Some("filter".into()),
        ("log", "log_json") => Some("json".into()),
        ("log", _) => None,
        ("metrics", id) => id.strip_prefix("metrics_").map(str::to_string),
        ("kafka", "kafka_properties") => Some("properties".into()),
        ("kafka", id) => matches!(
            id,
            "brokers" | "topic_prefix" | "partitions" | "replication"
        )
        .then(|| id.to_string()),
        (_, id) => Some(id.to_string()),
    }
}

fn known_keys(targets: &[&clap::Command], section: &str) -> Vec<String> {
    let mut keys: Vec<String> = targets
        .iter()
        .flat_map(|c| c.get_arguments())
        .filter(|a| !a.is_global_set() || section == "log")
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .filter_map(|a| key_of(section, a.get_id().as_str()))
        .filter(|k| {
            section == "kafka"
                || section == "log"
                || section == "metrics"
                || !matches!(
                    k.as_str(),
                    "brokers" | "topic_prefix" | "partitions" | "replication"
                )
        })
        .collect();
    if section == "stream" {
        keys.push("rules".into());
    }
    keys.sort();
    keys.dedup();
    keys
}

/// A TOML value as the strings its flag would receive.
fn scalar_strings(item: &toml_edit::Item) -> Result<Vec<String>, String> {
    let one = |v: &toml_edit::Value| -> Result<String, String> {
        Ok(match v {
            toml_edit::Value::String(s) => s.value().clone(),
            toml_edit::Value::Integer(i) => i.value().to_string(),
            toml_edit::Value::Float(f) => f.value().to_string(),
            toml_edit::Value::Boolean(b) => b.value().to_string(),
            toml_edit::Value::Datetime(d) => d.value().to_string(),
            _ => return Err("expected a string, number or boolean".into()),
        })
    };
    match item.as_value() {
        Some(toml_edit::Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
        None => Err("expected a value, found a table".into()),
    }
}

fn properties_of(item: &toml_edit::Item) -> Result<Vec<(String, String)>, String> {
    let table = item
        .as_table_like()
        .ok_or("expected a table of librdkafka properties")?;
    table
        .iter()
        .map(|(k, v)| {
            let s = scalar_strings(v).and_then(|mut s| {
                if s.len() == 1 {
                    Ok(s.remove(0))
                } else {
                    Err("expected one value".into())
                }
            });
            s.map(|s| (k.to_string(), s))
                .map_err(|m| format!("{k}: {m}"))
        })
        .collect()
}

/// `[stream.rules]`, typed by serde (its errors carry the line and column).
fn rules_of(text: &str) -> Result<Option<RulesConfig>, toml::de::Error> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        stream: Option<Stream>,
    }
    #[derive(serde::Deserialize)]
    struct Stream {
        #[serde(default)]
        rules: Option<RulesConfig>,
    }
    let f: File = toml::from_str(text)?;
    Ok(f.stream.and_then(|s| s.rules))
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1)
}

// Error messages never repeat content of the file: a line may hold a key or password
// (a Secret's properties, a value pasted under the wrong key), and config errors reach
// logs and terminals. The parsers' own renderings quote the source line (toml) or the
// value (clap, serde), so messages are rebuilt from the position and the kind of error,
// with any quoted text in the parser's message replaced by `<value>`. Key names, which
// the user needs to find the mistake, are kept.

/// `line L, column C: what` for a TOML syntax or typed-value error at `span`.
fn syntax_message(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let at = span.map_or(0, |s| s.start.min(text.len()));
    let line = line_of(text, Some(at..at));
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..at].chars().count() + 1;
    format!("line {line}, column {column}: {}", without_quoted(message))
}

/// Why a flag's parser refused `value`, without the value: the parser's own error (its
/// `source`) or the kind of clap error.
fn clap_reason(e: &clap::Error, value: &str) -> String {
    let reason = std::error::Error::source(e)
        .map(ToString::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    let reason = if value.is_empty() {
        reason
    } else {
        reason.replace(value, "<value>")
    };
    format!("invalid value: {}", without_quoted(first_line(&reason)))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// `message` with every `"…"` or `'…'` span (values, as serde, toml and clap quote
/// them) replaced by `<value>`; an unclosed quote hides the rest. Backticked names stay.
/// The `'` of an apostrophe (after a letter or digit) does not open a quote.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c == '`' {
            // a name or token the parser expected, as the parser wrote it
            out.push(c);
            for d in chars.by_ref() {
                out.push(d);
                if d == '`' {
                    break;
                }
            }
            continue;
        }
        // an apostrophe inside a word ("isn't") is not a quote
        let opens =
            c == '"' || (c == '\'' && out.chars().last().is_none_or(|p| !p.is_alphanumeric()));
        if opens {
            out.push_str("<value>");
            let mut escaped = false;
            for d in chars.by_ref() {
                match d {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    _ if d == c => break,
                    _ => {}
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;

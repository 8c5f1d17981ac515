//! What the importer tells the operator: `FILE:LINE: <keyword>: <why> (<what drlb does instead>)`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A line of a keepalived configuration file (after `include`s, one of many files).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// How much a report matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Translated, but the operator should know something (keepalived's own behaviour
    /// differs from what the file seems to say, a default applied, ...).
    Note,
    /// Not translated, or translated differently from what keepalived would do.
    Warning,
    /// keepalived itself rejects or mis-reads this line.
    Error,
    /// The file cannot be imported at all (unbalanced braces, an unreadable include).
    Fatal,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

/// One thing the operator must know about the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub at: Location,
    pub keyword: String,
    pub severity: Severity,
    /// Why: what keepalived does with it, or why drlb cannot do it.
    pub why: String,
    /// What drlb does instead.
    pub instead: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.keyword, self.why)?;
        if !self.instead.is_empty() {
            write!(f, " ({})", self.instead)?;
        }
        Ok(())
    }
}

/// Collects reports in the order they are found.
#[derive(Debug, Default)]
pub struct Reports(pub Vec<Report>);

impl Reports {
    pub fn add(&mut self, severity: Severity, at: &Location, keyword: &str, why: impl Into<String>, instead: impl Into<String>) {
        self.0.push(Report { at: at.clone(), keyword: keyword.to_string(), severity, why: why.into(), instead: instead.into() });
    }

    pub fn fatal(&self) -> bool {
        self.0.iter().any(|r| r.severity == Severity::Fatal)
    }
}

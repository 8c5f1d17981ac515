//! keepalived.conf's preprocessor and lexer, as keepalived's `lib/parser.c` (`read_line`)
//! does them, in its order for each line:
//!
//! 1. comments: `#` or `!` anywhere outside double quotes (`\#`, `\!` escape them);
//! 2. `@ID rest` / `@^ID rest`: the rest is kept only if ID is (is not) the config id;
//! 3. `$NAME=value` defines (a value ending in `\` continues on the next lines);
//! 4. `~SEQ(var, ...)` / `~SEQx` / `~LST(var, ...)` repeat the rest of the line;
//! 5. `$NAME` (followed by a blank, `,`, `)` or the end) and `${NAME}` are replaced,
//!    recursively and at use, then the line is decommented again (so `${_HASH}` starts a
//!    comment, as in keepalived);
//! 6. `include PATTERN` reads the files the glob matches, sorted, relative to the
//!    including file's directory, as one stream (brace depth carries over, as keepalived's);
//! 7. every `{` and `}` outside quotes becomes a line of its own;
//! 8. words: blanks separate them, `"..."` is one word without its quotes.
//!
//! Unlike keepalived, a file whose own braces do not balance is refused (Fatal): keepalived
//! would read the next file inside a block the author thought was closed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::report::{Location, Reports, Severity};

/// One logical line, ready for the tree: `{` and `}` are lines of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: Location,
    pub words: Vec<Word>,
    /// The line as it stood after expansion (scripts and --vrrp-out need it as written).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Written in double quotes (a quoted `{` is not a brace).
    pub quoted: bool,
}

/// keepalived's line length (MAXBUF): substitutions beyond it are refused.
const MAX_LINE: usize = 1024;
/// Includes deeper than this are a loop (keepalived has no limit and recurses until it fails).
const MAX_INCLUDE_DEPTH: usize = 32;
/// Substitution passes over one line before it is called a loop.
const MAX_PASSES: usize = 64;
/// Lines a single `~SEQ`/`~LST` may produce.
const MAX_SEQUENCE: i64 = 65536;

/// A `$NAME` definition's value: one line, or several (defined with trailing `\`).
#[derive(Debug, Clone)]
enum Value {
    Line(String),
    Lines(Vec<String>),
}

/// A multi-line definition being collected.
struct Collecting {
    name: String,
    lines: Vec<String>,
}

pub struct Lexer<'r> {
    config_id: String,
    definitions: HashMap<String, Value>,
    reports: &'r mut Reports,
    out: Vec<Line>,
    /// Open files, innermost last: its directory and its brace balance so far.
    files: Vec<(PathBuf, i64)>,
    /// Every file read, in order (for `--vrrp-out`'s header and the tests).
    pub read: Vec<PathBuf>,
    collecting: Option<Collecting>,
}

impl<'r> Lexer<'r> {
    pub fn new(config_id: &str, reports: &'r mut Reports) -> Lexer<'r> {
        Lexer { config_id: config_id.to_string(), definitions: HashMap::new(), reports, out: Vec::new(), files: Vec::new(), read: Vec::new(), collecting: None }
    }

    /// Reads `path` and everything it includes.
    pub fn read_file(mut self, path: &Path) -> (Vec<Line>, Vec<PathBuf>) {
        let at = Location { file: Arc::from(path), line: 0 };
        match std::fs::read(path) {
            Ok(bytes) => self.file(path, &bytes),
            Err(e) => self.reports.add(Severity::Fatal, &at, "file", format!("cannot read it: {e}"), "nothing imported"),
        }
        (self.out, self.read)
    }

    /// Lexes `text` as if it were the file `path` (tests, and sources held in memory).
    pub fn read_text(mut self, path: &Path, text: &str) -> (Vec<Line>, Vec<PathBuf>) {
        self.file(path, text.as_bytes());
        (self.out, self.read)
    }

    fn file(&mut self, path: &Path, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let name: Arc<Path> = Arc::from(path);
        self.read.push(path.to_path_buf());
        // keepalived chdir()s into each file's directory: relative includes and ${_PWD}
        // are that directory, absolute.
        let dir = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
        self.files.push((dir, 0));
        for (i, raw) in text.lines().enumerate() {
            let at = Location { file: name.clone(), line: i as u32 + 1 };
            self.physical(raw, &at);
        }
        if let Some(c) = self.collecting.take() {
            // A definition still open at the end of its file ends there.
            self.define(c.name, Value::Lines(c.lines));
        }
        let (_, balance) = self.files.pop().expect("pushed above");
        if balance != 0 {
            let at = Location { file: name, line: text.lines().count() as u32 };
            let why = if balance > 0 {
                format!("the file leaves {balance} block(s) open at its end (keepalived: \"There are {balance} missing '}}'s\"; an included file's open blocks swallow what follows it)")
            } else {
                format!("the file closes {} block(s) it did not open (keepalived: \"Extra '}}' found\")", -balance)
            };
            self.reports.add(Severity::Fatal, &at, "}", why, "not imported: balance the braces of this file");
        }
    }

    fn physical(&mut self, raw: &str, at: &Location) {
        let is_empty = raw.trim_end_matches(['\r', '\n']).is_empty();
        let line = decomment(raw.trim_end_matches(['\r', '\n']), at, self.reports);
        if let Some(c) = self.collecting.as_mut() {
            if is_empty {
                let c = self.collecting.take().unwrap();
                self.define(c.name, Value::Lines(c.lines));
                return;
            }
            match line.strip_suffix('\\') {
                Some(part) => {
                    let part = part.trim_end();
                    if !part.is_empty() {
                        c.lines.push(part.to_string());
                    }
                }
                // A comment line without `\` neither adds nor ends.
                None if line.is_empty() => {}
                None => {
                    c.lines.push(line);
                    let c = self.collecting.take().unwrap();
                    self.define(c.name, Value::Lines(c.lines));
                }
            }
            return;
        }
        if !line.is_empty() {
            self.logical(line, at, 0);
        }
    }

    fn define(&mut self, name: String, value: Value) {
        self.definitions.insert(name, value);
    }

    /// Steps 2 to 8 for one line and, in turn, what follows each of its braces (a loop, not
    /// recursion: a line of many braces must not exhaust the stack).
    fn logical(&mut self, line: String, at: &Location, depth: usize) {
        let mut pending = Some(line);
        while let Some(line) = pending.take() {
            pending = self.piece(line, at, depth);
        }
    }

    /// Steps 2 to 8 up to the line's first brace; returns what follows the brace.
    fn piece(&mut self, mut line: String, at: &Location, depth: usize) -> Option<String> {
        if depth > MAX_PASSES {
            self.reports.add(Severity::Fatal, at, "$", "substitutions do not end (a definition refers to itself?)", "not imported");
            return None;
        }
        loop {
            line = line.trim_start().to_string();
            if line.is_empty() {
                return None;
            }
            // 2. @ID / @^ID
            if let Some(rest) = line.strip_prefix('@') {
                let (negate, rest) = match rest.strip_prefix('^') {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let end = rest.find([' ', '\t']).unwrap_or(rest.len());
                let (id, tail) = rest.split_at(end);
                if (id == self.config_id) == negate || tail.trim().is_empty() {
                    return None;
                }
                line = tail.trim_start().to_string();
                continue;
            }
            break;
        }
        // 3. $NAME=value
        if let Some((name, value)) = definition(&line) {
            match value.strip_suffix('\\') {
                Some(first) => {
                    let first = first.trim_end();
                    let lines = if first.is_empty() { Vec::new() } else { vec![first.to_string()] };
                    self.collecting = Some(Collecting { name, lines });
                }
                None => self.define(name, Value::Line(value)),
            }
            return None;
        }
        // 4. ~SEQ / ~LST
        if line.starts_with("~SEQ") || line.starts_with("~LST") {
            self.sequence(&line, at, depth);
            return None;
        }
        // 5. substitutions
        if line.contains('$') {
            match self.substitute(&line, at) {
                Substituted::Unchanged => {}
                Substituted::Line(new) => {
                    let again = decomment(&new, at, self.reports);
                    self.logical(again, at, depth + 1);
                    return None;
                }
                Substituted::Lines(lines) => {
                    for l in lines {
                        let again = decomment(&l, at, self.reports);
                        self.logical(again, at, depth + 1);
                    }
                    return None;
                }
            }
        }
        // 6. include
        if let Some((kind, pattern)) = include(&line) {
            self.include(kind, pattern.trim(), at);
            return None;
        }
        // 7. braces split the line
        if let Some(i) = first_brace(&line) {
            if i == 0 {
                let brace = line[..1].to_string();
                self.emit(vec![Word { text: brace.clone(), quoted: false }], brace.clone(), at);
                if let Some(f) = self.files.last_mut() {
                    f.1 += if brace == "{" { 1 } else { -1 };
                }
                return Some(line[1..].to_string());
            }
            let (head, rest) = line.split_at(i);
            self.words(head, at);
            return Some(rest.to_string());
        }
        // 8. words
        self.words(&line, at);
        None
    }

    fn emit(&mut self, words: Vec<Word>, text: String, at: &Location) {
        if !words.is_empty() {
            self.out.push(Line { at: at.clone(), words, text });
        }
    }

    fn words(&mut self, line: &str, at: &Location) {
        let mut words = Vec::new();
        let mut rest = line;
        loop {
            rest = rest.trim_start_matches([' ', '\t', '\x0c', '\x0b', '\r', '\n']);
            if rest.is_empty() {
                break;
            }
            if let Some(r) = rest.strip_prefix('"') {
                match r.find('"') {
                    Some(end) => {
                        words.push(Word { text: r[..end].to_string(), quoted: true });
                        rest = &r[end + 1..];
                    }
                    None => {
                        self.reports.add(Severity::Error, at, "\"", format!("unmatched quote: keepalived drops the rest of the line from `{rest}`"), "dropped as keepalived does");
                        break;
                    }
                }
            } else {
                let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
                words.push(Word { text: rest[..end].to_string(), quoted: false });
                rest = &rest[end..];
            }
        }
        self.emit(words, line.trim().to_string(), at);
    }

    fn substitute(&mut self, line: &str, at: &Location) -> Substituted {
        // As keepalived's replace_param: the scan does not advance past inserted text, so
        // a value's own references expand at once (recursively, at use).
        let mut buf = line.to_string();
        let mut i = 0;
        let mut replaced = 0;
        while let Some(offset) = buf[i..].find('$') {
            let pos = i + offset;
            let (name, end) = if buf[pos + 1..].starts_with('{') {
                match buf[pos + 2..].find('}') {
                    Some(close) => (buf[pos + 2..pos + 2 + close].to_string(), pos + 2 + close + 1),
                    None => (String::new(), pos + 1),
                }
            } else {
                let len = buf[pos + 1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(buf.len() - pos - 1);
                let end = pos + 1 + len;
                let follows_ok = buf[end..].chars().next().is_none_or(|c| matches!(c, ' ' | '\t' | ',' | ')'));
                if follows_ok { (buf[pos + 1..end].to_string(), end) } else { (String::new(), pos + 1) }
            };
            let value = if name.is_empty() { None } else { self.lookup(&name, at) };
            match value {
                None => i = pos + 1,
                Some(Value::Lines(lines)) if buf[end..].trim().is_empty() => {
                    // A multi-line value at the end of the line: what is before it
                    // prefixes its first line; each line is then read on its own.
                    let prefix = buf[..pos].to_string();
                    let mut result = lines;
                    match result.first_mut() {
                        Some(first) => *first = format!("{prefix}{first}"),
                        None => result.push(prefix),
                    }
                    return Substituted::Lines(result);
                }
                // keepalived expands a multi-line value only at the end of a line.
                Some(Value::Lines(_)) => i = pos + 1,
                Some(Value::Line(text)) => {
                    let stop = text.trim_start().starts_with('~');
                    buf.replace_range(pos..end, &text);
                    replaced += 1;
                    if replaced > 1000 {
                        self.reports.add(Severity::Fatal, at, "$", format!("substitutions do not end in `{line}` (a definition refers to itself?)"), "not imported");
                        return Substituted::Line(String::new());
                    }
                    if stop {
                        // keepalived leaves the rest of a line that became a ~SEQ alone.
                        break;
                    }
                    i = pos;
                }
            }
        }
        if buf.len() > MAX_LINE {
            self.reports.add(Severity::Error, at, "$", format!("substitution makes the line longer than keepalived's {MAX_LINE} bytes"), "kept whole (keepalived would refuse it)");
        }
        if replaced > 0 { Substituted::Line(buf) } else { Substituted::Unchanged }
    }

    fn lookup(&mut self, name: &str, at: &Location) -> Option<Value> {
        if let Some(v) = self.definitions.get(name) {
            return Some(v.clone());
        }
        let mut parts = name.split_whitespace();
        Some(Value::Line(match parts.next()? {
            "_PWD" => self.files.last().map(|f| f.0.display().to_string()).unwrap_or_default(),
            "_INSTANCE" => self.config_id.clone(),
            "_HASH" => "#".into(),
            "_BANG" => "!".into(),
            "_RANDOM" => {
                let min = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0i64);
                self.reports.add(
                    Severity::Warning,
                    at,
                    "${_RANDOM}",
                    "keepalived draws a random number here at each start",
                    format!("{min}, the lowest it can draw, so the import is the same every time"),
                );
                min.to_string()
            }
            _ => return None,
        }))
    }

    fn sequence(&mut self, line: &str, at: &Location, depth: usize) {
        let hex = line.starts_with("~SEQx");
        let lst = line.starts_with("~LST");
        let name = if hex { "~SEQx" } else { &line[..4] };
        // keepalived allows blanks between the name and its `(`.
        let spec = line[name.len()..].trim_start();
        let close = if lst { matching_paren(spec) } else { spec.find(')') };
        let (Some(close), true) = (close, spec.starts_with('(')) else {
            self.reports.add(Severity::Error, at, name, format!("invalid specification `{line}`; keepalived ignores the line"), "ignored as keepalived does");
            return;
        };
        let inner = &spec[1..close];
        let text = spec[close + 1..].trim_start().to_string();
        if lst {
            self.list(inner, &text, at, depth);
            return;
        }
        // Arguments are substituted, then read as C's strtol(.., 0) reads them.
        let inner = match self.substitute(inner, at) {
            Substituted::Line(l) => l,
            _ => inner.to_string(),
        };
        let mut args = inner.split(',').map(str::trim);
        let var = args.next().unwrap_or("").to_string();
        let numbers: Option<Vec<i128>> = args.map(|a| c_integer(a).map(i128::from)).collect();
        let (start, step, end) = match numbers.as_deref() {
            Some([n]) => (if *n < 0 { -1 } else { 1 }, if *n < 1 { -1 } else { 1 }, *n),
            Some([a, b]) => (*a, if b >= a { 1 } else { -1 }, *b),
            Some([a, s, b]) => (*a, *s, *b),
            _ => (0, 0, 0),
        };
        // One iteration when start is end, whatever the step (keepalived runs it once).
        let valid = !var.is_empty() && step != 0 && (start == end || (step > 0) == (end > start)) && !(hex && (start < 0 || end < 0));
        if !valid || (end - start) / step >= i128::from(MAX_SEQUENCE) {
            self.reports.add(Severity::Error, at, name, format!("invalid values `{inner}`; keepalived ignores the line"), "ignored as keepalived does");
            return;
        }
        let mut v = start;
        loop {
            let value = if hex { format!("{v:x}") } else { v.to_string() };
            self.define(var.clone(), Value::Line(value));
            self.logical(text.clone(), at, depth + 1);
            v += step;
            if (step > 0 && v > end) || (step < 0 && v < end) {
                break;
            }
        }
    }

    /// `~LST(var, v1, v2...)` or `~LST({a,b}, {1,2}, ...)`: values are taken literally.
    fn list(&mut self, inner: &str, text: &str, at: &Location, depth: usize) {
        let (vars, rest): (Vec<String>, &str) = if let Some(r) = inner.trim_start().strip_prefix('{') {
            let Some(close) = r.find('}') else {
                self.reports.add(Severity::Error, at, "~LST", format!("invalid specification `{inner}`"), "ignored as keepalived does");
                return;
            };
            (r[..close].split(',').map(|v| v.trim().to_string()).collect(), r[close + 1..].trim_start().trim_start_matches(',').trim_start())
        } else {
            let (var, rest) = inner.split_once(',').unwrap_or((inner, ""));
            (vec![var.trim().to_string()], rest)
        };
        let mut tuples: Vec<Vec<String>> = Vec::new();
        if vars.len() == 1 && !rest.trim_start().starts_with('{') {
            tuples.extend(rest.split(',').map(|v| vec![v.trim().to_string()]));
        } else {
            let mut r = rest;
            while let Some(open) = r.find('{') {
                let Some(close) = r[open..].find('}') else { break };
                let values: Vec<String> = r[open + 1..open + close].split(',').map(|v| v.trim().to_string()).collect();
                if values.len() > vars.len() {
                    self.reports.add(Severity::Error, at, "~LST", format!("specification has too many values `{inner}`"), "ignored as keepalived does");
                    return;
                }
                tuples.push(values);
                r = &r[open + close + 1..];
            }
        }
        for tuple in tuples {
            for (i, var) in vars.iter().enumerate() {
                self.define(var.clone(), Value::Line(tuple.get(i).cloned().unwrap_or_default()));
            }
            self.logical(text.to_string(), at, depth + 1);
        }
    }

    fn include(&mut self, kind: &str, pattern: &str, at: &Location) {
        if self.files.len() >= MAX_INCLUDE_DEPTH {
            self.reports.add(Severity::Fatal, at, "include", format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files (a file includes itself?)"), "not imported");
            return;
        }
        let dir = self.files.last().map(|f| f.0.clone()).unwrap_or_default();
        let must_match = matches!(kind, "includem" | "includew" | "includea");
        let mut matched = 0;
        for alternative in expand_braces(pattern) {
            let full = if Path::new(&alternative).is_absolute() { PathBuf::from(&alternative) } else { dir.join(&alternative) };
            // glob(3) leaves dot files out unless the pattern names them.
            let options = glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };
            let paths: Vec<PathBuf> = match glob::glob_with(&full.to_string_lossy(), options) {
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(e) => {
                    self.reports.add(Severity::Error, at, kind, format!("`{pattern}` is not a valid pattern: {e}"), "nothing included");
                    continue;
                }
            };
            for path in paths {
                let meta = std::fs::metadata(&path);
                use std::os::unix::fs::PermissionsExt as _;
                match meta {
                    Ok(m) if m.is_dir() => {
                        self.reports.add(Severity::Warning, at, kind, format!("'{}' is a directory; keepalived skips it", path.display()), "skipped as keepalived does");
                    }
                    Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 != 0 => {
                        self.reports.add(
                            Severity::Warning,
                            at,
                            kind,
                            format!("'{}' is not a regular non-executable file; keepalived skips it", path.display()),
                            "skipped as keepalived does",
                        );
                    }
                    Ok(_) => match std::fs::read(&path) {
                        Ok(bytes) => {
                            matched += 1;
                            self.file(&path, &bytes);
                        }
                        Err(e) => self.reports.add(Severity::Fatal, at, kind, format!("cannot read '{}': {e}", path.display()), "not imported"),
                    },
                    Err(_) if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) => self.reports.add(
                        Severity::Warning,
                        at,
                        kind,
                        format!("'{}' is a dangling symbolic link; keepalived skips it", path.display()),
                        "skipped as keepalived does",
                    ),
                    Err(e) => self.reports.add(Severity::Fatal, at, kind, format!("cannot read '{}': {e}", path.display()), "not imported"),
                }
            }
        }
        if matched == 0 {
            let severity = if must_match { Severity::Error } else { Severity::Warning };
            self.reports.add(severity, at, kind, format!("no file matches `{pattern}` (relative to {})", dir.display()), "nothing included, as keepalived");
        }
    }
}

enum Substituted {
    Unchanged,
    Line(String),
    Lines(Vec<String>),
}

/// keepalived's `decomment`: strips leading blanks, a comment (`#` or `!` outside double
/// quotes; `\#` and `\!` keep the character) and trailing blanks. A `\` that ends the raw
/// line survives a comment before it, so a commented line inside a multi-line definition
/// still continues it.
pub fn decomment(line: &str, at: &Location, reports: &mut Reports) -> String {
    let chars: Vec<char> = line.trim_start_matches([' ', '\t']).chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut quoted = false;
    let mut comment_at = None;
    let mut continues = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                if comment_at.is_none() {
                    quoted = !quoted;
                }
                out.push(c);
            }
            '\\' => match chars.get(i + 1) {
                Some(&next) => {
                    if !(!quoted && matches!(next, '#' | '!')) {
                        out.push(c);
                    }
                    out.push(next);
                    i += 1;
                }
                None => {
                    continues = true;
                    break;
                }
            },
            '#' | '!' if !quoted && comment_at.is_none() => {
                comment_at = Some(out.len());
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    if quoted {
        reports.add(Severity::Error, at, "\"", format!("unterminated quote in `{line}`"), "read as keepalived reads it");
    }
    if let Some(k) = comment_at {
        out.truncate(k);
    }
    let mut out = out.trim_end_matches([' ', '\t']).to_string();
    if continues {
        out.push('\\');
    }
    out
}

/// `$NAME=value` at the start of a line: (NAME, value).
fn definition(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('$')?;
    let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let name = &rest[..len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || !rest[len..].starts_with('=') {
        return None;
    }
    Some((name.to_string(), rest[len + 1..].trim_start().to_string()))
}

/// `include PATTERN` (and keepalived's stricter `includer`, `includem`, ...).
fn include(line: &str) -> Option<(&str, &str)> {
    let end = line.find([' ', '\t'])?;
    let kind = &line[..end];
    matches!(kind, "include" | "includer" | "includem" | "includew" | "includeb" | "includea").then(|| (kind, &line[end..]))
}

/// The first `{` or `}` outside double quotes.
fn first_brace(line: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '{' | '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The `)` that closes the `(` at the start of `s`, skipping `{...}` sets.
fn matching_paren(s: &str) -> Option<usize> {
    let mut braces = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => braces += 1,
            '}' => braces -= 1,
            ')' if braces == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// C's `strtol(s, NULL, 0)`: `0x` hex, leading `0` octal, else decimal.
fn c_integer(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// csh braces as glob(3)'s GLOB_BRACE expands them: `a{b,c}d` → `abd`, `acd`.
fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else { return vec![pattern.to_string()] };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else { return vec![pattern.to_string()] };
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    bounds
        .windows(2)
        .flat_map(|w| expand_braces(&format!("{head}{}{tail}", &pattern[w[0] + 1..w[1]])))
        .collect()
}

/// The config id keepalived uses without `-i`: the host name up to its first dot.
pub fn default_config_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    name.trim().split('.').next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(text: &str, id: &str) -> (Vec<String>, Reports) {
        let mut reports = Reports::default();
        let (lines, _) = Lexer::new(id, &mut reports).read_text(Path::new("/nonexistent/k.conf"), text);
        let out = lines.iter().map(|l| l.words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join("|")).collect();
        (out, reports)
    }

    #[test]
    fn comments_and_braces_split_as_keepalived() {
        let (l, _) = lex("router_id foo#bar\nfoo{ bar}baz \"q{x}\" {\nx \\#y ! gone\n}}\n", "a");
        assert_eq!(l, ["router_id|foo", "foo", "{", "bar", "}", "baz|q{x}", "{", "x|#y", "}", "}"]);
    }

    #[test]
    fn quoted_words_lose_their_quotes() {
        let (l, _) = lex("misc_path \"/bin/check a b\" x\nk \"a b\"c d\"e f\"\n", "a");
        assert_eq!(l, ["misc_path|/bin/check a b|x", "k|a b|c|d|e f"]);
    }

    #[test]
    fn conditions_keep_lines_for_their_config_id() {
        let (l, _) = lex("@low a 1\n@high b 2\n@^low c 3\n@^high d 4\n", "low");
        assert_eq!(l, ["a|1", "d|4"]);
    }

    #[test]
    fn definitions_substitute_at_use_and_recursively() {
        let (l, _) = lex("$A=1\n$B=x $A\nk $B ${A}y $A. $UNDEF\n$A=2\nk $B\n", "a");
        assert_eq!(l, ["k|x|1|1y|$A.|$UNDEF", "k|x|2"]);
    }

    #[test]
    fn multi_line_definitions_expand_into_lines() {
        let text = "$CHECK=\\\n    TCP_CHECK { \\\n        connect_port ${PORT} \\\n    }\n$PORT=80\nreal_server 1 {\n  $CHECK\n}\n";
        let (l, _) = lex(text, "a");
        assert_eq!(l, ["real_server|1", "{", "TCP_CHECK", "{", "connect_port|80", "}", "}"]);
    }

    #[test]
    fn hash_from_a_definition_starts_a_comment() {
        let (l, _) = lex("$OFF=${_HASH}\n$OFF enable_thing\nkept\n", "a");
        assert_eq!(l, ["kept"]);
    }

    #[test]
    fn sequences_repeat_the_rest_of_the_line() {
        let (l, _) = lex("~SEQ(N,1,3) a $N\n~SEQ(N,2) b $N\n~SEQx(H, 0x9, 1, 0xb) c ${H}\n~SEQ(O,1,2) ~SEQ(I,1,2) d ${O}${I}\n", "a");
        assert_eq!(l, ["a|1", "a|2", "a|3", "b|1", "b|2", "c|9", "c|a", "c|b", "d|11", "d|12", "d|21", "d|22"]);
        let (l, _) = lex("~LST(V, x, y) e $V\n~LST({A,B},{1,2},{3}) f $A $B\n", "a");
        assert_eq!(l, ["e|x", "e|y", "f|1|2", "f|3"]);
    }

    #[test]
    fn sequences_at_the_edges_neither_panic_nor_loop() {
        let (l, r) = lex("~SEQ(N,9223372036854775806,1,9223372036854775807) x\n~SEQ(N,-9000000000000000000,1,9000000000000000000) y\n~SEQ (N,5,-1,5) z $N\n", "a");
        assert_eq!(l, ["x", "x", "z|5"]);
        assert_eq!(r.0.len(), 1, "the huge sequence is refused: {:?}", r.0);
    }

    #[test]
    fn a_line_of_many_braces_does_not_exhaust_the_stack() {
        let line = format!("{}{}\n", "a {".repeat(3_000), "}".repeat(3_000));
        let (l, r) = lex(&line, "a");
        assert_eq!(l.len(), 9_000);
        assert!(!r.fatal());
    }

    #[test]
    fn unbalanced_files_are_refused() {
        let (_, r) = lex("virtual_server 1 80 {\n real_server 2 80 {\n}\n", "a");
        assert!(r.fatal());
        let (_, r) = lex("a {\n}\n}\n", "a");
        assert!(r.fatal());
    }

    #[test]
    fn includes_glob_relative_to_the_including_file_in_sorted_order() {
        let dir = std::env::temp_dir().join(format!("drlb-lexer-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("main.conf"), "top {\ninclude conf.d/*.conf\n}\ninclude ${_PWD}/x{1,2}.inc\n").unwrap();
        std::fs::write(dir.join("conf.d/b10.conf"), "ten\n").unwrap();
        std::fs::write(dir.join("conf.d/b2.conf"), "two\n").unwrap();
        // glob(3) skips dot files; a dangling link (an editor's lock) is skipped too.
        std::fs::write(dir.join("conf.d/.b3.conf"), "hidden\n").unwrap();
        let _ = std::os::unix::fs::symlink("/nonexistent", dir.join("conf.d/b4.conf"));
        std::fs::write(dir.join("x2.inc"), "x2\n").unwrap();
        std::fs::write(dir.join("x1.inc"), "x1\n").unwrap();
        let mut reports = Reports::default();
        let (lines, read) = Lexer::new("a", &mut reports).read_file(&dir.join("main.conf"));
        let words: Vec<String> = lines.iter().map(|l| l.words[0].text.clone()).collect();
        assert_eq!(words, ["top", "{", "ten", "two", "}", "x1", "x2"]);
        assert_eq!(read.len(), 5);
        assert!(reports.0.iter().all(|r| r.severity == Severity::Warning && r.why.contains("dangling")), "{:?}", reports.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod dump {
    /// `KA_DUMP=FILE cargo test -p lb-userspace --lib dump_lines -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn dump_lines() {
        let path = std::env::var("KA_DUMP").unwrap();
        let mut reports = super::Reports::default();
        let (lines, _) = super::Lexer::new("nomatch", &mut reports).read_file(std::path::Path::new(&path));
        for l in lines {
            println!("{:>5} {}", l.at.line, l.words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" "));
        }
    }
}

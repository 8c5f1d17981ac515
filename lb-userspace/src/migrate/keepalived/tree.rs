//! keepalived.conf as a tree of statements: `keyword args... [{ statements }]`.
//!
//! The lexer has already expanded includes, `$` definitions, `@` conditions and `~SEQ`
//! lines; here only the braces matter. keepalived accepts `{` at the end of a statement's
//! line, glued to its last word, or on a line of its own, and so does this.

use super::lexer::Line;
use super::report::{Location, Reports, Severity};

/// One statement and, if it opens one, its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub at: Location,
    pub block: Option<Vec<Node>>,
    /// The line of the `}` that closes its block.
    pub end: Option<Location>,
    /// The statement's line as written (after expansion): scripts and `--vrrp-out` use it,
    /// so quotes and escapes stay as the author wrote them.
    pub text: String,
}

impl Node {
    /// The statements of its block (none if it has no block).
    pub fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Builds the tree; unbalanced braces are reported (fatal).
pub fn build(lines: &[Line], reports: &mut Reports) -> Vec<Node> {
    // A stack of open blocks: the statements collected so far and the index, in the level
    // below, of the statement that opened it.
    let mut stack: Vec<(Vec<Node>, Location)> = Vec::new();
    let mut current: Vec<Node> = Vec::new();
    for line in lines {
        let mut words = line.words.iter().peekable();
        while words.peek().is_some() {
            let mut statement: Vec<String> = Vec::new();
            let mut brace = None;
            for w in words.by_ref() {
                if !w.quoted && (w.text == "{" || w.text == "}") {
                    brace = Some(w.text.clone());
                    break;
                }
                statement.push(w.text.clone());
            }
            if !statement.is_empty() {
                let keyword = statement.remove(0);
                current.push(Node { keyword, args: statement, at: line.at.clone(), block: None, end: None, text: line.text.clone() });
            }
            match brace.as_deref() {
                Some("{") => match current.last() {
                    Some(last) if last.block.is_none() => {
                        let opened_at = last.at.clone();
                        stack.push((std::mem::take(&mut current), opened_at));
                    }
                    _ => {
                        reports.add(
                            Severity::Fatal,
                            &line.at,
                            "{",
                            "a `{` that follows no statement; keepalived ignores it and its `}` then closes the enclosing block",
                            "not imported: remove the `{` or name its block",
                        );
                        // Parse its contents as a block of a placeholder, so that what
                        // follows nests as the author meant.
                        current.push(Node { keyword: String::new(), args: Vec::new(), at: line.at.clone(), block: None, end: None, text: String::new() });
                        stack.push((std::mem::take(&mut current), line.at.clone()));
                    }
                },
                Some(_) => match stack.pop() {
                    Some((mut parent, _)) => {
                        let children = std::mem::replace(&mut current, Vec::new());
                        if let Some(last) = parent.last_mut() {
                            last.block = Some(children);
                            last.end = Some(line.at.clone());
                        }
                        current = parent;
                    }
                    None => reports.add(
                        Severity::Fatal,
                        &line.at,
                        "}",
                        "a `}` closes no block",
                        "not imported: a brace is missing or extra above this line",
                    ),
                },
                None => {}
            }
        }
    }
    while let Some((mut parent, opened_at)) = stack.pop() {
        let keyword = parent.last().map(|n| n.keyword.clone()).unwrap_or_default();
        reports.add(
            Severity::Fatal,
            &opened_at,
            &keyword,
            "its block is never closed (a `}` is missing)",
            "not imported: keepalived would read the rest of the configuration inside this block",
        );
        let children = std::mem::take(&mut current);
        if let Some(last) = parent.last_mut() {
            last.block = Some(children);
        }
        current = parent;
    }
    current
}

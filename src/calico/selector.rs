//! Calico's label selector language: a parser that says at which byte a selector broke, and an
//! evaluator over a set of labels.
//!
//! Grammar (Calico's documented operators): `k == 'v'`, `k != 'v'`, `has(k)`, `!has(k)`,
//! `k in {'a', 'b'}`, `k not in {...}`, `k contains 's'`, `k starts with 's'`, `k ends with 's'`,
//! `all()`, `global()`, `&&` (binds tighter than `||`), `||`, `!` and parentheses. Values are
//! quoted with `'` or `"`. An empty selector selects everything, as in Calico.
//!
//! Semantics that surprise people, as Calico defines them: `k != 'v'` and `k not in {...}` also
//! match a set WITHOUT the label `k`; `contains`, `starts with` and `ends with` need the label.
//! `global()` selects non-namespaced endpoints (host endpoints, global network sets) and is only
//! valid alone in a rule's `namespaceSelector`; no pod matches it.

use std::collections::BTreeMap;
use std::fmt;

/// Labels of one object (pod, namespace, service account).
pub type Labels = BTreeMap<String, String>;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `all()` (or an empty selector).
    All,
    /// `global()`: non-namespaced endpoints only.
    Global,
    /// `has(k)`.
    Has(String),
    /// `k == 'v'`.
    Eq(String, String),
    /// `k != 'v'` (true without the label).
    Ne(String, String),
    /// `k in {...}`.
    In(String, Vec<String>),
    /// `k not in {...}` (true without the label).
    NotIn(String, Vec<String>),
    /// `k contains 's'`.
    Contains(String, String),
    /// `k starts with 's'`.
    StartsWith(String, String),
    /// `k ends with 's'`.
    EndsWith(String, String),
    /// `!x`.
    Not(Box<Selector>),
    /// `x && y && ...`.
    And(Vec<Selector>),
    /// `x || y || ...`.
    Or(Vec<Selector>),
}

/// Why a selector does not parse, and where (a byte offset into the selector text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    /// Byte offset of the problem (the length of the text when it ended too early).
    pub at: usize,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.message)
    }
}

impl SelectorError {
    /// The selector with a caret under the byte that broke it (two lines), for people.
    pub fn pointed(&self, text: &str) -> String {
        let column = text.get(..self.at.min(text.len())).map_or(self.at, |s| s.chars().count());
        format!("{text}\n{}^ {}", " ".repeat(column), self.message)
    }
}

impl Selector {
    /// Parses a selector; an empty (or blank) one is [`Selector::All`].
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Ok(Selector::All);
        }
        let mut p = Parser { tokens: &tokens, at: 0, end: text.len() };
        let sel = p.or()?;
        if let Some(t) = tokens.get(p.at) {
            return Err(SelectorError { at: t.at, message: format!("unexpected {} after a complete expression (missing `&&` or `||`?)", t.kind.describe()) });
        }
        Ok(sel)
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = |k: &String| labels.get(k);
        match self {
            Selector::All => true,
            Selector::Global => false,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => value(k) == Some(v),
            Selector::Ne(k, v) => value(k) != Some(v),
            Selector::In(k, vs) => value(k).is_some_and(|v| vs.contains(v)),
            Selector::NotIn(k, vs) => !value(k).is_some_and(|v| vs.contains(v)),
            Selector::Contains(k, s) => value(k).is_some_and(|v| v.contains(s.as_str())),
            Selector::StartsWith(k, s) => value(k).is_some_and(|v| v.starts_with(s.as_str())),
            Selector::EndsWith(k, s) => value(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(all) => all.iter().all(|s| s.matches(labels)),
            Selector::Or(any) => any.iter().any(|s| s.matches(labels)),
        }
    }

    /// Whether `global()` appears anywhere in it.
    pub fn uses_global(&self) -> bool {
        match self {
            Selector::Global => true,
            Selector::Not(s) => s.uses_global(),
            Selector::And(v) | Selector::Or(v) => v.iter().any(Selector::uses_global),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Str(String),
    Op(&'static str),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Word(w) => format!("`{w}`"),
            Kind::Str(s) => format!("string '{s}'"),
            Kind::Op(o) => format!("`{o}`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    at: usize,
    kind: Kind,
}

/// Characters of a label key or keyword (Kubernetes qualified names: `a.b/c-d_e`).
fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn tokenize(text: &str) -> Result<Vec<Token>, SelectorError> {
    const OPS: [&str; 10] = ["&&", "||", "==", "!=", "!", "(", ")", "{", "}", ","];
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' {
            chars.next();
            let close = text[i + 1..].find(c).ok_or_else(|| SelectorError { at: i, message: format!("unterminated string: the quote {c} opened here is never closed") })?;
            out.push(Token { at: i, kind: Kind::Str(text[i + 1..i + 1 + close].to_string()) });
            while chars.peek().is_some_and(|&(j, _)| j <= i + 1 + close) {
                chars.next();
            }
        } else if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            out.push(Token { at: i, kind: Kind::Op(op) });
            for _ in 0..op.len() {
                chars.next();
            }
        } else if word_char(c) {
            let mut end = i;
            while let Some(&(j, d)) = chars.peek().filter(|&&(_, d)| word_char(d)) {
                end = j + d.len_utf8();
                chars.next();
            }
            out.push(Token { at: i, kind: Kind::Word(text[i..end].to_string()) });
        } else {
            return Err(SelectorError { at: i, message: format!("unexpected character `{c}`") });
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Kind> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn peek_is(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Kind::Op(o)) if *o == op)
    }

    fn here(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |t| t.at)
    }

    fn error(&self, expected: &str) -> SelectorError {
        let found = self.peek().map_or("the end of the selector".to_string(), Kind::describe);
        SelectorError { at: self.here(), message: format!("expected {expected}, found {found}") }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), SelectorError> {
        if self.peek_is(op) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("`{op}`")))
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Kind::Str(s)) => {
                let s = s.clone();
                self.at += 1;
                Ok(s)
            }
            _ => Err(self.error("a quoted value ('...' or \"...\")")),
        }
    }

    fn word(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.peek() {
            Some(Kind::Word(w)) => {
                let w = w.clone();
                self.at += 1;
                Ok(w)
            }
            _ => Err(self.error(what)),
        }
    }

    fn keyword(&mut self, word: &str) -> Result<(), SelectorError> {
        match self.peek() {
            Some(Kind::Word(w)) if w == word => {
                self.at += 1;
                Ok(())
            }
            _ => Err(self.error(&format!("`{word}`"))),
        }
    }

    fn or(&mut self) -> Result<Selector, SelectorError> {
        let mut terms = vec![self.and()?];
        while self.peek_is("||") {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Selector::Or(terms) })
    }

    fn and(&mut self) -> Result<Selector, SelectorError> {
        let mut terms = vec![self.unary()?];
        while self.peek_is("&&") {
            self.at += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Selector::And(terms) })
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        if self.peek_is("!") {
            self.at += 1;
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        if self.peek_is("(") {
            self.at += 1;
            let inner = self.or()?;
            self.expect_op(")")?;
            return Ok(inner);
        }
        self.term()
    }

    fn term(&mut self) -> Result<Selector, SelectorError> {
        let word = self.word("a label key, `has(...)`, `all()`, `global()`, `!` or `(`")?;
        let call = self.peek_is("(");
        match word.as_str() {
            "all" | "global" if call => {
                self.expect_op("(")?;
                self.expect_op(")")?;
                return Ok(if word == "all" { Selector::All } else { Selector::Global });
            }
            "has" if call => {
                self.expect_op("(")?;
                let key = self.word("a label key")?;
                self.expect_op(")")?;
                return Ok(Selector::Has(key));
            }
            _ => {}
        }
        if self.peek_is("==") || self.peek_is("!=") {
            let eq = self.peek_is("==");
            self.at += 1;
            let v = self.string()?;
            return Ok(if eq { Selector::Eq(word, v) } else { Selector::Ne(word, v) });
        }
        let operator = self.word(&format!("an operator after the label key `{word}` (==, !=, in, not in, contains, starts with, ends with)"));
        let operator = operator?;
        match operator.as_str() {
            "in" => Ok(Selector::In(word, self.set()?)),
            "not" => {
                self.keyword("in")?;
                Ok(Selector::NotIn(word, self.set()?))
            }
            "contains" => Ok(Selector::Contains(word, self.string()?)),
            "starts" => {
                self.keyword("with")?;
                Ok(Selector::StartsWith(word, self.string()?))
            }
            "ends" => {
                self.keyword("with")?;
                Ok(Selector::EndsWith(word, self.string()?))
            }
            other => {
                self.at -= 1;
                Err(SelectorError { at: self.here(), message: format!("unknown operator `{other}` after the label key `{word}`") })
            }
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect_op("{")?;
        let mut values = Vec::new();
        if self.peek_is("}") {
            self.at += 1;
            return Ok(values);
        }
        loop {
            values.push(self.string()?);
            if self.peek_is("}") {
                self.at += 1;
                return Ok(values);
            }
            self.expect_op(",")?;
        }
    }
}

#[cfg(test)]
mod tests;

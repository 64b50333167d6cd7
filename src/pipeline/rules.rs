//! `rules: if:` expressions: parsed once by [`parse_condition`] (so a syntax error names its
//! line in `.gitlab-ci.yml`) and evaluated by [`evaluate`] against a variable lookup. Pure: no
//! environment reads; `parse` calls the parser, `plan` the evaluator.
//!
//! The language is GitLab's (`lib/gitlab/ci/pipeline/expression`):
//!
//! ```text
//! or      = and { "||" and }
//! and     = compare { "&&" compare }             (&& binds tighter than ||)
//! compare = "(" or ")" | operand [ op operand ]  op: == != =~ !~
//! operand = $VAR | ${VAR} | "string" | 'string' | /regex/flags | null
//! ```
//!
//! Values: an unset variable is `null`; strings have no escapes (as in GitLab); a regex is RE2
//! syntax (the `regex` crate), `\/` standing for `/`, flags from `i`, `m`, `s`, `U`. A bare
//! operand is true when it is a non-empty string (`$VAR`: set and non-empty). `==`/`!=` compare
//! values, `null == null` holding. `=~`/`!~` search (unanchored) the left value, `null` searched
//! as `""`; the right side is a `/regex/` or a variable whose value is one (`/^v\d+/i`). As in
//! GitLab, an unset variable on the right makes `=~` false and `!~` true, and a value that is not
//! a valid `/regex/` makes the whole expression false.

use std::fmt;

use regex::Regex;

/// A parsed `if:` expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A bare operand: true when its value is a non-empty string (a regex is always true).
    Operand(Operand),
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A value in an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// `$NAME` or `${NAME}`: the variable's value, `null` when unset.
    Variable(String),
    /// `"text"` or `'text'`.
    String(String),
    Pattern(Pattern),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Matches,
    /// `!~`
    NotMatches,
}

/// A `/regex/flags` literal, compiled.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// As written, slashes and flags included.
    source: String,
    regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    /// Parses a whole `/body/flags` text (a literal, or a variable's value on the right of `=~`).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let rest = text.strip_prefix('/').ok_or_else(|| format!("{text:?} is not a /regex/"))?;
        let (body, flags) = split_pattern(rest).ok_or_else(|| format!("{text:?} is not a /regex/ (no closing /)"))?;
        Pattern::compile(text, body, flags)
    }

    fn compile(source: &str, body: &str, flags: &str) -> Result<Pattern, String> {
        if body.is_empty() {
            return Err(format!("empty regex {source}"));
        }
        if let Some(bad) = flags.chars().find(|c| !"imsU".contains(*c)) {
            return Err(format!("unknown regex flag {bad:?} in {source} (allowed: i, m, s, U)"));
        }
        let unescaped = body.replace("\\/", "/");
        let full = if flags.is_empty() { unescaped } else { format!("(?{flags}){unescaped}") };
        let regex = Regex::new(&full).map_err(|e| format!("invalid regex {source}: {}", one_line(&e.to_string())))?;
        Ok(Pattern { source: source.to_owned(), regex })
    }

    /// The pattern as written, e.g. `/^v\d+/i`.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Variable(name) => write!(f, "${name}"),
            Operand::String(s) => write!(f, "{s:?}"),
            Operand::Pattern(p) => f.write_str(p.as_str()),
            Operand::Null => f.write_str("null"),
        }
    }
}

/// After the opening `/`: the body up to the closing unescaped `/`, and the flag letters after
/// it (which must end the text). `None` when there is no closing `/`.
fn split_pattern(rest: &str) -> Option<(&str, &str)> {
    let end = pattern_end(rest)?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Byte index of the closing `/` in `rest` (the text after the opening `/`): a backslash
/// escapes the character after it.
fn pattern_end(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '/' => return Some(i),
            _ => {}
        }
    }
    None
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses the text of an `if:`; the error says what is wrong and at which column.
pub fn parse_condition(text: &str) -> Result<Expr, String> {
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Err("empty expression".to_owned());
    }
    let mut parser = Parser { tokens: &tokens, pos: 0, depth: 0 };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {} at column {}", t.kind, t.column)),
    }
}

/// Whether the expression holds, `vars` giving each variable's value (`None` when unset).
pub fn evaluate(expr: &Expr, vars: &dyn Fn(&str) -> Option<String>) -> bool {
    eval(expr, vars).unwrap_or(false)
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    Variable(String),
    String(String),
    Pattern(Pattern),
    Null,
    Op(CompareOp),
    And,
    Or,
    Open,
    Close,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Variable(name) => write!(f, "${name}"),
            TokenKind::String(s) => write!(f, "string {s:?}"),
            TokenKind::Pattern(p) => write!(f, "regex {}", p.as_str()),
            TokenKind::Null => f.write_str("null"),
            TokenKind::Op(CompareOp::Equal) => f.write_str("`==`"),
            TokenKind::Op(CompareOp::NotEqual) => f.write_str("`!=`"),
            TokenKind::Op(CompareOp::Matches) => f.write_str("`=~`"),
            TokenKind::Op(CompareOp::NotMatches) => f.write_str("`!~`"),
            TokenKind::And => f.write_str("`&&`"),
            TokenKind::Or => f.write_str("`||`"),
            TokenKind::Open => f.write_str("`(`"),
            TokenKind::Close => f.write_str("`)`"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Token {
    kind: TokenKind,
    /// 1-based, in characters.
    column: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&(byte, c)) = chars.get(i) {
        let column = i + 1;
        let next = chars.get(i + 1).map(|&(_, c)| c);
        let two = |kind: TokenKind| (kind, 2);
        let (kind, width) = match (c, next) {
            (c, _) if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ('(', _) => (TokenKind::Open, 1),
            (')', _) => (TokenKind::Close, 1),
            ('=', Some('=')) => two(TokenKind::Op(CompareOp::Equal)),
            ('!', Some('=')) => two(TokenKind::Op(CompareOp::NotEqual)),
            ('=', Some('~')) => two(TokenKind::Op(CompareOp::Matches)),
            ('!', Some('~')) => two(TokenKind::Op(CompareOp::NotMatches)),
            ('&', Some('&')) => two(TokenKind::And),
            ('|', Some('|')) => two(TokenKind::Or),
            ('$', Some('{')) => {
                let name: String = chars[i + 2..].iter().map(|&(_, c)| c).take_while(|&c| is_name_char(c)).collect();
                let close = chars.get(i + 2 + name.chars().count()).map(|&(_, c)| c);
                if name.is_empty() || close != Some('}') {
                    return Err(format!("invalid variable at column {column} (use $NAME or ${{NAME}})"));
                }
                let width = name.chars().count() + 3;
                (TokenKind::Variable(name), width)
            }
            ('$', _) => {
                let name: String = chars[i + 1..].iter().map(|&(_, c)| c).take_while(|&c| is_name_char(c)).collect();
                if name.is_empty() {
                    return Err(format!("invalid variable at column {column} (use $NAME or ${{NAME}})"));
                }
                let width = name.chars().count() + 1;
                (TokenKind::Variable(name), width)
            }
            ('"' | '\'', _) => {
                let body: String = chars[i + 1..].iter().map(|&(_, ch)| ch).take_while(|&ch| ch != c).collect();
                let width = body.chars().count() + 2;
                if i + width > chars.len() {
                    return Err(format!("unterminated string starting at column {column}"));
                }
                (TokenKind::String(body), width)
            }
            ('/', _) => {
                let rest = &text[byte + 1..];
                let end = pattern_end(rest).ok_or_else(|| format!("unterminated regex starting at column {column}"))?;
                let body = &rest[..end];
                let flags: String =
                    rest[end + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let source = &text[byte..byte + 2 + end + flags.len()];
                let pattern = Pattern::compile(source, body, &flags).map_err(|e| format!("{e} at column {column}"))?;
                (TokenKind::Pattern(pattern), source.chars().count())
            }
            (c, _) if is_name_char(c) => {
                let word: String = chars[i..].iter().map(|&(_, c)| c).take_while(|&c| is_name_char(c)).collect();
                if word != "null" {
                    return Err(format!("unexpected `{word}` at column {column} (strings need quotes, variables a $)"));
                }
                (TokenKind::Null, 4)
            }
            (c, _) => return Err(format!("unexpected `{c}` at column {column}")),
        };
        tokens.push(Token { kind, column });
        i += width;
    }
    Ok(tokens)
}

/// Deep enough for any real condition; bounds recursion on hostile input.
const MAX_NESTING: usize = 64;

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.pos);
        self.pos += 1;
        token
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek().is_some_and(|t| t.kind == TokenKind::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.compare()?;
        while self.peek().is_some_and(|t| t.kind == TokenKind::And) {
            self.pos += 1;
            let right = self.compare()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn compare(&mut self) -> Result<Expr, String> {
        if self.peek().is_some_and(|t| t.kind == TokenKind::Open) {
            let column = self.peek().map_or(0, |t| t.column);
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_NESTING {
                return Err(format!("parentheses nested too deeply at column {column}"));
            }
            let inner = self.or()?;
            self.depth -= 1;
            return match self.next() {
                Some(Token { kind: TokenKind::Close, .. }) => Ok(inner),
                Some(t) => Err(format!("expected `)` at column {}, found {}", t.column, t.kind)),
                None => Err(format!("missing `)` for the `(` at column {column}")),
            };
        }
        let left = self.operand()?;
        let Some(Token { kind: TokenKind::Op(op), column }) = self.peek().cloned() else {
            return Ok(Expr::Operand(left));
        };
        self.pos += 1;
        let right = self.operand()?;
        if matches!(op, CompareOp::Matches | CompareOp::NotMatches) {
            if matches!(left, Operand::Pattern(_)) {
                return Err(format!("the left side of the operator at column {column} cannot be a regex"));
            }
            if !matches!(right, Operand::Pattern(_) | Operand::Variable(_)) {
                return Err(format!(
                    "the right side of the operator at column {column} must be a /regex/ or a variable, not {right}"
                ));
            }
        }
        Ok(Expr::Compare { left, op, right })
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Token { kind: TokenKind::Variable(name), .. }) => Ok(Operand::Variable(name.clone())),
            Some(Token { kind: TokenKind::String(s), .. }) => Ok(Operand::String(s.clone())),
            Some(Token { kind: TokenKind::Pattern(p), .. }) => Ok(Operand::Pattern(p.clone())),
            Some(Token { kind: TokenKind::Null, .. }) => Ok(Operand::Null),
            Some(t) => {
                Err(format!("expected a variable, string, regex or null at column {}, found {}", t.column, t.kind))
            }
            None => Err("unexpected end of expression (expected a variable, string, regex or null)".to_owned()),
        }
    }
}

/// A value during evaluation.
enum Value<'e> {
    Null,
    String(String),
    Pattern(&'e Pattern),
}

/// A dynamic regex (a variable's value on the right of `=~`) that is not one: GitLab then
/// treats the whole expression as false.
struct InvalidPattern;

fn value<'e>(operand: &'e Operand, vars: &dyn Fn(&str) -> Option<String>) -> Value<'e> {
    match operand {
        Operand::Variable(name) => vars(name).map_or(Value::Null, Value::String),
        Operand::String(s) => Value::String(s.clone()),
        Operand::Pattern(p) => Value::Pattern(p),
        Operand::Null => Value::Null,
    }
}

fn eval(expr: &Expr, vars: &dyn Fn(&str) -> Option<String>) -> Result<bool, InvalidPattern> {
    match expr {
        Expr::Operand(operand) => Ok(match value(operand, vars) {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Pattern(_) => true,
        }),
        Expr::And(a, b) => Ok(eval(a, vars)? && eval(b, vars)?),
        Expr::Or(a, b) => Ok(eval(a, vars)? || eval(b, vars)?),
        Expr::Compare { left, op, right } => {
            let left = value(left, vars);
            let right = value(right, vars);
            match op {
                CompareOp::Equal => Ok(equal(&left, &right)),
                CompareOp::NotEqual => Ok(!equal(&left, &right)),
                CompareOp::Matches => matches(&left, &right).map(|m| m.unwrap_or(false)),
                CompareOp::NotMatches => matches(&left, &right).map(|m| m.is_none_or(|m| !m)),
            }
        }
    }
}

fn equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Null, Value::Null) => true,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Pattern(a), Value::Pattern(b)) => a == b,
        _ => false,
    }
}

/// `Ok(None)` when there is no regex to match with (an unset variable on the right).
fn matches(left: &Value, right: &Value) -> Result<Option<bool>, InvalidPattern> {
    let text = match left {
        Value::Null => "",
        Value::String(s) => s.as_str(),
        Value::Pattern(p) => p.as_str(),
    };
    match right {
        Value::Null => Ok(None),
        Value::Pattern(p) => Ok(Some(p.is_match(text))),
        Value::String(s) => Pattern::parse(s).map(|p| Some(p.is_match(text))).map_err(|_| InvalidPattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    fn holds(text: &str, pairs: &[(&str, &str)]) -> bool {
        let expr = parse_condition(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        evaluate(&expr, &env(pairs))
    }

    fn var(name: &str) -> Operand {
        Operand::Variable(name.to_owned())
    }

    fn string(s: &str) -> Operand {
        Operand::String(s.to_owned())
    }

    #[test]
    fn gitlab_doc_examples() {
        let main = [("CI_COMMIT_BRANCH", "main")];
        assert!(holds(r#"$CI_COMMIT_BRANCH == "main""#, &main));
        assert!(!holds(r#"$CI_COMMIT_BRANCH == "main""#, &[("CI_COMMIT_BRANCH", "feature")]));
        assert!(!holds(r#"$CI_COMMIT_BRANCH == "main""#, &[]));

        let mr = [("CI_PIPELINE_SOURCE", "merge_request_event")];
        assert!(holds(r#"$CI_PIPELINE_SOURCE == "merge_request_event""#, &mr));
        assert!(!holds(r#"$CI_PIPELINE_SOURCE == "merge_request_event""#, &[("CI_PIPELINE_SOURCE", "push")]));

        assert!(holds(r"$CI_COMMIT_TAG =~ /^v\d+/", &[("CI_COMMIT_TAG", "v1.2.3")]));
        assert!(!holds(r"$CI_COMMIT_TAG =~ /^v\d+/", &[("CI_COMMIT_TAG", "release-1")]));
        assert!(!holds(r"$CI_COMMIT_TAG =~ /^v\d+/", &[]));

        let text = r#"$VAR && ($X == "1" || $Y != "2")"#;
        assert!(holds(text, &[("VAR", "on"), ("X", "1"), ("Y", "2")]));
        assert!(holds(text, &[("VAR", "on"), ("X", "0"), ("Y", "3")]));
        assert!(holds(text, &[("VAR", "on")]), "unset Y is null, and null != \"2\"");
        assert!(!holds(text, &[("VAR", "on"), ("X", "0"), ("Y", "2")]));
        assert!(!holds(text, &[("X", "1")]));
        assert!(!holds(text, &[("VAR", ""), ("X", "1")]));

        // More from the `rules:if` documentation.
        let default = [("CI_COMMIT_BRANCH", "main"), ("CI_DEFAULT_BRANCH", "main")];
        assert!(holds("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", &default));
        assert!(!holds("$CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH", &default));
        assert!(holds(
            r#"$CI_PIPELINE_SOURCE == "merge_request_event" && $CI_MERGE_REQUEST_TARGET_BRANCH_NAME == $CI_DEFAULT_BRANCH"#,
            &[
                ("CI_PIPELINE_SOURCE", "merge_request_event"),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
                ("CI_DEFAULT_BRANCH", "main"),
            ]
        ));
        assert!(holds(r"$CI_COMMIT_MESSAGE =~ /^feat/", &[("CI_COMMIT_MESSAGE", "feat: x")]));
        assert!(holds(
            r"$CI_MERGE_REQUEST_SOURCE_BRANCH_NAME =~ /^feature/",
            &[("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature/a")]
        ));
        assert!(holds(r#"$CI_COMMIT_TAG || $CI_PIPELINE_SOURCE == "schedule""#, &[("CI_PIPELINE_SOURCE", "schedule")]));
        assert!(holds(r"$CI_COMMIT_BRANCH =~ /^release\/.*$/", &[("CI_COMMIT_BRANCH", "release/1.0")]));
        assert!(!holds(r"$CI_COMMIT_BRANCH =~ /^release\/.*$/", &[("CI_COMMIT_BRANCH", "releases")]));
    }

    #[test]
    fn bare_variable_is_true_when_set_and_non_empty() {
        assert!(holds("$A", &[("A", "x")]));
        assert!(holds("${A}", &[("A", "0")]), "any non-empty value, even 0 or false");
        assert!(holds("$A", &[("A", "false")]));
        assert!(!holds("$A", &[("A", "")]));
        assert!(!holds("$A", &[]));
        assert!(holds("\"x\"", &[]));
        assert!(!holds("''", &[]));
        assert!(!holds("null", &[]));
        assert!(holds("/x/", &[]));
    }

    #[test]
    fn braces_and_plain_variables_are_the_same() {
        assert_eq!(parse_condition("${CI_COMMIT_TAG}"), parse_condition("$CI_COMMIT_TAG"));
        assert!(holds("${A} == 'b'", &[("A", "b")]));
        assert!(holds("${A}==${B}", &[("A", "b"), ("B", "b")]));
    }

    #[test]
    fn null_comparisons() {
        assert!(holds("$UNSET == null", &[]));
        assert!(!holds("$UNSET != null", &[]));
        assert!(!holds("$A == null", &[("A", "")]), "an empty value is not null");
        assert!(holds("$A != null", &[("A", "")]));
        assert!(holds("$A == ''", &[("A", "")]));
        assert!(!holds("$UNSET == ''", &[]));
        assert!(holds("null == $UNSET", &[]));
        assert!(holds("$UNSET1 == $UNSET2", &[]));
        assert!(!holds("$A == $UNSET", &[("A", "x")]));
    }

    #[test]
    fn string_literals_in_either_quote() {
        assert!(holds(r#"$A == "it's""#, &[("A", "it's")]));
        assert!(holds(r#"$A == 'say "hi"'"#, &[("A", "say \"hi\"")]));
        assert!(holds(r#""main" == $A"#, &[("A", "main")]));
        assert!(holds(r#"'a b' == "a b""#, &[]));
        assert!(holds(r#"$A == "$B""#, &[("A", "$B"), ("B", "x")]), "no expansion inside strings");
        assert!(holds(r#"$A == "a && b || (c)""#, &[("A", "a && b || (c)")]));
    }

    #[test]
    fn regex_matching() {
        assert!(holds("$A =~ /b/", &[("A", "abc")]), "unanchored search");
        assert!(!holds("$A =~ /^b/", &[("A", "abc")]));
        assert!(holds("$A !~ /^b/", &[("A", "abc")]));
        assert!(holds("$A =~ /ABC/i", &[("A", "abc")]));
        assert!(!holds("$A =~ /ABC/", &[("A", "abc")]));
        assert!(holds(r"$A =~ /a\/b/", &[("A", "a/b")]));
        assert!(holds(r"$A =~ /a\.b/", &[("A", "a.b")]));
        assert!(!holds(r"$A =~ /a\.b/", &[("A", "axb")]));
        assert!(holds("$A =~ /^line2$/m", &[("A", "line1\nline2")]));
        assert!(holds("$A =~ /a.b/s", &[("A", "a\nb")]));
        assert!(holds(r"$A =~ /[[:digit:]]{3}/", &[("A", "x123")]), "RE2 classes");
        // An unset variable is searched as "".
        assert!(holds("$UNSET =~ /^$/", &[]));
        assert!(!holds("$UNSET =~ /x/", &[]));
        assert!(holds("$UNSET !~ /x/", &[]));
    }

    #[test]
    fn regex_held_in_a_variable() {
        let vars = [("TAG", "v1.0"), ("RE", r"/^v\d+/"), ("RE_I", "/^V/i")];
        assert!(holds("$TAG =~ $RE", &vars));
        assert!(holds("$TAG =~ $RE_I", &vars));
        assert!(!holds("$TAG !~ $RE", &vars));
        // Unset pattern variable: =~ false, !~ true (GitLab).
        assert!(!holds("$TAG =~ $NOPE", &vars));
        assert!(holds("$TAG !~ $NOPE", &vars));
        // A value that is not a /regex/ makes the whole expression false.
        let bad = [("TAG", "v1"), ("RE", "^v")];
        assert!(!holds("$TAG =~ $RE", &bad));
        assert!(!holds("$TAG !~ $RE", &bad));
        assert!(!holds("$TAG !~ $RE || $TAG", &bad));
        // ...but only when it is evaluated: && and || short-circuit.
        assert!(holds("$TAG || $TAG =~ $RE", &bad));
        assert!(!holds("$NOPE && $TAG =~ $RE", &bad));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse_condition("$A || $B && $C").unwrap(),
            Expr::Or(
                Box::new(Expr::Operand(var("A"))),
                Box::new(Expr::And(Box::new(Expr::Operand(var("B"))), Box::new(Expr::Operand(var("C")))))
            )
        );
        assert!(holds("$A || $B && $C", &[("A", "1")]));
        assert!(!holds("($A || $B) && $C", &[("A", "1")]));
        assert!(holds("$A && $B || $C", &[("C", "1")]));
        assert!(!holds("$A && ($B || $C)", &[("C", "1")]));
    }

    #[test]
    fn operators_are_left_associative() {
        assert_eq!(
            parse_condition("$A && $B && $C").unwrap(),
            Expr::And(
                Box::new(Expr::And(Box::new(Expr::Operand(var("A"))), Box::new(Expr::Operand(var("B"))))),
                Box::new(Expr::Operand(var("C")))
            )
        );
    }

    #[test]
    fn comparison_tree() {
        assert_eq!(
            parse_condition(r#"  $CI_COMMIT_BRANCH=="main"  "#).unwrap(),
            Expr::Compare { left: var("CI_COMMIT_BRANCH"), op: CompareOp::Equal, right: string("main") }
        );
        let Expr::Compare { op, right: Operand::Pattern(p), .. } = parse_condition(r"$T !~ /^v\d+/i").unwrap() else {
            panic!("not a comparison with a pattern");
        };
        assert_eq!(op, CompareOp::NotMatches);
        assert_eq!(p.as_str(), r"/^v\d+/i");
    }

    #[test]
    fn nested_parentheses() {
        let text = r#"(($A == "1") && (($B) || ($C =~ /x/)))"#;
        assert!(holds(text, &[("A", "1"), ("C", "x")]));
        assert!(!holds(text, &[("A", "1")]));
        assert!(!holds(text, &[("A", "2"), ("B", "b")]));
    }

    #[test]
    fn unicode_in_strings_and_columns() {
        assert!(holds("$A == 'héllo wörld'", &[("A", "héllo wörld")]));
        assert!(holds("$A =~ /ö/", &[("A", "wörld")]));
        let e = parse_condition("'é' == é").unwrap_err();
        assert!(e.contains("column 8"), "{e}");
    }

    #[test]
    fn syntax_errors_say_where() {
        let cases = [
            ("", "empty expression"),
            ("   ", "empty expression"),
            ("$A ==", "unexpected end"),
            ("$A = \"x\"", "unexpected `=` at column 4"),
            ("$A & $B", "unexpected `&` at column 4"),
            ("$A | $B", "unexpected `|` at column 4"),
            ("$A == main", "unexpected `main` at column 7 (strings need quotes"),
            ("$A == \"main", "unterminated string starting at column 7"),
            ("$A == 'main", "unterminated string starting at column 7"),
            ("$A =~ /main", "unterminated regex starting at column 7"),
            ("$A =~ /(/", "invalid regex /(/"),
            ("$A =~ //", "empty regex"),
            ("$A =~ /x/g", "unknown regex flag 'g'"),
            ("($A", "missing `)` for the `(` at column 1"),
            ("$A)", "unexpected `)` at column 3"),
            ("($A $B)", "expected `)` at column 5, found $B"),
            ("$A $B", "unexpected $B at column 4"),
            ("$A == $B == $C", "unexpected `==` at column 10"),
            ("$ == 'x'", "invalid variable at column 1"),
            ("${A == 'x'", "invalid variable at column 1"),
            ("${} == 'x'", "invalid variable at column 1"),
            ("$A && || $B", "found `||`"),
            ("== $A", "found `==`"),
            ("$A =~ \"x\"", "must be a /regex/ or a variable, not \"x\""),
            ("$A =~ null", "must be a /regex/ or a variable, not null"),
            ("/x/ =~ $A", "left side of the operator at column 5 cannot be a regex"),
            ("$A == 1", "unexpected `1` at column 7"),
        ];
        for (text, want) in cases {
            let e = parse_condition(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}$A{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse_condition(&text).unwrap_err().contains("nested too deeply"));
        let ok = format!("{}$A{}", "(".repeat(20), ")".repeat(20));
        assert!(holds(&ok, &[("A", "1")]));
    }

    #[test]
    fn pattern_parse_of_values() {
        assert!(Pattern::parse("/a/").is_ok());
        assert!(Pattern::parse("/a/imsU").is_ok());
        assert!(Pattern::parse("a").is_err());
        assert!(Pattern::parse("/a").is_err());
        assert!(Pattern::parse("/a/x").is_err());
        assert!(Pattern::parse("/a/ trailing").is_err());
        assert_eq!(Pattern::parse("/a/i").unwrap(), Pattern::parse("/a/i").unwrap());
        assert_ne!(Pattern::parse("/a/i").unwrap(), Pattern::parse("/a/").unwrap());
    }

    #[test]
    fn regex_equality() {
        assert!(holds("/a/ == /a/", &[]));
        assert!(!holds("/a/ == 'a'", &[]));
        assert!(holds("/a/ != /b/", &[]));
    }

    #[test]
    fn operand_display() {
        assert_eq!(var("A").to_string(), "$A");
        assert_eq!(string("x").to_string(), "\"x\"");
        assert_eq!(Operand::Null.to_string(), "null");
    }
}

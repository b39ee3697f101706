//! Syntax highlighting of a diff's lines on the server, as HTML with classes only (the pages'
//! CSP refuses inline styles; the colours are in `app.css`, for light and dark).
//!
//! syntect's bundled Sublime syntaxes with the pure-Rust regex engine (`fancy-regex`), loaded
//! once per process. A syntax's regular expressions can be slow on some inputs, and a diff is
//! written by a task, so what is highlighted is bounded: a file with too many lines or one
//! line too long is shown plain, and so is everything past a page's budget; the page says
//! which and why.

use std::sync::LazyLock;

use syntect::html::{ClassStyle, line_tokens_to_classed_spans};
use syntect::parsing::{ParseState, Scope, ScopeStack, SyntaxReference, SyntaxSet};

/// The bundled syntaxes, read on first use (about 1 ms optimised, once per process; each
/// syntax's regular expressions are compiled when a file first needs them).
pub static SYNTAXES: LazyLock<SyntaxSet> = LazyLock::new(SyntaxSet::load_defaults_newlines);

/// The most lines of one file's diff that are highlighted.
pub const MAX_FILE_LINES: usize = 2_000;
/// The longest line (in bytes) a highlighted file may have.
pub const MAX_LINE_BYTES: usize = 400;
/// The most lines one page highlights, over all its files: about 0.4 s of one core, and
/// 2.8 MB of HTML, at most (docs/PERFORMANCE.md).
pub const MAX_PAGE_LINES: usize = 5_000;

/// Every class starts with this, so that no class of the page's own can be hit.
const PREFIX: &str = "sx-";

/// The syntax for a file, by its extension or name; `None` for plain text or anything
/// unknown (shown plain).
pub fn syntax_for(path: &str) -> Option<&'static SyntaxReference> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let syntaxes = &*SYNTAXES;
    let found = match name.rsplit_once('.') {
        Some((_, extension)) if !extension.is_empty() => syntaxes
            .find_syntax_by_extension(extension)
            .or_else(|| syntaxes.find_syntax_by_extension(&extension.to_ascii_lowercase())),
        _ => None,
    }
    .or_else(|| syntaxes.find_syntax_by_extension(name))?;
    (found.name != "Plain Text").then_some(found)
}

/// Why a file of `lines` lines, the longest `longest` bytes, is not highlighted, with
/// `budget` lines left on the page; `None` when it is.
pub fn refusal(lines: usize, longest: usize, budget: usize) -> Option<String> {
    if lines > MAX_FILE_LINES {
        Some(format!(
            "Not highlighted: its diff has more than {MAX_FILE_LINES} lines."
        ))
    } else if longest > MAX_LINE_BYTES {
        Some(format!(
            "Not highlighted: a line is longer than {MAX_LINE_BYTES} characters."
        ))
    } else if lines > budget {
        Some(format!(
            "Not highlighted: this page highlights at most {MAX_PAGE_LINES} lines in all."
        ))
    } else {
        None
    }
}

/// Highlights one run of consecutive lines (a side of a hunk), each to HTML that stands on
/// its own: the spans open at a line's start are opened again there and closed at its end, so
/// that a line can go in a table cell of its own.
pub struct Highlighter {
    state: ParseState,
    stack: ScopeStack,
}

impl Highlighter {
    pub fn new(syntax: &SyntaxReference) -> Highlighter {
        Highlighter {
            state: ParseState::new(syntax),
            stack: ScopeStack::new(),
        }
    }

    /// `text` (one line, without its line ending) as escaped HTML with classed spans; `None`
    /// when the syntax fails on it (the caller shows it plain).
    pub fn line(&mut self, text: &str) -> Option<String> {
        let mut html = String::with_capacity(text.len() * 3);
        for scope in self.stack.as_slice() {
            open(&mut html, *scope);
        }
        // The bundled syntaxes expect each line to end in a newline.
        let line = format!("{text}\n");
        let ops = self.state.parse_line(&line, &SYNTAXES).ok()?;
        let style = ClassStyle::SpacedPrefixed { prefix: PREFIX };
        let (body, _) = line_tokens_to_classed_spans(&line, &ops, style, &mut self.stack).ok()?;
        html.push_str(&body);
        if let Some(newline) = html.rfind('\n') {
            html.remove(newline);
        }
        for _ in 0..self.stack.len() {
            html.push_str("</span>");
        }
        Some(html)
    }
}

/// `<span class="sx-a sx-b">` for the scope `a.b`, as syntect writes them.
fn open(html: &mut String, scope: Scope) {
    html.push_str("<span class=\"");
    let name = scope.build_string();
    for (index, atom) in name.split('.').enumerate() {
        if index > 0 {
            html.push(' ');
        }
        html.push_str(PREFIX);
        // Scope names come from the bundled syntaxes; keep to what a class may hold anyway.
        html.extend(
            atom.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_'),
        );
    }
    html.push_str("\">");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highlight(path: &str, lines: &[&str]) -> Vec<String> {
        let mut highlighter = Highlighter::new(syntax_for(path).expect("a syntax"));
        lines
            .iter()
            .map(|line| highlighter.line(line).expect("highlighted"))
            .collect()
    }

    /// Each line's spans balance, so it can stand in a cell of its own.
    fn balanced(html: &str) -> bool {
        html.matches("<span").count() == html.matches("</span>").count()
    }

    #[test]
    fn languages_are_found_by_extension_and_name() {
        assert_eq!(syntax_for("src/app.py").unwrap().name, "Python");
        assert_eq!(syntax_for("main.rs").unwrap().name, "Rust");
        assert_eq!(syntax_for("web/app.js").unwrap().name, "JavaScript");
        assert_eq!(syntax_for("Makefile").unwrap().name, "Makefile");
        assert_eq!(syntax_for("X.PY").unwrap().name, "Python");
        assert!(syntax_for("notes.txt").is_none());
        assert!(syntax_for("README").is_none());
        assert!(syntax_for("weird.<script>").is_none());
    }

    #[test]
    fn keywords_strings_and_comments_get_classes() {
        let lines = highlight("a.py", &["def greet(name):", "    return 'hi' # done"]);
        assert!(
            lines[0].contains("sx-keyword") || lines[0].contains("sx-storage"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("sx-string"), "{}", lines[1]);
        assert!(lines[1].contains("sx-comment"), "{}", lines[1]);
        assert!(lines.iter().all(|line| balanced(line)), "{lines:?}");
        assert!(!lines.iter().any(|line| line.contains("style=")));
    }

    /// A block comment open over several lines: each line opens and closes its spans.
    #[test]
    fn a_construct_over_several_lines_balances_each_line() {
        let lines = highlight("a.rs", &["/* one", "two <b>", "three */ fn x() {}"]);
        for line in &lines {
            assert!(balanced(line), "{line}");
        }
        assert!(
            lines[1].starts_with("<span class=\"sx-source sx-rust\"><span class=\"sx-comment"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("two &lt;b&gt;"), "{}", lines[1]);
    }

    /// What the code says is text: markup in it comes out escaped.
    #[test]
    fn markup_in_code_is_escaped() {
        let lines = highlight(
            "x.js",
            &["let s = '</span><script>alert(1)</script>'; // \"&\""],
        );
        assert!(!lines[0].contains("<script>"), "{}", lines[0]);
        assert!(lines[0].contains("&lt;script&gt;"), "{}", lines[0]);
        assert!(lines[0].contains("&quot;&amp;&quot;"), "{}", lines[0]);
        assert!(balanced(&lines[0]));
    }

    #[test]
    fn limits_say_why_a_file_is_plain() {
        assert_eq!(refusal(10, 80, MAX_PAGE_LINES), None);
        assert!(
            refusal(MAX_FILE_LINES + 1, 80, MAX_PAGE_LINES)
                .unwrap()
                .contains("more than 2000 lines")
        );
        assert!(
            refusal(10, MAX_LINE_BYTES + 1, MAX_PAGE_LINES)
                .unwrap()
                .contains("longer than 400")
        );
        assert!(
            refusal(10, 80, 5)
                .unwrap()
                .contains("at most 5000 lines in all")
        );
    }
}

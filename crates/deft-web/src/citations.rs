//! Numbered sources for what the agent writes (a pull request's body, an answer): each URL gets
//! a number the first time it is cited and keeps it, and the list at the end is Markdown that
//! a page's title cannot break out of.

use reqwest::Url;

use crate::content::{cap_chars, clean_line};

/// The longest address a source may have.
const MAX_URL_BYTES: usize = 2048;
/// The most sources one task or chat numbers.
pub const MAX_SOURCES: usize = 50;

/// The sources cited so far, numbered from 1 in the order first seen.
#[derive(Debug, Clone, Default)]
pub struct Citations {
    sources: Vec<(String, String)>,
}

impl Citations {
    pub fn new() -> Citations {
        Citations::default()
    }

    /// The number of `url`, new if it was not cited before; `None` when it is not an http(s)
    /// URL, which is never listed. The fragment is ignored: `a#x` and `a#y` are one source.
    pub fn cite(&mut self, url: &str, title: &str) -> Option<usize> {
        let mut parsed = Url::parse(url.trim()).ok()?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host().is_none()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return None;
        }
        parsed.set_fragment(None);
        let key = parsed.to_string();
        // A source is a line of a pull request's body: an address no page needs, or more
        // sources than anyone reads, would only let a page crowd the body out.
        if key.len() > MAX_URL_BYTES {
            return None;
        }
        if let Some(index) = self.sources.iter().position(|(known, _)| *known == key) {
            return Some(index + 1);
        }
        let title = cap_chars(&clean_line(title), 200).0;
        let title = if title.is_empty() {
            parsed.host_str().unwrap_or_default().to_owned()
        } else {
            title
        };
        if self.sources.len() >= MAX_SOURCES {
            return None;
        }
        self.sources.push((key, title));
        Some(self.sources.len())
    }

    /// The sources cited so far, `(url, title)` in number order, to keep with a task.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sources
            .iter()
            .map(|(url, title)| (url.as_str(), title.as_str()))
    }

    /// Citations that go on from `entries` (as [`Citations::entries`] gave them), with the
    /// same numbers.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Citations {
        let mut citations = Citations::new();
        for (url, title) in entries {
            citations.cite(url, title);
        }
        citations
    }

    /// The marker that cites source `n` in the text.
    pub fn marker(n: usize) -> String {
        format!("[{n}]")
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// One line per source, `1. [title](url)`, in number order; empty when nothing was cited.
    /// The caller puts its own heading above it.
    pub fn sources(&self) -> String {
        self.sources_of(|_| true)
    }

    /// [`Citations::sources`], only the numbers `keep` keeps, each with its own number.
    pub fn sources_of(&self, keep: impl Fn(usize) -> bool) -> String {
        self.sources
            .iter()
            .enumerate()
            .filter(|(index, _)| keep(index + 1))
            .map(|(index, (url, title))| {
                format!(
                    "{}. [{}]({})\n",
                    index + 1,
                    escape_title(title),
                    escape_url(url)
                )
            })
            .collect()
    }
}

/// A title as Markdown link text: brackets, parentheses and the rest of what could end the
/// link or start markup are backslash-escaped (newlines were already made spaces).
fn escape_title(title: &str) -> String {
    let mut out = String::with_capacity(title.len());
    for c in title.chars() {
        if matches!(
            c,
            '\\' | '[' | ']' | '(' | ')' | '<' | '>' | '`' | '*' | '_' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A serialized URL as a link destination: it already has no spaces, quotes or angle brackets;
/// parentheses, which would end or nest the destination, are percent-encoded.
fn escape_url(url: &str) -> String {
    url.replace('(', "%28").replace(')', "%29")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_one_number() {
        let mut citations = Citations::new();
        assert_eq!(citations.cite("https://example.org/a", "A"), Some(1));
        assert_eq!(citations.cite("https://example.org/b", "B"), Some(2));
        assert_eq!(
            citations.cite("https://EXAMPLE.org/a#part", "A again"),
            Some(1)
        );
        assert_eq!(citations.cite("javascript:alert(1)", "x"), None);
        assert_eq!(citations.cite("https://u:p@example.org/", "x"), None);
        assert_eq!(citations.len(), 2);
        assert_eq!(Citations::marker(2), "[2]");
        assert_eq!(
            citations.sources(),
            "1. [A](https://example.org/a)\n2. [B](https://example.org/b)\n"
        );
    }

    #[test]
    fn titles_and_urls_cannot_inject_markdown() {
        let mut citations = Citations::new();
        citations.cite(
            "https://example.org/wiki/Rust_(language)?q=a b",
            "Evil](https://attacker.test)\n\n# Heading ![x](y)",
        );
        citations.cite("http://example.org/", "");
        assert_eq!(
            citations.sources(),
            "1. [Evil\\]\\(https://attacker.test\\) # Heading \\!\\[x\\]\\(y\\)](https://example.org/wiki/Rust_%28language%29?q=a%20b)\n\
             2. [example.org](http://example.org/)\n"
        );
    }
}

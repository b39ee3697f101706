//! Addresses a change writes that come from nowhere. A URL whose host is in neither the task,
//! nor what the owner said, nor the repository before the task is a value the model made up:
//! a pull request that points a client at it would pass every check and still be wrong, so the
//! owner is asked for the address instead. Pure: the engine supplies the diff and says which
//! hosts are known.

/// A URL a change adds, with the file it is added to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub url: String,
    /// Lower-cased, without port or credentials.
    pub host: String,
    pub file: String,
}

/// The URLs on the added lines of a unified diff, each once, that could be made up: local
/// addresses are never a fact only the owner knows, and the names reserved for examples
/// (RFC 2606, RFC 6761) are placeholders only in tests.
pub(crate) fn added_addresses(diff: &str) -> Vec<Address> {
    let mut file = String::new();
    let mut found: Vec<Address> = Vec::new();
    // Lines of the current hunk still to come, old side and new side: a header is only read
    // between hunks, so an added line that begins `++ ` is not taken for one.
    let (mut old, mut new) = (0u64, 0u64);
    for line in diff.lines() {
        if old == 0 && new == 0 {
            if let Some(path) = line.strip_prefix("+++ ") {
                file = path.strip_prefix("b/").unwrap_or(path).to_owned();
            } else if let Some(counts) = hunk_counts(line) {
                (old, new) = counts;
            }
            continue;
        }
        match line.as_bytes().first() {
            Some(b'-') => old = old.saturating_sub(1),
            Some(b'+') => new = new.saturating_sub(1),
            Some(b'\\') => {}
            _ => {
                old = old.saturating_sub(1);
                new = new.saturating_sub(1);
            }
        }
        let Some(added) = line.strip_prefix('+') else {
            continue;
        };
        for (url, host) in urls_in(added) {
            if is_local(&host) || (is_reserved(&host) && is_test_file(&file)) {
                continue;
            }
            if !found.iter().any(|known| known.url == url) {
                found.push(Address {
                    url,
                    host,
                    file: file.clone(),
                });
            }
        }
    }
    found
}

/// A hunk header's line counts (`@@ -1,3 +1,4 @@`; a count left out is 1).
fn hunk_counts(line: &str) -> Option<(u64, u64)> {
    let ranges = line.strip_prefix("@@ -")?.split(" @@").next()?;
    let (old, new) = ranges.split_once(" +")?;
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((_, count)) => count.parse().ok(),
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
}

/// Whether `text` (lower case) names `host` as a whole name: not as part of a longer one.
pub(crate) fn mentions(text: &str, host: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices(host).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + host.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(|c| part(c) && c != '.')
    })
}

/// `scheme://host…` URLs in a line, with their hosts.
fn urls_in(line: &str) -> Vec<(String, String)> {
    let mut urls = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let scheme = &rest[scheme_start..at];
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')'))
            .unwrap_or(after.len());
        let authority = after[..end].split(['/', '?', '#']).next().unwrap_or("");
        let host = host_of(authority);
        if scheme.starts_with(|c: char| c.is_ascii_alphabetic()) && !host.is_empty() {
            urls.push((format!("{scheme}://{}", &after[..end]), host));
        }
        rest = &after[end..];
    }
    urls
}

/// The host of a URL's authority: no credentials, no port, lower case.
fn host_of(authority: &str) -> String {
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let plausible = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if plausible {
        host.to_ascii_lowercase()
    } else {
        String::new()
    }
}

fn is_local(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("127.")
        || host == "0.0.0.0"
        || host == "::1"
}

fn is_reserved(host: &str) -> bool {
    ["example.com", "example.net", "example.org"]
        .iter()
        .any(|name| host == *name || host.ends_with(&format!(".{name}")))
        || [".example", ".test", ".invalid"]
            .iter()
            .any(|tld| host.ends_with(tld))
}

fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.split('/').any(|part| {
        matches!(
            part,
            "test" | "tests" | "spec" | "__tests__" | "testdata" | "fixtures"
        )
    }) || name.starts_with("test_")
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains(".spec.")
}

/// The question for the owner about addresses no one gave.
pub(crate) fn question(addresses: &[&Address]) -> String {
    let named: Vec<String> = addresses
        .iter()
        .take(3)
        // The file's name is the task's to choose: shown as code, never as Markdown.
        .map(|a| format!("`{}` (in `{}`)", a.url, a.file.replace('`', "'")))
        .collect();
    if named.len() == 1 {
        format!(
            "Which address should the change use? Neither the task nor the repository gives one, and the draft uses {}, which is a guess. Reply with the right address, or say to keep it.",
            named[0]
        )
    } else {
        format!(
            "Which addresses should the change use? Neither the task nor the repository gives them, and the draft guesses {}. Reply with the right ones, or say to keep them.",
            named.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "\
diff --git a/client.py b/client.py
--- a/client.py
+++ b/client.py
@@ -1,2 +1,3 @@
-API_URL = \"http://localhost:8000\"
+API_URL = \"http://widgets-service:8000\"  # was http://localhost:8000
+DOCS = 'https://User:pw@Docs.Widgets.io/v2?x=1'
 OTHER = \"https://kept.example.net\"
diff --git a/tests/test_client.py b/tests/test_client.py
--- /dev/null
+++ b/tests/test_client.py
@@ -0,0 +1,2 @@
+URL = \"https://api.example.com/x\"
+SAME = \"http://widgets-service:8000\"
";

    #[test]
    fn added_urls_are_found_once_with_their_hosts_and_files() {
        let found = added_addresses(DIFF);
        assert_eq!(
            found,
            [
                Address {
                    url: "http://widgets-service:8000".into(),
                    host: "widgets-service".into(),
                    file: "client.py".into(),
                },
                Address {
                    url: "https://User:pw@Docs.Widgets.io/v2?x=1".into(),
                    host: "docs.widgets.io".into(),
                    file: "client.py".into(),
                },
            ]
        );
    }

    #[test]
    fn placeholders_count_in_code_but_not_in_tests() {
        let code = "+++ b/app/config.py\n@@ -0,0 +1 @@\n+URL = 'https://api.example.com'\n";
        assert_eq!(added_addresses(code)[0].host, "api.example.com");
        let test =
            "+++ b/app/config.test.js\n@@ -0,0 +1 @@\n+const URL = 'https://api.example.com';\n";
        assert!(added_addresses(test).is_empty());
        let local = "+++ b/a.py\n@@ -0,0 +1 @@\n+U = 'http://127.0.0.1:9/x' + 'http://[::1]:8/' + 'ws://localhost'\n";
        assert!(added_addresses(local).is_empty());
    }

    #[test]
    fn an_added_line_that_looks_like_a_header_is_a_line() {
        let diff = "+++ b/a.py\n@@ -1,2 +1,3 @@\n-x\n-- y\n+++ b/[click](https://evil.example/ok)\n+z = 'https://made.up/'\n+w\n";
        let found = added_addresses(diff);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|a| a.file == "a.py"), "{found:?}");
        assert_eq!(found[1].host, "made.up");
    }

    #[test]
    fn a_host_is_mentioned_only_as_a_whole_name() {
        assert!(mentions(
            "use https://api.widgets.io/v1 please",
            "api.widgets.io"
        ));
        assert!(mentions("it is api.widgets.io.", "api.widgets.io"));
        assert!(!mentions("see myapi.widgets.io", "api.widgets.io"));
        assert!(!mentions("the letter e", "e.io") && !mentions("some text", "e"));
    }

    #[test]
    fn the_question_names_the_guess_and_where_it_is() {
        let found = added_addresses(DIFF);
        let one = question(&[&found[0]]);
        assert!(one.contains("`http://widgets-service:8000` (in `client.py`)"));
        assert!(one.starts_with("Which address"));
        let two = question(&found.iter().collect::<Vec<_>>());
        assert!(two.contains("Docs.Widgets.io/v2") && two.starts_with("Which addresses"));
    }
}

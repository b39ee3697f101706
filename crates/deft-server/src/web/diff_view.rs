//! A pull request's diff as a page draws it: each file with its counts, status and anchor, its
//! hunks as rows of a table, unified (one column of code, both line numbers) or split (old and
//! new side by side), each line's code already escaped or highlighted.
//!
//! The page's weight grows with the diff, so what is drawn is bounded: lines past
//! [`MAX_LINE_CHARS`] are cut, a file past [`MAX_FILE_ROWS`] lines or a page past
//! [`MAX_PAGE_ROWS`] is listed but not drawn, and the page says so where it happens.

use super::diff::{FileDiff, FileStatus, Hunk, LineKind};
use super::highlight::{self, Highlighter};

/// The most characters of one line drawn.
pub const MAX_LINE_CHARS: usize = 2_000;
/// The most lines of one file drawn.
pub const MAX_FILE_ROWS: usize = 5_000;
/// The most lines one page draws, over all its files.
pub const MAX_PAGE_ROWS: usize = 20_000;

/// Two columns or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Unified,
    Split,
}

impl Layout {
    pub fn parse(text: Option<&str>) -> Layout {
        match text {
            Some("split") => Layout::Split,
            _ => Layout::Unified,
        }
    }
}

/// A file in a list: what the task page and the top of the diff page show.
pub struct FileLink {
    pub anchor: String,
    pub path: String,
    pub status: &'static str,
    pub additions: u32,
    pub deletions: u32,
}

pub struct FileView {
    pub link: FileLink,
    /// The name before a rename or copy.
    pub old_path: Option<String>,
    /// What is said instead of or above the lines: a binary file, a mode change, why the lines
    /// are plain or not drawn.
    pub notes: Vec<String>,
    pub hunks: Vec<HunkView>,
}

pub struct HunkView {
    /// `@@ -1,4 +1,5 @@ fn main()`.
    pub header: String,
    /// The rows of the unified layout (empty in the split one).
    pub unified: Vec<UnifiedRow>,
    /// The rows of the split layout (empty in the unified one).
    pub split: Vec<SplitRow>,
}

/// One line: `kind` is `ctx`, `add`, `del` or `note` (git's "No newline at end of file").
pub struct UnifiedRow {
    pub kind: &'static str,
    pub old: String,
    pub new: String,
    pub sign: &'static str,
    /// The code, escaped (and highlighted when it is), safe to put in the page as it is.
    pub html: String,
}

pub struct SplitRow {
    pub left: Cell,
    pub right: Cell,
}

/// One side of a split row: `kind` is `ctx`, `add`, `del`, `note` or `empty`.
pub struct Cell {
    pub kind: &'static str,
    pub number: String,
    pub html: String,
}

impl Cell {
    fn empty() -> Cell {
        Cell {
            kind: "empty",
            number: String::new(),
            html: String::new(),
        }
    }
}

/// The anchor of file `file` of pull request `pr` on the diff page.
pub fn anchor(pr: usize, file: usize) -> String {
    format!("pr{pr}-f{file}")
}

/// The files of pull request number `pr` (in its task) as a list.
pub fn links(pr: usize, files: &[FileDiff]) -> Vec<FileLink> {
    files
        .iter()
        .enumerate()
        .map(|(index, file)| link(pr, index, file))
        .collect()
}

fn link(pr: usize, index: usize, file: &FileDiff) -> FileLink {
    FileLink {
        anchor: anchor(pr, index),
        path: file.path().to_owned(),
        status: file.status.as_str(),
        additions: file.additions,
        deletions: file.deletions,
    }
}

/// What is left of a page's allowances as its files are drawn.
pub struct Budget {
    rows: usize,
    highlighted: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            rows: MAX_PAGE_ROWS,
            highlighted: highlight::MAX_PAGE_LINES,
        }
    }
}

/// Pull request number `pr`'s files drawn in `layout`, within `budget`.
pub fn files(pr: usize, files: &[FileDiff], layout: Layout, budget: &mut Budget) -> Vec<FileView> {
    files
        .iter()
        .enumerate()
        .map(|(index, file)| view(pr, index, file, layout, budget))
        .collect()
}

fn view(pr: usize, index: usize, file: &FileDiff, layout: Layout, budget: &mut Budget) -> FileView {
    let mut notes = Vec::new();
    if file.binary {
        notes.push("Binary file: its contents are not shown.".to_owned());
    }
    if let Some((old, new)) = &file.mode_change {
        notes.push(format!("Mode changed from {old} to {new}."));
    }
    let rows: usize = file.hunks.iter().map(|hunk| hunk.lines.len()).sum();
    let mut view = FileView {
        link: link(pr, index, file),
        old_path: matches!(file.status, FileStatus::Renamed | FileStatus::Copied)
            .then(|| file.old_path.clone())
            .flatten(),
        notes,
        hunks: Vec::new(),
    };
    if rows > MAX_FILE_ROWS || rows > budget.rows {
        view.notes.push(format!(
            "Not shown: its {rows} changed and context lines are more than this page draws ({}). Check out the branch to read it.",
            if rows > MAX_FILE_ROWS { MAX_FILE_ROWS } else { MAX_PAGE_ROWS }
        ));
        return view;
    }
    budget.rows -= rows;
    let longest = file
        .hunks
        .iter()
        .flat_map(|hunk| &hunk.lines)
        .map(|line| line.text.len())
        .max()
        .unwrap_or(0);
    let syntax = highlight::syntax_for(file.path());
    let highlighted = match syntax {
        Some(syntax) if rows > 0 => match highlight::refusal(rows, longest, budget.highlighted) {
            Some(why) => {
                view.notes.push(why);
                None
            }
            None => {
                budget.highlighted -= rows;
                Some(syntax)
            }
        },
        _ => None,
    };
    view.hunks = file
        .hunks
        .iter()
        .map(|hunk| draw_hunk(hunk, layout, highlighted))
        .collect();
    view
}

/// A hunk's lines as HTML, each side highlighted on its own (old: context and removed lines,
/// new: context and added ones), so that each reads as the file it comes from.
fn draw_hunk(
    hunk: &Hunk,
    layout: Layout,
    syntax: Option<&syntect::parsing::SyntaxReference>,
) -> HunkView {
    let mut old_side = syntax.map(Highlighter::new);
    let mut new_side = syntax.map(Highlighter::new);
    let code = |highlighter: &mut Option<Highlighter>, text: &str| -> String {
        let (shown, cut) = cut(text);
        let html = highlighter
            .as_mut()
            .and_then(|h| h.line(shown))
            .unwrap_or_else(|| escape(shown));
        if cut > 0 {
            format!("{html}<span class=\"cut\">… ({cut} more characters)</span>")
        } else {
            html
        }
    };
    let old_count = hunk
        .lines
        .iter()
        .filter(|l| l.kind != LineKind::Added)
        .count();
    let new_count = hunk
        .lines
        .iter()
        .filter(|l| l.kind != LineKind::Removed)
        .count();
    let mut view = HunkView {
        header: format!(
            "@@ -{},{old_count} +{},{new_count} @@ {}",
            hunk.old_start, hunk.new_start, hunk.section
        )
        .trim_end()
        .to_owned(),
        unified: Vec::new(),
        split: Vec::new(),
    };
    // Each line drawn for the sides it is on: (kind, old html, new html).
    let mut drawn = Vec::with_capacity(hunk.lines.len());
    for line in &hunk.lines {
        let old = (line.kind != LineKind::Added).then(|| code(&mut old_side, &line.text));
        let new = (line.kind != LineKind::Removed).then(|| code(&mut new_side, &line.text));
        drawn.push((line, old, new));
    }
    match layout {
        Layout::Unified => {
            for (line, old, new) in drawn {
                let (kind, sign) = kind_and_sign(line.kind);
                view.unified.push(UnifiedRow {
                    kind,
                    old: number(line.old),
                    new: number(line.new),
                    sign,
                    html: new.or(old).unwrap_or_default(),
                });
                if line.no_newline {
                    view.unified.push(no_newline_row());
                }
            }
        }
        Layout::Split => view.split = pair(drawn),
    }
    view
}

/// Split rows: context on both sides; a run of removed lines beside the run of added lines
/// that follows it, row by row, the shorter run padded with empty cells.
fn pair(drawn: Vec<(&super::diff::Line, Option<String>, Option<String>)>) -> Vec<SplitRow> {
    let mut rows = Vec::new();
    let mut removed: Vec<Cell> = Vec::new();
    let mut added: Vec<Cell> = Vec::new();
    let flush = |rows: &mut Vec<SplitRow>, removed: &mut Vec<Cell>, added: &mut Vec<Cell>| {
        let length = removed.len().max(added.len());
        let mut left = std::mem::take(removed).into_iter();
        let mut right = std::mem::take(added).into_iter();
        for _ in 0..length {
            rows.push(SplitRow {
                left: left.next().unwrap_or_else(Cell::empty),
                right: right.next().unwrap_or_else(Cell::empty),
            });
        }
    };
    for (line, old, new) in drawn {
        let note = || Cell {
            kind: "note",
            number: String::new(),
            html: NO_NEWLINE.to_owned(),
        };
        match line.kind {
            LineKind::Removed => {
                if !added.is_empty() {
                    flush(&mut rows, &mut removed, &mut added);
                }
                removed.push(Cell {
                    kind: "del",
                    number: number(line.old),
                    html: old.unwrap_or_default(),
                });
                if line.no_newline {
                    removed.push(note());
                }
            }
            LineKind::Added => {
                added.push(Cell {
                    kind: "add",
                    number: number(line.new),
                    html: new.unwrap_or_default(),
                });
                if line.no_newline {
                    added.push(note());
                }
            }
            LineKind::Context => {
                flush(&mut rows, &mut removed, &mut added);
                rows.push(SplitRow {
                    left: Cell {
                        kind: "ctx",
                        number: number(line.old),
                        html: old.unwrap_or_default(),
                    },
                    right: Cell {
                        kind: "ctx",
                        number: number(line.new),
                        html: new.unwrap_or_default(),
                    },
                });
                if line.no_newline {
                    rows.push(SplitRow {
                        left: note(),
                        right: note(),
                    });
                }
            }
        }
    }
    flush(&mut rows, &mut removed, &mut added);
    rows
}

const NO_NEWLINE: &str = "No newline at end of file";

fn no_newline_row() -> UnifiedRow {
    UnifiedRow {
        kind: "note",
        old: String::new(),
        new: String::new(),
        sign: "",
        html: NO_NEWLINE.to_owned(),
    }
}

fn kind_and_sign(kind: LineKind) -> (&'static str, &'static str) {
    match kind {
        LineKind::Context => ("ctx", ""),
        LineKind::Added => ("add", "+"),
        LineKind::Removed => ("del", "-"),
    }
}

fn number(number: Option<u32>) -> String {
    number.map_or(String::new(), |n| n.to_string())
}

/// `text` up to [`MAX_LINE_CHARS`] characters, and how many were left out.
fn cut(text: &str) -> (&str, usize) {
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((end, _)) => (&text[..end], text[end..].chars().count()),
        None => (text, 0),
    }
}

/// Text as HTML that shows it as it is.
pub fn escape(text: &str) -> String {
    let mut html = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '&' => html.push_str("&amp;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            other => html.push(other),
        }
    }
    html
}

#[cfg(test)]
mod tests {
    use super::super::diff::parse;
    use super::*;

    const DIFF: &str = "diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -1,3 +1,4 @@ def main():
 import os
-x = 1
+x = 2
+y = '<b>'
 z = 3
\\ No newline at end of file
diff --git a/notes.txt b/notes.txt
--- a/notes.txt
+++ b/notes.txt
@@ -1 +1 @@
-<script>alert(1)</script>
+plain & simple
";

    fn drawn(layout: Layout) -> Vec<FileView> {
        files(0, &parse(DIFF), layout, &mut Budget::default())
    }

    #[test]
    fn unified_rows_carry_both_numbers_and_highlighted_code() {
        let views = drawn(Layout::Unified);
        let rows = &views[0].hunks[0].unified;
        let picture: Vec<String> = rows
            .iter()
            .map(|row| format!("{} {} {} {}", row.kind, row.old, row.new, row.sign))
            .collect();
        assert_eq!(
            picture,
            [
                "ctx 1 1 ", "del 2  -", "add  2 +", "add  3 +", "ctx 3 4 ", "note   "
            ]
        );
        assert!(rows[3].html.contains("sx-string"), "{}", rows[3].html);
        assert!(rows[3].html.contains("&lt;b&gt;"), "{}", rows[3].html);
        assert_eq!(views[0].hunks[0].header, "@@ -1,3 +1,4 @@ def main():");
        assert_eq!(views[0].link.anchor, "pr0-f0");
        assert_eq!((views[0].link.additions, views[0].link.deletions), (2, 1));
    }

    /// Plain text is escaped, not highlighted.
    #[test]
    fn a_plain_file_is_escaped() {
        let views = drawn(Layout::Unified);
        let rows = &views[1].hunks[0].unified;
        assert_eq!(rows[0].html, "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(rows[1].html, "plain &amp; simple");
        assert!(views[1].notes.is_empty());
    }

    #[test]
    fn split_rows_pair_removed_with_added_lines() {
        let views = drawn(Layout::Split);
        let picture: Vec<String> = views[0].hunks[0]
            .split
            .iter()
            .map(|row| {
                format!(
                    "{}{} | {}{}",
                    row.left.kind, row.left.number, row.right.kind, row.right.number
                )
            })
            .collect();
        assert_eq!(
            picture,
            [
                "ctx1 | ctx1",
                "del2 | add2",
                "empty | add3",
                "ctx3 | ctx4",
                "note | note"
            ]
        );
        assert!(views[0].hunks[0].unified.is_empty());
    }

    #[test]
    fn a_long_line_is_cut_and_not_highlighted() {
        let long = "é".repeat(MAX_LINE_CHARS + 5);
        let diff =
            format!("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -0,0 +1 @@\n+{long}\n");
        let views = files(0, &parse(&diff), Layout::Unified, &mut Budget::default());
        let html = &views[0].hunks[0].unified[0].html;
        assert!(
            html.ends_with("… (5 more characters)</span>"),
            "{}",
            &html[html.len() - 60..]
        );
        assert!(!html.contains("sx-"));
        assert!(
            views[0].notes[0].contains("longer than 400"),
            "{:?}",
            views[0].notes
        );
    }

    #[test]
    fn a_file_past_the_page_budget_is_listed_but_not_drawn() {
        let mut budget = Budget {
            rows: 3,
            highlighted: 1,
        };
        let views = files(0, &parse(DIFF), Layout::Unified, &mut budget);
        assert!(views[0].hunks.is_empty());
        assert!(
            views[0].notes[0].starts_with("Not shown: its 5"),
            "{:?}",
            views[0].notes
        );
        // The next file fits what is left, plain.
        assert_eq!(views[1].hunks.len(), 1);
    }

    #[test]
    fn binary_and_mode_changes_are_said() {
        let diff = "diff --git a/x.png b/x.png\nnew file mode 100755\nBinary files /dev/null and b/x.png differ\ndiff --git a/run b/run\nold mode 100644\nnew mode 100755\n";
        let views = files(0, &parse(diff), Layout::Unified, &mut Budget::default());
        assert_eq!(views[0].notes, ["Binary file: its contents are not shown."]);
        assert_eq!(views[1].notes, ["Mode changed from 100644 to 100755."]);
        assert_eq!(views[0].link.status, "added");
    }
}

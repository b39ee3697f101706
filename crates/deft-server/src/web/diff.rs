//! A unified git diff read into files, hunks and lines with their old and new line numbers, so
//! that a page can list the files with their counts, fold each one, number its lines and show
//! the two sides apart.
//!
//! Everything here is data a task wrote: file names may hold markup or quotes, lines may be
//! megabytes long, and a removed line may look like a file header (`--- x`, a removed SQL
//! comment). A hunk is therefore read by the counts its `@@` header gives, never by what its
//! lines look like, and nothing here is HTML: the templates escape it.

/// A file's change, as git names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    Modified,
    Added,
    Deleted,
    Renamed,
    Copied,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Modified => "modified",
            FileStatus::Added => "added",
            FileStatus::Deleted => "deleted",
            FileStatus::Renamed => "renamed",
            FileStatus::Copied => "copied",
        }
    }
}

/// One line of a hunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Context,
    Added,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    /// Its number in the old file (context and removed lines).
    pub old: Option<u32>,
    /// Its number in the new file (context and added lines).
    pub new: Option<u32>,
    /// The line without its `+`, `-` or space.
    pub text: String,
    /// Git said `\ No newline at end of file` after it.
    pub no_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    pub old_start: u32,
    pub new_start: u32,
    /// What git printed after the second `@@`: the enclosing function, often.
    pub section: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The path before the change (`None` for an added file).
    pub old_path: Option<String>,
    /// The path after it (`None` for a deleted file).
    pub new_path: Option<String>,
    pub status: FileStatus,
    /// Git showed no lines, only that the contents differ.
    pub binary: bool,
    /// `old mode` → `new mode`, when the mode changed.
    pub mode_change: Option<(String, String)>,
    pub hunks: Vec<Hunk>,
    pub additions: u32,
    pub deletions: u32,
}

impl FileDiff {
    /// The name a person knows the file by: the new path, or the old one for a deletion.
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("")
    }

    fn new(old_path: Option<String>, new_path: Option<String>) -> FileDiff {
        FileDiff {
            old_path,
            new_path,
            status: FileStatus::Modified,
            binary: false,
            mode_change: None,
            hunks: Vec::new(),
            additions: 0,
            deletions: 0,
        }
    }
}

/// Reads `diff` (`git diff` output, as deft's forge and GitHub's compare give it). Lines that
/// fit nowhere (a preamble, a truncated hunk) are passed over: a diff is shown as far as it
/// can be read, never refused.
pub fn parse(diff: &str) -> Vec<FileDiff> {
    let mut files = Vec::new();
    let mut lines = diff.lines().peekable();
    let mut current: Option<FileDiff> = None;
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            files.extend(current.take());
            let (old, new) = header_paths(rest);
            current = Some(FileDiff::new(Some(old), Some(new)));
            continue;
        }
        let Some(file) = current.as_mut() else {
            continue;
        };
        if let Some(header) = line.strip_prefix("@@ ") {
            if let Some(hunk) = read_hunk(header, &mut lines, file) {
                file.hunks.push(hunk);
            }
        } else {
            extended_header(line, file);
        }
    }
    files.extend(current);
    files
}

/// One line of the headers between `diff --git` and the first hunk.
fn extended_header(line: &str, file: &mut FileDiff) {
    if line.starts_with("new file mode ") {
        file.status = FileStatus::Added;
        file.old_path = None;
    } else if line.starts_with("deleted file mode ") {
        file.status = FileStatus::Deleted;
        file.new_path = None;
    } else if let Some(mode) = line.strip_prefix("old mode ") {
        file.mode_change = Some((mode.to_owned(), String::new()));
    } else if let Some(mode) = line.strip_prefix("new mode ") {
        let old = file
            .mode_change
            .take()
            .map(|(old, _)| old)
            .unwrap_or_default();
        file.mode_change = Some((old, mode.to_owned()));
    } else if let Some(path) = line.strip_prefix("rename from ") {
        file.status = FileStatus::Renamed;
        file.old_path = Some(unquote(path));
    } else if let Some(path) = line.strip_prefix("rename to ") {
        file.status = FileStatus::Renamed;
        file.new_path = Some(unquote(path));
    } else if let Some(path) = line.strip_prefix("copy from ") {
        file.status = FileStatus::Copied;
        file.old_path = Some(unquote(path));
    } else if let Some(path) = line.strip_prefix("copy to ") {
        file.status = FileStatus::Copied;
        file.new_path = Some(unquote(path));
    } else if line.starts_with("Binary files ") || line == "GIT binary patch" {
        file.binary = true;
    } else if let Some(path) = line.strip_prefix("--- ") {
        file.old_path = side_path(path, "a/");
    } else if let Some(path) = line.strip_prefix("+++ ") {
        file.new_path = side_path(path, "b/");
    }
}

/// The path of a `---`/`+++` line: `None` for `/dev/null`.
fn side_path(text: &str, prefix: &str) -> Option<String> {
    // git ends the name with a tab when it holds a space, in some versions.
    let text = text.strip_suffix('\t').unwrap_or(text);
    if text == "/dev/null" {
        return None;
    }
    let path = unquote(text);
    Some(
        path.strip_prefix(prefix)
            .map_or(path.clone(), str::to_owned),
    )
}

/// The two paths of `diff --git a/X b/Y`. Unquoted names may hold spaces, so the line is
/// ambiguous; the `---`/`+++` and `rename` lines that follow correct it when there are some
/// (only a binary or mode-only change leaves it the last word).
fn header_paths(rest: &str) -> (String, String) {
    if rest.starts_with('"') {
        let (old, after) = quoted(rest);
        let new = after.trim_start();
        let new = if new.starts_with('"') {
            quoted(new).0
        } else {
            new.to_owned()
        };
        return (strip(&old, "a/"), strip(&new, "b/"));
    }
    // The same name on both sides: `a/P b/P`, split at its middle.
    let middle = rest.len().saturating_sub(1) / 2;
    if rest.is_char_boundary(middle)
        && rest.as_bytes().get(middle) == Some(&b' ')
        && rest[..middle].strip_prefix("a/") == rest[middle + 1..].strip_prefix("b/")
    {
        let path = rest[middle + 1..].strip_prefix("b/").unwrap_or_default();
        return (path.to_owned(), path.to_owned());
    }
    match rest.split_once(" b/") {
        Some((old, new)) => (strip(old, "a/"), new.to_owned()),
        None => (rest.to_owned(), rest.to_owned()),
    }
}

fn strip(path: &str, prefix: &str) -> String {
    path.strip_prefix(prefix).unwrap_or(path).to_owned()
}

/// A name as git writes it: as is, or C-quoted (`"tab\there"`, octal bytes for non-ASCII).
fn unquote(text: &str) -> String {
    if text.starts_with('"') {
        quoted(text).0
    } else {
        text.to_owned()
    }
}

/// The C-quoted string at the start of `text`, and what follows its closing quote.
fn quoted(text: &str) -> (String, &str) {
    let mut bytes = Vec::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => {
                return (
                    String::from_utf8_lossy(&bytes).into_owned(),
                    &text[index + 1..],
                );
            }
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    break;
                };
                match escaped {
                    'n' => bytes.push(b'\n'),
                    't' => bytes.push(b'\t'),
                    'r' => bytes.push(b'\r'),
                    'a' => bytes.push(7),
                    'b' => bytes.push(8),
                    'f' => bytes.push(12),
                    'v' => bytes.push(11),
                    '0'..='7' => {
                        let mut value = escaped.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            if let Some((_, digit)) = chars.clone().next()
                                && let Some(d) = digit.to_digit(8)
                            {
                                value = value * 8 + d;
                                chars.next();
                            }
                        }
                        bytes.push(value as u8);
                    }
                    other => {
                        let mut buffer = [0; 4];
                        bytes.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                    }
                }
            }
            other => {
                let mut buffer = [0; 4];
                bytes.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    // No closing quote: the text was not quoted after all.
    (text.to_owned(), "")
}

/// `-A,B +C,D @@ section` → (A, B, C, D, section); a count left out is 1.
fn hunk_header(header: &str) -> Option<(u32, u32, u32, u32, String)> {
    let (ranges, section) = header.split_once(" @@").unwrap_or((header, ""));
    let mut parts = ranges.split_whitespace();
    let range = |part: Option<&str>, sign: char| -> Option<(u32, u32)> {
        let part = part?.strip_prefix(sign)?;
        match part.split_once(',') {
            Some((start, count)) => Some((start.parse().ok()?, count.parse().ok()?)),
            None => Some((part.parse().ok()?, 1)),
        }
    };
    let (old_start, old_count) = range(parts.next(), '-')?;
    let (new_start, new_count) = range(parts.next(), '+')?;
    Some((
        old_start,
        old_count,
        new_start,
        new_count,
        section.trim().to_owned(),
    ))
}

/// The hunk whose header (after `@@ `) is `header`, its lines taken from `lines` by its
/// counts; `None` when the header is not one.
fn read_hunk<'a>(
    header: &str,
    lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
    file: &mut FileDiff,
) -> Option<Hunk> {
    let (old_start, mut old_left, new_start, mut new_left, section) = hunk_header(header)?;
    let mut hunk = Hunk {
        old_start,
        new_start,
        section,
        lines: Vec::new(),
    };
    let (mut old, mut new) = (old_start, new_start);
    while old_left > 0 || new_left > 0 {
        let Some(&text) = lines.peek() else { break };
        let kind = match text.as_bytes().first() {
            Some(b'+') if new_left > 0 => LineKind::Added,
            Some(b'-') if old_left > 0 => LineKind::Removed,
            // An empty line is a context line whose space an editor or a mail ate.
            Some(b' ') | None if old_left > 0 && new_left > 0 => LineKind::Context,
            Some(b'\\') => {
                lines.next();
                if let Some(last) = hunk.lines.last_mut() {
                    last.no_newline = true;
                }
                continue;
            }
            _ => break,
        };
        lines.next();
        let body = text.get(1..).unwrap_or("").to_owned();
        let (old_number, new_number) = match kind {
            LineKind::Context => {
                old_left -= 1;
                new_left -= 1;
                (Some(old), Some(new))
            }
            LineKind::Added => {
                new_left -= 1;
                file.additions += 1;
                (None, Some(new))
            }
            LineKind::Removed => {
                old_left -= 1;
                file.deletions += 1;
                (Some(old), None)
            }
        };
        if old_number.is_some() {
            old += 1;
        }
        if new_number.is_some() {
            new += 1;
        }
        hunk.lines.push(Line {
            kind,
            old: old_number,
            new: new_number,
            text: body,
            no_newline: false,
        });
    }
    // The marker after a hunk's last line.
    if lines.peek().is_some_and(|text| text.starts_with('\\')) {
        lines.next();
        if let Some(last) = hunk.lines.last_mut() {
            last.no_newline = true;
        }
    }
    Some(hunk)
}

/// Lines a unified diff adds and removes, counted without reading it into files (the task
/// list counts every local pull request's diff this way).
pub fn stat(diff: &str) -> deft_store::DiffStat {
    let mut stat = deft_store::DiffStat::default();
    let mut in_hunk = false;
    for line in diff.lines() {
        if line.starts_with("@@") {
            in_hunk = true;
        } else if line.starts_with("diff ") {
            in_hunk = false;
        } else if in_hunk && line.starts_with('+') {
            stat.additions += 1;
        } else if in_hunk && line.starts_with('-') {
            stat.deletions += 1;
        }
    }
    stat
}

/// Lines added and removed over all files.
pub fn totals(files: &[FileDiff]) -> (u32, u32) {
    files.iter().fold((0, 0), |(added, removed), file| {
        (added + file.additions, removed + file.deletions)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact picture of a parsed diff: per file `status path (+a -d)`, then per line its
    /// numbers and kind.
    fn check(diff: &str, expect: &str) {
        let mut got = String::new();
        for file in parse(diff) {
            got.push_str(&format!(
                "{} {:?} -> {:?} (+{} -{}){}{}\n",
                file.status.as_str(),
                file.old_path,
                file.new_path,
                file.additions,
                file.deletions,
                if file.binary { " binary" } else { "" },
                file.mode_change
                    .as_ref()
                    .map(|(a, b)| format!(" mode {a}->{b}"))
                    .unwrap_or_default(),
            ));
            for hunk in &file.hunks {
                got.push_str(format!("  @@ {}", hunk.section).trim_end());
                got.push('\n');
                for line in &hunk.lines {
                    let number = |n: Option<u32>| n.map_or("-".to_owned(), |n| n.to_string());
                    got.push_str(&format!(
                        "  {} {} {} {}{}\n",
                        number(line.old),
                        number(line.new),
                        match line.kind {
                            LineKind::Context => ' ',
                            LineKind::Added => '+',
                            LineKind::Removed => '-',
                        },
                        line.text,
                        if line.no_newline { " ⏎?" } else { "" }
                    ));
                }
            }
        }
        assert_eq!(got.trim_end(), expect.trim_end(), "\n{got}");
    }

    #[test]
    fn a_modified_file_numbers_both_sides() {
        check(
            "diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,4 +1,5 @@ def main():
 import os
-print('old')
+print('new')
+print('more')
 x = 1
 y = 2
@@ -10,2 +11,2 @@
 a
-b
+c
",
            "modified Some(\"src/app.py\") -> Some(\"src/app.py\") (+3 -2)
  @@ def main():
  1 1   import os
  2 - - print('old')
  - 2 + print('new')
  - 3 + print('more')
  3 4   x = 1
  4 5   y = 2
  @@
  10 11   a
  11 - - b
  - 12 + c",
        );
    }

    #[test]
    fn new_deleted_and_binary_files() {
        check(
            "diff --git a/new.rs b/new.rs
new file mode 100644
index 0000000..1111111
--- /dev/null
+++ b/new.rs
@@ -0,0 +1,2 @@
+fn main() {}
+// done
diff --git a/old.txt b/old.txt
deleted file mode 100644
index 1111111..0000000
--- a/old.txt
+++ /dev/null
@@ -1 +0,0 @@
-gone
diff --git a/logo.png b/logo.png
new file mode 100644
index 0000000..3333333
Binary files /dev/null and b/logo.png differ
",
            "added None -> Some(\"new.rs\") (+2 -0)
  @@
  - 1 + fn main() {}
  - 2 + // done
deleted Some(\"old.txt\") -> None (+0 -1)
  @@
  1 - - gone
added None -> Some(\"logo.png\") (+0 -0) binary",
        );
    }

    #[test]
    fn renames_copies_and_modes() {
        check(
            "diff --git a/old name.md b/new name.md
similarity index 90%
rename from old name.md
rename to new name.md
index 1111111..2222222 100644
--- a/old name.md
+++ b/new name.md
@@ -1 +1 @@
-a
+b
diff --git a/run.sh b/run.sh
old mode 100644
new mode 100755
diff --git a/x.c b/y.c
similarity index 100%
copy from x.c
copy to y.c
",
            "renamed Some(\"old name.md\") -> Some(\"new name.md\") (+1 -1)
  @@
  1 - - a
  - 1 + b
modified Some(\"run.sh\") -> Some(\"run.sh\") (+0 -0) mode 100644->100755
copied Some(\"x.c\") -> Some(\"y.c\") (+0 -0)",
        );
    }

    #[test]
    fn no_newline_at_end_of_file_marks_the_line() {
        check(
            "diff --git a/a b/a
--- a/a
+++ b/a
@@ -1 +1 @@
-old
\\ No newline at end of file
+new
\\ No newline at end of file
",
            "modified Some(\"a\") -> Some(\"a\") (+1 -1)
  @@
  1 - - old ⏎?
  - 1 + new ⏎?",
        );
    }

    /// A removed line that reads `--- x` or `+++ y`, or `diff --git`, stays a line of its hunk.
    #[test]
    fn lines_that_look_like_headers_stay_in_their_hunk() {
        check(
            "diff --git a/q.sql b/q.sql
--- a/q.sql
+++ b/q.sql
@@ -1,3 +1,3 @@
--- a comment
-diff --git a/x b/x
+++ added
 select 1;
",
            "modified Some(\"q.sql\") -> Some(\"q.sql\") (+1 -2)
  @@
  1 - - -- a comment
  2 - - diff --git a/x b/x
  - 1 + ++ added
  3 2   select 1;",
        );
    }

    /// Names are data: markup and quotes come through as they are (the page escapes them),
    /// and git's C-quoting is undone.
    #[test]
    fn hostile_names_come_through_as_text() {
        check(
            "diff --git a/<script>alert(1)</script>.js b/<script>alert(1)</script>.js
new file mode 100644
--- /dev/null
+++ b/<script>alert(1)</script>.js
@@ -0,0 +1 @@
+</td><script>alert(2)</script>
diff --git \"a/tab\\there\\303\\251.txt\" \"b/tab\\there\\303\\251.txt\"
new file mode 100644
--- /dev/null
+++ \"b/tab\\there\\303\\251.txt\"
@@ -0,0 +1 @@
+x
",
            "added None -> Some(\"<script>alert(1)</script>.js\") (+1 -0)
  @@
  - 1 + </td><script>alert(2)</script>
added None -> Some(\"tab\\there\u{e9}.txt\") (+1 -0)
  @@
  - 1 + x",
        );
    }

    /// A name with a space and no `---` line (a binary file) is split at its middle.
    #[test]
    fn a_binary_file_with_spaces_in_its_name() {
        let files = parse(
            "diff --git a/my pic b/x.png b/my pic b/x.png\nindex 1..2 100644\nBinary files a/my pic b/x.png and b/my pic b/x.png differ\n",
        );
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path(), "my pic b/x.png");
        assert!(files[0].binary);
    }

    #[test]
    fn a_huge_line_is_kept_whole_and_counted_once() {
        let long = "x".repeat(1_000_000);
        let diff = format!("diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -0,0 +1 @@\n+{long}\n");
        let files = parse(&diff);
        assert_eq!(files[0].additions, 1);
        assert_eq!(files[0].hunks[0].lines[0].text.len(), 1_000_000);
    }

    /// What fits nowhere is passed over: a preamble, a broken hunk header, a cut-off hunk.
    #[test]
    fn a_malformed_diff_is_read_as_far_as_it_goes() {
        check(
            "some preamble\n@@ -1 +1 @@\n+not in a file\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ nonsense @@\n@@ -1,3 +1,3 @@\n-x\n+y\n",
            "modified Some(\"a\") -> Some(\"a\") (+1 -1)
  @@
  1 - - x
  - 1 + y",
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn totals_add_up_every_file() {
        let files = parse(
            "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1,2 @@\n-x\n+y\n+z\ndiff --git a/b b/b\n--- a/b\n+++ b/b\n@@ -1 +1 @@\n-x\n+y\n",
        );
        assert_eq!(totals(&files), (3, 2));
    }
}

//! The diff page's drawing, reached from `benches/diff.rs` alone (re-exported hidden by the
//! crate): what a large diff costs to parse, highlight and draw, without a server around it.

use super::diff_view::{self, Budget, Layout};
use super::{diff, highlight};

/// What one drawing made.
#[derive(Debug, Default)]
pub struct Drawn {
    pub lines: usize,
    /// Lines with highlighting in them.
    pub highlighted: usize,
    /// The bytes of code HTML drawn (the page's rows around them aside).
    pub html_bytes: usize,
}

/// Loads the bundled syntaxes, as the first page with a diff does.
pub fn load_syntaxes() {
    std::sync::LazyLock::force(&highlight::SYNTAXES);
}

/// Draws `text` (a `git diff`) as the diff page does, unified or split.
pub fn draw(text: &str, split: bool) -> Drawn {
    let layout = if split {
        Layout::Split
    } else {
        Layout::Unified
    };
    let files = diff_view::files(0, &diff::parse(text), layout, &mut Budget::default());
    let mut drawn = Drawn::default();
    let mut count = |html: &str| {
        drawn.lines += 1;
        drawn.html_bytes += html.len();
        if html.contains("<span class=\"sx-") {
            drawn.highlighted += 1;
        }
    };
    for hunk in files.iter().flat_map(|file| &file.hunks) {
        for row in &hunk.unified {
            count(&row.html);
        }
        for row in &hunk.split {
            count(&row.left.html);
            count(&row.right.html);
        }
    }
    drawn
}

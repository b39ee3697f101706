//! A command's output as HTML: its SGR colours and bold drawn as `<span class="ansi-…">`, every
//! other escape sequence (cursor moves, window titles, erasing) dropped, and every character of
//! the text escaped. Output comes from the repository's own programs, so it is an attacker's
//! text: a `<script>` inside red text stays the text `<script>`, and no escape sequence can
//! open or close anything but the spans written here.
//!
//! Colours map to eight classes (`ansi-red`, …), bright ones to the same, and 256-colour and
//! true-colour codes to the nearest of them, so that app.css can keep each readable on the
//! page's light and dark backgrounds. Background colours are dropped for the same reason.

/// The eight colours a class names, in SGR order (30–37).
const COLOURS: [&str; 8] = [
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
];

/// What the text is drawn with at one point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    colour: Option<u8>,
    bold: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn classes(self) -> Option<String> {
        let mut classes = Vec::new();
        if let Some(colour) = self.colour {
            classes.push(format!("ansi-{}", COLOURS[usize::from(colour)]));
        }
        if self.bold {
            classes.push("ansi-bold".into());
        }
        if self.italic {
            classes.push("ansi-italic".into());
        }
        if self.underline {
            classes.push("ansi-underline".into());
        }
        (!classes.is_empty()).then(|| classes.join(" "))
    }

    /// Applies one SGR sequence's parameters (`1;31`, `38;5;196`, ``).
    fn apply(&mut self, params: &str) {
        let mut codes = params
            .split([';', ':'])
            .map(|code| code.parse::<u16>().unwrap_or(0));
        // `ESC[m` is a reset, as `ESC[0m` is.
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        while let Some(code) = codes.next() {
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => self.bold = false,
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.colour = Some((code - 30) as u8),
                90..=97 => self.colour = Some((code - 90) as u8),
                39 => self.colour = None,
                38 => self.colour = extended(&mut codes).or(self.colour),
                // A background's colour would sit under text whose contrast app.css keeps.
                48 | 58 => {
                    extended(&mut codes);
                }
                _ => {}
            }
        }
    }
}

/// The colour of a `38;5;N` or `38;2;R;G;B` sequence, as the nearest of the eight; consumes
/// its parameters either way.
fn extended(codes: &mut impl Iterator<Item = u16>) -> Option<u8> {
    match codes.next()? {
        5 => {
            let index = codes.next()?;
            Some(match index {
                0..=7 => index as u8,
                8..=15 => (index - 8) as u8,
                16..=231 => {
                    let cube = index - 16;
                    let level = |n: u16| [0, 95, 135, 175, 215, 255][usize::from(n)];
                    nearest(level(cube / 36), level(cube / 6 % 6), level(cube % 6))
                }
                // The grey ramp: dark greys read as black, light ones as white.
                232..=255 => {
                    if index < 244 {
                        0
                    } else {
                        7
                    }
                }
                _ => return None,
            })
        }
        2 => {
            let (r, g, b) = (codes.next()?, codes.next()?, codes.next()?);
            Some(nearest(r.min(255), g.min(255), b.min(255)))
        }
        _ => None,
    }
}

/// The nearest of the eight colours: each channel read as on or off at its midpoint, with
/// greys (no channel standing out) as black or white.
fn nearest(r: u16, g: u16, b: u16) -> u8 {
    let (high, low) = (r.max(g).max(b), r.min(g).min(b));
    if high - low < 48 {
        return if high < 128 { 0 } else { 7 };
    }
    let mid = (high + low) / 2;
    let bit = |channel: u16| u8::from(channel > mid);
    bit(r) | bit(g) << 1 | bit(b) << 2
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// `text` as escaped HTML with its colours as spans; what [`to_html`] draws is all of `text`
/// but its escape sequences and control characters (tabs and line ends stay).
pub fn to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut style = Style::default();
    // The classes of the span open in `out`, if one is.
    let mut open: Option<String> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    let mut params = String::new();
                    let mut last = None;
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            last = Some(c);
                            break;
                        }
                        params.push(c);
                    }
                    if last == Some('m')
                        && params
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == ';' || c == ':')
                    {
                        style.apply(&params);
                    }
                }
                // OSC (a window title, a hyperlink), DCS, PM, APC and SOS: strings that end
                // with BEL or ESC \.
                Some(']' | 'P' | '^' | '_' | 'X') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // A character-set choice takes one more character (`ESC ( B`).
                Some('(' | ')' | '*' | '+' | '#' | '%') => {
                    chars.next();
                }
                // Any other escape is two characters long (`ESC 7`, `ESC M`).
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            // A carriage return before a line end is Windows' line end; alone, a progress
            // bar's redraw, whose frames read fine one after another.
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            c if c.is_control() => {}
            c => {
                let wanted = style.classes();
                if wanted != open {
                    if open.is_some() {
                        out.push_str("</span>");
                    }
                    if let Some(classes) = &wanted {
                        out.push_str("<span class=\"");
                        out.push_str(classes);
                        out.push_str("\">");
                    }
                    open = wanted;
                }
                escape_into(&mut out, c);
            }
        }
    }
    if open.is_some() {
        out.push_str("</span>");
    }
    out
}

/// `text` without its escape sequences: what a line of the log shows as its title.
pub fn to_plain(text: &str) -> String {
    let html = to_html(text);
    let mut plain = String::with_capacity(html.len());
    let mut rest = html.as_str();
    while let Some(start) = rest.find('<') {
        plain.push_str(&rest[..start]);
        rest = rest[start..].split_once('>').map_or("", |(_, after)| after);
    }
    plain.push_str(rest);
    plain
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        assert_eq!(to_html(input), expect, "for {input:?}");
    }

    #[test]
    fn colours_and_bold_become_spans_and_a_reset_closes_them() {
        check(
            "\x1b[31mred\x1b[0m plain",
            "<span class=\"ansi-red\">red</span> plain",
        );
        check(
            "\x1b[1;32mok\x1b[m",
            "<span class=\"ansi-green ansi-bold\">ok</span>",
        );
        check(
            "\x1b[1mbold \x1b[34mblue\x1b[22m thin\x1b[39m",
            "<span class=\"ansi-bold\">bold </span><span class=\"ansi-blue ansi-bold\">blue</span><span class=\"ansi-blue\"> thin</span>",
        );
        check(
            "\x1b[91mbright\x1b[0m",
            "<span class=\"ansi-red\">bright</span>",
        );
        check(
            "\x1b[3;4mx",
            "<span class=\"ansi-italic ansi-underline\">x</span>",
        );
        // Nothing drawn between codes opens no empty span.
        check("\x1b[31m\x1b[0mplain", "plain");
    }

    #[test]
    fn extended_colours_map_to_the_nearest_of_eight_and_backgrounds_are_dropped() {
        check("\x1b[38;5;196mx", "<span class=\"ansi-red\">x</span>");
        check("\x1b[38;5;10mx", "<span class=\"ansi-green\">x</span>");
        check("\x1b[38;5;21mx", "<span class=\"ansi-blue\">x</span>");
        check("\x1b[38;5;250mx", "<span class=\"ansi-white\">x</span>");
        check(
            "\x1b[38;2;255;200;0mx",
            "<span class=\"ansi-yellow\">x</span>",
        );
        check(
            "\x1b[38;2;20;20;20mx",
            "<span class=\"ansi-black\">x</span>",
        );
        check(
            "\x1b[41;38;2;0;200;200mx",
            "<span class=\"ansi-cyan\">x</span>",
        );
        check("\x1b[48;5;196mx\x1b[48;2;1;2;3my", "xy");
        // A truncated sequence colours nothing and breaks nothing.
        check("\x1b[38;5mx", "x");
    }

    #[test]
    fn other_escapes_and_control_characters_are_dropped() {
        check("\x1b[2K\x1b[1Gdone\x1b[?25h", "done");
        check("\x1b]0;a title\x07text", "text");
        check(
            "\x1b]8;;https://example.org\x1b\\link\x1b]8;;\x1b\\",
            "link",
        );
        check("\x1b(Bplain\x1b7\x1b8", "plain");
        check("a\x08b\x00c\td\r\ne", "abc\td\ne");
        check("10%\r50%\r100%", "10%\n50%\n100%");
        // An escape cut off at the end of the output.
        check("tail\x1b[3", "tail");
        check("tail\x1b", "tail");
    }

    #[test]
    fn text_is_escaped_inside_and_outside_colours_and_codes_cannot_write_markup() {
        check(
            "\x1b[31m<script>alert(1)</script>\x1b[0m & \"'",
            "<span class=\"ansi-red\">&lt;script&gt;alert(1)&lt;/script&gt;</span> &amp; &quot;&#39;",
        );
        // Parameters that are not numbers are not a colour, and never reach the output.
        check("\x1b[31\"><b>m<i>", "&gt;m&lt;i&gt;");
        check("\x1b[\"onmouseover=x mok", "nmouseover=x mok");
    }

    #[test]
    fn plain_text_keeps_the_characters_and_loses_the_codes() {
        assert_eq!(to_plain("\x1b[31m<b>&\x1b[0m ok"), "<b>& ok");
    }
}

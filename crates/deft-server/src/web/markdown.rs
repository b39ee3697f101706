//! The agent's replies as Markdown, drawn as HTML that cannot act on the page: the model writes
//! Markdown (lists, code, tables), and what it writes may quote a web page or a repository an
//! attacker wrote, so it is text to show, never markup to trust.
//!
//! Two layers. The Markdown's own events are rewritten first: raw HTML is shown as the text it
//! is (`Vec<String>` in prose stays readable, and `<script>` is visible, not run), links keep
//! only http, https and relative addresses, images become links (the pages' CSP allows images
//! from this origin only, and fetching another's would tell it who reads the chat), headings
//! move two levels down (h1 becomes h3) so that a reply nests under the page's own h1 and h2
//! and keeps its own outline, and `[n]` markers that name a source become links to it. Then
//! `ammonia` cleans the HTML against an allow-list, so that a mistake in the first layer
//! still cannot let a script, a style, an event handler or another scheme through.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ammonia::{Builder, Url, UrlRelative};
use pulldown_cmark::{
    CodeBlockKind, CowStr, Event, HeadingLevel, LinkType, Options, Parser, Tag, TagEnd,
    TextMergeStream,
};

/// The `rel` of every link: no access to this page from the one opened, no referrer, and no
/// endorsement for search engines of an address the model chose.
const LINK_REL: &str = "noopener noreferrer nofollow";

/// What may remain after sanitizing: the HTML that the rewritten Markdown makes, and no more.
static SANITIZER: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut builder = Builder::empty();
    builder
        .tags(HashSet::from([
            "p",
            "br",
            "hr",
            "em",
            "strong",
            "del",
            "code",
            "pre",
            "blockquote",
            "ul",
            "ol",
            "li",
            "h3",
            "h4",
            "h5",
            "h6",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
            "a",
        ]))
        .clean_content_tags(HashSet::from(["script", "style"]))
        .generic_attributes(HashSet::new())
        // Table alignment comes as an inline `style`, which the CSP would refuse: dropped.
        .tag_attributes(HashMap::from([
            ("a", HashSet::from(["href"])),
            ("ol", HashSet::from(["start"])),
        ]))
        .allowed_classes(HashMap::from([("a", HashSet::from(["cite"]))]))
        .url_schemes(HashSet::from(["http", "https"]))
        .url_relative(UrlRelative::PassThrough)
        .link_rel(Some(LINK_REL))
        .strip_comments(true);
    builder
});

/// `text`, Markdown, as sanitized HTML. `sources` are the numbered web sources the text's
/// `[n]` markers cite (number, URL); pass `&[]` where there are none.
/// The sources a reply lists in the "## Sources" section deft appends to it (`N. [title](url)`
/// a line), for [`render`] to link its `[n]` markers to them.
pub fn listed_sources(text: &str) -> Vec<(u32, String)> {
    let Some((_, section)) = text.rsplit_once("\n## Sources\n") else {
        return Vec::new();
    };
    section
        .lines()
        .filter_map(|line| {
            let (number, rest) = line.split_once(". [")?;
            let number = number.trim().parse().ok()?;
            let url = rest.rsplit_once("](")?.1.strip_suffix(')')?;
            Some((number, url.to_owned()))
        })
        .collect()
}

pub fn render(text: &str, sources: &[(u32, String)]) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let parser = TextMergeStream::new(Parser::new_ext(text, options));
    let mut rewrite = Rewrite {
        sources,
        links: Vec::new(),
        images: Vec::new(),
        in_code: false,
        out: Vec::new(),
    };
    for event in parser {
        rewrite.event(event);
    }
    let mut html = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, rewrite.out.into_iter());
    SANITIZER.clean(&html).to_string()
}

/// The first layer: Markdown events in, the events to draw out.
struct Rewrite<'a, 's> {
    sources: &'s [(u32, String)],
    /// Each open link: whether it is drawn (its address is allowed).
    links: Vec<bool>,
    /// Each open image: the address it is drawn as a link to, with whether its alt text has
    /// said anything yet; `None` when only its alt text is drawn.
    images: Vec<Option<(CowStr<'a>, bool)>>,
    /// Inside a code block (its text is code, never a citation).
    in_code: bool,
    out: Vec<Event<'a>>,
}

impl<'a> Rewrite<'a, '_> {
    fn event(&mut self, event: Event<'a>) {
        match event {
            // Raw HTML is shown, not interpreted: inline as text, a block as code.
            Event::Html(html) | Event::InlineHtml(html) => self.text(html),
            Event::Start(Tag::HtmlBlock) => {
                self.in_code = true;
                self.out
                    .push(Event::Start(Tag::CodeBlock(CodeBlockKind::Indented)));
            }
            Event::End(TagEnd::HtmlBlock) => {
                self.in_code = false;
                self.out.push(Event::End(TagEnd::CodeBlock));
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                self.in_code = true;
                self.out.push(Event::Start(Tag::CodeBlock(kind)));
            }
            Event::End(TagEnd::CodeBlock) => {
                self.in_code = false;
                self.out.push(Event::End(TagEnd::CodeBlock));
            }
            Event::Start(Tag::Heading {
                level,
                id,
                classes,
                attrs,
            }) => self.out.push(Event::Start(Tag::Heading {
                level: lower(level),
                id,
                classes,
                attrs,
            })),
            Event::End(TagEnd::Heading(level)) => {
                self.out.push(Event::End(TagEnd::Heading(lower(level))));
            }
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                // An e-mail autolink would be drawn as `mailto:`, which is not allowed.
                let drawn = link_type != LinkType::Email && linkable(&dest_url);
                self.links.push(drawn);
                if drawn {
                    self.out.push(Event::Start(Tag::Link {
                        link_type,
                        dest_url,
                        title,
                        id,
                    }));
                }
            }
            Event::End(TagEnd::Link) => {
                if self.links.pop() == Some(true) {
                    self.out.push(Event::End(TagEnd::Link));
                }
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                // A link inside a link is not HTML: inside one, an image is its alt text.
                let drawn = !self.in_link() && linkable(&dest_url);
                if drawn {
                    self.out.push(Event::Start(link_to(dest_url.clone())));
                    self.images.push(Some((dest_url, false)));
                } else {
                    self.images.push(None);
                }
            }
            Event::End(TagEnd::Image) => {
                if let Some(Some((url, said))) = self.images.pop() {
                    if !said {
                        self.out.push(Event::Text(url));
                    }
                    self.out.push(Event::End(TagEnd::Link));
                }
            }
            Event::Text(text) => self.text(text),
            Event::Code(code) => {
                self.said();
                self.out.push(Event::Code(code));
            }
            other => self.out.push(other),
        }
    }

    fn in_link(&self) -> bool {
        self.links.contains(&true) || self.images.iter().any(Option::is_some)
    }

    /// Records that the alt text of the images open has said something.
    fn said(&mut self) {
        for (_, said) in self.images.iter_mut().flatten() {
            *said = true;
        }
    }

    /// Text, with its `[n]` markers that name a source as links, outside code and links.
    fn text(&mut self, text: CowStr<'a>) {
        if text.is_empty() {
            return;
        }
        self.said();
        if self.in_code || self.in_link() {
            self.out.push(Event::Text(text));
            return;
        }
        let mut rest: &str = &text;
        let mut pieces: Vec<Event<'a>> = Vec::new();
        while let Some((before, number, url, after)) = next_citation(rest, self.sources) {
            if !before.is_empty() {
                pieces.push(Event::Text(CowStr::from(before.to_owned())));
            }
            pieces.push(Event::InlineHtml(CowStr::from(format!(
                "<a href=\"{}\" class=\"cite\">[{number}]</a>",
                attribute(url)
            ))));
            rest = after;
        }
        if pieces.is_empty() {
            self.out.push(Event::Text(text));
            return;
        }
        if !rest.is_empty() {
            pieces.push(Event::Text(CowStr::from(rest.to_owned())));
        }
        self.out.extend(pieces);
    }
}

/// Two levels down, h6 at most: the page's own h1 and h2 stay above every reply.
fn lower(level: HeadingLevel) -> HeadingLevel {
    match level {
        HeadingLevel::H1 => HeadingLevel::H3,
        HeadingLevel::H2 => HeadingLevel::H4,
        HeadingLevel::H3 => HeadingLevel::H5,
        HeadingLevel::H4 | HeadingLevel::H5 | HeadingLevel::H6 => HeadingLevel::H6,
    }
}

fn link_to(dest_url: CowStr<'_>) -> Tag<'_> {
    Tag::Link {
        link_type: LinkType::Inline,
        dest_url,
        title: CowStr::Borrowed(""),
        id: CowStr::Borrowed(""),
    }
}

/// Whether a link may go to `url`: http, https, or an address relative to this page.
fn linkable(url: &str) -> bool {
    match Url::parse(url) {
        Ok(url) => web(&url),
        Err(error) => error == ammonia::url::ParseError::RelativeUrlWithoutBase,
    }
}

fn web(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// The first `[n]` in `text` whose `n` is a source with an http(s) address: the text before
/// it, `n`, the address, and the text after it.
fn next_citation<'t, 's>(
    text: &'t str,
    sources: &'s [(u32, String)],
) -> Option<(&'t str, u32, &'s str, &'t str)> {
    if sources.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(open) = text[from..].find('[').map(|at| from + at) {
        from = open + 1;
        let close = text[from..].find(']').map(|at| from + at)?;
        let digits = &text[from..close];
        // Digits only, written as the number is (`[01]` is not `[1]`).
        let Some(number) = digits
            .parse::<u32>()
            .ok()
            .filter(|number| number.to_string() == digits)
        else {
            continue;
        };
        let url = sources
            .iter()
            .find(|(n, url)| *n == number && Url::parse(url).is_ok_and(|url| web(&url)));
        if let Some((_, url)) = url {
            return Some((&text[..open], number, url, &text[close + 1..]));
        }
    }
    None
}

/// `value` escaped for a double-quoted HTML attribute.
fn attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod listed {
    use super::*;

    #[test]
    fn a_replys_sources_section_links_its_markers() {
        let reply = "Say hello [2], not hi [3].\n\n## Sources\n2. [Greeting guide](https://example.org/guide)\n3. [Trap](javascript:alert(1))";
        let sources = listed_sources(reply);
        assert_eq!(
            sources,
            [
                (2, "https://example.org/guide".to_owned()),
                (3, "javascript:alert(1)".to_owned())
            ]
        );
        let html = render(reply, &sources);
        assert!(
            html.contains(r#"<a href="https://example.org/guide" class="cite""#),
            "{html}"
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(listed_sources("no section [1]").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::{SANITIZER, render};

    /// Renders `markdown` with `sources` and compares with the expected HTML.
    fn check_with(markdown: &str, sources: &[(u32, &str)], expect: &str) {
        let sources: Vec<(u32, String)> = sources
            .iter()
            .map(|(n, url)| (*n, (*url).to_owned()))
            .collect();
        assert_eq!(render(markdown, &sources), expect, "rendering {markdown:?}");
    }

    fn check(markdown: &str, expect: &str) {
        check_with(markdown, &[], expect);
    }

    /// That every tag drawn for `markdown` is one the allow-list has, with allowed attributes
    /// only, and every address http(s) or relative: markup that can act never survives. Text
    /// may still say `onerror=` or `javascript:`, as the reply did; text cannot act.
    fn check_inert(markdown: &str) {
        let html = render(markdown, &[]);
        // Text has its `<` escaped, so every `<` left opens a tag.
        for tag in html.split('<').skip(1) {
            let tag = tag.split_once('>').expect("a closed tag").0;
            let tag = tag.strip_prefix('/').unwrap_or(tag);
            let (name, attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(
                [
                    "p",
                    "br",
                    "hr",
                    "em",
                    "strong",
                    "del",
                    "code",
                    "pre",
                    "blockquote",
                    "ul",
                    "ol",
                    "li",
                    "h3",
                    "h4",
                    "h5",
                    "h6",
                    "table",
                    "thead",
                    "tbody",
                    "tr",
                    "th",
                    "td",
                    "a",
                ]
                .contains(&name),
                "<{name}> drawn for {markdown:?}: {html}"
            );
            let mut rest = attributes.trim();
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").expect("a quoted value");
                let (value, after) = after.split_once('"').expect("a closed value");
                rest = after.trim_start();
                match key {
                    "href" => assert!(
                        ["http://", "https://", "/"]
                            .iter()
                            .any(|start| value.starts_with(start)),
                        "href {value:?} drawn for {markdown:?}: {html}"
                    ),
                    "rel" => assert_eq!(value, "noopener noreferrer nofollow"),
                    "class" => assert_eq!(value, "cite"),
                    "start" => {}
                    _ => panic!("attribute {key} drawn for {markdown:?}: {html}"),
                }
            }
        }
    }

    #[test]
    fn a_script_is_shown_as_text_and_never_run() {
        check(
            "<script>alert(1)</script>",
            "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre>\n",
        );
        check(
            "Hi <script>document.title = 'pwned'</script> there",
            "<p>Hi &lt;script&gt;document.title = 'pwned'&lt;/script&gt; there</p>\n",
        );
        check_inert("<script>alert(1)</script>");
        check_inert("Hi <script>alert(1)</script> there");
    }

    #[test]
    fn raw_html_of_every_kind_is_inert() {
        check(
            "<img src=x onerror=alert(1)>",
            "<pre><code>&lt;img src=x onerror=alert(1)&gt;</code></pre>\n",
        );
        check(
            "see <img src=x onerror=alert(1)> here",
            "<p>see &lt;img src=x onerror=alert(1)&gt; here</p>\n",
        );
        for markdown in [
            "<img src=x onerror=alert(1)>",
            "<style>body { display: none }</style>",
            "<iframe src=\"https://example.com\"></iframe>",
            "text <b onmouseover=\"alert(1)\">bold</b>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<div style=\"position:fixed\">over</div>",
            "<svg onload=alert(1)></svg>",
            "<form action=/logout method=post><button>x</button></form>",
            "<!-- <script>alert(1)</script> -->",
            "<meta http-equiv=refresh content=\"0;url=https://example.com\">",
        ] {
            check_inert(markdown);
        }
    }

    #[test]
    fn generics_in_prose_stay_readable() {
        check(
            "Return a Vec<String> here.",
            "<p>Return a Vec&lt;String&gt; here.</p>\n",
        );
    }

    #[test]
    fn links_keep_only_web_and_relative_addresses() {
        check("[x](javascript:alert(1))", "<p>x</p>\n");
        check("[x](JaVaScRiPt:alert(1))", "<p>x</p>\n");
        check("[x](java&#9;script:alert(1))", "<p>x</p>\n");
        check("[x](data:text/html,hi)", "<p>x</p>\n");
        check("<mailto:a@example.com>", "<p>mailto:a@example.com</p>\n");
        check("<a@example.com>", "<p>a@example.com</p>\n");
        check(
            "[docs](https://example.com/a?b=1&c=2)",
            "<p><a href=\"https://example.com/a?b=1&amp;c=2\" rel=\"noopener noreferrer nofollow\">docs</a></p>\n",
        );
        check(
            "[task](/tasks/abc)",
            "<p><a href=\"/tasks/abc\" rel=\"noopener noreferrer nofollow\">task</a></p>\n",
        );
        check(
            "<http://example.com>",
            "<p><a href=\"http://example.com\" rel=\"noopener noreferrer nofollow\">http://example.com</a></p>\n",
        );
        for markdown in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](java&#9;script:alert(1))",
            "[x]\n\n[x]: javascript:alert(1)",
            "[x](data:text/html;base64,PHNjcmlwdD4=)",
        ] {
            check_inert(markdown);
        }
    }

    #[test]
    fn images_become_links_or_their_alt_text() {
        check(
            "![a chart](https://example.com/chart.png)",
            "<p><a href=\"https://example.com/chart.png\" rel=\"noopener noreferrer nofollow\">a chart</a></p>\n",
        );
        check(
            "![](https://example.com/chart.png)",
            "<p><a href=\"https://example.com/chart.png\" rel=\"noopener noreferrer nofollow\">https://example.com/chart.png</a></p>\n",
        );
        check("![a chart](javascript:alert(1))", "<p>a chart</p>\n");
        check(
            "[![badge](https://example.com/b.svg)](https://example.com/ci)",
            "<p><a href=\"https://example.com/ci\" rel=\"noopener noreferrer nofollow\">badge</a></p>\n",
        );
        check_inert("![x](https://example.com/x.png)");
        check_inert("![x\" onerror=\"alert(1)](https://example.com/x.png)");
    }

    #[test]
    fn headings_nest_under_the_pages_own() {
        check("# Plan", "<h3>Plan</h3>\n");
        check("## Steps", "<h4>Steps</h4>\n");
        check("### Detail", "<h5>Detail</h5>\n");
        check(
            "#### Finer\n\n###### Finest",
            "<h6>Finer</h6>\n<h6>Finest</h6>\n",
        );
    }

    #[test]
    fn lists_quotes_and_emphasis_are_drawn() {
        check(
            "- one\n- **two**\n- *three* ~~four~~",
            "<ul>\n<li>one</li>\n<li><strong>two</strong></li>\n<li><em>three</em> <del>four</del></li>\n</ul>\n",
        );
        check(
            "3. third\n4. fourth",
            "<ol start=\"3\">\n<li>third</li>\n<li>fourth</li>\n</ol>\n",
        );
        check(
            "> quoted `code`",
            "<blockquote>\n<p>quoted <code>code</code></p>\n</blockquote>\n",
        );
    }

    #[test]
    fn fenced_code_keeps_its_text_and_drops_its_class() {
        check(
            "```rust\nfn main() { println!(\"<hi>\"); }\n```",
            "<pre><code>fn main() { println!(\"&lt;hi&gt;\"); }\n</code></pre>\n",
        );
    }

    #[test]
    fn tables_are_drawn_without_inline_styles() {
        check(
            "| a | b |\n| :-- | --: |\n| 1 | 2 |",
            "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody>\n<tr><td>1</td><td>2</td></tr>\n</tbody></table>\n",
        );
    }

    #[test]
    fn a_citation_with_a_source_links_to_it() {
        check_with(
            "Tokio says so [1], and [2] too.",
            &[(1, "https://tokio.rs/docs"), (2, "http://example.com/a\"b")],
            "<p>Tokio says so <a href=\"https://tokio.rs/docs\" class=\"cite\" rel=\"noopener noreferrer nofollow\">[1]</a>, and <a href=\"http://example.com/a&quot;b\" class=\"cite\" rel=\"noopener noreferrer nofollow\">[2]</a> too.</p>\n",
        );
    }

    #[test]
    fn a_citation_without_a_web_source_stays_text() {
        check_with(
            "No source [3], not a number [x], not canonical [01], empty [].",
            &[(1, "https://tokio.rs/docs")],
            "<p>No source [3], not a number [x], not canonical [01], empty [].</p>\n",
        );
        check("Without sources [1].", "<p>Without sources [1].</p>\n");
        check_with(
            "A bad scheme [1].",
            &[(1, "javascript:alert(1)")],
            "<p>A bad scheme [1].</p>\n",
        );
    }

    #[test]
    fn citations_in_code_and_links_stay_as_written() {
        check_with(
            "`a[1]` and [see [1]](https://example.com)\n\n    b[1]",
            &[(1, "https://tokio.rs/docs")],
            "<p><code>a[1]</code> and <a href=\"https://example.com\" rel=\"noopener noreferrer nofollow\">see [1]</a></p>\n<pre><code>b[1]</code></pre>\n",
        );
    }

    #[test]
    fn a_reply_of_every_kind_together() {
        let reply = "# Plan\n\nI will:\n\n1. read `main.rs` [1]\n2. run <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1))\n\n```sh\ncargo test\n```\n\n| step | done |\n| --- | --- |\n| read | yes |\n";
        check_with(
            reply,
            &[(1, "https://doc.rust-lang.org/")],
            "<h3>Plan</h3>\n<p>I will:</p>\n<ol>\n<li>read <code>main.rs</code> <a href=\"https://doc.rust-lang.org/\" class=\"cite\" rel=\"noopener noreferrer nofollow\">[1]</a></li>\n<li>run &lt;script&gt;alert(1)&lt;/script&gt;</li>\n</ol>\n<pre><code>&lt;img src=x onerror=alert(1)&gt;\n</code></pre>\n<p>x</p>\n<pre><code>cargo test\n</code></pre>\n<table><thead><tr><th>step</th><th>done</th></tr></thead><tbody>\n<tr><td>read</td><td>yes</td></tr>\n</tbody></table>\n",
        );
        check_inert(reply);
    }

    #[test]
    fn the_sanitizer_alone_holds_should_the_first_layer_slip() {
        let html = "<h1 onclick=\"x()\">t</h1><script>alert(1)</script><style>p{}</style><img src=x onerror=alert(1)><a href=\"javascript:alert(1)\" class=\"cite evil\" target=_blank>x</a><p style=\"color:red\" id=p>y</p><iframe src=\"https://example.com\"></iframe><code class=\"language-rust\">z</code>";
        assert_eq!(
            SANITIZER.clean(html).to_string(),
            "t<a class=\"cite\" rel=\"noopener noreferrer nofollow\">x</a><p>y</p><code>z</code>"
        );
    }
}

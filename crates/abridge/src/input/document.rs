//! Reading the documents people actually have: plain text and Markdown, HTML
//! and PDF, told apart by their content rather than their file name.
//!
//! HTML is reduced to its readable text: scripts, styles, navigation, headers,
//! footers and forms are dropped, and when the page marks its main content
//! (`<main>` or `<article>`) only that is kept. PDF gives its text layer
//! (a scanned PDF without one is an error that says so).

use super as input;
use crate::error::{Error, Result};

/// The kinds of document abridge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text or Markdown (passed to the model as written).
    Text,
    /// An HTML page.
    Html,
    /// A PDF file with a text layer.
    Pdf,
}

/// Recognises a document's format from its first bytes.
///
/// ```
/// use abridge::input::{Format, detect};
/// assert_eq!(detect(b"%PDF-1.7\n..."), Format::Pdf);
/// assert_eq!(detect(b"  <!DOCTYPE html><html>..."), Format::Html);
/// assert_eq!(detect(b"# A heading\n\nSome *Markdown*."), Format::Text);
/// ```
pub fn detect(bytes: &[u8]) -> Format {
    if bytes.starts_with(b"%PDF-") {
        return Format::Pdf;
    }
    let head = &bytes[..bytes.len().min(1024)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let start = head.trim_start_matches('\u{feff}').trim_start();
    let markup = ["<!doctype html", "<html", "<head", "<body"];
    if markup.iter().any(|m| start.starts_with(m))
        || (start.starts_with('<') && markup.iter().any(|m| head.contains(m)))
    {
        return Format::Html;
    }
    Format::Text
}

/// The text of a document in any [`Format`], detected from its content.
pub fn extract(bytes: &[u8]) -> Result<String> {
    match detect(bytes) {
        Format::Text => input::decode(bytes),
        Format::Html => Ok(html_text(&input::decode(bytes)?)),
        Format::Pdf => pdf_text(bytes),
    }
}

fn pdf_text(bytes: &[u8]) -> Result<String> {
    // The PDF crate can panic on malformed files; a bad document must be an
    // error, never a crash.
    let text = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes))
        .map_err(|_| Error::Document("the PDF is malformed and could not be read".into()))?
        .map_err(|e| {
            let e = e.to_string();
            // The crate reports a password it could not supply as a decryption
            // failure; what the user needs to hear is that the file is locked.
            if e.contains("decrypt") || e.contains("password") {
                Error::Document(
                    "the PDF is encrypted (password-protected); save a decrypted copy first".into(),
                )
            } else {
                Error::Document(format!("cannot read the PDF: {e}"))
            }
        })?;
    let text = tidy(&text);
    if text.trim().is_empty() {
        return Err(Error::Document(
            "the PDF has no text layer (a scan?); run it through OCR first".into(),
        ));
    }
    Ok(text)
}

/// Elements whose content is never the document's text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template", "svg",
    "button", "select", "head",
];

/// Elements that end a line of text.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "section",
    "article",
    "main",
    "dt",
    "dd",
    "dl",
    "hr",
    "title",
];

/// The readable text of an HTML page.
pub fn html_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    // Prefer the element the page marks as its content.
    let body = ["<main", "<article"]
        .iter()
        .find_map(|tag| {
            let start = lower.find(tag)?;
            let name = &tag[1..];
            let end = lower.rfind(&format!("</{name}")).filter(|&e| e > start)?;
            Some(&html[start..end])
        })
        .unwrap_or(html);
    tidy(&strip_tags(body))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut skip: Option<String> = None;
    while let Some(lt) = rest.find('<') {
        if skip.is_none() {
            out.push_str(&decode_entities(&rest[..lt]));
        }
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match &skip {
            Some(open) => {
                if closing && *open == name {
                    skip = None;
                }
            }
            None => {
                if !closing && !tag.ends_with('/') && SKIPPED.contains(&name.as_str()) {
                    skip = Some(name);
                } else if BLOCKS.contains(&name.as_str()) {
                    out.push('\n');
                } else if name == "td" || name == "th" {
                    out.push(' ');
                }
            }
        }
    }
    if skip.is_none() {
        out.push_str(&decode_entities(rest));
    }
    out
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest[1..].find(';').filter(|&n| n <= 10).and_then(|n| {
            let name = &rest[1..=n];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                "copy" => Some('©'),
                "reg" => Some('®'),
                "mdash" => Some('—'),
                "ndash" => Some('–'),
                "hellip" => Some('…'),
                "lsquo" => Some('‘'),
                "rsquo" => Some('’'),
                "ldquo" => Some('“'),
                "rdquo" => Some('”'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, n + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Collapses runs of spaces within lines and of blank lines between them.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_drops_scripts_styles_and_navigation() {
        let page = "<html><head><title>T</title><style>p{}</style></head><body>\
            <nav><a href=/>Home</a></nav><script>var x = '<p>';</script>\
            <p>First &amp; second.</p><p>Caf&eacute; &#233;t&#xE9;</p>\
            <footer>© footer</footer></body></html>";
        assert_eq!(html_text(page), "First & second.\n\nCaf&eacute; été");
    }

    #[test]
    fn html_keeps_only_the_main_content_when_marked() {
        let page = "<body><div>menu</div><main><h1>Title</h1><p>Body text.</p></main><div>ads</div></body>";
        assert_eq!(html_text(page), "Title\n\nBody text.");
    }

    #[test]
    fn broken_markup_does_not_panic() {
        for page in [
            "<",
            "<p",
            "<!-- never closed",
            "<script>no end",
            "&#xFFFFFFFF; &#;",
            "<<>>",
        ] {
            let _ = html_text(page);
        }
    }

    #[test]
    fn detection_looks_at_content() {
        assert_eq!(
            detect(b"\xEF\xBB\xBF<html><body>x</body></html>"),
            Format::Html
        );
        assert_eq!(
            detect(b"<?xml version=\"1.0\"?>\n<html xmlns=\"...\">"),
            Format::Html
        );
        assert_eq!(detect(b"1 < 2 and 3 > 2"), Format::Text);
        assert_eq!(detect(b""), Format::Text);
    }

    #[test]
    fn a_malformed_pdf_is_an_error() {
        let err = extract(b"%PDF-1.4\n%garbage that is no PDF").unwrap_err();
        assert!(err.to_string().contains("PDF"), "{err}");
    }
}

//! Text shown to an operator's terminal. Organization names and failure
//! reasons come from tenants (names, CSV contents, error messages quoting
//! them); printed raw, an ESC sequence, a carriage return or a bidi override
//! could repaint the screen or forge lines of output. Every human-readable
//! output passes such text through [`escape_for_terminal`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character (C0, DEL, C1), every bidirectional
/// formatting character and the backslash escaped Rust-style (`\n`, `\r`,
/// `\t`, `\\`, `\u{1b}`), so the result is one line that shows exactly what
/// the text holds. Text without such characters is returned as is.
pub fn escape_for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An error and its causes on one line, `outer: cause: root cause`, escaped
/// for the terminal. A cause whose text the previous message already ends
/// with is left out: sqlx and redis errors repeat their I/O source in their
/// own message, which `{:#}` would print twice.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut previous = line.clone();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !previous.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        previous = text;
        cause = e.source();
    }
    escape_for_terminal(&line).into_owned()
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_bidi_control(c)
}

/// Unicode's explicit directional formatting characters (the "Trojan
/// Source" set): they reorder how the rest of a line is displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: String,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(message: &str, source: Option<Layer>) -> Layer {
        Layer {
            message: message.into(),
            source: source.map(Box::new),
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = layer("Connection refused (os error 111)", None);
        let sqlx = layer(
            "error communicating with database: Connection refused (os error 111)",
            Some(io),
        );
        let ours = layer(
            "could not connect to PostgreSQL at postgres://db/x",
            Some(sqlx),
        );
        assert_eq!(
            error_chain(&ours),
            "could not connect to PostgreSQL at postgres://db/x: \
             error communicating with database: Connection refused (os error 111)"
        );
        let bad = layer("bad row", Some(layer("value 'x\u{1b}[2J'", None)));
        assert!(!error_chain(&bad).contains('\u{1b}'));
    }

    #[test]
    fn control_and_bidi_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(
            escape_for_terminal("Acme Énergie 42"),
            Cow::Borrowed("Acme Énergie 42")
        ));
        assert_eq!(
            escape_for_terminal("evil\u{1b}[2J\rok\nFAKE\tx\u{7f}\u{9b}"),
            "evil\\u{1b}[2J\\rok\\nFAKE\\tx\\u{7f}\\u{9b}"
        );
        assert_eq!(
            escape_for_terminal("a\u{202e}b\u{2066}"),
            "a\\u{202e}b\\u{2066}"
        );
        // A backslash is escaped too, so `\n` in a name is not mistaken for a newline.
        assert_eq!(escape_for_terminal("a\\nb"), "a\\\\nb");
        let shown = escape_for_terminal("x\u{0}\u{1f}\u{85}y");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
    }
}

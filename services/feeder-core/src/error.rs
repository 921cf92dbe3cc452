//! The crate's one error type.

/// Errors from loading registry and key files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Lines of a JSON Lines file are malformed: `(1-based line number, reason)` each.
    #[error("{}", format_lines(file, lines))]
    Invalid {
        file: String,
        lines: Vec<(usize, String)>,
    },
    /// The file could not be read at all.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn format_lines(file: &str, lines: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (i, (n, reason)) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{file}: line {n}: {reason}"));
    }
    out
}

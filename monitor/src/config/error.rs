//! [`ConfigError`], and how an error is placed at its file, line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why the configuration could not be loaded. Each variant displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The reason is part of the message too, so that printing
    /// the error alone (`{e}`) tells the whole story.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file given with `--config`.
        path: PathBuf,
        /// Why it could not be read: missing, not readable, not UTF-8.
        source: std::io::Error,
    },
    /// A value in the file or on the command line is wrong.
    #[error(fmt = fmt_invalid)]
    Invalid {
        /// The file, or `None` for a flag (or a string given without a file name).
        path: Option<PathBuf>,
        /// 1-based line in the file.
        line: Option<usize>,
        /// 1-based column in the file, in characters.
        column: Option<usize>,
        /// The TOML key path (`devices."00:16:3e:00:00:01".name`, `lan[1]`), or the flag
        /// (`--poll-interval`); empty for a TOML syntax error.
        key: String,
        /// What is wrong, including the offending value.
        message: String,
    },
    /// Neither the file nor the flags name a LAN interface, so there is nothing to monitor.
    #[error(
        "no LAN interface to monitor: set lan = [\"br-lan\"] in the configuration file \
         or pass --lan <IFACE>"
    )]
    NoLanInterface,
}

/// `FILE:LINE:COLUMN: KEY: MESSAGE`, the form compilers use, so editors can jump to it; parts
/// that are unknown are left out.
fn fmt_invalid(
    path: &Option<PathBuf>,
    line: &Option<usize>,
    column: &Option<usize>,
    key: &str,
    message: &str,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match (path, line) {
        (Some(path), Some(line)) => {
            write!(f, "{}:{line}", path.display())?;
            if let Some(column) = column {
                write!(f, ":{column}")?;
            }
            f.write_str(": ")?;
        }
        (Some(path), None) => write!(f, "{}: ", path.display())?,
        (None, Some(line)) => {
            write!(f, "line {line}")?;
            if let Some(column) = column {
                write!(f, ", column {column}")?;
            }
            f.write_str(": ")?;
        }
        (None, None) => {}
    }
    if !key.is_empty() {
        write!(f, "{key}: ")?;
    }
    // One line, whatever a dependency's message looks like.
    f.write_str(&message.replace('\n', " "))
}

impl ConfigError {
    pub(super) fn flag(flag: &str, message: String) -> Self {
        ConfigError::Invalid {
            path: None,
            line: None,
            column: None,
            key: flag.to_owned(),
            message,
        }
    }

    pub(super) fn in_file(
        src: &str,
        path: Option<&Path>,
        span: Option<Range<usize>>,
        key: String,
        message: String,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_column(src, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Invalid {
            path: path.map(Path::to_path_buf),
            line,
            column,
            key,
            message,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset, as editors count them.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Finds where a top-level key's value is written, for errors found after deserialization.
pub(super) fn locate_top_level_value(src: &str, key: &str) -> Option<Range<usize>> {
    let doc = toml::de::DeTable::parse(src).ok()?;
    doc.get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, value)| value.span())
}

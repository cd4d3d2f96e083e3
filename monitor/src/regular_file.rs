//! Reading a file a user names (the configuration, lease files, the state file, a database),
//! whatever the path turns out to be: never blocking on it, never reading without bound.
//!
//! The file is opened with `O_NONBLOCK`, so a FIFO or a device does not wait for a writer at
//! `open`; it must then be a regular file (a FIFO, directory, device or socket is an error
//! naming what it is), and it is read up to a limit, one byte past which is an error: a file
//! that grows while it is read still cannot make the agent hold more than the limit.

use std::{
    fs::{File, FileType, Metadata},
    io::{self, Read},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("too large: {size} bytes or more, the limit is {limit}")]
    TooLarge { size: u64, limit: u64 },
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        match e {
            FileError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// The contents of the regular file at `path`, at most `limit` bytes, and its metadata as
/// opened.
pub fn read(path: &Path, limit: u64) -> Result<(Vec<u8>, Metadata), FileError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular(describe(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    // The size is a hint: the file may grow while it is read, never past the limit.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok((bytes, meta))
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let (bytes, _) = read(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        FileError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()),
        ))
    })
}

/// What a non-regular file is, for an error message.
pub fn describe(kind: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("egress-regular-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_fifo_a_directory_and_a_device_are_refused_at_once() {
        let dir = scratch("kinds");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (dir.as_path(), "a directory"),
            (Path::new("/dev/zero"), "a device"),
        ] {
            let err = read(path, 1024).unwrap_err();
            assert!(
                matches!(err, FileError::NotRegular(k) if k == kind),
                "{path:?}: {err}"
            );
        }
        // Nothing waited for a writer.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_past_the_limit_is_refused_and_one_at_it_is_read() {
        let dir = scratch("sizes");
        let path = dir.join("f");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(read(&path, 100).unwrap().0.len(), 100);
        assert!(matches!(
            read(&path, 99),
            Err(FileError::TooLarge {
                size: 100,
                limit: 99
            })
        ));
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(
            read_text(&path, 10)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

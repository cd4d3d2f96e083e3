//! The state writer: one thread writes the state file, so that a slow or failing disk never
//! holds up a poll, and writes happen one at a time in the order their texts were taken (an
//! older text never replaces a newer file).

use std::{io, path::PathBuf};

use crossbeam_channel::{Receiver, Sender};

/// One write: the file's text and, for a caller that waits, where to say how it went.
pub struct WriteJob {
    pub text: String,
    pub done: Option<Sender<io::Result<()>>>,
}

/// Writes every job into `dir` until the sending side is dropped; `wrote` hears each outcome.
pub fn run(dir: PathBuf, jobs: Receiver<WriteJob>, wrote: impl Fn(bool)) {
    for job in jobs {
        let result = super::state_file::write(&dir, &job.text);
        if let Err(e) = &result {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the state file");
        }
        wrote(result.is_ok());
        if let Some(done) = job.done {
            let _ = done.send(result);
        }
    }
}

//! What outlives the process: the state directory's lock, the state file (baselines and
//! first-seen times), the control socket the live agent answers on, and the `baseline`
//! command that talks to it (or edits the file when no agent runs).

pub mod baseline;
pub mod control;
pub mod lock;
pub mod protocol;
pub mod state_file;
pub mod writer;

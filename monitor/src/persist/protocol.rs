//! The control protocol: one JSON line each way on `control.sock` in the state directory,
//! between the `baseline` command and the running agent.

use serde::{Deserialize, Serialize};

/// The control socket, in the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// A request, one JSON line on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Show { device: String },
    Accept { device: String, destination: String },
    Forget { device: String },
}

/// The answer: what to print, or why not.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub text: String,
}

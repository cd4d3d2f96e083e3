//! The agent's control socket: `egress-monitor baseline ...` requests, one JSON line each,
//! applied to the live state and written to the state file at once.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    persist::baseline::{self, CONTROL_SOCKET, Request, Response},
    runtime::state::{self, Shared},
    types::MacAddr,
};

/// Longest request line: a device and a destination.
const MAX_REQUEST: u64 = 4096;

/// The listening socket; removed when dropped.
pub struct Control {
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `control.sock` in `dir` (owner-only) and serves requests on a thread. The caller
/// holds the directory's lock, so a socket file left there is a dead agent's.
pub fn serve(dir: &Path, shared: Shared) -> std::io::Result<Control> {
    let path = dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &shared, &dir) {
                            tracing::debug!(error = %e, "control request failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket"),
                }
            }
        })?;
    Ok(Control { path })
}

fn answer(stream: UnixStream, shared: &Shared, dir: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response {
            ok: false,
            text: format!("malformed request: {e}"),
        },
        Ok(request) => match handle(&request, shared, dir) {
            Ok(text) => Response { ok: true, text },
            Err(text) => Response { ok: false, text },
        },
    };
    let mut out = serde_json::to_string(&response).expect("a response serializes");
    out.push('\n');
    (&stream).write_all(out.as_bytes())
}

fn handle(request: &Request, shared: &Shared, dir: &Path) -> Result<String, String> {
    let (text, changed) = {
        let mut guard = shared.write().expect("state lock");
        let state = &mut *guard;
        let mut macs: Vec<MacAddr> = state.naming.devices.known().into_iter().collect();
        macs.extend(state.ledger.devices().map(|(id, _)| id.mac));
        macs.extend(state.policy.records().keys());
        let candidates = macs
            .into_iter()
            .map(|mac| {
                let name = state
                    .naming
                    .devices
                    .name(mac)
                    .map(|(n, _)| n.to_owned())
                    .or_else(|| state.policy.record(mac).and_then(|r| r.name.clone()));
                (mac, name)
            })
            .collect();
        let devices = &state.naming.devices;
        let group = |mac: MacAddr| devices.group(mac).map(str::to_owned);
        baseline::execute(&mut state.policy, request, candidates, &group)?
    };
    if changed {
        tracing::info!(?request, "baseline changed");
        state::save(shared, dir, true)
            .map_err(|e| format!("{text}but the state file could not be written: {e}"))?;
    }
    Ok(text)
}

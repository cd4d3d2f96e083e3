//! `egress-monitor detach`: what to run before uninstalling, since a stopped agent's programs
//! go on counting. It removes the pinned links (which detaches TCX programs), deletes our clsact
//! filters from every hook device of the configured LAN interfaces, and removes the pinned maps.

use std::path::Path;

use aya::programs::{TcAttachType, tc};

use crate::kernel::{
    hooks::{Sysfs, hook_devices},
    loader::{PROGRAM_LAN_EGRESS, PROGRAM_LAN_INGRESS},
    pins::{PinDir, PinError},
};

/// What was removed, for the user.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detached {
    pub links: usize,
    pub filters: usize,
}

/// Detaches everything under `pin_dir` and every filter of ours on the hooks of `lan`.
pub fn detach(lan: &[String], pin_dir: Option<&Path>) -> Result<Detached, String> {
    let mut detached = Detached::default();
    for device in lan.iter().flat_map(|l| hook_devices(&Sysfs, l)) {
        for (attach_type, name) in [
            (TcAttachType::Ingress, PROGRAM_LAN_INGRESS),
            (TcAttachType::Egress, PROGRAM_LAN_EGRESS),
        ] {
            match tc::qdisc_detach_program(&device, attach_type, name) {
                Ok(()) => detached.filters += 1,
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                // No clsact qdisc, or the device is gone: nothing of ours there.
                Err(tc::TcError::NetlinkError(_)) => {}
                Err(e) => return Err(format!("{device}: cannot remove the filter {name}: {e}")),
            }
        }
    }
    if let Some(dir) = pin_dir.filter(|d| d.exists()) {
        let pins = PinDir::usable(dir)
            .ok_or_else(|| format!("pin_dir {} is not on a bpf filesystem", dir.display()))?;
        detached.links = pins.remove_all().map_err(|e: PinError| e.to_string())?;
    }
    Ok(detached)
}

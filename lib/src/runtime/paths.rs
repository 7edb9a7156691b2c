//! Paths of a world's runtime files, and the names derived from the store
//! and the world: container id, cgroup and veth interface.

use std::path::{Path, PathBuf};

use crate::name::WorldName;

/// The start of the name of the host's end of a world's veth pair.
pub(crate) const HOST_INTERFACE_PREFIX: &str = "wv";

/// The runtime paths and names of one world.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// `STORE/run/NAME`: removed when the world stops.
    pub dir: PathBuf,
    /// The OCI bundle: `config.json`.
    pub bundle: PathBuf,
    /// `STORE/run/containers`: libcontainer's state directories.
    pub containers: PathBuf,
    /// Files bind-mounted read-only over the world's own.
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The run plan ([`super::RunInfo`]) that the monitor reads.
    pub plan: PathBuf,
    /// `STORE/logs`.
    pub logs: PathBuf,
    /// The monitor's log, `STORE/logs/NAME.log`, kept after the world stops.
    pub log: PathBuf,
    /// `worlds-HASH-NAME`: the container id and the cgroup's name. HASH
    /// comes from the store's path, so that two stores' worlds differ.
    pub container_id: String,
    /// The host's end of the veth pair: `wv` and 8 hex digits, within the
    /// 15 bytes that interface names allow.
    pub host_interface: String,
}

impl RunPaths {
    /// Returns the paths of world `name` in the store at `store_dir`, which
    /// must be absolute because libcontainer changes the working directory.
    pub fn new(store_dir: &Path, name: &WorldName) -> Self {
        let run = store_dir.join("run");
        let dir = run.join(name.as_str());
        let logs = store_dir.join("logs");
        let store_hash = fnv1a(store_dir.as_os_str().as_encoded_bytes());
        let world_hash = fnv1a(format!("{store_hash:016x}/{name}").as_bytes());
        Self {
            bundle: dir.join("bundle"),
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            plan: dir.join("plan.json"),
            containers: run.join("containers"),
            log: logs.join(format!("{name}.log")),
            logs,
            dir,
            container_id: format!("worlds-{:08x}-{name}", store_hash as u32),
            host_interface: format!("{HOST_INTERFACE_PREFIX}{:08x}", world_hash as u32),
        }
    }
}

/// Returns the cgroup path of container `container_id`, relative to each
/// hierarchy's root.
pub(crate) fn cgroup_path(container_id: &str) -> String {
    format!("/{container_id}")
}

/// Returns the 64-bit FNV-1a hash of `bytes`, which is the same on every
/// build and machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_by_store_and_world() {
        let web = WorldName::new("web").unwrap();
        let db = WorldName::new("db").unwrap();
        let a = RunPaths::new(Path::new("/var/lib/worlds"), &web);
        let b = RunPaths::new(Path::new("/srv/worlds"), &web);
        let c = RunPaths::new(Path::new("/var/lib/worlds"), &db);
        assert_ne!(a.container_id, b.container_id);
        assert_ne!(a.host_interface, b.host_interface);
        assert_ne!(a.host_interface, c.host_interface);
        assert!(a.container_id.ends_with("-web"));
        assert!(a.host_interface.len() <= 15);
        assert_eq!(a.log, Path::new("/var/lib/worlds/logs/web.log"));
    }
}

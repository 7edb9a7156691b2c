//! The OCI runtime spec (`config.json`) of a world's container.

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};
use libcontainer::oci_spec::OciSpecError;

use super::paths::{cgroup_path, RunPaths};
use super::{NetworkMode, RunInfo};
use crate::name::WorldName;

/// The PATH of init and of commands run without one of their own.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The period of the CPU limit, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// The capabilities of root in a world: Docker's default set, enough to
/// install packages and run services, without the ones that reach the host
/// (module loading, raw I/O, mounts, system time, ...).
const CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Returns the content of the world's `/etc/hosts`.
pub(crate) fn hosts_file(name: &WorldName, address: Option<Ipv4Addr>) -> String {
    let own = address.map_or_else(|| "127.0.1.1".to_owned(), |address| address.to_string());
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{name}\n")
}

/// Builds the spec of world `name`, whose root filesystem is `root`.
pub(crate) fn build(
    name: &WorldName,
    root: &Path,
    paths: &RunPaths,
    info: &RunInfo,
) -> Result<Spec, OciSpecError> {
    let mut spec = Spec::default();
    spec.set_hostname(Some(name.to_string()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(root.to_path_buf())
            .readonly(false)
            .build()?,
    ));

    let capabilities: HashSet<Capability> = CAPABILITIES.iter().copied().collect();
    let process = ProcessBuilder::default()
        // Init runs Rust code in place of an exec (see `init`); the spec
        // still needs a command, which names it.
        .args(vec!["worlds-init".to_owned()])
        .env(vec![format!("PATH={DEFAULT_PATH}")])
        .cwd(PathBuf::from("/"))
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .no_new_privileges(false)
        .capabilities(
            // The inheritable and ambient sets are empty, as the builder's
            // defaults are not: ambient capabilities would stay with a
            // command that `world exec -u` runs as another user.
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        // No rlimits: init inherits the monitor's, as processes of the
        // host do from theirs.
        .rlimits(vec![])
        .build()?;
    spec.set_process(Some(process));

    // libcontainer 0.7 mounts the cgroup v1 hierarchies read-write even
    // when the spec asks for `ro`, and root in the world could then raise
    // its own limits. Without the mount, /sys/fs/cgroup is an empty
    // directory of the read-only sysfs.
    let mut mounts: Vec<_> = spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|mount| mount.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    let files = [
        (&paths.hostname, "/etc/hostname"),
        (&paths.hosts, "/etc/hosts"),
        (&paths.resolv_conf, "/etc/resolv.conf"),
    ];
    for (source, target) in files {
        // Mounting over a file that is missing, or a symlink, would create
        // or follow it in the world.
        let in_world = root.join(target.trim_start_matches('/'));
        let is_file = fs::symlink_metadata(&in_world).is_ok_and(|meta| meta.is_file());
        if !is_file {
            continue;
        }
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(target))
                .typ("bind")
                .source(source.clone())
                .options(vec![
                    "bind".into(),
                    "ro".into(),
                    "nosuid".into(),
                    "nodev".into(),
                ])
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));

    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<_, _>>()?;
    if info.network != NetworkMode::Host {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        );
    }

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = info.limits.memory {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(i64::try_from(bytes).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    if let Some(pids) = info.limits.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    if let Some(cpus) = info.limits.cpus {
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD)
                .build()?,
        );
    }
    // Without a rule, the devices cgroup lets the world open every device,
    // the host's disks included, through nodes that CAP_MKNOD makes. After
    // this rule libcontainer allows only its defaults (null, zero, full,
    // random, urandom, tty, ptmx and the pty devices).
    let deny_all_devices = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let default_linux = spec.linux().clone().unwrap_or_default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroup_path(&info.container_id)))
        .resources(resources.devices(vec![deny_all_devices]).build()?)
        .masked_paths(default_linux.masked_paths().clone().unwrap_or_default())
        .readonly_paths(default_linux.readonly_paths().clone().unwrap_or_default())
        .build()?;
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Limits;

    fn info(network: NetworkMode, limits: Limits) -> RunInfo {
        RunInfo {
            network,
            limits,
            address: None,
            host_interface: None,
            gateway: None,
            container_id: "worlds-00000000-web".into(),
            track: true,
        }
    }

    fn namespace_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        let linux = spec.linux().as_ref().unwrap();
        linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|namespace| namespace.typ())
            .collect()
    }

    #[test]
    fn network_namespace_only_off_host() {
        let name = WorldName::new("web").unwrap();
        let paths = RunPaths::new(Path::new("/store"), &name);
        let root = Path::new("/nonexistent-root");
        for (network, has_netns) in [
            (NetworkMode::Host, false),
            (NetworkMode::None, true),
            (NetworkMode::Veth, true),
        ] {
            let spec = build(&name, root, &paths, &info(network, Limits::default())).unwrap();
            let types = namespace_types(&spec);
            assert_eq!(
                types.contains(&LinuxNamespaceType::Network),
                has_netns,
                "{network}"
            );
            assert!(types.contains(&LinuxNamespaceType::Pid));
            assert_eq!(spec.hostname().as_deref(), Some("web"));
            assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        }
    }

    #[test]
    fn limits_reach_resources() {
        let name = WorldName::new("web").unwrap();
        let paths = RunPaths::new(Path::new("/store"), &name);
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(50),
            cpus: Some(0.5),
        };
        let spec = build(
            &name,
            Path::new("/nonexistent-root"),
            &paths,
            &info(NetworkMode::Host, limits),
        )
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let resources = linux.resources().as_ref().unwrap();
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 50);
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/worlds-00000000-web"))
        );
    }

    #[test]
    fn missing_etc_files_not_mounted() {
        let name = WorldName::new("web").unwrap();
        let paths = RunPaths::new(Path::new("/store"), &name);
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/hosts"), "").unwrap();
        std::os::unix::fs::symlink("/run/resolv.conf", root.path().join("etc/resolv.conf"))
            .unwrap();
        let spec = build(
            &name,
            root.path(),
            &paths,
            &info(NetworkMode::Host, Limits::default()),
        )
        .unwrap();
        let targets: Vec<PathBuf> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|mount| mount.typ().as_deref() == Some("bind"))
            .map(|mount| mount.destination().clone())
            .collect();
        assert_eq!(targets, [PathBuf::from("/etc/hosts")]);
    }
}

//! Options of how a world runs, shared by the commands that start worlds
//! and by `create`, which stores them.

use worlds::runtime::{Limits, NetworkMode, RunConfig, StartOptions, Subnet};

use super::Context;

/// Run settings of a world: network and resource limits.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Network: `host` shares the host's, `none` has only loopback, `veth`
    /// has its own address from --subnet on a veth pair to the host
    /// [default: the world's stored setting, else host].
    #[arg(long, value_name = "MODE")]
    pub network: Option<NetworkMode>,
    /// Memory limit, such as `256M` or `2G`; at least 4M.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Maximum number of processes and threads in the world at once, from
    /// 1 to 4194304.
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..=MAX_PIDS))]
    pub pids: Option<u64>,
    /// CPU time as a number of CPUs, such as `0.5` or `2`; at least 0.01.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Do not record which files the world reads, writes and executes
    /// (`world set`); merge then cannot check for read-write conflicts.
    #[arg(long, conflicts_with = "track")]
    pub no_track: bool,
    /// Record the world's accesses, where `--no-track` was stored.
    #[arg(long)]
    pub track: bool,
}

/// Options of the commands that start worlds.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The subnet that veth addresses come from.
    #[arg(
        long,
        value_name = "CIDR",
        env = "WORLDS_SUBNET",
        default_value = "10.213.0.0/24"
    )]
    pub subnet: Subnet,
}

impl RunArgs {
    /// Returns whether any of these options is given.
    pub fn any_set(&self) -> bool {
        self.network.is_some() || self.limits() != Limits::default() || self.tracking().is_some()
    }

    /// Returns whether to track accesses, if these options choose.
    pub fn tracking(&self) -> Option<bool> {
        match (self.track, self.no_track) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// Returns the limits that these options set.
    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.memory,
            pids: self.pids,
            cpus: self.cpus,
        }
    }

    /// Returns `stored` with the options that are set replaced.
    pub fn apply_to(&self, stored: RunConfig) -> RunConfig {
        RunConfig {
            network: self.network.unwrap_or(stored.network),
            limits: stored.limits.overridden_by(self.limits()),
            track: self.tracking().unwrap_or(stored.track),
        }
    }
}

impl StartArgs {
    /// Returns the start options, with the monitor command of `context`.
    pub fn options(&self, context: &Context) -> anyhow::Result<StartOptions> {
        Ok(StartOptions {
            network: self.run.network,
            limits: self.run.limits(),
            track: self.run.tracking(),
            subnet: self.subnet,
            monitor: context.monitor_command()?,
        })
    }
}

/// The largest pid limit: Linux's PID_MAX_LIMIT on 64-bit machines.
const MAX_PIDS: u64 = 4_194_304;
/// The smallest memory limit; less leaves a world's init no room.
const MIN_MEMORY: u64 = 4 << 20;
/// The smallest CPU share: 1 ms of CPU time per 100 ms period, the
/// smallest quota that the kernel accepts.
const MIN_CPUS: f64 = 0.01;

fn parse_memory(text: &str) -> Result<u64, String> {
    let bytes = super::init::parse_size(text).map_err(|error| error.to_string())?;
    if bytes < MIN_MEMORY {
        return Err(format!("memory limit `{text}` is below the minimum of 4M"));
    }
    Ok(bytes)
}

fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cpus) if cpus >= MIN_CPUS && cpus.is_finite() => Ok(cpus),
        _ => Err(format!(
            "`{text}` is not a number of CPUs from 0.01 up, such as 0.5 or 2"
        )),
    }
}

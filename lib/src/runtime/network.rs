//! A world's network: the host's (`host`), loopback only (`none`), or a
//! network namespace joined to the host by a veth pair (`veth`).
//!
//! A veth world gets one address of the subnet as a /32. The host's end of
//! every pair carries the subnet's first address, which is each world's
//! gateway, and the host routes each world's address to its pair. So worlds
//! never share a link, and parent and child can each serve the same port on
//! their own address. The interfaces are set up with iproute2's `ip`, run in
//! the world's network namespace through util-linux's `nsenter`.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;

/// Network mode of a world.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A network namespace of its own with only loopback.
    None,
    /// A network namespace of its own with a veth pair to the host.
    Veth,
}

impl FromStr for NetworkMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            "veth" => Ok(Self::Veth),
            _ => Err(format!("unknown network `{text}`; use host, none or veth")),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::None => "none",
            Self::Veth => "veth",
        })
    }
}

/// An IPv4 subnet that veth addresses come from, such as `10.213.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// The subnet of veth worlds when none is given.
pub const DEFAULT_SUBNET: Subnet = Subnet {
    network: Ipv4Addr::new(10, 213, 0, 0),
    prefix: 24,
};

impl Subnet {
    /// Returns the host's address on every veth pair: the first one.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Returns the lowest address after the gateway that is not in `taken`
    /// and not the broadcast address.
    pub fn free_address(&self, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let base = u32::from(self.network);
        let size = 1u64 << (32 - u32::from(self.prefix));
        (2..size.saturating_sub(1))
            .map(|offset| Ipv4Addr::from(base + offset as u32))
            .find(|address| !taken.contains(address))
    }
}

impl Default for Subnet {
    fn default() -> Self {
        DEFAULT_SUBNET
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{text}` is not an IPv4 subnet such as 10.213.0.0/24");
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "subnet `{text}` must have a prefix length from 8 to 30"
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(address) & !mask != 0 {
            return Err(format!(
                "`{text}` has host bits set; give the network address, such as {}/{prefix}",
                Ipv4Addr::from(u32::from(address) & mask)
            ));
        }
        let subnet = Self {
            network: address,
            prefix,
        };
        if !PRIVATE_RANGES.iter().any(|range| range.contains(&subnet)) {
            return Err(format!(
                "subnet `{text}` is not a private range; give one inside 10.0.0.0/8, \
                 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10"
            ));
        }
        Ok(subnet)
    }
}

/// The IPv4 ranges for private networks (RFC 1918) and shared address
/// space (RFC 6598), where veth subnets must lie.
const PRIVATE_RANGES: [Subnet; 4] = [
    Subnet {
        network: Ipv4Addr::new(10, 0, 0, 0),
        prefix: 8,
    },
    Subnet {
        network: Ipv4Addr::new(172, 16, 0, 0),
        prefix: 12,
    },
    Subnet {
        network: Ipv4Addr::new(192, 168, 0, 0),
        prefix: 16,
    },
    Subnet {
        network: Ipv4Addr::new(100, 64, 0, 0),
        prefix: 10,
    },
];

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Returns whether `other` lies wholly inside this subnet.
    fn contains(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.network) & self.mask() == u32::from(self.network)
    }

    /// Returns whether this subnet and the network `destination` with mask
    /// `mask` share an address.
    fn overlaps(&self, destination: u32, mask: u32) -> bool {
        let common = self.mask() & mask;
        u32::from(self.network) & common == destination & common
    }

    /// Returns the first route of the host's main table, other than the
    /// default route and the routes to veth worlds, whose network shares an
    /// address with this subnet, as `NETWORK/MASK dev INTERFACE`, read from
    /// `/proc/net/route`.
    pub fn host_route_overlap(&self) -> std::io::Result<Option<String>> {
        let table = std::fs::read_to_string("/proc/net/route")?;
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(interface), Some(destination), Some(mask)) =
                (fields.first(), fields.get(1), fields.get(7))
            else {
                continue;
            };
            // The kernel prints each address, held in network byte order,
            // as a native u32 in hex.
            let parse = |hex: &str| {
                let native = u32::from_str_radix(hex, 16).ok()?;
                Some(u32::from_be_bytes(native.to_ne_bytes()))
            };
            let (Some(destination), Some(mask)) = (parse(destination), parse(mask)) else {
                continue;
            };
            if mask == 0 || interface.starts_with(super::paths::HOST_INTERFACE_PREFIX) {
                continue;
            }
            if self.overlaps(destination, mask) {
                return Ok(Some(format!(
                    "{}/{} dev {interface}",
                    Ipv4Addr::from(destination),
                    mask.count_ones()
                )));
            }
        }
        Ok(None)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Errors of setting up a world's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("run `{command}`")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Runs `program args` and fails with its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), NetworkError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetworkError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetworkError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Runs `ip args` in the network namespace of process `pid`.
fn ip_in(pid: i32, args: &[&str]) -> Result<(), NetworkError> {
    let net = format!("--net=/proc/{pid}/ns/net");
    let mut full = vec![net.as_str(), "ip"];
    full.extend_from_slice(args);
    run("nsenter", &full)
}

/// Brings up loopback in the network namespace of process `pid`.
pub(crate) fn setup_loopback(pid: i32) -> Result<(), NetworkError> {
    ip_in(pid, &["link", "set", "lo", "up"])
}

/// Creates the veth pair `host_interface` to `eth0` in the namespace of
/// process `pid` and gives it `address`, with `gateway` on the host's end.
pub(crate) fn setup_veth(
    pid: i32,
    host_interface: &str,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let pid_text = pid.to_string();
    let address = address.to_string();
    let gateway = gateway.to_string();
    let world_route = format!("{address}/32");
    run(
        "ip",
        &[
            "link",
            "add",
            host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid_text,
        ],
    )?;
    let host_gateway = format!("{gateway}/32");
    run("ip", &["addr", "add", &host_gateway, "dev", host_interface])?;
    run("ip", &["link", "set", host_interface, "up"])?;
    run("ip", &["route", "add", &world_route, "dev", host_interface])?;

    setup_loopback(pid)?;
    ip_in(pid, &["addr", "add", &world_route, "dev", "eth0"])?;
    ip_in(pid, &["link", "set", "eth0", "up"])?;
    ip_in(pid, &["route", "add", &gateway, "dev", "eth0"])?;
    ip_in(
        pid,
        &["route", "add", "default", "via", &gateway, "dev", "eth0"],
    )?;
    Ok(())
}

/// Deletes the host's end of a veth pair if it is still there. The kernel
/// deletes the pair by itself when the world's network namespace goes.
pub(crate) fn remove_veth(host_interface: &str) {
    let exists = std::path::Path::new("/sys/class/net")
        .join(host_interface)
        .exists();
    if exists {
        if let Err(error) = run("ip", &["link", "delete", host_interface]) {
            tracing::warn!(interface = host_interface, error = %error, "delete a veth pair");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parsing() {
        let cases = [
            ("10.213.0.0/24", Ok("10.213.0.0/24")),
            ("192.168.77.0/28", Ok("192.168.77.0/28")),
            ("10.213.0.1/24", Err("host bits")),
            ("10.213.0.0/31", Err("prefix length")),
            ("10.213.0.0", Err("not an IPv4 subnet")),
            ("fd00::/64", Err("not an IPv4 subnet")),
            ("127.0.0.0/8", Err("not a private range")),
            ("192.0.2.0/24", Err("not a private range")),
            ("224.0.0.0/24", Err("not a private range")),
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
        ];
        for (text, expected) in cases {
            match (text.parse::<Subnet>(), expected) {
                (Ok(subnet), Ok(shown)) => assert_eq!(subnet.to_string(), shown, "{text}"),
                (Err(error), Err(part)) => assert!(error.contains(part), "{text}: {error}"),
                (result, expected) => panic!("{text}: got {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn overlap_with_routes() {
        let subnet: Subnet = "10.213.0.0/24".parse().unwrap();
        let route = |a: u8, b: u8, c: u8, prefix: u32| {
            (
                u32::from(Ipv4Addr::new(a, b, c, 0)),
                u32::MAX << (32 - prefix),
            )
        };
        let (wider, mask) = route(10, 0, 0, 8);
        assert!(subnet.overlaps(wider, mask));
        let (inside, mask) = route(10, 213, 0, 28);
        assert!(subnet.overlaps(inside, mask));
        let (apart, mask) = route(10, 214, 0, 24);
        assert!(!subnet.overlaps(apart, mask));
    }

    #[test]
    fn addresses_skip_gateway_taken_and_broadcast() {
        let subnet: Subnet = "10.213.0.0/30".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(subnet.free_address(&[]), Some(Ipv4Addr::new(10, 213, 0, 2)));
        assert_eq!(subnet.free_address(&[Ipv4Addr::new(10, 213, 0, 2)]), None);
        let wide = DEFAULT_SUBNET;
        let taken = [Ipv4Addr::new(10, 213, 0, 2), Ipv4Addr::new(10, 213, 0, 3)];
        assert_eq!(
            wide.free_address(&taken),
            Some(Ipv4Addr::new(10, 213, 0, 4))
        );
    }
}

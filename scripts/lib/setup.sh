# Shared setup for the scripts: checks for root and Rust, and installs
# missing Debian packages. Meant to be sourced, not run.

# The oldest Rust that builds worlds (rust-version in Cargo.toml).
readonly WORLDS_MIN_RUST=1.85

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $(basename "$0") must run as root: worlds manages btrfs pools, loop devices and mounts" >&2
        echo "hint: run it with sudo" >&2
        exit 2
    fi
}

# Installs the named Debian packages that are not installed yet, running
# `apt-get update` first only when something is missing.
ensure_packages() {
    local missing=()
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -c 'ok installed' >/dev/null; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Fails with instructions when cargo is missing or older than the minimum.
require_rust() {
    if [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null; then
        echo "error: cargo not found; worlds needs Rust $WORLDS_MIN_RUST or newer" >&2
        echo "hint: install Rust with rustup (https://rustup.rs); Debian 12's own cargo is too old" >&2
        exit 2
    fi
    local version
    version=$(cargo --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$WORLDS_MIN_RUST" "$version" | sort -V | head -n 1)" != "$WORLDS_MIN_RUST" ]; then
        echo "error: cargo $version is older than the $WORLDS_MIN_RUST that worlds needs" >&2
        echo "hint: update it with \`rustup update stable\`" >&2
        exit 2
    fi
}

# Packages that running worlds needs.
# iproute2 and util-linux's nsenter set up the network of veth worlds.
readonly WORLDS_RUNTIME_PACKAGES=(btrfs-progs busybox-static debootstrap tar gzip xz-utils zstd bzip2 iproute2 util-linux)
# Packages that building worlds needs; libcontainer links libseccomp.
readonly WORLDS_BUILD_PACKAGES=(gcc pkg-config libseccomp-dev)
# Packages that the tests use to make and inspect files and drive a
# terminal.
readonly WORLDS_TEST_PACKAGES=(acl attr libcap2-bin util-linux python3 findutils tmux)

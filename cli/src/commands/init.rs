use std::path::PathBuf;
use std::time::Instant;

use worlds::rootfs::RootSource;
use worlds::{Store, WorldName};

use super::{report_cleanups, Context};
use crate::ui;

/// Path of the busybox binary that `--busybox` copies (Debian's busybox-static).
const BUSYBOX_BINARY: &str = "/bin/busybox";

/// Creates a root world from a root filesystem, and the store if it has none.
///
/// Give exactly one source. Where the store directory is not on btrfs, the
/// first `init` creates a sparse pool image in it, formats it as btrfs and
/// mounts it; later commands mount it again after a reboot by themselves.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .args(["busybox", "from_dir", "from_tar", "debootstrap"])
))]
pub struct Args {
    /// Name of the new root world.
    name: WorldName,
    /// Build a minimal root around the host's static busybox (Debian package
    /// busybox-static).
    #[arg(long)]
    busybox: bool,
    /// Copy a host directory, keeping owners, modes, times, xattrs, ACLs, hard
    /// links and special files; reflinks where it is on the pool's btrfs.
    #[arg(long, value_name = "DIR")]
    from_dir: Option<PathBuf>,
    /// Unpack a tar archive, plain or compressed with gzip, bzip2, xz or zstd,
    /// such as `docker export` output; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    from_tar: Option<PathBuf>,
    /// Build a Debian root with `debootstrap --variant=minbase SUITE`, for
    /// example `bookworm`.
    #[arg(long, value_name = "SUITE", value_parser = parse_suite)]
    debootstrap: Option<String>,
    /// Size of the pool image, when this command creates the store outside
    /// btrfs, such as `20G` [default: a quarter of the free space, from 2 GiB
    /// to 64 GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pool_size: Option<u64>,
    /// Print the new world as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let source = if args.busybox {
        RootSource::Busybox {
            binary: BUSYBOX_BINARY.into(),
        }
    } else if let Some(dir) = args.from_dir {
        RootSource::Directory(absolute(dir))
    } else if let Some(file) = args.from_tar {
        RootSource::Tar(if file.as_os_str() == "-" {
            file
        } else {
            absolute(file)
        })
    } else if let Some(suite) = args.debootstrap {
        RootSource::Debootstrap { suite }
    } else {
        unreachable!("clap requires one source");
    };

    let started = Instant::now();
    let created_store = !Store::exists(&context.store_dir);
    let (mut store, cleanups) = Store::create(&context.store_dir, args.pool_size)?;
    report_cleanups(&cleanups);
    if created_store {
        ui::status(
            context.quiet,
            format_args!("created store `{}`", context.store_dir.display()),
        );
    }
    store.set_crash_point(context.crash_point);
    let display = ui::ProgressDisplay::new(context.quiet || args.json);
    let record = store.create_root(&args.name, &source, &|progress| display.report(progress))?;
    drop(display);

    if args.json {
        ui::print_json(&store.details(&args.name)?)?;
    }
    ui::status(
        context.quiet,
        format_args!(
            "created root world `{}` in {}",
            record.name,
            ui::format_duration(started.elapsed())
        ),
    );
    Ok(ui::EXIT_OK)
}

/// Returns `path` made absolute, so that the record names it wherever the
/// command ran.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// Parses a size such as `20G` for clap.
pub fn parse_size(text: &str) -> Result<u64, worlds::size::InvalidSize> {
    worlds::size::parse(text)
}

/// Accepts a Debian suite or codename, such as `bookworm` or `stable`.
fn parse_suite(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a suite name; give one such as `bookworm` or `stable`"
        ))
    }
}

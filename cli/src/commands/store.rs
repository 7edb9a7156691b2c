use worlds::pool::PoolKind;
use worlds::size;

use super::Context;
use crate::ui;

/// Inspects and maintains the store's btrfs pool.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Info(InfoArgs),
    Grow(GrowArgs),
    Unmount(UnmountArgs),
}

/// Shows the pool: where it is, its size and how much is used.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Print the facts as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Grows the pool image while it stays mounted.
#[derive(Debug, clap::Args)]
pub struct GrowArgs {
    /// The new size, such as `40G`, or the amount to add, such as `+10G`.
    #[arg(value_name = "SIZE", allow_hyphen_values = false)]
    size: String,
}

/// Unmounts the pool image; the next command mounts it again by itself.
#[derive(Debug, clap::Args)]
pub struct UnmountArgs {}

pub fn run(command: Command, context: &Context) -> anyhow::Result<u8> {
    match command {
        Command::Info(args) => info(args, context),
        Command::Grow(args) => grow(args, context),
        Command::Unmount(UnmountArgs {}) => unmount(context),
    }
}

/// Facts printed by `world store info --json`.
#[derive(Debug, serde::Serialize)]
struct Info {
    store: std::path::PathBuf,
    #[serde(flatten)]
    pool: worlds::pool::PoolInfo,
    worlds: usize,
}

fn info(args: InfoArgs, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let info = Info {
        store: store.dir().into(),
        pool: store.pool_info()?,
        worlds: store.worlds()?.len(),
    };

    if args.json {
        ui::print_json(&info)?;
        return Ok(ui::EXIT_OK);
    }
    let pool = &info.pool;
    let location = match pool.kind {
        PoolKind::Direct => format!("directory {} on the store's btrfs", pool.mount.display()),
        PoolKind::Image => format!(
            "image {} on {}, mounted at {}",
            pool.image
                .as_deref()
                .unwrap_or(std::path::Path::new("?"))
                .display(),
            pool.device.as_deref().map_or_else(
                || "no loop device".into(),
                |device| device.display().to_string()
            ),
            pool.mount.display()
        ),
    };
    let percent = (pool.used * 100).checked_div(pool.size).unwrap_or(0);
    println!("store:     {}", info.store.display());
    println!("pool:      {location}");
    println!("size:      {}", size::format(pool.size));
    println!("used:      {} ({percent}%)", size::format(pool.used));
    println!("available: {}", size::format(pool.available));
    println!("worlds:    {}", info.worlds);
    Ok(ui::EXIT_OK)
}

fn grow(args: GrowArgs, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let current = store.pool_info()?;
    let image_size = current
        .image
        .as_deref()
        .and_then(|image| std::fs::metadata(image).ok())
        .map_or(current.size, |metadata| metadata.len());
    let new_size = match args.size.strip_prefix('+') {
        Some(added) => image_size.saturating_add(size::parse(added)?),
        None => size::parse(&args.size)?,
    };
    store.grow_pool(new_size)?;

    let grown = store.pool_info()?;
    ui::status(
        context.quiet,
        format_args!(
            "grew the pool from {} to {}",
            size::format(current.size),
            size::format(grown.size)
        ),
    );
    Ok(ui::EXIT_OK)
}

fn unmount(context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let lock = store.lock()?;
    if store.pool_info()?.kind == PoolKind::Direct {
        ui::status(
            context.quiet,
            "the pool is a directory on the store's btrfs; nothing to unmount",
        );
        return Ok(ui::EXIT_OK);
    }
    worlds::pool::unmount(store.dir())?;
    drop(lock);
    ui::status(context.quiet, "unmounted the pool");
    Ok(ui::EXIT_OK)
}

use super::{report_cleanups, Context};
use crate::ui;

/// Cleans up after interrupted commands and reports what it did.
///
/// Every command does this when it starts and no other command is running;
/// `recover` waits for the store lock and does it now. Interrupted merges
/// are completed or rolled back, and subvolumes without a record removed.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, context: &Context) -> anyhow::Result<u8> {
    let (mut store, mut cleanups) = worlds::Store::open(&context.store_dir)?;
    let lock = store.lock()?;
    cleanups.extend(store.reconcile()?);
    drop(lock);
    report_cleanups(&cleanups);
    if cleanups.is_empty() {
        ui::status(context.quiet, "nothing to recover");
    }
    Ok(ui::EXIT_OK)
}

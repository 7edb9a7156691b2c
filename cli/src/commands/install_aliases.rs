use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::aliases::ALIASES;
use crate::ui;

/// Links the seven seed names to this binary in DIR.
///
/// The names are `wcreate`, `wexec`, `wconsole`, `wdiff`, `wmerge`, `wdelete`
/// and `wset`. Each alias runs its `world` subcommand with the same arguments:
/// `wcreate CHILD PARENT` is `world create CHILD PARENT`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the links, such as /usr/local/bin.
    dir: PathBuf,
    /// Replace files of the same names that are not links to this binary.
    #[arg(short, long)]
    force: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let binary = std::env::current_exe()
        .and_then(|path| path.canonicalize())
        .context("find the path of this binary")?;
    if !args.dir.is_dir() {
        return Err(ui::UsageError {
            message: if args.dir.exists() {
                format!("`{}` is not a directory", args.dir.display())
            } else {
                format!("directory `{}` not found", args.dir.display())
            },
            hint: Some(
                "create it first, or name an existing directory such as /usr/local/bin".into(),
            ),
        }
        .into());
    }

    // Check every name before making any link, so that a conflict changes
    // nothing.
    let mut to_replace = Vec::new();
    for (alias, _) in ALIASES {
        let link = args.dir.join(alias);
        let Ok(existing) = std::fs::symlink_metadata(&link) else {
            continue;
        };
        let points_here = existing.file_type().is_symlink()
            && link.canonicalize().is_ok_and(|target| target == binary);
        if points_here {
            continue;
        }
        if !args.force {
            return Err(ui::UsageError {
                message: format!(
                    "`{}` already exists and is not a link to {}",
                    link.display(),
                    binary.display()
                ),
                hint: Some("add --force to replace it".into()),
            }
            .into());
        }
        to_replace.push(link);
    }

    for link in &to_replace {
        std::fs::remove_file(link).with_context(|| format!("remove `{}`", link.display()))?;
    }
    for (alias, subcommand) in ALIASES {
        let link = args.dir.join(alias);
        if link.canonicalize().is_ok_and(|target| target == binary) {
            continue;
        }
        std::os::unix::fs::symlink(&binary, &link)
            .with_context(|| format!("create link `{}`", link.display()))?;
        ui::status(
            context.quiet,
            format_args!("linked {} (world {subcommand})", link.display()),
        );
    }
    Ok(ui::EXIT_OK)
}

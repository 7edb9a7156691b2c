use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::ui;

/// Prints the man page of `world` on stdout, or writes one page per
/// subcommand into a directory.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write world.1 and a world-SUBCOMMAND.1 page per subcommand into DIR.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let command = super::Cli::command();
    match args.dir {
        Some(dir) => clap_mangen::generate_to(command, &dir)
            .with_context(|| format!("write man pages into `{}`", dir.display()))?,
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("write the man page")?,
    }
    Ok(ui::EXIT_OK)
}

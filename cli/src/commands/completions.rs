use clap::CommandFactory;

use crate::ui;

/// Prints a shell completion script for `world` on stdout.
///
/// For bash: `world completions bash > /etc/bash_completion.d/world`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "world", &mut std::io::stdout());
    Ok(ui::EXIT_OK)
}

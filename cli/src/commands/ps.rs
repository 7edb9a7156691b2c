use worlds::WorldName;

use super::list::print_table;
use super::Context;
use crate::ui;

/// Lists the processes of a running world.
///
/// PID and PPID are numbers in the world's pid namespace, where init is 1.
/// A PPID of 0 is a parent outside the world, such as `world exec`.
/// HOST-PID is the number in the host's pid namespace.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world whose processes to list.
    name: WorldName,
    /// Print the processes as JSON on stdout: an array of objects with
    /// `pid`, `host_pid`, `ppid`, `uid`, `state` and `command`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let processes = store.processes(&args.name)?;

    if args.json {
        ui::print_json(&processes)?;
        return Ok(ui::EXIT_OK);
    }
    let mut table = vec![["PID", "PPID", "UID", "STATE", "HOST-PID", "COMMAND"].map(String::from)];
    for process in &processes {
        table.push([
            process.pid.to_string(),
            process.ppid.to_string(),
            process.uid.to_string(),
            process.state.clone(),
            process.host_pid.to_string(),
            process.command.clone(),
        ]);
    }
    print_table(&table);
    Ok(ui::EXIT_OK)
}

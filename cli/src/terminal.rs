//! Commands on a terminal of their own: `world exec -t` and `world console`.

use worlds::runtime::ExecRequest;
use worlds::{Store, WorldName};

use crate::ui;

/// Runs `request` on a new pseudo-terminal in world `name`, joined to this
/// process's terminal, and returns the exit code.
pub fn run(_store: &Store, _name: &WorldName, _request: ExecRequest) -> anyhow::Result<u8> {
    // TODO: terminal commands are not implemented yet.
    Err(ui::UsageError {
        message: "terminal commands are not supported yet".into(),
        hint: Some("run the command without -t".into()),
    }
    .into())
}

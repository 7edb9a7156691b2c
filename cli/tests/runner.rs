//! Tests of the `world` binary as administrators run it: real stores on
//! loop-mounted btrfs pools, a cleared environment, normalized output
//! compared with snapshots. They need root; `scripts/test.sh` runs them.

mod common;
mod test_aliases;
mod test_commands;
mod test_diff;
mod test_failures;
mod test_merge;
mod test_runtime;
mod test_scenario;
mod test_track;

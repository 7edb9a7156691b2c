//! Integration tests against real btrfs pools on loop devices. They need
//! root; `scripts/test.sh` runs them.

mod common;
mod test_apply;
mod test_diff;
mod test_init;
mod test_merge;
mod test_runtime;
mod test_store;

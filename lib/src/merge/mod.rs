//! Applying a child's changes to its parent.
//!
//! [`plan`] decides, from both sides' changes since the child's base and the
//! child's read set, what to apply and what conflicts; [`apply`] carries the
//! steps out on a tree.

pub mod apply;
pub mod plan;
mod schedule;

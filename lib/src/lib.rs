//! The engine of worlds: git-like branches of whole running Linux systems.
//!
//! A world is a root filesystem, kept as a btrfs subvolume in a [`Store`],
//! plus the processes running in it. This crate manages stores and worlds;
//! it never writes to a terminal and never reads the environment, so the
//! `world` command passes everything in and renders what comes back.

pub mod db;
pub mod diff;
pub mod merge;
pub mod name;
pub mod path;
pub mod pool;
pub mod rootfs;
pub mod runtime;
pub mod size;
pub mod store;
pub mod sys;
pub mod track;

pub use name::WorldName;
pub use store::Store;

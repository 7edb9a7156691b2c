//! The seven seed names (`wcreate`, `wexec`, ...) that the `world` binary
//! responds to when it is called by one of them.

use std::ffi::OsString;
use std::path::Path;

/// Each alias and the `world` subcommand it runs. The alias takes the
/// subcommand's arguments in the same order, so `wcreate CHILD PARENT` is
/// `world create CHILD PARENT`.
pub const ALIASES: &[(&str, &str)] = &[
    ("wcreate", "create"),
    ("wexec", "exec"),
    ("wconsole", "console"),
    ("wdiff", "diff"),
    ("wmerge", "merge"),
    ("wdelete", "delete"),
    ("wset", "set"),
];

/// Returns the subcommand that the program name `argv0` is an alias of.
pub fn subcommand_of(argv0: &Path) -> Option<(&'static str, &'static str)> {
    let name = argv0.file_name()?.to_str()?;
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(alias, subcommand)| (*alias, *subcommand))
}

/// Rewrites the arguments of an alias call into those of `world`.
pub fn expand(args: Vec<OsString>, subcommand: &str) -> Vec<OsString> {
    let mut expanded = Vec::with_capacity(args.len() + 1);
    expanded.push(OsString::from("world"));
    expanded.push(OsString::from(subcommand));
    expanded.extend(args.into_iter().skip(1));
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names() {
        let cases = [
            ("wcreate", Some("create")),
            ("/usr/local/bin/wdelete", Some("delete")),
            ("./wexec", Some("exec")),
            ("world", None),
            ("wcreate2", None),
            ("", None),
        ];
        for (argv0, expected) in cases {
            let found = subcommand_of(Path::new(argv0)).map(|(_, subcommand)| subcommand);
            assert_eq!(found, expected, "argv[0] {argv0:?}");
        }
    }

    #[test]
    fn every_alias_names_a_subcommand() {
        use clap::CommandFactory;
        let command = crate::commands::Cli::command();
        for (alias, subcommand) in ALIASES {
            let found = command
                .get_subcommands()
                .any(|candidate| candidate.get_name() == *subcommand);
            assert!(found, "{alias} runs the missing subcommand {subcommand}");
        }
    }

    #[test]
    fn expand_keeps_argument_order() {
        let args = ["/bin/wcreate", "child", "parent"]
            .map(OsString::from)
            .to_vec();
        let expanded = expand(args, "create");
        assert_eq!(
            expanded,
            ["world", "create", "child", "parent"].map(OsString::from)
        );
    }
}

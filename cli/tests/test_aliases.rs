use std::path::Path;

use crate::common::{run, TestEnv, WORLD};

fn link(dir: &Path, alias: &str) -> std::path::PathBuf {
    let path = dir.join(alias);
    std::os::unix::fs::symlink(WORLD, &path).unwrap();
    path
}

#[test]
fn wcreate_and_wdelete_take_seed_order() {
    let env = TestEnv::new();
    env.init_busybox("Parent");
    let wcreate = link(env.folder(), "wcreate");
    let wdelete = link(env.folder(), "wdelete");

    let created = run(env.command(&wcreate).args(["Child1", "Parent"]));
    assert_eq!(created.code, 0, "{}", created.stderr);
    let show = env.world_ok(&["show", "Child1", "--json"]);
    assert!(
        show.stdout.contains("\"parent\": \"Parent\""),
        "{}",
        show.stdout
    );

    env.world_ok(&["create", "Other", "Parent"]);
    let refused = run(env.command(&wdelete).args(["Child1", "Other"]));
    assert_eq!(refused.code, 2);
    assert_eq!(
        refused.stderr,
        "error: world `Child1` is a child of `Parent`, not of `Other`\n"
    );
    let deleted = run(env.command(&wdelete).args(["Child1", "Parent"]));
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(deleted.stderr, "deleted world `Child1`\n");
}

#[test]
fn alias_help_is_the_subcommand_help() {
    let env = TestEnv::new();
    let wcreate = link(env.folder(), "wcreate");
    let help = run(env.command(&wcreate).arg("--help"));
    assert_eq!(help.code, 0);
    assert!(
        help.stdout
            .contains("Creates CHILD as a writable snapshot of PARENT"),
        "{}",
        help.stdout
    );
}

#[test]
fn wset_runs_world_set() {
    let env = TestEnv::new();
    env.init_busybox("Parent");
    let wset = link(env.folder(), "wset");
    let result = run(env.command(&wset).args(["Parent", "--json"]));
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(
        result.stdout.contains("\"world\": \"Parent\""),
        "{}",
        result.stdout
    );
}

#[test]
fn wexec_runs_world_exec() {
    let env = TestEnv::new();
    env.init_busybox("Parent");
    let wexec = link(env.folder(), "wexec");
    let result = run(env.command(&wexec).args(["Parent", "sh", "-c", "exit 5"]));
    assert_eq!(result.code, 5, "{}", result.stderr);
}

#[test]
fn install_aliases_links_all_seven() {
    let env = TestEnv::new();
    let bin = env.folder().join("bin");
    std::fs::create_dir(&bin).unwrap();
    env.world_ok(&["install-aliases", bin.to_str().unwrap()]);
    let binary = Path::new(WORLD).canonicalize().unwrap();
    for alias in [
        "wcreate", "wexec", "wconsole", "wdiff", "wmerge", "wdelete", "wset",
    ] {
        assert_eq!(bin.join(alias).canonicalize().unwrap(), binary, "{alias}");
    }
    // Running it again changes nothing and succeeds.
    let again = env.world_ok(&["install-aliases", bin.to_str().unwrap()]);
    assert_eq!(again.stderr, "");
}

#[test]
fn install_aliases_keeps_foreign_files() {
    let env = TestEnv::new();
    let bin = env.folder().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("wset"), "#!/bin/sh\n").unwrap();

    let refused = env.world(&["install-aliases", bin.to_str().unwrap()]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("wset` already exists"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("hint: add --force"),
        "{}",
        refused.stderr
    );
    // Nothing was linked.
    assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 1);

    env.world_ok(&["install-aliases", "--force", bin.to_str().unwrap()]);
    assert!(bin.join("wset").is_symlink());
    let missing = env.world(&[
        "install-aliases",
        env.folder().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(missing.code, 2);
}

#[test]
fn wconsole_is_world_console() {
    let env = TestEnv::new();
    let wconsole = link(env.folder(), "wconsole");
    let help = run(env.command(&wconsole).arg("--help"));
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("Opens an interactive login shell"),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout.contains("Alias: `wconsole NAME`"),
        "{}",
        help.stdout
    );
}

use std::process::Stdio;

use crate::common::{run, TestEnv, WORLD};

#[test]
fn invalid_names_rejected() {
    let env = TestEnv::new();
    env.init_busybox("base");
    for bad in ["-rf", "a/b", "..", "with space", "ünï", &"x".repeat(65)] {
        let result = env.world(&["create", "--", bad, "base"]);
        assert_eq!(result.code, 2, "name {bad:?}: {}", result.stderr);
        assert!(
            result.stderr.contains(&format!("world name `{bad}`")),
            "name {bad:?}: {}",
            result.stderr
        );
    }
    let list = env.world_ok(&["list", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn unknown_world_and_duplicate() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let missing = env.world(&["create", "child", "nope"]);
    assert_eq!(missing.code, 2);
    insta::assert_snapshot!(missing.stderr, @r"
    error: world `nope` not found
    hint: `world list` shows the worlds of this store
    ");
    let duplicate = env.world(&["init", "base", "--busybox"]);
    assert_eq!(duplicate.code, 2);
    insta::assert_snapshot!(duplicate.stderr, @r"
    error: world `base` already exists
    hint: choose another name, or remove the old world with `world delete base`
    ");
    let has_children = {
        env.world_ok(&["create", "child", "base"]);
        env.world(&["delete", "base"])
    };
    assert_eq!(has_children.code, 2);
    insta::assert_snapshot!(has_children.stderr, @r"
    error: world `base` has children: `child`
    hint: add --recursive to delete the children too
    ");
}

#[test]
fn no_store_yet() {
    let env = TestEnv::new();
    let result = env.world(&["list"]);
    assert_eq!(result.code, 2);
    assert_eq!(
        env.normalize(&result.stderr),
        "error: no store at `[TMP]/store`\nhint: create the store and its first world with `world init NAME --busybox`, or pick another store with --store\n"
    );
    assert!(!env.store.exists());
}

#[test]
fn init_needs_exactly_one_source() {
    let env = TestEnv::new();
    let none = env.world(&["init", "base"]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.contains("required arguments were not provided"),
        "{}",
        none.stderr
    );
    let two = env.world(&["init", "base", "--busybox", "--debootstrap", "bookworm"]);
    assert_eq!(two.code, 2);
    assert!(two.stderr.contains("cannot be used with"), "{}", two.stderr);
    let bad_suite = env.world(&["init", "base", "--debootstrap=-x"]);
    assert_eq!(bad_suite.code, 2);
    let bad_size = env.world(&["init", "base", "--busybox", "--pool-size", "lots"]);
    assert_eq!(bad_size.code, 2);
    assert!(
        bad_size.stderr.contains("invalid size `lots`"),
        "{}",
        bad_size.stderr
    );
    let small = env.world(&["init", "base", "--busybox", "--pool-size", "10M"]);
    assert_eq!(small.code, 2);
    assert!(
        small.stderr.contains("hint: give --pool-size 256M or more"),
        "{}",
        small.stderr
    );
    let missing_dir = env.world(&["init", "base", "--from-dir", "/nonexistent/dir"]);
    assert_eq!(missing_dir.code, 2);
    assert!(
        missing_dir
            .stderr
            .contains("source directory `/nonexistent/dir` not found"),
        "{}",
        missing_dir.stderr
    );
}

#[test]
fn not_root_rejected() {
    let env = TestEnv::new();
    let result = run(env.command("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        WORLD,
        "list",
    ]));
    assert_eq!(result.code, 125);
    assert_eq!(
        result.stderr,
        "error: worlds must run as root\nhint: run it as root, for example with sudo\n"
    );
}

#[test]
fn missing_btrfs_progs_named() {
    let env = TestEnv::new();
    let empty = env.folder().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let result = run(env.command(WORLD).env("PATH", &empty).args([
        "init",
        "base",
        "--busybox",
        "--pool-size",
        "1G",
    ]));
    assert_eq!(result.code, 125);
    assert!(
        result.stderr.contains("error: mkfs.btrfs is not installed"),
        "{}",
        result.stderr
    );
    assert!(
        result
            .stderr
            .contains("hint: install btrfs-progs: apt-get install btrfs-progs"),
        "{}",
        result.stderr
    );
    // Nothing half-made: no image, no mount; a later init works.
    assert!(!env.store.join("pool.img").exists());
    env.init_busybox("base");
}

#[test]
fn crash_after_snapshot_cleaned_up() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let crashed = run(env
        .command(WORLD)
        .env("WORLDS_TEST_CRASH_AT", "after-snapshot")
        .args(["create", "half", "base"])
        .stderr(Stdio::null()));
    assert_eq!(crashed.code, 128 + 6, "the command should abort");
    assert!(env.store.join("pool/worlds/half").exists());

    let list = env.world_ok(&["list"]);
    assert_eq!(
        list.stderr,
        "warning: removed `bases/half`, left in the pool by an interrupted command\n\
         warning: removed `worlds/half`, left in the pool by an interrupted command\n"
    );
    assert!(!list.stdout.contains("half"));
    assert!(!env.store.join("pool/worlds/half").exists());
    // The name is free again.
    env.world_ok(&["create", "half", "base"]);
}

#[test]
fn concurrent_creates_one_wins() {
    let env = TestEnv::new();
    env.init_busybox("base");
    for round in 0..5 {
        let name = format!("race{round}");
        let children: Vec<_> = (0..2)
            .map(|_| {
                env.command(WORLD)
                    .args(["create", &name, "base"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut results: Vec<_> = children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().unwrap();
                (
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                )
            })
            .collect();
        results.sort();
        assert_eq!(results[0].0, Some(0), "round {round}: {results:?}");
        assert_eq!(results[1].0, Some(2), "round {round}: {results:?}");
        assert!(
            results[1]
                .1
                .contains(&format!("world `{name}` already exists")),
            "{results:?}"
        );
    }
}

#[test]
fn init_keeps_foreign_pool_image() {
    let env = TestEnv::new();
    std::fs::create_dir_all(&env.store).unwrap();
    std::fs::write(env.store.join("pool.img"), "precious data").unwrap();
    let result = env.world(&["init", "root", "--busybox", "--pool-size", "1G"]);
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result
            .stderr
            .contains("exists, but the store has no database"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("hint: restore worlds.db"),
        "{}",
        result.stderr
    );
    let kept = std::fs::read_to_string(env.store.join("pool.img")).unwrap();
    assert_eq!(kept, "precious data");
}

#[test]
fn empty_database_refused() {
    let env = TestEnv::new();
    env.init_busybox("root");
    env.world_ok(&["create", "child", "root"]);
    std::fs::write(env.store.join("worlds.db"), "").unwrap();
    for file in ["worlds.db-wal", "worlds.db-shm"] {
        let _ = std::fs::remove_file(env.store.join(file));
    }
    let result = env.world(&["list"]);
    assert_eq!(result.code, 125, "{}", result.stderr);
    assert!(
        result
            .stderr
            .contains("is empty or is not a worlds database"),
        "{}",
        result.stderr
    );
    assert!(env.store.join("pool/worlds/child").exists());
    assert!(env.store.join("pool/worlds/root").exists());
}

#[test]
fn stray_file_in_pool_tolerated() {
    let env = TestEnv::new();
    env.init_busybox("root");
    std::fs::write(env.store.join("pool/worlds/junk"), "").unwrap();
    let list = env.world(&["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stderr
            .contains("`worlds/junk` in the pool belongs to no world"),
        "{}",
        list.stderr
    );
    assert!(env.store.join("pool/worlds/junk").exists());
    env.world_ok(&["create", "child", "root"]);
}

#[test]
fn diff_filters_normalized_or_rejected() {
    let env = TestEnv::new();
    env.init_busybox("root");
    env.world_ok(&["create", "child", "root"]);
    std::fs::write(env.store.join("pool/worlds/child/etc/motd"), "x").unwrap();
    let dotted = env.world(&["diff", "child", "--", "./etc"]);
    assert_eq!((dotted.code, dotted.stdout.as_str()), (0, "A\t/etc/motd\n"));
    let escaping = env.world(&["diff", "--exit-code", "child", "--", "/bin/../etc"]);
    assert_eq!(escaping.code, 2);
    assert!(
        escaping.stderr.contains("path `/bin/../etc` contains `..`"),
        "{}",
        escaping.stderr
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let env = TestEnv::new();
    env.init_busybox("root");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = env
        .command(WORLD)
        .args(["completions", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(13), "{:?}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn from_tar_reads_pipes() {
    let env = TestEnv::new();
    let source = env.folder().join("src");
    std::fs::create_dir_all(source.join("etc")).unwrap();
    std::fs::write(source.join("etc/hostname"), "piped\n").unwrap();
    let script = format!(
        "{WORLD} init piped --pool-size 1G --from-tar <(tar --create --file=- --directory {} .)",
        source.display()
    );
    let result = run(env.command("bash").args(["-c", &script]));
    assert_eq!(result.code, 0, "{}", result.stderr);
    let hostname = env.store.join("pool/worlds/piped/etc/hostname");
    assert_eq!(std::fs::read_to_string(hostname).unwrap(), "piped\n");
    let directory = env.world(&["init", "dir", "--from-tar", env.folder().to_str().unwrap()]);
    assert_eq!(directory.code, 2);
    assert!(
        directory.stderr.contains("is a directory; use --from-dir"),
        "{}",
        directory.stderr
    );
}

#[test]
fn oversized_pool_leaves_nothing() {
    let env = TestEnv::new();
    let result = env.world(&["init", "root", "--busybox", "--pool-size", "1000T"]);
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result.stderr.contains("larger than the"),
        "{}",
        result.stderr
    );
    assert!(!env.store.exists());
}

#[test]
fn store_inside_pool_refused() {
    let env = TestEnv::new();
    env.init_busybox("root");
    let inner = env.store.join("pool/tmp/inner");
    let result = run(env.command(WORLD).args([
        "--store",
        inner.to_str().unwrap(),
        "init",
        "x",
        "--busybox",
    ]));
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result.stderr.contains("is inside the pool of the store"),
        "{}",
        result.stderr
    );
    assert!(!inner.exists());
}

use std::fs;

use crate::common::{run, TestEnv, WORLD};

/// Makes `base` and a child `child` with a few changes of each kind.
fn changed_child(env: &TestEnv) -> std::path::PathBuf {
    env.init_busybox("base");
    env.world_ok(&["create", "child", "base"]);
    let root = env.store.join("pool/worlds/child");
    fs::write(root.join("etc/motd"), "hello\n").unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::remove_file(root.join("bin/ls")).unwrap();
    fs::set_permissions(
        root.join("etc/group"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let awkward: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"tmp/new\nline\xff");
    fs::write(root.join(awkward), "").unwrap();
    root
}

#[test]
fn name_status_output() {
    let env = TestEnv::new();
    changed_child(&env);
    let diff = env.world_ok(&["diff", "child"]);
    insta::assert_snapshot!(diff.stdout, @r#"
    D	/bin/ls
    m	/etc/group
    A	/etc/motd
    M	/etc/passwd
    A	"/tmp/new\nline\377"
    "#);
    assert_eq!(diff.stderr, "");
}

#[test]
fn stat_and_patch_output() {
    let env = TestEnv::new();
    changed_child(&env);
    let stat = env.world_ok(&["diff", "--stat", "child"]);
    insta::assert_snapshot!(stat.stdout, @r#"
     D /bin/ls              | symlink
     m /etc/group           | 27 B -> 27 B
     A /etc/motd            | 6 B
     M /etc/passwd          | 82 B -> 30 B
     A "/tmp/new\nline\377" | 0 B
     5 changes: 2 added, 1 modified, 1 deleted, 1 metadata-only; 6 B more, 52 B less in regular files
    "#);
    let patch = env.world_ok(&["diff", "--patch", "child", "--", "/etc/motd", "etc/passwd"]);
    insta::assert_snapshot!(patch.stdout, @r"
    A /etc/motd
    --- a/etc/motd
    +++ b/etc/motd
    @@ -0,0 +1 @@
    +hello
    M /etc/passwd
    --- a/etc/passwd
    +++ b/etc/passwd
    @@ -1,2 +1 @@
     root:x:0:0:root:/root:/bin/sh
    -nobody:x:65534:65534:nobody:/nonexistent:/bin/false
    ");
}

#[test]
fn nul_and_json_keep_raw_bytes() {
    let env = TestEnv::new();
    changed_child(&env);
    let output = env
        .command(WORLD)
        .args(["diff", "-z", "child", "--", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(output.stdout, b"A\0/tmp/new\nline\xff\0");

    let json = env.world_ok(&["diff", "--json", "child", "--", "/tmp", "/etc/motd"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["world"], "child");
    assert_eq!(value["parent"], "base");
    let changes = value["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["path"], "/etc/motd");
    assert_eq!(changes[0]["kind"], "added");
    assert_eq!(changes[0]["before"], serde_json::Value::Null);
    assert_eq!(changes[0]["after"]["type"], "regular");
    assert_eq!(changes[0]["after"]["size"], 6);
    assert_eq!(changes[0]["after"]["mode"], 0o644);
    // "/tmp/new\nline\xff" in base64.
    assert_eq!(
        changes[1]["path"],
        serde_json::json!({ "base64": "L3RtcC9uZXcKbGluZf8=" })
    );
    assert!(value.get("parent_changes").is_none());
}

#[test]
fn exit_code_and_empty_diff() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["create", "child", "base"]);
    let empty = env.world(&["diff", "--exit-code", "child"]);
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    fs::write(env.store.join("pool/worlds/child/etc/motd"), "x").unwrap();
    let changed = env.world(&["diff", "--exit-code", "child"]);
    assert_eq!(changed.code, 1);
    assert_eq!(changed.stdout, "A\t/etc/motd\n");
    let without_flag = env.world(&["diff", "child"]);
    assert_eq!(without_flag.code, 0);
}

#[test]
fn parent_changes_section() {
    let env = TestEnv::new();
    changed_child(&env);
    fs::write(
        env.store.join("pool/worlds/base/etc/profile"),
        "changed later\n",
    )
    .unwrap();
    let diff = env.world_ok(&["diff", "--parent", "child", "--", "/etc"]);
    insta::assert_snapshot!(diff.stdout, @r"
    # changes of `child` since its base
    m	/etc/group
    A	/etc/motd
    M	/etc/passwd

    # changes of parent `base` since the base of `child`
    M	/etc/profile
    ");
    let json = env.world_ok(&["diff", "--parent", "--json", "child", "--", "/etc/profile"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["changes"], serde_json::json!([]));
    assert_eq!(value["parent_changes"][0]["path"], "/etc/profile");
}

#[test]
fn full_walk_agrees() {
    let env = TestEnv::new();
    changed_child(&env);
    let fast = env.world_ok(&["diff", "child"]);
    let walk = env.world_ok(&["diff", "--full-walk", "child"]);
    assert_eq!(fast.stdout, walk.stdout);
}

#[test]
fn wdiff_checks_parent() {
    let env = TestEnv::new();
    changed_child(&env);
    let bin = env.folder().join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(WORLD, bin.join("wdiff")).unwrap();
    let ok = run(env
        .command(bin.join("wdiff"))
        .args(["child", "base", "--", "/etc/motd"]));
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "A\t/etc/motd\n"));
    let wrong = run(env.command(bin.join("wdiff")).args(["child", "child"]));
    assert_eq!(wrong.code, 2);
    assert_eq!(
        wrong.stderr,
        "error: world `child` is a child of `base`, not of `child`\n"
    );
    let root = env.world(&["diff", "base"]);
    assert_eq!(root.code, 2);
    assert!(
        root.stderr
            .starts_with("error: world `base` is a root world"),
        "{}",
        root.stderr
    );
}

#[test]
fn patch_ignores_base_symlink_escape() {
    let env = TestEnv::new();
    // The base reaches a host folder through `leak`; the child replaces the
    // symlink with a folder holding the same names.
    let outside = env.folder().join("outside");
    fs::create_dir_all(outside.join("etc")).unwrap();
    fs::write(outside.join("etc/hostname"), "host secret\n").unwrap();
    env.init_busybox("base");
    std::os::unix::fs::symlink(&outside, env.store.join("pool/worlds/base/leak")).unwrap();
    env.world_ok(&["create", "child", "base"]);
    let root = env.store.join("pool/worlds/child");
    fs::remove_file(root.join("leak")).unwrap();
    fs::create_dir_all(root.join("leak/etc")).unwrap();
    fs::write(root.join("leak/etc/hostname"), "world\n").unwrap();

    let patch = env.world_ok(&["diff", "--patch", "child"]);
    insta::assert_snapshot!(patch.stdout, @r"
    T /leak
    A /leak/etc
    A /leak/etc/hostname
    --- a/leak/etc/hostname
    +++ b/leak/etc/hostname
    @@ -0,0 +1 @@
    +world
    ");
}

#[test]
fn patch_quotes_names_and_skips_large_files() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["create", "child", "base"]);
    let root = env.store.join("pool/worlds/child");
    let awkward: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"tmp/a\nb\x1b[31m");
    fs::write(root.join(awkward), "text\n").unwrap();
    // diff(1) would read all 20 MiB of this sparse file into memory.
    fs::File::create(root.join("tmp/large"))
        .unwrap()
        .set_len(20 << 20)
        .unwrap();

    let patch = env.world_ok(&["diff", "--patch", "child"]);
    insta::assert_snapshot!(patch.stdout, @r#"
    A "/tmp/a\nb\033[31m"
    --- "a/tmp/a\nb\033[31m"
    +++ "b/tmp/a\nb\033[31m"
    @@ -0,0 +1 @@
    +text
    A /tmp/large
    Files a/tmp/large and b/tmp/large differ; they are over 16.0 MiB and not shown
    "#);
}

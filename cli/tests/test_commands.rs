use crate::common::TestEnv;

#[test]
fn help_lists_commands_and_exit_codes() {
    let env = TestEnv::new();
    let help = env.world_ok(&["--help"]);
    insta::assert_snapshot!(help.stdout);
}

#[test]
fn create_help_names_alias() {
    let env = TestEnv::new();
    let help = env.world_ok(&["create", "--help"]);
    assert!(
        help.stdout.contains("Alias: `wcreate CHILD PARENT`"),
        "{}",
        help.stdout
    );
}

#[test]
fn lifecycle_of_a_small_tree() {
    let env = TestEnv::new();
    let init = env.world_ok(&["init", "base", "--busybox", "--pool-size", "1G"]);
    assert_eq!(init.stdout, "");
    insta::assert_snapshot!(env.normalize(&init.stderr), @r"
    created store `[TMP]/store`
    created root world `base` in [DURATION]
    ");
    env.world_ok(&["create", "web", "base"]);
    env.world_ok(&["create", "web-fix", "web"]);
    env.world_ok(&["create", "db", "base"]);

    let list = env.world_ok(&["list"]);
    insta::assert_snapshot!(env.normalize(&list.stdout), @r"
    NAME     PARENT  STATE    CREATED
    base     -       stopped  [TIME]
    db       base    stopped  [TIME]
    web      base    stopped  [TIME]
    web-fix  web     stopped  [TIME]
    ");
    let tree = env.world_ok(&["tree"]);
    insta::assert_snapshot!(tree.stdout, @r"
    base─┬─db
         └─web───web-fix
    ");
    let show = env.world_ok(&["show", "web-fix"]);
    insta::assert_snapshot!(env.normalize(&show.stdout), @r"
    name:     web-fix
    parent:   web
    children: -
    state:    stopped
    created:  [TIME] (operation 4)
    source:   snapshot of its parent
    path:     [TMP]/store/pool/worlds/web-fix (subvolume [ID])
    base:     [TMP]/store/pool/bases/web-fix (subvolume [ID])
    network:  host
    tracking: on
    accesses: 0 paths: 0 read, 0 written, 0 executed
    changes:  none since its base
    ");

    let deleted = env.world_ok(&["delete", "--recursive", "web"]);
    insta::assert_snapshot!(deleted.stderr, @r"
    deleted world `web-fix`
    deleted world `web`
    ");
    let log = env.world_ok(&["log"]);
    insta::assert_snapshot!(env.normalize(&log.stdout), @r#"
    ID  TIME                 KIND          WORLD    ARGS
    6   [TIME]  delete        web      {"deleted":["web-fix","web"],"recursive":true,"world":"web"}
    5   [TIME]  create        db       {"parent":"base","source":{"kind":"snapshot"},"world":"db"}
    4   [TIME]  create        web-fix  {"parent":"web","source":{"kind":"snapshot"},"world":"web-fix"}
    3   [TIME]  create        web      {"parent":"base","source":{"kind":"snapshot"},"world":"web"}
    2   [TIME]  init          base     {"parent":null,"source":{"kind":"busybox"},"world":"base"}
    1   [TIME]  store-create  -        {"dir":"[TMP]/store","pool":"image","pool_size":1073741824}
    "#);
}

#[test]
fn json_outputs() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["create", "child", "base"]);

    let list: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list[1]["name"], "child");
    assert_eq!(list[1]["parent"], "base");
    assert_eq!(list[1]["state"], "stopped");
    assert_eq!(list[1]["source"]["kind"], "snapshot");
    assert!(list[1]["created"].as_str().unwrap().ends_with('Z'));

    let show: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["show", "child", "--json"]).stdout).unwrap();
    assert_eq!(show["name"], "child");
    assert!(show["path"]
        .as_str()
        .unwrap()
        .ends_with("/pool/worlds/child"));
    assert!(show["base"]
        .as_str()
        .unwrap()
        .ends_with("/pool/bases/child"));
    assert!(show["subvolume_id"].as_u64().unwrap() > 255);
    assert_eq!(show["changes"]["added"], 0);
    std::fs::write(env.store.join("pool/worlds/child/etc/motd"), "x").unwrap();
    let show: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["show", "child", "--json"]).stdout).unwrap();
    assert_eq!(show["changes"]["added"], 1);
    let root: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["show", "base", "--json"]).stdout).unwrap();
    assert!(root.get("changes").is_none());

    let tree: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["tree", "--json"]).stdout).unwrap();
    assert_eq!(
        tree,
        serde_json::json!([{ "name": "base", "children": [{ "name": "child", "children": [] }] }])
    );

    let log: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["log", "--json", "-n", "1"]).stdout).unwrap();
    assert_eq!(log[0]["kind"], "create");
    assert_eq!(log[0]["args"]["world"], "child");

    let info: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["store", "info", "--json"]).stdout).unwrap();
    assert_eq!(info["kind"], "image");
    assert_eq!(info["size"], 1u64 << 30);
    assert_eq!(info["worlds"], 2);
    assert!(info["device"].as_str().unwrap().starts_with("/dev/loop"));

    let created: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["create", "other", "base", "--json"]).stdout).unwrap();
    assert_eq!(created["name"], "other");
    let deleted: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["delete", "other", "--json"]).stdout).unwrap();
    assert_eq!(deleted, serde_json::json!({ "deleted": ["other"] }));
}

#[test]
fn init_from_tar_on_stdin() {
    let env = TestEnv::new();
    let source = env.folder().join("src");
    std::fs::create_dir_all(source.join("etc")).unwrap();
    std::fs::write(source.join("etc/hostname"), "from-stdin\n").unwrap();
    let archive = std::process::Command::new("tar")
        .args(["--create", "--gzip", "--file=-", "--directory"])
        .arg(&source)
        .arg(".")
        .output()
        .unwrap();
    assert!(archive.status.success());

    let mut child = env
        .command(crate::common::WORLD)
        .args(["init", "piped", "--from-tar", "-", "--pool-size", "1G"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &archive.stdout).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hostname = env.store.join("pool/worlds/piped/etc/hostname");
    assert_eq!(std::fs::read_to_string(hostname).unwrap(), "from-stdin\n");
}

#[test]
fn store_grow_and_remount() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let grown = env.world_ok(&["store", "grow", "+1G"]);
    assert_eq!(grown.stderr, "grew the pool from 1.0 GiB to 2.0 GiB\n");
    env.world_ok(&["store", "unmount"]);
    let image = env.store.join("pool.img");
    assert_eq!(worlds::sys::loopdev::find_attached(&image).unwrap(), None);

    // The next command mounts the pool again by itself.
    let list = env.world_ok(&["list", "--json"]);
    assert!(list.stdout.contains("\"base\""));
    assert!(worlds::sys::loopdev::find_attached(&image)
        .unwrap()
        .is_some());
    let info = env.world_ok(&["store", "info"]);
    assert!(
        info.stdout.contains("size:      2.0 GiB"),
        "{}",
        info.stdout
    );
}

#[test]
fn completions_and_man_page() {
    let env = TestEnv::new();
    let bash = env.world_ok(&["completions", "bash"]);
    assert!(
        bash.stdout.contains("complete -F _world"),
        "{}",
        bash.stdout
    );
    let man = env.world_ok(&["man"]);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH world 1"),
        "{}",
        &man.stdout[..200]
    );
    let dir = env.folder().join("man");
    std::fs::create_dir(&dir).unwrap();
    env.world_ok(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(dir.join("world.1").exists());
    assert!(dir.join("world-create.1").exists());
}

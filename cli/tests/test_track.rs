//! Access tracking and `world set`, on running busybox worlds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::TestEnv;

/// Returns the access set of `name` as path and operations, from
/// `world set`, with the command's stderr.
fn access_set(env: &TestEnv, args: &[&str]) -> (BTreeMap<String, String>, String) {
    let mut full = vec!["set"];
    full.extend_from_slice(args);
    let listed = env.world_ok(&full);
    let set = listed
        .stdout
        .lines()
        .map(|line| {
            let (path, ops) = line.rsplit_once(": ").expect("PATH: OPS");
            (path.to_owned(), ops.to_owned())
        })
        .collect();
    (set, listed.stderr)
}

/// Returns the JSON of `world set NAME --json`.
fn set_json(env: &TestEnv, name: &str) -> serde_json::Value {
    serde_json::from_str(&env.world_ok(&["set", name, "--json"]).stdout).unwrap()
}

/// Makes a root world `base` with a few files and a child `web` of it.
fn setup(env: &TestEnv) {
    env.init_busybox("base");
    let root = env.store.join("pool/worlds/base");
    std::fs::create_dir_all(root.join("srv/data")).unwrap();
    for name in ["a", "b", "host-only", "sibling-only", "linked"] {
        std::fs::write(root.join("srv/data").join(name), format!("{name}\n")).unwrap();
    }
    std::fs::write(root.join("srv/data/script"), "#!/bin/sh\necho ran\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(root.join("srv/data/script"))
        .status()
        .unwrap();
    env.world_ok(&["create", "web", "base"]);
}

#[test]
fn reads_writes_and_execs_recorded() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["create", "sibling", "base"]);
    env.world_ok(&["start", "web", "--network", "none"]);
    env.world_ok(&["start", "sibling", "--network", "none"]);

    let script = "cat /srv/data/a >/dev/null
        echo new > /srv/data/written
        /srv/data/script >/dev/null
        exec 3>>/srv/data/b; exec 3>&-
        ln -s /srv/data/linked /srv/link; cat /srv/link >/dev/null
        ln /srv/data/a /srv/hardlink; cat /srv/hardlink >/dev/null";
    env.world_ok(&["exec", "web", "--", "sh", "-c", script]);
    // A read by the host in the same directory, and one by a sibling world.
    std::fs::read(env.store.join("pool/worlds/web/srv/data/host-only")).unwrap();
    env.world_ok(&["exec", "sibling", "--", "cat", "/srv/data/sibling-only"]);
    env.world_ok(&["stop", "web", "sibling"]);

    let (set, stderr) = access_set(&env, &["web", "--", "/srv"]);
    let expected: BTreeMap<String, String> = [
        ("/srv/data/a", "READ"),
        ("/srv/data/linked", "READ"),
        ("/srv/data/script", "READ, EXEC"),
        ("/srv/data/written", "WRITE"),
        ("/srv/hardlink", "READ"),
    ]
    .into_iter()
    .map(|(path, ops)| (path.to_owned(), ops.to_owned()))
    .collect();
    assert_eq!(
        set, expected,
        "opened-for-writing, host and sibling reads must be absent"
    );
    assert!(stderr.is_empty(), "a full set warns of nothing: {stderr}");

    let (writes, _) = access_set(&env, &["web", "--writes"]);
    assert!(writes.contains_key("/srv/data/written"));
    assert!(!writes.contains_key("/srv/data/a"));
    let (execs, _) = access_set(&env, &["web", "--execs", "--", "/srv"]);
    assert_eq!(execs.keys().collect::<Vec<_>>(), ["/srv/data/script"]);

    let json = set_json(&env, "web");
    assert_eq!(json["complete"], true);
    let written = json["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["path"] == "/srv/data/written")
        .unwrap();
    assert_eq!(written["ops"], serde_json::json!(["WRITE"]));
    // The writer's command name is read when the event is, which may be
    // before exec(2) renamed the process, so only its presence is checked.
    assert!(!written["accesses"][0]["command"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(written["accesses"][0]["pid"].as_i64().unwrap() > 1);
    let script = json["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["path"] == "/srv/data/script")
        .unwrap();
    let exec = &script["accesses"][1];
    assert_eq!(exec["op"], "EXEC");
    assert_eq!(exec["command"], "script");

    let (sibling, _) = access_set(&env, &["sibling", "--", "/srv"]);
    assert_eq!(
        sibling.keys().collect::<Vec<_>>(),
        ["/srv/data/sibling-only"]
    );
}

#[test]
fn set_covers_runs_and_survives_a_killed_monitor() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);
    env.world_ok(&["exec", "web", "--", "cat", "/srv/data/a"]);
    // A running world's set is brought up to date before it is listed.
    let (running, _) = access_set(&env, &["web", "--", "/srv"]);
    assert_eq!(running.keys().collect::<Vec<_>>(), ["/srv/data/a"]);

    let details: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["show", "web", "--json"]).stdout).unwrap();
    let monitor = details["run"]["monitor_pid"]
        .as_i64()
        .or_else(|| details["monitor_pid"].as_i64())
        .expect("show reports the monitor's pid");
    kill(Pid::from_raw(monitor as i32), Signal::SIGKILL).unwrap();

    // The next start cleans up after the dead monitor and runs the world
    // again; the set keeps the first run and adds the second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(format!("/proc/{monitor}")).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the killed monitor did not go away"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    env.world_ok(&["start", "web", "--network", "none"]);
    env.world_ok(&["exec", "web", "--", "cat", "/srv/data/b"]);
    env.world_ok(&["stop", "web"]);

    let (set, stderr) = access_set(&env, &["web", "--", "/srv"]);
    assert_eq!(
        set.keys().collect::<Vec<_>>(),
        ["/srv/data/a", "/srv/data/b"]
    );
    assert!(
        stderr.contains("monitor ended before its last batch"),
        "{stderr}"
    );
    let json = set_json(&env, "web");
    assert_eq!(json["complete"], false);
    assert_eq!(json["gaps"][0]["reason"], "monitor-lost");
}

#[test]
fn untracked_run_recorded_as_gap() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none", "--no-track"]);
    env.world_ok(&["exec", "web", "--", "cat", "/srv/data/a"]);
    env.world_ok(&["stop", "web"]);

    let (set, stderr) = access_set(&env, &["web"]);
    assert!(set.is_empty(), "{set:?}");
    assert!(stderr.contains("ran without tracking"), "{stderr}");
    assert_eq!(set_json(&env, "web")["gaps"][0]["reason"], "not-recorded");

    // A tracking choice stored at create applies to every start.
    env.world_ok(&["create", "quiet", "base", "--no-track"]);
    env.world_ok(&["start", "quiet", "--network", "none"]);
    env.world_ok(&["exec", "quiet", "--", "cat", "/srv/data/a"]);
    env.world_ok(&["stop", "quiet"]);
    assert!(access_set(&env, &["quiet"]).0.is_empty());
}

#[test]
fn queue_overflow_recorded_as_gap() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);
    // A frozen init reads no events, so the host's writes to the pool fill
    // the kernel's queue (16,384 events by default) until it overflows.
    env.world_ok(&["freeze", "web"]);
    let dir = env.store.join("pool/worlds/base/srv/many");
    std::fs::create_dir(&dir).unwrap();
    for index in 0..20_000 {
        std::fs::write(dir.join(index.to_string()), b"x").unwrap();
    }
    env.world_ok(&["thaw", "web"]);
    env.world_ok(&["exec", "web", "--", "cat", "/srv/data/a"]);
    env.world_ok(&["stop", "web"]);

    let (set, stderr) = access_set(&env, &["web", "--", "/srv"]);
    assert!(set.contains_key("/srv/data/a"), "{set:?}");
    assert!(stderr.contains("event queue overflowed"), "{stderr}");
    let merge = env.world(&["merge", "web", "--dry-run"]);
    assert!(
        merge.stderr.contains("read-write conflicts may be missed"),
        "{}",
        merge.stderr
    );
}

#[test]
fn frozen_world_set_json_incomplete() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);
    env.world_ok(&["freeze", "web"]);

    // A frozen init cannot send its latest accesses, so the JSON must not
    // claim a complete set while stderr warns that accesses are missing.
    let listed = env.world_ok(&["set", "web", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert!(listed.stderr.contains("is it frozen?"), "{}", listed.stderr);
    assert_eq!(json["up_to_date"], false, "{json}");
    assert_eq!(json["complete"], false, "{json}");
    assert_eq!(json["gaps"], serde_json::json!([]), "{json}");

    env.world_ok(&["thaw", "web"]);
    let json = set_json(&env, "web");
    assert_eq!(json["up_to_date"], true, "{json}");
    assert_eq!(json["complete"], true, "{json}");
    env.world_ok(&["stop", "web"]);
}

#[test]
fn killed_init_recorded_as_gap() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);
    // A process that ignores SIGTERM and keeps writing makes `world stop`
    // kill init too, with the accesses of its last batch still unsent.
    env.world_ok(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "trap '' TERM; i=0; while true; do echo $i > /srv/data/w$i; i=$((i+1)); done \
         </dev/null >/dev/null 2>&1 &",
    ]);
    let stopped = env.world_ok(&["stop", "web", "--time", "0.5"]);
    assert!(stopped.stderr.contains("killed"), "{}", stopped.stderr);

    let (set, stderr) = access_set(&env, &["web", "--", "/srv"]);
    assert!(!set.is_empty());
    assert!(
        stderr.contains("init ended before it sent its last batch"),
        "{stderr}"
    );
    let json = set_json(&env, "web");
    assert_eq!(json["complete"], false, "{json}");
    assert_eq!(json["gaps"][0]["reason"], "init-lost", "{json}");
}

#[test]
fn read_write_conflict_from_the_set() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);
    env.world_ok(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "cat /srv/data/a > /srv/built",
    ]);
    env.world_ok(&["stop", "web"]);
    // An operation logged after every access, for --since.
    env.world_ok(&["create", "later", "base"]);
    let log = env.world_ok(&["log", "--json", "-n", "1"]);
    let last: serde_json::Value = serde_json::from_str(&log.stdout).unwrap();
    let since = last[0]["id"].as_i64().unwrap().to_string();
    std::fs::write(env.store.join("pool/worlds/base/srv/data/a"), "changed\n").unwrap();

    let blocked = env.world(&["merge", "web"]);
    assert_eq!(blocked.code, 1, "{}", blocked.stderr);
    assert!(
        blocked
            .stdout
            .contains("conflict read-write /srv/data/a: child read it, parent modified it"),
        "{}",
        blocked.stdout
    );

    // --since keeps the accesses last seen after that operation.
    assert!(access_set(&env, &["web", "--since", &since]).0.is_empty());
    assert!(access_set(&env, &["web", "--since", "1"])
        .0
        .contains_key("/srv/data/a"));
    let unknown = env.world(&["set", "web", "--since", "999999"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("operation 999999"),
        "{}",
        unknown.stderr
    );

    // A merge that moves the base starts the set afresh.
    env.world_ok(&["merge", "web", "--ignore-reads", "/srv/data"]);
    assert!(access_set(&env, &["web"]).0.is_empty());
    assert_eq!(set_json(&env, "web")["complete"], true);
}

#[test]
fn container_setup_not_recorded() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);
    env.world_ok(&["exec", "web", "--", "true"]);
    env.world_ok(&["stop", "web"]);

    // libcontainer reads /etc/passwd as pid 1 while it sets the world up;
    // only the command's own program is the world's access.
    let (set, _) = access_set(&env, &["web"]);
    assert_eq!(set.keys().collect::<Vec<_>>(), ["/bin/busybox"]);
}

#[test]
fn options_of_second_start_warned() {
    let env = TestEnv::new();
    setup(&env);
    env.world_ok(&["start", "web", "--network", "none"]);

    let again = env.world_ok(&["start", "web", "--no-track"]);
    assert!(
        again.stderr.contains("is running already"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("were not applied"),
        "{}",
        again.stderr
    );
    let plain = env.world_ok(&["start", "web"]);
    assert!(
        !plain.stderr.contains("were not applied"),
        "{}",
        plain.stderr
    );
    env.world_ok(&["stop", "web"]);
}

//! Running worlds: real containers on busybox worlds.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::{run, TestEnv, WORLD};

/// Returns every entry under `root` with its inode number and ctime, which
/// any change to data or metadata moves.
fn ctime_listing(root: &Path) -> String {
    let output = Command::new("find")
        .arg(root)
        .args(["-printf", "%P %i %C@ %T@ %m %U:%G %s %y\\n"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut lines: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    lines.sort();
    lines.join("\n")
}

/// Returns the JSON of `world show NAME`.
fn show(env: &TestEnv, name: &str) -> serde_json::Value {
    let shown = env.world_ok(&["show", name, "--json"]);
    serde_json::from_str(&shown.stdout).unwrap()
}

/// Returns the host pids of the world's processes, from `world ps`.
fn host_pids(env: &TestEnv, name: &str) -> Vec<i32> {
    let ps = env.world_ok(&["ps", name, "--json"]);
    let processes: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    processes
        .as_array()
        .unwrap()
        .iter()
        .map(|process| process["host_pid"].as_i64().unwrap() as i32)
        .collect()
}

/// Asserts that nothing of world `name` is left on the host: processes,
/// cgroups, runtime files, container state.
fn assert_nothing_left(env: &TestEnv, name: &str, container_id: &str, pids: &[i32]) {
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        assert!(!alive, "process {pid} of world `{name}` is still alive");
    }
    let cgroups = worlds::runtime::cgroup_dirs(container_id);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    assert!(!env.store.join("run").join(name).exists());
    assert!(!env.store.join("run/containers").join(container_id).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let world_root = env.store.join("pool/worlds").join(name);
    assert!(
        !mounts.contains(&format!(" {}/", world_root.display())),
        "mounts left under {}",
        world_root.display()
    );
}

#[test]
fn exec_exit_statuses() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let cases: &[(&[&str], i32)] = &[
        (&["/bin/busybox", "true"], 0),
        (&["true"], 0),
        (&["false"], 1),
        (&["sh", "-c", "exit 7"], 7),
        (&["sh", "-c", "kill -TERM $$"], 128 + 15),
        (&["sh", "-c", "kill -KILL $$"], 128 + 9),
        (&["no-such-command"], 127),
        (&["/etc/passwd"], 126),
    ];
    for (command, expected) in cases {
        let mut args = vec!["exec", "base", "--"];
        args.extend_from_slice(command);
        let result = env.world(&args);
        assert_eq!(result.code, *expected, "{command:?}: {}", result.stderr);
    }
    let missing = env.world(&["exec", "base", "no-such-command"]);
    assert!(
        missing
            .stderr
            .contains("world exec: no-such-command: command not found"),
        "{}",
        missing.stderr
    );
}

#[test]
fn exec_missing_command_is_usage_error() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let result = env.world(&["exec", "base"]);
    assert_eq!(result.code, 2);
    assert!(result.stderr.contains("<CMD>"), "{}", result.stderr);
}

#[test]
fn exec_passes_stdin_and_options() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let mut child = env
        .command(WORLD)
        .args([
            "exec",
            "base",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done >&2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "HELLO\nWORLD\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("done"));

    let options = env.world_ok(&[
        "exec",
        "base",
        "-e",
        "GREETING=hi there",
        "--cwd",
        "/etc",
        "--user",
        "nobody",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; id -u; id -g; hostname",
    ]);
    assert_eq!(options.stdout, "hi there\n/etc\n65534\n65534\nbase\n");
    let group = env.world_ok(&["exec", "base", "--user", "nobody:root", "id", "-g"]);
    assert_eq!(group.stdout, "0\n");

    let unknown = env.world(&["exec", "base", "--user", "mallory", "true"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("user `mallory` not found in `/etc/passwd` of world `base`"),
        "{}",
        unknown.stderr
    );
    let relative = env.world(&["exec", "base", "--cwd", "etc", "true"]);
    assert_eq!(relative.code, 2, "{}", relative.stderr);
}

#[test]
fn exec_forwards_signals() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["start", "base"]);
    for (signal, number) in [
        (Signal::SIGTERM, 15),
        (Signal::SIGINT, 2),
        (Signal::SIGHUP, 1),
    ] {
        let script = format!(
            "trap 'echo got {number}; exit {number}' {number}; echo ready; while true; do sleep 0.05; done"
        );
        let mut child = env
            .command(WORLD)
            .args(["exec", "base", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("got {number}\n"), "{signal}");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(number), "{signal}");
    }
}

#[test]
fn daemon_outlives_exec() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let started = Instant::now();
    // busybox httpd daemonizes: the command exits at once and the server
    // keeps its port open in the world.
    env.world_ok(&[
        "exec",
        "base",
        "sh",
        "-c",
        "mkdir -p /srv && echo served > /srv/index.html && httpd -p 127.0.0.1:18431 -h /srv",
    ]);
    assert!(started.elapsed() < Duration::from_secs(10));

    let ps = env.world_ok(&["ps", "base"]);
    assert!(
        ps.stdout.contains("httpd -p 127.0.0.1:18431"),
        "{}",
        ps.stdout
    );
    let fetched = run(env.command("busybox").args([
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:18431/index.html",
    ]));
    assert_eq!(fetched.stdout, "served\n", "{}", fetched.stderr);
}

#[test]
fn start_stop_leave_nothing_behind() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let started = env.world_ok(&["start", "base"]);
    assert_eq!(started.stderr, "started world `base`\n");
    let again = env.world_ok(&["start", "base"]);
    assert_eq!(again.stderr, "world `base` is running already\n");

    env.world_ok(&["exec", "base", "sh", "-c", "sleep 600 > /dev/null 2>&1 &"]);
    let shown = show(&env, "base");
    assert_eq!(shown["state"], "running");
    let container_id = shown["run"]["container_id"].as_str().unwrap().to_owned();
    let pids = host_pids(&env, "base");
    assert_eq!(pids.len(), 2, "init and sleep");
    assert!(shown["init_pid"].as_i64().unwrap() as i32 == pids[0]);

    let list = env.world_ok(&["list"]);
    assert!(
        list.stdout.contains("base  -       running"),
        "{}",
        list.stdout
    );
    let stopped = env.world_ok(&["stop", "base"]);
    assert_eq!(stopped.stderr, "world `base` stopped\n");
    assert_nothing_left(&env, "base", &container_id, &pids);
    assert_eq!(show(&env, "base")["state"], "stopped");
    let ps = env.world(&["ps", "base"]);
    assert_eq!(ps.code, 2);
    assert!(ps.stderr.contains("world `base` is not running"));
    let not_running = env.world_ok(&["stop", "base"]);
    assert_eq!(not_running.stderr, "world `base` is not running\n");
}

#[test]
fn stop_kills_after_grace_period() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&[
        "exec",
        "base",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done > /dev/null 2>&1 &",
    ]);
    let container_id = show(&env, "base")["run"]["container_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pids = host_pids(&env, "base");
    let started = Instant::now();
    let stopped = env.world_ok(&["stop", "base", "--time", "0.5"]);
    assert!(stopped.stderr.contains("killed"), "{}", stopped.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_left(&env, "base", &container_id, &pids);
}

#[test]
fn restart_gives_new_init() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["start", "base"]);
    let before = show(&env, "base")["init_pid"].as_i64().unwrap();
    env.world_ok(&["restart", "base"]);
    let after = show(&env, "base");
    assert_eq!(after["state"], "running");
    assert_ne!(after["init_pid"].as_i64().unwrap(), before);
}

#[test]
fn files_unchanged_by_start_and_exec() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let root = env.store.join("pool/worlds/base");
    let before = ctime_listing(&root);
    env.world_ok(&["start", "base"]);
    env.world_ok(&["exec", "base", "true"]);
    let names = env.world_ok(&["exec", "base", "cat", "/etc/hosts", "/etc/hostname"]);
    assert!(
        names.stdout.contains("127.0.1.1\tbase\n"),
        "{}",
        names.stdout
    );
    assert!(names.stdout.ends_with("\nbase\n"), "{}", names.stdout);
    env.world_ok(&["stop", "base"]);
    let after = ctime_listing(&root);
    assert_eq!(before, after);
}

#[test]
fn stale_record_cleaned_up() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["exec", "base", "sh", "-c", "sleep 600 > /dev/null 2>&1 &"]);
    let shown = show(&env, "base");
    let container_id = shown["run"]["container_id"].as_str().unwrap().to_owned();
    let monitor = shown["monitor_pid"].as_i64().unwrap() as i32;
    let pids = host_pids(&env, "base");

    // A crashed monitor leaves the world's processes without an owner.
    kill(Pid::from_raw(monitor), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{monitor}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let list = env.world_ok(&["list"]);
    assert!(
        list.stderr
            .contains("world `base` was recorded as running, but its monitor was gone"),
        "{}",
        list.stderr
    );
    assert!(list.stdout.contains("stopped"), "{}", list.stdout);
    assert_nothing_left(&env, "base", &container_id, &pids);
    env.world_ok(&["exec", "base", "true"]);
}

#[test]
fn delete_running_world_needs_force() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["create", "child", "base"]);
    env.world_ok(&["exec", "child", "sh", "-c", "sleep 600 > /dev/null 2>&1 &"]);
    let container_id = show(&env, "child")["run"]["container_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pids = host_pids(&env, "child");

    let refused = env.world(&["delete", "child"]);
    assert_eq!(refused.code, 2);
    assert_eq!(
        refused.stderr,
        "error: world `child` is running\nhint: stop it with `world stop child`, or add --force to stop it and delete it\n"
    );
    let refused_parent = env.world(&["delete", "--recursive", "base"]);
    assert_eq!(refused_parent.code, 2);

    let deleted = env.world_ok(&["delete", "--recursive", "--force", "base"]);
    assert_eq!(
        deleted.stderr,
        "deleted world `child`\ndeleted world `base`\n"
    );
    assert_nothing_left(&env, "child", &container_id, &pids);
    assert!(!env.store.join("logs/child.log").exists());
}

#[test]
fn failed_start_shows_monitor_log() {
    let env = TestEnv::new();
    env.init_busybox("base");
    // With a limit of one process, the runtime cannot clone init.
    let failed = env.world(&["start", "base", "--pids", "1"]);
    assert_eq!(failed.code, 125, "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .starts_with("error: world `base` failed to start; its monitor logged:\n"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("monitor started"),
        "{}",
        failed.stderr
    );
    assert_eq!(show(&env, "base")["state"], "stopped");
    assert!(!env.store.join("run/base").exists());
    env.world_ok(&["start", "base"]);
}

/// Fetches `url` from the host with busybox wget and returns the body.
fn fetch(env: &TestEnv, url: &str) -> String {
    let fetched = run(env.command("busybox").args(["wget", "-q", "-O", "-", url]));
    assert_eq!(fetched.code, 0, "fetch {url}: {}", fetched.stderr);
    fetched.stdout
}

#[test]
fn veth_worlds_serve_same_port() {
    let env = TestEnv::new();
    env.init_busybox("base");
    // A subnet of this test run's own, so that two test suites running at
    // once do not route the same addresses.
    let third = 1 + std::process::id() % 250;
    let subnet = format!("10.213.{third}.0/28");
    let base_address = format!("10.213.{third}.2");
    let child_address = format!("10.213.{third}.3");
    env.world_ok(&["create", "child", "base", "--network", "veth"]);
    env.world_ok(&["start", "base", "--network", "veth", "--subnet", &subnet]);
    let started = env.world_ok(&["start", "child", "--subnet", &subnet]);
    assert_eq!(
        started.stderr,
        format!("started world `child` at {child_address}\n")
    );

    let mut interfaces = Vec::new();
    for (name, address) in [("base", &base_address), ("child", &child_address)] {
        let shown = show(&env, name);
        assert_eq!(shown["run"]["network"], "veth");
        assert_eq!(shown["run"]["address"], address.as_str());
        let text = env.world_ok(&["show", name]);
        assert!(
            text.stdout.contains(&format!("address:  {address}\n")),
            "{}",
            text.stdout
        );
        interfaces.push(shown["run"]["host_interface"].as_str().unwrap().to_owned());
        let script =
            format!("mkdir -p /srv && echo {name} > /srv/index.html && httpd -p 80 -h /srv");
        env.world_ok(&["exec", name, "sh", "-c", &script]);
    }
    let base_url = format!("http://{base_address}/index.html");
    let child_url = format!("http://{child_address}/index.html");
    assert_eq!(fetch(&env, &base_url), "base\n");
    assert_eq!(fetch(&env, &child_url), "child\n");

    env.world_ok(&["stop", "base", "child"]);
    for interface in interfaces {
        assert!(
            !Path::new("/sys/class/net").join(&interface).exists(),
            "veth {interface} left"
        );
    }
}

#[test]
fn network_none_has_only_loopback() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["start", "base", "--network", "none"]);
    let links = env.world_ok(&["exec", "base", "ls", "/sys/class/net"]);
    assert_eq!(links.stdout, "lo\n");
    let up = env.world_ok(&["exec", "base", "cat", "/sys/class/net/lo/operstate"]);
    assert_eq!(up.stdout, "unknown\n", "loopback is up");
    let resolv = env.world_ok(&["exec", "base", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv.stdout, "");
    assert_eq!(show(&env, "base")["run"]["network"], "none");
}

#[test]
fn network_host_shares_interfaces() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let links = env.world_ok(&["exec", "base", "ls", "/sys/class/net"]);
    let mut in_world: Vec<&str> = links.stdout.lines().collect();
    in_world.sort();
    let mut host: Vec<&str> = host.iter().map(String::as_str).collect();
    host.sort();
    assert_eq!(in_world, host);
}

#[test]
fn freeze_and_thaw_restore_state() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&[
        "exec",
        "base",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.01; done > /dev/null 2>&1 &",
    ]);
    let counter = env.store.join("pool/worlds/base/tmp/counter");
    let read = || std::fs::read_to_string(&counter).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(100));

    let frozen = env.world_ok(&["freeze", "base"]);
    assert_eq!(frozen.stderr, "world `base` frozen\n");
    assert_eq!(show(&env, "base")["state"], "frozen");
    let list = env.world_ok(&["list"]);
    assert!(list.stdout.contains("frozen"), "{}", list.stdout);
    let at_freeze = read();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(), at_freeze, "the counter moved while frozen");
    let again = env.world_ok(&["freeze", "base"]);
    assert_eq!(again.stderr, "world `base` was frozen already\n");
    let exec = env.world(&["exec", "base", "true"]);
    assert_eq!(exec.code, 2);
    assert!(
        exec.stderr.contains("world `base` is frozen"),
        "{}",
        exec.stderr
    );

    let thawed = env.world_ok(&["thaw", "base"]);
    assert_eq!(thawed.stderr, "world `base` thawed\n");
    assert_eq!(show(&env, "base")["state"], "running");
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(read(), at_freeze, "the counter did not move after thaw");
    let not_frozen = env.world_ok(&["thaw", "base"]);
    assert_eq!(not_frozen.stderr, "world `base` was not frozen\n");

    // A frozen world stops like a running one.
    env.world_ok(&["freeze", "base"]);
    let stopped = env.world_ok(&["stop", "base", "--time", "5"]);
    assert_eq!(stopped.stderr, "world `base` stopped\n");
}

#[test]
fn crashed_merge_thaws_parent() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["start", "base"]);
    env.world_ok(&["create", "child", "base"]);
    std::fs::write(env.store.join("pool/worlds/child/etc/motd"), "new\n").unwrap();

    // The merge dies half way, with the running parent frozen.
    let crashed = run(env
        .command(WORLD)
        .env("WORLDS_TEST_CRASH_AT", "mid-merge")
        .args(["merge", "child"])
        .stderr(Stdio::null()));
    assert_eq!(crashed.code, 128 + 6);

    // The next command, whichever it is, thaws the parent.
    let recovered = env.world_ok(&["recover"]);
    assert!(
        recovered
            .stderr
            .contains("world `base` was left frozen by an interrupted merge or undo; thawed it"),
        "{}",
        recovered.stderr
    );
    assert_eq!(show(&env, "base")["state"], "running");
    // A world that its user froze stays frozen through a merge.
    env.world_ok(&["freeze", "base"]);
    env.world_ok(&["merge", "child"]);
    assert_eq!(show(&env, "base")["state"], "frozen");
    env.world_ok(&["stop", "base"]);
}

#[test]
fn exec_users_get_no_host_reach() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.init_busybox("base");
    let mode = std::fs::metadata(env.store.join("pool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "only root may enter the pool");

    // Another user keeps no capabilities, not even ambient ones.
    let caps = env.world_ok(&[
        "exec",
        "-u",
        "65534",
        "base",
        "grep",
        "Cap",
        "/proc/self/status",
    ]);
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert!(
            caps.stdout.contains(&format!("{set}:\t0000000000000000")),
            "{}",
            caps.stdout
        );
    }
    // 2^32 - 1 would mean "keep root" to setresuid(2).
    let minus_one = env.world(&["exec", "-u", "4294967295", "base", "id"]);
    assert_eq!(minus_one.code, 2, "{}", minus_one.stderr);

    // The world's account files are read inside the world only.
    let host_passwd = env.folder().join("passwd");
    std::fs::write(&host_passwd, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
    let passwd = env.store.join("pool/worlds/base/etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink(&host_passwd, &passwd).unwrap();
    let host_user = env.world(&["exec", "-u", "hostonly", "base", "id"]);
    assert_eq!(host_user.code, 2, "{}", host_user.stderr);
    env.world_ok(&["stop", "base"]);
}

#[test]
fn limits_enforced() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&[
        "start", "base", "--memory", "32M", "--pids", "20", "--cpus", "0.5",
    ]);
    let shown = env.world_ok(&["show", "base"]);
    assert!(
        shown
            .stdout
            .contains("limits:   memory 32.0 MiB, pids 20, cpus 0.5\n"),
        "{}",
        shown.stdout
    );
    let container_id = show(&env, "base")["run"]["container_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cgroup = |file: &str| {
        let found = worlds::runtime::cgroup_dirs(&container_id)
            .into_iter()
            .find(|dir| dir.join(file).exists())
            .unwrap_or_else(|| panic!("no cgroup of the world has {file}"));
        std::fs::read_to_string(found.join(file)).unwrap()
    };
    assert_eq!(cgroup("memory.limit_in_bytes"), "33554432\n");
    assert_eq!(cgroup("pids.max"), "20\n");
    assert_eq!(cgroup("cpu.cfs_quota_us"), "50000\n");

    // Root in the world cannot reach its cgroup to raise the limits.
    let cgroupfs = env.world_ok(&["exec", "base", "ls", "-A", "/sys/fs/cgroup"]);
    assert_eq!(cgroupfs.stdout, "");
    let mounts = env.world_ok(&["exec", "base", "cat", "/proc/self/mounts"]);
    assert!(!mounts.stdout.contains(" cgroup "), "{}", mounts.stdout);

    // 64 MB in a shell variable is more than the world may have.
    let memory = env.world(&[
        "exec",
        "base",
        "sh",
        "-c",
        "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_eq!(memory.code, 128 + 9, "{}", memory.stderr);
    let forks = env.world(&[
        "exec",
        "base",
        "sh",
        "-c",
        "for i in $(seq 30); do sleep 5 & done; wait",
    ]);
    assert!(forks.stderr.contains("can't fork"), "{}", forks.stderr);
}

#[test]
fn create_stores_run_settings() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&[
        "create",
        "child",
        "base",
        "--network",
        "none",
        "--pids",
        "50",
    ]);
    env.world_ok(&["create", "grandchild", "child"]);
    let shown = show(&env, "grandchild");
    assert_eq!(shown["config"]["network"], "none");
    assert_eq!(shown["config"]["limits"]["pids"], 50);
    env.world_ok(&["start", "grandchild", "--pids", "60"]);
    let running = show(&env, "grandchild");
    assert_eq!(running["run"]["network"], "none");
    assert_eq!(running["run"]["limits"]["pids"], 60);
}

/// A tmux server on a socket of its own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(env: &TestEnv) -> Self {
        let socket = env.folder().join("tmux.sock").to_str().unwrap().to_owned();
        Self { socket }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the pane shows `text`, and returns the pane.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pane = self.run(&["capture-pane", "-p", "-t", "console"]);
            if pane.contains(text) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the pane:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

#[test]
fn console_through_tmux() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let tmux = Tmux::new(&env);
    let folder = env.folder().display().to_string();
    // The pane's shell saves its terminal settings around the console, so
    // that the test can compare them.
    let script = format!(
        "stty -g > {folder}/before; env -i PATH={path} TERM=tmux-256color WORLDS_STORE={store} {WORLD} console base; \
         echo \"console exited $?\"; stty -g > {folder}/after; sleep 600",
        path = crate::common::PATH,
        store = env.store.display(),
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "console",
        "-x",
        "100",
        "-y",
        "30",
        &script,
    ]);
    tmux.wait_for("base:~#");

    tmux.run(&[
        "send-keys",
        "-t",
        "console",
        "echo hello-$((6*7)); stty size",
        "Enter",
    ]);
    let pane = tmux.wait_for("30 100");
    assert!(pane.contains("hello-42"), "{pane}");
    tmux.run(&["resize-window", "-t", "console", "-x", "120", "-y", "40"]);
    tmux.run(&[
        "send-keys",
        "-t",
        "console",
        "clear; stty size; echo $TERM; hostname",
        "Enter",
    ]);
    let pane = tmux.wait_for("tmux-256color\nbase");
    assert!(pane.contains("40 120"), "{pane}");

    tmux.run(&["send-keys", "-t", "console", "exit 3", "Enter"]);
    tmux.wait_for("console exited 3");
    let deadline = Instant::now() + Duration::from_secs(5);
    // The shell creates the file before stty writes to it.
    let read_after = || std::fs::read_to_string(env.folder().join("after")).unwrap_or_default();
    while read_after().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::read_to_string(env.folder().join("before")).unwrap();
    let after = read_after();
    assert_eq!(before, after, "terminal settings not restored");
}

#[test]
fn exec_tty_without_terminal() {
    let env = TestEnv::new();
    env.init_busybox("base");
    let mut child = env
        .command(WORLD)
        .args([
            "exec",
            "-t",
            "base",
            "sh",
            "-c",
            "tty; read line; echo got $line; exit 4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    // The terminal echoes the typed line, so the order of lines varies.
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.contains("got typed"), "{stdout}");
}

#[test]
fn terminal_ctrl_c_reaches_exec() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["start", "base"]);
    let tmux = Tmux::new(&env);
    // The command runs in a session of its own, so the terminal's SIGINT
    // reaches it only when `world exec` passes it on.
    let script = format!(
        "env -i PATH={path} WORLDS_STORE={store} {WORLD} exec base sh -c \
         \"trap 'echo got-int; exit 7' INT; echo ready; while true; do sleep 0.05; done\"; \
         echo \"exec exited $?\"; sleep 600",
        path = crate::common::PATH,
        store = env.store.display(),
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "console",
        "-x",
        "100",
        "-y",
        "30",
        &script,
    ]);
    tmux.wait_for("ready");
    tmux.run(&["send-keys", "-t", "console", "C-c"]);
    let pane = tmux.wait_for("exec exited 7");
    assert!(pane.contains("got-int"), "{pane}");
}

#[test]
fn debian_service_stops_gracefully() {
    let env = TestEnv::new();
    env.world_ok(&[
        "init",
        "deb",
        "--debootstrap",
        "bookworm",
        "--pool-size",
        "1G",
    ]);
    let root = env.store.join("pool/worlds/deb");

    // Debian has its own hostname, hosts and resolv.conf, which a running
    // world gets mounted over, not written.
    let before = ctime_listing(&root);
    env.world_ok(&["start", "deb"]);
    let hostname = env.world_ok(&["exec", "deb", "cat", "/etc/hostname"]);
    assert_eq!(hostname.stdout, "deb\n");
    let user = env.world_ok(&["exec", "--user", "www-data", "deb", "id", "-un"]);
    assert_eq!(user.stdout, "www-data\n");
    env.world_ok(&["stop", "deb"]);
    assert_eq!(ctime_listing(&root), before);

    // A service started with Debian's start-stop-daemon, under its own
    // user, outlives the exec and gets SIGTERM when the world stops.
    env.world_ok(&[
        "exec",
        "deb",
        "start-stop-daemon",
        "--start",
        "--background",
        "--chuid",
        "nobody",
        "--exec",
        "/bin/bash",
        "--",
        "-c",
        "trap 'echo stopped > /tmp/service.state; exit 0' TERM; \
         echo running > /tmp/service.state; while true; do sleep 0.1; done",
    ]);
    let state = root.join("tmp/service.state");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&state).unwrap_or_default() != "running\n" {
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ps = env.world_ok(&["ps", "deb"]);
    assert!(
        ps.stdout
            .lines()
            .any(|line| line.contains("65534") && line.contains("/bin/bash -c trap")),
        "{}",
        ps.stdout
    );

    let stopped = env.world_ok(&["stop", "deb"]);
    assert_eq!(stopped.stderr, "world `deb` stopped\n");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "stopped\n");
}

#[test]
fn init_reaps_orphans() {
    let env = TestEnv::new();
    env.init_busybox("base");
    // Each subshell exits at once and leaves its sleep to init, which must
    // reap it when it ends.
    env.world_ok(&[
        "exec",
        "base",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do (sleep 0.1 &); done",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let ps = env.world_ok(&["ps", "base", "--json"]);
    let processes: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    let processes = processes.as_array().unwrap();
    assert_eq!(processes.len(), 1, "only init is left: {processes:?}");
    assert_eq!(processes[0]["pid"], 1);
    // Zombies leave the cgroup but stay children of init until reaped.
    let init = processes[0]["host_pid"].as_i64().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
    assert_eq!(children.trim(), "", "unreaped children of init");
}

#[test]
fn monitor_sigterm_stops_world() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["exec", "base", "sh", "-c", "sleep 600 > /dev/null 2>&1 &"]);
    let shown = show(&env, "base");
    let container_id = shown["run"]["container_id"].as_str().unwrap().to_owned();
    let monitor = shown["monitor_pid"].as_i64().unwrap() as i32;
    let pids = host_pids(&env, "base");

    kill(Pid::from_raw(monitor), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while show(&env, "base")["state"] != "stopped" {
        assert!(Instant::now() < deadline, "the world did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The monitor removes its record last; wait for it to exit.
    while Path::new(&format!("/proc/{monitor}")).exists()
        && !std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(Instant::now() < deadline, "the monitor did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_nothing_left(&env, "base", &container_id, &pids);
    let log = std::fs::read_to_string(env.store.join("logs/base.log")).unwrap();
    assert!(log.contains("monitor got a stop signal"), "{log}");
    assert!(log.contains("world stopped"), "{log}");
}

#[test]
fn exec_tty_long_world_name() {
    let env = TestEnv::new();
    // 64 bytes, the longest name: the console socket's path in the
    // runtime directory would not fit in a Unix socket address.
    let name = "a".repeat(64);
    env.init_busybox(&name);
    let result = env.world(&["exec", "-t", &name, "tty"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(result.stdout.starts_with("/dev/pts/"), "{}", result.stdout);
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|file| file.starts_with("worlds-console-"))
        .collect();
    assert!(left.is_empty(), "console sockets left in /tmp: {left:?}");
}

#[test]
fn host_devices_not_openable() {
    let env = TestEnv::new();
    env.init_busybox("base");
    // CAP_MKNOD lets root in the world make device nodes in its /dev
    // tmpfs; the devices cgroup must keep it from opening the host's
    // disks and loop devices through them.
    let opened = env.world(&[
        "exec",
        "base",
        "sh",
        "-c",
        "mknod /dev/host-loop b 7 0 && head -c 1 /dev/host-loop > /dev/null",
    ]);
    assert_eq!(opened.code, 1, "{}", opened.stderr);
    assert!(
        opened.stderr.contains("Operation not permitted"),
        "{}",
        opened.stderr
    );
    let null = env.world_ok(&["exec", "base", "sh", "-c", "echo x > /dev/null"]);
    assert_eq!(null.stderr, "");
}

#[test]
fn exec_tty_returns_despite_daemon() {
    let env = TestEnv::new();
    env.init_busybox("base");
    env.world_ok(&["start", "base"]);
    // The sleep ignores the hangup and keeps the terminal open after the
    // shell exits.
    let started = Instant::now();
    let result = env.world(&[
        "exec",
        "-t",
        "base",
        "sh",
        "-c",
        "trap '' HUP; sleep 600 & echo background",
    ]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(result.stdout.contains("background"), "{}", result.stdout);
    assert!(started.elapsed() < Duration::from_secs(5));
    let ps = env.world_ok(&["ps", "base"]);
    assert!(ps.stdout.contains("sleep 600"), "{}", ps.stdout);
}

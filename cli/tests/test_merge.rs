use std::fs;
use std::process::Stdio;

use crate::common::{run, TestEnv, WORLD};

/// Makes `Parent` with a small site and `Child` of it.
fn family(env: &TestEnv) -> std::path::PathBuf {
    env.init_busybox("Parent");
    let parent = env.store.join("pool/worlds/Parent");
    fs::create_dir_all(parent.join("srv/www")).unwrap();
    fs::write(parent.join("srv/www/index.html"), "v1\n").unwrap();
    fs::write(parent.join("etc/app.conf"), "a=1\n").unwrap();
    env.world_ok(&["create", "Child", "Parent"]);
    env.store.join("pool/worlds/Child")
}

#[test]
fn undo_one_step_singular() {
    let env = TestEnv::new();
    let child = family(&env);
    fs::write(child.join("srv/www/index.html"), "v2\n").unwrap();
    env.world_ok(&["merge", "Child"]);

    let undone = env.world_ok(&["undo", "Parent"]);
    assert_eq!(
        undone.stderr,
        "undid merge 1 of `Child` into `Parent` (1 step)\n"
    );
}

#[test]
fn merge_then_undo() {
    let env = TestEnv::new();
    let child = family(&env);
    fs::write(child.join("srv/www/index.html"), "v2\n").unwrap();
    fs::write(child.join("srv/www/new.html"), "new\n").unwrap();
    let parent_page = env.store.join("pool/worlds/Parent/srv/www/index.html");

    let dry = env.world_ok(&["merge", "--dry-run", "Child"]);
    assert_eq!(
        dry.stdout,
        "put /srv/www/index.html\nput /srv/www/new.html\n"
    );
    assert_eq!(fs::read_to_string(&parent_page).unwrap(), "v1\n");

    let merged = env.world_ok(&["merge", "Child", "Parent"]);
    assert!(
        merged
            .stderr
            .starts_with("merged `Child` into `Parent` (merge 1): 2 steps in "),
        "{}",
        merged.stderr
    );
    assert_eq!(fs::read_to_string(&parent_page).unwrap(), "v2\n");
    assert_eq!(env.world_ok(&["diff", "Child"]).stdout, "");

    let undone = env.world_ok(&["undo", "Parent"]);
    assert_eq!(
        undone.stderr,
        "undid merge 1 of `Child` into `Parent` (2 steps)\n"
    );
    assert_eq!(fs::read_to_string(&parent_page).unwrap(), "v1\n");
    assert!(!env
        .store
        .join("pool/worlds/Parent/srv/www/new.html")
        .exists());
    let again = env.world(&["undo", "Parent"]);
    assert_eq!(again.code, 2);
    assert!(
        again
            .stderr
            .starts_with("error: world `Parent` has no merge that can be undone"),
        "{}",
        again.stderr
    );
}

#[test]
fn conflict_refuses_with_exit_1() {
    let env = TestEnv::new();
    let child = family(&env);
    fs::write(child.join("etc/app.conf"), "a=child\n").unwrap();
    fs::write(
        env.store.join("pool/worlds/Parent/etc/app.conf"),
        "a=parent\n",
    )
    .unwrap();

    let refused = env.world(&["merge", "Child"]);
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.stdout,
        "conflict write-write /etc/app.conf: child modified it, parent modified it\n"
    );
    assert!(refused
        .stderr
        .starts_with("merge of `Child` into `Parent` refused: 1 conflict; nothing changed\n"));
    let json = env.world(&["merge", "--json", "Child"]);
    assert_eq!(json.code, 1);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["applied"], false);
    assert_eq!(value["conflicts"][0]["kind"], "write-write");
    assert_eq!(value["conflicts"][0]["path"], "/etc/app.conf");

    env.world_ok(&["merge", "--prefer", "child", "Child"]);
    let conf = fs::read_to_string(env.store.join("pool/worlds/Parent/etc/app.conf")).unwrap();
    assert_eq!(conf, "a=child\n");
}

#[test]
fn wmerge_alias() {
    let env = TestEnv::new();
    let child = family(&env);
    fs::write(child.join("etc/motd"), "hi\n").unwrap();
    let wmerge = env.folder().join("wmerge");
    std::os::unix::fs::symlink(WORLD, &wmerge).unwrap();
    let wrong = run(env.command(&wmerge).args(["Child", "Child"]));
    assert_eq!(wrong.code, 2);
    let merged = run(env.command(&wmerge).args(["Child", "Parent"]));
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    assert!(env.store.join("pool/worlds/Parent/etc/motd").exists());
}

#[test]
fn crash_mid_merge_rolled_back() {
    let env = TestEnv::new();
    let child = family(&env);
    for index in 0..20 {
        fs::write(child.join(format!("srv/www/page{index}.html")), "new\n").unwrap();
    }
    let crashed = run(env
        .command(WORLD)
        .env("WORLDS_TEST_CRASH_AT", "mid-merge")
        .args(["merge", "Child"])
        .stderr(Stdio::null()));
    assert_eq!(crashed.code, 128 + 6, "the merge should abort");
    let half = fs::read_dir(env.store.join("pool/worlds/Parent/srv/www"))
        .unwrap()
        .count();
    assert!(
        half > 1,
        "some pages should have reached the parent before the crash"
    );

    let recovered = env.world_ok(&["recover"]);
    let first = recovered.stderr.lines().next().unwrap();
    assert_eq!(
        first,
        "warning: merge 1 of `Child` into `Parent` was interrupted; `Parent` is back at its state before the merge"
    );
    assert_eq!(fs::read_dir(env.store.join("pool/tmp")).unwrap().count(), 0);
    let pages = fs::read_dir(env.store.join("pool/worlds/Parent/srv/www"))
        .unwrap()
        .count();
    assert_eq!(pages, 1, "only index.html is left");
    assert_eq!(env.world_ok(&["diff", "Child"]).stdout.lines().count(), 20);
    env.world_ok(&["merge", "Child"]);
    let pages = fs::read_dir(env.store.join("pool/worlds/Parent/srv/www"))
        .unwrap()
        .count();
    assert_eq!(pages, 21);
}

#[test]
fn crash_before_done_completed() {
    let env = TestEnv::new();
    let child = family(&env);
    fs::write(child.join("etc/motd"), "hi\n").unwrap();
    let crashed = run(env
        .command(WORLD)
        .env("WORLDS_TEST_CRASH_AT", "before-merge-done")
        .args(["merge", "Child"])
        .stderr(Stdio::null()));
    assert_eq!(crashed.code, 128 + 6);
    let list = env.world_ok(&["list"]);
    let first = list.stderr.lines().next().unwrap();
    assert_eq!(
        first,
        "warning: merge 1 of `Child` into `Parent` was interrupted after all its changes were applied; it is now complete"
    );
    assert_eq!(fs::read_dir(env.store.join("pool/tmp")).unwrap().count(), 0);
    assert!(env.store.join("pool/worlds/Parent/etc/motd").exists());
    assert_eq!(env.world_ok(&["diff", "Child"]).stdout, "");
    assert_eq!(env.world_ok(&["recover"]).stderr, "nothing to recover\n");
}

#[test]
fn wcreate_combines_siblings() {
    let env = TestEnv::new();
    let child = family(&env);
    env.world_ok(&["create", "Child2", "Parent"]);
    fs::write(child.join("srv/www/index.html"), "v2\n").unwrap();
    fs::write(env.store.join("pool/worlds/Child2/etc/db"), "db\n").unwrap();
    let wcreate = env.folder().join("wcreate");
    std::os::unix::fs::symlink(WORLD, &wcreate).unwrap();

    let combined = run(env.command(&wcreate).args(["Child3", "Child", "Child2"]));
    assert_eq!(combined.code, 0, "{}", combined.stderr);
    assert!(
        combined.stderr.starts_with(
            "created world `Child3` from `Parent` with the changes of `Child`, `Child2` in "
        ),
        "{}",
        combined.stderr
    );
    assert_eq!(
        env.world_ok(&["diff", "Child3"]).stdout,
        "A\t/etc/db\nM\t/srv/www/index.html\n"
    );

    fs::write(
        env.store.join("pool/worlds/Child2/srv/www/index.html"),
        "v3\n",
    )
    .unwrap();
    let conflict = env.world(&[
        "create", "Child4", "Parent", "--with", "Child", "--with", "Child2",
    ]);
    assert_eq!(conflict.code, 1);
    assert!(
        conflict
            .stdout
            .starts_with("conflict write-write /srv/www/index.html"),
        "{}",
        conflict.stdout
    );
    assert!(!env.store.join("pool/worlds/Child4").exists());
}

#[test]
fn diff_empty_after_start_and_exec() {
    let env = TestEnv::new();
    family(&env);
    env.world_ok(&["start", "Child"]);
    env.world_ok(&["exec", "Child", "true"]);
    env.world_ok(&[
        "exec",
        "Child",
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf /etc/hostname > /dev/null; ls /proc /sys /dev > /dev/null",
    ]);
    let running = env.world(&["diff", "--exit-code", "Child"]);
    assert_eq!(
        (running.code, running.stdout.as_str()),
        (0, ""),
        "{}",
        running.stderr
    );
    env.world_ok(&["stop", "Child"]);
    let stopped = env.world(&["diff", "--exit-code", "Child"]);
    assert_eq!((stopped.code, stopped.stdout.as_str()), (0, ""));
}

#[test]
fn merge_into_running_parent() {
    let env = TestEnv::new();
    family(&env);
    env.world_ok(&["start", "Parent"]);
    env.world_ok(&["start", "Child"]);
    // A long-running process in the parent, started before the merge.
    env.world_ok(&["exec", "Parent", "sh", "-c", "sleep 300 > /dev/null 2>&1 &"]);
    env.world_ok(&[
        "exec",
        "Child",
        "sh",
        "-c",
        "echo v2 > /srv/www/index.html && echo hi > /etc/motd",
    ]);
    assert_eq!(
        env.world_ok(&["diff", "Child"]).stdout,
        "A\t/etc/motd\nM\t/srv/www/index.html\n"
    );

    env.world_ok(&["merge", "Child", "Parent"]);
    let page = env.world_ok(&["exec", "Parent", "cat", "/srv/www/index.html", "/etc/motd"]);
    assert_eq!(page.stdout, "v2\nhi\n");
    let parent: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["show", "Parent", "--json"]).stdout).unwrap();
    assert_eq!(
        parent["state"], "running",
        "the parent is thawed after the merge"
    );
    let ps = env.world_ok(&["ps", "Parent"]);
    assert!(ps.stdout.contains("sleep 300"), "{}", ps.stdout);
    assert_eq!(env.world_ok(&["diff", "Child"]).stdout, "");

    // A parent frozen before the merge stays frozen.
    env.world_ok(&["exec", "Child", "sh", "-c", "echo v3 > /srv/www/index.html"]);
    env.world_ok(&["freeze", "Parent"]);
    env.world_ok(&["merge", "Child"]);
    let parent: serde_json::Value =
        serde_json::from_str(&env.world_ok(&["show", "Parent", "--json"]).stdout).unwrap();
    assert_eq!(parent["state"], "frozen");
    env.world_ok(&["thaw", "Parent"]);
    let page = env.world_ok(&["exec", "Parent", "cat", "/srv/www/index.html"]);
    assert_eq!(page.stdout, "v3\n");
    env.world_ok(&["stop", "Parent"]);
    env.world_ok(&["stop", "Child"]);
}

/// Returns every entry under `root` with its type, mode, owner, symlink
/// target and, for regular files, a checksum of the content.
fn tree_state(root: &std::path::Path) -> String {
    let script = "find . -mindepth 1 -printf '%P %y %m %U:%G %l\\n' | sort; \
                  find . -type f -print0 | sort -z | xargs -0 -r md5sum";
    let output = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn crash_at_every_journal_step() {
    // Each point, and whether the next command completes the merge (true)
    // or rolls it back (false).
    let points = [
        ("merge-journaled", false),
        ("merge-prepared", false),
        ("mid-merge", false),
        ("merge-applied", false),
        ("merge-publishing", true),
        ("before-merge-done", true),
    ];
    for (point, completes) in points {
        let env = TestEnv::new();
        let child = family(&env);
        for index in 0..10 {
            fs::write(child.join(format!("srv/www/page{index}.html")), "new\n").unwrap();
        }
        fs::write(child.join("srv/www/index.html"), "v2\n").unwrap();
        fs::remove_file(child.join("etc/app.conf")).unwrap();
        let parent = env.store.join("pool/worlds/Parent");
        let before = tree_state(&parent);
        let expected_after = tree_state(&child);

        let crashed = run(env
            .command(WORLD)
            .env("WORLDS_TEST_CRASH_AT", point)
            .args(["merge", "Child"])
            .stderr(Stdio::null()));
        assert_eq!(crashed.code, 128 + 6, "{point}: the merge should abort");
        let recovered = env.world_ok(&["recover"]);
        let state = tree_state(&parent);
        if completes {
            assert!(
                recovered.stderr.contains("it is now complete"),
                "{point}: {}",
                recovered.stderr
            );
            assert_eq!(
                state, expected_after,
                "{point}: the parent should be in its post-merge state"
            );
            assert_eq!(env.world_ok(&["diff", "Child"]).stdout, "", "{point}");
        } else {
            assert!(
                recovered
                    .stderr
                    .contains("is back at its state before the merge"),
                "{point}: {}",
                recovered.stderr
            );
            assert_eq!(
                state, before,
                "{point}: the parent should be in its pre-merge state"
            );
            assert_eq!(
                env.world_ok(&["diff", "Child"]).stdout.lines().count(),
                12,
                "{point}"
            );
        }
        assert_eq!(
            fs::read_dir(env.store.join("pool/tmp")).unwrap().count(),
            0,
            "{point}"
        );
        // The store works on: the merge can be done again or is done.
        env.world_ok(&["merge", "Child"]);
        assert_eq!(
            tree_state(&parent),
            expected_after,
            "{point}: after merging again"
        );
    }
}

#[test]
fn crash_during_undo_finishes_it() {
    for point in ["undo-journaled", "mid-undo"] {
        let env = TestEnv::new();
        let child = family(&env);
        for index in 0..10 {
            fs::write(child.join(format!("srv/www/page{index}.html")), "new\n").unwrap();
        }
        fs::remove_file(child.join("etc/app.conf")).unwrap();
        let parent = env.store.join("pool/worlds/Parent");
        let before = tree_state(&parent);
        env.world_ok(&["merge", "Child"]);
        assert_ne!(tree_state(&parent), before, "{point}");

        let crashed = run(env
            .command(WORLD)
            .env("WORLDS_TEST_CRASH_AT", point)
            .args(["undo", "Parent"])
            .stderr(Stdio::null()));
        assert_eq!(crashed.code, 128 + 6, "{point}: the undo should abort");
        let recovered = env.world_ok(&["recover"]);
        assert!(
            recovered
                .stderr
                .contains("the undo of merge 1 into `Parent` was interrupted; it is now complete"),
            "{point}: {}",
            recovered.stderr
        );
        assert_eq!(
            tree_state(&parent),
            before,
            "{point}: the parent should be at its state before the merge"
        );
        // The child has its old base again, so its changes show once more.
        assert_eq!(
            env.world_ok(&["diff", "Child"]).stdout.lines().count(),
            11,
            "{point}"
        );
        let again = env.world(&["undo", "Parent"]);
        assert_eq!(again.code, 2, "{point}: {}", again.stderr);
    }
}

#[test]
fn empty_merge_not_recorded() {
    let env = TestEnv::new();
    let child = family(&env);
    let nothing = env.world_ok(&["merge", "Child"]);
    assert_eq!(
        nothing.stderr,
        "nothing to merge: `Child` has no change since its base; nothing changed\n"
    );
    fs::write(child.join("etc/app.conf"), "a=2\n").unwrap();
    let outside = env.world_ok(&["merge", "Child", "--only", "/srv"]);
    assert_eq!(
        outside.stderr,
        "nothing to merge: `Child` has no change since its base under the paths of --only; nothing changed\n"
    );
    assert!(!env.world_ok(&["log"]).stdout.contains("merge"));
    let undo = env.world(&["undo", "Parent"]);
    assert_eq!(undo.code, 2, "{}", undo.stderr);

    for root in ["", ".", "/"] {
        let rejected = env.world(&["merge", "Child", "--only", root]);
        assert_eq!(rejected.code, 2, "{root:?}");
        assert!(
            rejected.stderr.contains("names the root of the world"),
            "{root:?}: {}",
            rejected.stderr
        );
    }
    let twice = env.world(&[
        "create", "Both", "Parent", "--with", "Child", "--with", "Child",
    ]);
    assert_eq!(
        (twice.code, twice.stderr.as_str()),
        (
            2,
            "error: sibling `Child` is named twice\nhint: name each sibling once\n"
        )
    );
}

#[test]
fn undo_keeps_later_parent_changes() {
    let env = TestEnv::new();
    let child = family(&env);
    fs::write(child.join("srv/www/index.html"), "v2\n").unwrap();
    env.world_ok(&["merge", "Child"]);
    let parent = env.store.join("pool/worlds/Parent");
    fs::write(parent.join("etc/notes"), "work\n").unwrap();

    let stopped = env.world(&["undo", "Parent"]);
    assert_eq!(stopped.code, 1, "{}", stopped.stderr);
    assert_eq!(
        stopped.stderr,
        "error: world `Parent` changed 1 path since merge 1, such as `/etc/notes`; \
         undoing the merge would lose that change\n\
         hint: merge or copy those changes elsewhere first, or run `world undo --force Parent` to lose them\n"
    );
    assert_eq!(
        fs::read_to_string(parent.join("etc/notes")).unwrap(),
        "work\n"
    );
    assert_eq!(
        fs::read_to_string(parent.join("srv/www/index.html")).unwrap(),
        "v2\n"
    );

    env.world_ok(&["undo", "--force", "Parent"]);
    assert!(!parent.join("etc/notes").exists());
    assert_eq!(
        fs::read_to_string(parent.join("srv/www/index.html")).unwrap(),
        "v1\n"
    );
}

#[test]
fn sibling_conflict_names_siblings() {
    let env = TestEnv::new();
    family(&env);
    env.world_ok(&["create", "Other", "Parent"]);
    for (sibling, text) in [("Child", "one\n"), ("Other", "two\n")] {
        let root = env.store.join("pool/worlds").join(sibling);
        fs::write(root.join("etc/shared"), text).unwrap();
    }

    let combined = env.world(&[
        "create", "Both", "Parent", "--with", "Child", "--with", "Other",
    ]);
    assert_eq!(combined.code, 1, "{}", combined.stderr);
    assert_eq!(
        combined.stdout,
        "conflict write-write /etc/shared: `Other` added it, `Child` added it\n"
    );
    assert_eq!(
        combined.stderr,
        "world `Both` not created: the changes of `Other` conflict with what came before them\n"
    );
}

//! The administrator's scenario from end to end, on a Debian minbase root
//! world that serves a small shop page from an SQLite database:
//!
//! 1. `Parent` runs busybox httpd on its own veth address. Its CGI script
//!    runs `sqlite3` with the query that the local package `site-data`
//!    ships.
//! 2. `Child1` patches the CGI script with `patch`.
//! 3. `Child2` upgrades `site-data` from 1.0 to 1.1 with `dpkg -i`.
//! 4. `wdiff` lists exactly the files each child changed.
//! 5. `wset` shows what each child wrote, read and ran.
//! 6. `Child3` combines both children and serves both changes, side by side
//!    with `Parent`, which still serves the old page.
//! 7. `wmerge Child3 Parent` brings both changes to `Parent`, and `world
//!    undo Parent` takes them back.
//! 8. A conflicting edit of the CGI script in `Parent` makes the merge
//!    fail with exit status 1, naming the conflict and the path.
//!
//! The debootstrap root and the Debian packages are cached under
//! `/var/tmp/worlds-test-cache`, so only the first run needs Debian's
//! archive and the time of debootstrap (about a minute on 2 shared cores).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{run, Run, TestEnv};

/// Where the debootstrap root and the Debian packages are kept between runs.
const CACHE: &str = "/var/tmp/worlds-test-cache";
/// The Debian suite of the root world, which must also be the host's suite
/// because the packages come from the host's apt sources.
const SUITE: &str = "bookworm";
/// Debian packages installed in `Parent`: the web server, the database
/// shell with the libraries that minbase lacks, and `patch`.
const DEBIAN_PACKAGES: &[&str] = &[
    "busybox",
    "libreadline8",
    "libsqlite3-0",
    "patch",
    "readline-common",
    "sqlite3",
];
/// Where `Parent` keeps the package files, so that no child adds them.
const DEBS_IN_WORLD: &str = "root/debs";

/// The CGI script that renders the page, as a path inside the world.
const CGI: &str = "/var/www/cgi-bin/index.cgi";
const CGI_SCRIPT: &str = "#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo \"Corner shop\"
/usr/bin/sqlite3 /var/lib/site/shop.db < /usr/share/site-data/query.sql
";
/// The change that `Child1` applies with `patch`.
const CGI_PATCH: &str = "--- index.cgi
+++ index.cgi
@@ -1,4 +1,4 @@
 #!/bin/sh
 printf 'Content-Type: text/plain\\r\\n\\r\\n'
-echo \"Corner shop\"
+echo \"Corner shop, open on Sundays\"
 /usr/bin/sqlite3 /var/lib/site/shop.db < /usr/share/site-data/query.sql
";
/// The query that `site-data` 1.0 ships.
const QUERY_1_0: &str = "SELECT name || ' ' || price FROM items ORDER BY name;\n";
/// The query that `site-data` 1.1 ships, which adds the currency.
const QUERY_1_1: &str = "SELECT name || ' ' || price || ' EUR' FROM items ORDER BY name;\n";

const OLD_PAGE: &str = "Corner shop\napples 3\npears 4\n";
const NEW_PAGE: &str = "Corner shop, open on Sundays\napples 3 EUR\npears 4 EUR\n";
const CLOSED_PAGE: &str = "Corner shop, closed for repairs\napples 3\npears 4\n";

const CHILD1_DIFF: &str = "M\t/var/www/cgi-bin/index.cgi\n";
/// The package's file, then dpkg's own records: the file list and lock
/// files get a new mtime only, the status files and checksums new data.
const CHILD2_DIFF: &str = "\
M\t/usr/share/site-data/query.sql
m\t/var/lib/dpkg/info/site-data.list
M\t/var/lib/dpkg/info/site-data.md5sums
m\t/var/lib/dpkg/lock
m\t/var/lib/dpkg/lock-frontend
M\t/var/lib/dpkg/status
M\t/var/lib/dpkg/status-old
m\t/var/lib/dpkg/triggers/Lock
M\t/var/log/dpkg.log
";

#[test]
fn administrator_scenario() {
    let env = TestEnv::new();
    let started = Instant::now();
    let aliases = env.folder().join("bin");
    std::fs::create_dir(&aliases).unwrap();
    env.world_ok(&["install-aliases", aliases.to_str().unwrap()]);
    // A subnet of this test run's own, so that two test suites running at
    // once do not route the same addresses.
    let subnet = format!("10.213.{}.0/28", 1 + std::process::id() % 250);

    // 1. Parent serves the page of site-data 1.0.
    init_parent(&env);
    eprintln!("root world ready after {:.1?}", started.elapsed());
    let parent = start_on_veth(&env, "Parent", "start", &subnet);
    set_up_site(&env);
    run_httpd(&env, "Parent");
    assert_eq!(fetch_page(parent), OLD_PAGE);

    // 2. Child1 patches the CGI script.
    let wcreate = aliases.join("wcreate");
    let wexec = aliases.join("wexec");
    let wdiff = aliases.join("wdiff");
    for child in ["Child1", "Child2"] {
        let created = run(env
            .command(&wcreate)
            .args([child, "Parent", "--network", "none"]));
        assert_eq!(created.code, 0, "wcreate {child}: {}", created.stderr);
    }
    let patched = run_with_input(
        env.command(&wexec).args(["Child1", "--", "patch", CGI]),
        CGI_PATCH,
    );
    assert_eq!(patched.code, 0, "patch in Child1: {}", patched.stderr);
    assert_eq!(patched.stdout, format!("patching file {CGI}\n"));

    // 3. Child2 upgrades site-data.
    let deb = format!("/{DEBS_IN_WORLD}/site-data_1.1_all.deb");
    let upgraded = run(env
        .command(&wexec)
        .args(["Child2", "--", "dpkg", "-i", &deb]));
    assert_eq!(upgraded.code, 0, "dpkg -i in Child2: {}", upgraded.stderr);
    assert!(
        upgraded.stdout.contains("Setting up site-data (1.1)"),
        "{}",
        upgraded.stdout
    );

    // 4. The diffs list exactly what each child changed.
    let diff1 = run(env.command(&wdiff).args(["Child1", "Parent"]));
    assert_eq!(diff1.code, 0, "{}", diff1.stderr);
    assert_eq!(diff1.stdout, CHILD1_DIFF);
    let diff2 = run(env.command(&wdiff).args(["Child2", "Parent"]));
    assert_eq!(diff2.code, 0, "{}", diff2.stderr);
    assert_eq!(diff2.stdout, CHILD2_DIFF);

    // 5. What the children wrote and ran.
    check_access_sets(&env, &aliases.join("wset"));

    // 6. Child3 combines both children and serves both changes, while
    // Parent still serves the old page.
    let created = run(env.command(&wcreate).args(["Child3", "Child1", "Child2"]));
    assert_eq!(created.code, 0, "wcreate Child3: {}", created.stderr);
    let child3 = serve(&env, "Child3", "start", &subnet);
    assert_ne!(child3, parent);
    assert_eq!(fetch_page(child3), NEW_PAGE);
    assert_eq!(fetch_page(parent), OLD_PAGE);
    let combined = combined_diff();
    assert_eq!(env.world_ok(&["diff", "Child3", "Parent"]).stdout, combined);

    // 7. The merge brings both changes to Parent, and undo takes them back.
    let wmerge = aliases.join("wmerge");
    let merged = run(env.command(&wmerge).args(["Child3", "Parent"]));
    assert_eq!(merged.code, 0, "wmerge Child3 Parent: {}", merged.stderr);
    assert!(
        merged.stderr.contains("merged `Child3` into `Parent`"),
        "{}",
        merged.stderr
    );
    assert_eq!(env.world_ok(&["diff", "Child3"]).stdout, "");
    let parent = serve(&env, "Parent", "restart", &subnet);
    assert_eq!(fetch_page(parent), NEW_PAGE);

    let undone = env.world_ok(&["undo", "Parent"]);
    assert!(
        undone
            .stderr
            .contains("undid merge 1 of `Child3` into `Parent`"),
        "{}",
        undone.stderr
    );
    let parent = serve(&env, "Parent", "restart", &subnet);
    assert_eq!(fetch_page(parent), OLD_PAGE);
    assert_eq!(env.world_ok(&["diff", "Child3"]).stdout, combined);
    // After the undo, Parent is as Child3's base left it: nothing conflicts.
    let plan = env.world(&["merge", "--dry-run", "Child3", "Parent"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);

    // 8. An edit of the same line in Parent conflicts with Child3's patch.
    env.world_ok(&[
        "exec",
        "Parent",
        "--",
        "sed",
        "-i",
        "s/Corner shop/Corner shop, closed for repairs/",
        CGI,
    ]);
    assert_eq!(fetch_page(parent), CLOSED_PAGE);
    let rejected = run(env.command(&wmerge).args(["Child3", "Parent"]));
    assert_eq!(rejected.code, 1, "{}{}", rejected.stdout, rejected.stderr);
    assert!(
        rejected
            .stdout
            .contains(&format!("conflict write-write {CGI}: ")),
        "{}",
        rejected.stdout
    );
    assert_eq!(rejected.stdout.lines().count(), 1, "{}", rejected.stdout);
    assert!(
        rejected
            .stderr
            .contains("merge of `Child3` into `Parent` refused: 1 conflict; nothing changed"),
        "{}",
        rejected.stderr
    );
    assert_eq!(fetch_page(parent), CLOSED_PAGE);
    let parent_changes = env.world_ok(&["diff", "--parent", "Child3"]).stdout;
    assert!(
        parent_changes.ends_with(&format!(
            "# changes of parent `Parent` since the base of `Child3`\nM\t{CGI}\n"
        )),
        "{parent_changes}"
    );

    env.world_ok(&["stop", "--all"]);
    eprintln!("scenario done after {:.1?}", started.elapsed());
}

/// Checks the access sets that `world set` records while a world runs.
/// `Child1` wrote the patched script and ran `patch`. `Child2` read the
/// package file, wrote its query and dpkg's status, and ran `dpkg`.
fn check_access_sets(env: &TestEnv, wset: &Path) {
    let writes = access_set(env, wset, &["Child1", "--writes"]);
    assert_operation(&writes, CGI, "WRITE");
    let execs = access_set(env, wset, &["Child1", "--execs"]);
    assert_operation(&execs, "/usr/bin/patch", "EXEC");
    let only_cgi = access_set(env, wset, &["Child1", "--", CGI]);
    assert!(
        only_cgi.lines().all(|line| line.starts_with(CGI)),
        "{only_cgi}"
    );

    let writes = access_set(env, wset, &["Child2", "--writes"]);
    assert_operation(&writes, "/usr/share/site-data/query.sql", "WRITE");
    assert_operation(&writes, "/var/lib/dpkg/status", "WRITE");
    let execs = access_set(env, wset, &["Child2", "--execs"]);
    assert_operation(&execs, "/usr/bin/dpkg", "EXEC");
    let reads = access_set(env, wset, &["Child2", "--reads"]);
    assert_operation(
        &reads,
        &format!("/{DEBS_IN_WORLD}/site-data_1.1_all.deb"),
        "READ",
    );
}

/// Runs `wset ARGS` and returns its output, one `PATH: OPERATION, ...` line
/// a path.
fn access_set(env: &TestEnv, wset: &Path, args: &[&str]) -> String {
    let result = run(env.command(wset).args(args));
    assert_eq!(result.code, 0, "wset {args:?}: {}", result.stderr);
    result.stdout
}

/// Asserts that the access set `listing` has a line for `path` that names
/// `operation`.
fn assert_operation(listing: &str, path: &str, operation: &str) {
    let prefix = format!("{path}: ");
    let line = listing
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {path} in:\n{listing}"));
    let operations: Vec<&str> = line[prefix.len()..].split(", ").collect();
    assert!(
        operations.contains(&operation),
        "{path} has {operations:?}, not {operation}"
    );
}

/// Returns the diff of `Child3`: the changes of both children, in path
/// order.
fn combined_diff() -> String {
    let mut lines: Vec<&str> = CHILD1_DIFF.lines().chain(CHILD2_DIFF.lines()).collect();
    lines.sort_by_key(|line| line.split_once('\t').unwrap().1);
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Creates the root world `Parent` from the cached debootstrap tar, or
/// runs debootstrap through `world init` and caches the result.
fn init_parent(env: &TestEnv) {
    let tar = Path::new(CACHE).join(format!("debootstrap-{SUITE}-minbase.tar"));
    if tar.exists() {
        env.world_ok(&[
            "init",
            "Parent",
            "--from-tar",
            tar.to_str().unwrap(),
            "--pool-size",
            "2G",
        ]);
        return;
    }

    env.world_ok(&[
        "init",
        "Parent",
        "--debootstrap",
        SUITE,
        "--pool-size",
        "2G",
    ]);
    std::fs::create_dir_all(CACHE).unwrap();
    // Another run may write the same cache at the same time: each writes
    // its own file and renames it into place.
    let partial = tar.with_extension(format!("tar.{}", std::process::id()));
    let status = Command::new("tar")
        .args([
            "--create",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
        ])
        .arg("--file")
        .arg(&partial)
        .arg("--directory")
        .arg(world_dir(env, "Parent"))
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the debootstrap root failed");
    std::fs::rename(&partial, &tar).unwrap();
}

/// Returns the cache folder of the Debian packages, downloading them with
/// `apt-get download` on the first run.
fn debian_packages() -> PathBuf {
    let folder = Path::new(CACHE).join(format!("debs-{SUITE}"));
    if folder.exists() {
        return folder;
    }

    let partial = Path::new(CACHE).join(format!("debs-{SUITE}.{}", std::process::id()));
    std::fs::create_dir_all(&partial).unwrap();
    // apt downloads as the unprivileged user `_apt` where it can write.
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
    let download = run(Command::new("apt-get")
        .arg("download")
        .args(DEBIAN_PACKAGES)
        .current_dir(&partial));
    assert_eq!(download.code, 0, "apt-get download: {}", download.stderr);
    if std::fs::rename(&partial, &folder).is_err() {
        // Another run cached them first.
        std::fs::remove_dir_all(&partial).unwrap();
    }
    folder
}

/// Builds version `version` of the package `site-data` in `folder`, which
/// ships `query` as the page's query, and returns the package file's path.
fn build_site_data(folder: &Path, version: &str, query: &str) -> PathBuf {
    let root = folder.join(format!("site-data-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/site-data")).unwrap();
    let control = format!(
        "Package: site-data\nVersion: {version}\nArchitecture: all\n\
         Maintainer: worlds tests <root@localhost>\nDepends: sqlite3\n\
         Description: query of the shop page\n"
    );
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    std::fs::write(root.join("usr/share/site-data/query.sql"), query).unwrap();
    let deb = folder.join(format!("site-data_{version}_all.deb"));
    let built = run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb));
    assert_eq!(built.code, 0, "dpkg-deb --build: {}", built.stderr);
    deb
}

/// Installs the packages, the database and the CGI script in `Parent`.
fn set_up_site(env: &TestEnv) {
    let parent = world_dir(env, "Parent");
    let debs = parent.join(DEBS_IN_WORLD);
    std::fs::create_dir_all(&debs).unwrap();
    for entry in std::fs::read_dir(debian_packages()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, debs.join(path.file_name().unwrap())).unwrap();
    }
    build_site_data(&debs, "1.0", QUERY_1_0);
    build_site_data(&debs, "1.1", QUERY_1_1);
    for version in ["1.0", "1.1"] {
        std::fs::remove_dir_all(debs.join(format!("site-data-{version}"))).unwrap();
    }

    // One dpkg call orders the packages by their dependencies.
    let mut install = String::from("dpkg -i");
    for package in DEBIAN_PACKAGES {
        install.push_str(&format!(" /{DEBS_IN_WORLD}/{package}_*.deb"));
    }
    install.push_str(&format!(" /{DEBS_IN_WORLD}/site-data_1.0_all.deb"));
    let installed = env.world(&["exec", "Parent", "--", "sh", "-c", &install]);
    assert_eq!(installed.code, 0, "dpkg -i in Parent: {}", installed.stderr);
    env.world_ok(&[
        "exec",
        "Parent",
        "--",
        "sh",
        "-c",
        "mkdir -p /var/lib/site && sqlite3 /var/lib/site/shop.db \
         \"CREATE TABLE items (name TEXT, price INTEGER); \
         INSERT INTO items VALUES ('apples', 3), ('pears', 4);\"",
    ]);

    let cgi = parent.join(CGI.trim_start_matches('/'));
    std::fs::create_dir_all(cgi.parent().unwrap()).unwrap();
    std::fs::write(&cgi, CGI_SCRIPT).unwrap();
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts or restarts world `name` with `command` (`start` or `restart`)
/// and busybox httpd in it, and returns the address of the web server.
fn serve(env: &TestEnv, name: &str, command: &str, subnet: &str) -> SocketAddr {
    let address = start_on_veth(env, name, command, subnet);
    run_httpd(env, name);
    address
}

/// Starts or restarts world `name` with `command` (`start` or `restart`)
/// on a veth address, and returns the address of its web server.
fn start_on_veth(env: &TestEnv, name: &str, command: &str, subnet: &str) -> SocketAddr {
    // Without --network a root world starts on the host's network, which
    // is the setting that `world init` stores. A restart keeps the network
    // of the run it stops.
    if command == "restart" {
        env.world_ok(&[command, name, "--subnet", subnet]);
    } else {
        env.world_ok(&[command, name, "--network", "veth", "--subnet", subnet]);
    }
    let shown = env.world_ok(&["show", name, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let address = shown["run"]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("world `{name}` has no address: {shown}"));
    SocketAddr::new(address.parse().unwrap(), 80)
}

/// Runs busybox httpd on port 80 of world `name`, serving `/var/www`.
fn run_httpd(env: &TestEnv, name: &str) {
    env.world_ok(&[
        "exec", name, "--", "busybox", "httpd", "-p", "80", "-h", "/var/www",
    ]);
}

/// Returns the body of the shop page that the server at `address` serves,
/// with a plain HTTP/1.0 GET.
fn fetch_page(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .unwrap_or_else(|error| panic!("connect to {address}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /cgi-bin/index.cgi HTTP/1.0\r\nHost: shop\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();

    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers from {address}: {response:?}"));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "GET from {address}: {response:?}"
    );
    body.to_owned()
}

/// Runs `command` with `input` on its stdin.
fn run_with_input(command: &mut Command, input: &str) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the world binary");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Returns the host path of world `name`'s root.
fn world_dir(env: &TestEnv, name: &str) -> PathBuf {
    env.store.join("pool/worlds").join(name)
}

use std::fs;
use std::os::unix::fs::MetadataExt;

use worlds::store::{Cleanup, DeleteOptions, StoreError};
use worlds::sys::btrfs;
use worlds::Store;

use crate::common::{busybox, name, TestStore};

#[test]
fn nesting_three_deep() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    fs::write(store.world_path(&name("root")).join("etc/motd"), "root\n").unwrap();
    store.create_child(&name("a"), &name("root")).unwrap();
    fs::write(store.world_path(&name("a")).join("etc/motd"), "a\n").unwrap();
    store.create_child(&name("b"), &name("a")).unwrap();
    // The parent's later writes stay invisible to the child.
    fs::write(store.world_path(&name("a")).join("etc/motd"), "a, later\n").unwrap();
    store.create_child(&name("c"), &name("b")).unwrap();

    let motd =
        |world: &str| fs::read_to_string(store.world_path(&name(world)).join("etc/motd")).unwrap();
    assert_eq!(motd("root"), "root\n");
    assert_eq!(motd("a"), "a, later\n");
    assert_eq!(motd("b"), "a\n");
    assert_eq!(motd("c"), "a\n");
    let worlds: Vec<(String, Option<String>)> = store
        .worlds()
        .unwrap()
        .into_iter()
        .map(|world| (world.name.to_string(), world.parent.map(|p| p.to_string())))
        .collect();
    assert_eq!(
        worlds,
        [
            ("root".into(), None),
            ("a".into(), Some("root".into())),
            ("b".into(), Some("a".into())),
            ("c".into(), Some("b".into())),
        ]
    );
}

#[test]
fn base_is_read_only_snapshot_of_parent() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    store.create_child(&name("child"), &name("root")).unwrap();

    let base = store.base_path(&name("child"));
    let child = store.world_path(&name("child"));
    assert!(btrfs::is_subvolume(&base).unwrap());
    assert!(btrfs::is_read_only(&fs::File::open(&base).unwrap()).unwrap());
    assert!(!btrfs::is_read_only(&fs::File::open(&child).unwrap()).unwrap());
    // Unchanged files keep inode number and ctime in a snapshot, which is
    // what diff relies on.
    let in_base = fs::symlink_metadata(base.join("etc/passwd")).unwrap();
    let in_child = fs::symlink_metadata(child.join("etc/passwd")).unwrap();
    assert_eq!(in_base.ino(), in_child.ino());
    assert_eq!(in_base.ctime_nsec(), in_child.ctime_nsec());
    let details = store.details(&name("child")).unwrap();
    assert_ne!(details.subvolume_id, details.base_subvolume_id);
    assert!(store.details(&name("root")).unwrap().base.is_none());
}

#[test]
fn delete_refusals() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    store.create_child(&name("a"), &name("root")).unwrap();
    store.create_child(&name("b"), &name("a")).unwrap();

    let error = store
        .delete(&name("a"), &DeleteOptions::default())
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::HasChildren { children, .. } if children == &[name("b")]),
        "{error}"
    );
    let wrong_parent = DeleteOptions {
        expected_parent: Some(name("root")),
        ..DeleteOptions::default()
    };
    let error = store.delete(&name("b"), &wrong_parent).unwrap_err();
    assert!(matches!(error, StoreError::WrongParent { .. }), "{error}");
    let error = store
        .delete(&name("nope"), &DeleteOptions::default())
        .unwrap_err();
    assert!(matches!(error, StoreError::WorldNotFound { .. }), "{error}");
    // Nothing was lost by the refusals.
    assert_eq!(store.worlds().unwrap().len(), 3);
    assert!(store.world_path(&name("b")).exists());
}

#[test]
fn delete_with_expected_parent() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    store.create_child(&name("a"), &name("root")).unwrap();
    let options = DeleteOptions {
        expected_parent: Some(name("root")),
        ..DeleteOptions::default()
    };
    assert_eq!(store.delete(&name("a"), &options).unwrap(), [name("a")]);
    assert!(!store.world_path(&name("a")).exists());
    assert!(!store.base_path(&name("a")).exists());
}

#[test]
fn delete_recursive_removes_subtree() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    store.create_child(&name("a"), &name("root")).unwrap();
    store.create_child(&name("b"), &name("a")).unwrap();
    store.create_child(&name("keep"), &name("root")).unwrap();

    let options = DeleteOptions {
        recursive: true,
        ..DeleteOptions::default()
    };
    let deleted = store.delete(&name("a"), &options).unwrap();
    assert_eq!(deleted, [name("b"), name("a")]);
    let left: Vec<String> = store
        .worlds()
        .unwrap()
        .iter()
        .map(|w| w.name.to_string())
        .collect();
    assert_eq!(left, ["root", "keep"]);
    for gone in ["a", "b"] {
        assert!(!store.world_path(&name(gone)).exists());
        assert!(!store.base_path(&name(gone)).exists());
    }
    let log = store.operations(1).unwrap();
    assert_eq!(log[0].kind, "delete");
    assert_eq!(log[0].args["deleted"], serde_json::json!(["b", "a"]));
}

#[test]
fn delete_world_with_nested_subvolume() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    store.create_child(&name("a"), &name("root")).unwrap();
    let tmp = fs::File::open(store.world_path(&name("a")).join("tmp")).unwrap();
    btrfs::create_subvolume(&tmp, "inner".as_ref()).unwrap();
    let inner = fs::File::open(store.world_path(&name("a")).join("tmp/inner")).unwrap();
    btrfs::create_subvolume(&inner, "deeper".as_ref()).unwrap();
    drop((tmp, inner));

    store.delete(&name("a"), &DeleteOptions::default()).unwrap();
    assert!(!store.world_path(&name("a")).exists());
}

#[test]
fn duplicate_and_missing_names() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    let error = store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap_err();
    assert!(matches!(error, StoreError::WorldExists { .. }), "{error}");
    let error = store
        .create_child(&name("root"), &name("root"))
        .unwrap_err();
    assert!(matches!(error, StoreError::WorldExists { .. }), "{error}");
    let error = store
        .create_child(&name("x"), &name("missing"))
        .unwrap_err();
    assert!(matches!(error, StoreError::WorldNotFound { .. }), "{error}");
    assert_eq!(store.worlds().unwrap().len(), 1);
}

#[test]
fn concurrent_create_one_wins() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    drop(store);

    for round in 0..5 {
        let child = name(&format!("race{round}"));
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let (mut store, _) = Store::open(&fixture.dir).unwrap();
                        barrier.wait();
                        store.create_child(&child, &name("root")).map(drop)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        let won = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        let lost = results
            .iter()
            .find_map(|result| result.as_ref().err())
            .unwrap();
        assert!(
            matches!(lost, StoreError::WorldExists { .. }),
            "round {round}: {lost}"
        );
    }
    let (store, cleanups) = Store::open(&fixture.dir).unwrap();
    assert_eq!(cleanups, []);
    assert_eq!(store.worlds().unwrap().len(), 6);
}

#[test]
fn orphans_removed_on_open() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    // What a crash between snapshot and record leaves: snapshots without a
    // record, and a half-filled import of a process that is gone.
    let source = fs::File::open(store.world_path(&name("root"))).unwrap();
    let pool = fixture.dir.join("pool");
    let worlds = fs::File::open(pool.join("worlds")).unwrap();
    let bases = fs::File::open(pool.join("bases")).unwrap();
    let tmp = fs::File::open(pool.join("tmp")).unwrap();
    btrfs::snapshot(&source, &bases, "ghost".as_ref(), true).unwrap();
    btrfs::snapshot(&source, &worlds, "ghost".as_ref(), false).unwrap();
    btrfs::create_subvolume(&tmp, "import.999999999.half".as_ref()).unwrap();
    drop(store);

    let (mut store, cleanups) = Store::open(&fixture.dir).unwrap();
    let removed: Vec<String> = cleanups
        .iter()
        .map(|cleanup| match cleanup {
            Cleanup::Removed { path } => path.display().to_string(),
            other => panic!("unexpected clean-up {other:?}"),
        })
        .collect();
    assert_eq!(
        removed,
        ["worlds/ghost", "bases/ghost", "tmp/import.999999999.half"]
    );
    assert!(!pool.join("worlds/ghost").exists());
    assert_eq!(store.operations(1).unwrap()[0].kind, "reconcile");
    // The name is free again.
    store.create_child(&name("ghost"), &name("root")).unwrap();
}

#[test]
fn missing_subvolume_reported() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    store.create_child(&name("a"), &name("root")).unwrap();
    let worlds = fs::File::open(fixture.dir.join("pool/worlds")).unwrap();
    btrfs::delete_subvolume(&worlds, "a".as_ref()).unwrap();
    drop(store);

    let (mut store, cleanups) = Store::open(&fixture.dir).unwrap();
    assert_eq!(
        cleanups,
        [Cleanup::Missing {
            path: "worlds/a".into()
        }]
    );
    // Deleting the world removes the record and the remaining base.
    store.delete(&name("a"), &DeleteOptions::default()).unwrap();
    let (_, cleanups) = Store::open(&fixture.dir).unwrap();
    assert_eq!(cleanups, []);
}

#[test]
fn pool_mounted_again_after_unmount() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    drop(store);
    worlds::pool::unmount(&fixture.dir).unwrap();
    assert!(!worlds::pool::is_mounted(&fixture.dir).unwrap());
    let image = fixture.dir.join("pool.img");
    assert_eq!(worlds::sys::loopdev::find_attached(&image).unwrap(), None);

    let (store, _) = Store::open(&fixture.dir).unwrap();
    assert!(worlds::pool::is_mounted(&fixture.dir).unwrap());
    assert!(store.world_path(&name("root")).join("bin/busybox").exists());
    let info = store.pool_info().unwrap();
    assert_eq!(
        info.device,
        worlds::sys::loopdev::find_attached(&image).unwrap()
    );
    assert!(info.device.is_some());
}

#[test]
fn pool_grows_online() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    let before = store.pool_info().unwrap().size;
    store.grow_pool(2 * crate::common::POOL_SIZE).unwrap();
    let after = store.pool_info().unwrap().size;
    assert!(
        after > before + crate::common::POOL_SIZE / 2,
        "{before} -> {after}"
    );
    let error = store.grow_pool(crate::common::POOL_SIZE).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Pool(worlds::pool::PoolError::NotLarger { .. })
        ),
        "{error}"
    );
    assert_eq!(store.operations(1).unwrap()[0].kind, "store-grow");
}

#[test]
fn open_without_store_fails() {
    let fixture = TestStore::new();
    let error = Store::open(&fixture.dir).unwrap_err();
    assert!(matches!(error, StoreError::NoStore { .. }), "{error}");
    assert!(!fixture.dir.exists());
}

#[test]
fn store_on_btrfs_used_directly() {
    let fixture = TestStore::new();
    let mut outer = fixture.open();
    outer
        .create_root(&name("holder"), &busybox(), &|_| {})
        .unwrap();
    // A store whose directory is already on btrfs gets no image of its own.
    let inner_dir = outer.world_path(&name("holder")).join("var/lib/inner");
    let (mut inner, _) = Store::create(&inner_dir, None).unwrap();
    assert!(!inner_dir.join("pool.img").exists());
    assert_eq!(
        inner.pool_info().unwrap().kind,
        worlds::pool::PoolKind::Direct
    );
    inner
        .create_root(&name("root"), &busybox(), &|_| {})
        .unwrap();
    inner.create_child(&name("child"), &name("root")).unwrap();
    let error = inner.grow_pool(1 << 40).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Pool(worlds::pool::PoolError::NotImage { .. })
        ),
        "{error}"
    );
    inner
        .delete(
            &name("root"),
            &DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        )
        .unwrap();
}

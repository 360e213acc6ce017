//! Tests of layer application: small layers built here with the tar crate.

use super::*;

/// A layer from (path, kind) members: `Some(data)` a file, `None` a
/// directory; links are added with [`link`].
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(100);
        set_raw_path(&mut h, path);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(mode);
        set_raw_path(&mut h, path);
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        set_raw_path(&mut h, path);
        let name = h.as_old_mut().linkname.as_mut();
        name.fill(0);
        name[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// Writes the name field directly: the tar crate's setters refuse `..`,
/// which is exactly what a hostile layer has.
fn set_raw_path(h: &mut tar::Header, path: &str) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
}

fn unpack(layers: Vec<Vec<u8>>) -> (tempfile::TempDir, Result<Unpacker>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut u = Unpacker::new(&root);
    for l in layers {
        if let Err(e) = u.apply(&l[..]) {
            return (dir, Err(e));
        }
    }
    (dir, u.finish().map(|()| u))
}

fn read(dir: &tempfile::TempDir, rel: &str) -> Option<String> {
    fs::read_to_string(dir.path().join("root").join(rel)).ok()
}

fn exists(dir: &tempfile::TempDir, rel: &str) -> bool {
    fs::symlink_metadata(dir.path().join("root").join(rel)).is_ok()
}

#[test]
fn later_layers_replace_earlier_ones() {
    let l1 = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/a", b"one")
        .file("etc/b", b"b")
        .bytes();
    let l2 = Layer::new().file("etc/a", b"two").bytes();
    let (dir, r) = unpack(vec![l1, l2]);
    let u = r.unwrap();
    assert_eq!(read(&dir, "etc/a").as_deref(), Some("two"));
    assert_eq!(read(&dir, "etc/b").as_deref(), Some("b"));
    let attr = u
        .attrs()
        .find(|(p, _)| p.as_path() == Path::new("etc/a"))
        .map(|(_, a)| *a)
        .unwrap();
    assert_eq!((attr.uid, attr.gid, attr.mode), (1000, 100, 0o644));
}

#[test]
fn whiteout_deletes_a_file_or_a_tree_of_the_layer_below() {
    let l1 = Layer::new()
        .file("usr/bin/gone", b"x")
        .file("usr/bin/kept", b"k")
        .file("var/lib/tree/deep/f", b"f")
        .bytes();
    let l2 = Layer::new()
        .file("usr/bin/.wh.gone", b"")
        .file("var/lib/.wh.tree", b"")
        .bytes();
    let (dir, r) = unpack(vec![l1, l2]);
    r.unwrap();
    assert!(!exists(&dir, "usr/bin/gone"));
    assert!(!exists(&dir, "usr/bin/.wh.gone"), "whiteout file written");
    assert!(!exists(&dir, "var/lib/tree"));
    assert!(exists(&dir, "usr/bin/kept"));
    // A whiteout in a directory no layer made makes nothing.
    let l3 = Layer::new().file("nowhere/.wh.x", b"").bytes();
    let (dir, r) = unpack(vec![l3]);
    r.unwrap();
    assert!(!exists(&dir, "nowhere"));
}

#[test]
fn opaque_directory_hides_the_layers_below_but_not_its_own_layer() {
    let l1 = Layer::new()
        .file("opt/old", b"o")
        .file("opt/sub/old", b"o")
        .file("other/x", b"x")
        .bytes();
    // The marker after this layer's own files: they stay.
    let l2 = Layer::new()
        .file("opt/sub/new", b"n")
        .file("opt/new", b"n")
        .file("opt/.wh..wh..opq", b"")
        .bytes();
    let (dir, r) = unpack(vec![l1, l2]);
    r.unwrap();
    assert!(!exists(&dir, "opt/old"));
    assert!(!exists(&dir, "opt/sub/old"));
    assert!(!exists(&dir, "opt/.wh..wh..opq"));
    assert_eq!(read(&dir, "opt/new").as_deref(), Some("n"));
    assert_eq!(read(&dir, "opt/sub/new").as_deref(), Some("n"));
    assert!(exists(&dir, "other/x"));
}

#[test]
fn dot_dot_paths_are_refused() {
    for path in ["../escape", "a/../../escape", "./../escape"] {
        let l = Layer::new().file(path, b"evil").bytes();
        let (dir, r) = unpack(vec![l]);
        assert!(
            matches!(r, Err(UnpackError::Escapes(_))),
            "{path}: {:?}",
            r.err()
        );
        assert!(!dir.path().join("escape").exists(), "{path} escaped");
    }
}

#[test]
fn absolute_paths_land_inside_the_root() {
    let l = Layer::new().file("/etc/abs", b"in").bytes();
    let (dir, r) = unpack(vec![l]);
    r.unwrap();
    assert_eq!(read(&dir, "etc/abs").as_deref(), Some("in"));
}

#[test]
fn symlinks_pointing_outside_are_followed_inside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    // An absolute link to a host directory, a relative one climbing out.
    let l1 = Layer::new()
        .link(tar::EntryType::Symlink, "abs", &target)
        .link(tar::EntryType::Symlink, "rel", "../../../../..")
        .bytes();
    let l2 = Layer::new()
        .file("abs/through-abs", b"x")
        .file("rel/through-rel", b"y")
        .bytes();
    let (dir, r) = unpack(vec![l1, l2]);
    r.unwrap();
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "wrote outside"
    );
    // The absolute link resolves from the image's root.
    let inside = format!("{}/through-abs", target.trim_start_matches('/'));
    assert_eq!(read(&dir, &inside).as_deref(), Some("x"));
    assert_eq!(read(&dir, "through-rel").as_deref(), Some("y"));
    // The links themselves are kept as they are, for the guest.
    let link = fs::read_link(dir.path().join("root/abs")).unwrap();
    assert_eq!(link, PathBuf::from(&target));
}

#[test]
fn a_file_member_replaces_a_symlink_instead_of_writing_through_it() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"safe").unwrap();
    let l1 = Layer::new()
        .link(tar::EntryType::Symlink, "f", victim.to_str().unwrap())
        .bytes();
    let l2 = Layer::new().file("f", b"evil").bytes();
    let (dir, r) = unpack(vec![l1, l2]);
    r.unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"safe");
    assert_eq!(read(&dir, "f").as_deref(), Some("evil"));
}

#[test]
fn hard_links_stay_inside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"s").unwrap();
    let good = Layer::new()
        .file("a", b"data")
        .link(tar::EntryType::Link, "b", "a")
        .bytes();
    let (dir, r) = unpack(vec![good]);
    r.unwrap();
    assert_eq!(read(&dir, "b").as_deref(), Some("data"));

    let target = format!("{}/secret", outside.path().display());
    let bad = Layer::new()
        .link(tar::EntryType::Link, "c", &target)
        .bytes();
    let (dir, r) = unpack(vec![bad]);
    assert!(
        matches!(r, Err(UnpackError::BadHardLink(_))),
        "{:?}",
        r.err()
    );
    assert!(!exists(&dir, "c"));
}

#[test]
fn whiteouts_cannot_delete_outside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("keep"), b"k").unwrap();
    let l1 = Layer::new()
        .link(
            tar::EntryType::Symlink,
            "out",
            outside.path().to_str().unwrap(),
        )
        .bytes();
    let l2 = Layer::new().file("out/.wh.keep", b"").bytes();
    let (_dir, r) = unpack(vec![l1, l2]);
    r.unwrap();
    assert!(outside.path().join("keep").exists());
}

#[test]
fn read_only_directories_are_filled_and_keep_their_mode() {
    let l1 = Layer::new().dir("ro/", 0o555).file("ro/a", b"a").bytes();
    let l2 = Layer::new()
        .file("ro/b", b"b")
        .file("ro/.wh.a", b"")
        .bytes();
    let (dir, r) = unpack(vec![l1, l2]);
    r.unwrap();
    assert!(!exists(&dir, "ro/a"));
    assert_eq!(read(&dir, "ro/b").as_deref(), Some("b"));
    let mode = fs::metadata(dir.path().join("root/ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o555);
}

#[test]
fn device_nodes_are_skipped() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Char);
    h.set_path("dev/null").unwrap();
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let (dir, r) = unpack(vec![b.into_inner().unwrap()]);
    r.unwrap();
    assert!(!exists(&dir, "dev/null"));
}

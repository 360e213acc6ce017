//! Tests of reading whole images: an OCI layout and a docker archive made
//! here (a gzip layer, then a zstd one deleting a file of the first), packed
//! to a disk that debugfs reads back.

use super::*;
use crate::oci::source::{sha256_hex, Source};

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(1234);
        h.set_gid(55);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Blobs(Vec<(String, Vec<u8>)>);

impl Blobs {
    fn add(&mut self, data: Vec<u8>) -> String {
        let hex = sha256_hex(&data);
        self.0.push((format!("blobs/sha256/{hex}"), data));
        format!("sha256:{hex}")
    }
}

/// The image's files: (name, data) for an OCI layout.
fn oci_image(diff_id_override: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let l1 = layer(&[
        ("bin/tool", b"tool"),
        ("etc/gone", b"x"),
        ("etc/kept", b"k"),
    ]);
    let l2 = layer(&[("etc/.wh.gone", b""), ("etc/new", b"n")]);
    let mut blobs = Blobs(Vec::new());
    let d1 = blobs.add(gzip(&l1));
    // The second layer zstd-compressed (tar+zstd), the first gzip.
    let d2 = blobs.add(ruzstd::encoding::compress_to_vec(
        &l2[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    let id1 =
        diff_id_override.map_or_else(|| format!("sha256:{}", sha256_hex(&l1)), str::to_string);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/tool"],"Env":["A=b"],"WorkingDir":"/w"}},"rootfs":{{"type":"layers","diff_ids":["{id1}","sha256:{}"]}}}}"#,
        sha256_hex(&l2)
    );
    let c = blobs.add(config.into_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d1}","size":1}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{d2}","size":1}}]}}"#
    );
    let m = blobs.add(manifest.into_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","size":1}}]}}"#
    );
    let mut files = blobs.0;
    files.push(("index.json".into(), index.into_bytes()));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    files
}

fn write_dir(files: &[(String, Vec<u8>)], dir: &Path) {
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

fn write_tar(files: &[(String, Vec<u8>)], path: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

fn debugfs(disk: &Path, cmd: &str) -> String {
    let out = Command::new(find_tool("debugfs").unwrap())
        .args(["-R", cmd])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tools_present() -> bool {
    let ok = find_tool("mkfs.ext4").is_some() && find_tool("debugfs").is_some();
    if !ok {
        eprintln!("SKIPPED: mkfs.ext4/debugfs not installed (e2fsprogs)");
    }
    ok
}

#[test]
fn oci_layout_becomes_a_cached_disk_without_the_deleted_file() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_dir(&oci_image(None), &layout);
    let cache = dir.path().join("cache");
    let img = prepare(&layout, &cache, &mut |_| {}).unwrap();
    assert_eq!(img.run.entrypoint, Some(vec!["/bin/tool".to_string()]));
    assert_eq!(img.run.working_dir.as_deref(), Some("/w"));
    assert_eq!(debugfs(&img.disk, "cat /bin/tool"), "tool");
    assert_eq!(debugfs(&img.disk, "cat /etc/new"), "n");
    let etc = debugfs(&img.disk, "ls /etc");
    assert!(etc.contains("kept") && !etc.contains("gone"), "{etc}");
    assert!(debugfs(&img.disk, "ls /.vessel").contains("busybox"));
    let stat = debugfs(&img.disk, "stat /bin/tool");
    assert!(
        stat.contains("User:  1234") && stat.contains("Group:    55"),
        "{stat}"
    );
    // A second prepare finds the same disk in the cache.
    let again = prepare(&layout, &cache, &mut |_| panic!("rebuilt")).unwrap();
    assert_eq!(again.disk, img.disk);
}

#[test]
fn oci_layout_in_an_archive_reads_the_same() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    write_tar(&oci_image(None), &archive);
    let img = prepare(&archive, &dir.path().join("cache"), &mut |_| {}).unwrap();
    assert!(!debugfs(&img.disk, "ls /etc").contains("gone"));
}

#[test]
fn docker_archive_is_read_through_manifest_json() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = layer(&[("a", b"1")]);
    let files = vec![
        ("abc/layer.tar".to_string(), l1),
        (
            "cfg.json".to_string(),
            br#"{"config":{"Cmd":["/a"],"User":"7:8"}}"#.to_vec(),
        ),
        (
            "manifest.json".to_string(),
            br#"[{"Config":"cfg.json","RepoTags":["x:latest"],"Layers":["abc/layer.tar"]}]"#
                .to_vec(),
        ),
    ];
    let archive = dir.path().join("docker.tar");
    write_tar(&files, &archive);
    let image = Source::open(&archive).unwrap().image().unwrap();
    assert_eq!(image.run.cmd, Some(vec!["/a".to_string()]));
    assert_eq!(image.run.user.as_deref(), Some("7:8"));
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].blob, "abc/layer.tar");
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let wrong = format!("sha256:{}", "0".repeat(64));
    write_dir(&oci_image(Some(&wrong)), &layout);
    let cache = dir.path().join("cache");
    let err = prepare(&layout, &cache, &mut |_| {}).unwrap_err();
    assert!(matches!(err, OciError::DiffIdMismatch { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(cache.join("images")).unwrap().collect();
    assert!(left.is_empty(), "nothing is cached: {left:?}");
}

#[test]
fn not_an_image_says_what_it_expected() {
    let dir = tempfile::tempdir().unwrap();
    let err = prepare(dir.path(), dir.path(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("OCI layout"), "{err}");
}

#[test]
fn docker_archive_names_cannot_leave_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = br#"{"config":{"Cmd":["/a"]}}"#.to_vec();
    // A layer named with `..`, then one that is a link climbing out.
    let files = vec![
        ("cfg.json".to_string(), cfg.clone()),
        (
            "manifest.json".to_string(),
            br#"[{"Config":"cfg.json","Layers":["../../etc/passwd"]}]"#.to_vec(),
        ),
    ];
    let archive = dir.path().join("a.tar");
    write_tar(&files, &archive);
    let err = Source::open(&archive).unwrap().image().unwrap_err();
    assert!(
        matches!(err, crate::oci::source::SourceError::BadPath(_)),
        "{err}"
    );

    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    for (name, data) in [
        ("cfg.json", cfg),
        (
            "manifest.json",
            br#"[{"Config":"cfg.json","Layers":["l.tar"]}]"#.to_vec(),
        ),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "l.tar", "../../../etc/passwd")
        .unwrap();
    b.finish().unwrap();
    drop(b);
    let source = Source::open(&archive).unwrap();
    let image = source.image().unwrap();
    assert!(source.open_blob(&image.layers[0].blob).is_err());
    let err = prepare(&archive, &dir.path().join("cache"), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no l.tar"), "{err}");
}

#[test]
fn docker_archive_layers_can_be_links_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar");
    let data = layer(&[("f", b"1")]);
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    for (name, bytes) in [
        ("real.tar", data.clone()),
        ("cfg.json", br#"{"config":{}}"#.to_vec()),
        (
            "manifest.json",
            br#"[{"Config":"cfg.json","Layers":["abc/layer.tar"]}]"#.to_vec(),
        ),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        b.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    // As docker save and buildah write them: abc/layer.tar -> ../real.tar.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "abc/layer.tar", "../real.tar")
        .unwrap();
    b.finish().unwrap();
    drop(b);
    let source = Source::open(&archive).unwrap();
    let image = source.image().unwrap();
    let mut got = Vec::new();
    source
        .open_blob(&image.layers[0].blob)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, data);
}

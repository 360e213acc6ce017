//! Where an image's blobs come from: an OCI image layout directory
//! (`oci-layout`, `index.json`, `blobs/ALG/HEX`) or a tar archive holding
//! one, or a `docker save`/`podman save` archive (`manifest.json` naming the
//! config and layer files). Archives are indexed once (member offsets) and
//! read in place, never extracted. Every name looked up is normalized and
//! may not leave the layout; JSON documents are bounded in size.

use super::RunConfig;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Largest JSON document (index, manifest, config) read.
const MAX_JSON: u64 = 8 << 20;
/// Most layers an image may have (Docker's own limit is 127).
const MAX_LAYERS: usize = 256;
/// Most members an archive may have.
const MAX_MEMBERS: usize = 1_000_000;
/// Most symbolic links followed to find one archive member.
const MAX_MEMBER_LINKS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} is not an image: expected an OCI layout (index.json) or a docker save archive \
         (manifest.json)"
    )]
    NotAnImage(PathBuf),
    #[error("image has no {0}")]
    Missing(String),
    #[error("cannot read {name} in the image")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} in the image is larger than {max} bytes")]
    TooLarge { name: String, max: u64 },
    #[error("{name} in the image is not valid: {source}")]
    BadJson {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("bad digest {0:?}: expected sha256:HEX or sha512:HEX")]
    BadDigest(String),
    #[error("{name} does not match its digest {digest}: the image is corrupt")]
    DigestMismatch { name: String, digest: String },
    #[error("bad path {0:?} in manifest.json")]
    BadPath(String),
    #[error("the index names no image manifest (for linux/amd64)")]
    NoManifest,
    #[error("the image has {0} layers, more than {MAX_LAYERS}")]
    TooManyLayers(usize),
    #[error("the archive has more than {MAX_MEMBERS} members")]
    TooManyMembers,
}

type Result<T> = std::result::Result<T, SourceError>;

/// One layer: its blob and, when the config lists it, the sha256 of its
/// uncompressed tar (`diff_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The layer's name in messages (its digest, or its file in a docker archive).
    pub digest: String,
    /// The blob's name in the source.
    pub blob: String,
    pub diff_id: Option<String>,
}

/// An image's manifest, resolved: the config (raw bytes and what they say)
/// and the layers, bottom first.
#[derive(Debug, Clone)]
pub struct Image {
    pub config_bytes: Vec<u8>,
    pub run: RunConfig,
    pub layers: Vec<Layer>,
}

/// An image layout in a directory or an archive.
pub struct Source {
    kind: Kind,
}

enum Kind {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        members: HashMap<String, Member>,
    },
}

struct Member {
    offset: u64,
    size: u64,
    /// Target of a symbolic or hard link member, relative to the archive.
    link: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl Source {
    /// Opens a layout directory or an archive (indexing its members).
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        if meta.is_dir() {
            return Ok(Self {
                kind: Kind::Dir(path.to_path_buf()),
            });
        }
        let file = File::open(path).map_err(open_err)?;
        let members = index_archive(file).map_err(|e| match e {
            SourceError::Read { source, .. } => open_err(source),
            other => other,
        })?;
        Ok(Self {
            kind: Kind::Archive {
                path: path.to_path_buf(),
                members,
            },
        })
    }

    /// The image the layout holds (for linux/amd64 when it holds several).
    pub fn image(&self) -> Result<Image> {
        if self.has("index.json") {
            self.oci_image()
        } else if self.has("manifest.json") {
            self.docker_image()
        } else {
            Err(SourceError::NotAnImage(self.path().to_path_buf()))
        }
    }

    /// A reader of the blob or file `name` (relative to the layout).
    pub fn open_blob(&self, name: &str) -> Result<Box<dyn Read>> {
        let read_err = |source| SourceError::Read {
            name: name.to_string(),
            source,
        };
        match &self.kind {
            Kind::Dir(dir) => {
                let rel = normalize(name).ok_or_else(|| SourceError::Missing(name.into()))?;
                let file = File::open(dir.join(rel)).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => SourceError::Missing(name.into()),
                    _ => read_err(e),
                })?;
                Ok(Box::new(file))
            }
            Kind::Archive { path, members } => {
                let m = find_member(members, name)?;
                let mut file = File::open(path).map_err(read_err)?;
                file.seek(SeekFrom::Start(m.offset)).map_err(read_err)?;
                Ok(Box::new(file.take(m.size)))
            }
        }
    }

    fn path(&self) -> &Path {
        match &self.kind {
            Kind::Dir(p) | Kind::Archive { path: p, .. } => p,
        }
    }

    fn has(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Dir(dir) => dir.join(name).is_file(),
            Kind::Archive { members, .. } => find_member(members, name).is_ok(),
        }
    }

    /// The whole of a small file, bounded by [`MAX_JSON`].
    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(name)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut data)
            .map_err(|source| SourceError::Read {
                name: name.to_string(),
                source,
            })?;
        if data.len() as u64 > MAX_JSON {
            return Err(SourceError::TooLarge {
                name: name.to_string(),
                max: MAX_JSON,
            });
        }
        Ok(data)
    }

    /// A blob by digest, checked against it.
    fn read_digest(&self, digest: &str) -> Result<Vec<u8>> {
        let name = blob_name(digest)?;
        let data = self.read_small(&name)?;
        if let Some(hex) = digest.strip_prefix("sha256:") {
            if sha256_hex(&data) != hex {
                return Err(SourceError::DigestMismatch {
                    name,
                    digest: digest.to_string(),
                });
            }
        }
        Ok(data)
    }

    fn oci_image(&self) -> Result<Image> {
        let index: Index = parse("index.json", &self.read_small("index.json")?)?;
        let manifest = self.pick_manifest(index, 0)?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(SourceError::TooManyLayers(manifest.layers.len()));
        }
        let config_bytes = self.read_digest(&manifest.config.digest)?;
        let layers = manifest
            .layers
            .into_iter()
            .map(|d| {
                Ok(Layer {
                    blob: blob_name(&d.digest)?,
                    digest: d.digest,
                    diff_id: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        finish(config_bytes, layers)
    }

    /// The image manifest an index names: the linux/amd64 one, else the
    /// first; nested indexes are followed one level down.
    fn pick_manifest(&self, index: Index, depth: usize) -> Result<Manifest> {
        let mut candidates: Vec<&Descriptor> = index.manifests.iter().collect();
        candidates.sort_by_key(|d| {
            !d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        });
        let chosen = candidates
            .into_iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or(SourceError::NoManifest)?;
        let data = self.read_digest(&chosen.digest)?;
        let name = blob_name(&chosen.digest)?;
        if chosen.media_type.contains("index") || chosen.media_type.contains("list") {
            if depth > 0 {
                return Err(SourceError::NoManifest);
            }
            return self.pick_manifest(parse(&name, &data)?, depth + 1);
        }
        parse(&name, &data)
    }

    fn docker_image(&self) -> Result<Image> {
        let entries: Vec<DockerEntry> = parse("manifest.json", &self.read_small("manifest.json")?)?;
        let entry = entries
            .into_iter()
            .next()
            .ok_or_else(|| SourceError::Missing("image in manifest.json".into()))?;
        if entry.layers.len() > MAX_LAYERS {
            return Err(SourceError::TooManyLayers(entry.layers.len()));
        }
        let config_name =
            normalize(&entry.config).ok_or_else(|| SourceError::BadPath(entry.config.clone()))?;
        let config_bytes = self.read_small(&config_name)?;
        let layers = entry
            .layers
            .into_iter()
            .map(|l| {
                let blob = normalize(&l).ok_or_else(|| SourceError::BadPath(l.clone()))?;
                Ok(Layer {
                    digest: l,
                    blob,
                    diff_id: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        finish(config_bytes, layers)
    }
}

/// Parses the config and pairs the layers with its diff_ids (when it lists
/// exactly one per layer).
fn finish(config_bytes: Vec<u8>, mut layers: Vec<Layer>) -> Result<Image> {
    let config: ConfigFile = parse("the image config", &config_bytes)?;
    let diff_ids = config.rootfs.unwrap_or_default().diff_ids;
    if diff_ids.len() == layers.len() {
        for (layer, id) in layers.iter_mut().zip(diff_ids) {
            layer.diff_id = Some(id);
        }
    }
    Ok(Image {
        config_bytes,
        run: config.config.unwrap_or_default(),
        layers,
    })
}

fn parse<'a, T: Deserialize<'a>>(name: &str, data: &'a [u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|source| SourceError::BadJson {
        name: name.to_string(),
        source,
    })
}

/// `blobs/ALG/HEX` for a digest `ALG:HEX`.
pub fn blob_name(digest: &str) -> Result<String> {
    let bad = || SourceError::BadDigest(digest.to_string());
    let (alg, hex) = digest.split_once(':').ok_or_else(bad)?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("blobs/{alg}/{hex}"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A relative path with `.` and leading `/` dropped and `..` resolved;
/// `None` when it is empty or `..` would climb above the layout.
fn normalize(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Member name -> where its data is in the archive.
fn index_archive(file: File) -> Result<HashMap<String, Member>> {
    let read_err = |source| SourceError::Read {
        name: "the archive".into(),
        source,
    };
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if members.len() >= MAX_MEMBERS {
            return Err(SourceError::TooManyMembers);
        }
        let Some(name) = entry
            .path()
            .ok()
            .and_then(|p| normalize(&p.to_string_lossy()))
        else {
            continue;
        };
        let kind = entry.header().entry_type();
        // A link whose target would leave the archive is no member at all.
        let link = if kind.is_symlink() {
            let target = entry.link_name().ok().flatten();
            let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
            let Some(t) = target.and_then(|t| normalize(&dir.join(t).to_string_lossy())) else {
                continue;
            };
            Some(t)
        } else if kind.is_hard_link() {
            let target = entry.link_name().ok().flatten();
            let Some(t) = target.and_then(|t| normalize(&t.to_string_lossy())) else {
                continue;
            };
            Some(t)
        } else if kind.is_file() {
            None
        } else {
            continue;
        };
        members.insert(
            name,
            Member {
                offset: entry.raw_file_position(),
                size: entry.size(),
                link,
            },
        );
    }
    Ok(members)
}

/// The member `name`, through links; `..` in a link resolves within the
/// archive (normalize refuses what would leave it).
fn find_member<'a>(members: &'a HashMap<String, Member>, name: &str) -> Result<&'a Member> {
    let missing = || SourceError::Missing(name.to_string());
    let mut current = normalize(name).ok_or_else(missing)?;
    for _ in 0..=MAX_MEMBER_LINKS {
        let m = members.get(&current).ok_or_else(missing)?;
        match &m.link {
            None => return Ok(m),
            Some(target) => current = target.clone(),
        }
    }
    Err(missing())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_become_blob_names_or_are_refused() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_name(&format!("sha256:{hex}")).unwrap(),
            format!("blobs/sha256/{hex}")
        );
        for bad in [
            "sha256:../../etc/passwd",
            "md5:abc",
            "sha256:xyz",
            "nocolon",
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            assert!(blob_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_normalized_and_never_leave_the_layout() {
        assert_eq!(normalize("./a/b.tar").as_deref(), Some("a/b.tar"));
        assert_eq!(normalize("/a").as_deref(), Some("a"));
        assert_eq!(normalize("a/../../x"), None);
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("abc/../x.tar").as_deref(), Some("x.tar"));
        assert_eq!(normalize("."), None);
    }
}

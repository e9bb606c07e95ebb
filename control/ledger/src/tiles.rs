//! The C2SP tlog-tiles layout (<https://c2sp.org/tlog-tiles>): the log as static files.
//!
//! - A hash tile `tile/<L>/<N>[.p/<W>]` holds `W` (at most 256) consecutive hashes of tree
//!   level `8·L`, from index `256·N` on: level-0 tiles hold leaf hashes, level-1 tiles the
//!   roots of complete 256-leaf subtrees, and so on. A tile of 256 is full; the log's right
//!   edge has a partial one (`.p/W`) per level.
//! - An entry bundle `tile/entries/<N>[.p/<W>]` holds entries `256·N` to `256·N + W - 1`,
//!   each as a big-endian `u16` length and its bytes.
//! - `N` is written in groups of three digits, every group but the last prefixed with `x`:
//!   1234067 is `x001/x234/067`.
//! - `checkpoint` is the signed note that names the tree's size and root.
//!
//! [`TileDir`] writes these files into a directory (each one whole: written aside, then
//! renamed) and reads them back for a verifier, which checks every hash against a root.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::tlog::{Hash, TlogError, Tree, leaf_hash};

/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes (or entries) in a full tile (or bundle).
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// The longest entry an entry bundle can hold.
pub const MAX_ENTRY: usize = u16::MAX as usize;

/// Why the tiles could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A file the log should have is not there (a missing file, an HTTP 404).
    #[error("{0}: not found")]
    NotFound(String),
    /// An HTTP server's answer that is not the file.
    #[error("{0}")]
    Http(String),
    /// An entry longer than [`MAX_ENTRY`].
    #[error("an entry of {0} bytes is longer than an entry bundle can hold")]
    EntryTooLong(usize),
    /// An entry bundle that is not a sequence of length-prefixed entries of the count its
    /// path says.
    #[error("{0}: the entry bundle is malformed")]
    BadBundle(String),
    /// A tile of the wrong length.
    #[error("{0}: the tile is not as long as its width says")]
    BadTile(String),
    /// The tiles, or an entry, do not hash to the root they are read against.
    #[error("the tiles do not hash to the checkpoint's root ({0})")]
    Mismatch(String),
    /// A proof or a size out of range.
    #[error("{0}")]
    Tlog(#[from] TlogError),
}

/// A hash tile (level `level`) or an entry bundle (`level` `None`): its index and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileId {
    /// The tile level (tree level `8·level`); `None` for an entry bundle.
    pub level: Option<u32>,
    /// Its index in its level.
    pub index: u64,
    /// Hashes or entries in it, 1 to [`TILE_WIDTH`].
    pub width: u64,
}

impl TileId {
    /// Its path under the log's root (`tile/…`).
    pub fn path(&self) -> String {
        let level = self
            .level
            .map_or_else(|| "entries".to_owned(), |l| l.to_string());
        let mut path = format!("tile/{level}/{}", encode_index(self.index));
        if self.width < TILE_WIDTH {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// The same tile, full.
    pub fn full(&self) -> Self {
        Self {
            width: TILE_WIDTH,
            ..*self
        }
    }
}

/// `n` in groups of three digits, all but the last prefixed with `x`.
pub fn encode_index(n: u64) -> String {
    let mut groups = Vec::new();
    let mut rest = n;
    loop {
        groups.push(rest % 1000);
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                format!("{g:03}")
            } else {
                format!("x{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Hashes of tree level `8·level` a tree of `size` leaves has complete.
fn hashes_at(level: u32, size: u64) -> u64 {
    size.checked_shr(TILE_HEIGHT * level).unwrap_or(0)
}

/// The tiles (hash tiles of every level, then entry bundles) that a tree of `size` leaves
/// publishes, for one that had `old` leaves before: every tile whose content changed.
pub fn new_tiles(old: u64, size: u64) -> Vec<TileId> {
    let mut tiles = Vec::new();
    let mut push = |level: Option<u32>, old_count: u64, count: u64| {
        if count == old_count {
            return;
        }
        for index in old_count / TILE_WIDTH..count.div_ceil(TILE_WIDTH) {
            let width = (count - index * TILE_WIDTH).min(TILE_WIDTH);
            tiles.push(TileId {
                level,
                index,
                width,
            });
        }
    };
    let mut level = 0;
    while hashes_at(level, size) > 0 {
        push(Some(level), hashes_at(level, old), hashes_at(level, size));
        level += 1;
    }
    push(None, old, size);
    tiles
}

/// The tile of level `level` holding hash `index` of tree level `8·level`, as wide as a tree
/// of `size` leaves makes it.
pub fn tile_for(level: u32, index: u64, size: u64) -> TileId {
    let tile = index / TILE_WIDTH;
    TileId {
        level: Some(level),
        index: tile,
        width: (hashes_at(level, size) - tile * TILE_WIDTH).min(TILE_WIDTH),
    }
}

/// Entries encoded as an entry bundle.
pub fn entry_bundle<'e>(entries: impl IntoIterator<Item = &'e [u8]>) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::new();
    for e in entries {
        let len = u16::try_from(e.len()).map_err(|_| TileError::EntryTooLong(e.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// The entries of a bundle, which must hold exactly `width` (`what` names it in errors).
pub fn parse_entry_bundle<'b>(
    bytes: &'b [u8],
    width: u64,
    what: &str,
) -> Result<Vec<&'b [u8]>, TileError> {
    let bad = || TileError::BadBundle(what.to_owned());
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(bad());
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
    }
    if entries.len() as u64 != width {
        return Err(bad());
    }
    Ok(entries)
}

/// The hashes a tile holds, from `tree`.
pub fn tile_data(tree: &Tree, tile: TileId) -> Result<Vec<u8>, TileError> {
    let level = tile.level.unwrap_or(0);
    let mut out = Vec::with_capacity(tile.width as usize * Hash::LEN);
    for i in 0..tile.width {
        let index = tile.index * TILE_WIDTH + i;
        let hash = tree
            .stored(level * TILE_HEIGHT, index)
            .ok_or(TlogError::OutOfRange {
                index,
                size: tree.size(),
            })?;
        out.extend_from_slice(&hash.0);
    }
    Ok(out)
}

/// Where a log's files are read from: a directory ([`TileDir`]) or a web server
/// ([`crate::http::HttpSource`]).
pub trait TileSource {
    /// The file at `relative` (`checkpoint`, `tile/…`); [`TileError::NotFound`] if there
    /// is none.
    fn fetch(&self, relative: &str) -> Result<Vec<u8>, TileError>;
}

/// A log's files in a directory: `checkpoint` and `tile/…`.
#[derive(Clone, Debug)]
pub struct TileDir {
    root: PathBuf,
}

impl TileDir {
    /// The log whose files are (or will be) under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where its files are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> TileError + '_ {
        move |source| TileError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Writes `bytes` to `relative` whole: aside, then renamed over it.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> Result<(), TileError> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(Self::io(parent))?;
        }
        let aside = path.with_extension("new");
        let mut file = fs::File::create(&aside).map_err(Self::io(&aside))?;
        file.write_all(bytes).map_err(Self::io(&aside))?;
        file.sync_data().map_err(Self::io(&aside))?;
        fs::rename(&aside, &path).map_err(Self::io(&path))
    }

    /// Reads `relative`.
    pub fn read(&self, relative: &str) -> Result<Vec<u8>, TileError> {
        let path = self.root.join(relative);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TileError::NotFound(path.display().to_string()),
            _ => Self::io(&path)(e),
        })
    }

    /// Publishes the tiles and entry bundles that changed since the log had `old` entries
    /// (`entries` are all of them, `tree` their tree; the checkpoint is the caller's), and
    /// removes the partial tiles a full one replaced.
    pub fn publish(&self, tree: &Tree, entries: &[Vec<u8>], old: u64) -> Result<(), TileError> {
        for tile in new_tiles(old, tree.size()) {
            let bytes = match tile.level {
                Some(_) => tile_data(tree, tile)?,
                None => {
                    let start = (tile.index * TILE_WIDTH) as usize;
                    let end = start + tile.width as usize;
                    let slice = entries.get(start..end).ok_or(TlogError::OutOfRange {
                        index: end as u64,
                        size: entries.len() as u64,
                    })?;
                    entry_bundle(slice.iter().map(Vec::as_slice))?
                }
            };
            self.write(&tile.path(), &bytes)?;
            // A full tile replaces the partial ones written before it (a reader of an older
            // checkpoint takes the first hashes or entries of the full one instead).
            if tile.width == TILE_WIDTH {
                let partials = self.root.join(format!("{}.p", tile.path()));
                match fs::remove_dir_all(&partials) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Self::io(&partials)(e));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every entry of the tree of `size` leaves whose root is `root`, checked: see
    /// [`read_log`].
    pub fn read_log(&self, size: u64, root: &Hash) -> Result<(Tree, Vec<Vec<u8>>), TileError> {
        read_log(self, size, root)
    }
}

impl TileSource for TileDir {
    fn fetch(&self, relative: &str) -> Result<Vec<u8>, TileError> {
        self.read(relative)
    }
}

/// A tile as wide as `tile` says: its own file, or (a partial tile that has since been
/// replaced) the first `width` hashes or entries of the full one.
fn read_tile(source: &dyn TileSource, tile: TileId) -> Result<Vec<u8>, TileError> {
    match source.fetch(&tile.path()) {
        Ok(bytes) => Ok(bytes),
        Err(TileError::NotFound(_)) if tile.width < TILE_WIDTH => {
            let full = source.fetch(&tile.full().path())?;
            Ok(match tile.level {
                Some(_) => full
                    .get(..tile.width as usize * Hash::LEN)
                    .ok_or_else(|| TileError::BadTile(tile.full().path()))?
                    .to_vec(),
                None => {
                    let entries = parse_entry_bundle(&full, TILE_WIDTH, &tile.full().path())?;
                    entry_bundle(entries.into_iter().take(tile.width as usize))?
                }
            })
        }
        Err(e) => Err(e),
    }
}

/// Every entry of the tree of `size` leaves whose root is `root`, read from `source`'s entry
/// bundles and checked: their leaf hashes, hashed up, must give `root`; and every hash tile
/// must hold the hashes the entries give.
pub fn read_log(
    source: &dyn TileSource,
    size: u64,
    root: &Hash,
) -> Result<(Tree, Vec<Vec<u8>>), TileError> {
    let mut tree = Tree::new();
    let mut entries = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    for index in 0..size.div_ceil(TILE_WIDTH) {
        let bundle = TileId {
            level: None,
            index,
            width: (size - index * TILE_WIDTH).min(TILE_WIDTH),
        };
        let bytes = read_tile(source, bundle)?;
        for e in parse_entry_bundle(&bytes, bundle.width, &bundle.path())? {
            tree.push_leaf_hash(leaf_hash(e));
            entries.push(e.to_vec());
        }
    }
    if tree.root(size)? != *root {
        return Err(TileError::Mismatch(
            "the entries' tree has another root".into(),
        ));
    }
    for tile in new_tiles(0, size) {
        if tile.level.is_none() {
            continue;
        }
        let bytes = read_tile(source, tile)?;
        if bytes != tile_data(&tree, tile)? {
            return Err(TileError::Mismatch(format!(
                "{} does not hold the entries' hashes",
                tile.path()
            )));
        }
    }
    Ok((tree, entries))
}

#[cfg(test)]
mod tests;

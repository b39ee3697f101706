//! The cache of unpacked images on disk, `CACHE/KEY` (the root filesystem) beside `KEY.json`
//! (its config, size and last use), kept within a byte budget by removing the least recently
//! used images that no `Prepared` holds.
//!
//! One process owns a cache directory. Inside it, each key has an async lock that a
//! preparation holds from its lookup to its result, and that pruning must also take, so that
//! an image is never removed while it is being looked up, built or handed out; a `Prepared`
//! holds a count on its key until it is dropped, and pruning skips counted keys. An image is
//! published by renaming `KEY.partial` to `KEY`, then writing `KEY.json`: a key without its
//! record is unfinished and is never used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::{ImageConfig, ImageError};

/// What `KEY.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub config: ImageConfig,
    /// Unix milliseconds of the last preparation that used it.
    pub last_used_ms: u64,
    /// The unpacked files' total size in bytes.
    pub size_bytes: u64,
}

type Counts = Arc<Mutex<HashMap<String, usize>>>;

pub(crate) struct Cache {
    pub dir: PathBuf,
    budget_bytes: u64,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    in_use: Counts,
}

/// A count on a key held by a live `Prepared`; dropping it releases the key to pruning.
#[derive(Debug)]
pub(crate) struct InUse {
    key: String,
    counts: Counts,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl Cache {
    pub(crate) fn new(dir: PathBuf, budget_bytes: u64) -> Cache {
        Cache {
            dir,
            budget_bytes,
            locks: Mutex::new(HashMap::new()),
            in_use: Arc::default(),
        }
    }

    pub(crate) fn rootfs(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    pub(crate) fn partial(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.partial"))
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the locks nobody holds or waits for, so the map stays as small as the work.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key.to_owned()).or_default().clone()
    }

    /// Waits for the key's lock: one preparation (or pruning) of a key at a time.
    pub(crate) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        self.key_lock(key).lock_owned().await
    }

    /// The cached image of `key`, its last use brought up to now, or `None` when there is
    /// none (or only an unfinished one). Hold the key's lock.
    pub(crate) fn lookup(&self, key: &str) -> Result<Option<Record>, ImageError> {
        let record_path = self.record_path(key);
        let text = match std::fs::read(&record_path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ImageError::io(&record_path)(error)),
        };
        let Ok(mut record) = serde_json::from_slice::<Record>(&text) else {
            return Ok(None);
        };
        if !self.rootfs(key).is_dir() {
            return Ok(None);
        }
        record.last_used_ms = now_ms();
        self.store(key, &record)?;
        Ok(Some(record))
    }

    /// Writes `KEY.json` whole or not at all. Hold the key's lock.
    pub(crate) fn store(&self, key: &str, record: &Record) -> Result<(), ImageError> {
        let path = self.record_path(key);
        let temporary = self.dir.join(format!("{key}.json.partial"));
        let text = serde_json::to_vec_pretty(record).expect("a record always serializes");
        std::fs::write(&temporary, text).map_err(ImageError::io(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(ImageError::io(&path))
    }

    /// Counts `key` as in use until the returned guard is dropped. Hold the key's lock.
    pub(crate) fn hold(&self, key: &str) -> InUse {
        let mut counts = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry(key.to_owned()).or_default() += 1;
        InUse {
            key: key.to_owned(),
            counts: self.in_use.clone(),
        }
    }

    fn is_in_use(&self, key: &str) -> bool {
        let counts = self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(key).is_some_and(|count| *count > 0)
    }

    /// Removes least recently used images that nothing holds (and leftovers of unfinished
    /// ones) until the cache is within its budget. Returns the keys removed.
    pub(crate) fn prune(&self) -> Result<Vec<String>, ImageError> {
        let mut records = Vec::new();
        let mut leftovers = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(ImageError::io(&self.dir))? {
            let entry = entry.map_err(ImageError::io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json") {
                if let Some(record) = std::fs::read(entry.path())
                    .ok()
                    .and_then(|text| serde_json::from_slice::<Record>(&text).ok())
                {
                    records.push((key.to_owned(), record));
                }
            } else if let Some(key) = name
                .strip_suffix(".partial")
                .or_else(|| name.strip_suffix(".removing"))
            {
                leftovers.push((key.trim_end_matches(".json").to_owned(), entry.path()));
            }
        }
        for (key, path) in leftovers {
            // Unfinished only if no preparation of that key is going on now.
            if let Ok(_guard) = self.key_lock(&key).try_lock_owned() {
                remove_path(&path)?;
            }
        }

        records.sort_by_key(|(_, record)| record.last_used_ms);
        let mut total: u64 = records.iter().map(|(_, record)| record.size_bytes).sum();
        let mut removed = Vec::new();
        for (key, record) in records {
            if total <= self.budget_bytes {
                break;
            }
            if self.is_in_use(&key) {
                continue;
            }
            let Ok(_guard) = self.key_lock(&key).try_lock_owned() else {
                continue;
            };
            // Taken between the listing and the lock.
            if self.is_in_use(&key) {
                continue;
            }
            // The record first: without it the key is no longer a cache hit.
            remove_path(&self.record_path(&key))?;
            let removing = self.dir.join(format!("{key}.removing"));
            match std::fs::rename(self.rootfs(&key), &removing) {
                Ok(()) => remove_path(&removing)?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(ImageError::io(&self.rootfs(&key))(error)),
            }
            total -= record.size_bytes;
            removed.push(key);
        }
        Ok(removed)
    }
}

/// Removes a file or a whole tree, never following a link; a missing path is fine.
pub(crate) fn remove_path(path: &Path) -> Result<(), ImageError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ImageError::io(path)(error)),
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(budget: u64, images: &[(&str, u64, u64)]) -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_owned(), budget);
        for &(key, last_used_ms, size_bytes) in images {
            std::fs::create_dir(cache.rootfs(key)).unwrap();
            std::fs::write(cache.rootfs(key).join("file"), "x").unwrap();
            let record = Record {
                config: ImageConfig::default(),
                last_used_ms,
                size_bytes,
            };
            cache.store(key, &record).unwrap();
        }
        (dir, cache)
    }

    #[tokio::test]
    async fn pruning_removes_the_least_recently_used_first_and_skips_held_keys() {
        let (_dir, cache) = cache_with(
            250,
            &[
                ("old", 1, 100),
                ("held", 2, 100),
                ("mid", 3, 100),
                ("new", 4, 100),
            ],
        );
        let guard = cache.hold("held");
        assert_eq!(cache.prune().unwrap(), ["old", "mid"]);
        assert!(!cache.rootfs("old").exists());
        assert!(cache.rootfs("held").exists());
        assert!(cache.lookup("held").unwrap().is_some());
        drop(guard);
        assert_eq!(
            cache.prune().unwrap(),
            Vec::<String>::new(),
            "within the budget now"
        );
    }

    #[tokio::test]
    async fn a_key_being_prepared_is_not_pruned() {
        let (_dir, cache) = cache_with(0, &[("busy", 1, 10), ("idle", 2, 10)]);
        let lock = cache.lock("busy").await;
        assert_eq!(cache.prune().unwrap(), ["idle"]);
        drop(lock);
        assert_eq!(cache.prune().unwrap(), ["busy"]);
    }

    #[tokio::test]
    async fn an_unfinished_image_is_no_hit_and_its_leftovers_go() {
        let (_dir, cache) = cache_with(1000, &[]);
        std::fs::create_dir(cache.rootfs("k")).unwrap();
        assert!(cache.lookup("k").unwrap().is_none());
        std::fs::create_dir(cache.partial("gone")).unwrap();
        cache.prune().unwrap();
        assert!(!cache.partial("gone").exists());
    }
}

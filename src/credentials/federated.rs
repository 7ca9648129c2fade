//! Workload identity federation: on Kubernetes (Azure Workload Identity) the
//! client assertion is a service-account token that the kubelet projects into
//! a file named by `AZURE_FEDERATED_TOKEN_FILE` and rotates (by swapping a
//! symbolic link) well before it expires. The file is read again whenever it
//! changes, and otherwise served from memory, so an exchange costs one `stat`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

/// The environment variable Azure Workload Identity sets.
pub const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// What tells one version of the file from the next: a rotation writes a new
/// file (a new inode behind the link), and usually a new time and size too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp { modified: metadata.modified().ok(), length: metadata.len(), inode }
    }
}

/// The token file could not give an assertion. The message names the file,
/// never its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedTokenError(String);

impl fmt::Display for FederatedTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FederatedTokenError {}

/// A federated token file, read when it changes.
pub struct FederatedTokenFile {
    path: PathBuf,
    last: Mutex<Option<(Stamp, Arc<str>)>>,
}

impl FederatedTokenFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FederatedTokenFile { path: path.into(), last: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's content, trimmed: the client assertion.
    pub fn assertion(&self) -> Result<Arc<str>, FederatedTokenError> {
        let unreadable = |why: &dyn fmt::Display| {
            FederatedTokenError(format!("the federated token file {} {why}", self.path.display()))
        };
        let stamp =
            Stamp::of(&std::fs::metadata(&self.path).map_err(|why| unreadable(&format_args!("is unreadable: {why}")))?);
        if let Some((known, token)) = self.last.lock().as_ref() {
            if *known == stamp {
                return Ok(token.clone());
            }
        }
        let content =
            std::fs::read_to_string(&self.path).map_err(|why| unreadable(&format_args!("is unreadable: {why}")))?;
        let token = content.trim();
        if token.is_empty() {
            return Err(unreadable(&"is empty"));
        }
        let token: Arc<str> = token.into();
        // The stamp taken before reading: if the file changed in between, the next call reads it again.
        *self.last.lock() = Some((stamp, token.clone()));
        Ok(token)
    }
}

impl fmt::Debug for FederatedTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedTokenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("obo-native-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_the_trimmed_token_and_rereads_it_when_it_changes() {
        let dir = TempDir::new("federated-rotate");
        let path = dir.0.join("token");
        std::fs::write(&path, "first.jwt.token\n").unwrap();
        let file = FederatedTokenFile::new(&path);
        let first = file.assertion().unwrap();
        assert_eq!(&*first, "first.jwt.token");
        assert!(Arc::ptr_eq(&first, &file.assertion().unwrap()), "unchanged: served from memory");
        // A rotation as the kubelet does it: a new file renamed over the old one.
        let next = dir.0.join("token.next");
        std::fs::write(&next, "  second.jwt.token-longer \n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(&*file.assertion().unwrap(), "second.jwt.token-longer");
    }

    #[cfg(unix)]
    #[test]
    fn follows_a_swapped_symbolic_link() {
        let dir = TempDir::new("federated-link");
        std::fs::create_dir_all(dir.0.join("a")).unwrap();
        std::fs::create_dir_all(dir.0.join("b")).unwrap();
        std::fs::write(dir.0.join("a/token"), "from-a").unwrap();
        std::fs::write(dir.0.join("b/token"), "from-b").unwrap();
        std::os::unix::fs::symlink("a", dir.0.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", dir.0.join("token")).unwrap();
        let file = FederatedTokenFile::new(dir.0.join("token"));
        assert_eq!(&*file.assertion().unwrap(), "from-a");
        std::os::unix::fs::symlink("b", dir.0.join("..data.tmp")).unwrap();
        std::fs::rename(dir.0.join("..data.tmp"), dir.0.join("..data")).unwrap();
        assert_eq!(&*file.assertion().unwrap(), "from-b");
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error_naming_the_file_only() {
        let dir = TempDir::new("federated-errors");
        let path = dir.0.join("token");
        let file = FederatedTokenFile::new(&path);
        let missing = file.assertion().unwrap_err().to_string();
        assert!(
            missing.starts_with(&format!("the federated token file {} is unreadable", path.display())),
            "{missing}"
        );
        std::fs::write(&path, " \n").unwrap();
        assert!(file.assertion().unwrap_err().to_string().ends_with("is empty"));
        std::fs::write(&path, "secret-token").unwrap();
        assert_eq!(&*file.assertion().unwrap(), "secret-token");
        std::fs::remove_file(&path).unwrap();
        let gone = file.assertion().unwrap_err().to_string();
        assert!(!gone.contains("secret-token") && !format!("{file:?}").contains("secret-token"), "{gone}");
    }
}

